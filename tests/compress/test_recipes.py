"""Every shipped recipe runs as its header says.

Each ``configs/compress/*.yaml`` documents its command in a header line
``#   simcompress compress --model M --recipe configs/compress/X.yaml --reference ref.root --out D/``.
This test runs exactly that command, with the zoo model replaced by a tiny random generator
of the same kind, ``ref.root`` by a small simulated reference, and the recipe by a copy whose
step counts and pool sizes are shrunk (every other key as shipped), then checks that a bundle
(exit 0) or a rejected-and-reported student (exit 1: ``REJECTED``, ``report.json`` with
``status: rejected``, a loadable ``rejected-student/``) comes out.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from simcompress.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "configs" / "compress").glob("*.yaml"))
COMMAND = re.compile(r"^#\s+(simcompress compress .*)$", re.MULTILINE)
FIRMWARE = re.compile(r"^#\s+(simcompress firmware .*)$", re.MULTILINE)
TOY_LAYERS = [  # 11 voxels over the whole depth of a ds1-like sampling calorimeter
    {"id": 0, "r_edges_mm": [0, 5, 20, 100], "n_alpha": 1, "depth_x0": [0.0, 4.0]},
    {"id": 1, "r_edges_mm": [0, 10, 40, 200], "n_alpha": 2, "depth_x0": [4.0, 20.0]},
    {"id": 2, "r_edges_mm": [0, 100, 1000], "n_alpha": 1, "depth_x0": [20.0, 45.0]},
]
E_RANGE = [256.0, 4194304.0]
# keys that size training; capped (the rest of the recipe is run as shipped)
CAPS = {
    "steps": 4, "recovery_steps": 2, "adversarial_steps": 3, "update_every": 2, "pool_size": 128,
    "batch_size": 32, "checkpoint_every": 2, "calibration_samples": 128,
}
TINY_GATE = {  # the 'compression' preset's rules at tiny statistics
    **yaml.safe_load((ROOT / "configs" / "validation" / "compression.yaml").read_text()),
    "noise_floor": {"n_splits": 2, "max_events": 1000}, "bootstrap": {"n_boot": 2, "max_events": 1000, "n_boot_hist": 5},
    "n_bins": 10, "min_events": 50,
}
TINY_GATE["classifier"] = {**TINY_GATE["classifier"], "epochs": 2, "n_hidden": 16}
TINY_OPTIONS = ["--n-events", "300", "--finetune-events", "300", "--calibration-events", "64",
                "--report-samples", "64", "--no-onnx", "--no-validation-html",
                "--deploy-batch", "256", "--measure-seconds", "0.01"]


def documented_command(recipe: Path) -> list[str]:
    found = COMMAND.findall(recipe.read_text())
    assert len(found) == 1, f"{recipe.name}: needs exactly one '#   simcompress compress ...' header line, has {len(found)}"
    argv = shlex.split(found[0])[1:]
    assert argv[argv.index("--recipe") + 1] == f"configs/compress/{recipe.name}"
    return argv


def shrink(node: Any, checkpoints: Path | None = None) -> Any:
    """The recipe with its training capped; a ``checkpoint_dir`` (relative to the working directory) moved below ``checkpoints``."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k in CAPS and isinstance(v, int) and not isinstance(v, bool):
                out[k] = min(v, CAPS[k])
            elif k == "checkpoint_dir" and isinstance(v, str) and checkpoints is not None:
                out[k] = str(checkpoints / v)
            else:
                out[k] = shrink(v, checkpoints)
        return out
    if isinstance(node, list):
        return [shrink(v, checkpoints) for v in node]
    return node


def _checkpoint_dirs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [d for k, v in node.items() for d in ([v] if k == "checkpoint_dir" and isinstance(v, str) else _checkpoint_dirs(v))]
    return [d for v in node for d in _checkpoint_dirs(v)] if isinstance(node, list) else []


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from simcompress.generators import build_generator, save_generator
    from simcompress.showers.geometry import Geometry
    from simcompress.showers.io import write_showers
    from simcompress.showers.reference import simulate

    geo = Geometry.from_dict({**Geometry.from_name("ds1-photons").to_dict(), "name": "toy", "layers": TOY_LAYERS})
    root = tmp_path_factory.mktemp("recipes")
    torch.manual_seed(0)
    gan = build_generator({  # the shipped GAN's noise width: gan-to-trigger-student reads 383 of its coordinates
        "kind": "gan", "latent_dim": 384, "geometry": geo.to_dict(), "energy_range_mev": E_RANGE,
        "architecture": {"hidden": [256, 256], "negative_slope": 0.2, "batchnorm": False, "critic_hidden": [16]},
    })
    flow = build_generator({
        "kind": "flow", "geometry": geo.to_dict(), "energy_range_mev": E_RANGE,
        "architecture": {"n_blocks": 2, "hidden": [16], "n_groups": 5},
    })
    ref = root / "ref.root"
    write_showers(ref, simulate(geo, 600, seed=5, progress=False))
    return {"gan": save_generator(gan, root / "gan"), "flow": save_generator(flow, root / "flow"), "ref": ref}


def test_every_recipe_documents_one_command() -> None:
    assert len(RECIPES) >= 10
    for r in RECIPES:
        argv = documented_command(r)
        assert argv[0] == "compress" and "--reference" in argv and "--out" in argv and "--model" in argv


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_recipe_runs_as_its_header_says(recipe: Path, env: dict[str, Path], tmp_path: Path) -> None:
    from simcompress.generators import load_generator

    argv = documented_command(recipe)
    model = argv[argv.index("--model") + 1]
    kind = "gan" if "gan" in model else "flow"
    small = tmp_path / recipe.name
    shrunk = shrink(yaml.safe_load(recipe.read_text()), tmp_path / "checkpoints")
    small.write_text(yaml.safe_dump(shrunk, sort_keys=False))
    out = tmp_path / argv[argv.index("--out") + 1].rstrip("/")
    swap = {model: str(env[kind]), f"configs/compress/{recipe.name}": str(small), "ref.root": str(env["ref"]),
            argv[argv.index("--out") + 1]: str(out)}
    gate = tmp_path / "tiny-gate.yaml"
    gate.write_text(yaml.safe_dump(TINY_GATE))
    rc = main([swap.get(a, a) for a in argv] + TINY_OPTIONS + ["--gate-spec", str(gate)])
    assert rc in (0, 1), f"{recipe.name}: exit {rc}"
    rep = json.loads((out / "report.json").read_text())
    e = torch.tensor([1e3, 1e5])
    if rc == 0:
        assert rep["status"] == "accepted" and not (out / "REJECTED").exists()
        gen = load_generator(out)
    else:
        assert rep["status"] == "rejected" and (out / "REJECTED").is_file()
        assert not (out / "weights.safetensors").exists()  # never mistaken for an accepted bundle
        assert rep["rejected"]["stopped_at"] == rep["pipeline"]["stopped_at"] >= 1
        assert "REJECTED" in (out / "report.md").read_text().splitlines()[0]
        gen = load_generator(out / rep["rejected"]["student_bundle"])
    y = gen.sample(e, generator=torch.Generator().manual_seed(0))
    assert y.shape == (2, 11) and torch.isfinite(y).all()
    steps = rep["pipeline"]["steps"]
    gated = [s["gate"] is not None for s in steps]  # gate_at: last gates the final model only
    assert steps and gated == ([True] * len(steps) if shrunk.get("gate_at", "every") == "every" else [False] * (len(steps) - 1) + [True])
    if shrunk.get("gate_at") == "last":  # the report says why the first steps have no gate result
        assert (out / "report.md").read_text().count("| not gated (gate_at: last) |") == len(steps) - 1
    for d in _checkpoint_dirs(shrunk):  # a recipe's resumable checkpoints are written where it says (here: below tmp_path)
        assert Path(d).is_relative_to(tmp_path) and any(Path(d).rglob("*.safetensors")), f"{recipe.name}: no checkpoint in {d}"
    # a documented `simcompress firmware` line runs on what the compress line produced (bundle, or the rejected student)
    produced = out if rc == 0 else out / rep["rejected"]["student_bundle"]
    for line in FIRMWARE.findall(recipe.read_text()):
        fargv = shlex.split(line)[1:]
        documented = fargv[fargv.index("--model") + 1]
        assert documented.startswith(argv[argv.index("--out") + 1]), f"{recipe.name}: firmware --model {documented} is not the compress --out"
        target = fargv[fargv.index("--config") + 1]
        fw = tmp_path / "fw"
        fswap = {documented: str(produced), target: str(ROOT / target), "ref.root": str(env["ref"]), fargv[fargv.index("--out") + 1]: str(fw)}
        extra = ["--samples", "64"] + (["--physics-events", "400", "--gate", str(gate)] if "--reference" in fargv else [])
        frc = main([fswap.get(a, a) for a in fargv] + extra)
        assert frc in (0, 1), f"{recipe.name}: firmware exit {frc}"
        fw_report = json.loads((fw / "firmware.json").read_text())
        assert fw_report["bit_exactness"]["mismatches"] == 0 and fw_report["bit_exactness"]["passed"]
        assert frc == 0 or fw_report["physics"] is not None  # exit 1 only from the physics gate, never a mismatch
