"""Registered distillation transforms: ``distill_flow_iaf``, ``distill_mlp``, ``distill_gan``.

Each receives the teacher (a copy, never the caller's object) and returns a
:class:`~simcompress.compress.base.CompressionResult` whose ``model`` is the student, an
ordinary :class:`~simcompress.generators.base.ShowerGenerator`. Optional keyword arguments,
injected by the caller (``compress`` never imports physics):

* ``gate``: a fidelity gate ``gate(model) -> GateResult``; evaluated on the teacher *and* on the
  student against the reference, both results in ``extra["fidelity"]``;
* ``reference``: ``(incident_energies (N,), showers (N, V))`` MeV arrays, needed for the
  adversarial fine-tuning of ``distill_gan``.

The report (``extra``) holds parameter counts, the loss history of every phase, the
same-noise agreement of student and teacher on fresh noise, and the sampling speed measured for
teacher and student in the same run at the configured batch sizes.
"""

from __future__ import annotations

from .common import Pool, build_student, draw_pool
from .flow_iaf import distill_flow_iaf
from .gan import distill_gan
from .mlp import distill_mlp

__all__ = ["Pool", "build_student", "distill_flow_iaf", "distill_gan", "distill_mlp", "draw_pool"]
