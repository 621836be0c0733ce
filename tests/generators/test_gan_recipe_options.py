"""GAN recipe options of the shape fine-tuning: ``init_from``, ``adversarial_weight: 0`` and
``recalibrate_response``."""

from __future__ import annotations

import pytest
import torch

from simcompress.errors import ConfigError
from simcompress.generators.bundle import load_generator, save_generator
from simcompress.generators.gan import GANGenerator
from simcompress.generators.objectives import GANObjective
from simcompress.generators.recipes import GANTrainConfig, load_train_config
from simcompress.generators.train import _warm_start, train_generator


def _small(geometry, **kw):
    torch.manual_seed(0)
    return GANGenerator(geometry, latent_dim=8, hidden=[32], critic_hidden=[16], critic_features="shape", **kw)


def test_moment_only_step_runs_no_critic_and_lowers_the_moment_loss(geometry, tiny_ref):
    gen = _small(geometry, alpha_symmetry="rotate")
    cfg = GANTrainConfig(batch_size=256, adversarial_weight=0.0, lr_generator=3e-3)
    obj = GANObjective(gen, tiny_ref, cfg, torch.device("cpu"), fresh=True)
    critic_before = {k: v.clone() for k, v in gen.critic.state_dict().items()}
    rng = torch.Generator().manual_seed(0)
    losses = [obj.step(rng)["moment_loss"] for _ in range(40)]
    assert all(torch.equal(critic_before[k], v) for k, v in gen.critic.state_dict().items())  # no critic step
    assert "w_dist" not in obj.step(rng)
    assert sum(losses[-5:]) / 5 < 0.9 * sum(losses[:5]) / 5  # 4.8 -> 4.0 here


def test_no_loss_at_all_is_refused(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("kind: gan\nadversarial_weight: 0\nmoment_weight: 0\n")
    with pytest.raises(ConfigError, match="both 0"):
        load_train_config("gan", p)


def test_init_from_loads_the_bundle_and_refuses_what_does_not_fit(geometry, tmp_path):
    src = _small(geometry)
    src.resp_mean.fill_(-0.05)
    save_generator(src, tmp_path / "src")
    dst = _small(geometry, alpha_symmetry="rotate_reflect")  # a sampling-only key may differ
    torch.manual_seed(5)
    for p in dst.parameters():
        torch.nn.init.normal_(p)
    info = _warm_start(dst, str(tmp_path / "src"))
    assert info["bundle_hash"] == load_generator(tmp_path / "src").bundle_hash
    for (k, a), b in zip(src.state_dict().items(), dst.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    other = GANGenerator(geometry, latent_dim=8, hidden=[64], critic_hidden=[16], critic_features="shape")
    with pytest.raises(ConfigError, match=r"init_from: '.*src' does not fit this recipe's model \(size mismatch"):
        _warm_start(other, str(tmp_path / "src"))


def test_recalibrate_response_brings_every_knot_to_the_reference(geometry, tiny_ref):
    gen = _small(geometry)
    gen.calibrate(torch.as_tensor(tiny_ref.showers), torch.as_tensor(tiny_ref.incident_energy))
    gen.resp_mean.add_(torch.linspace(-0.08, 0.05, gen.n_calib))  # a per-energy bias, up to 8 %
    std_before = gen.resp_std.clone()
    net_before = {k: v.clone() for k, v in gen.network.state_dict().items()}
    rep = gen.recalibrate_response(
        torch.as_tensor(tiny_ref.showers), torch.as_tensor(tiny_ref.incident_energy), torch.Generator().manual_seed(1)
    )
    before = [abs(v) for v in rep["mean_response_dev_pct_before"] if v is not None]
    after = [abs(v) for v in rep["mean_response_dev_pct_after"] if v is not None]
    assert rep["knots_with_data"] == 15 and len(rep["knot_energies_mev"]) == 15
    assert max(before) > 4.0
    assert max(after) < 0.05  # the same noise each iteration: converges to the reference's means
    assert torch.equal(gen.resp_std, std_before)
    assert all(torch.equal(net_before[k], v) for k, v in gen.network.state_dict().items())


def test_train_with_init_from_records_it_and_recalibrates(geometry, tiny_ref, tmp_path):
    src = _small(geometry)
    src.calibrate(torch.as_tensor(tiny_ref.showers), torch.as_tensor(tiny_ref.incident_energy))
    save_generator(src, tmp_path / "src")
    cfg = GANTrainConfig.model_validate({
        "init_from": str(tmp_path / "src"), "steps": 3, "batch_size": 64, "adversarial_weight": 0.0,
        "recalibrate_response": True, "monitor_events": 100, "monitor_every": 3, "checkpoint_every": 3,
        "model": {"latent_dim": 8, "hidden": [32], "critic_hidden": [16], "critic_features": "shape", "alpha_symmetry": "rotate"},
    })
    train_generator(tiny_ref, cfg, tmp_path / "out", progress=False)
    import json

    card = json.loads((tmp_path / "out" / "card.json").read_text())
    assert card["training"]["init_from"]["bundle"] == str(tmp_path / "src")
    rec = card["training"]["response_recalibration"]
    assert max(abs(v) for v in rec["mean_response_dev_pct_after"] if v is not None) < 0.05
    assert load_generator(tmp_path / "out").alpha_symmetry == "rotate"


def test_moment_quantiles_see_the_shape_that_mean_and_spread_miss():
    """Same mean and spread per bin, different distribution: only the quantile term sees it."""
    from simcompress.generators.objectives import _MomentTargets

    g = torch.Generator().manual_seed(0)
    n = 6000
    bins = torch.arange(n) % 3
    ref = torch.randn(n, 2, generator=g)
    same = torch.randn(n, 2, generator=g)
    # uniform with the normal's mean 0 and spread 1
    flat = (torch.rand(n, 2, generator=g) - 0.5) * (12**0.5)
    plain = _MomentTargets(ref, bins, 3, [0, 1])
    quant = _MomentTargets(ref, bins, 3, [0, 1], n_quantiles=16)
    assert plain.loss(flat, bins) < 0.01 and plain.loss(same, bins) < 0.01
    assert quant.loss(same, bins) < 0.02
    assert quant.loss(flat, bins) > 3 * quant.loss(same, bins)
    x = flat.clone().requires_grad_(True)
    quant.loss(x, bins).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_soft_threshold_keeps_above_drops_below_and_has_finite_gradients():
    from simcompress.generators.gan import soft_threshold

    e = torch.tensor([[0.0, 0.1, 1.0, 10.0, 1000.0]], requires_grad=True)
    out = soft_threshold(e, 1.0)
    kept = (out / e.clamp_min(1e-30)).detach()[0]
    assert out[0, 0] == 0.0
    assert kept[1] < 1e-4 and abs(float(kept[2]) - 0.5) < 1e-6 and kept[3] > 0.9999 and kept[4] >= 1 - 1e-6
    out.sum().backward()
    assert torch.isfinite(e.grad).all()
    assert soft_threshold(e, 0.0) is e  # 0: off


def test_feature_threshold_makes_sub_threshold_voxels_invisible_to_the_moment_loss(geometry, tiny_ref):
    """Sub-MeV energy in the empty voxels (what validation's 1 MeV threshold removes) changes the
    unthresholded features; with feature_threshold_mev: 1 the moment loss no longer sees it."""
    from simcompress.generators.objectives import _energy_bin

    gen = _small(geometry)
    x = torch.as_tensor(tiny_ref.showers, dtype=torch.float32)
    e = torch.as_tensor(tiny_ref.incident_energy, dtype=torch.float32)
    lit = (x @ gen.onehot) @ gen.onehot.T > 0  # voxels of layers with energy
    haze = torch.where((x == 0) & lit, torch.full_like(x, 0.02), x)  # 20 keV in their empty voxels
    bins = _energy_bin(gen.condition(e), 15)
    losses = {}
    for thr in (0.0, 1.0):
        cfg = GANTrainConfig(batch_size=64, adversarial_weight=0.0, feature_threshold_mev=thr)
        obj = GANObjective(gen, tiny_ref, cfg, torch.device("cpu"), fresh=False)
        clean = obj.st["targets"].loss(gen.features(x, e, threshold_mev=thr), bins)
        hazy = obj.st["targets"].loss(gen.features(haze, e, threshold_mev=thr), bins)
        losses[thr] = (float(clean), float(hazy))
    assert losses[0.0][0] < 0.01 and losses[0.0][1] > 10 * max(losses[0.0][0], 1e-3)  # the haze is seen
    assert losses[1.0][0] < 0.01 and abs(losses[1.0][1] - losses[1.0][0]) < 1e-3  # and no longer is
    with pytest.raises(ValueError, match="feature_threshold_mev"):
        GANTrainConfig(feature_threshold_mev=-1.0)


def test_sparsity_sharpness_approaches_the_hard_count_validation_makes(geometry, tiny_ref):
    gen = _small(geometry)
    x = torch.as_tensor(tiny_ref.showers, dtype=torch.float32)
    e = torch.as_tensor(tiny_ref.incident_energy, dtype=torch.float32)
    hard = ((x > 1.0).float() @ gen.onehot) / gen.onehot.sum(0)  # fraction of voxels above 1 MeV per layer
    n_l = geometry.n_layers
    dev = {}
    for k in (1.0, 10.0):
        soft = gen.features(x, e, sparsity_sharpness=k)[:, -n_l:]
        dev[k] = float((soft - hard).abs().mean())
    assert dev[10.0] < dev[1.0] / 3
    with pytest.raises(ValueError, match="sparsity_sharpness"):
        GANTrainConfig(sparsity_sharpness=0.5)
