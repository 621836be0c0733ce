"""Fidelity gates: YAML thresholds relative to the reference-versus-reference noise floor.

A :class:`GateSpec` (strict pydantic; unknown keys are errors) lists rules:

* ``false_alarm``: the gate's one family-wise false-alarm probability (``rate``, 1 % by default):
  the probability that *any* check of a candidate fails when the candidate has the reference's
  physics, whatever the number of checks (per-energy-bin checks included). With ``method:
  max-statistic`` (default) every feature threshold is calibrated to it by a max-statistic over
  reference half-splits (:mod:`simcompress.validation.calibration`):
  ``value <= r * (mean + c * sd)`` with the split mean and spread of the check and one critical
  value ``c`` for all checks; the report and ``metrics.json`` state the rate in one sentence.
* ``features``: which features are gated on ``w1``, ``ks`` or ``separation_power``. With
  ``false_alarm.method: per-check`` (the uncalibrated rule of earlier versions; the family-wise
  rate then grows with the number of checks) a feature passes when
  ``value <= max(ratio * floor, floor + k * floor_std, k * one_event_resolution)``, where ``floor`` and ``floor_std`` are the
  mean and spread of the same metric between disjoint halves of the reference, over
  ``noise_floor.n_splits`` random splits, rescaled to the candidate's sample sizes
  (KS and W1 scale as sqrt(1/n + 1/m), the separation-power bias as 1/n + 1/m).
* ``fpd`` / ``kpd``: ``value <= floor + k * sqrt(floor_err^2 + value_err^2)`` (and optionally ``<= max_value``).
* ``classifier``: held-out ``AUC <= max_auc`` for each input kind (``low``: voxels; ``high``: features).

Presets live in ``configs/validation/`` (``default``, ``strict``, ``loose``); :func:`load_gate_spec`
accepts a preset name or a path. :func:`evaluate_gate` turns a validation result into
:class:`GateCheck` rows; :func:`make_model_gate` builds the callable the compression pipeline uses.
"""

from __future__ import annotations

import fnmatch
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from .._config import StrictModel, load_yaml
from ..errors import ConfigError, UnknownNameError, did_you_mean

if TYPE_CHECKING:  # pragma: no cover
    from .core import CandidateResult

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


class FeatureRule(StrictModel):
    """Which features a metric gates; ``ratio`` and ``k`` only apply with ``false_alarm.method: per-check``."""

    metric: Literal["w1", "ks", "separation_power"]
    features: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    k: float = Field(5.0, ge=0)
    ratio: float = Field(3.0, ge=1.0)

    def selects(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, p) for p in self.features) and not any(
            fnmatch.fnmatchcase(name, p) for p in self.exclude
        )


class MultivariateRule(StrictModel):
    """FPD/KPD rule: ``value <= floor + k * sqrt(floor_err^2 + value_err^2)`` (and ``<= max_value`` if set)."""

    enabled: bool = True
    gate: bool = True
    k: float = Field(5.0, ge=0)
    max_value: float | None = None
    min_samples: int = Field(20_000, ge=10)
    max_samples: int = Field(50_000, ge=10)
    num_batches: int = Field(20, ge=2)
    num_points: int = Field(10, ge=2)
    batch_size: int = Field(5_000, ge=10)


class ClassifierRule(StrictModel):
    """Classifier two-sample test and its bound on the held-out AUC."""

    enabled: bool = True
    gate: bool = True
    inputs: tuple[Literal["low", "high"], ...] = ("high",)
    max_auc: float = Field(0.6, gt=0.5, le=1.0)
    floor: bool = True
    n_hidden: int = Field(256, ge=1)
    n_layers: int = Field(2, ge=1)
    epochs: int = Field(20, ge=1)
    batch_size: int | None = Field(None, ge=1)
    lr: float = Field(1e-3, gt=0)
    calibrate: bool = True
    max_events: int = Field(50_000, ge=100)
    min_events: int = Field(200, ge=10)


class NoiseFloorConfig(StrictModel):
    """Reference-versus-reference floor: ``n_splits`` random half splits, each half capped at ``max_events``."""

    n_splits: int = Field(8, ge=2)
    max_events: int = Field(100_000, ge=10)


class BootstrapConfig(StrictModel):
    """Bootstrap errors: ``n_boot`` resamples of min(n, ``max_events``) events (KS/W1); multinomial for histograms."""

    n_boot: int = Field(10, ge=2)
    max_events: int = Field(50_000, ge=10)
    n_boot_hist: int = Field(200, ge=2)


class BaselineRule(StrictModel):
    """Compression gates: also pass a check when the candidate is not much worse than a baseline model.

    A compressed generator is judged against the reference *and* against the uncompressed model it
    came from: a check passes when ``value <= max(absolute threshold, relative threshold)`` with the
    relative threshold ``max(ratio * baseline, baseline + k * floor_std)`` for feature metrics,
    ``baseline * ratio + k * sqrt(err_b^2 + err^2)`` for FPD/KPD and ``baseline AUC + auc_margin``
    for the classifier. Without a baseline (plain ``simcompress validate``) it has no effect.
    """

    enabled: bool = False
    ratio: float = Field(1.5, ge=1.0)
    k: float = Field(3.0, ge=0)
    auc_margin: float = Field(0.05, ge=0, le=0.5)


class FalseAlarmConfig(StrictModel):
    """The gate's family-wise false-alarm probability and how thresholds are calibrated to it.

    ``rate``: probability that a candidate with the reference's physics fails any check.
    ``method``: ``max-statistic`` (thresholds from ``n_splits`` reference half-splits of at most
    ``max_events`` events each; ``n_holdout`` of them are kept out of the fit and reported as the
    observed check) or ``per-check`` (each feature rule's own ``ratio``/``k``; no family-wise control).
    """

    rate: float = Field(0.01, gt=0.0, lt=0.5)
    method: Literal["max-statistic", "per-check"] = "max-statistic"
    n_splits: int = Field(150, ge=20)
    n_holdout: int = Field(50, ge=0)
    max_events: int = Field(20_000, ge=10)

    @model_validator(mode="after")
    def _enough_fit_splits(self) -> FalseAlarmConfig:
        if self.n_splits - self.n_holdout < 10:
            msg = f"n_splits - n_holdout = {self.n_splits - self.n_holdout}, need at least 10 splits for the fit"
            raise ValueError(msg)
        return self


class GateSpec(StrictModel):
    """A complete validation gate (see module docstring)."""

    name: str = "custom"
    description: str = ""
    features: tuple[FeatureRule, ...] = (
        FeatureRule(metric="w1"),
        FeatureRule(metric="separation_power"),
    )
    fpd: MultivariateRule = MultivariateRule()
    kpd: MultivariateRule = MultivariateRule()
    classifier: ClassifierRule = ClassifierRule()
    noise_floor: NoiseFloorConfig = NoiseFloorConfig()
    bootstrap: BootstrapConfig = BootstrapConfig()
    binning: Literal["quantile", "calochallenge"] = "quantile"
    n_bins: int = Field(50, ge=2)
    per_energy_bin: bool = False
    #: ``false_alarm.method: per-check`` only: per-bin thresholds are multiplied by this (look-elsewhere).
    #: With the default max-statistic the per-bin checks are part of the calibrated family instead.
    per_bin_scale: float = Field(1.5, ge=1.0)
    min_bin_events: int = Field(50, ge=2)
    energy_mismatch: Literal["warn", "error"] = "warn"
    energy_mismatch_pvalue: float = Field(1e-3, gt=0, lt=1)
    min_events: int = Field(200, ge=2)
    threshold_mev: float | None = Field(None, ge=0)
    baseline: BaselineRule = BaselineRule()
    false_alarm: FalseAlarmConfig = FalseAlarmConfig()
    seed: int = 0


def _preset_dir() -> Path:
    """``configs/validation`` as packaged (``simcompress/_configs`` links to ``configs/``, like the geometries)."""
    from importlib import resources

    return Path(str(resources.files("simcompress") / "_configs" / "validation"))


def preset_names() -> list[str]:
    """Names of the shipped gate presets (``configs/validation/*.yaml``)."""
    d = _preset_dir()
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def load_gate_spec(name_or_path: str | os.PathLike[str] | GateSpec | None = None) -> GateSpec:
    """Load a gate spec from a preset name (``"default"``), a YAML path, or pass a spec through."""
    if isinstance(name_or_path, GateSpec):
        return name_or_path
    if name_or_path is None:
        name_or_path = "default"
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return load_yaml(GateSpec, p)
    cand = _preset_dir() / f"{name_or_path}.yaml"
    if cand.is_file():
        return load_yaml(GateSpec, cand)
    msg = f"unknown gate preset {str(name_or_path)!r}; {did_you_mean(str(name_or_path), preset_names())}"
    raise UnknownNameError(msg)


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


def feature_threshold(rule: FeatureRule, floor: float, floor_std: float, resolution: float = 0.0) -> float:
    """``max(ratio * floor, floor + k * floor_std, k * resolution)``.

    ``resolution`` is the metric's one-event granularity (W1: observed range / n_candidate; KS and
    separation power: 1 / n_candidate). It only matters where the reference floor is degenerate,
    e.g. a feature constant in every reference event of an energy bin, where a floor of 0 would
    otherwise fail a candidate for a single event.
    """
    return max(rule.ratio * floor, floor + rule.k * floor_std, rule.k * resolution)


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
            if b.enabled and bm is not None and not bm.get("skipped"):
                bv = float(bm[key])
                if cal is not None:
                    # the difference of two same-physics values has at most sqrt(2) times one value's spread
                    thr = max(thr, b.ratio * bv, bv + math.sqrt(2.0) * calibration.critical * spread)
                else:
                    thr = max(thr, b.ratio * bv, bv + b.k * spread)
                detail += f"; baseline {bv:.4g}"
            out.append(GateCheck(cand, rule.metric, feat, value, thr, bool(value <= thr), energy_bin, detail))
    return out


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
    from .calibration import family_calibration

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

    ``baseline`` (the uncompressed model's result, for compression gates) relaxes each threshold
    to the :class:`BaselineRule` one when ``spec.baseline.enabled``.

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
        use_base = baseline is not None and spec.baseline.enabled
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
                    from .calibration import null_auc_sd

                    # never tighter than the null AUC's quantile at this check's share of the rate
                    thr = max(thr, 0.5 + cal.other_z[f"classifier:{kind}"] * null_auc_sd(int(m["n_heldout"])))
                bm = baseline.classifier.get(kind) if use_base else None  # type: ignore[union-attr]
                if bm is not None:
                    thr = max(thr, min(1.0, bm["auc"] + spec.baseline.auc_margin))
                    det += f"; baseline AUC {bm['auc']:.3f}"
                checks.append(GateCheck(name, "auc", f"classifier:{kind}", m["auc"], thr, bool(m["auc"] <= thr), "", det))
    return checks


def make_model_gate(
    reference: Any,
    spec: str | os.PathLike[str] | GateSpec | None = None,
    n_events: int = 10_000,
    seed: int = 0,
    *,
    threshold_mev: float | None = None,
    batch_size: int = 10_000,
    progress: bool = False,
    baseline: Any = None,
) -> Any:
    """Build the fidelity gate the compression pipeline calls after each step.

    With ``baseline`` (the uncompressed generator) and a spec whose ``baseline.enabled`` is set
    (preset ``compression``), each check also passes when the model is not much worse than the
    baseline on the same energies and noise; :meth:`set_baseline` sets it later.

    The reference (path, ShowerSet or reader) is read once; its features and noise floor are
    cached. The returned callable samples ``n_events`` showers from a ``ShowerGenerator``
    (``model.sample(E, generator=torch.Generator().manual_seed(seed))``) at the incident
    energies of ``n_events`` reference events drawn with a seeded permutation, validates them
    against the full reference and returns :class:`simcompress.compress.base.GateResult`.
    """
    from .core import PreparedReference

    gate_spec = load_gate_spec(spec)
    if n_events < gate_spec.min_events:
        msg = f"model gate: n_events={n_events} is below the spec's min_events={gate_spec.min_events}"
        raise ConfigError(msg)
    prepared = PreparedReference.build(reference, gate_spec, threshold_mev=threshold_mev, progress=progress)
    gate = _ModelGate(prepared, gate_spec, int(n_events), int(seed), int(batch_size))
    if baseline is not None:
        gate.set_baseline(baseline)
    return gate


class _ModelGate:
    def __init__(self, prepared: Any, spec: GateSpec, n_events: int, seed: int, batch_size: int) -> None:
        import numpy as np

        self.prepared = prepared
        self.spec = spec
        self.n_events = n_events
        self.seed = seed
        self.batch_size = batch_size
        e = prepared.features.incident_energy
        rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
        idx = rng.permutation(e.size)[: min(n_events, e.size)]
        if n_events > e.size:  # more events than the reference: draw the rest with replacement
            idx = np.concatenate([idx, rng.integers(0, e.size, n_events - e.size)])
        self.energies = e[idx].astype(np.float32)
        self.baseline: Any = None
        self.baseline_result: Any = None

    def set_baseline(self, model: Any) -> Any:
        """Evaluate ``model`` once as the baseline; returns its own (absolute) :class:`GateResult`."""
        self.baseline = None
        result = self(model)
        self.baseline = self._last
        self.baseline_result = result
        return result

    def _evaluate(self, model: Any) -> Any:
        import torch

        from ..showers.data import ShowerSet
        from .core import evaluate_candidate

        geom = getattr(model, "geometry", None)
        if geom is not None and not geom.same_binning(self.prepared.geometry):
            from ..errors import GeometryError

            msg = f"model gate: model geometry {geom.name!r} does not match reference {self.prepared.geometry.name!r}"
            raise GeometryError(
                msg
            )
        g = torch.Generator().manual_seed(self.seed)
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
        if device.type != "cpu":
            g = torch.Generator(device=device).manual_seed(self.seed)
        e = torch.from_numpy(self.energies).to(device)
        import inspect

        kwargs: dict[str, Any] = {"generator": g}
        try:
            if "batch_size" in inspect.signature(model.sample).parameters:
                kwargs["batch_size"] = self.batch_size
        except (TypeError, ValueError):  # builtins / C extensions without a signature
            pass
        with torch.no_grad():
            out = model.sample(e, **kwargs)
        showers = out.detach().to("cpu", torch.float32).numpy()
        cand = ShowerSet(self.energies, showers, self.prepared.geometry, {"source": "model gate"})
        return evaluate_candidate(self.prepared, "model", cand, progress=False)

    def __call__(self, model: Any) -> Any:
        import numpy as np

        from ..compress.base import GateResult

        res = self._evaluate(model)
        self._last = res
        checks = evaluate_gate(self.spec, {"model": res}, baseline=self.baseline, reference=self.prepared)
        fa = false_alarm_summary(self.spec, self.prepared)
        failed = [c for c in checks if not c.passed]
        passed = not failed
        rel = " (or within the baseline rule of the uncompressed model)" if self.baseline is not None and self.spec.baseline.enabled else ""
        if passed:
            summary = f"gate {self.spec.name!r}: all {len(checks)} checks passed{rel}"
        else:
            worst = sorted(failed, key=lambda c: -(c.value / c.threshold if c.threshold > 0 else math.inf))[:3]
            summary = f"gate {self.spec.name!r}: {len(failed)}/{len(checks)} checks failed{rel}, e.g. " + "; ".join(
                f"{c.metric}({c.target})={c.value:.4g} > {c.threshold:.4g}" for c in worst
            )
        summary += " [" + (
            f"family-wise false-alarm rate {100 * fa['rate']:.2g} %" if fa.get("rate") else "false-alarm rate not controlled"
        ) + "]"
        from .core import _jsonable

        return GateResult(
            passed=passed,
            summary=summary,
            metrics=_jsonable(
                {
                    "spec": self.spec.name,
                    "n_events": int(np.size(self.energies)),
                    "relative_to_baseline": bool(self.baseline is not None and self.spec.baseline.enabled),
                    "false_alarm": fa,
                    "checks": [c.to_dict() for c in checks],
                    "candidate": res.to_dict(),
                }
            ),
        )
