"""Bring your own generator: a user's DCGAN file and an ONNX export through import, compress
(prune, PTQ, fixed point, SVD), generate and validate, with coverage reported."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from external_dcgan import DCGAN, make_dcgan

from simcompress.cli import main
from simcompress.compress import compress, config_from_dict
from simcompress.errors import ConfigError, UnsupportedLayerError
from simcompress.generators import load_generator, save_generator
from simcompress.interop.external import ExternalGenerator, wrap_generator

TOY = Path(__file__).with_name("external_dcgan.py")
E = torch.exp(torch.linspace(6.0, 15.0, 32))

RECIPE = {
    "name": "byo-dcgan",
    "on_failure": "stop",
    "steps": [
        {"method": "magnitude_prune", "sparsity": 0.5},
        {"method": "svd", "energy": 0.95},
        {"method": "ptq", "types": ["ConvTranspose2d", "Linear", "Conv2d"], "weights": {"bits": 8}},
    ],
}
FIXED = {"name": "byo-fixed", "steps": [{"method": "fixed_point", "weight": {"width": 10}, "result": {"width": 18, "headroom": 1}}]}


def _gen() -> ExternalGenerator:
    return wrap_generator(make_dcgan(), geometry="ds1-photons", latent_dim=16, model=f"{TOY}:DCGAN",
                          condition={"kind": "log10-energy", "unit": "GeV"}, postprocess={"output": "relu", "scale": 1000.0})


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from simcompress.showers.geometry import Geometry
    from simcompress.showers.io import write_showers
    from simcompress.showers.reference import simulate
    from simcompress.validation.gate import GateSpec

    d = tmp_path_factory.mktemp("byo")
    ref = simulate(Geometry.from_name("ds1-photons"), 1000, seed=3, progress=False)
    spec = GateSpec(name="byo-fast", classifier={"inputs": ["high"], "epochs": 2, "n_hidden": 16, "max_events": 1000},
                    fpd={"num_batches": 3, "num_points": 3}, kpd={"num_batches": 3, "batch_size": 400},
                    bootstrap={"n_boot": 3, "n_boot_hist": 20})
    (d / "gate.yaml").write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    (d / "recipe.yaml").write_text(yaml.safe_dump(RECIPE))
    (d / "fixed.yaml").write_text(yaml.safe_dump(FIXED))
    save_generator(_gen(), d / "bundle")
    return {"dir": d, "ref": write_showers(d / "ref.root", ref), "gate": d / "gate.yaml", "recipe": d / "recipe.yaml",
            "fixed": d / "fixed.yaml", "bundle": d / "bundle"}


def test_bundle_is_rebuilt_from_import_path_and_json(files: dict[str, Path]) -> None:
    cfg = json.loads((files["bundle"] / "config.json").read_text())
    assert cfg["kind"] == "external" and cfg["architecture"]["model"] == f"{TOY}:DCGAN"
    assert sorted(p.name for p in files["bundle"].iterdir()) == ["card.json", "config.json", "weights.safetensors"]
    gen, again = _gen(), load_generator(files["bundle"])
    a = gen.sample(E, torch.Generator().manual_seed(1))
    torch.testing.assert_close(again.sample(E, torch.Generator().manual_seed(1)), a, rtol=0, atol=0)
    assert a.shape == (32, 368) and (a >= 0).all()
    # the condition is log10(E / GeV), as declared
    torch.testing.assert_close(gen.condition(torch.tensor([1000.0, 1e5])), torch.tensor([[0.0], [2.0]]))


def test_wrap_refuses_what_cannot_be_rebuilt() -> None:
    with pytest.raises(ConfigError, match="does not rebuild"):
        wrap_generator(DCGAN(ch=8), geometry="ds1-photons", latent_dim=16, model=f"{TOY}:DCGAN")  # kwargs missing
    with pytest.raises(ConfigError, match="returns 368 values per shower.*533 voxels"):
        wrap_generator(DCGAN(), geometry="ds1-pions", latent_dim=16, model=f"{TOY}:DCGAN")
    with pytest.raises(ConfigError, match="failed on a test batch"):
        wrap_generator(DCGAN(), geometry="ds1-photons", latent_dim=8, model=f"{TOY}:DCGAN")


@pytest.mark.parametrize("cfg", [
    {"method": "magnitude_prune", "sparsity": 0.5},
    {"method": "ptq", "types": ["ConvTranspose2d", "Linear"]},
    {"method": "svd", "energy": 0.9},
    {"method": "mixed_precision", "sensitivity": "weight", "avg_bits": 5},
    {"method": "fixed_point", "weight": {"width": 10}},
])
def test_every_weight_layer_is_covered(cfg: dict) -> None:
    gen = _gen()
    res = compress(gen, config_from_dict(cfg))  # a CoverageWarning fails the test (filterwarnings = error)
    cov = res.coverage
    assert cov["not_handled_share"] == 0.0 and cov["scope"] == "model.network"
    types = {r["type"] for r in cov["changed"]}
    assert "ConvTranspose2d" in types and "Linear" in types
    assert cov["changed_share"] + sum(r["share"] for r in cov["left_alone"]) > 0.99  # batch norms are the rest
    out = res.model.sample(E, torch.Generator().manual_seed(1))
    assert out.shape == (32, 368) and torch.isfinite(out).all()


def test_structured_prune_refuses_the_fixed_view_and_prunes_the_deconvolutions() -> None:
    gen = _gen()
    with pytest.raises(UnsupportedLayerError, match="network.fc1.*written into the forward code"):
        compress(gen, config_from_dict({"method": "structured_prune", "amount": 0.25}))
    res = compress(gen, config_from_dict({"method": "structured_prune", "amount": 0.25, "on_unsupported": "keep"}))
    net = res.model.network
    assert (net.deconv1.out_channels, net.bn1.num_features, net.deconv2.in_channels) == (12, 12, 12)
    left = {r["name"]: r["reason"] for r in res.coverage["left_alone"]}
    assert left == {"network.fc1": "kept"}  # deconv3 keeps its output width but loses inputs: changed
    assert net.deconv3.in_channels == 12 and net.deconv3.out_channels == 1
    assert res.model.sample(E, torch.Generator().manual_seed(1)).shape == (32, 368)


def test_functional_activations_are_cast_in_fixed_point() -> None:
    from simcompress.compress.fixed_point import FixedType

    res = compress(_gen(), config_from_dict({"method": "fixed_point"}))
    rec = res.extra["precision"]
    assert rec["folded_batchnorm"] == ["bn1", "bn2"]
    kinds = {k: v["kind"] for k, v in rec["layers"].items()}
    assert kinds["leaky_relu"] == "LeakyReLU" and kinds["sigmoid"] == "Sigmoid" and kinds["deconv2"] == "ConvTranspose2d"
    z, c = torch.randn(64, 16), torch.rand(64, 1) * 3
    with torch.no_grad():
        y = res.model.network(z, c)  # the crop output is the sigmoid's, cast to its type
    t = FixedType.from_dict(rec["layers"]["sigmoid"]["result"])
    assert torch.equal(torch.as_tensor(t.quantize(y.numpy())), y)
    with torch.no_grad():
        ref = _gen().network(z, c)
    assert float((y - ref).abs().max()) < 0.01


def test_cli_compress_generate_validate_user_dcgan(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "c"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rc = main(["compress", "--model", str(files["bundle"]), "--recipe", str(files["recipe"]), "--out", str(out), "--no-gate",
                   "--no-onnx", "--report-samples", "64", "--calibration-events", "128"])
    assert rc == 0
    rep = json.loads((out / "report.json").read_text())
    cov = {c["method"]: c for c in rep["coverage"]}
    assert set(cov) == {"magnitude_prune", "svd", "ptq"}
    assert all(c["not_handled_share"] == 0.0 for c in cov.values())
    assert {r["name"] for r in cov["magnitude_prune"]["changed"]} >= {"network.deconv1", "network.deconv2", "network.deconv3"}
    assert rep["ratios"]["storage"] > 4.0  # over the whole network (8-bit, half the weights zero)
    md = (out / "report.md").read_text()
    assert "## Coverage" in md and "ConvTranspose2d" in md
    fp = tmp_path / "fp"
    assert main(["compress", "--model", str(files["bundle"]), "--recipe", str(files["fixed"]), "--out", str(fp), "--no-gate",
                 "--no-onnx", "--report-samples", "64", "--calibration-events", "128"]) == 0
    assert json.loads((fp / "precision.json").read_text())["layers"]["deconv1"]["kind"] == "ConvTranspose2d"
    for name, model in (("teacher", files["bundle"]), ("pruned", out), ("fixed", fp)):
        assert main(["generate", "--model", str(model), "--events", "1000", "--energies", "ds1", "--seed", "5",
                     "--out", str(tmp_path / f"{name}.root")]) == 0
    rc = main(["validate", "-r", str(files["ref"]), "-c", f"teacher={tmp_path / 'teacher.root'}", "-c", f"pruned={tmp_path / 'pruned.root'}",
               "-c", f"fixed={tmp_path / 'fixed.root'}", "--gate", str(files["gate"]), "-q", "--no-html", "--out", str(tmp_path / "v")])
    assert rc == 1  # an untrained DCGAN is far from GFlash showers: the gate fails, and says so
    metrics = json.loads((tmp_path / "v" / "metrics.json").read_text())
    assert {"teacher", "pruned", "fixed"} <= set(json.dumps(metrics).split('"')) 


def _export(tmp_path: Path, net: torch.nn.Module, args: tuple, names: list[str]) -> Path:
    path = tmp_path / "gen.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, args, str(path), dynamo=False, input_names=names, output_names=["y"],
                          dynamic_axes={n: {0: "batch"} for n in [*names, "y"]})
    return path


def test_import_onnx_round_trip_compress_and_validate(files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("onnxruntime")
    onnx_path = _export(tmp_path, make_dcgan(), (torch.randn(2, 16), torch.randn(2, 1)), ["z", "c"])
    b = tmp_path / "onnx-bundle"
    rc = main(["import-onnx", str(onnx_path), "--geometry", "ds1-photons", "--latent-dim", "16", "--condition", "log10-energy",
               "--unit", "GeV", "--postprocess", "relu", "--output-scale", "1000", "-o", str(b)])
    assert rc == 0
    card = json.loads((b / "card.json").read_text())
    assert card["onnxruntime_check"]["max_rel_diff"] < 1e-6
    gen, direct = load_generator(b), _gen()
    z, c = torch.randn(64, 16), torch.randn(64, 1)
    with torch.no_grad():
        torch.testing.assert_close(gen.network(z, c), direct.network(z, c), rtol=0, atol=1e-6)
    assert not (b / "gen.onnx").exists() and gen.spec.source == "onnx"  # rebuilt from JSON + safetensors
    # refused when the check is tighter than float32 arithmetic allows, with the figures
    rc = main(["import-onnx", str(onnx_path), "-g", "ds1-photons", "--latent-dim", "16", "--tolerance", "1e-12", "-o", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 2 and "differs from ONNX Runtime" in err and not (tmp_path / "x" / "config.json").exists()
    assert main(["import-onnx", str(onnx_path), "-g", "ds1-photons", "--latent-dim", "8", "-o", str(tmp_path / "y")]) == 2
    out = tmp_path / "c"
    assert main(["compress", "--model", str(b), "--recipe", str(files["recipe"]), "--out", str(out), "--no-gate", "--no-onnx",
                 "--report-samples", "64", "--calibration-events", "128"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert all(c["not_handled_share"] == 0.0 for c in rep["coverage"])
    assert main(["generate", "--model", str(out), "--events", "1000", "--energies", "ds1", "--seed", "5", "--out", str(tmp_path / "g.root")]) == 0
    rc = main(["validate", "-r", str(files["ref"]), "-c", f"onnx={tmp_path / 'g.root'}", "--gate", str(files["gate"]), "-q", "--no-html",
               "--out", str(tmp_path / "v")])
    assert rc == 1 and (tmp_path / "v" / "metrics.json").is_file()


def test_import_onnx_concatenated_input_and_unsupported_operator(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("onnxruntime")
    from external_dcgan import ConcatMLP

    torch.manual_seed(0)
    path = _export(tmp_path, ConcatMLP(), (torch.randn(2, 9),), ["x"])
    assert main(["import-onnx", str(path), "-g", "ds1-photons", "--latent-dim", "8", "--postprocess", "abs", "-o", str(tmp_path / "b")]) == 0
    gen = load_generator(tmp_path / "b")
    assert gen.spec.input == "concat" and gen.sample(E, torch.Generator().manual_seed(0)).shape == (32, 368)
    gelu = torch.nn.Sequential(torch.nn.Linear(9, 368), torch.nn.GELU())
    path = _export(tmp_path, gelu, (torch.randn(2, 9),), ["x"])
    assert main(["import-onnx", str(path), "-g", "ds1-photons", "--latent-dim", "8", "-o", str(tmp_path / "g")]) == 2
    err = capsys.readouterr().err
    assert "is not supported" in err and "Gemm" in err
