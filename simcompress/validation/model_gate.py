"""The model gate: the fidelity gate the compression pipeline calls after each step.

:func:`make_model_gate` prepares the reference once and returns a callable that samples a
generator at fixed, seeded incident energies, evaluates the showers against the reference with
the gate spec and returns :class:`simcompress.compress.base.GateResult` (strict-JSON metrics).
"""

from __future__ import annotations

import inspect
import math
import os
from typing import Any

import numpy as np

from ..errors import ConfigError, GeometryError
from ..showers.data import ShowerSet
from ._shared import jsonable
from .checks import TEACHER_RULE, GateCheck, evaluate_gate, false_alarm_summary, teacher_rule
from .evaluation import evaluate_candidate
from .prepared import PreparedReference
from .spec import GateSpec, load_gate_spec

__all__ = ["make_model_gate"]


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

    With ``baseline`` (the uncompressed generator, the teacher) and a spec whose ``baseline`` is
    enabled (preset ``compression``, ``rule: teacher``), a model passes by
    :data:`~.checks.TEACHER_RULE`: its damage is measured against a teacher sample generated once
    here (same incident energies, other noise seed; its half-splits give the floor and the
    calibrated thresholds), and every reference check the teacher passes must still pass. With
    ``rule: margin`` each check also passes when the model is within a margin of the baseline's
    value. :meth:`set_baseline` sets the baseline later.

    The reference (path, ShowerSet or reader) is read once; its features and noise floor are
    cached. The returned callable samples ``n_events`` showers from a ``ShowerGenerator``
    (``model.sample(E, generator=torch.Generator().manual_seed(seed))``) at the incident
    energies of ``n_events`` reference events drawn with a seeded permutation, validates them
    against the full reference and returns :class:`simcompress.compress.base.GateResult`.
    """
    gate_spec = load_gate_spec(spec)
    if n_events < gate_spec.min_events:
        msg = f"model gate: n_events={n_events} is below the spec's min_events={gate_spec.min_events}"
        raise ConfigError(msg)
    prepared = PreparedReference.build(reference, gate_spec, threshold_mev=threshold_mev, progress=progress)
    gate = _ModelGate(prepared, gate_spec, int(n_events), int(seed), int(batch_size))
    if baseline is not None:
        gate.set_baseline(baseline)
    return gate


#: the teacher sample of the damage comparison uses this seed offset (independent of the models' own noise)
TEACHER_SEED_OFFSET = 7919


def _worst(checks: list[GateCheck], n: int = 3) -> str:
    worst = sorted(checks, key=lambda c: -(c.value / c.threshold if c.threshold > 0 else math.inf))[:n]
    return "; ".join(f"{c.metric}({c.target})={c.value:.4g} > {c.threshold:.4g}" for c in worst)


class _ModelGate:
    def __init__(self, prepared: PreparedReference, spec: GateSpec, n_events: int, seed: int, batch_size: int) -> None:
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
        #: the teacher sample of the damage comparison (``rule: teacher``), prepared once per baseline
        self.teacher: PreparedReference | None = None
        self._teacher_checks: list[GateCheck] = []

    @property
    def teacher_rule(self) -> bool:
        """Whether models are judged by :data:`~.checks.TEACHER_RULE` (a baseline set, ``rule: teacher``)."""
        b = self.spec.baseline
        return bool(self.baseline is not None and b.enabled and b.rule == "teacher")

    def set_baseline(self, model: Any) -> Any:
        """Evaluate ``model`` once as the baseline; returns its own (absolute) :class:`GateResult`.

        With ``baseline.rule: teacher`` this also generates the teacher sample of the damage
        comparison (seed ``seed + TEACHER_SEED_OFFSET``) and prepares it (floor, calibration).
        """
        self.baseline = None
        self.teacher = None
        result = self(model)
        self.baseline = self._last
        self._teacher_checks = evaluate_gate(self.spec, {"model": self._last}, reference=self.prepared)
        self.baseline_result = result
        if self.spec.baseline.enabled and self.spec.baseline.rule == "teacher":
            showers = self._sample(model, self.seed + TEACHER_SEED_OFFSET)
            thr = self.prepared.features.threshold_mev
            self.teacher = PreparedReference.build(showers, self.spec, threshold_mev=thr, progress=False, cache=False)
        return result

    def _sample(self, model: Any, seed: int) -> ShowerSet:
        import torch

        geom = getattr(model, "geometry", None)
        if geom is not None and not geom.same_binning(self.prepared.geometry):
            msg = f"model gate: model geometry {geom.name!r} does not match reference {self.prepared.geometry.name!r}"
            raise GeometryError(msg)
        g = torch.Generator().manual_seed(seed)
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
        if device.type != "cpu":
            g = torch.Generator(device=device).manual_seed(seed)
        e = torch.from_numpy(self.energies).to(device)
        kwargs: dict[str, Any] = {"generator": g}
        try:
            if "batch_size" in inspect.signature(model.sample).parameters:
                kwargs["batch_size"] = self.batch_size
        except (TypeError, ValueError):  # builtins / C extensions without a signature
            pass
        with torch.no_grad():
            out = model.sample(e, **kwargs)
        showers = out.detach().to("cpu", torch.float32).numpy()
        return ShowerSet(self.energies, showers, self.prepared.geometry, {"source": "model gate"})

    def __call__(self, model: Any) -> Any:
        from ..compress.base import GateResult

        cand = self._sample(model, self.seed)
        res = evaluate_candidate(self.prepared, "model", cand, progress=False)
        self._last = res
        fa = false_alarm_summary(self.spec, self.prepared)
        fa_text = " [" + (
            f"family-wise false-alarm rate {100 * fa['rate']:.2g} %" if fa.get("rate") else "false-alarm rate not controlled"
        ) + "]"
        if self.teacher_rule and self.teacher is not None:
            return self._teacher_verdict(res, cand, fa, fa_text)
        checks = evaluate_gate(self.spec, {"model": res}, baseline=self.baseline, reference=self.prepared)
        failed = [c for c in checks if not c.passed]
        passed = not failed
        margin = self.baseline is not None and self.spec.baseline.enabled
        rel = " (or within the baseline rule of the uncompressed model)" if margin else ""
        if passed:
            summary = f"gate {self.spec.name!r}: all {len(checks)} checks passed{rel}"
        else:
            summary = f"gate {self.spec.name!r}: {len(failed)}/{len(checks)} checks failed{rel}, e.g. " + _worst(failed)
        return GateResult(
            passed=passed,
            summary=summary + fa_text,
            metrics=jsonable(
                {
                    "spec": self.spec.name,
                    "n_events": int(np.size(self.energies)),
                    "relative_to_baseline": bool(margin),
                    "rule": "margin" if margin else "absolute",
                    "false_alarm": fa,
                    "checks": [c.to_dict() for c in checks],
                    "candidate": res.to_dict(),
                }
            ),
        )

    def _teacher_verdict(self, res: Any, cand: ShowerSet, fa: dict[str, Any], fa_text: str) -> Any:
        """:data:`~.checks.TEACHER_RULE`: damage against the teacher sample, reference checks the teacher passes."""
        from ..compress.base import GateResult

        assert self.teacher is not None
        dres = evaluate_candidate(self.teacher, "model", cand, progress=False)
        damage = evaluate_gate(self.spec, {"model": dres}, reference=self.teacher)
        ref_checks = evaluate_gate(self.spec, {"model": res}, reference=self.prepared)
        passed, failed, lost = teacher_rule(damage, ref_checks, self._teacher_checks)
        kept = sum(c.passed for c in self._teacher_checks)
        name = self.spec.name
        if passed:
            summary = (f"gate {name!r}: damage vs teacher within the floor ({len(damage)} checks passed); "
                       f"all {kept} reference checks the teacher passes still pass")
        else:
            parts = []
            if failed:
                parts.append(f"damage vs teacher: {len(failed)}/{len(damage)} checks failed, e.g. {_worst(failed)}")
            if lost:
                parts.append(f"{len(lost)} of the {kept} reference checks the teacher passes now fail, e.g. {_worst(lost)}")
            summary = f"gate {name!r}: " + "; ".join(parts)
        return GateResult(
            passed=passed,
            summary=summary + fa_text,
            metrics=jsonable(
                {
                    "spec": name,
                    "n_events": int(np.size(self.energies)),
                    "relative_to_baseline": True,
                    "rule": "teacher",
                    "rule_sentence": TEACHER_RULE,
                    "false_alarm": fa,
                    "checks": [c.to_dict() for c in ref_checks],
                    "teacher_checks": [c.to_dict() for c in self._teacher_checks],
                    "lost_checks": [c.to_dict() for c in lost],
                    "candidate": res.to_dict(),
                    "damage": {
                        "passed": not failed,
                        "teacher_seed": self.seed + TEACHER_SEED_OFFSET,
                        "false_alarm": false_alarm_summary(self.spec, self.teacher),
                        "checks": [c.to_dict() for c in damage],
                        "candidate": dres.to_dict(),
                    },
                }
            ),
        )
