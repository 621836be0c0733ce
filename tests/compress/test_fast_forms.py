"""The sampling path outside the network is cheap and computes the same numbers (GAN postprocess
fast path, bitwise), and ``sample_split`` reports where ``sample()`` spends its time."""

from __future__ import annotations

import math

import pytest
import torch

from simcompress.compress.accounting import SPLIT_STAGES, sample_split
from simcompress.generators import GANGenerator
from simcompress.generators.gan import _threshold_
from simcompress.showers import Geometry

pytestmark = pytest.mark.usefixtures("one_thread")


def _gan(dtype: torch.dtype = torch.float32, **arch) -> GANGenerator:
    torch.manual_seed(0)
    g = GANGenerator(Geometry.from_name("ds1-photons"), latent_dim=8, hidden=[16], **arch).eval()
    if arch.get("response_mode", "calibrated") == "calibrated":
        with torch.no_grad():  # a non-trivial response table
            g.resp_mean.copy_(torch.linspace(-0.3, 0.0, g.n_calib))
            g.resp_std.copy_(torch.linspace(0.2, 0.01, g.n_calib))
    return g.to(dtype)


def _general(g: GANGenerator, y: torch.Tensor, e: torch.Tensor, threshold: bool = True) -> torch.Tensor:
    """The differentiable (training) path of postprocess, as the reference."""
    with torch.enable_grad():
        yy = y.clone().requires_grad_(True)
        return g.postprocess(yy, e, threshold=threshold).detach()


def _inputs(g: GANGenerator, n: int = 257, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    dtype = g.onehot.dtype
    e = torch.exp(torch.empty(n, dtype=torch.float64).uniform_(math.log(300.0), math.log(4e6), generator=gen)).to(dtype)
    y = (3 * torch.randn(n, 1 + g.geometry.n_layers + g.geometry.n_voxels, generator=gen, dtype=torch.float64)).to(dtype)
    return y, e


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("arch", [{"threshold_mev": 0.5}, {"threshold_mev": 0.0}, {"response_mode": "sigmoid", "threshold_mev": 2.0}])
def test_fast_postprocess_is_bitwise_the_general_path(dtype: torch.dtype, arch: dict) -> None:
    g = _gan(dtype, **arch)
    y, e = _inputs(g)
    y[5, 40] = math.nan  # a broken network output stays visible (NaN kept, not thresholded away)
    y[9, 0] = math.inf
    y_before = y.clone()
    with torch.no_grad():
        fast = g.postprocess(y, e)
        fast_raw = g.postprocess(y, e, threshold=False)
    ref, ref_raw = _general(g, y, e), _general(g, y, e, threshold=False)
    assert fast.dtype == dtype and fast.shape == (257, 368)
    torch.testing.assert_close(y, y_before, rtol=0, atol=0, equal_nan=True)  # the input is not overwritten
    assert torch.equal(fast.isnan(), ref.isnan()) and fast.isnan().any()
    assert torch.equal(fast.nan_to_num(-1.0), ref.nan_to_num(-1.0))
    assert torch.equal(fast_raw.nan_to_num(-1.0), ref_raw.nan_to_num(-1.0))
    if g.threshold_mev > 0:
        below = (ref_raw < g.threshold_mev) & (ref_raw > 0)
        assert below.float().mean() > 0.1  # the threshold really removes voxels here
        assert (fast[below] == 0).all()


def test_threshold_keeps_the_boundary_and_nan_like_torch_where() -> None:
    for t in (0.7, 0.001, 3.3):  # float32(t) above and below t: the test runs in the tensor's dtype
        t32 = torch.tensor(t, dtype=torch.float32)
        x = torch.stack([torch.nextafter(t32, torch.tensor(0.0)), t32, torch.nextafter(t32, torch.tensor(9.0)),
                         torch.tensor(0.0), torch.tensor(5.0)])
        ref = torch.where(x < t, torch.zeros_like(x), x)
        got = x.clone()
        _threshold_(got, t)
        assert torch.equal(got, ref) and got[1] == t32 and got[0] == 0
        xn = torch.cat([x, torch.tensor([math.nan])])
        _threshold_(xn, t)
        assert xn[-1].isnan() and torch.equal(xn[:-1], ref)


def test_training_path_still_differentiable() -> None:
    g = _gan(threshold_mev=0.5)
    y, e = _inputs(g, n=16)
    y.requires_grad_(True)
    g.postprocess(y, e, threshold=False).sum().backward()
    assert y.grad is not None and torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0


def test_sample_is_the_composition_of_its_parts() -> None:
    """sample() draws the noise first, then conditions, runs the network and postprocesses (RNG call order pinned)."""
    g = _gan(threshold_mev=0.5)
    e = torch.tensor([300.0, 1e4, 2e6, 5e5])
    s = g.sample(e, torch.Generator().manual_seed(11))
    gen = torch.Generator().manual_seed(11)
    with torch.no_grad():
        z = g.sample_latent(4, gen)
        ref = _general(g, g.network(z, g.condition(e)), e)
    assert torch.equal(s, ref)
    two = g.sample(e, torch.Generator().manual_seed(11), batch_size=2)  # two batches: the noise of each in turn
    gen = torch.Generator().manual_seed(11)
    with torch.no_grad():
        parts = [_general(g, g.network(g.sample_latent(2, gen), g.condition(e[i:i + 2])), e[i:i + 2]) for i in (0, 2)]
    assert torch.equal(two, torch.cat(parts))


def test_sample_timings_split_the_call() -> None:
    g = _gan(threshold_mev=0.5)
    t: dict[str, float] = {}
    e = torch.full((10,), 5e3)
    s = g.sample(e, torch.Generator().manual_seed(1), batch_size=4, timings=t)  # three batches, summed
    assert set(t) == {"sample", "latent_condition", "network", "postprocess"} and all(v > 0 for v in t.values())
    assert t["latent_condition"] + t["network"] + t["postprocess"] <= t["sample"]
    assert torch.equal(s, g.sample(e, torch.Generator().manual_seed(1), batch_size=4))  # timing changes nothing


def test_sample_split_reports_every_stage() -> None:
    g = _gan(threshold_mev=0.5)
    wide = GANGenerator(Geometry.from_name("ds1-photons"), latent_dim=8, hidden=[256, 256]).eval()
    split = sample_split({"small": g, "wide": wide}, 512, repeats=2)
    for s in split.values():
        assert set(s) == {"sample", *SPLIT_STAGES, "network_share", "showers_per_s"}
        assert all(s[k] > 0 for k in ("sample", "latent_condition", "network", "postprocess"))
        assert s["other"] == pytest.approx(s["sample"] - s["latent_condition"] - s["network"] - s["postprocess"])
        assert s["other"] >= 0  # the parts of one call: they add up to at most that call
        assert s["network_share"] == pytest.approx(s["network"] / s["sample"])
        assert s["showers_per_s"] == pytest.approx(512 / s["sample"])
    # the same postprocess and noise, a network with ~40x the multiply-adds: its share is larger
    assert split["wide"]["network"] > split["small"]["network"]
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        sample_split({"small": g}, 16, repeats=0)


def test_batch_runs_load_the_recorded_form(tmp_path) -> None:
    """The batch engine's workers load a compressed bundle in its recorded execution form (as generate does)."""
    from simcompress.batch._backend import get_backend
    from simcompress.compress import compress, config_from_dict
    from simcompress.compress.bundle import save_compressed
    from simcompress.compress.deploy import Int8Linear, choose_form, is_deployed

    g = _gan(threshold_mev=0.5)
    q = compress(g, config_from_dict({"method": "ptq", "weights": {"bits": 8}})).model.eval()
    ch = choose_form(q, batch=64, min_time=0.005, repeats=1, forms=("baked", "torch-int8"))
    ch.form = "torch-int8"  # force the integer form, measured faster or not
    path = save_compressed(q, g.config_dict(), [], None, tmp_path / "b", deploy=ch.to_dict())
    model = get_backend().load_model(str(path))
    assert is_deployed(model) and any(isinstance(m, Int8Linear) for m in model.modules())
    e = torch.full((16,), 2e4)
    a = model.sample(e, torch.Generator().manual_seed(0))
    b = q.sample(e, torch.Generator().manual_seed(0))
    assert float((a.sum(1) / b.sum(1) - 1).abs().max()) < 0.05


def test_deployed_input_quantizers_compute_the_same_values_in_place() -> None:
    """PTQ with int8 layer inputs: the baked form (in-place input quantizers) is bit-identical to the
    fake-quantized model; the int8 form runs the same fast quantizers in front of its integer kernels."""
    from simcompress.compress import compress, config_from_dict
    from simcompress.compress.deploy import FastActQuant, choose_form, deploy, network_inputs
    from simcompress.compress.parametrizations import ActQuant, fake_quantize

    g = _gan(threshold_mev=0.5)
    z, _ = network_inputs(g, 512, seed=1)
    cfg = {"method": "ptq", "weights": {"bits": 8, "granularity": "per_channel"},
           "activations": {"bits": 8, "symmetric": False, "calibration": "percentile", "percentile": 99.0}}
    q = compress(g, config_from_dict(cfg), calibration=lambda m: m.network(z, m.condition(torch.full((512,), 3e4)))).model.eval()
    assert sum(isinstance(m, ActQuant) for m in q.network.modules()) == 2
    args = network_inputs(q, 300, seed=5)
    with torch.no_grad():
        ref = q.network(*args)
        baked = deploy(q, "baked")
        fast = [m for m in baked.network.modules() if isinstance(m, FastActQuant)]
        assert len(fast) == 2 and not any(isinstance(m, ActQuant) for m in baked.network.modules())
        assert torch.equal(baked.network(*args), ref)
        int8 = deploy(q, "torch-int8")
        assert sum(isinstance(m, FastActQuant) for m in int8.network.modules()) == 2
        assert float((int8.network(*args) - ref).abs().max()) <= 0.05 * float(ref.abs().max())
        # the quantizer alone, float64, values straddling the clamp range and rounding ties
        aq = ActQuant(0.25, 3.0, 8, False).double()
        x = torch.cat([torch.linspace(-5, 70, 3001, dtype=torch.float64), torch.tensor([0.125, 0.375, -0.625], dtype=torch.float64)])
        assert torch.equal(FastActQuant(aq)(x), fake_quantize(x, aq.scale, aq.zero_point, 8, False))
    ch = choose_form(q, batch=128, min_time=0.005, repeats=1, forms=("exact", "baked"))
    assert ch.max_abs_diff["baked"] == 0.0
