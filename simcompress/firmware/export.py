"""``export_firmware``: compressed fixed-point generator -> trigger IP folder with a bit-exactness proof.

The folder (written atomically: built under a temporary name, then renamed):

* ``hls/``: the hls4ml 1.3.0 project (HLS C++ sources, weights, ``build_prj.tcl``,
  ``vivado_synth.tcl``, the testbench) with ``tb_data/tb_input_features.dat`` and
  ``tb_data/tb_output_predictions.dat`` holding the quantized check inputs and the
  emulated outputs, so the vendor C/RTL co-simulation checks the same vectors;
* ``vectors/``: the same vectors as ``.npy`` (inputs per model input, outputs, and
  the integer output codes);
* ``precision.json``: the precision record the conversion used;
* ``firmware.json``: precisions, reuse factors and strategies, the resource and
  latency estimate, the bit-exactness result (emulation vs C simulation, and vs
  Verilator when the RTL route ran), the deviation from the float model, timings;
* ``rtl/`` (optional): alkaid Verilog and its Verilator build;
* ``README.md``: how to build the IP with Vitis HLS / Vivado HLS.

Networks hls4ml 1.3.0 cannot take (transposed convolutions, Tanh/Sigmoid tables) go the alkaid
route instead (:mod:`.alkaid_export`: Verilog, no ``hls/``); ``route`` in the target YAML picks
one explicitly. When neither route takes a layer, the error names the layer and both routes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._atomic import atomic_dir, atomic_path
from .._progress import progress_bar
from .._provenance import software_versions, utc_now
from ..compress.fixed_point.record import PrecisionRecord
from ..errors import BundleError, ConfigError, SimcompressError, UnsupportedLayerError
from .config import FirmwareConfig
from .estimate import estimate, plan_reuse_factors
from .graph import FixedGraph, build_graph, input_sizes_from, resolve
from .hls import compile_model, convert, csim_predict, layer_implementation

__all__ = [
    "FirmwareResult",
    "SynthesisUnavailableError",
    "check_inputs",
    "csim_showers",
    "export_firmware",
    "float_network",
    "load_fixed_point_model",
    "select_route",
    "vendor_tool",
]

log = logging.getLogger(__name__)
FIRMWARE_FORMAT_VERSION = 1


class SynthesisUnavailableError(SimcompressError, RuntimeError):
    """``--synth`` was asked for but no vendor HLS tool is on PATH (the project is left ready)."""


@dataclass
class FirmwareResult:
    out_dir: Path
    report: dict[str, Any]
    graph: Any  # FixedGraph (hls4ml route) or CastNetwork (alkaid route)
    hls_model: Any = field(repr=False, default=None)
    model: nn.Module | None = field(repr=False, default=None)

    @property
    def mismatches(self) -> int:
        return int(self.report["bit_exactness"]["mismatches"])


# ----------------------------------------------------------------------------- loading
def load_fixed_point_model(source: str | os.PathLike[str] | nn.Module) -> tuple[nn.Module, PrecisionRecord, str]:
    """(model, precision record, description) from a compressed bundle directory or a module."""
    if isinstance(source, nn.Module):
        _net, record = resolve(source)
        return source, record, type(source).__name__
    p = Path(source)
    first = ("the firmware needs a fixed-point bundle; run first: simcompress compress --model {m} --recipe "
             "configs/compress/fixed-point-qat.yaml --reference ref.root --out fp/ (fixed-point-ptq.yaml: no training), "
             "then simcompress firmware --model fp/ ...")
    if not p.is_dir():
        from ..generators.bundle import zoo_names

        if str(source) in zoo_names():
            raise BundleError(f"{source}: a shipped float generator; " + first.format(m=source))
        msg = f"{p}: not a model bundle directory"
        raise BundleError(msg)
    prec_file = p / "precision.json"
    if not prec_file.is_file():
        raise BundleError(f"{p}: no precision.json (a float bundle); " + first.format(m=p))
    try:
        record = PrecisionRecord.from_json(prec_file.read_text(), str(prec_file))
    except ConfigError as err:
        raise BundleError(str(err)) from None
    try:
        from ..generators import load_generator
    except ImportError as err:  # pragma: no cover - generators ship with the package
        msg = f"{p}: cannot load bundles ({err})"
        raise BundleError(msg) from None
    model = load_generator(str(p))
    return model, record, str(p)


def float_network(net: nn.Module) -> nn.Module:
    """The float reference: the network with its pre-quantization weights and no quantizers."""
    from .alkaid_route import bake

    return bake(net, original=True).eval()


def _input_specs(graph: Any) -> list[tuple[str, int, Any]]:
    """(name, size, fixed type) of every input of a FixedGraph or a CastNetwork."""
    if isinstance(graph, FixedGraph):
        return [(nm, graph.input_sizes[k], graph.op(nm).out_t) for k, nm in enumerate(graph.inputs)]
    return [(nm, graph.input_sizes[k], graph.input_type) for k, nm in enumerate(graph.inputs)]


def select_route(net: nn.Module, record: PrecisionRecord, input_sizes: list[int] | None, route: str = "auto") -> tuple[str, Any]:
    """``("hls4ml", FixedGraph)`` or ``("alkaid", CastNetwork)`` for ``route`` ``auto``/``hls4ml``/``alkaid``.

    ``auto`` takes hls4ml when it can convert the network bit-exactly, else alkaid. A refusal names
    the layer, and the other route: whether it could take the network, or why not either.
    """
    from .alkaid_route import alkaid_available, build_cast_network

    def alkaid() -> Any:
        reason = alkaid_available()
        if reason:
            raise UnsupportedLayerError(reason)
        if not input_sizes or any(s is None for s in input_sizes):
            msg = "the input sizes of the network are unknown (no input_sizes in the precision record)"
            raise UnsupportedLayerError(msg)
        return build_cast_network(net, record, list(input_sizes))

    def hls() -> FixedGraph:
        return build_graph(net, record, input_sizes)

    first, second = (("alkaid", alkaid), ("hls4ml", hls)) if route == "alkaid" else (("hls4ml", hls), ("alkaid", alkaid))
    try:
        return first[0], first[1]()
    except UnsupportedLayerError as err:
        first_err = err
    try:
        second[1]()
    except UnsupportedLayerError as err2:
        msg = f"no firmware route takes this network: {first[0]} route: {first_err}; {second[0]} route: {err2}"
        raise UnsupportedLayerError(msg) from None
    if route == "auto":
        return second[0], second[1]()
    msg = f"{first[0]} route: {first_err} (the {second[0]} route can take this network: set route: {second[0]} or auto)"
    raise UnsupportedLayerError(msg)


def check_inputs(graph: Any, n: int, seed: int, noise_range: float = 3.0,
                 model: Any = None) -> list[np.ndarray]:
    """Random check inputs: 90 % typical (noise N(0,1) clipped, conditioning from the generator's
    energy range when known), 10 % uniform over 1.25x the input type range (exercises saturation)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    n_typ = n - n // 10
    cond = None
    specs = _input_specs(graph)
    if model is not None and hasattr(model, "condition") and hasattr(model, "energy_range_mev") and len(specs) == 2:
        lo, hi = (float(v) for v in model.energy_range_mev)
        e = np.exp(rng.uniform(np.log(lo), np.log(hi), size=n_typ))
        with torch.no_grad():
            cond = model.condition(torch.from_numpy(e).float()).double().numpy().reshape(n_typ, -1)
    out = []
    for k, (_name, size, t) in enumerate(specs):
        if cond is not None and k == 1 and cond.shape[1] == size:
            typ = cond
        else:
            typ = np.clip(rng.standard_normal((n_typ, size)), -noise_range, noise_range)
        wide = rng.uniform(1.25 * t.min_value, 1.25 * t.max_value, size=(n - n_typ, size))
        out.append(np.concatenate([typ, wide], axis=0))
    return out


def vendor_tool(backend: str) -> str | None:
    """The vendor HLS executable for ``backend`` if it is on PATH."""
    names = ("vitis_hls", "vitis-run") if backend == "Vitis" else ("vivado_hls",)
    for name in names:
        if shutil.which(name):
            return name
    return None


def csim_showers(generator: Any, hls_model: Any, graph: FixedGraph, incident_energies: np.ndarray,
                 seed: int = 0, batch: int = 4096) -> np.ndarray:
    """Showers (N, V) MeV generated through the hls4ml C simulation:
    ``postprocess(csim(quantize(z), quantize(condition(E))), E)``, z (then the generator's
    :meth:`sample_extras`, if any) from ``torch.Generator(seed)``."""
    e = torch.as_tensor(np.asarray(incident_energies, dtype=np.float32))
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(len(e), int(generator.latent_dim), generator=gen)
    # drawn after the noise, as in sample() (e.g. an alpha-symmetric GAN's orientation)
    extras = generator.sample_extras(len(e), gen) if hasattr(generator, "sample_extras") else {}
    with torch.no_grad():
        c = generator.condition(e).reshape(len(e), -1)
    y = csim_predict(hls_model, graph, [z.double().numpy(), c.double().numpy()], batch=batch)
    with torch.no_grad():
        showers = generator.postprocess(torch.from_numpy(y).float(), e, **extras)
    return showers.detach().cpu().numpy().astype(np.float32)


# ----------------------------------------------------------------------------- export
def _write_json(path: Path, data: Any) -> None:
    # default=str: a vendor synthesis report may hold values JSON has no type for
    with atomic_path(path, fsync=False) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")


def _fmt(a: np.ndarray) -> list[str]:
    return [" ".join(repr(float(v)) for v in row) for row in a]


def export_firmware(
    source: str | os.PathLike[str] | nn.Module,
    config: FirmwareConfig,
    out_dir: str | os.PathLike[str],
    *,
    n_samples: int | None = None,
    synth: bool = False,
    rtl: bool | None = None,
    overwrite: bool = False,
    input_sizes: list[int] | None = None,
    keep_model: bool = False,
) -> FirmwareResult:
    """Build the trigger IP folder for a fixed-point network (see the module docstring).

    Args:
        source: a compressed bundle directory (with ``precision.json``) or a model
            holding a fixed-point network and its precision record
            (:func:`~simcompress.compress.fixed_point.record.find_precision_network`).
        config: the target (part, clock, backend, io type, reuse factors, budget).
        out_dir: the IP folder to create (must not exist unless ``overwrite``).
        n_samples: random inputs for the bit-exactness check (default ``config.check.n_samples``).
        synth: run the vendor synthesis; raises :class:`SynthesisUnavailableError`
            (after writing the folder) when ``vitis_hls``/``vivado_hls`` is not on PATH.
        rtl: run the alkaid -> Verilator cross-check (default ``config.rtl.enabled``).
        keep_model: keep the compiled hls4ml model in the result (for C simulation of showers).

    Returns:
        :class:`FirmwareResult` with the ``firmware.json`` content in ``.report``.
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        msg = f"{out}: output folder exists and is not empty (use --overwrite)"
        raise ConfigError(msg)
    model, record, desc = load_fixed_point_model(source)
    net, record = resolve(model, record)
    rec_sizes = [int(s or 0) for s in record.input_sizes] if record.input_sizes and None not in record.input_sizes else None
    sizes = input_sizes or input_sizes_from(model) or rec_sizes
    route, graph = select_route(net, record, sizes, config.route)
    n = n_samples or config.check.n_samples
    if route == "alkaid":
        from .alkaid_export import export_alkaid

        return export_alkaid(graph, net, model, record, desc, config, out, n, synth, rtl, keep_model)
    reuse = plan_reuse_factors(graph, config)
    with atomic_dir(out, overwrite=True) as tmp:
        report, hm = _build(graph, net, model, record, desc, config, reuse, tmp, n, rtl)
        if synth:
            report["synthesis"] = _synthesize(hm, config, tmp)
        _write_json(tmp / "firmware.json", report)
    if synth and report["synthesis"].get("status") == "failed":
        msg = (
            f"vendor synthesis with {report['synthesis']['tool']} failed ({report['synthesis']['reason']}); "
            f"the HLS project is ready in {out / 'hls'}"
        )
        raise SynthesisUnavailableError(
            msg
        )
    if synth and report["synthesis"].get("status") == "unavailable":
        msg = (
            f"synthesis needs the vendor tool ({'vitis_hls' if config.backend == 'Vitis' else 'vivado_hls'}) on "
            f"PATH; the HLS project is ready in {out / 'hls'} (cd there and run: "
            f"{'vitis_hls' if config.backend == 'Vitis' else 'vivado_hls'} -f build_prj.tcl)"
        )
        raise SynthesisUnavailableError(
            msg
        )
    if hm is not None and keep_model:
        hm.config.config["OutputDir"] = str(out / "hls")
    return FirmwareResult(out, report, graph, hm if keep_model else None, model)


def _build(graph: FixedGraph, net: nn.Module, model: nn.Module, record: PrecisionRecord, desc: str,
           cfg: FirmwareConfig, reuse: dict[str, int], tmp: Path, n: int, rtl: bool | None) -> tuple[dict[str, Any], Any]:
    timings: dict[str, float] = {}
    with progress_bar("firmware", 5, enabled=log.isEnabledFor(logging.INFO), transient=True) as progress:
        t0 = time.perf_counter()
        hm = convert(graph, net, cfg, tmp / "hls", reuse)
        timings["convert_s"] = time.perf_counter() - t0
        progress.advance(1)
        t0 = time.perf_counter()
        compile_model(hm)
        timings["compile_s"] = time.perf_counter() - t0
        progress.advance(1)

        inputs = check_inputs(graph, n, cfg.check.seed, cfg.check.noise_range, model)
        t0 = time.perf_counter()
        y_emu_int = graph.emulate_int(inputs)
        timings["emulate_s"] = time.perf_counter() - t0
        y_emu = np.ldexp(y_emu_int.astype(np.float64), -graph.output_type.frac)
        t0 = time.perf_counter()
        y_csim = csim_predict(hm, graph, inputs)
        timings["csim_s"] = time.perf_counter() - t0
        timings["csim_samples_per_s"] = n / max(timings["csim_s"], 1e-9)
        progress.advance(1)
        with torch.no_grad():
            y_float = float_network(net)(*[torch.from_numpy(x).float() for x in inputs]).double().numpy()
        mism = int(np.count_nonzero(y_csim != y_emu))
        bit = {
            "n_samples": n,
            "n_outputs": int(y_emu.size),
            "mismatches": mism,
            "max_abs_diff_emulation_vs_csim": float(np.max(np.abs(y_csim - y_emu))),
            "passed": mism == 0,
            "inputs": "90% typical (noise N(0,1) clipped, conditioning over the energy range), "
            "10% uniform over 1.25x the input type range",
            "seed": cfg.check.seed,
        }
        n_typ = n - n // 10  # typical inputs (the rest probe saturation, where float and fixed differ by design)
        d = np.abs(y_emu[:n_typ] - y_float[:n_typ])
        dev = {
            "max_abs": float(np.max(d)),
            "mean_abs": float(np.mean(d)),
            "float_output_std": float(np.std(y_float[:n_typ])),
            "max_abs_incl_out_of_range_inputs": float(np.max(np.abs(y_emu - y_float))),
            "n_samples": int(n_typ),
        }
        # test vectors (the hls4ml testbench reads all inputs concatenated on one line)
        tb = tmp / "hls" / "tb_data"
        tb.mkdir(parents=True, exist_ok=True)
        q_in = graph.quantize_inputs(inputs)
        (tb / "tb_input_features.dat").write_text("\n".join(_fmt(np.concatenate(q_in, axis=1))) + "\n")
        (tb / "tb_output_predictions.dat").write_text("\n".join(_fmt(y_emu)) + "\n")
        vec = tmp / "vectors"
        vec.mkdir()
        for name, arr in zip(graph.inputs, q_in, strict=False):
            np.save(vec / f"input_{name}.npy", arr)
        np.save(vec / "output.npy", y_emu)
        np.save(vec / "output_codes.npy", y_emu_int)
        progress.advance(1)

        rtl_res = None
        if rtl if rtl is not None else cfg.rtl.enabled:
            from .rtl import build_rtl

            m = min(cfg.rtl.n_samples, n)
            rtl_res = build_rtl(graph, tmp / "rtl", [x[:m] for x in inputs], latency_cutoff=cfg.rtl.latency_cutoff,
                                part=cfg.part, clock_period_ns=cfg.clock_period_ns, yosys=cfg.rtl.yosys,
                                yosys_timeout_s=cfg.rtl.yosys_timeout_s)
            rtl_res["verilog_dir"] = "rtl"
        progress.advance(1)

    _write_json(tmp / "precision.json", record.to_dict())
    est = estimate(graph, cfg, reuse)
    precisions: dict[str, Any] = {}
    impl: dict[str, Any] = {}
    for op in graph.ops:
        p = {"result": op.out_t.to_hls()}
        if op.kind == "linear":
            assert op.w_t is not None and op.acc_t is not None  # every linear op has them (build_graph)
            p.update(weight=op.w_t.to_hls(), bias=(op.b_t or op.w_t).to_hls(), accum=op.acc_t.to_hls())
            if op.acc_record is not None and op.acc_record != op.acc_t:
                p["accum_record"] = op.acc_record.to_hls()
            rf, strategy = layer_implementation(cfg, op.name, reuse)
            impl[op.name] = {"reuse_factor": rf, "strategy": strategy}
        if op.kind == "leaky_relu" and op.param_t is not None:
            p["param"] = op.param_t.to_hls()
        precisions[op.name] = p
    report = {
        "format_version": FIRMWARE_FORMAT_VERSION,
        "created": utc_now(),
        "software": software_versions(),
        "source": desc,
        "target": cfg.model_dump(mode="json"),
        "inputs": [{"name": nm, "size": s, "type": graph.op(nm).out_t.to_hls()} for nm, s in zip(graph.inputs, graph.input_sizes, strict=False)],
        "two_inputs": "noise and conditioning are two hls4ml inputs joined by hls4ml's Concatenate layer; "
        "condition(E) and postprocess() run outside the firmware" if len(graph.inputs) == 2 else None,
        "output": {"name": graph.output, "size": graph.op(graph.output).n_out, "type": graph.output_type.to_hls()},
        "precisions": precisions,
        "implementation": impl,
        "estimate": est,
        "bit_exactness": bit,
        "deviation_from_float": dev,
        "timings": timings,
        "rtl": rtl_res,
        "synthesis": None,
        "physics": None,
    }
    (tmp / "README.md").write_text(_readme(report, cfg))
    return report, hm


def _synthesize(hm: Any, cfg: FirmwareConfig, tmp: Path) -> dict[str, Any]:
    tool = vendor_tool(cfg.backend)
    if tool is None:
        return {"status": "unavailable", "reason": f"{cfg.backend} HLS tool not on PATH"}
    from .hls import _quiet, import_hls4ml

    hls4ml = import_hls4ml()
    hm.config.config["OutputDir"] = str(tmp / "hls")
    t0 = time.perf_counter()
    try:
        with _quiet():
            result = hm.build(csim=False, synth=True, vsynth=False)
    except Exception as err:
        return {"status": "failed", "tool": tool, "reason": str(err).strip().splitlines()[0][:300]}
    rep = {"status": "done", "tool": tool, "seconds": time.perf_counter() - t0}
    try:
        with _quiet():
            parsed = hls4ml.report.read_vivado_report(str(tmp / "hls"))
        rep["report"] = parsed if parsed else result
    except Exception as err:
        rep["report_error"] = str(err)
        rep["report"] = result
    return rep


def _readme(report: dict[str, Any], cfg: FirmwareConfig) -> str:
    t = report["estimate"]["total"]
    b = report["bit_exactness"]
    tool = "vitis_hls" if cfg.backend == "Vitis" else "vivado_hls"
    ins = ", ".join(f"`{i['name']}` ({i['size']} x {i['type']})" for i in report["inputs"])
    lines = [
        f"# {cfg.project_name}: fixed-point generator IP ({cfg.backend}, {cfg.io_type}, part {cfg.part})",
        "",
        (f"Generated by simcompress on {report['created']} from `{report['source']}` with hls4ml "
        f"{report['software'].get('hls4ml', '?')}."),
        "",
        f"* Inputs: {ins}; output `{report['output']['name']}` ({report['output']['size']} x {report['output']['type']}).",
        (f"* Bit-exactness: {b['mismatches']} mismatches on {b['n_samples']} random inputs "
        f"({b['n_outputs']} outputs) between the simcompress integer emulation and the hls4ml C simulation."),
        (f"* Estimate (simcompress proxy, not a vendor report): {t['dsp']} DSP, {t['lut']} LUT, "
        f"{t['latency_cycles']} cycles latency at {cfg.clock_period_ns} ns, II {t['initiation_interval_cycles']}."),
        "",
        "## Build with the vendor tools",
        "",
        "```bash",
        "cd hls",
        f"{tool} -f build_prj.tcl \"csim=1 synth=1 cosim=1 export=1\"   # C sim, synthesis, co-simulation, IP export",
        "vivado -mode batch -source vivado_synth.tcl                     # optional logic synthesis",
        "```",
        "",
        "Co-simulation reads `tb_data/tb_input_features.dat` (quantized inputs, all model inputs concatenated per line)",
        "and compares with `tb_data/tb_output_predictions.dat` (the bit-exact emulated outputs); the same vectors are",
        "in `vectors/*.npy`. Or rerun with `simcompress firmware ... --synth` when the tool is on PATH.",
        "",
        "The conditioning preprocessing (`condition(E)`) and the postprocessing to MeV (`postprocess(y, E)`)",
        "run outside the IP. Precisions, reuse factors and all numbers are in `firmware.json`; the",
        "per-layer precision record of the compressed model is `precision.json`.",
    ]
    if report.get("rtl"):
        lines += ["", "## Open-source RTL", "",
                  ("`rtl/` holds alkaid Verilog (distributed arithmetic, no DSPs), verified bit-exact with Verilator: "
                  f"{report['rtl']['mismatches']} mismatches on {report['rtl']['n_samples']} inputs.")]
    return "\n".join(lines) + "\n"
