"""The candidate side's shortcuts give the numbers of the plain computations (issue 18's speed-ups)."""

from __future__ import annotations

import numpy as np
import pytest

from simcompress.errors import ShowerFileError
from simcompress.showers import data as showers_data
from simcompress.validation import metrics as M
from simcompress.validation import one_d, sources
from simcompress.validation.features import compute_features


def test_merged_pair_gives_metrics_ks_w1_and_bootstrap() -> None:
    rng = np.random.default_rng(21)
    for x, y in (
        (np.round(rng.normal(size=3000), 1), rng.normal(0.1, 1.0, 2000)),
        (rng.integers(0, 3, 1500).astype(float), rng.integers(0, 3, 1700).astype(float)),
        (np.full(400, 2.0), np.full(300, 2.0)),
    ):
        xs, ys = np.sort(x), np.sort(y)
        merged = one_d._Merged(xs, ys)
        want = M.ks_w1(x, y)
        assert one_d._ks_w1_sorted(xs, ys, merged) == (want.ks, want.w1)  # bitwise
        assert one_d._ks_w1_sorted(xs, ys) == (want.ks, want.w1)
        # the merge shared with the KS/W1 gives the bootstrap of a fresh merge
        shared = one_d._bootstrap_ks_w1_sorted(xs, ys, n_boot=5, max_events=1000, seed=3, merged=merged)
        assert shared == one_d._bootstrap_ks_w1_sorted(xs, ys, n_boot=5, max_events=1000, seed=3)
        plain = M.bootstrap_ks_w1(xs, ys, n_boot=5, max_events=1000, seed=3)  # the same draws: of sorted samples
        assert shared[0] == plain[0]
        assert shared[1] == pytest.approx(plain[1], rel=1e-12, abs=1e-300)


def _count_checks(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = showers_data.check_showers

    def counting(incident, showers, geometry, source):
        calls.append(int(showers.shape[0]))
        return real(incident, showers, geometry, source)

    monkeypatch.setattr(showers_data, "check_showers", counting)
    monkeypatch.setattr("simcompress.showers.io.reader.check_showers", counting)
    return calls


def test_file_chunks_are_checked_once_and_give_the_features_of_the_showers(reference, tmp_path, monkeypatch) -> None:
    from simcompress.showers.io import write_showers

    sample = reference[:900]
    path = tmp_path / "s.root"
    write_showers(path, sample)
    calls = _count_checks(monkeypatch)
    got = sources.read_sample(str(path), "s", step_size=400)
    assert calls == [400, 400, 100]  # the reader's check of each chunk, no second pass in the accumulator
    calls.clear()
    want = compute_features(sample)  # an in-memory ShowerSet: checked by the accumulator
    assert calls == [900]
    assert np.array_equal(got.features.values, want.values)


def test_unchecked_chunks_are_still_checked(reference) -> None:
    bad = reference[:300]
    bad = type(bad)(bad.incident_energy.copy(), bad.showers.copy(), bad.geometry)
    bad.showers[4, 2] = np.inf
    with pytest.raises(ShowerFileError, match="infinite voxel"):
        sources.read_sample(iter([bad]), "chunks")
    with pytest.raises(ShowerFileError, match="infinite voxel"):
        sources.read_sample(bad, "set")
