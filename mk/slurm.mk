# Slurm (Debian's slurm-wlm) and munge for the single-node batch-system tests in
# tests/batch/test_batch_slurm.py. The tests start their own munged, slurmctld and slurmd
# (simcompress.batch.localslurm) on a generated config in a temporary folder; this target
# only installs the packages. As root it installs what is missing (and says so); otherwise
# it says why not, and the tests skip with that reason.
SLURM_TOOLS := slurmctld slurmd munged sbatch sinfo scancel squeue

.PHONY: slurm-deps
slurm-deps:
	@missing=""; for t in $(SLURM_TOOLS); do command -v $$t >/dev/null 2>&1 || missing="$$missing $$t"; done; \
	if [ -z "$$missing" ]; then \
	  echo "slurm-deps: slurm-wlm and munge present"; \
	elif [ "$$(id -u)" = 0 ]; then \
	  echo "slurm-deps: missing$$missing; installing Debian packages slurm-wlm munge (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null \
	    && echo "slurm-deps: installed slurm-wlm and munge"; \
	else \
	  echo "slurm-deps: missing$$missing and not root (uid $$(id -u)): cannot apt-get install slurm-wlm munge;" \
	       "the Slurm tests will skip"; \
	fi

TEST_DEPS += slurm-deps
