"""Execution forms of compressed models (simcompress.compress.deploy) and their use at load time."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from simcompress.compress import compress, config_from_dict
from simcompress.compress.bundle import load_compressed, save_compressed
from simcompress.compress.deploy import Int8Linear, SparseLinear, choose_form, deploy, is_deployed, sample_rate
from simcompress.errors import BundleError, ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def gan():
    from simcompress.generators import build_generator
    from simcompress.showers.geometry import Geometry

    torch.manual_seed(0)
    return build_generator({
        "kind": "gan", "latent_dim": 8, "geometry": Geometry.from_name("ds1-photons").to_dict(),
        "energy_range_mev": [256.0, 4194304.0],
        "architecture": {"hidden": [64, 128], "negative_slope": 0.2, "batchnorm": False, "critic_hidden": [16]},
    }).eval()


def _inputs(g, n=64):
    from simcompress.compress.deploy import network_inputs

    return network_inputs(g, n, seed=4)


def test_baked_form_equals_fake_quantized_and_int8_form_uses_the_model_codes(gan) -> None:
    q = compress(gan, config_from_dict({"method": "ptq", "weights": {"bits": 8, "granularity": "per_channel"}})).model.eval()
    args = _inputs(q)
    with torch.no_grad():
        ref = q.network(*args)
        baked = deploy(q, "baked")
        assert not any(torch.nn.utils.parametrize.is_parametrized(m) for m in baked.modules())
        assert torch.equal(baked.network(*args), ref)
        int8 = deploy(q, "torch-int8")
        layers = [m for m in int8.network.modules() if isinstance(m, Int8Linear)]
        assert len(layers) == 3 and is_deployed(int8) and not is_deployed(q)
        # the stored integer codes and scales, not re-quantized ones
        fq = next(m for m in q.network.modules() if torch.nn.utils.parametrize.is_parametrized(m, "weight"))
        codes = fq.parametrizations.weight[-1].codes(fq.parametrizations.weight.original)
        w = layers[0].q.weight()
        assert torch.equal(w.int_repr().to(torch.int64), codes)
        assert torch.allclose(w.q_per_channel_scales().float(), fq.parametrizations.weight[-1].scale.reshape(-1))
        y = int8.network(*args)
        assert 0 < float((y - ref).abs().max()) <= 0.05 * float(ref.abs().max())


def test_sparse_linear_matches_dense_in_float64() -> None:
    g = torch.Generator().manual_seed(2)
    dense = nn.Linear(40, 30).double()
    with torch.no_grad():
        dense.weight.mul_((torch.rand(30, 40, generator=g) > 0.9).double())
    sp = SparseLinear(dense.weight, dense.bias)
    x = torch.randn(7, 40, generator=g, dtype=torch.float64)
    torch.testing.assert_close(sp(x), dense(x), rtol=0, atol=1e-12)


def test_choose_form_measures_and_rejects_unfaithful_forms(gan) -> None:
    q = compress(gan, config_from_dict({"method": "ptq", "weights": {"bits": 8}})).model.eval()
    ch = choose_form(q, batch=128, min_time=0.005, repeats=1)
    assert ch.form in ("baked", "torch-int8", "onnx-int8") and ch.form in ch.rates
    assert ch.max_abs_diff["baked"] == 0.0 and ch.max_abs_diff["exact"] == 0.0
    strict = choose_form(q, batch=128, min_time=0.005, repeats=1, rtol=1e-9)
    assert strict.form == "baked" and "not faithful" in strict.rejected["torch-int8"]
    pruned = compress(gan, config_from_dict({"method": "magnitude_prune", "sparsity": 0.5})).model.eval()
    pc = choose_form(pruned, batch=128, min_time=0.005, repeats=1)
    assert pc.form == "baked" and "torch-int8" in pc.rejected  # no quantized weights


def test_fixed_point_keeps_exact_emulation(gan) -> None:
    fp = compress(gan, config_from_dict({"method": "fixed_point", "input": {"width": 12}, "weight": {"width": 8},
                                         "bias": {"width": 12}, "result": {"width": 16}, "activation": {"width": 16}})).model
    ch = choose_form(fp.eval(), batch=64, min_time=0.005, repeats=1)
    assert ch.form == "exact"
    with pytest.raises(ConfigError, match="fixed-point"):
        deploy(fp, "torch-int8")
    with pytest.raises(ConfigError, match="allowed: exact, baked"):
        deploy(fp, "fastest")


def test_bundle_records_the_form_and_loads_it(gan, tmp_path: Path) -> None:
    q = compress(gan, config_from_dict({"method": "ptq", "weights": {"bits": 8}})).model.eval()
    ch = choose_form(q, batch=128, min_time=0.005, repeats=1, forms=("baked", "torch-int8"))
    ch.form = "torch-int8"  # force the integer form (measured faster or not) to test loading it
    out = save_compressed(q, gan.config_dict(), [], None, tmp_path / "b", deploy=ch.to_dict())
    assert json.loads((out / "config.json").read_text())["compression"]["deploy"]["form"] == "torch-int8"
    from simcompress.generators import build_generator

    fast = load_compressed(out, builder=build_generator)
    stored = load_compressed(out, builder=build_generator, deployed=False)
    assert is_deployed(fast) and not is_deployed(stored)
    from simcompress.generators import load_generator

    assert is_deployed(load_generator(out))  # generate and batch runs load it the same way
    e = torch.full((32,), 3e4)
    a = fast.sample(e, generator=torch.Generator().manual_seed(1))
    b = stored.sample(e, generator=torch.Generator().manual_seed(1))
    c = q.sample(e, generator=torch.Generator().manual_seed(1))
    assert torch.equal(b, c) and torch.isfinite(a).all()
    assert float((a.sum(1) / b.sum(1) - 1).abs().max()) < 0.05
    with pytest.raises(BundleError, match="execution form"):
        save_compressed(fast, gan.config_dict(), [], None, tmp_path / "again")
    with pytest.raises(BundleError, match="deploy form 'turbo'"):
        save_compressed(q, gan.config_dict(), [], None, tmp_path / "bad", deploy={"form": "turbo"})
    assert not (tmp_path / "again").exists() and not (tmp_path / "bad").exists()
    rates = sample_rate({"fq": q, "fast": fast}, 64, min_time=0.005, repeats=1)
    assert rates["fq"] > 0 and rates["fast"] > 0


def test_cli_compress_reports_and_records_the_execution_form(tmp_path: Path, gan) -> None:
    from simcompress.cli import main
    from simcompress.generators import save_generator

    model = save_generator(gan, tmp_path / "gan")
    recipe = Path(__file__).resolve().parents[2] / "configs" / "compress" / "int8-ptq.yaml"
    out = tmp_path / "c"
    rc = main(["compress", "--model", str(model), "--recipe", str(recipe), "--out", str(out), "--no-gate", "--no-onnx",
               "--report-samples", "64", "--calibration-events", "128", "--deploy-batch", "256", "--measure-seconds", "0.01"])
    assert rc == 0
    rep = json.loads((out / "report.json").read_text())
    d = rep["deploy"]
    assert d["form"] in d["rates"] and d["max_abs_diff_vs_fake_quantized"] == d["max_abs_diff"][d["form"]]
    assert rep["compressed"]["throughput"] == d["sample_showers_per_s"]["compressed"]
    assert rep["deployable_form"][0].startswith(f"execution form {d['form']!r}")
    assert json.loads((out / "config.json").read_text())["compression"]["deploy"]["form"] == d["form"]
    assert "execution form" in (out / "report.md").read_text()



def test_generate_runs_the_recorded_int8_form(tmp_path: Path, gan, monkeypatch: pytest.MonkeyPatch) -> None:
    """simcompress generate loads a bundle whose recorded form is torch-int8 in that form."""
    import uproot

    from simcompress.cli import main
    from simcompress.compress import bundle

    q = compress(gan, config_from_dict({"method": "ptq", "weights": {"bits": 8}})).model.eval()
    ch = choose_form(q, batch=64, min_time=0.005, repeats=1, forms=("baked", "torch-int8"))
    ch.form = "torch-int8"
    out = save_compressed(q, gan.config_dict(), [], None, tmp_path / "b", deploy=ch.to_dict())
    loaded: list[object] = []
    real = bundle.load_compressed

    def spy(*a, **kw):
        m = real(*a, **kw)
        loaded.append(m)
        return m

    monkeypatch.setattr(bundle, "load_compressed", spy)
    one = tmp_path / "one.root"
    assert main(["generate", "--model", str(out), "--events", "300", "--energies", "log-uniform:1e3,1e5", "--seed", "3",
                 "--no-progress", "--out", str(one)]) == 0
    assert loaded and all(is_deployed(m) for m in loaded)
    assert any(isinstance(x, Int8Linear) for m in loaded for x in m.modules())
    with uproot.open(one) as f:
        a = f["showers"]["voxels"].array(library="np")
    assert a.shape == (300, 368) and np.isfinite(a).all() and (a.sum(1) > 0).all()


def test_flow_keeps_its_density_direction() -> None:
    """A quantized flow never runs as a whole-network ONNX form (log_prob/transform would be lost)."""
    from simcompress.generators import build_generator
    from simcompress.showers.geometry import Geometry

    torch.manual_seed(0)
    geo = {**Geometry.from_name("ds1-photons").to_dict(), "name": "toy", "layers": [
        {"id": 0, "r_edges_mm": [0, 5, 20, 100], "n_alpha": 1, "depth_x0": [0.0, 4.0]},
        {"id": 1, "r_edges_mm": [0, 10, 40, 200], "n_alpha": 2, "depth_x0": [4.0, 45.0]}]}
    flow = build_generator({"kind": "flow", "geometry": geo, "energy_range_mev": [1e3, 1e5],
                            "architecture": {"n_blocks": 2, "hidden": [16], "n_groups": 4}}).eval()
    q = compress(flow, config_from_dict({"method": "ptq", "weights": {"bits": 8}})).model.eval()
    ch = choose_form(q, batch=64, min_time=0.005, repeats=1)
    assert ch.form != "onnx-int8" and "log_prob" in ch.rejected["onnx-int8"]
    with pytest.raises(ConfigError, match="also serves"):
        deploy(q, "onnx-int8")
    fast = deploy(q, ch.form, sparse_layers=ch.sparse_layers)
    e = torch.full((8,), 1e4)
    y = fast.sample(e, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(fast.log_prob(y.clamp_min(1e-3), e)).all()


@pytest.mark.parametrize(("bits", "signed"), [(4, True), (3, True), (4, False)])
def test_sub_byte_codes_are_stored_two_per_byte_and_load_exactly(bits: int, signed: bool, tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(33, 65), nn.ReLU(), nn.Linear(65, 7)).double()  # odd sizes: a half-filled last byte
    spec = {"bits": bits, "symmetric": signed, "granularity": "per_channel"}
    q = compress(model, config_from_dict({"method": "ptq", "weights": spec})).model
    eight = compress(model, config_from_dict({"method": "ptq", "weights": {**spec, "bits": 8}})).model
    a = save_compressed(q, {}, [], None, tmp_path / "sub")
    b = save_compressed(eight, {}, [], None, tmp_path / "eight")
    cfg = json.loads((a / "config.json").read_text())["compression"]["packed_quantized"]
    assert cfg and all(v.get("nibbles") for v in cfg.values() if v["kind"] == "codes")
    from safetensors.torch import load_file

    w_sub, w_8 = load_file(str(a / "weights.safetensors")), load_file(str(b / "weights.safetensors"))
    key = "0.parametrizations.weight.original"
    assert w_sub[key].numel() == (33 * 65 + 1) // 2 and w_8[key].numel() == 33 * 65
    back = load_compressed(a, builder=lambda _c: nn.Sequential(nn.Linear(33, 65), nn.ReLU(), nn.Linear(65, 7)).double())
    x = torch.randn(9, 33, generator=g, dtype=torch.float64)
    assert torch.equal(back(x), q(x))  # float64: bit-identical after the round trip


def test_sample_rate_times_a_slow_model_by_its_warm_up_call():
    """A model whose one call takes longer than ``slow_s`` is called once, not 1 + repeats times."""
    import time

    from simcompress.compress.accounting import sample_rate
    from simcompress.generators import GANGenerator
    from simcompress.showers import Geometry

    calls = {"slow": 0, "fast": 0}

    class Counted(GANGenerator):
        def __init__(self, name: str, delay: float) -> None:
            super().__init__(Geometry.from_name("ds1-photons"), latent_dim=4, hidden=[8])
            object.__setattr__(self, "_name", name)
            object.__setattr__(self, "_delay", delay)

        def sample(self, *a, **k):  # type: ignore[override]
            calls[self._name] += 1
            time.sleep(self._delay)
            return super().sample(*a, **k)

    rates = sample_rate({"slow": Counted("slow", 0.05), "fast": Counted("fast", 0.0)}, 16, min_time=0.001, repeats=3, slow_s=0.04)
    assert calls["slow"] == 1 and calls["fast"] >= 4
    assert 0 < rates["slow"] <= 16 / 0.05
