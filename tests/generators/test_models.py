"""Model-level tests: training steps, sampling, invertibility, hls4ml-safe layers, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from simcompress.errors import ConfigError
from simcompress.generators import FlowGenerator, GANGenerator, build_generator
from simcompress.generators.gan import HLS4ML_SAFE_MODULES
from simcompress.generators.objectives import _flow_setup, _flow_step, _gan_setup, _gan_step
from simcompress.generators.train import (
    FlowTrainConfig,
    GANTrainConfig,
    load_train_config,
    train_generator,
)


def _small_gan(geometry) -> GANGenerator:
    torch.manual_seed(0)
    return GANGenerator(geometry, latent_dim=8, hidden=[32, 64], critic_hidden=[64, 32])


def _small_flow(geometry) -> FlowGenerator:
    torch.manual_seed(0)
    return FlowGenerator(geometry, n_blocks=2, hidden=[64], n_groups=8)


def test_gan_training_steps_reduce_moment_loss(geometry, tiny_ref):
    gen = _small_gan(geometry)
    cfg = GANTrainConfig(batch_size=128, n_critic=2, lr_generator=2e-3, lr_critic=1e-3)
    st = _gan_setup(gen, tiny_ref, cfg, torch.device("cpu"))
    gen.critic.set_standardisation(st["feats"])
    opt_g = torch.optim.Adam(gen.network.parameters(), lr=cfg.lr_generator, betas=cfg.betas)
    opt_d = torch.optim.Adam(gen.critic.parameters(), lr=cfg.lr_critic, betas=cfg.betas)
    rng = torch.Generator().manual_seed(0)
    recs = [_gan_step(gen, st, cfg, opt_g, opt_d, rng, torch.device("cpu")) for _ in range(40)]
    for r in recs:
        assert all(np.isfinite(v) for v in r.values())
    first = np.mean([r["moment_loss"] for r in recs[:5]])
    last = np.mean([r["moment_loss"] for r in recs[-5:]])
    assert last < 0.8 * first


def test_flow_training_steps_reduce_nll(geometry, tiny_ref):
    gen = _small_flow(geometry)
    cfg = FlowTrainConfig(batch_size=128, lr=3e-3)
    st = _flow_setup(gen, tiny_ref, torch.device("cpu"), 0, set_std=True)
    opt = torch.optim.Adam(gen.network.parameters(), lr=cfg.lr)
    rng = torch.Generator().manual_seed(0)
    losses = [_flow_step(gen, st, cfg, opt, rng, torch.device("cpu"))["loss"] for _ in range(30)]
    assert np.all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.05


@pytest.mark.parametrize("make", [_small_gan, _small_flow])
def test_sample_shape_units_and_energy_bookkeeping(geometry, make):
    gen = make(geometry)
    e = torch.tensor([256.0, 4096.0, 65536.0, 1048576.0])
    x = gen.sample(e, torch.Generator().manual_seed(1), batch_size=3)
    assert x.shape == (4, geometry.n_voxels) and x.dtype == torch.float32
    assert (x >= 0).all() and torch.isfinite(x).all()
    # response r = E_dep / E_inc is bounded by response_scale by construction
    r = x.sum(1) / e
    assert (r > 0).all() and (r <= gen.response_scale + 1e-4).all()
    # deterministic for a seed, different for another
    assert torch.equal(x, gen.sample(e, torch.Generator().manual_seed(1), batch_size=3))
    assert not torch.equal(x, gen.sample(e, torch.Generator().manual_seed(2), batch_size=3))
    # the contract: sample == postprocess(network(z, condition(E)), E)
    g = torch.Generator().manual_seed(5)
    z = gen.sample_latent(4, torch.Generator().manual_seed(5))
    with torch.no_grad():
        manual = gen.postprocess(gen.network(z, gen.condition(e)), e)
    assert torch.equal(manual, gen.sample(e, g))


def test_config_dict_rebuilds_same_architecture(geometry):
    for gen in (_small_gan(geometry), _small_flow(geometry)):
        cfg = json.loads(json.dumps(gen.config_dict()))
        rebuilt = build_generator(cfg)
        assert type(rebuilt) is type(gen)
        assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in gen.state_dict().items()}


def test_flow_invertible_and_log_prob_finite(geometry, tiny_ref):
    gen = _small_flow(geometry)
    _flow_setup(gen, tiny_ref, torch.device("cpu"), 0, set_std=True)
    # move away from the identity initialisation
    with torch.no_grad():
        for p in gen.network.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    gen.eval()
    e = torch.as_tensor(tiny_ref.incident_energy[:64])
    x = torch.as_tensor(tiny_ref.showers[:64])
    with torch.no_grad():
        y = gen.preprocess(x, e)
        c = gen.condition(e)
        z, logdet = gen.network.transform(y, c)
        y_back = gen.network(z, c)
        assert (y_back - y).abs().max().item() < 1e-4
        assert torch.equal(z, gen.inverse(x, e))
        lp = gen.log_prob(x, e)
        assert lp.shape == (64,) and torch.isfinite(lp).all() and torch.isfinite(logdet).all()
        # showers -> z -> showers
        x_back = gen.postprocess(gen.network(z, c), e)
        rel = ((x_back - x).abs().sum(1) / x.sum(1)).max().item()
        assert rel < 1e-4


def test_flow_made_is_autoregressive(geometry):
    gen = _small_flow(geometry)
    made = gen.network.blocks[0].made
    with torch.no_grad():
        for p in made.parameters():
            p.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
    x = torch.randn(3, made.n_features, requires_grad=True)
    c = torch.zeros(3, 1)
    shift, log_scale = made(x, c)
    deg = made.degrees
    for d in (0, made.n_features // 2, made.n_features - 1):
        (grad,) = torch.autograd.grad(shift[:, d].sum() + log_scale[:, d].sum(), x, retain_graph=True)
        depends = grad.abs().sum(0) > 0
        assert not depends[deg >= deg[d]].any()  # no input of the same or a later group
    linear = [m for m in gen.network.modules() if isinstance(m, nn.Linear)]
    assert len(linear) == 2 * 3  # per block: masked hidden, context, masked output


def test_gan_network_is_hls4ml_safe_and_fx_traceable(geometry):
    gen = _small_gan(geometry)
    bad = [(n, type(m).__name__) for n, m in gen.network.named_modules() if n and not isinstance(m, HLS4ML_SAFE_MODULES)]
    assert not bad
    assert type(gen.network).__name__ == "GANNetwork"
    traced = torch.fx.symbolic_trace(gen.network)
    funcs = {str(node.target) for node in traced.graph.nodes if node.op in ("call_function", "call_method")}
    assert funcs <= {"<built-in method cat of type object at {}>".format(hex(id(torch.cat)).replace("0x", "0x")), str(torch.cat)}
    z, c = torch.randn(5, 8), torch.rand(5, 1)
    assert torch.equal(traced(z, c), gen.network(z, c))
    # the critic stays outside the module tree (compression must not touch it)
    assert not any("critic" in n for n, _ in gen.named_modules())


def test_recipe_unknown_key_is_error(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("kind: gan\nmodel:\n  hiden: [3]\n")
    with pytest.raises(ConfigError, match=r"model\.hiden.*did you mean 'hidden'"):
        load_train_config("gan", p)
    with pytest.raises(ConfigError, match=r"g\.yaml: kind"):
        load_train_config("flow", _write(tmp_path / "g.yaml", "kind: gan\n"))


def _write(p, text):
    p.write_text(text)
    return p


def test_training_resumes_bit_identically(geometry, tiny_ref, tmp_path):
    over = {"steps": 12, "batch_size": 64, "monitor_every": 4, "checkpoint_every": 4, "monitor_events": 100,
            "model": {"n_blocks": 1, "hidden": [32], "n_groups": 8}}
    cfg = load_train_config("flow", None, over)
    straight = train_generator(tiny_ref, cfg, tmp_path / "a", progress=False)

    class Stop(Exception):
        pass

    def interrupt(line: str) -> None:
        if json.loads(line)["step"] == 8:
            raise Stop

    with pytest.raises(Stop):
        train_generator(tiny_ref, cfg, tmp_path / "b", progress=False, log=interrupt)
    assert json.loads((tmp_path / "b" / "checkpoints" / "state.json").read_text())["step"] == 4
    resumed = train_generator(tiny_ref, cfg, tmp_path / "b", progress=False)
    for (k, v), (_, w) in zip(straight.state_dict().items(), resumed.state_dict().items(), strict=False):
        assert torch.equal(v, w), k
    card = json.loads((tmp_path / "b" / "card.json").read_text())
    assert card["training"]["steps"] == 12 and card["training"]["data"]["n_events"] == 600
    assert np.isfinite(card["fidelity_heldout"]["max_abs_mean_dev_pct"])
    # another recipe on the same output refuses to resume
    other = load_train_config("flow", None, {**over, "seed": 9})
    with pytest.raises(ConfigError, match="another recipe"):
        train_generator(tiny_ref, other, tmp_path / "b", progress=False)


def test_gan_response_calibration_follows_reference(geometry, tiny_ref):
    gen = _small_gan(geometry)
    assert gen.response_mode == "calibrated"
    gen.calibrate(torch.as_tensor(tiny_ref.showers), torch.as_tensor(tiny_ref.incident_energy))
    # GFlash photons: response ~1, resolution falls with energy (stochastic term)
    assert gen.resp_mean.abs().max().item() < 0.1
    assert gen.resp_std[0].item() > 5 * gen.resp_std[-1].item()
    # a standard-normal y0 reproduces the tabulated mean and spread of log r at a knot energy
    e = torch.full((4000,), 4096.0)
    y = torch.zeros(4000, 1 + geometry.n_layers + geometry.n_voxels)
    y[:, 0] = torch.randn(4000, generator=torch.Generator().manual_seed(0))
    r, f, v = gen.parts(y, gen.condition(e))
    k = 4  # 4096 MeV = 2^12 is the 5th of the 15 ds1 energies
    assert abs(torch.log(r).mean().item() - gen.resp_mean[k].item()) < 0.1 * gen.resp_std[k].item() + 1e-4
    assert torch.log(r).std().item() == pytest.approx(gen.resp_std[k].item(), rel=0.05)
    assert torch.allclose(f.sum(1), torch.ones(4000)) and torch.allclose(v @ gen.onehot, torch.ones(4000, geometry.n_layers))
