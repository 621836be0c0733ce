"""The application layer: one library function per job that spans several areas.

Each returns a result object; the CLI parses its options, calls one of these and prints, and Python
users call the same. :func:`run_recipe` writes nothing until ``.write(out_dir)``; a sweep writes its
points as it goes (a rerun resumes) and the firmware export writes its IP folder atomically.

* :func:`run_recipe`: a compression recipe on a shower generator, gated and measured
  (``simcompress compress``), -> :class:`RecipeResult`.
* :func:`run_sweep`: a grid of compression settings measured in size, speed and physics
  (``simcompress sweep``), -> :class:`simcompress.compress.sweep.SweepResult`.
* :func:`.firmware.build_firmware`: the firmware IP of a fixed-point generator and, with reference
  showers, what the firmware costs in physics (``simcompress firmware``).
* :func:`.train.train_on_reference`: a generator trained on reference showers read or simulated
  (``simcompress train``).
* :mod:`.demo`: the stages and summary of ``simcompress demo``.
* :mod:`.generator_hooks`: the calibration and fine-tuning callables the generic pipeline takes,
  built from a shower generator.
"""

from __future__ import annotations

from .generator_hooks import generator_calibration, generator_finetune
from .recipe import RecipeResult, run_recipe
from .sweep import damage_figures, run_sweep

__all__ = ["RecipeResult", "damage_figures", "generator_calibration", "generator_finetune", "run_recipe", "run_sweep"]
