"""Trade-off sweeps (simcompress.compress.sweep, ``simcompress sweep``) on a tiny GAN."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from torch.nn.utils import parametrize

from simcompress.cli import main
from simcompress.compress.pipeline import _as_step, load_recipe
from simcompress.compress.sweep import (
    Condition,
    expand,
    load_sweep,
    pareto_front,
    parse_condition,
    parse_grid,
    pick_point,
    sweep_from_grid,
)
from simcompress.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[2]
LAYERS = [
    {"id": 0, "r_edges_mm": [0, 5, 20, 100], "n_alpha": 1, "depth_x0": [0.0, 4.0]},
    {"id": 1, "r_edges_mm": [0, 10, 40, 200], "n_alpha": 2, "depth_x0": [4.0, 20.0]},
    {"id": 2, "r_edges_mm": [0, 100, 1000], "n_alpha": 1, "depth_x0": [20.0, 45.0]},
]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from simcompress.generators import build_generator, save_generator
    from simcompress.showers.geometry import Geometry
    from simcompress.showers.io import write_showers
    from simcompress.showers.reference import simulate

    root = tmp_path_factory.mktemp("sweep")
    geo = Geometry.from_dict({**Geometry.from_name("ds1-photons").to_dict(), "name": "toy", "layers": LAYERS})
    torch.manual_seed(0)
    gan = build_generator({"kind": "gan", "latent_dim": 8, "geometry": geo.to_dict(), "energy_range_mev": [256.0, 4194304.0],
                           "architecture": {"hidden": [64, 128], "negative_slope": 0.2, "batchnorm": False, "critic_hidden": [16]}})
    write_showers(root / "ref.root", simulate(geo, 400, seed=5, progress=False))
    gate = yaml.safe_load((ROOT / "configs" / "validation" / "compression.yaml").read_text())
    gate.update({"noise_floor": {"n_splits": 2, "max_events": 1000}, "n_bins": 10, "min_events": 50,
                 "bootstrap": {"n_boot": 2, "max_events": 1000, "n_boot_hist": 5}})
    gate["classifier"] = {**gate["classifier"], "epochs": 2, "n_hidden": 16}
    (root / "gate.yaml").write_text(yaml.safe_dump(gate))
    sweep = {"name": "tiny", "sweeps": [
        {"method": "ptq", "options": {"weights": {"granularity": "per_channel"}}, "grid": {"bits": [8, 4]}},
        {"method": "magnitude_prune", "grid": {"sparsity": [0.5]}, "finetune": {"steps": 2, "lr": 1e-4}},
    ]}
    (root / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    return {"gan": save_generator(gan, root / "gan"), "ref": root / "ref.root", "gate": root / "gate.yaml",
            "sweep": root / "sweep.yaml", "root": root}


def _tiny(env: dict[str, Path]) -> list[str]:
    return ["--reference", str(env["ref"]), "--n-events", "400", "--finetune-events", "400", "--calibration-events", "64",
            "--gate-spec", str(env["gate"]), "--speed-batch", "256", "--measure-seconds", "0.01", "--no-validation-html"]


def test_grid_expansion_maps_short_keys_onto_method_options() -> None:
    assert parse_grid(["bits=16,8,6,4", "sparsity=0.5,0.9"]) == {"bits": [16, 8, 6, 4], "sparsity": [0.5, 0.9]}
    spec = sweep_from_grid("lowrank_quant", {"bits": [8, 4], "energy": [0.9, 0.99]})
    pts = expand(spec)
    assert len(pts) == 4 and len({p.id for p in pts}) == 4
    assert {(p.step["weights"]["bits"], p.step["svd"]["energy"]) for p in pts} == {(8, 0.9), (8, 0.99), (4, 0.9), (4, 0.99)}
    assert [p.step["final_sparsity"] for p in expand(sweep_from_grid("gradual_prune", {"sparsity": [0.8]}))] == [0.8]
    shipped = sorted((ROOT / "configs" / "sweeps").glob("*.yaml"))
    assert shipped and all(expand(load_sweep(p)) for p in shipped)
    gan = expand(load_sweep(ROOT / "configs" / "sweeps" / "gan-pareto.yaml"))  # the README's Pareto page
    assert len(gan) == 8 and [b["method"] for b in gan[-2].before] == ["distill_gan"] and gan[-2].step["weights"]["bits"] == 8
    # the trigger-sized student: the recipe configs/compress/gan-to-trigger-student.yaml, step for step, as a point
    trigger = gan[-1]
    recipe = [_as_step(st, "recipe") for st in load_recipe(ROOT / "configs" / "compress" / "gan-to-trigger-student.yaml").steps]
    assert trigger.before == [recipe[0].config.to_dict()] and trigger.step == recipe[1].config.to_dict()
    assert trigger.finetune is not None and recipe[1].finetune is not None
    assert trigger.finetune == recipe[1].finetune.model_dump() and trigger.step["weight"]["width"] == 6


def test_conditions_front_and_pick() -> None:
    assert parse_condition("auc_vs_teacher<=0.55 and speedup>=2") == [Condition("auc_vs_teacher", "<=", 0.55),
                                                                      Condition("speedup", ">=", 2.0)]
    recs = [
        {"id": "a", "status": "done", "storage_ratio": 2.0, "speedup": 1.0, "auc_vs_teacher": 0.50},
        {"id": "b", "status": "done", "storage_ratio": 4.0, "speedup": 1.5, "auc_vs_teacher": 0.52},
        {"id": "c", "status": "done", "storage_ratio": 3.0, "speedup": 3.0, "auc_vs_teacher": 0.60},  # dominated in storage
        {"id": "d", "status": "done", "storage_ratio": 8.0, "speedup": 0.9, "auc_vs_teacher": 0.70},
    ]
    assert pareto_front(recs, "storage_ratio", "auc_vs_teacher") == ["a", "b", "d"]
    assert pareto_front(recs, "speedup", "auc_vs_teacher") == ["a", "b", "c"]
    cond = parse_condition("auc_vs_teacher<=0.55")
    assert pick_point(recs, cond, "storage")["id"] == "b"
    assert pick_point(recs, parse_condition("auc_vs_teacher<=0.65"), "speed")["id"] == "c"
    assert pick_point(recs, parse_condition("auc_vs_teacher<0.4"), "storage") is None


@pytest.mark.parametrize(("args", "message"), [
    (["--method", "quantize", "--grid", "bits=8"], "unknown or unsweepable method 'quantize'"),
    (["--method", "ptq", "--grid", "sparsity=0.5"], "grid.sparsity: unknown grid key for method 'ptq'; allowed: bits"),
    (["--method", "ptq", "--grid", "bits="], "bits: empty grid"),
    (["--method", "ptq"], "empty grid"),
    (["--method", "ptq", "--grid", "bits=8", "--pick", "auc<=0.5"], "unknown figure 'auc'"),
    (["--method", "ptq", "--grid", "bits=1"], "bits"),  # the method's own check: bits >= 2
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(args: list[str], message: str, env: dict[str, Path], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o"
    rc = main(["sweep", "--model", str(env["gan"]), "--out", str(out), *args, *_tiny(env)])
    err = capsys.readouterr().err
    assert rc == 2 and message in " ".join(err.split()), err
    assert len(err.strip().splitlines()) <= 3  # one message (rich may wrap it)
    assert not out.exists()


def test_bad_sweep_file_names_the_key(env: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"sweeps": [{"method": "svd", "grid": {"energy": [0.9]}}, {"method": "svd", "grid": {}}]}))
    with pytest.raises(ConfigError, match=r"sweeps\[1\]\.grid: empty grid"):
        load_sweep(bad)
    rc = main(["sweep", "--model", str(env["gan"]), "--config", str(bad), "--out", str(tmp_path / "o"), *_tiny(env)])
    assert rc == 2 and "sweeps[1].grid: empty grid" in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "o").exists()


def test_sweep_file_end_to_end_reuse_and_pick(env: dict[str, Path], tmp_path: Path) -> None:
    from simcompress.compress.deploy import is_deployed
    from simcompress.generators import load_generator

    out = tmp_path / "sw"
    args = ["sweep", "--model", str(env["gan"]), "--config", str(env["sweep"]), "--out", str(out), "--workers", "2", *_tiny(env)]
    assert main([*args, "--pick", "auc_vs_teacher<=0.99"]) == 0
    table = json.loads((out / "sweep.json").read_text())
    pts = table["points"]
    assert [p["label"] for p in pts] == ["ptq bits=8", "ptq bits=4", "magnitude_prune sparsity=0.5"]
    for p in pts:
        for k in ("storage_ratio", "bundle_ratio", "bops_ratio", "showers_per_s", "speedup", "auc_vs_teacher",
                  "w1_over_floor_max", "fpd", "deploy_form"):
            assert p[k] is not None, (p["label"], k)
        assert (out / p["validation_report"]).is_file()
    by = {p["label"]: p for p in pts}
    assert by["ptq bits=4"]["storage_ratio"] > by["ptq bits=8"]["storage_ratio"] > 3
    assert by["ptq bits=4"]["bops_ratio"] > by["ptq bits=8"]["bops_ratio"]
    assert by["magnitude_prune sparsity=0.5"]["deploy_form"] == "baked"
    # the picked point is the smallest one satisfying the condition, and its bundle loads in its execution form
    assert table["pick"]["picked"] == max(pts, key=lambda p: p["storage_ratio"])["id"]
    picked = json.loads((out / "picked" / "sweep-point.json").read_text())
    assert picked["id"] == table["pick"]["picked"]
    gen = load_generator(out / "picked")
    # which form wins is measured, so it depends on the machine's load; each form must load as itself
    form = picked["deploy_form"]
    assert gen.deploy_record["form"] == form
    if form in ("torch-int8", "onnx-int8"):
        assert is_deployed(gen)
    elif form == "baked":  # plain layers holding the quantized values: no fake quantizer left
        assert not any(parametrize.is_parametrized(m) for m in gen.network.modules())
    page = (out / "sweep.html").read_text()
    assert page.count("<tr") == 1 + len(pts) and page.count("class=picked") == 1 and "data:image/png;base64," in page
    assert set(table["pareto"]) >= {"auc_vs_teacher_vs_storage_ratio", "auc_vs_teacher_vs_speedup"}
    # a rerun reuses every finished point; an impossible pick exits 1 and removes the stale pick
    stamps = {p["id"]: (out / "points" / p["id"] / "point.json").stat().st_mtime_ns for p in pts}
    assert main([*args, "--pick", "auc_vs_teacher<=0.01"]) == 1
    assert {p["id"]: (out / "points" / p["id"] / "point.json").stat().st_mtime_ns for p in pts} == stamps
    assert json.loads((out / "sweep.json").read_text())["pick"]["picked"] is None and not (out / "picked").exists()

