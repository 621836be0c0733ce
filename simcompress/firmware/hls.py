"""hls4ml 1.3.0 conversion of a fixed-point graph: config generation, convert, compile, C simulation.

The hls4ml configuration is *generated* from the :class:`~.graph.FixedGraph`
(``granularity='name'``), never hand-edited, and no precision is left to hls4ml's
defaults or to ``auto`` inference: the input, concatenation, weight, bias,
accumulator, result and activation types, and LeakyReLU's ``param`` type, are
all set per layer from the precision record. The two model inputs (noise and
conditioning) stay two hls4ml inputs joined by hls4ml's ``Concatenate`` layer
(the ``torch.cat`` of the network); the conditioning preprocessing
(``generator.condition``) stays outside the firmware.
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ..errors import ConfigError
from .config import FirmwareConfig
from .graph import FixedGraph, clean_float_network

__all__ = ["compile_model", "convert", "csim_predict", "hls_config", "import_hls4ml", "layer_implementation"]

log = logging.getLogger(__name__)


def import_hls4ml() -> Any:
    """Import hls4ml quietly, with an install hint if missing."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import hls4ml
    except ImportError as err:  # pragma: no cover - the firmware extra pins it
        msg = 'firmware export needs hls4ml: pip install "simcompress[firmware]"'
        raise ConfigError(msg) from err
    return hls4ml


def layer_implementation(cfg: FirmwareConfig, name: str, reuse: dict[str, int] | None = None) -> tuple[int, str]:
    """(reuse factor, strategy) of one layer: planner choice, then per-layer config, then the defaults."""
    rf, strategy = cfg.reuse_factor, cfg.strategy
    for pattern, lf in cfg.layers.items():
        if fnmatch.fnmatchcase(name, pattern):
            rf = lf.reuse_factor or rf
            strategy = lf.strategy or strategy
    if reuse and name in reuse:
        rf = reuse[name]
    return rf, strategy


def hls_config(graph: FixedGraph, cfg: FirmwareConfig, reuse: dict[str, int] | None = None) -> dict[str, Any]:
    """The complete hls4ml config dict (``Model`` + ``LayerName``) for ``graph``."""
    layer_cfg: dict[str, Any] = {}
    for op in graph.ops:
        prec: dict[str, str] = {"result": op.out_t.to_hls()}
        entry: dict[str, Any] = {"Trace": False, "Precision": prec}
        if op.kind == "linear":
            assert op.w_t is not None and op.acc_t is not None
            prec["weight"] = op.w_t.to_hls()
            # a Linear without bias gets zero biases in hls4ml: any type holds 0 exactly
            prec["bias"] = (op.b_t or op.w_t).to_hls()
            prec["accum"] = op.acc_t.to_hls()
            rf, strategy = layer_implementation(cfg, op.name, reuse)
            entry["ReuseFactor"] = rf
            entry["Strategy"] = strategy
        elif op.kind == "leaky_relu":
            assert op.param_t is not None
            prec["param"] = op.param_t.to_hls()
        layer_cfg[op.name] = entry
    model = {
        "Precision": {"default": graph.output_type.to_hls()},
        "ReuseFactor": cfg.reuse_factor,
        "Strategy": cfg.strategy,
        "ChannelsLastConversion": "full",
        "TransposeOutputs": False,
        "BramFactor": 1_000_000_000,
        "TraceOutput": False,
    }
    return {"Model": model, "LayerName": layer_cfg}


@contextlib.contextmanager
def _quiet() -> Any:
    """hls4ml prints its progress to stdout; keep it in the log instead."""
    buf = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(buf):
        warnings.simplefilter("ignore")
        yield buf
    text = buf.getvalue().strip()
    if text:
        log.info("hls4ml: %s", text[-2000:])


def convert(graph: FixedGraph, net: nn.Module, cfg: FirmwareConfig, out_dir: str | os.PathLike[str],
            reuse: dict[str, int] | None = None) -> Any:
    """Convert with the PyTorch frontend and write the HLS project to ``out_dir``; returns the hls4ml model."""
    hls4ml = import_hls4ml()
    clean = clean_float_network(graph, net)
    config = hls_config(graph, cfg, reuse)
    shapes = [(n,) for n in graph.input_sizes]
    with _quiet():
        model = hls4ml.converters.convert_from_pytorch_model(
            clean,
            output_dir=str(out_dir),
            project_name=cfg.project_name,
            backend=cfg.backend,
            hls_config={**config, "InputShape": shapes if len(shapes) > 1 else shapes[0]},
            io_type=cfg.io_type,
            part=cfg.part,
            clock_period=cfg.clock_period_ns,
        )
    # hls4ml's write_yml would yaml-dump the torch module object (a pickle-like !!python/object);
    # keep a readable description instead
    for key in ("PytorchModel", "KerasModel", "OnnxModel"):
        if key in model.config.config:
            model.config.config[key] = f"{type(net).__name__} (simcompress fixed-point network; see precision.json)"
    if "InputShape" in model.config.config:  # tuples would become !!python/tuple in the yml
        model.config.config["InputShape"] = json.loads(json.dumps(model.config.config["InputShape"]))
    _verify_precisions(model, graph, config)
    return model


def _verify_precisions(model: Any, graph: FixedGraph, config: dict[str, Any]) -> None:
    """Check hls4ml kept every precision we set (no silent 'auto' or default)."""
    from ..compress.fixed_point.types import parse_fixed

    names = {op.name for op in graph.ops}
    for layer in model.get_layers():
        if layer.name not in names:
            msg = f"hls4ml created layer {layer.name!r} that is not in the fixed-point graph"
            raise ConfigError(msg)
        want = config["LayerName"][layer.name]["Precision"]
        for key, text in want.items():
            t = layer.types.get(f"{key}_t")
            if t is None:
                continue
            got = parse_fixed(str(t.precision).replace(",0>", ">"), f"hls4ml {layer.name}.{key}")
            exp = parse_fixed(text)
            if (got.width, got.integer, got.signed) != (exp.width, exp.integer, exp.signed) or (
                got.rounding, got.overflow) != (exp.rounding, exp.overflow):
                msg = f"hls4ml changed {layer.name}.{key} from {text} to {t.precision}"
                raise ConfigError(msg)


def compile_model(model: Any) -> None:
    """``model.compile()`` (writes the project and builds the C simulation library with g++)."""
    with _quiet():
        model.compile()


def csim_predict(model: Any, graph: FixedGraph, inputs: list[np.ndarray], batch: int = 4096) -> np.ndarray:
    """Run the hls4ml C simulation on quantized inputs (float64 in/out, exact for <=53-bit types)."""
    q = graph.quantize_inputs(inputs)
    outs = []
    n = q[0].shape[0]
    for start in range(0, n, batch):
        part = [np.ascontiguousarray(a[start:start + batch]) for a in q]
        with _quiet():
            y = model.predict(part if len(part) > 1 else part[0])
        outs.append(np.asarray(y, dtype=np.float64).reshape(len(part[0]), -1))
    return np.concatenate(outs, axis=0)


def write_project_files(model: Any) -> Path:
    """``model.write()``: HLS sources, weights, testbench, ``build_prj.tcl``; returns the project dir."""
    with _quiet():
        model.write()
    return Path(model.config.get_output_dir())
