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
* ``classifier``: held-out ``AUC <= max_auc`` for each input kind (``low``: voxels; ``high``: features),
  trained by ``preset: gate`` (the cheap default) or ``preset: calochallenge`` (CaloChallenge's DNN;
  :data:`CLASSIFIER_PRESETS`, docs/classifier.md).

Presets live in ``configs/validation/`` (``default``, ``strict``, ``loose``); :func:`load_gate_spec`
accepts a preset name or a path. The rules are applied by :mod:`.checks` (:func:`~.checks.evaluate_gate`);
the callable the compression pipeline uses is :mod:`.model_gate`.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from .._config import StrictModel, load_yaml
from ..errors import UnknownNameError, did_you_mean

__all__ = [
    "CLASSIFIER_PRESETS",
    "BaselineRule",
    "BootstrapConfig",
    "ClassifierRule",
    "FalseAlarmConfig",
    "FeatureRule",
    "GateSpec",
    "MultivariateRule",
    "NoiseFloorConfig",
    "classifier_preset",
    "feature_threshold",
    "load_gate_spec",
    "preset_names",
    "with_classifier_preset",
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


#: Classifier presets (their training settings; see docs/classifier.md). ``calochallenge`` is
#: CaloChallenge 2022's ``evaluate.py`` DNN (``--cls_n_layer 2 --cls_n_hidden 2048``: an input block
#: and two hidden blocks, i.e. three Linear(2048) -> LeakyReLU blocks; 50 epochs, Adam 2e-4, batches
#: of 1000, best epoch by test accuracy, isotonic calibration, no input scaling beyond theirs).
#: ``gate`` is the cheap preset of the compression and default gates: weaker, so on the same
#: samples its AUC can be lower than the truth; a bound on the damage, not the CaloChallenge figure.
#: ``patience``: stop once this many epochs in a row brought no better test accuracy (0, both presets'
#: default: run every epoch, as ``evaluate.py``); the epoch selected is the best of those run
#: (opt-in: it is faster and slightly weaker, docs/classifier.md).
CLASSIFIER_PRESETS: dict[str, dict[str, object]] = {
    "calochallenge": {
        "n_hidden": 2048, "n_layers": 3, "dropout": 0.0, "epochs": 50, "batch_size": 1000, "lr": 2e-4,
        "calibrate": True, "standardize": False, "max_events": 121_000, "threads": 0, "precision": "float32",
        "patience": 0,
    },
    "gate": {
        "n_hidden": 256, "n_layers": 2, "dropout": 0.0, "epochs": 20, "batch_size": None, "lr": 1e-3,
        "calibrate": True, "standardize": True, "max_events": 50_000, "threads": 1, "precision": "float32",
        "patience": 0,
    },
}

#: one-line label of each preset, printed with its settings in the report
CLASSIFIER_PRESET_LABELS: dict[str, str] = {
    "calochallenge": "CaloChallenge 2022 evaluate.py DNN (full strength)",
    "gate": "cheap preset for the compression gate (weaker than CaloChallenge's; its AUC is a lower bound)",
}


def classifier_preset(name: str) -> dict[str, object]:
    """The settings of a classifier preset; an unknown name is a one-line error naming the allowed ones."""
    try:
        return dict(CLASSIFIER_PRESETS[name])
    except (KeyError, TypeError):
        msg = f"unknown classifier preset {name!r}; allowed: {', '.join(sorted(CLASSIFIER_PRESETS))}"
        raise UnknownNameError(msg) from None


class ClassifierRule(StrictModel):
    """Classifier two-sample test and its bound on the held-out AUC.

    ``preset`` (``gate`` or ``calochallenge``, :data:`CLASSIFIER_PRESETS`) sets the training
    settings; a setting written next to it overrides the preset's (e.g. a narrower ``n_hidden``
    for a quick look; the report prints the settings used). ``threads``: torch threads while
    training, 0 for every core of this process. ``precision``: ``float32`` (default) or ``bfloat16``
    (the matrix products in bfloat16 under ``torch.autocast``, float32 master weights, Adam and
    loss in float32; about 4x the matrix-product rate on a CPU with AVX512-BF16; see docs/classifier.md).
    ``patience``: stop after this many epochs without a better test accuracy (0: run every epoch).
    """

    enabled: bool = True
    gate: bool = True
    inputs: tuple[Literal["low", "high"], ...] = ("high",)
    max_auc: float = Field(0.6, gt=0.5, le=1.0)
    floor: bool = True
    preset: Literal["gate", "calochallenge"] = "gate"
    n_hidden: int = Field(256, ge=1)
    n_layers: int = Field(2, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    epochs: int = Field(20, ge=1)
    batch_size: int | None = Field(None, ge=1)
    lr: float = Field(1e-3, gt=0)
    calibrate: bool = True
    standardize: bool = True
    threads: int = Field(1, ge=0)
    precision: Literal["float32", "bfloat16"] = "float32"
    patience: int = Field(0, ge=0)
    max_events: int = Field(50_000, ge=100)
    min_events: int = Field(200, ge=10)

    @model_validator(mode="before")
    @classmethod
    def _preset_defaults(cls, data: object) -> object:
        # the preset's settings fill in every setting not given explicitly
        if isinstance(data, dict):
            name = data.get("preset", "gate")
            if isinstance(name, str) and name in CLASSIFIER_PRESETS:
                data = {**CLASSIFIER_PRESETS[name], **data}
        return data

    def with_preset(self, name: str) -> ClassifierRule:
        """This rule with preset ``name``'s training settings (enabled, gate, inputs, bounds kept)."""
        classifier_preset(name)  # one-line error for an unknown name
        keep = {k: getattr(self, k) for k in ("enabled", "gate", "inputs", "max_auc", "floor", "min_events")}
        return ClassifierRule(preset=name, **keep)


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
    """Compression gates: judge a compressed model relative to the uncompressed model (the teacher).

    ``rule: teacher`` (the ``compression`` preset): the damage is measured directly. The student is
    compared with an independent teacher sample at the same incident energies (different noise),
    with the thresholds calibrated on that teacher sample's half-splits exactly as the reference
    gate's are on the reference (``ratio``, ``k`` and ``auc_margin`` are unused), and every
    reference check the teacher passes must still pass, up to the change the damage threshold of
    that check allows (:data:`~.checks.TEACHER_RULE`, :func:`~.checks.teacher_rule`).

    ``rule: margin`` (earlier versions): a check passes when ``value <= max(absolute threshold,
    relative threshold)`` with the relative threshold ``max(ratio * baseline, baseline + k *
    floor_std)`` for feature metrics, ``baseline * ratio + k * sqrt(err_b^2 + err^2)`` for FPD/KPD
    and ``baseline AUC + auc_margin`` for the classifier.

    Without a baseline model (plain ``simcompress validate``) neither rule has an effect.
    """

    enabled: bool = False
    rule: Literal["teacher", "margin"] = "teacher"
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



def with_classifier_preset(spec: GateSpec, name: str) -> GateSpec:
    """``spec`` with its classifier trained by preset ``name`` (``gate`` or ``calochallenge``).

    Replaces every training setting by the preset's (what ``validate --classifier NAME`` does);
    which inputs are tested, whether it gates, and the AUC bound stay the spec's.
    """
    return spec.model_copy(update={"classifier": spec.classifier.with_preset(name)})


def feature_threshold(rule: FeatureRule, floor: float, floor_std: float, resolution: float = 0.0) -> float:
    """``max(ratio * floor, floor + k * floor_std, k * resolution)``.

    ``resolution`` is the metric's one-event granularity (W1: observed range / n_candidate; KS and
    separation power: 1 / n_candidate). It only matters where the reference floor is degenerate,
    e.g. a feature constant in every reference event of an energy bin, where a floor of 0 would
    otherwise fail a candidate for a single event.
    """
    return max(rule.ratio * floor, floor + rule.k * floor_std, rule.k * resolution)
