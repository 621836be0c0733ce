"""Flow response recalibration (``FlowGenerator.recalibrate_response``) and calibration-only runs
(``steps: 0`` with ``init_from``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from simcompress.errors import ConfigError
from simcompress.generators.bundle import load_generator, save_generator
from simcompress.generators.flow import FlowGenerator
from simcompress.generators.recipes import FlowTrainConfig, load_train_config
from simcompress.generators.train import train_generator
from simcompress.showers.reference import simulate

ENERGIES = (1024.0, 16384.0, 262144.0)


@pytest.fixture(scope="module")
def ref3(geometry):
    """3 x 2,000 GFlash showers at three ds1 energies (knots 2, 6 and 10), seeded."""
    torch.set_num_threads(1)
    return simulate(geometry, 6000, energies="discrete:" + ",".join(str(e) for e in ENERGIES), seed=21, progress=False)


def _flow(geometry, ref, **kw):
    torch.manual_seed(0)
    g = FlowGenerator(geometry, n_blocks=1, hidden=[32], n_groups=8, standardise="energy", **kw)
    g.set_standardisation(torch.as_tensor(ref.showers), torch.as_tensor(ref.incident_energy), torch.Generator().manual_seed(0))
    return g.eval()


def _response_moments(showers: np.ndarray, einc: np.ndarray) -> dict[float, tuple[float, float]]:
    out = {}
    for e in ENERGIES:
        r = showers[einc == e].sum(1) / e
        out[e] = (float(r.mean()), float(r.std() / r.mean()))
    return out


def test_recalibration_removes_a_response_bias_and_keeps_everything_else(geometry, ref3):
    g = _flow(geometry, ref3)
    # a per-energy bias of the response coordinate: logit(u_0) shifted by 0.04-0.08 (about 2-4 % in the
    # response), its width 1.4x too wide
    g.feat_mean[:, 0] += 0.04 * torch.linspace(1, 2, g.n_calib)
    g.feat_std[:, 0] *= 1.4
    others = (g.feat_mean[:, 1:].clone(), g.feat_std[:, 1:].clone())
    net = {k: v.clone() for k, v in g.network.state_dict().items()}
    e = torch.as_tensor(ref3.incident_energy, dtype=torch.float32)
    rep = g.recalibrate_response(torch.as_tensor(ref3.showers), e, torch.Generator().manual_seed(1))
    assert rep["knots_with_data"] == 3
    assert [c for c in rep["fit_converged"] if c is not None] == [True, True, True]
    used = [i for i, v in enumerate(rep["mean_response_dev_pct_before"]) if v is not None]
    assert used == [2, 6, 10]
    assert min(abs(rep["mean_response_dev_pct_before"][i]) for i in used) > 1.0
    assert min(abs(rep["resolution_dev_pct_before"][i]) for i in used) > 20.0
    assert max(abs(rep["mean_response_dev_pct_after"][i]) for i in used) < 0.3
    assert max(abs(rep["resolution_dev_pct_after"][i]) for i in used) < 3.0
    # only coordinate 0 of the tables moved; the network is untouched
    assert torch.equal(g.feat_mean[:, 1:], others[0]) and torch.equal(g.feat_std[:, 1:], others[1])
    assert all(torch.equal(net[k], v) for k, v in g.network.state_dict().items())
    # independent showers (other noise) at the same energies: the response now matches the reference
    with torch.no_grad():
        fresh = g.sample(e, torch.Generator().manual_seed(7)).numpy()
    want = _response_moments(np.asarray(ref3.showers), np.asarray(ref3.incident_energy))
    got = _response_moments(fresh, np.asarray(ref3.incident_energy))
    for en in ENERGIES:
        (m_r, s_r), (m_g, s_g) = want[en], got[en]
        assert abs(m_g / m_r - 1) < 4 * s_r / np.sqrt(1000)  # the mean within 4 standard errors
        assert abs(s_g / s_r - 1) < 0.08


def test_recalibration_needs_the_per_energy_table(geometry, ref3):
    torch.manual_seed(0)
    g = FlowGenerator(geometry, n_blocks=1, hidden=[16], n_groups=8, standardise="global")
    with pytest.raises(ValueError, match="standardise='energy'"):
        g.recalibrate_response(torch.as_tensor(ref3.showers), torch.as_tensor(ref3.incident_energy))
    with pytest.raises(ValueError, match="standardise: energy"):
        FlowTrainConfig.model_validate({"recalibrate_response": True, "model": {"standardise": "global"}})


def test_steps_zero_needs_init_from(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("kind: flow\nsteps: 0\n")
    with pytest.raises(ConfigError, match="steps: 0 needs init_from"):
        load_train_config("flow", p)


def test_calibration_only_run_changes_only_the_response_table(geometry, ref3, tmp_path):
    src = _flow(geometry, ref3)
    src.feat_std[:, 0] *= 1.5
    save_generator(src, tmp_path / "src")
    cfg = FlowTrainConfig.model_validate({
        "init_from": str(tmp_path / "src"), "steps": 0, "recalibrate_response": True, "batch_size": 64,
        "monitor_events": 100, "model": {"n_blocks": 1, "hidden": [32], "n_groups": 8, "standardise": "energy"},
    })
    train_generator(ref3, cfg, tmp_path / "out", progress=False)
    card = json.loads((tmp_path / "out" / "card.json").read_text())
    rec = card["training"]["response_recalibration"]
    assert card["training"]["steps"] == 0 and card["training"]["history"] == []
    assert max(abs(v) for v in rec["resolution_dev_pct_before"] if v is not None) > 20.0
    assert max(abs(v) for v in rec["resolution_dev_pct_after"] if v is not None) < 3.0
    out = load_generator(tmp_path / "out")
    sd_src, sd_out = src.state_dict(), out.state_dict()
    changed = sorted(k for k in sd_src if not torch.equal(sd_src[k], sd_out[k]))
    assert changed == ["feat_mean", "feat_std"]
    assert torch.equal(sd_src["feat_mean"][:, 1:], sd_out["feat_mean"][:, 1:])


def test_sample_leading_equals_the_first_columns_of_a_full_pass(geometry, ref3):
    for transform in ("affine", "rqs"):
        torch.manual_seed(1)
        g = FlowGenerator(geometry, n_blocks=2, hidden=[16], n_groups=9, transform=transform)
        for p in g.network.parameters():  # away from the identity start
            p.data.add_(0.05 * torch.randn_like(p))
        z = torch.randn(64, g.latent_dim, generator=torch.Generator().manual_seed(2))
        c = g.condition(torch.full((64,), 4096.0))
        with torch.no_grad():
            full, lead = g.network(z, c), g.network.sample_leading(z, c)
        assert lead.shape == (64, geometry.n_layers)
        assert torch.equal(lead, full[:, : geometry.n_layers]), transform
