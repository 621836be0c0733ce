"""The measured false-alarm rate: the whole gate on same-physics pairs, with its Clopper-Pearson interval.

:func:`measure_false_alarm` validates ``N`` same-physics (reference, candidate) pairs (fresh
simulator samples, :func:`simulated_pairs`, or disjoint halves of one reference,
:func:`half_split_pairs`) and counts the pairs that fail any check; the bench
(``bench/bench_false_alarm.py``) runs it at scale. How the rate is controlled by construction is
:mod:`simcompress.validation.calibration`.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .calibration import _pct, clopper_pearson, family_calibration
from .checks import evaluate_gate
from .core import validate
from .spec import GateSpec, load_gate_spec

if TYPE_CHECKING:  # pragma: no cover
    from ..showers.data import ShowerSet

__all__ = ["FalseAlarmMeasurement", "half_split_pairs", "measure_false_alarm", "simulated_pairs"]


@dataclass
class FalseAlarmMeasurement:
    """Outcome of :func:`measure_false_alarm`: the whole gate on ``n_pairs`` same-physics pairs.

    ``failed_checks[i]``: the checks the same-physics candidate of pair ``i`` failed (empty when it
    passed). ``compared[name]``: pairs failed under each comparison spec, on the same metrics.
    ``flagged[name][i]``: checks failed by distorted copy ``name`` of pair ``i``'s candidate (power).
    """

    n_pairs: int
    rate_by_construction: float
    n_checks: list[int]
    failed_checks: list[list[str]]
    seconds: float
    compared: dict[str, list[int]] = field(default_factory=dict)
    flagged: dict[str, list[int]] = field(default_factory=dict)
    calibration: list[dict[str, Any]] = field(default_factory=list)

    @property
    def n_failed(self) -> int:
        return sum(1 for f in self.failed_checks if f)

    @property
    def rate(self) -> float:
        return self.n_failed / self.n_pairs if self.n_pairs else 0.0

    @property
    def ci95(self) -> tuple[float, float]:
        return clopper_pearson(self.n_failed, self.n_pairs)

    def sentence(self) -> str:
        lo, hi = self.ci95
        return (
            f"false-alarm rate {_pct(self.rate_by_construction)} by construction; observed {self.n_failed} of "
            f"{self.n_pairs} same-physics pairs ({_pct(self.rate)}, 95 % CI {_pct(lo)}-{_pct(hi)})"
        )

    def to_dict(self) -> dict[str, Any]:
        lo, hi = self.ci95
        return {
            "n_pairs": self.n_pairs, "n_failed": self.n_failed, "observed_rate": self.rate, "ci95": [lo, hi],
            "rate_by_construction": self.rate_by_construction, "n_checks": self.n_checks,
            "failed_checks": self.failed_checks, "seconds": self.seconds, "sentence": self.sentence(),
            "compared": {k: {"pairs_failed": sum(1 for x in v if x), "failed_checks_per_pair": v} for k, v in self.compared.items()},
            "flagged": {k: {"pairs_caught": sum(1 for x in v if x), "failed_checks_per_pair": v} for k, v in self.flagged.items()},
            "calibration": self.calibration,
        }


def simulated_pairs(
    geometry: Any, n_events: int, n_pairs: int, *, seed: int = 0, energies: str = "ds1", n_candidate: int | None = None
) -> Iterator[tuple[ShowerSet, ShowerSet]]:
    """``n_pairs`` independent (reference, candidate) GFlash samples of the same physics (seeds from ``seed``)."""
    from ..showers.reference import simulate

    ss = np.random.SeedSequence(seed)
    for child in ss.spawn(n_pairs):
        a, b = (int(s.generate_state(1)[0]) for s in child.spawn(2))
        yield (
            simulate(geometry, n_events, energies=energies, seed=a, progress=False),
            simulate(geometry, n_candidate or n_events, energies=energies, seed=b, progress=False),
        )


def half_split_pairs(reference: ShowerSet, n_pairs: int, *, seed: int = 0) -> Iterator[tuple[ShowerSet, ShowerSet]]:
    """Disjoint random halves of one reference sample, for users without a simulator."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 21]))
    n = len(reference)
    for _ in range(n_pairs):
        perm = rng.permutation(n)
        yield reference[np.sort(perm[: n // 2])], reference[np.sort(perm[n // 2 : 2 * (n // 2)])]


def _validate_kwargs() -> dict[str, Any]:
    """No on-disk reference cache for throw-away same-physics samples (when ``validate`` has one)."""
    return {"cache": False} if "cache" in inspect.signature(validate).parameters else {}


def measure_false_alarm(
    pairs: Iterable[tuple[Any, Any]],
    spec: GateSpec | str | None = None,
    *,
    compare: dict[str, GateSpec] | None = None,
    distortions: dict[str, Callable[[Any], Any]] | None = None,
    progress: Callable[[int, Any], None] | None = None,
) -> FalseAlarmMeasurement:
    """Validate each same-physics (reference, candidate) pair with the whole gate; count the pairs that fail.

    ``compare``: other gate specs evaluated on the same metrics (e.g. the ``per-check`` rule) whose
    failed-pair counts are reported beside. ``distortions``: name -> function of the candidate
    ShowerSet; each distorted copy is validated against the same reference and the number of
    checks it fails is recorded (the gate's power). ``progress(i, result)`` is called after each pair.
    """
    gate_spec = load_gate_spec(spec)
    t0 = time.perf_counter()
    out = FalseAlarmMeasurement(0, gate_spec.false_alarm.rate, [], [], 0.0)
    out.compared = {k: [] for k in (compare or {})}
    out.flagged = {k: [] for k in (distortions or {})}
    kw = _validate_kwargs()
    for ref, cand in pairs:
        cands = {"same": cand, **{k: fn(cand) for k, fn in (distortions or {}).items()}}
        res = validate(ref, cands, gate_spec, progress=False, html=False, **kw)
        out.n_pairs += 1
        mine = [c for c in res.checks if c.candidate == "same"]
        out.n_checks.append(len(mine))
        out.failed_checks.append(
            [f"{c.metric}({c.target}){'@' + c.energy_bin if c.energy_bin else ''}" for c in mine if not c.passed]
        )
        for k in out.flagged:
            out.flagged[k].append(sum(1 for c in res.checks if c.candidate == k and not c.passed))
        for k, other in (compare or {}).items():
            chk = evaluate_gate(other, {"same": res.candidates["same"]}, reference=res.reference)
            out.compared[k].append(sum(1 for c in chk if not c.passed))
        if gate_spec.false_alarm.method == "max-statistic":
            s = family_calibration(res.reference, gate_spec).summary()
            out.calibration.append({k: s[k] for k in ("n_checks", "critical_sigma", "holdout_failed", "n_holdout")})
        if progress is not None:
            progress(out.n_pairs - 1, res)
    out.seconds = time.perf_counter() - t0
    return out
