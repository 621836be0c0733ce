"""Storage accounting from the actual bits of every stored tensor.

A tensor costs ``numel * value_bits`` stored densely. When it has zeros (a
pruning mask, or weights quantized to zero) two sparse encodings are priced
and the cheapest of the three is used:

* ``bitmask``: one bit per element plus ``nnz * value_bits``;
* ``csr`` (the tensor viewed as ``rows x cols`` with ``rows = shape[0]``):
  ``nnz * (value_bits + ceil(log2 cols))`` for values and column indices plus
  ``(rows + 1) * ceil(log2(nnz + 1))`` for the row pointers.

Quantized tensors (a :class:`~simcompress.compress.parametrizations.FakeQuant`
on them) add their scales (32-bit float each) and, when asymmetric, their zero
points (``bits`` each). Values come from the parametrized (effective) tensor:
that is what a deployment stores; masks, LoRA factors and float originals
inside ``parametrizations`` are not counted separately.

Time accounting (:func:`sample_rate`, :func:`sample_split`): end-to-end ``sample()`` showers/s of
shower generators and where ``sample()`` spends its time (noise and condition, network,
postprocess, the rest), several models interleaved in one process so that each sees the same
machine load.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from .parametrizations import FakeQuant, find_parametrization, parametrizations_of

__all__ = [
    "SPLIT_STAGES",
    "TensorStorage",
    "count_params",
    "encode_cost",
    "sample_rate",
    "sample_split",
    "storage_bits",
    "storage_table",
    "weight_bits_of",
]

SCALE_BITS = 32


@dataclass(frozen=True)
class TensorStorage:
    name: str
    shape: tuple[int, ...]
    numel: int
    nnz: int
    value_bits: int
    encoding: str
    overhead_bits: int
    bits: int

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d


def _ceil_log2(n: int) -> int:
    return max(1, math.ceil(math.log2(max(n, 2))))


def encode_cost(shape: tuple[int, ...], nnz: int, value_bits: int) -> tuple[str, int]:
    """Cheapest of dense / bitmask / CSR for a tensor of ``shape`` with ``nnz`` non-zeros."""
    numel = math.prod(shape) if shape else 1
    options = [("dense", numel * value_bits)]
    if nnz < numel:
        options.append(("bitmask", numel + nnz * value_bits))
        rows = shape[0] if len(shape) >= 1 else 1
        cols = numel // max(rows, 1)
        csr = nnz * (value_bits + _ceil_log2(cols)) + (rows + 1) * _ceil_log2(nnz + 1)
        options.append(("csr", csr))
    return min(options, key=lambda kv: kv[1])


def weight_bits_of(module: nn.Module, tensor_name: str = "weight") -> int:
    """Bits per stored value of ``module.<tensor_name>`` (quantizer width or dtype width)."""
    fq = find_parametrization(module, FakeQuant, tensor_name)
    if fq is not None:
        return fq.bits
    declared = _declared_value_bits(module, tensor_name)
    if declared is not None:
        return declared
    t = getattr(module, tensor_name)
    return t.element_size() * 8


def _declared_value_bits(module: nn.Module, tname: str) -> int | None:
    """Bits per value declared by a quantizing parametrization other than FakeQuant.

    Any parametrization exposing an integer ``value_bits`` (e.g. the fixed-point
    ``FixedQuantize``: the ap_fixed width) stores its tensor with that many bits per value.
    """
    if not parametrize.is_parametrized(module, tname):
        return None
    declared = [getattr(p, "value_bits", None) for p in parametrizations_of(module, tname)]
    bits = [int(b) for b in declared if isinstance(b, int)]
    return min(bits) if bits else None


def _tensor_storage(name: str, module: nn.Module, tname: str, value: Tensor) -> TensorStorage:
    fq = find_parametrization(module, FakeQuant, tname) if parametrize.is_parametrized(module, tname) else None
    declared = None if fq is not None else _declared_value_bits(module, tname)
    vbits = fq.bits if fq is not None else (declared if declared is not None else value.element_size() * 8)
    overhead = 0
    if fq is not None:
        overhead = fq.n_scales * (SCALE_BITS + (0 if fq.signed else fq.bits))
    shape = tuple(value.shape)
    nnz = int(torch.count_nonzero(value)) if value.is_floating_point() else int(value.numel())
    enc, bits = encode_cost(shape, nnz, vbits)
    return TensorStorage(name, shape, int(value.numel()), nnz, vbits, enc, overhead, bits + overhead)


def storage_table(model: nn.Module) -> list[TensorStorage]:
    """One entry per stored tensor (parameters and persistent buffers) of the deployable model."""
    out: list[TensorStorage] = []
    with torch.no_grad():
        for mname, mod in model.named_modules():
            if "parametrizations" in mname.split("."):
                continue
            prefix = f"{mname}." if mname else ""
            seen: set[str] = set()
            if parametrize.is_parametrized(mod):
                for tname in mod.parametrizations:
                    out.append(_tensor_storage(prefix + tname, mod, tname, getattr(mod, tname).detach()))
                    seen.add(tname)
            for pname, p in mod._parameters.items():
                if p is None or pname in seen:
                    continue
                out.append(_tensor_storage(prefix + pname, mod, pname, p.detach()))
            for bname, b in mod._buffers.items():
                if b is None or bname in mod._non_persistent_buffers_set:
                    continue
                out.append(_tensor_storage(prefix + bname, mod, bname, b.detach()))
    return out


def storage_bits(model: nn.Module) -> int:
    """Total stored bits of ``model`` (see the module docstring for the encodings)."""
    return sum(t.bits for t in storage_table(model))


def count_params(model: nn.Module) -> int:
    """Number of weight/bias values the model computes with (effective tensors, buffers excluded)."""
    n = 0
    for mname, mod in model.named_modules():
        if "parametrizations" in mname.split("."):
            continue
        seen: set[str] = set()
        if parametrize.is_parametrized(mod):
            for tname in mod.parametrizations:
                n += getattr(mod, tname).numel()
                seen.add(tname)
        n += sum(p.numel() for k, p in mod._parameters.items() if p is not None and k not in seen)
    return n


# -- time accounting ----------------------------------------------------------------------

#: the parts of ``sample()`` :func:`sample_split` reports (seconds), besides ``sample`` itself
SPLIT_STAGES = ("latent_condition", "network", "postprocess", "other")


def _time(fn: Callable[[], Any], min_time: float) -> float:
    """Calls per second of ``fn`` over at least ``min_time`` seconds."""
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        dt = time.perf_counter() - t0
        if dt >= min_time:
            return n / dt


def _energies(model: Any, batch: int, seed: int) -> Tensor:
    """``batch`` log-uniform incident energies over the model's trained range (seeded)."""
    lo, hi = (float(v) for v in model.energy_range_mev)
    g = torch.Generator().manual_seed(seed)
    return torch.exp(torch.empty(batch).uniform_(math.log(lo), math.log(hi), generator=g))


def _sample_call(model: Any, e: Tensor, seed: int, batch: int) -> Callable[[], Any]:
    return lambda: model.sample(e, generator=torch.Generator().manual_seed(seed), batch_size=batch)


def sample_rate(
    models: dict[str, Any], batch: int, *, seed: int = 0, min_time: float = 0.3, repeats: int = 3, slow_s: float = 5.0
) -> dict[str, float]:
    """End-to-end showers/s of ``sample()`` for each generator at ``batch`` (interleaved, best of ``repeats``).

    Each model first gets one warm-up call, which is timed. A model whose warm-up call took
    ``slow_s`` seconds or more (a spline flow at batch 10,000 takes about a minute on one thread)
    is measured by that call alone: warm-up effects are then a negligible part of the call, and
    ``repeats`` more calls would cost minutes for a figure that differs by noise.
    """
    e = _energies(next(iter(models.values())), batch, seed)
    best = dict.fromkeys(models, 0.0)
    timed = {}
    with torch.inference_mode():
        for k, m in models.items():
            t0 = time.perf_counter()
            m.sample(e, generator=torch.Generator().manual_seed(seed), batch_size=batch)
            dt = time.perf_counter() - t0
            if dt >= slow_s:
                best[k] = batch / dt
                timed[k] = True
        for _ in range(repeats):
            for k, m in models.items():
                if not timed.get(k):
                    best[k] = max(best[k], batch * _time(_sample_call(m, e, seed, batch), min_time))
    return best


def sample_split(models: dict[str, Any], batch: int, *, seed: int = 0, repeats: int = 5) -> dict[str, dict[str, float]]:
    """Where ``sample()`` spends its time, per shower generator, at ``batch`` (one batch per call).

    Each model's ``sample(E, batch_size=batch, timings=...)`` is called ``repeats`` times after
    one untimed warm-up call, models interleaved (the same machine load for all), and the
    fastest call is reported with its own split (so the parts add up to that call):
    ``latent_condition`` (noise and condition), ``network`` (``network(z, c)``), ``postprocess``
    and ``other`` (the rest of the call: input checks, mode switches); ``network_share`` is
    network over ``sample`` and ``showers_per_s`` is ``batch`` over ``sample``. Times in seconds.

    Example:
        >>> from simcompress.generators import GANGenerator
        >>> from simcompress.showers import Geometry
        >>> g = GANGenerator(Geometry.from_name("ds1-photons"), latent_dim=8, hidden=[16]).eval()
        >>> s = sample_split({"gan": g}, 64, repeats=1)["gan"]
        >>> sorted(s)
        ['latent_condition', 'network', 'network_share', 'other', 'postprocess', 'sample', 'showers_per_s']
        >>> 0 < s["network_share"] < 1
        True
    """
    if batch < 1 or repeats < 1:
        msg = f"sample_split: batch and repeats must be >= 1, got batch={batch}, repeats={repeats}"
        raise ValueError(msg)
    e = _energies(next(iter(models.values())), batch, seed)
    best: dict[str, dict[str, float]] = {k: {"sample": math.inf} for k in models}
    with torch.inference_mode():
        for m in models.values():
            m.sample(e, generator=torch.Generator().manual_seed(seed), batch_size=batch)
        for _ in range(repeats):
            for k, m in models.items():
                t: dict[str, float] = {}
                m.sample(e, generator=torch.Generator().manual_seed(seed), batch_size=batch, timings=t)
                if t["sample"] < best[k]["sample"]:
                    best[k] = t
    out: dict[str, dict[str, float]] = {}
    for k, b in best.items():
        other = b["sample"] - b["latent_condition"] - b["network"] - b["postprocess"]
        out[k] = {**b, "other": other, "network_share": b["network"] / b["sample"], "showers_per_s": batch / b["sample"]}
    return out
