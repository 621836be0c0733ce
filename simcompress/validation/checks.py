"""The gate's checks: each metric of a candidate against its threshold from the gate spec.

:func:`evaluate_gate` turns candidate results into :class:`GateCheck` rows, with the feature
thresholds calibrated to the spec's family-wise false-alarm rate on the prepared reference
(:mod:`simcompress.validation.calibration`) or, with ``false_alarm.method: per-check``, from each
rule's own ``ratio`` and ``k`` (:func:`~.spec.feature_threshold`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .calibration import family_calibration, null_auc_sd
from .spec import GateSpec, MultivariateRule, feature_threshold

if TYPE_CHECKING:  # pragma: no cover
    from .evaluation import CandidateResult

__all__ = ["TEACHER_RULE", "GateCheck", "evaluate_gate", "false_alarm_summary", "teacher_rule"]

#: The compression gate's rule (``baseline.rule: teacher``), as stated in reports and ``GateResult.metrics``.
TEACHER_RULE = (
    "A compressed model passes when every check of its damage (the model against an independent teacher sample "
    "at the same incident energies, thresholds calibrated on the teacher sample's half-splits like the reference "
    "gate's) passes, and every reference check that the teacher passes, the model passes too or exceeds the "
    "teacher's value by no more than that check's damage threshold."
)


@dataclass(frozen=True)
class GateCheck:
    """One gate comparison."""

    candidate: str
    metric: str
    target: str  # feature name, "fpd", "kpd", "classifier:high", ...
    value: float
    threshold: float
    passed: bool
    energy_bin: str = ""
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)



_KEY = {"w1": "w1", "ks": "ks", "separation_power": "sp"}


def _n_candidate(m: dict[str, Any]) -> int:
    """Candidate events behind one feature's metrics (core stores the one-event KS resolution 1/n)."""
    res = float(m["floor"].get("ks_res", 0.0))
    return round(1.0 / res) if res > 0 else 0


def _feature_checks(
    spec: GateSpec,
    cand: str,
    metrics: dict[str, dict[str, Any]],
    energy_bin: str = "",
    baseline: dict[str, dict[str, Any]] | None = None,
    calibration: Any = None,
) -> list[GateCheck]:
    out = []
    b = spec.baseline
    margin = _margin_rule(spec)
    for rule in spec.features:
        key = _KEY[rule.metric]
        for feat, m in metrics.items():
            if not rule.selects(feat) or m.get("skipped"):
                continue
            value = float(m[key])
            floor = float(m["floor"][key])
            fstd = float(m["floor"][key + "_std"])
            res = float(m["floor"].get(key + "_res", 0.0))
            cal = calibration.threshold(rule.metric, feat, energy_bin, _n_candidate(m)) if calibration is not None else None
            if cal is not None:
                # family-wise calibrated: mean + c sd of this check over the reference half-splits, at these sizes
                thr, cmean, csd = cal
                # never below c one-event steps of this comparison (a feature constant in the reference)
                thr = max(thr, calibration.critical * res)
                spread = csd
                detail = f"floor {cmean:.4g} ± {csd:.3g} (calibrated, {calibration.critical:.2f} sigma)"
            else:
                thr = feature_threshold(rule, floor, fstd, res) * (spec.per_bin_scale if energy_bin else 1.0)
                spread = fstd
                detail = f"floor {floor:.4g} ± {fstd:.3g}"
            bm = (baseline or {}).get(feat)
            if margin and bm is not None and not bm.get("skipped"):
                bv = float(bm[key])
                if cal is not None:
                    # the difference of two same-physics values has at most sqrt(2) times one value's spread
                    thr = max(thr, b.ratio * bv, bv + math.sqrt(2.0) * calibration.critical * spread)
                else:
                    thr = max(thr, b.ratio * bv, bv + b.k * spread)
                detail += f"; baseline {bv:.4g}"
            out.append(GateCheck(cand, rule.metric, feat, value, thr, bool(value <= thr), energy_bin, detail))
    return out


def _margin_rule(spec: GateSpec) -> bool:
    """Whether a baseline result relaxes each threshold (``baseline.rule: margin``)."""
    return bool(spec.baseline.enabled and spec.baseline.rule == "margin")


def _check_key(c: GateCheck) -> tuple[str, str, str]:
    return (c.metric, c.target, c.energy_bin)


def _allowed_change(c: GateCheck) -> float:
    """How much further from the reference a damage check lets the model be than its teacher.

    A distance (W1, KS, FPD, ...) to the reference grows by at most the distance to the teacher
    (triangle inequality), so a model within its damage threshold ``t`` of the teacher may be up
    to ``t`` further from the reference; for the classifier the distance is ``AUC - 0.5``.
    """
    return max(c.threshold - 0.5, 0.0) if c.metric == "auc" else max(c.threshold, 0.0)


def teacher_rule(
    damage: list[GateCheck], student_ref: list[GateCheck], teacher_ref: list[GateCheck] | None
) -> tuple[bool, list[GateCheck], list[GateCheck]]:
    """:data:`TEACHER_RULE`: ``(passed, failed damage checks, reference checks lost)``.

    ``damage``: the checks of the student against the teacher sample; ``student_ref`` and
    ``teacher_ref``: the reference checks of student and teacher (matched by metric, target and
    energy bin). A lost check is one the teacher passes and the student fails by more than the
    change its damage check allows (:func:`_allowed_change`; 0 without a matching damage
    check), so that a teacher just inside a threshold does not decide the verdict by noise.
    Without a reference (``teacher_ref`` None) only the damage counts.
    """
    failed = [c for c in damage if not c.passed]
    lost: list[GateCheck] = []
    if teacher_ref is not None:
        kept = {_check_key(c): c.value for c in teacher_ref if c.passed}
        allowed = {_check_key(c): _allowed_change(c) for c in damage}
        lost = [
            c for c in student_ref
            if not c.passed and _check_key(c) in kept and c.value > kept[_check_key(c)] + allowed.get(_check_key(c), 0.0)
        ]
    return not failed and not lost, failed, lost


def _calibration(spec: GateSpec, reference: Any) -> Any:
    """The family-wise calibration for ``spec`` on ``reference`` (a PreparedReference), or None (per-check rule)."""
    if spec.false_alarm.method != "max-statistic":
        return None
    if reference is None:
        msg = (
            "gate: false_alarm.method 'max-statistic' calibrates thresholds on the reference; pass reference= "
            "(a PreparedReference) to evaluate_gate, or use method 'per-check'"
        )
        raise ConfigError(
            msg
        )
    return family_calibration(reference, spec)


def false_alarm_summary(spec: GateSpec, reference: Any) -> dict[str, Any]:
    """What ``metrics.json`` and the report state about the gate's family-wise false-alarm rate."""
    cal = _calibration(spec, reference)
    if cal is None:
        return {
            "method": "per-check",
            "rate": None,
            "sentence": "Family-wise false-alarm rate not controlled (false_alarm.method: per-check): each check has its "
            "own threshold, so the chance that some check fails on same-physics samples grows with the number of checks.",
        }
    return cal.summary()


def evaluate_gate(
    spec: GateSpec,
    candidates: dict[str, CandidateResult],
    baseline: CandidateResult | None = None,
    *,
    reference: Any = None,
) -> list[GateCheck]:
    """All gate checks for every candidate of a validation run.

    ``reference`` (the :class:`~simcompress.validation.core.PreparedReference`) is needed by the
    default ``false_alarm.method: max-statistic``: the feature thresholds are calibrated on its
    half-splits so that a candidate of the same physics fails any check with probability
    ``false_alarm.rate`` (:mod:`simcompress.validation.calibration`).

    ``baseline`` (the uncompressed model's result) relaxes each threshold to the margin of
    :class:`~.spec.BaselineRule` when ``spec.baseline`` is enabled with ``rule: margin``; the
    default ``rule: teacher`` is applied by the callers (:func:`teacher_rule`), so here the
    baseline has no effect.

    With ``per_energy_bin`` on and a candidate whose incident-energy distribution differs from
    the reference's, only the per-bin checks gate that candidate: the inclusive histograms,
    FPD/KPD and the classifier (which sees log E_inc) are distorted by construction. They stay
    in the report and in ``metrics.json``.
    """
    checks: list[GateCheck] = []
    cal = _calibration(spec, reference)
    for name, res in candidates.items():
        if spec.per_energy_bin:
            for label, feats in res.per_energy_bin.items():
                bfeats = baseline.per_energy_bin.get(label) if baseline is not None else None
                checks += _feature_checks(spec, name, feats, energy_bin=label, baseline=bfeats, calibration=cal)
            if res.incident_energy.get("mismatch"):
                continue
        checks += _feature_checks(
            spec, name, res.features, baseline=baseline.features if baseline is not None else None, calibration=cal
        )
        use_base = baseline is not None and _margin_rule(spec)
        for key in ("fpd", "kpd"):
            rule: MultivariateRule = getattr(spec, key)
            m = res.multivariate.get(key)
            if not (rule.enabled and rule.gate) or m is None:
                continue
            k = max(rule.k, cal.other_z.get(key, 0.0)) if cal is not None else rule.k  # within its share of the rate
            thr = m["floor"] + k * math.sqrt(m["floor_err"] ** 2 + m["err"] ** 2)
            if rule.max_value is not None:
                thr = min(thr, rule.max_value) if thr > 0 else rule.max_value
            det = f"floor {m['floor']:.4g} ± {m['floor_err']:.3g}"
            bm = baseline.multivariate.get(key) if use_base else None  # type: ignore[union-attr]
            if bm is not None:
                rel = spec.baseline.ratio * bm["value"] + spec.baseline.k * math.sqrt(bm["err"] ** 2 + m["err"] ** 2)
                thr = max(thr, rel)
                det += f"; baseline {bm['value']:.4g}"
            checks.append(GateCheck(name, key, key, m["value"], thr, bool(m["value"] <= thr), "", det))
        cr = spec.classifier
        if cr.enabled and cr.gate:
            for kind, m in res.classifier.items():
                fl = m.get("floor")
                det = f"floor AUC {fl['auc']:.3f}" if fl else ""
                thr = cr.max_auc
                if cal is not None and f"classifier:{kind}" in cal.other_z and m.get("n_heldout"):
                    # never tighter than the null AUC's quantile at this check's share of the rate
                    thr = max(thr, 0.5 + cal.other_z[f"classifier:{kind}"] * null_auc_sd(int(m["n_heldout"])))
                bm = baseline.classifier.get(kind) if use_base else None  # type: ignore[union-attr]
                if bm is not None:
                    thr = max(thr, min(1.0, bm["auc"] + spec.baseline.auc_margin))
                    det += f"; baseline AUC {bm['auc']:.3f}"
                checks.append(GateCheck(name, "auc", f"classifier:{kind}", m["auc"], thr, bool(m["auc"] <= thr), "", det))
    return checks
