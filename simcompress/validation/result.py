"""The outcome of a validation run: :class:`ValidationResult` with ``to_json`` and ``.write(out_dir)``."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._provenance import software_versions, utc_now
from ._shared import jsonable
from .checks import GateCheck, false_alarm_summary
from .evaluation import CandidateResult
from .prepared import PreparedReference
from .report import write_report
from .spec import GateSpec

__all__ = ["ValidationResult"]


@dataclass
class ValidationResult:
    """Outcome of :func:`~simcompress.validation.validate`: every number, the gate checks and the samples for plotting."""

    reference: PreparedReference
    candidates: dict[str, CandidateResult]
    spec: GateSpec
    checks: list[GateCheck]
    created: str = field(default_factory=utc_now)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def failed_checks(self) -> list[GateCheck]:
        return [c for c in self.checks if not c.passed]

    def passed_for(self, candidate: str) -> bool:
        return all(c.passed for c in self.checks if c.candidate == candidate)

    def to_dict(self) -> dict[str, Any]:
        ref = self.reference
        floor = {f: dict(v, n_half=ref.floor.n_half) for f, v in ref.floor.stats.items()}
        return {
            "format_version": 1,
            "created": self.created,
            "software": software_versions(),
            "passed": self.passed,
            "gate_spec": self.spec.model_dump(mode="json"),
            "reference": {
                "source": ref.sample.source,
                "n_events": ref.n_events,
                "geometry": ref.geometry.name,
                "geometry_fingerprint": ref.geometry.fingerprint,
                "threshold_mev": ref.features.threshold_mev,
                "energy_bins": [{"label": b.label, "lo_mev": b.lo, "hi_mev": b.hi} for b in ref.bins],
                "noise_floor_raw": floor,
                "multivariate_floor": ref.multivariate_floor,
                "classifier_floor": ref.classifier_floor,
                "notes": ref.notes,
                "cache": ref.cache_info,
                "timings_s": ref.timings,
            },
            "candidates": {
                n: {**c.to_dict(), "passed": self.passed_for(n), "timings_s": c.timings} for n, c in self.candidates.items()
            },
            "checks": [c.to_dict() for c in self.checks],
            "false_alarm": false_alarm_summary(self.spec, ref),  # the gate's family-wise rate (issue 20)
        }

    def to_json(self) -> str:
        return json.dumps(jsonable(self.to_dict()), indent=1, allow_nan=False)

    def write(
        self, out_dir: str | os.PathLike[str], *, html: bool = True, progress: bool = False, max_feature_figures: int | None = None
    ) -> Path:
        """Write ``metrics.json`` (and ``report.html``) into ``out_dir`` atomically; returns the directory."""
        return write_report(self, out_dir, html=html, progress=progress, max_feature_figures=max_feature_figures)
