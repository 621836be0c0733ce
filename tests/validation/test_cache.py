"""Cached reference: reused when the key matches, never used (one-line notice, recomputed) otherwise."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from simcompress.validation import PreparedReference, evaluation, floor, multivariate, validate
from simcompress.validation import cache as C
from simcompress.validation import metrics as M
from simcompress.validation import prepared as P


@pytest.fixture(scope="module")
def full_spec(fast_spec):
    """Everything the cache stores: floors, FPD/KPD reference batches, the family-wise calibration."""
    return fast_spec.model_copy(update={"classifier": fast_spec.classifier.model_copy(update={"enabled": False})})


@pytest.fixture(scope="module")
def spec(full_spec):
    """Cheaper: 1-D metrics and floors only (no FPD/KPD, per-check thresholds)."""
    off = {"enabled": False}
    return full_spec.model_copy(
        update={
            "fpd": full_spec.fpd.model_copy(update=off),
            "kpd": full_spec.kpd.model_copy(update=off),
            "false_alarm": full_spec.false_alarm.model_copy(update={"method": "per-check"}),
        }
    )


@pytest.fixture(scope="module")
def ref_file(reference, tmp_path_factory):
    from simcompress.showers.io import write_showers

    p = tmp_path_factory.mktemp("cache_ref") / "ref.root"
    write_showers(p, reference[:1200])
    return p


def _numbers(res) -> dict:
    d = json.loads(res.to_json())
    for drop in ("created", "software"):
        d.pop(drop)
    d["reference"].pop("cache")
    d["reference"].pop("timings_s")
    for c in d["candidates"].values():
        c.pop("timings_s")
    return d


def _notices(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "simcompress.validation.cache" and r.levelno >= logging.WARNING]


def test_second_validate_uses_the_cache_and_gives_the_same_numbers(ref_file, independent, full_spec, tmp_path) -> None:
    spec = full_spec
    cands = {"a": independent[:800]}
    fresh = validate(ref_file, cands, spec, progress=False, cache=False)
    assert fresh.reference.cache_info == {"status": "off"}
    assert not list(tmp_path.iterdir())
    first = validate(ref_file, cands, spec, progress=False, cache=tmp_path)
    assert first.reference.cache_info["status"] == "written"
    files = list(tmp_path.glob("reference-*.npz"))
    assert len(files) == 1 and not list(tmp_path.glob(".*.part"))
    second = validate(ref_file, {"b": independent[800:1600]}, spec, progress=False, cache=tmp_path)
    assert second.reference.cache_info["status"] == "loaded"
    again = validate(ref_file, cands, spec, progress=False, cache=tmp_path)
    assert again.reference.cache_info["status"] == "loaded"
    assert _numbers(again) == _numbers(first) == _numbers(fresh)
    # the half-splits, per-bin floors and FPD/KPD floors come back exactly
    assert again.reference.floor.stats == fresh.reference.floor.stats
    assert again.reference.multivariate_floor == fresh.reference.multivariate_floor
    assert again.reference.ref_batches.keys() == fresh.reference.ref_batches.keys() and again.reference.ref_batches
    assert C.calibrations(again.reference)  # the family-wise calibration came from the cache too
    # the loaded reference carries no reference reading time: only the candidate was read
    assert again.reference.timings == {}


def test_key_covers_threshold_gate_and_content(ref_file, reference, spec) -> None:
    k = C.reference_key(ref_file, spec, None)
    assert k is not None and k["threshold_mev"] == 1.0
    assert C.reference_key(ref_file, spec, 2.0) != k
    assert C.reference_key(ref_file, spec.model_copy(update={"n_bins": 20}), None) != k
    assert C.reference_key(ref_file, spec.model_copy(update={"name": "renamed"}), None) == k
    a = C.reference_key(reference[:1200], spec, None)
    b = C.reference_key(reference[1:1201], spec, None)
    assert a is not None and b is not None and a != b and a["reference"].startswith("showers:")
    assert C.reference_key(iter([reference[:10]]), spec, None) is None  # chunk streams are not cached


def test_cache_from_another_reference_is_detected(ref_file, reference, independent, spec, tmp_path, caplog) -> None:
    path = tmp_path / "mine.npz"
    validate(independent[:1200], {"a": independent[1200:2000]}, spec, progress=False, cache=path)  # another reference
    with caplog.at_level(logging.WARNING, logger="simcompress.validation.cache"):
        res = validate(ref_file, {"a": independent[:800]}, spec, progress=False, cache=path)
    notes = _notices(caplog)
    assert len(notes) == 1 and "another reference" in notes[0] and "recomputing" in notes[0] and "\n" not in notes[0]
    assert res.reference.cache_info["status"] == "written"
    assert res.reference.n_events == 1200
    assert _numbers(res) == _numbers(validate(ref_file, {"a": independent[:800]}, spec, progress=False, cache=False))
    # overwritten with the right reference: used silently next time
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="simcompress.validation.cache"):
        again = validate(ref_file, {"a": independent[:800]}, spec, progress=False, cache=path)
    assert again.reference.cache_info["status"] == "loaded" and not _notices(caplog)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "other_version", "missing_array"])
def test_damaged_or_foreign_cache_is_recomputed(ref_file, independent, spec, tmp_path, caplog, monkeypatch, damage) -> None:
    cands = {"a": independent[:800]}
    good = validate(ref_file, cands, spec, progress=False, cache=tmp_path)
    (path,) = tmp_path.glob("reference-*.npz")
    raw = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
        why = "truncated or corrupt"
    elif damage == "garbage":
        path.write_bytes(b"\x00" * 1000)
        why = "truncated or corrupt"
    elif damage == "other_version":
        monkeypatch.setattr(C, "_version", lambda: "0.0.1")
        prep = PreparedReference.build(ref_file, spec, progress=False, cache=False)
        P.save_reference(prep, path, C.reference_key(ref_file, spec, None))
        monkeypatch.undo()
        why = "written by simcompress 0.0.1"
    else:
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files if k != "voxel_hist"}
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)
        why = "do not match the header"
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="simcompress.validation.cache"):
        res = validate(ref_file, cands, spec, progress=False, cache=tmp_path)
    notes = _notices(caplog)
    assert len(notes) == 1 and why in notes[0] and str(path) in notes[0], notes
    assert res.reference.cache_info["status"] == "written"
    assert _numbers(res) == _numbers(good)
    assert P.load_reference(path, C.reference_key(ref_file, spec, None), spec) is not None  # rewritten, whole


def test_prepared_reference_build_shares_the_cache(ref_file, spec, tmp_path) -> None:
    spec = spec.model_copy(update={"min_bin_events": 20})  # per-bin floors in the 15 bins of 80 events
    a = PreparedReference.build(ref_file, spec, progress=False, cache=tmp_path)
    b = PreparedReference.build(ref_file, spec, progress=False, cache=tmp_path)
    assert a.cache_info["status"] == "written" and b.cache_info["status"] == "loaded"
    assert np.array_equal(a.features.values, b.features.values)
    assert b.bin_floors.keys() == a.bin_floors.keys()
    for f in a.features.names:
        assert np.array_equal(a.sorted_cols[f], b.sorted_cols[f])
        assert b.sorted_cols[f].dtype == np.float64
    # the per-bin sorted columns come from the file (nothing sorted on loading), bitwise the computed ones
    floored = [x.label for x in a.bins if isinstance(a.bin_floors[x.label], floor._FloorStats)]
    assert floored and sorted(b._bin_sorted) == sorted(floored)
    for x in a.bins:
        if x.label in floored:
            got, want = b.bin_sorted(x), P._sorted_dict(a.features, x.mask(a.features.incident_energy))
            assert all(np.array_equal(got[f], want[f]) and got[f].dtype == np.float64 for f in a.features.names)


def test_stored_sorted_columns_of_another_shape_are_stale(ref_file, spec, tmp_path, caplog) -> None:
    PreparedReference.build(ref_file, spec, progress=False, cache=tmp_path)
    (path,) = tmp_path.glob("reference-*.npz")
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    header = json.loads(arrays["header"].tobytes().decode())
    arrays["sorted_values"] = arrays["sorted_values"][:, :-1]
    header["arrays"]["sorted_values"][0][1] -= 1
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    with caplog.at_level(logging.WARNING, logger="simcompress.validation.cache"):
        again = PreparedReference.build(ref_file, spec, progress=False, cache=tmp_path)
    notes = _notices(caplog)
    assert len(notes) == 1 and "sorted columns do not match the feature table" in notes[0], notes
    assert again.cache_info["status"] == "written"


def test_unwritable_cache_folder_only_warns(ref_file, independent, spec, tmp_path, caplog) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger="simcompress.validation.cache"):
        res = validate(ref_file, {"a": independent[:800]}, spec, progress=False, cache=blocker / "sub")
    assert res.reference.cache_info["status"] == "computed"
    assert any("not written" in m for m in _notices(caplog))


def test_one_pass_floor_equals_per_split_floor() -> None:
    rng = np.random.default_rng(4)
    for n in (3001, 3000):
        cols = {
            "normal": rng.normal(size=n),
            "ties": rng.integers(0, 4, n).astype(float),
            "zeros": np.where(rng.random(n) < 0.4, 0.0, rng.exponential(size=n)),
        }
        edges = {f: M.feature_binning(np.sort(c), []) for f, c in cols.items()}
        for cap in (500, 10_000):
            fast = floor._floor_features(cols, edges, 6, cap, 3, 10)
            slow = floor._floor_features_per_split(cols, edges, 6, cap, 3, 10)
            assert fast.n_half == slow.n_half
            assert fast.stats == slow.stats  # bitwise: same numbers as sorting every half


def test_sorted_bootstrap_equals_metrics_bootstrap() -> None:
    rng = np.random.default_rng(9)
    for n, m, cap in ((4000, 2500, 50_000), (3000, 2000, 700), (600, 3000, 500)):
        for x, y in (
            (np.round(rng.normal(size=n), 2), rng.exponential(size=m)),  # ties in one sample
            (rng.integers(0, 4, n).astype(float), rng.integers(1, 6, m).astype(float)),  # ties shared by both
            (np.where(rng.random(n) < 0.4, 0.0, rng.exponential(size=n)), np.zeros(m)),  # a constant sample
        ):
            x, y = np.sort(x), np.sort(y)
            want = M.bootstrap_ks_w1(x, y, n_boot=6, max_events=cap, seed=11)
            got = evaluation._bootstrap_ks_w1_sorted(x, y, n_boot=6, max_events=cap, seed=11)
            assert got[0] == want[0]  # KS spread: bitwise
            assert got[1] == pytest.approx(want[1], rel=1e-12, abs=1e-300)  # W1 spread: float64 rounding
            assert got != M.bootstrap_ks_w1(x, y, n_boot=6, max_events=cap, seed=12)


def test_cli_cache_dir_and_no_cache(ref_file, independent, spec, tmp_path, capsys) -> None:
    import yaml

    from simcompress.cli import main
    from simcompress.showers.io import write_showers

    cand = tmp_path / "cand.root"
    write_showers(cand, independent[:800])
    gate = tmp_path / "gate.yaml"
    off = {"enabled": False}
    d = spec.model_dump(mode="json")
    d.update(fpd={**d["fpd"], **off}, kpd={**d["kpd"], **off})
    gate.write_text(yaml.safe_dump(d))
    base = ["validate", "-r", str(ref_file), "-c", str(cand), "--gate", str(gate), "-q", "--no-html", "--cache-dir", str(tmp_path / "c")]
    status = []
    for extra in ([], [], ["--no-cache"]):
        out = tmp_path / f"out{len(status)}"
        assert main([*base, "--out", str(out), *extra]) in (0, 1)
        status.append(json.loads((out / "metrics.json").read_text())["reference"]["cache"]["status"])
    assert status == ["written", "loaded", "off"]
    assert len(list((tmp_path / "c").glob("reference-*.npz"))) == 1
    capsys.readouterr()


def test_stored_reference_batches_give_metrics_fpd_and_kpd_bitwise(full_spec) -> None:
    spec = full_spec
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1250, 12))
    for ny in (1250, 900):
        y = rng.normal(size=(ny, 12)) * 1.1
        lo, hi = multivariate._fpd_sizes(spec.fpd, min(1250, ny), 12)
        rb = multivariate._ref_batches(spec, x, ny, (lo, hi), 800)
        want_fpd = M.fpd(x, y, min_samples=lo, max_samples=hi, num_batches=spec.fpd.num_batches,
                         num_points=spec.fpd.num_points, seed=spec.seed)
        assert multivariate._fpd_from(rb, y / rb.scale, spec, (lo, hi), 1250) == want_fpd
        assert multivariate._kpd_from(rb, x / rb.scale, y / rb.scale, spec) == M.kpd(x, y, batch_size=800, seed=spec.seed)


def test_sorted_histogram_equals_numpy_histogram() -> None:
    rng = np.random.default_rng(5)
    x = np.sort(np.concatenate([np.round(rng.normal(size=3000), 1), [-9.0, 9.0]]))
    for edges in (np.linspace(-2, 2, 11), np.array([-9.0, 0.0, 0.5, 9.0]), np.unique(np.quantile(x, np.linspace(0, 1, 51)))):
        assert np.array_equal(evaluation._hist_sorted(x, edges), np.histogram(x, edges)[0])
