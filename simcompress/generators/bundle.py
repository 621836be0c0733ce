"""Generator bundles: a directory with ``config.json``, ``weights.safetensors``, ``card.json``
(and ``discriminator.safetensors`` for GANs). Nothing is ever unpickled.

``config.json`` holds ``format_version``, the generator config (:meth:`ShowerGenerator.config_dict`:
kind, architecture, geometry, conditioning range) and ``weights_sha256`` so a bundle whose weights
were swapped or corrupted is refused. A config with a ``"compression"`` section belongs to a
compressed model and is loaded by :func:`simcompress.compress.bundle.load_compressed`, to which
:func:`load_generator` hands :func:`~simcompress.generators.base.build_generator` as the builder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any, cast

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .._provenance import sha256_file, software_versions, utc_now
from ..errors import BundleError, UnknownNameError, did_you_mean
from ..showers.geometry import Geometry
from .base import ShowerGenerator, build_generator

__all__ = ["FORMAT_VERSION", "bundle_hash", "load_generator", "save_generator", "zoo_names", "zoo_path"]

FORMAT_VERSION = 1
_REQUIRED = ("config.json", "weights.safetensors", "card.json")


def zoo_dir() -> Path:
    return Path(str(resources.files("simcompress.generators") / "zoo"))


def zoo_names() -> list[str]:
    """Names of the bundles shipped with the package."""
    d = zoo_dir()
    return sorted(p.name for p in d.iterdir() if (p / "config.json").is_file()) if d.is_dir() else []


def zoo_path(name: str) -> Path:
    p = zoo_dir() / name
    if not (p / "config.json").is_file():
        msg = f"unknown generator {name!r} (not a bundle directory, not in the zoo); {did_you_mean(name, zoo_names())}"
        raise UnknownNameError(msg)
    return p


def resolve_bundle(path_or_name: str | os.PathLike[str]) -> Path:
    p = Path(path_or_name)
    if p.exists():
        return p
    if isinstance(path_or_name, str) and os.sep not in path_or_name and "/" not in path_or_name:
        return zoo_path(path_or_name)
    msg = f"{p}: generator bundle not found"
    raise BundleError(msg)


def _state_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def save_generator(gen: ShowerGenerator, path: str | os.PathLike[str], card: dict[str, Any] | None = None) -> Path:
    """Write ``gen`` as a bundle directory at ``path`` (files written to a temp name, then ``os.replace``).

    An existing bundle at ``path`` is replaced; other files in the directory are kept.
    """
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".bundle-tmp.", dir=out))
    try:
        save_file(_state_tensors(gen), str(tmp / "weights.safetensors"), metadata={"format": "pt"})
        critic = getattr(gen, "critic", None)
        if critic is not None:
            save_file(_state_tensors(critic), str(tmp / "discriminator.safetensors"), metadata={"format": "pt"})
        config = {"format_version": FORMAT_VERSION, **gen.config_dict()}
        config["weights_sha256"] = sha256_file(tmp / "weights.safetensors")
        if critic is not None:
            config["discriminator_sha256"] = sha256_file(tmp / "discriminator.safetensors")
        _write_json(tmp / "config.json", config)
        full_card = {"created": utc_now(), "software": software_versions(), **(card or {})}
        full_card["bundle_hash"] = bundle_hash(tmp)
        _write_json(tmp / "card.json", full_card)
        # each file is replaced atomically, config.json last: a reader never sees new weights with
        # an old config that passes the sha256 check; other files in ``out`` (checkpoints) are kept
        if critic is None and (out / "discriminator.safetensors").exists():
            (out / "discriminator.safetensors").unlink()
        for name in ("weights.safetensors", "discriminator.safetensors", "card.json", "config.json"):
            if (tmp / name).exists():
                (tmp / name).chmod(0o644)
                os.replace(tmp / name, out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def bundle_hash(path: str | os.PathLike[str]) -> str:
    """sha256 over ``config.json`` (without volatile keys) and ``weights.safetensors`` bytes."""
    p = resolve_bundle(path)
    h = hashlib.sha256()
    for name in ("config.json", "weights.safetensors"):
        f = p / name
        if not f.is_file():
            msg = f"{p}: incomplete bundle, {name} missing"
            raise BundleError(msg)
        h.update(name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def read_config(p: Path) -> dict[str, Any]:
    try:
        config = json.loads((p / "config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        msg = f"{p / 'config.json'}: unreadable bundle config ({err})"
        raise BundleError(msg) from None
    if not isinstance(config, dict):
        msg = f"{p / 'config.json'}: expected a JSON object"
        raise BundleError(msg)
    return config


def _load_tensors(f: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(f))
    except (SafetensorError, OSError, ValueError) as err:
        msg = f"{f}: corrupt safetensors file ({err})"
        raise BundleError(msg) from None


def _load_state(module: torch.nn.Module, tensors: dict[str, torch.Tensor], source: Path) -> None:
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        msg = (
            f"{source}: weights do not match the config's architecture "
            f"(missing {missing[:3]}{'...' if len(missing) > 3 else ''}, unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''})"
        )
        raise BundleError(
            msg
        )
    for k, v in expected.items():
        if tuple(tensors[k].shape) != tuple(v.shape):
            msg = f"{source}: tensor {k!r} has shape {tuple(tensors[k].shape)}, the config needs {tuple(v.shape)}"
            raise BundleError(msg)
        if not torch.isfinite(tensors[k].float()).all():
            msg = f"{source}: tensor {k!r} holds NaN or infinite values"
            raise BundleError(msg)
    module.load_state_dict(tensors, strict=True)


def load_generator(
    path_or_name: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    geometry: Geometry | str | None = None,
    *,
    deployed: bool = True,
) -> ShowerGenerator:
    """Load a bundle directory or a zoo name (``"ds1-photons-gan"``) in eval mode.

    Args:
        path_or_name: bundle directory, or the name of a shipped bundle.
        device: where to put the model.
        geometry: if given, refuse a bundle made for another binning.
        deployed: for a compressed bundle, its recorded execution form (default) or, with
            ``False``, the structure as stored (see :func:`simcompress.compress.bundle.load_compressed`).

    Raises:
        BundleError: missing file, corrupt or swapped weights, architecture mismatch, wrong geometry.
        UnknownNameError: neither a directory nor a zoo name.
    """
    p = resolve_bundle(path_or_name)
    if not p.is_dir():
        msg = f"{p}: a generator bundle is a directory holding {', '.join(_REQUIRED)}"
        raise BundleError(msg)
    config = read_config(p)
    if "compression" in config:
        from ..compress.bundle import load_compressed  # lazy: compression is optional here

        model = cast(ShowerGenerator, load_compressed(p, builder=build_generator, device=device, deployed=deployed))
        _check_geometry(getattr(model, "geometry", None), geometry, p)
        model.bundle_path = str(p)
        try:
            model.bundle_hash = bundle_hash(p)
        except BundleError:  # a compressed bundle without weights.safetensors: hash what is there
            h = hashlib.sha256()
            for f in sorted(q for q in p.iterdir() if q.suffix in (".json", ".safetensors") and q.name != "card.json"):
                h.update(f.name.encode())
                h.update(f.read_bytes())
            model.bundle_hash = h.hexdigest()
        return model
    for name in _REQUIRED:
        if not (p / name).is_file():
            msg = f"{p}: incomplete bundle, {name} missing (needs {', '.join(_REQUIRED)})"
            raise BundleError(msg)
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        msg = f"{p / 'config.json'}: format_version {version!r} not supported (this simcompress reads {FORMAT_VERSION})"
        raise BundleError(msg)
    gen = build_generator(config, source=str(p / "config.json"))
    _check_geometry(gen.geometry, geometry, p)
    wfile = p / "weights.safetensors"
    want = config.get("weights_sha256")
    if want is None or sha256_file(wfile) != want:
        msg = f"{wfile}: sha256 does not match config.json weights_sha256 (corrupt or swapped weights)"
        raise BundleError(msg)
    _load_state(gen, _load_tensors(wfile), wfile)
    critic = getattr(gen, "critic", None)
    dfile = p / "discriminator.safetensors"
    if critic is not None and dfile.is_file():
        if config.get("discriminator_sha256") != sha256_file(dfile):
            msg = f"{dfile}: sha256 does not match config.json discriminator_sha256"
            raise BundleError(msg)
        _load_state(critic, _load_tensors(dfile), dfile)
        gen.has_trained_critic = True
    gen.bundle_path = str(p)
    gen.bundle_hash = bundle_hash(p)
    gen.eval()
    return gen.to(device)


def _check_geometry(actual: Geometry | None, wanted: Geometry | str | None, p: Path) -> None:
    if wanted is None or actual is None:
        return
    g = Geometry.from_name(wanted) if isinstance(wanted, str) else wanted
    if not g.same_binning(actual):
        msg = f"{p}: bundle is for geometry {actual.name!r}, not {g.name!r} (binning differs)"
        raise BundleError(msg)
