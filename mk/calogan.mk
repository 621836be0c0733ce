# `make demo-calogan`: the whole chain on the CaloGAN three-layer Cartesian calorimeter
# (3x96, 12x12, 12x6 cells; configs/geometries/calogan.yaml), not part of `make test`.
# GFlash reference in the calogan geometry -> train a GAN (configs/generators/calogan-gan.yaml)
# -> compress (int8-ptq, compression gate) -> generate -> validate both against held-out
# reference showers -> layer images. Outputs in calogan-output/. Measured 2026-12-01: 19.5 min wall
# (4.5 min of CPU) on the 2-core CI machine kind under a load average of about 16.
# CALOGAN_EVENTS / CALOGAN_STEPS make it smaller or larger.
CALOGAN_OUT    ?= calogan-output
CALOGAN_EVENTS ?= 20000
CALOGAN_STEPS  ?= 1500
SC := $(VENV)/bin/simcompress

.PHONY: demo-calogan
demo-calogan: install
	mkdir -p $(CALOGAN_OUT)
	$(SC) simulate --geometry calogan --events $(CALOGAN_EVENTS) --seed 1 --energies log-uniform:1e3,1e5 --out $(CALOGAN_OUT)/ref.root --no-progress
	$(SC) simulate --geometry calogan --events $(CALOGAN_EVENTS) --seed 2 --energies log-uniform:1e3,1e5 --out $(CALOGAN_OUT)/heldout.root --no-progress
	$(SC) train gan --data $(CALOGAN_OUT)/ref.root --config configs/generators/calogan-gan.yaml --steps $(CALOGAN_STEPS) --out $(CALOGAN_OUT)/gan
	$(SC) compress --model $(CALOGAN_OUT)/gan --recipe configs/compress/int8-ptq.yaml --reference $(CALOGAN_OUT)/ref.root --out $(CALOGAN_OUT)/gan-int8 --no-onnx
	$(SC) generate --model $(CALOGAN_OUT)/gan --events $(CALOGAN_EVENTS) --energies file:$(CALOGAN_OUT)/heldout.root --seed 7 --out $(CALOGAN_OUT)/gan.root
	$(SC) generate --model $(CALOGAN_OUT)/gan-int8 --events $(CALOGAN_EVENTS) --energies file:$(CALOGAN_OUT)/heldout.root --seed 7 --out $(CALOGAN_OUT)/gan-int8.root
	$(SC) validate --reference $(CALOGAN_OUT)/heldout.root --candidate gan=$(CALOGAN_OUT)/gan.root --candidate int8=$(CALOGAN_OUT)/gan-int8.root --candidate gflash=$(CALOGAN_OUT)/ref.root --gate loose -q --out $(CALOGAN_OUT)/report || test $$? -eq 1
	$(SC) plot-layers gflash=$(CALOGAN_OUT)/heldout.root gan=$(CALOGAN_OUT)/gan.root int8=$(CALOGAN_OUT)/gan-int8.root --out $(CALOGAN_OUT)/layers.png
	@echo "calogan chain done: $(CALOGAN_OUT)/report/report.html, $(CALOGAN_OUT)/layers.png"
