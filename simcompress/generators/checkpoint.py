"""Resumable training checkpoints: safetensors for tensors, JSON for the rest, never pickles.

Shared by generator training (:mod:`simcompress.generators.train`) and distillation
(:mod:`simcompress.distill.train`). A checkpoint is one ``.safetensors`` file (module weights,
optimizer moments, RNG states under prefixed keys) plus a JSON file (step, history, run
fingerprint, optimizer scalars) written **after** it; both are written atomically
(:mod:`simcompress._atomic`), so an interrupted save leaves the previous checkpoint intact.

>>> import tempfile, pathlib
>>> net = torch.nn.Linear(2, 1)
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> write_checkpoint(d, "state.safetensors", module_tensors("model", net), "state.json", {"step": 3})
>>> info, tensors = read_checkpoint(d, "state.json", "state.safetensors")
>>> info["step"], sorted(tensors)
(3, ['model.bias', 'model.weight'])
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .._atomic import atomic_path, write_text_atomic
from ..errors import ConfigError

__all__ = [
    "load_module_tensors",
    "module_tensors",
    "optimizer_tensors",
    "read_checkpoint",
    "read_info",
    "restore_optimizer",
    "save_tensors_atomic",
    "write_checkpoint",
]


def save_tensors_atomic(tensors: dict[str, torch.Tensor], path: str | os.PathLike[str],
                        metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` (moved to the CPU, made contiguous) as safetensors, atomically."""
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)


def module_tensors(prefix: str, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``{prefix.key: tensor}`` copies of ``module.state_dict()``."""
    return {f"{prefix}.{k}": v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}


def load_module_tensors(prefix: str, module: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Load the ``prefix.``-keys of ``tensors`` into ``module`` (strict)."""
    n = len(prefix) + 1
    module.load_state_dict({k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}, strict=True)


def optimizer_tensors(prefix: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer state as ``{prefix.param_id.name: tensor}`` plus JSON meta (param groups, non-tensor scalars)."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{prefix}.{pid}.{k}"] = v.detach().cpu().contiguous().clone()
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def restore_optimizer(prefix: str, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                      meta: dict[str, Any] | None = None) -> None:
    """Inverse of :func:`optimizer_tensors`; without ``meta`` the optimizer keeps its own param groups."""
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith(prefix + "."):
            pid, name = key[len(prefix) + 1 :].split(".", 1)
            state.setdefault(int(pid), {})[name] = v
    for key, v in (meta or {}).get("scalars", {}).items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    groups = meta["param_groups"] if meta is not None else opt.state_dict()["param_groups"]
    opt.load_state_dict({"state": state, "param_groups": groups})


def write_checkpoint(directory: str | os.PathLike[str], tensors_name: str, tensors: dict[str, torch.Tensor],
                     info_name: str, info: dict[str, Any], *, sort_keys: bool = False) -> None:
    """Write the tensors, then the JSON ``info`` (the file a reader trusts), each atomically."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    save_tensors_atomic(tensors, d / tensors_name)
    write_text_atomic(d / info_name, json.dumps(info, indent=1, sort_keys=sort_keys, default=str))


def read_info(directory: str | os.PathLike[str], info_name: str) -> dict[str, Any] | None:
    """The JSON info of a checkpoint, ``None`` when there is none; :class:`ConfigError` when unreadable."""
    f = Path(directory) / info_name
    if not f.is_file():
        return None
    try:
        data = json.loads(f.read_text())
    except json.JSONDecodeError as err:
        msg = f"{f}: corrupt checkpoint state ({err})"
        raise ConfigError(msg) from None
    return data if isinstance(data, dict) else None


def read_checkpoint(directory: str | os.PathLike[str], info_name: str,
                    tensors_name: str | None = None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(info, tensors)`` of a checkpoint; ``tensors_name`` defaults to ``info["checkpoint"]``."""
    d = Path(directory)
    info = read_info(d, info_name)
    if info is None:
        msg = f"{d}: no checkpoint found"
        raise ConfigError(msg)
    name = tensors_name if tensors_name is not None else str(info["checkpoint"])
    return info, load_file(str(d / name))
