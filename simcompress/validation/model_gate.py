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
from .checks import evaluate_gate, false_alarm_summary
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

    With ``baseline`` (the uncompressed generator) and a spec whose ``baseline.enabled`` is set
    (preset ``compression``), each check also passes when the model is not much worse than the
    baseline on the same energies and noise; :meth:`set_baseline` sets it later.

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

    def set_baseline(self, model: Any) -> Any:
        """Evaluate ``model`` once as the baseline; returns its own (absolute) :class:`GateResult`."""
        self.baseline = None
        result = self(model)
        self.baseline = self._last
        self.baseline_result = result
        return result

    def _evaluate(self, model: Any) -> Any:
        import torch

        geom = getattr(model, "geometry", None)
        if geom is not None and not geom.same_binning(self.prepared.geometry):
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
        return GateResult(
            passed=passed,
            summary=summary,
            metrics=jsonable(
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
