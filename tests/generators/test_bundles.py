"""Bundles: round trip, refusal of broken or mismatched bundles, the shipped zoo, generation."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from simcompress.errors import BundleError, UnknownNameError
from simcompress.generators import (
    FlowGenerator,
    GANGenerator,
    bundle_hash,
    generate_showers,
    load_generator,
    save_generator,
    zoo_names,
)
from simcompress.generators.train import finetune
from simcompress.showers.geometry import Geometry

ZOO = ("ds1-photons-gan", "ds1-photons-flow")


def _gan(geometry):
    torch.manual_seed(0)
    return GANGenerator(geometry, latent_dim=8, hidden=[32], critic_hidden=[16])


def _flow(geometry):
    torch.manual_seed(0)
    g = FlowGenerator(geometry, n_blocks=1, hidden=[32], n_groups=8)
    with torch.no_grad():
        for p in g.network.parameters():
            p.normal_(0, 0.05, generator=torch.Generator().manual_seed(7))
    return g


@pytest.mark.parametrize("make", [_gan, _flow])
def test_round_trip_bit_identical(geometry, tmp_path, make):
    gen = make(geometry).eval()
    path = save_generator(gen, tmp_path / "b", card={"note": "test"})
    assert {p.name for p in path.iterdir()} >= {"config.json", "weights.safetensors", "card.json"}
    assert (path / "discriminator.safetensors").exists() == (gen.kind == "gan")
    loaded = load_generator(path)
    e = torch.tensor([300.0, 5e3, 7e4, 2e6])
    a = gen.sample(e, torch.Generator().manual_seed(11))
    b = loaded.sample(e, torch.Generator().manual_seed(11))
    assert torch.equal(a, b)
    card = json.loads((path / "card.json").read_text())
    assert card["note"] == "test" and card["bundle_hash"] == bundle_hash(path) == loaded.bundle_hash
    # saving again over the same directory keeps unrelated files and stays loadable
    (path / "checkpoints").mkdir()
    save_generator(gen, path)
    assert (path / "checkpoints").is_dir() and torch.equal(load_generator(path).sample(e, torch.Generator().manual_seed(11)), a)


def test_refuses_broken_bundles(geometry, tmp_path):
    good = save_generator(_gan(geometry), tmp_path / "good")

    def clone(name):
        d = tmp_path / name
        shutil.copytree(good, d)
        return d

    d = clone("missing")
    (d / "weights.safetensors").unlink()
    with pytest.raises(BundleError, match="weights.safetensors missing"):
        load_generator(d)

    d = clone("corrupt")
    raw = bytearray((d / "weights.safetensors").read_bytes())
    raw[-10] ^= 0xFF
    (d / "weights.safetensors").write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="sha256"):
        load_generator(d)

    d = clone("truncated")
    (d / "weights.safetensors").write_bytes(b"\x00" * 5)
    cfg = json.loads((d / "config.json").read_text())
    from simcompress._provenance import sha256_file

    cfg["weights_sha256"] = sha256_file(d / "weights.safetensors")
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(BundleError, match="corrupt safetensors"):
        load_generator(d)

    d = clone("arch")  # config says another architecture than the weights hold
    cfg = json.loads((d / "config.json").read_text())
    cfg["architecture"]["hidden"] = [33]
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(BundleError, match="shape"):
        load_generator(d)

    d = clone("geomfp")
    cfg = json.loads((d / "config.json").read_text())
    cfg["geometry"]["layers"][0]["n_alpha"] = 2
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(BundleError, match="geometry_fingerprint"):
        load_generator(d)

    d = clone("version")
    cfg = json.loads((d / "config.json").read_text())
    cfg["format_version"] = 99
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(BundleError, match="format_version 99"):
        load_generator(d)

    d = clone("badjson")
    (d / "config.json").write_text("{not json")
    with pytest.raises(BundleError, match="unreadable"):
        load_generator(d)

    with pytest.raises(BundleError, match="not 'ds2'"):
        load_generator(good, geometry="ds2")
    with pytest.raises(UnknownNameError, match="did you mean 'ds1-photons-gan'"):
        load_generator("ds1-photon-gan")
    with pytest.raises(BundleError, match="not found"):
        load_generator(tmp_path / "nowhere")


def test_zoo_ships_both_models():
    assert set(ZOO) <= set(zoo_names())
    for name in ZOO:
        card = json.loads(json.dumps(load_generator(name).config_dict()))
        assert card["geometry"]["name"] == "ds1-photons"


@pytest.mark.parametrize("name", ZOO)
def test_shipped_models_follow_incident_energy(name):
    gen = load_generator(name)
    energies = [512.0, 8192.0, 131072.0, 2097152.0]
    n = 100
    e = torch.tensor(np.repeat(energies, n), dtype=torch.float32)
    x = gen.sample(e, torch.Generator().manual_seed(0)).numpy()
    assert x.shape == (4 * n, 368) and (x >= 0).all()
    mean_tot = x.sum(1).reshape(4, n).mean(1)
    assert np.all(np.diff(mean_tot) > 0)
    # response close to the reference (~1.0) at every energy: 2 % plus 4 standard errors of the mean
    r = (x.sum(1) / e.numpy()).reshape(4, n)
    tol = 0.02 + 4 * r.std(1) / np.sqrt(n)
    assert np.all(np.abs(r.mean(1) - 1.0) < tol), (r.mean(1), tol)
    card = json.loads((gen.bundle_path and open(f"{gen.bundle_path}/card.json").read()) or "{}")
    fid = card["fidelity_heldout"]
    assert fid["max_abs_mean_dev_pct"] < 5.0 and len(fid["energy_mev"]) == 15


def test_generate_showers_chunks_seeds_and_provenance(geometry, tmp_path):
    path = save_generator(_gan(geometry), tmp_path / "g")
    gen = load_generator(path)
    chunks = list(generate_showers(gen, 250, energies="log-uniform:1e3,1e5", seed=7, chunk_size=100))
    assert [len(c) for c in chunks] == [100, 100, 50]
    e = np.concatenate([c.incident_energy for c in chunks])
    assert e.min() >= 1e3 and e.max() <= 1e5
    meta = chunks[0].metadata
    assert meta["generator"]["bundle_hash"] == bundle_hash(path) and meta["seed"] == 7
    assert "torch" in meta["software"] and meta["energies"]["spec"] == "log-uniform:1e3,1e5"
    again = list(generate_showers(path, 250, energies="log-uniform:1e3,1e5", seed=7, chunk_size=100))
    assert all(np.array_equal(a.showers, b.showers) for a, b in zip(chunks, again, strict=False))
    # chunk i is the same when generated on its own (sharded generation)
    third = next(generate_showers(gen, 50, energies="log-uniform:1e3,1e5", seed=7, chunk_size=100, first_chunk=2))
    assert np.array_equal(third.showers, chunks[2].showers)
    for c in chunks:
        c.validate("generated")


@pytest.mark.parametrize("make", [_gan, _flow])
def test_finetune_runs_and_changes_only_network(geometry, tiny_ref, make):
    gen = make(geometry)
    before = {k: v.clone() for k, v in gen.state_dict().items()}
    out = finetune(gen, tiny_ref, steps=3, lr=1e-3, seed=0, critic_warmup=5)
    assert out is gen and not out.training
    changed = [k for k, v in out.state_dict().items() if not torch.equal(v, before[k])]
    assert changed and all(k.startswith("network.") for k in changed)
    assert torch.isfinite(out.sample(torch.tensor([1e4]), torch.Generator().manual_seed(0))).all()


def test_geometry_mismatch_for_training_data(tiny_ref):
    from simcompress.errors import ConfigError

    gen = GANGenerator(Geometry.from_name("ds2"), latent_dim=4, hidden=[8], critic_hidden=[8])
    with pytest.raises(ConfigError, match="geometry"):
        finetune(gen, tiny_ref, steps=1, lr=1e-3)


def test_load_generator_delegates_compressed_bundles(geometry, tmp_path):
    from simcompress.compress import compress, config_from_dict
    from simcompress.compress.bundle import save_compressed

    gen = _gan(geometry).eval()
    step = {"method": "magnitude_prune", "sparsity": 0.5}
    res = compress(gen, config_from_dict(step))
    save_compressed(res.model, gen.config_dict(), [step], None, tmp_path / "c")
    assert "compression" in json.loads((tmp_path / "c" / "config.json").read_text())
    loaded = load_generator(tmp_path / "c")
    assert loaded.bundle_path == str(tmp_path / "c") and len(loaded.bundle_hash) == 64
    e = torch.tensor([1e3, 1e5])
    assert torch.equal(
        loaded.sample(e, torch.Generator().manual_seed(3)), res.model.sample(e, torch.Generator().manual_seed(3))
    )


def test_shipped_recipes_are_valid():
    from pathlib import Path

    from simcompress.generators.train import build_from_config, load_train_config

    recipes = sorted(Path(__file__).parents[2].joinpath("configs", "generators").glob("*.yaml"))
    assert len(recipes) >= 2
    for p in recipes:
        kind = "gan" if "gan" in p.stem else "flow"
        gen = build_from_config(load_train_config(kind, p))
        assert gen.kind == kind


def test_shipped_flow_invertible_with_finite_log_prob(tiny_ref):
    gen = load_generator("ds1-photons-flow")
    e = torch.as_tensor(tiny_ref.incident_energy[:40])
    x = torch.as_tensor(tiny_ref.showers[:40])
    with torch.no_grad():
        z = gen.inverse(x, e)
        lp = gen.log_prob(x, e)
        x_back = gen.postprocess(gen.network(z, gen.condition(e)), e)
    assert torch.isfinite(z).all() and torch.isfinite(lp).all()
    # voxels above the dequantisation band come back to 1e-4 (relative to the shower energy)
    keep = x >= 0.5 * gen.noise_mev
    err = ((x_back - x).abs() * keep).sum(1) / x.sum(1)
    assert err.max().item() < 1e-4
    assert (x_back[~keep] == 0).all()
