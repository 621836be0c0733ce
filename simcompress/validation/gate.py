"""Fidelity gates: the public names of the gate spec, its checks and the model gate in one place.

* :mod:`.spec`: :class:`GateSpec` (YAML thresholds relative to the reference-versus-reference
  noise floor, strict pydantic), its rules, the presets of ``configs/validation/`` and
  :func:`load_gate_spec`.
* :mod:`.checks`: :func:`evaluate_gate` (candidate results -> :class:`GateCheck` rows, calibrated
  to the spec's family-wise false-alarm rate) and :func:`false_alarm_summary`.
* :mod:`.model_gate`: :func:`make_model_gate`, the callable the compression pipeline uses.

This module only re-exports them (nothing inside the package imports it).
"""

from __future__ import annotations

from .checks import GateCheck, evaluate_gate, false_alarm_summary
from .model_gate import make_model_gate
from .spec import (
    BaselineRule,
    BootstrapConfig,
    ClassifierRule,
    FalseAlarmConfig,
    FeatureRule,
    GateSpec,
    MultivariateRule,
    NoiseFloorConfig,
    feature_threshold,
    load_gate_spec,
    preset_names,
)

__all__ = [
    "BaselineRule",
    "BootstrapConfig",
    "ClassifierRule",
    "FalseAlarmConfig",
    "FeatureRule",
    "GateCheck",
    "GateSpec",
    "MultivariateRule",
    "NoiseFloorConfig",
    "evaluate_gate",
    "false_alarm_summary",
    "feature_threshold",
    "load_gate_spec",
    "make_model_gate",
    "preset_names",
]
