"""The flow's rational-quadratic spline transform (``transform: rqs``): exact density, inverse,
autoregressive structure, training, bundles."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from simcompress.errors import ConfigError
from simcompress.generators import FlowGenerator, load_generator, save_generator
from simcompress.generators.flow import MADE, RQSBlock
from simcompress.generators.objectives import _flow_setup, _flow_step
from simcompress.generators.train import FlowTrainConfig


def _rqs_flow(geometry, **kw) -> FlowGenerator:
    torch.manual_seed(0)
    arch = {"n_blocks": 2, "hidden": [32], "n_groups": 8, "transform": "rqs", "n_bins": 4, "tail_bound": 3.0, **kw}
    return FlowGenerator(geometry, **arch)


def _perturb(gen: FlowGenerator, scale: float = 0.3) -> None:
    with torch.no_grad():
        for i, p in enumerate(gen.network.parameters()):
            p.add_(scale * torch.randn(p.shape, generator=torch.Generator().manual_seed(i), dtype=p.dtype))


def test_zero_network_is_identity(geometry):
    gen = _rqs_flow(geometry)  # output layers start at zero: every spline is the identity
    y = torch.randn(16, gen.latent_dim) * 4
    z, logdet = gen.network.transform(y, gen.condition(torch.full((16,), 1e3)))
    expected = y
    for block in gen.network.blocks:  # only the blocks' permutations remain
        expected = expected[:, block.permutation]
    assert torch.allclose(z, expected, atol=1e-5)
    assert logdet.abs().max().item() < 1e-4


def test_inverse_and_exact_log_determinant(geometry):
    gen = _rqs_flow(geometry).double()
    _perturb(gen)
    c = gen.condition(torch.full((5,), 2e4, dtype=torch.float64))
    # values inside and outside [-tail_bound, tail_bound] (identity outside)
    z = torch.randn(5, gen.latent_dim, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 3
    with torch.no_grad():
        y = gen.network(z, c)
        z_back, logdet = gen.network.transform(y, c)
    assert (z_back - z).abs().max().item() < 1e-8
    assert (y.abs() > 3).any() and (y.abs() < 3).any()
    # log|det dz/dy| of one event against the full autograd Jacobian (373 x 373)
    jac = torch.autograd.functional.jacobian(
        lambda v: gen.network.transform(v.unsqueeze(0), c[:1])[0][0], y[0], vectorize=True
    )
    sign, logabs = torch.linalg.slogdet(jac)
    assert sign.item() != 0.0  # permutations make the sign +-1
    assert logabs.item() == pytest.approx(logdet[0].item(), abs=1e-6)


def test_made_parameters_are_autoregressive(geometry):
    made = MADE(40, 1, [48], n_groups=6, n_leading=3, n_params=11)
    with torch.no_grad():
        for p in made.parameters():
            p.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
    x = torch.randn(3, 40, requires_grad=True)
    out = made.params(x, torch.zeros(3, 1))
    assert out.shape == (3, 11, 40)
    for d in (0, 2, 3, 20, 39):
        (grad,) = torch.autograd.grad(out[:, :, d].sum(), x, retain_graph=True)
        depends = grad.abs().sum(0) > 0
        assert not depends[made.degrees >= made.degrees[d]].any()
        assert depends[made.degrees < made.degrees[d]].any() or made.degrees[d] == 0
    with pytest.raises(ValueError, match="affine parameters"):
        made(x, torch.zeros(3, 1))
    with pytest.raises(ValueError, match="23 parameters per coordinate, got 11"):
        RQSBlock(made, torch.arange(40), n_bins=8, bound=3.0)


def test_training_steps_reduce_nll(geometry, tiny_ref):
    gen = _rqs_flow(geometry, hidden=[64])
    cfg = FlowTrainConfig(batch_size=128, lr=3e-3)
    st = _flow_setup(gen, tiny_ref, torch.device("cpu"), 0, set_std=True)
    opt = torch.optim.Adam(gen.network.parameters(), lr=cfg.lr)
    rng = torch.Generator().manual_seed(0)
    losses = [_flow_step(gen, st, cfg, opt, rng, torch.device("cpu"))["loss"] for _ in range(25)]
    assert np.all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.05


def test_bundle_round_trip_samples_bit_identically(geometry, tmp_path):
    gen = _rqs_flow(geometry)
    _perturb(gen, 0.05)
    gen.eval()
    save_generator(gen, tmp_path / "b")
    cfg = json.loads((tmp_path / "b" / "config.json").read_text())
    assert cfg["architecture"]["transform"] == "rqs" and cfg["architecture"]["n_bins"] == 4
    back = load_generator(tmp_path / "b")
    e = torch.tensor([300.0, 5e3, 1e6])
    a = gen.sample(e, torch.Generator().manual_seed(7))
    b = back.sample(e, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    assert (a >= 0).all() and torch.isfinite(a).all()


def test_unknown_transform_is_one_line_error(geometry):
    with pytest.raises(ConfigError, match="transform") as err:
        FlowGenerator.from_config(
            {"kind": "flow", "energy_range_mev": [256.0, 4194304.0], "architecture": {"transform": "spline"}}, geometry, "cfg.json"
        )
    assert "\n" not in str(err.value) and "cfg.json" in str(err.value)


def test_spline_blocks_refuse_a_made_with_the_wrong_parameter_count() -> None:
    from simcompress.distill.students import IAFRQSBlock

    made = MADE(12, 1, [16], n_groups=3, n_params=8)  # 4 bins need 3 * 4 - 1 = 11
    perm = torch.arange(12)
    for block in (RQSBlock, IAFRQSBlock):
        with pytest.raises(ValueError, match=rf"^{block.__name__} with 4 bins needs a MADE with 11 parameters per coordinate, got 8$"):
            block(made, perm, 4, 6.0)
    ok = RQSBlock(MADE(12, 1, [16], n_groups=3, n_params=11), perm, 4, 6.0)
    assert (ok.n_bins, ok.bound) == (4, 6.0) and isinstance(ok.n_bins, int) and isinstance(ok.bound, float)


def test_iaf_student_transform_defaults_to_affine_and_keeps_the_teachers_order(geometry):
    from simcompress.distill.students import IAFGenerator, IAFRQSBlock

    teacher = _rqs_flow(geometry)
    affine = IAFGenerator.like(teacher, hidden=[16])
    spline = IAFGenerator.like(teacher, hidden=[16], transform="rqs")
    assert affine.arch.transform == "affine" and spline.arch.transform == "rqs"
    assert all(isinstance(b, IAFRQSBlock) for b in spline.network.blocks)
    assert spline.arch.n_bins == teacher.arch.n_bins and spline.arch.tail_bound == teacher.arch.tail_bound
    for t_blk, a_blk, s_blk in zip(teacher.network.blocks, affine.network.blocks, spline.network.blocks, strict=True):
        assert torch.equal(t_blk.permutation, a_blk.permutation)
        assert torch.equal(t_blk.permutation, s_blk.permutation)


def test_param_major_spline_equals_zukos_constructor():
    from zuko.transforms import MonotonicRQSTransform

    from simcompress.generators.flow import rqs_spline

    g = torch.Generator().manual_seed(0)
    k, bound = 4, 6.0
    p = 3 * torch.randn(50, 3 * k - 1, 37, generator=g, dtype=torch.float64)
    ours = rqs_spline(p, k, bound)
    q = p.transpose(1, 2)
    ref = MonotonicRQSTransform(q[..., :k], q[..., k : 2 * k], q[..., 2 * k :], bound=bound)
    for name in ("horizontal", "vertical", "derivatives"):
        assert torch.allclose(getattr(ours, name), getattr(ref, name), atol=1e-12, rtol=0), name
    x = 8 * torch.randn(50, 37, generator=g, dtype=torch.float64)  # inside and outside the bound
    assert torch.allclose(ours(x), ref(x), atol=1e-12)
    assert torch.allclose(ours.inv(x), ref.inv(x), atol=1e-12)
    assert torch.allclose(ours.call_and_ladj(x)[1], ref.call_and_ladj(x)[1], atol=1e-12)


@pytest.mark.parametrize("transform", ["affine", "rqs"])
def test_group_restricted_sampling_equals_the_full_output_layer(geometry, transform, monkeypatch):
    from simcompress.generators.flow import MADE

    gen = _rqs_flow(geometry, transform=transform)
    _perturb(gen, 0.1)
    gen.eval()
    e = torch.tensor([300.0, 5e3, 1e6] * 4)
    z = torch.randn(12, gen.latent_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        c = gen.condition(e)
        fast = gen.network(z, c)
        assert all(b.made.group_heads() is not None for b in gen.network.blocks)
        monkeypatch.setattr(MADE, "group_heads", lambda self: None)  # the full output layer every pass
        full = gen.network(z, c)
    assert torch.allclose(fast, full, atol=1e-4, rtol=1e-5)
    assert (fast - full).abs().max().item() < 1e-3


def test_group_restriction_follows_parametrisations_and_refuses_hooked_layers(geometry):
    from torch.nn.utils import parametrize

    from simcompress.compress.parametrizations import Mask

    gen = _rqs_flow(geometry)
    _perturb(gen, 0.1)
    gen.eval()
    e = torch.full((8,), 2e3)
    z = torch.randn(8, gen.latent_dim, generator=torch.Generator().manual_seed(2))
    out = gen.network.blocks[0].made.out
    with torch.no_grad():
        before = gen.network(z, gen.condition(e))
        # a pruned output layer: the restricted rows are those of the pruned weight
        mask = torch.rand(out.weight.shape, generator=torch.Generator().manual_seed(3)) > 0.5
        parametrize.register_parametrization(out, "weight", Mask(mask))
        pruned = gen.network(z, gen.condition(e))
        made = gen.network.blocks[0].made
        heads = made.group_heads()
        assert heads is not None
        idx, w, _ = heads[1]
        expected = (mask * out.parametrizations.weight.original * out.mask).view(made.n_params, made.n_features, -1)
        assert torch.equal(w, expected[:, idx].reshape(w.shape))
        assert not torch.allclose(before, pruned)
        # an activation quantiser (forward hook) on the output layer: only the full layer is faithful
        handle = out.register_forward_hook(lambda _m, _a, y: y + 0.05)
        assert gen.network.blocks[0].made.group_heads() is None
        hooked = gen.network(z, gen.condition(e))
        handle.remove()
    assert not torch.allclose(hooked, pruned)


@pytest.mark.parametrize("standardise", ["global", "energy"])
def test_range_scale_keeps_every_standardised_value_inside_the_bound(geometry, tiny_ref, standardise):
    x, e = torch.as_tensor(tiny_ref.showers), torch.as_tensor(tiny_ref.incident_energy)
    widths = {}
    for rs in (None, 4.0):
        # 15 knots sit exactly on the 15 ds1 energies (between knots the tables are interpolated)
        gen = _rqs_flow(geometry, standardise=standardise, n_calib=15, range_scale=rs)
        gen.set_standardisation(x, e, torch.Generator().manual_seed(0))
        y = gen.preprocess(x, e, torch.Generator().manual_seed(0), dequantise=True)
        widths[rs] = gen.feat_std.clone()
        if rs is None:
            assert y.abs().max().item() > 6.0  # rare hits of mostly-empty voxels, far out
        else:
            assert y.abs().max().item() <= 4.0 + 1e-4
    assert (widths[4.0] >= widths[None]).all() and (widths[4.0] > widths[None]).any()


def test_postprocess_report_counts_the_repairs(geometry):
    gen = _rqs_flow(geometry)
    gen.eval()
    rep = gen.postprocess_report(torch.full((50,), 1e4), torch.Generator().manual_seed(0))
    assert rep["n_showers"] == 50
    assert 0.0 <= rep["clipped_below_0"] <= 1.0 and rep["clipped_above_1"] == 0.0
    # an untrained flow's fractions do not sum to one: the report shows how far off they are
    assert rep["layer_sum_q01"] <= rep["layer_sum_median"] <= rep["layer_sum_q99"]
    assert rep["layer_sum_outside_0.9_1.1"] > 0.5


def test_shipped_flow_reproduces_the_shower_shape():
    """The shipped spline flow's showers have the reference's widths and centres (the affine flow
    they replaced were about four times too wide, separation power 0.48-0.60)."""
    from simcompress.generators.fidelity import compare_response
    from simcompress.showers import ShowerSet
    from simcompress.showers.reference import simulate
    from simcompress.validation.features import compute_features
    from simcompress.validation.metrics import feature_binning, histogram_separation_power

    torch.set_num_threads(1)
    ref = simulate("ds1-photons", 3000, energies="ds1", seed=4, progress=False)
    gen = load_generator("ds1-photons-flow")
    assert gen.arch.transform == "rqs"
    x = gen.sample(torch.as_tensor(ref.incident_energy), torch.Generator().manual_seed(2)).numpy()
    fr = compute_features(ref)
    fg = compute_features(ShowerSet(ref.incident_energy, x, ref.geometry, {}))
    for name in ("width_r_1", "width_x_1", "width_y_1", "width_r_2", "EC_r_1"):
        ratio = np.mean(fg[name]) / np.mean(fr[name])
        assert 0.93 < ratio < 1.07, (name, ratio)  # the affine flow: about 4
        a, b = np.asarray(fr[name], np.float64), np.asarray(fg[name], np.float64)
        # 3,000 vs 3,000 showers: two reference samples give about 0.005-0.01 here
        assert histogram_separation_power(a, b, feature_binning(a, [b])) < 0.03, name
    fid = compare_response(ref.incident_energy, ref.showers, ref.incident_energy, x, ref.geometry.layer_offsets)
    # 200 showers per energy: statistical error 2.2 % at 256 MeV; at 100k the worst is 1.05 % (256 MeV)
    assert fid["max_abs_mean_dev_pct"] < 5.0
