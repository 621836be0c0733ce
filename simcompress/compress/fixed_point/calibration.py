"""Calibration of the fixed-point methods: the network inputs, and the value ranges they produce.

Integer bits not given in a config are chosen from the ranges the float network shows on
these inputs (:func:`observe_ranges`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.fx
from torch import nn

from ...errors import ConfigError
from .config import FixedPointConfig
from .tracing import ACTIVATION_MODULES, functional_kind

__all__ = ["INPUT_RANGE", "calibration_inputs", "observe_ranges"]

#: key of the range over all network inputs in :func:`observe_ranges`
INPUT_RANGE = "__input__"


def calibration_inputs(model: nn.Module, net: nn.Module, cfg: FixedPointConfig, given: Any) -> list[torch.Tensor] | None:
    """The network inputs to observe ranges on: from ``given`` (a callable running the model, a
    tensor, a tuple of inputs or a list of batches), else sampled from a shower generator's
    ``latent_dim`` / ``condition`` / ``energy_range_mev``; None when neither is there."""
    if given is not None:
        if callable(given):
            # the pipeline's calibration callable runs the whole model (e.g. m.network(z, m.condition(e)));
            # capture what reaches the network
            captured: list[list[torch.Tensor]] = []

            def grab(_m: nn.Module, args: tuple[Any, ...]) -> None:
                captured.append([a.detach() for a in args if isinstance(a, torch.Tensor)])

            handle = net.register_forward_pre_hook(grab)
            try:
                with torch.no_grad():
                    given(model)
            finally:
                handle.remove()
            if not captured:
                msg = f"{cfg.method}: the calibration callable never ran the network"
                raise ConfigError(msg)
            return [torch.cat([c[k] for c in captured]).float() for k in range(len(captured[0]))]
        if isinstance(given, torch.Tensor):
            return [given.float()]
        items = list(given)
        if items and isinstance(items[0], (list, tuple)):  # a list of batches
            return [torch.cat([torch.as_tensor(b[k]) for b in items]).float() for k in range(len(items[0]))]
        return [torch.as_tensor(t).float() for t in items]
    latent = getattr(model, "latent_dim", None)
    cond = getattr(model, "condition", None)
    erange = getattr(model, "energy_range_mev", None)
    if latent is None or cond is None or erange is None:
        return None
    gen = torch.Generator().manual_seed(cfg.seed)
    n = cfg.calibration_samples
    z = torch.randn(n, int(latent), generator=gen)
    lo, hi = (float(v) for v in erange)
    u = torch.rand(n, generator=gen, dtype=torch.float64)
    energies = torch.exp(math.log(lo) + u * (math.log(hi) - math.log(lo))).float()
    with torch.no_grad():
        c = cond(energies)
    if c.ndim == 1:
        c = c[:, None]
    return [z, c.float()]


def _widen(ranges: dict[str, list[float]], name: str, out: torch.Tensor) -> None:
    lo, hi = float(out.min()), float(out.max())
    r = ranges.setdefault(name, [lo, hi])
    r[0], r[1] = min(r[0], lo), max(r[1], hi)


def observe_ranges(gm: torch.fx.GraphModule, modules: dict[str, nn.Module], selected: set[str],
                   inputs: list[torch.Tensor]) -> dict[str, list[float]]:
    """``[min, max]`` per selected weight layer, activation module and functional activation
    (by module or node name) of the float network on ``inputs``, plus :data:`INPUT_RANGE`."""
    ranges: dict[str, list[float]] = {}

    def _obs(name: str) -> Any:
        def hook(_m: nn.Module, _a: Any, out: torch.Tensor) -> None:
            _widen(ranges, name, out)

        return hook

    hooks = [m.register_forward_hook(_obs(n)) for n, m in modules.items()
             if n in selected or isinstance(m, ACTIVATION_MODULES)]
    functional = {n.name for n in gm.graph.nodes if functional_kind(n) is not None}

    class _Observe(torch.fx.Interpreter):
        def run_node(self, n: torch.fx.Node) -> Any:
            out = super().run_node(n)
            if n.name in functional and isinstance(out, torch.Tensor):
                _widen(ranges, n.name, out)
            return out

    try:
        with torch.no_grad():
            _Observe(gm).run(*inputs)
    finally:
        for h in hooks:
            h.remove()
    allv = torch.cat([t.reshape(-1) for t in inputs])
    ranges[INPUT_RANGE] = [float(allv.min()), float(allv.max())]
    return ranges
