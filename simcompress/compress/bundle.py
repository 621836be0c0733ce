"""Save and load compressed models without pickles.

A compressed bundle is a directory:

* ``config.json``: the base model's config (for a shower generator, its
  ``config_dict()``) plus a ``"compression"`` section: ``format_version``, the
  applied steps, and the **structure**: for every module of the compressed
  model its type, its constructor spec when it is a plain layer or an
  allowlisted replacement module, and the spec of every parametrization on its
  tensors, in order;
* ``weights.safetensors``: the compressed model's ``state_dict`` (masks,
  quantizer scales, factors, shrunk layers included); ``weights_sha256`` in the
  config guards it;
* ``report.json`` (and ``report.md``), ``precision.json`` when a fixed-point
  step left a precision record (what the firmware reads), ``sparsity.json``
  (per-layer weight bits and non-zeros of the stored tensors).

:func:`load_compressed` rebuilds the base model with the ``builder`` its caller
hands it (``builder(config)``; :func:`simcompress.generators.load_generator` passes
:func:`~simcompress.generators.build_generator`: this module never imports a model kind),
rebuilds the recorded structure on it using only allowlisted classes
(:func:`register_module_type`), then ``load_state_dict(strict=True)``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.utils import parametrize

from .._atomic import atomic_dir
from ..errors import BundleError, ConfigError, did_you_mean
from .accounting import storage_table
from .bundle_codes import is_param_path, pack_quantized, unpack_quantized
from .modules import PLAIN_LAYER_TYPES, Factorized, TTLinear, base_type, module_from_spec, module_spec
from .parametrizations import ActQuant, FakeQuant, LoRA, Mask, attach_input_quantizer

__all__ = ["FORMAT_VERSION", "load_compressed", "register_module_type", "registered_module_type", "save_compressed", "structure_of"]

FORMAT_VERSION = 1
log = logging.getLogger(__name__)
_PLAIN = PLAIN_LAYER_TYPES  # Linear, Conv/ConvTranspose 1d-3d, BatchNorm1d-3d (compress/modules.py)
_ALLOWED: dict[str, type] = {}


def register_module_type(cls: type) -> type:
    """Allow ``cls`` (a replacement module or parametrization with ``to_spec``/``from_spec``) in bundles.

    Usable as a class decorator. Registering a second class under the same name is an error.
    """
    if not (hasattr(cls, "to_spec") and hasattr(cls, "from_spec")):
        msg = f"{cls.__name__} needs to_spec() and from_spec() to be stored in a compressed bundle"
        raise ConfigError(msg)
    name = cls.__name__
    if name in _ALLOWED and _ALLOWED[name] is not cls:
        msg = f"module type {name!r} is already registered for compressed bundles"
        raise ConfigError(msg)
    _ALLOWED[name] = cls
    return cls


for _cls in (Factorized, TTLinear, Mask, FakeQuant, LoRA, ActQuant):
    register_module_type(_cls)


def _register_builtin_types() -> None:
    """Import the built-in methods so that their module types are in the allowlist.

    Methods register their replacement modules (e.g. ``FixedPointNetwork``) when they are
    imported; a fresh process that only loads a bundle has not imported them yet. Every
    allowlist lookup (saving, rebuilding) goes through here first.
    """
    from . import methods  # noqa: F401  (methods register their module types on import)


def registered_module_type(name: str) -> type[Any]:
    """The allowlisted class called ``name`` (BundleError otherwise)."""
    _register_builtin_types()
    try:
        return _ALLOWED[name]
    except KeyError:
        msg = f"module type {name!r} is not in the compressed-bundle allowlist; {did_you_mean(name, _ALLOWED)}"
        raise BundleError(msg) from None


def structure_of(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Per-module structure record (see the module docstring), keyed by dotted name ("" is the root)."""
    _register_builtin_types()
    out: dict[str, dict[str, Any]] = {}
    for name, mod in model.named_modules():
        if is_param_path(name):
            continue
        cls = base_type(mod)
        entry: dict[str, Any] = {"type": cls.__name__}
        if cls.__name__ in _ALLOWED and _ALLOWED[cls.__name__] is cls or cls.__name__ in _PLAIN and cls.__module__.startswith("torch.nn"):
            entry["spec"] = module_spec(mod)
        entry["children"] = [c for c, _ in mod.named_children() if c != "parametrizations"]
        if parametrize.is_parametrized(mod):
            pars = {}
            registered: Any = mod.parametrizations  # a ModuleDict of ParametrizationLists
            for tname, plist in registered.items():
                specs = []
                for p in plist:
                    par: Any = p  # the allowlist check below narrows p's static type to object
                    pname = type(p).__name__
                    if pname not in _ALLOWED or _ALLOWED[pname] is not type(p):
                        msg = f"layer {name!r}: parametrization {pname} on {tname!r} is not registered for bundles (register_module_type)"
                        raise BundleError(msg)
                    specs.append({"type": pname, "spec": par.to_spec()})
                pars[tname] = specs
            entry["parametrizations"] = pars
        out[name] = entry
    return out


def _from_spec(cls: Any, spec: dict[str, Any], children: dict[str, nn.Module]) -> nn.Module:
    sig = inspect.signature(cls.from_spec)
    takes = "children" in sig.parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
    if takes and children:
        return cls.from_spec(spec, children=children, **children)
    return cls.from_spec(spec)


def _restore_parametrizations(mod: nn.Module, entry: dict[str, Any], name: str) -> None:
    for tname, specs in entry.get("parametrizations", {}).items():
        registered: Any = mod.parametrizations if parametrize.is_parametrized(mod, tname) else {tname: []}
        have = [type(p).__name__ for p in registered[tname]]
        want = [s["type"] for s in specs]
        if have == want:
            continue
        if have:
            msg = f"layer {name!r}: rebuilt with parametrizations {have} on {tname!r}, bundle records {want}"
            raise BundleError(msg)
        for s in specs:
            p = registered_module_type(s["type"]).from_spec(s["spec"])
            parametrize.register_parametrization(mod, tname, p, unsafe=True)


class _Rebuilder:
    def __init__(self, structure: dict[str, dict[str, Any]], source: Path) -> None:
        self.s = structure
        self.source = source

    def child(self, name: str, c: str) -> str:
        return f"{name}.{c}" if name else c

    def build(self, name: str, base: nn.Module | None) -> nn.Module:
        entry = self.s.get(name)
        if entry is None:
            msg = f"{self.source}: structure lacks module {name!r}"
            raise BundleError(msg)
        tname = entry["type"]
        if tname in _ALLOWED:
            cls = _ALLOWED[tname]
            # a wrapper (e.g. FixedPointNetwork) holds the module it replaced as a child of the same type
            foreign = {
                c: self.build(self.child(name, c), base)
                for c in entry["children"]
                if base is not None and self.s[self.child(name, c)]["type"] == base_type(base).__name__
                and self.s[self.child(name, c)]["type"] not in _ALLOWED
            }
            mod = _from_spec(cls, entry["spec"], foreign)
        elif "spec" in entry:
            if base is not None and base_type(base).__name__ == tname and _plain_spec(base) == entry["spec"]:
                mod = base
            else:
                mod = module_from_spec(entry["spec"])
        else:
            if base is None or base_type(base).__name__ != tname:
                got = "nothing" if base is None else type(base).__name__
                msg = f"{self.source}: module {name or '(root)'!r} should be a {tname}, the rebuilt base model has {got}"
                raise BundleError(msg)
            mod = base
        self.finish(name, mod, base)
        return mod

    def finish(self, name: str, mod: nn.Module, base: nn.Module | None) -> None:
        entry = self.s[name]
        for c in entry["children"]:
            cname = self.child(name, c)
            existing = mod._modules.get(c)
            if existing is None:
                base_child = base._modules.get(c) if base is not None and base is mod else None
                new = self.build(cname, base_child)
                if c == "input_quantizer" and isinstance(new, ActQuant):
                    attach_input_quantizer(mod, new)
                else:
                    mod.add_module(c, new)
                continue
            sub = self.s[cname]
            same_kind = base_type(existing).__name__ == sub["type"]
            if same_kind and (("spec" not in sub) or _plain_spec(existing) == sub["spec"]):
                self.finish(cname, existing, existing)
            else:
                new = self.build(cname, existing)
                if new is not existing:
                    if c == "input_quantizer" and isinstance(new, ActQuant):
                        attach_input_quantizer(mod, new)
                    else:
                        mod._modules[c] = new
        _restore_parametrizations(mod, entry, name)


def _plain_spec(mod: nn.Module) -> dict[str, Any] | None:
    try:
        return json.loads(json.dumps(module_spec(mod)))
    except BundleError:
        return None


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _precision(model: nn.Module) -> dict[str, Any] | None:
    try:
        from .fixed_point.modules import precision_record
    except ImportError:
        return None
    return precision_record(model)


def save_compressed(
    model: nn.Module,
    base_config: dict[str, Any],
    steps: list[dict[str, Any]],
    report: dict[str, Any] | None,
    out_dir: str | os.PathLike[str],
    *,
    overwrite: bool = True,
    extra_files: dict[str, str] | None = None,
    deploy: dict[str, Any] | None = None,
) -> Path:
    """Write a compressed bundle to ``out_dir`` atomically (temp dir + ``os.replace``).

    Args:
        model: the compressed model (parametrizations and replacement modules allowed
            when their classes are registered).
        base_config: JSON config from which the *uncompressed* architecture is rebuilt
            (a generator's ``config_dict()``).
        steps: the applied steps (``MethodConfig.to_dict()`` each, plus anything JSON).
        report: the compression report (written as ``report.json``), or ``None``.
        extra_files: more text files to write into the bundle (name -> content).
        deploy: the execution form to rebuild at load time (``DeployChoice.to_dict()`` of
            :func:`simcompress.compress.deploy.choose_form`; keys ``form``, ``sparse_layers``, ...),
            stored as ``compression.deploy``; ``None``: the model runs as stored.
    """
    out = Path(out_dir)
    if out.exists() and not overwrite:
        msg = f"{out}: exists (pass overwrite=True)"
        raise BundleError(msg)
    if "compression" in base_config:
        msg = "base_config already has a 'compression' section; pass the uncompressed model's config"
        raise BundleError(msg)
    from .deploy import FORMS, is_deployed

    if is_deployed(model):
        msg = (
            "save_compressed: this model is an execution form (simcompress.compress.deploy); "
                          "save the compressed model it was made from (load_compressed(..., deployed=False))"
        )
        raise BundleError(msg)
    if deploy is not None and deploy.get("form") not in FORMS:
        msg = f"save_compressed: deploy form {deploy.get('form')!r} unknown; allowed: {', '.join(FORMS)}"
        raise BundleError(msg)
    structure = structure_of(model)
    with atomic_dir(out, overwrite=True) as tmp:
        tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
        packed = pack_quantized(model, tensors)
        wfile = tmp / "weights.safetensors"
        save_file(tensors, str(wfile), metadata={"format": "pt", "simcompress": "compressed"})
        table = storage_table(model)
        sparsity = {t.name: {"shape": list(t.shape), "nnz": t.nnz, "value_bits": t.value_bits, "encoding": t.encoding} for t in table}
        config = {
            **base_config,
            "weights_sha256": _sha256(wfile),
            "compression": {
                "format_version": FORMAT_VERSION,
                "steps": steps,
                "structure": structure,
                "packed_quantized": packed,
                "model_class": type(model).__name__,
                **({"deploy": deploy} if deploy is not None else {}),
            },
        }
        _write_json(tmp / "config.json", config)
        _write_json(tmp / "sparsity.json", sparsity)
        prec = _precision(model)
        if prec is not None:
            _write_json(tmp / "precision.json", prec)
        if report is not None:
            _write_json(tmp / "report.json", report)
        for fname, text in (extra_files or {}).items():
            (tmp / fname).write_text(text)
    return out


def load_compressed(
    path: str | os.PathLike[str],
    builder: Callable[[dict[str, Any]], nn.Module],
    device: str | torch.device = "cpu",
    deployed: bool = True,
) -> nn.Module:
    """Rebuild a compressed model from a bundle written by :func:`save_compressed`.

    When the bundle records an execution form (``compression.deploy``, written by
    ``simcompress compress``) and ``deployed`` is true, the model is returned in that form
    (int8 kernels, baked tensors, sparse products: :mod:`simcompress.compress.deploy`),
    rebuilt from the stored codes; pass ``deployed=False`` for the structure as stored
    (fake quantizers, masks: to compress further, fine-tune or inspect). Int8 forms run
    on the CPU; on another device the baked float form is used.

    Args:
        path: the bundle directory.
        builder: ``config -> nn.Module`` rebuilding the uncompressed architecture from
            the stored base config (``compress`` knows no model kinds: a shower generator
            bundle is loaded by :func:`simcompress.generators.load_generator`, which passes
            :func:`simcompress.generators.build_generator`).
        device: where to put the model.

    Raises:
        BundleError: missing files, a hash mismatch, a structure the allowlist cannot
            rebuild, or weights that do not fit the rebuilt structure.
    """
    p = Path(path)
    cfile = p / "config.json"
    wfile = p / "weights.safetensors"
    for f in (cfile, wfile):
        if not f.is_file():
            msg = f"{p}: not a compressed bundle ({f.name} missing)"
            raise BundleError(msg)
    try:
        config = json.loads(cfile.read_text())
    except json.JSONDecodeError as err:
        msg = f"{cfile}: not valid JSON ({err.msg} at line {err.lineno})"
        raise BundleError(msg) from None
    comp = config.get("compression")
    if not isinstance(comp, dict):
        msg = f"{cfile}: no 'compression' section; load it with simcompress.generators.load_generator"
        raise BundleError(msg)
    if comp.get("format_version") != FORMAT_VERSION:
        msg = f"{cfile}: compression.format_version {comp.get('format_version')!r} not supported (reads {FORMAT_VERSION})"
        raise BundleError(msg)
    if config.get("weights_sha256") != _sha256(wfile):
        msg = f"{wfile}: sha256 does not match config.json weights_sha256 (corrupt or swapped weights)"
        raise BundleError(msg)
    base_config = {k: v for k, v in config.items() if k not in ("compression", "weights_sha256")}
    # the rebuilder consults the allowlist directly: register the built-in module types before it runs
    # (a fresh process that never imported simcompress.compress.methods would otherwise rebuild a
    # wrapper such as FixedPointNetwork as if it were a plain layer, without its inner network)
    _register_builtin_types()
    base = builder(base_config)
    model = _Rebuilder(comp["structure"], cfile).build("", base)
    tensors = load_file(str(wfile))
    unpack_quantized(tensors, comp.get("packed_quantized", {}), wfile)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()
        msg = f"{wfile}: weights do not fit the rebuilt structure ({' '.join(first[:3])[:300]})"
        raise BundleError(msg) from None
    model = model.to(device).eval()
    rec = comp.get("deploy")
    if deployed and isinstance(rec, dict) and rec.get("form") not in (None, "exact"):
        from .deploy import deploy as _deploy

        form = str(rec["form"])
        if torch.device(device).type != "cpu" and form in ("torch-int8", "onnx-int8"):
            form = "baked"
        try:
            model = _deploy(model, form, sparse_layers=list(rec.get("sparse_layers") or []))
        except ImportError as err:  # e.g. onnxruntime missing: the faithful float form
            log.warning("%s: execution form %r not available (%s); running the baked float form", p, form, err)
            model = _deploy(model, "baked", sparse_layers=list(rec.get("sparse_layers") or []))
        model.deploy_record = rec  # type: ignore[assignment]
    return model
