"""Physics validation of generated calorimeter showers against reference showers.

* :mod:`.features`: CaloChallenge high-level features, streamed chunk by chunk.
* :mod:`.metrics`: KS, W1, separation power, bootstrap errors, FPD and KPD (numpy/scipy only).
* :mod:`.classifier`: the classifier two-sample test (torch; imported lazily).
* :mod:`.spec`: YAML gate specs relative to the reference-versus-reference noise floor, presets;
  :mod:`.checks`: the gate's checks; :mod:`.calibration`: their family-wise false-alarm control;
  :mod:`.model_gate`: the gate for the compression pipeline (:mod:`.gate` re-exports all three).
* :mod:`.sources`, :mod:`.floor`, :mod:`.prepared`, :mod:`.evaluation`, :mod:`.result`: reading,
  noise floor, :class:`PreparedReference`, candidates, :class:`ValidationResult`; :mod:`.core`:
  :func:`validate`, which runs them. :mod:`.cache`: the cached reference on disk.
* :mod:`.report`: self-contained HTML report and ``metrics.json`` (:mod:`.figures` draws its figures);
  :func:`report_section` for other reports.
* :mod:`.teacher`: :func:`compare_to_teacher`, compression damage measured against the teacher's own
  showers, next to the reference comparison.
* :mod:`.distortions`: controlled distortions (energy scale, radial widening) to check a gate's sensitivity;
  :mod:`.false_alarm`: the gate's false-alarm rate measured on same-physics pairs.
"""

from __future__ import annotations

from .checks import evaluate_gate
from .core import validate
from .evaluation import EnergyMismatchWarning
from .features import FeatureTable, compute_features
from .metrics import TooFewEventsError
from .model_gate import make_model_gate
from .prepared import PreparedReference
from .report import report_section
from .result import ValidationResult
from .spec import GateSpec, load_gate_spec
from .teacher import TeacherComparison, compare_to_teacher

__all__ = [
    "EnergyMismatchWarning",
    "FeatureTable",
    "GateSpec",
    "PreparedReference",
    "TeacherComparison",
    "TooFewEventsError",
    "ValidationResult",
    "compare_to_teacher",
    "compute_features",
    "evaluate_gate",
    "load_gate_spec",
    "make_model_gate",
    "report_section",
    "validate",
]
