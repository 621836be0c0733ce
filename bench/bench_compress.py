"""Compression benchmark: for each shipped recipe, size ratio, measured throughput ratio and
fidelity of the compressed versus the uncompressed generator, all from one run on this CPU.

* size: storage counted from the actual bits (``storage``) and bytes on disk of the bundle
  (``config.json + weights.safetensors``);
* speed: showers per second of ``sample()`` for both models in the same run (interleaved,
  best of 3), the compressed model in the execution form ``simcompress compress`` records and
  ``generate`` runs (:func:`~simcompress.compress.deploy.choose_form`: fastest faithful of baked
  float, torch int8, ONNX Runtime int8, sparse; ``form``, its max abs difference to the
  fake-quantized model; all of it ``compression_report``'s own figure); ``throughput_ratio_baked`` is the
  same figure for the baked float form (what that report measured before); plus ONNX Runtime float32 / dynamic-int8 network forwards per second;
* fidelity: the validation gate (``configs/validation/<spec>.yaml``) applied to showers of
  both models against GFlash reference showers; per model the fraction of gate checks passed
  and the worst ``value / threshold``.

The model is the shipped ``ds1-photons-gan`` when the zoo has it, else the architecture of
``configs/generators/ds1-photons-gan.yaml`` with random weights (labelled ``untrained``:
speed and size are meaningful, fidelity is not).

Usage: ``python bench/bench_compress.py [--quick] [--recipes int8-ptq,combined]`` (prints JSON),
or ``python -m bench --only compress``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ["int8-ptq", "prune-gradual-80", "svd-energy", "combined"]


def _model() -> tuple[Any, str, Path | None]:
    from simcompress.generators import build_generator, load_generator
    from simcompress.generators.bundle import resolve_bundle

    try:
        return load_generator("ds1-photons-gan"), "ds1-photons-gan (shipped)", resolve_bundle("ds1-photons-gan")
    except Exception:
        import yaml

        from simcompress.showers.geometry import Geometry

        cfg = yaml.safe_load((ROOT / "configs" / "generators" / "ds1-photons-gan.yaml").read_text())
        arch = dict(cfg["model"])
        latent = arch.pop("latent_dim")
        gen = build_generator({
            "kind": cfg["kind"], "latent_dim": latent, "geometry": Geometry.from_name(cfg["geometry"]).to_dict(),
            "energy_range_mev": cfg["energy_range_mev"], "architecture": arch,
        })
        return gen, "ds1-photons-gan architecture (untrained)", None


def _fidelity(gate: Any, model: Any) -> dict[str, Any]:
    r = gate(model)
    checks = r.metrics.get("checks", [])
    worst = max((c["value"] / c["threshold"] for c in checks if c["threshold"] > 0), default=None)
    return {"passed": r.passed, "checks_passed": sum(c["passed"] for c in checks), "checks": len(checks),
            "worst_value_over_threshold": worst, "summary": r.summary}


def _sampling_bytes(path: Path | None) -> int | None:
    if path is None:
        return None
    return sum((path / f).stat().st_size for f in ("config.json", "weights.safetensors"))


def run(quick: bool = False, recipes: list[str] | None = None) -> dict[str, Any]:
    import torch

    from simcompress.compress.bundle import save_compressed
    from simcompress.compress.deploy import deploy, sample_rate
    from simcompress.compress.pipeline import Pipeline
    from simcompress.compress.report import compression_report
    from simcompress.generators import save_generator
    from simcompress.generators.train import finetune
    from simcompress.showers.reference import simulate
    from simcompress.workflows import generator_calibration as make_calibration

    torch.set_num_threads(1)
    gen, label, orig_path = _model()
    gen.eval()
    n_ref = 2000 if quick else 20000
    reference = simulate(gen.geometry, n_ref, seed=7, progress=False)
    cap = 5 if quick else None  # quick mode: at most 5 fine-tuning steps per call

    def train(model: Any, steps: int, lr: float) -> Any:
        was = model.training
        finetune(model, reference, min(steps, cap) if cap else steps, lr, seed=0)
        model.train(was)
        return model

    gate = None
    try:
        from simcompress.validation.gate import make_model_gate

        gate = make_model_gate(reference, "loose" if quick else "default", n_events=1000 if quick else 10000, seed=1)
    except Exception as err:
        gate_error = f"{type(err).__name__}: {err}"
    out: dict[str, Any] = {"model": label, "quick": quick, "threads": 1, "reference_events": n_ref, "recipes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        if orig_path is None:
            orig_path = save_generator(gen, Path(tmp) / "original")
        out["original_fidelity"] = _fidelity(gate, gen) if gate is not None else {"measured": False, "reason": gate_error}
        calib = make_calibration(gen, reference.incident_energy[:1024], 0)
        for name in recipes or RECIPES:
            t0 = time.perf_counter()
            pipe = Pipeline.from_yaml(ROOT / "configs" / "compress" / f"{name}.yaml", finetune=train)
            res = pipe.run(gen, calibration=calib)
            comp = res.model.eval()
            seconds = time.perf_counter() - t0
            base, steps = res.base_and_steps(gen.config_dict())
            bdir = save_compressed(comp, base, steps, None, Path(tmp) / name)
            # the report's throughput figure: end-to-end sample() of the form the bundle records (what generate and
            # batch runs execute), chosen by compress.deploy inside compression_report, at one torch thread
            batch = 2048 if quick else 10_000
            rep = compression_report(gen, comp, n_samples=512 if quick else 4096, batch=batch, threads=1,
                                     min_time=0.1 if quick else 0.3, repeats=2 if quick else 3)
            o_b, c_b = _sampling_bytes(orig_path), _sampling_bytes(bdir)
            dep = rep["deploy"]
            # the same figure for the baked float form, for comparison (what the report measured before issue 14)
            baked = sample_rate({"original": gen, "baked": deploy(comp, "baked", sparse_layers=dep["sparse_layers"])}, batch,
                                min_time=0.2 if quick else 1.0, repeats=3)
            entry: dict[str, Any] = {
                "compress_seconds": seconds,
                "size_ratio_storage": rep["ratios"]["storage"],
                "size_ratio_bundle": o_b / c_b if o_b and c_b else None,
                "params_ratio": rep["ratios"]["params"],
                "bops_ratio": rep["ratios"]["bops"],
                "form": dep["form"],
                "max_abs_diff_vs_fake_quantized": dep["max_abs_diff_vs_fake_quantized"],
                "throughput_batch": batch,
                "throughput_ratio": rep["ratios"]["throughput"],
                "throughput_showers_per_s": dep["sample_showers_per_s"],
                "throughput_ratio_baked": baked["baked"] / baked["original"],
                "deployable_form": rep["deployable_form"],
            }
            onnx = rep.get("onnx", {})
            if onnx.get("measured"):
                base = onnx["original_fp32"]["forwards_per_s"]
                entry["onnx_throughput_ratio"] = {k: onnx[k]["forwards_per_s"] / base for k in ("compressed_fp32", "compressed_int8_dynamic") if k in onnx}
            entry["fidelity"] = _fidelity(gate, comp) if gate is not None else {"measured": False}
            out["recipes"][name] = entry
            print(f"{name}: {json.dumps({k: v for k, v in entry.items() if k != 'deployable_form'})}", file=sys.stderr)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--recipes", default=",".join(RECIPES))
    args = ap.parse_args()
    print(json.dumps(run(args.quick, args.recipes.split(",")), indent=2, default=str))
