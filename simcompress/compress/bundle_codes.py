"""Compact storage of quantized and masked weights inside a compressed bundle.

:func:`pack_quantized` replaces float originals in a state dict by what the model computes
with (integer codes, packed bits, the kept entries of masked tensors) and returns the record
``config.json`` keeps (``compression.packed_quantized``); :func:`unpack_quantized` restores
tensors that load into the rebuilt structure and compute the same.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from ..errors import BundleError
from .parametrizations import FakeQuant, Mask, qrange

__all__ = ["is_param_path", "pack_quantized", "unpack_quantized"]


def is_param_path(name: str) -> bool:
    """Whether a module name lies inside a parametrization container (not a layer of its own)."""
    return "parametrizations" in name.split(".")


_INT_DTYPES = {(8, True): torch.int8, (8, False): torch.uint8, (16, True): torch.int16, (16, False): torch.int32}


def pack_quantized(model: nn.Module, tensors: dict[str, torch.Tensor]) -> dict[str, dict[str, Any]]:
    """Store what the model computes with, compactly, in place of float originals.

    * fake-quantized weights (every parametrization before the :class:`FakeQuant` a
      :class:`Mask`): their integer codes (int8/int16); the loader turns them back into
      float originals that quantize to the same codes;
    * weights with only masks on them: the kept values (1-D) instead of the dense original;
    * boolean tensors (masks): packed 8 per byte.

    The model rebuilt from these computes bit-identical outputs; the float values that
    the quantizers and masks discard are not kept (a deploy bundle, not a training checkpoint).
    """
    packed: dict[str, dict[str, Any]] = {}
    with torch.no_grad():
        for mname, mod in model.named_modules():
            if is_param_path(mname) or not parametrize.is_parametrized(mod):
                continue
            for tname, plist in mod.parametrizations.items():
                plist_l = list(plist)
                prefix = f"{mname}.parametrizations.{tname}" if mname else f"parametrizations.{tname}"
                key = f"{prefix}.original"
                val = plist.original.detach()
                if plist_l and all(isinstance(p, Mask) for p in plist_l):
                    keep = torch.ones_like(val, dtype=torch.bool)
                    for p in plist_l:
                        keep &= p.mask
                    tensors[key] = val[keep].contiguous()
                    packed[key] = {"kind": "masked", "shape": list(val.shape), "dtype": str(val.dtype).removeprefix("torch."),
                                   "masks": [f"{prefix}.{i}.mask" for i in range(len(plist_l))]}
                    continue
                idx = next((i for i, p in enumerate(plist_l) if isinstance(p, FakeQuant)), None)
                if idx is None or not all(isinstance(p, Mask) for p in plist_l[:idx]):
                    continue
                fq = plist_l[idx]
                width = 8 if fq.bits <= 8 else 16
                dtype = _INT_DTYPES[(width, fq.signed)]
                for p in plist_l[:idx]:
                    val = p(val)
                codes = fq.codes(val)
                packed[key] = {"kind": "codes", "dtype": str(val.dtype).removeprefix("torch."), "scale": f"{prefix}.{idx}.scale",
                               "zero_point": f"{prefix}.{idx}.zero_point", "bits": fq.bits}
                if fq.bits <= 4:  # two codes per byte: offsets from the code minimum, low nibble first
                    lo = qrange(fq.bits, fq.signed)[0]
                    off = (codes - lo).reshape(-1).to(torch.uint8).numpy()
                    if off.size % 2:
                        off = np.concatenate([off, np.zeros(1, np.uint8)])
                    tensors[key] = torch.from_numpy((off[0::2] | (off[1::2] << 4)).astype(np.uint8))
                    packed[key].update({"nibbles": True, "shape": list(codes.shape), "offset": lo})
                else:
                    tensors[key] = codes.to(dtype).contiguous()
    for key, t in list(tensors.items()):
        if t.dtype == torch.bool:
            bits = np.packbits(t.reshape(-1).numpy().astype(np.uint8))
            tensors[key] = torch.from_numpy(bits)
            packed[key] = {"kind": "bits", "shape": list(t.shape)}
    return packed


def unpack_quantized(tensors: dict[str, torch.Tensor], packed: dict[str, dict[str, Any]], source: Path) -> None:
    try:
        for key, info in packed.items():
            if info.get("kind") == "bits":
                n = math.prod(info["shape"])
                flat = np.unpackbits(tensors[key].numpy(), count=n).astype(bool)
                tensors[key] = torch.from_numpy(flat).reshape(info["shape"])
        for key, info in packed.items():
            kind = info.get("kind", "codes")
            if kind == "masked":
                keep = torch.ones(info["shape"], dtype=torch.bool)
                for m in info["masks"]:
                    keep &= tensors[m]
                full = torch.zeros(info["shape"], dtype=getattr(torch, info["dtype"]))
                full[keep] = tensors[key]
                tensors[key] = full
            elif kind == "codes":
                codes, scale, zp = tensors[key], tensors[info["scale"]], tensors[info["zero_point"]]
                if info.get("nibbles"):
                    n = math.prod(info["shape"])
                    b = codes.numpy().astype(np.int64)
                    both = np.stack([b & 0xF, b >> 4], axis=1).reshape(-1)[:n]
                    codes = torch.from_numpy(both + int(info["offset"])).reshape(info["shape"])
                dtype = getattr(torch, info["dtype"])
                tensors[key] = ((codes.to(torch.float64) - zp.to(torch.float64)) * scale.to(torch.float64)).to(dtype)
    except (KeyError, RuntimeError, ValueError) as err:
        msg = f"{source}: packed tensors inconsistent with config.json ({err})"
        raise BundleError(msg) from None
