"""Physics validation of generated calorimeter showers against reference showers.

* :mod:`.features`: CaloChallenge high-level features, streamed chunk by chunk.
* :mod:`.metrics`: KS, W1, separation power, bootstrap errors, FPD and KPD (numpy/scipy only).
* :mod:`.classifier`: the classifier two-sample test (torch; imported lazily).
* :mod:`.gate`: YAML gate specs relative to the reference-vs-reference noise floor, presets, the
  model gate for the compression pipeline.
* :mod:`.core`: :func:`validate`, :class:`ValidationResult`, :class:`PreparedReference`.
* :mod:`.report`: self-contained HTML report and ``metrics.json``; :func:`report_section` for other reports.
* :mod:`.distortions`: controlled distortions (energy scale, radial widening) to check a gate's sensitivity.
"""

from __future__ import annotations

from .core import EnergyMismatchWarning, PreparedReference, ValidationResult, validate
from .features import FeatureTable, compute_features
from .gate import GateSpec, evaluate_gate, load_gate_spec, make_model_gate
from .metrics import TooFewEventsError

__all__ = [
    "EnergyMismatchWarning",
    "FeatureTable",
    "GateSpec",
    "PreparedReference",
    "TooFewEventsError",
    "ValidationResult",
    "compute_features",
    "evaluate_gate",
    "load_gate_spec",
    "make_model_gate",
    "report_section",
    "validate",
]


def __getattr__(name: str) -> object:
    if name == "report_section":
        from .report import report_section

        return report_section
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
