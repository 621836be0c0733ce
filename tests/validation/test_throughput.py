"""The candidate side's shortcuts give the numbers of the plain computations (issue 18's speed-ups)."""

from __future__ import annotations

import itertools

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


# ---------------------------------------------------------------- read-ahead (issue 18)


def _multi_chunk_file(reference, tmp_path):
    from simcompress.showers.io import write_showers

    path = tmp_path / "multi.root"
    write_showers(path, reference[:1700])
    return path


def test_read_ahead_gives_the_features_of_the_plain_loop_bitwise(reference, tmp_path, monkeypatch) -> None:
    path = _multi_chunk_file(reference, tmp_path)
    import contextlib

    bars = []
    real_bar = sources.progress_bar

    @contextlib.contextmanager
    def recording_bar(*a, **kw):
        with real_bar(*a, **kw) as bar:
            bars.append(bar)
            yield bar

    monkeypatch.setattr(sources, "progress_bar", recording_bar)
    threads: list[str] = []
    real_check = showers_data.check_showers

    def check(incident, showers, geometry, source):
        import threading

        threads.append(threading.current_thread().name)
        return real_check(incident, showers, geometry, source)

    monkeypatch.setattr("simcompress.showers.io.reader.check_showers", check)
    ahead = sources.read_sample(str(path), "a", step_size=300, keep_voxels=250, seed=4)
    assert len(threads) == 6 and all(t.startswith("read-ahead") for t in threads)  # 5 x 300 + 200, on the worker
    threads.clear()
    plain = sources.read_sample(str(path), "p", step_size=300, keep_voxels=250, seed=4, read_ahead=False)
    assert len(threads) == 6 and not any(t.startswith("read-ahead") for t in threads)
    assert ahead.features.n_events == 1700
    assert np.array_equal(ahead.features.values, plain.features.values)
    assert np.array_equal(ahead.features.incident_energy, plain.features.incident_energy)
    for key in ("voxel_hist", "mean_image", "var_image", "radial_mean", "radial_var"):
        assert np.array_equal(getattr(ahead.features, key), getattr(plain.features, key)), key
    assert np.array_equal(ahead.voxels, plain.voxels) and np.array_equal(ahead.voxel_einc, plain.voxel_einc)
    assert "read_thread" in ahead.timings and "read_thread" not in plain.timings
    assert [b.completed for b in bars] == [1700, 1700]  # the bar still advances by every event


def test_read_ahead_keeps_at_most_one_chunk_in_flight(reference, monkeypatch) -> None:
    import threading

    from simcompress.validation import features as F

    produced = [0]
    lead: list[int] = []
    done = threading.Event()

    class Reader:
        geometry = reference.geometry
        n_events = 2000

        def iterate(self, step_size):
            for i in range(0, 2000, step_size):
                produced[0] += 1
                yield reference[i % 2000 : i % 2000 + step_size]
            done.set()

    real_update = F.FeatureAccumulator.update

    def update(self, chunk, *, checked=False):
        lead.append(produced[0] - len(lead) - 1)  # chunks read beyond the one being computed
        return real_update(self, chunk, checked=checked)

    monkeypatch.setattr(F.FeatureAccumulator, "update", update)
    got = sources.read_sample(Reader(), "r", step_size=250)
    assert got.features.n_events == 2000 and len(lead) == 8
    assert max(lead) <= 1 and done.is_set()
    want = sources.read_sample(Reader(), "r", step_size=250, read_ahead=False)
    assert np.array_equal(got.features.values, want.features.values)


def test_reader_error_in_the_read_ahead_thread_names_the_file(reference, tmp_path, monkeypatch) -> None:
    import threading

    from simcompress.showers.io import reader as R

    path = _multi_chunk_file(reference, tmp_path)
    real_iter = R.iter_root
    where: list[str] = []

    def iter_root(info, geometry, step, stop):
        for k, (inc, sh) in enumerate(real_iter(info, geometry, step, stop)):
            if k == 3:  # a later piece of the file holds a NaN voxel
                where.append(threading.current_thread().name)
                sh = sh.copy()
                sh[7, 5] = np.nan
            yield inc, sh

    monkeypatch.setattr(R, "iter_root", iter_root)
    errors = []
    for read_ahead in (True, False):
        with pytest.raises(ShowerFileError) as err:
            sources.read_sample(str(path), "bad", step_size=300, read_ahead=read_ahead)
        errors.append(str(err.value))
    assert where[0].startswith("read-ahead") and not where[1].startswith("read-ahead")
    assert errors[0] == errors[1]  # the same one-line error, read ahead or not
    assert str(path) in errors[0] and "NaN" in errors[0]
    assert not any(t.name.startswith("read-ahead") for t in threading.enumerate())  # no reader thread left


def test_an_error_while_computing_stops_the_read_ahead(reference) -> None:
    import threading

    closed = threading.Event()
    bad = type(reference)(reference.incident_energy[:300].copy(), reference.showers[:300].copy(), reference.geometry)
    bad.showers[3, 1] = np.inf

    class Reader:  # not a ShowerReader: the accumulator checks each chunk on the calling thread
        geometry = reference.geometry
        n_events = 1500

        def iterate(self, step_size):
            try:
                yield reference[:300]
                yield bad
                for _ in range(10):
                    yield reference[:300]
            finally:
                closed.set()

    with pytest.raises(ShowerFileError, match="infinite voxel"):
        sources.read_sample(Reader(), "r", step_size=300)
    assert closed.is_set()  # the source was closed, not left running on the worker
    assert not any(t.name.startswith("read-ahead") for t in threading.enumerate())


def _block_starts(lengths, block):
    """Where the accumulator starts its blocks when handed chunks of these lengths in order."""
    starts, pos = [], 0
    for n in lengths:
        starts += [pos + i for i in range(0, n, block)]
        pos += n
    return starts


def test_recut_pieces_start_the_blocks_where_the_plain_loop_does(reference) -> None:
    from simcompress.showers.data import ShowerSet
    from simcompress.validation.features import BLOCK_ROWS

    rng = np.random.default_rng(5)
    n = 70_000
    rows = np.arange(n, dtype=np.float32)
    for step in (500, 2 * BLOCK_ROWS + 100, 30_000, 3 * BLOCK_ROWS, n + 10):
        cuts = np.sort(rng.choice(np.arange(1, n), size=40, replace=False))
        edges = [0, *cuts.tolist(), n]
        pieces = [
            ShowerSet(rows[a:b] + 1, rows[a:b, None], reference.geometry) for a, b in itertools.pairwise(edges)
        ]
        out = list(sources._recut(pieces, step))
        plain = [min(step, n - a) for a in range(0, n, step)]
        assert _block_starts([len(p) for p in out], BLOCK_ROWS) == _block_starts(plain, BLOCK_ROWS), step
        assert np.array_equal(np.concatenate([p.showers[:, 0] for p in out]), rows)
        assert np.array_equal(np.concatenate([p.incident_energy for p in out]), rows + 1)


def test_read_ahead_in_pieces_smaller_than_the_step_gives_the_plain_sums(reference, tmp_path, monkeypatch) -> None:
    import hashlib

    from simcompress.validation import features as F

    path = _multi_chunk_file(reference, tmp_path)
    plain = sources.read_sample(str(path), "p", step_size=500, keep_voxels=300, seed=2, read_ahead=False)
    # small blocks and pieces that are not a multiple of them: reads split blocks, which must be joined again
    monkeypatch.setattr(F, "_BLOCK", 64)
    monkeypatch.setattr(sources, "BLOCK_ROWS", 64)
    monkeypatch.setattr(sources, "READ_AHEAD_EVENTS", 150)
    calls: list[tuple[int, str]] = []
    real_call = F.BlockKernel.__call__

    def kernel(self, einc32, x32):
        calls.append((int(x32.shape[0]), hashlib.sha1(x32.tobytes()).hexdigest()))
        return real_call(self, einc32, x32)

    monkeypatch.setattr(F.BlockKernel, "__call__", kernel)
    plain64 = sources.read_sample(str(path), "p", step_size=500, keep_voxels=300, seed=2, read_ahead=False)
    plain_calls, calls[:] = sorted(calls), []
    ahead = sources.read_sample(str(path), "a", step_size=500, keep_voxels=300, seed=2)
    assert sorted(calls) == plain_calls  # the very same blocks go through the kernel
    assert np.array_equal(ahead.features.values, plain.features.values)
    for key in ("voxel_hist", "mean_image", "var_image", "radial_mean", "radial_var"):
        assert np.array_equal(getattr(ahead.features, key), getattr(plain64.features, key)), key
    assert np.array_equal(ahead.voxels, plain.voxels) and np.array_equal(ahead.voxel_einc, plain.voxel_einc)
    # pieces of 150 handed over uncut would make other blocks
    calls.clear()
    monkeypatch.setattr(sources, "_recut", lambda pieces, step: pieces)
    sources.read_sample(str(path), "u", step_size=500, keep_voxels=300, seed=2)
    assert sorted(calls) != plain_calls
