"""The GAN's azimuthal orientation (``alpha_symmetry``): the permutations, the premise that the
reference is symmetric, and what sampling and training do with it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from simcompress.errors import ConfigError
from simcompress.generators.bundle import load_generator, save_generator
from simcompress.generators.gan import GANGenerator, orientation_table
from simcompress.showers.data import ShowerSet
from simcompress.showers.geometry import Geometry
from simcompress.validation.features import compute_features
from simcompress.validation.metrics import feature_binning, histogram_separation_power


def _alpha_of(geometry: Geometry, layer: int) -> np.ndarray:
    s = geometry.layer_slices[layer]
    return np.asarray(geometry.voxel_i_alpha)[s]


def test_orientation_table_is_the_dihedral_group_of_the_binning(geometry):
    t = orientation_table(geometry, "rotate_reflect")
    n_alpha = [lay.n_alpha for lay in geometry.layers]
    assert n_alpha == [1, 10, 10, 1, 1]
    assert t.shape == (20, geometry.n_voxels)
    rows = {tuple(r.tolist()) for r in t}
    assert len(rows) == 20  # all distinct
    for r in t:
        assert sorted(r.tolist()) == list(range(geometry.n_voxels))  # permutations
    # closed under composition: a group
    for a in t[:5]:
        for b in t[::3]:
            assert tuple(a[b].tolist()) in rows
    # row 0 is the identity; row 1 rotates layers 1 and 2 by one bin; layers 0, 3, 4 never move
    assert torch.equal(t[0], torch.arange(geometry.n_voxels))
    for lay in (0, 3, 4):
        s = geometry.layer_slices[lay]
        assert torch.equal(t[:, s], torch.arange(s.start, s.stop).expand(20, -1))
    s1 = geometry.layer_slices[1]
    a1 = _alpha_of(geometry, 1)
    took = np.asarray(geometry.voxel_i_alpha)[t[1, s1].numpy()]
    assert np.array_equal(took, (a1 + 1) % 10)
    took_mirror = np.asarray(geometry.voxel_i_alpha)[t[10, s1].numpy()]
    assert np.array_equal(took_mirror, 9 - a1)
    assert orientation_table(geometry, "rotate").shape == (10, geometry.n_voxels)


def test_orientation_is_refused_where_the_binning_has_no_rotation():
    grid = Geometry.from_name("grid-25")
    with pytest.raises(ConfigError, match=r"alpha_symmetry: geometry 'grid-25' is cartesian.*allowed there: none"):
        GANGenerator(grid, latent_dim=4, hidden=[8], alpha_symmetry="rotate")
    gen = GANGenerator(Geometry.from_name("ds1-photons"), latent_dim=4, hidden=[8])
    with pytest.raises(ValueError, match="alpha_symmetry='none'"):
        gen.postprocess(torch.zeros(2, 1 + 5 + 368), torch.full((2,), 1000.0), orient=torch.zeros(2, dtype=torch.long))


def test_reference_is_symmetric_in_alpha(geometry):
    """The premise: turning reference showers to random orientations leaves every high-level
    feature's distribution as it was (separation power at the two-sample floor)."""
    from simcompress.showers.reference import simulate

    a = simulate(geometry, 15000, energies="ds1", seed=31, progress=False)
    b = simulate(geometry, 15000, energies="ds1", seed=32, progress=False)
    t = orientation_table(geometry, "rotate_reflect")
    o = torch.randint(0, 20, (len(b),), generator=torch.Generator().manual_seed(0))
    turned = torch.gather(torch.as_tensor(b.showers), 1, t[o]).numpy()
    fa, fb = compute_features(a), compute_features(b)
    ft = compute_features(ShowerSet(b.incident_energy, turned, geometry))
    for i, name in enumerate(fa.names):
        ra = fa.values[:, i].astype(np.float64)
        bins = feature_binning(ra, [fb.values[:, i]])
        floor = histogram_separation_power(ra, fb.values[:, i].astype(np.float64), bins)
        sp = histogram_separation_power(ra, ft.values[:, i].astype(np.float64), bins)
        assert sp < 2 * floor + 1.5e-3, (name, sp, floor)


def test_orientations_average_the_centre_to_the_axis(geometry):
    """Over all 20 orientations of one shower the centre of energy in x and y averages to 0 and
    its radial features do not change: the orientation moves the shower, never reshapes it."""
    torch.manual_seed(0)
    gen = GANGenerator(geometry, latent_dim=8, hidden=[32], alpha_symmetry="rotate_reflect")
    e = torch.full((20,), 20000.0)
    y = gen.network(torch.randn(1, 8).expand(20, -1), gen.condition(e)).detach()
    with torch.no_grad():
        x = gen.postprocess(y, e, orient=torch.arange(20)).numpy()
        x0 = gen.postprocess(y, e).numpy()
    f = compute_features(ShowerSet(e.numpy(), x, geometry))
    f0 = compute_features(ShowerSet(e.numpy(), x0, geometry))
    for name in ("EC_x_1", "EC_y_1", "EC_x_2", "EC_y_2"):
        assert abs(float(np.mean(f[name]))) < 1e-3 * max(1.0, float(np.max(np.abs(f0[name])))), name
    assert np.std(f0["EC_x_1"]) == 0 and np.std(f["EC_x_1"]) > 0
    for name in ("E_tot", "EC_r_1", "width_r_2", "sparsity_1", "E_layer_2"):
        np.testing.assert_allclose(f[name], f0[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_symmetric_sampling_is_seeded_and_round_trips(geometry, tmp_path):
    torch.manual_seed(1)
    gen = GANGenerator(geometry, latent_dim=8, hidden=[16], alpha_symmetry="rotate")
    e = torch.full((64,), 4096.0)
    a = gen.sample(e, torch.Generator().manual_seed(5))
    b = gen.sample(e, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    save_generator(gen, tmp_path / "g")
    back = load_generator(tmp_path / "g")
    assert back.alpha_symmetry == "rotate"
    assert torch.equal(back.sample(e, torch.Generator().manual_seed(5)), a)
    # the same noise without orientation is the same shower turned: sums equal, voxels not
    plain = GANGenerator(geometry, latent_dim=8, hidden=[16])
    plain.load_state_dict(gen.state_dict())
    c = plain.sample(e, torch.Generator().manual_seed(5))
    torch.testing.assert_close(c.sum(1), a.sum(1), rtol=1e-5, atol=1e-3)
    assert not torch.equal(c, a)
    # a GAN without the option draws nothing extra: its stream is the noise alone
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    plain.sample(e, g1)
    torch.randn(64, 8, generator=g2)
    assert torch.equal(torch.randn(3, generator=g1), torch.randn(3, generator=g2))


def test_training_step_turns_the_generated_showers(geometry, tiny_ref):
    """The critic and the moment loss see generated showers at random orientations."""
    from simcompress.generators.objectives import GANObjective
    from simcompress.generators.recipes import GANTrainConfig

    torch.manual_seed(2)
    gen = GANGenerator(geometry, latent_dim=8, hidden=[16], critic_hidden=[16], alpha_symmetry="rotate_reflect")
    seen: list[torch.Tensor] = []
    orig = gen.orient

    def spy(showers: torch.Tensor, orient: torch.Tensor) -> torch.Tensor:
        seen.append(orient)
        return orig(showers, orient)

    object.__setattr__(gen, "orient", spy)
    cfg = GANTrainConfig(batch_size=32, n_critic=2)
    obj = GANObjective(gen, tiny_ref, cfg, torch.device("cpu"), fresh=True)
    out = obj.step(torch.Generator().manual_seed(0))
    assert np.isfinite(out["loss"])
    assert len(seen) == 3 and all(o.shape == (32,) for o in seen)  # 2 critic batches + 1 generator batch
    assert len(torch.unique(torch.cat(seen))) > 10
