"""Sharded generation on a 2-worker LocalCluster and a local process pool: counts, reproducibility,
worker deaths, corrupt shards, resume, merge."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import batch_standin
import numpy as np
import pytest
from batch_standin import decoded

from simcompress.batch import MANIFEST_NAME, engine, generate_to_file, merge_shards, run_generation, shard_seed
from simcompress.batch.worker import CRASH_ENV, PARTIAL_DIR, load_model_cached
from simcompress.errors import BundleError, ConfigError, UnknownNameError
from simcompress.generators import bundle_hash
from simcompress.showers.io import open_showers

pytestmark = pytest.mark.timeout(180)
SPEC = batch_standin.SPEC
N, SHARD, CHUNK = 2500, 1000, 400  # shards of 1000, 1000 and 500 events, 3 chunks at most


def _run(bundle: Path, out: Path, **kw: object):
    args = {"energies": "ds1", "chunk_size": CHUNK, "n_workers": 2}
    args.update(kw)
    return run_generation(bundle, N, SHARD, out, 7, **args)  # type: ignore[arg-type]


def _manifest(run: Path) -> dict:
    return json.loads((run / MANIFEST_NAME).read_text())


@pytest.fixture(scope="module")
def reference_run(bundle: Path, dask_cluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "run"
    _run(bundle, out, executor="dask", scheduler=dask_cluster.scheduler_address)
    return out


def test_exact_counts_manifest_and_folder_reader(reference_run: Path, bundle: Path) -> None:
    m = _manifest(reference_run)
    assert m["complete"] is True
    assert m["config"]["n_events"] == N and m["config"]["n_shards"] == 3
    assert [m["shards"][k]["n_events"] for k in sorted(m["shards"])] == [1000, 1000, 500]
    assert m["model"]["bundle_hash"] == bundle_hash(bundle)
    assert {"torch", "numpy", "uproot"} <= set(m["software_versions"])
    files = sorted(p.name for p in reference_run.iterdir() if p.is_file())
    assert files == [MANIFEST_NAME, "shard_00000.root", "shard_00001.root", "shard_00002.root"]
    assert not (reference_run / PARTIAL_DIR).exists()
    # the showers reader takes the shard folder directly (what `simcompress validate run/` uses)
    reader = open_showers(reference_run)
    assert reader.n_events == N and len(reader.files) == 3
    for i, f in enumerate(reader.files):
        prov = open_showers(f).metadata
        assert prov["shard"]["index"] == i
        assert prov["generator"]["bundle_hash"] == prov["batch"]["bundle_hash"] == m["model"]["bundle_hash"]
        assert prov["batch"]["root_seed"] == 7 and prov["shard"]["seed"] == shard_seed(7, i)
        assert prov["content_hash"] == m["shards"][f"{i:05d}"]["sha256"]
    inc, sh = decoded(reference_run)
    assert sh.shape == (N, 368) and np.all(sh >= 0)
    assert np.all(sh.sum(axis=1) <= 2 * inc * (1 + 1e-5))  # GAN response r = 2 sigmoid(.) <= 2
    assert set(np.unique(inc)) <= {2.0**k for k in range(8, 23)}  # ds1 energies


def test_same_arrays_for_one_and_two_workers_and_for_local_and_dask(
    reference_run: Path, bundle: Path, dask_cluster, tmp_path: Path
) -> None:
    one = tmp_path / "local1"
    s = _run(bundle, one, executor="local", n_workers=1)
    assert s.generated_shards == 3 and s.n_workers == 1 and s.executor.startswith("local process pool")
    a_inc, a_sh = decoded(reference_run)
    b_inc, b_sh = decoded(one)
    assert np.array_equal(a_inc, b_inc) and np.array_equal(a_sh, b_sh)
    strip = {"seconds", "host"}
    assert {k: {f: v for f, v in e.items() if f not in strip} for k, e in _manifest(one)["shards"].items()} == {
        k: {f: v for f, v in e.items() if f not in strip} for k, e in _manifest(reference_run)["shards"].items()
    }
    # another root seed gives other showers
    other = run_generation(bundle, 300, 300, tmp_path / "seed8", 8, executor="dask",
                           scheduler=dask_cluster.scheduler_address, chunk_size=CHUNK)
    assert other.n_events == 300
    assert not np.array_equal(decoded(tmp_path / "seed8")[1], a_sh[:300])


def test_worker_killed_mid_shard_on_dask(reference_run: Path, bundle: Path, dask_cluster, tmp_path: Path) -> None:
    from distributed import Client

    marker = tmp_path / "crashed"
    out = tmp_path / "run"
    with Client(dask_cluster.scheduler_address) as client:
        client.run(batch_standin.set_env, CRASH_ENV, str(marker))
        try:
            s = _run(bundle, out, executor="dask", scheduler=dask_cluster.scheduler_address)
        finally:
            client.run(batch_standin.set_env, CRASH_ENV, None)
    assert marker.exists(), "the test hook did not kill a worker"
    assert "died while writing" in marker.read_text()
    assert s.n_events == N and s.generated_shards == 3
    m = _manifest(out)
    assert sorted(m["shards"]) == ["00000", "00001", "00002"]
    assert sum(v["n_events"] for v in m["shards"].values()) == N
    assert not (out / PARTIAL_DIR).exists()  # the dead worker's half-written file is cleaned up
    a_inc, a_sh = decoded(reference_run)
    b_inc, b_sh = decoded(out)  # exact count, no duplicate events, same showers as the clean run
    assert len(b_inc) == N and np.array_equal(a_inc, b_inc) and np.array_equal(a_sh, b_sh)


def test_worker_killed_in_local_process_pool(reference_run: Path, bundle: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The process pool is rebuilt after a worker death and the run completes with the same showers."""
    marker = tmp_path / "crashed"
    monkeypatch.setenv(CRASH_ENV, str(marker))
    out = tmp_path / "run"
    s = _run(bundle, out, executor="local", n_workers=1)
    assert marker.exists()
    assert s.n_events == N and s.generated_shards == 3 and s.n_workers == 1
    assert sum(e["n_events"] for e in _manifest(out)["shards"].values()) == N
    assert np.array_equal(decoded(out)[1], decoded(reference_run)[1])


def test_rerun_keeps_verified_and_regenerates_only_the_corrupt_shard(
    reference_run: Path, bundle: Path, dask_cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    _run(bundle, out, executor="dask", scheduler=dask_cluster.scheduler_address)
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("shard_*.root")}
    victim = out / "shard_00001.root"
    raw = bytearray(victim.read_bytes())
    mid = len(raw) // 2
    raw[mid : mid + 64] = bytes(64)  # zero a block inside a compressed basket
    victim.write_bytes(bytes(raw))
    with monkeypatch.context() as mp:  # large runs: the tasks verify their own shard on the workers
        mp.setattr(engine, "CLIENT_VERIFY_BYTES", 0)
        s = _run(bundle, out, executor="dask", scheduler=dask_cluster.scheduler_address)
    assert (s.kept_shards, s.generated_shards, s.regenerated_shards) == (2, 1, 1)
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("shard_*.root")}
    assert after["shard_00000.root"] == before["shard_00000.root"]
    assert after["shard_00002.root"] == before["shard_00002.root"]
    assert after["shard_00001.root"] != before["shard_00001.root"]
    assert np.array_equal(decoded(out)[1], decoded(reference_run)[1])
    # a deleted shard is regenerated too; a complete run is left alone
    (out / "shard_00002.root").unlink()
    s = _run(bundle, out, executor="dask", scheduler=dask_cluster.scheduler_address)
    assert (s.kept_shards, s.generated_shards, s.regenerated_shards) == (2, 1, 1)
    # small complete runs are verified on the client: no worker is even contacted
    s = _run(bundle, out, executor="dask", scheduler="tcp://127.0.0.1:9")
    assert (s.kept_shards, s.generated_shards, s.n_workers) == (3, 0, 0)
    assert s.executor.startswith("none")
    assert len(_manifest(out)["history"]) == 4


def test_unrecorded_finished_shard_is_adopted_not_duplicated(reference_run: Path, bundle: Path,
                                                             dask_cluster, tmp_path: Path) -> None:
    """The client died after a shard was renamed into place but before the manifest recorded it."""
    out = tmp_path / "run"
    _run(bundle, out, executor="dask", scheduler=dask_cluster.scheduler_address)
    m = _manifest(out)
    del m["shards"]["00001"]
    (out / MANIFEST_NAME).write_text(json.dumps(m))
    before = (out / "shard_00001.root").stat().st_mtime_ns
    s = _run(bundle, out, executor="dask", scheduler=dask_cluster.scheduler_address)
    assert (s.kept_shards, s.generated_shards) == (3, 0)
    assert (out / "shard_00001.root").stat().st_mtime_ns == before
    assert _manifest(out)["shards"]["00001"]["sha256"] == _manifest(reference_run)["shards"]["00001"]["sha256"]


def test_resume_refuses_a_different_run_and_stray_files(bundle: Path, reference_run: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="different run .*root_seed"):
        run_generation(bundle, N, SHARD, reference_run, 8, chunk_size=CHUNK)
    with pytest.raises(ConfigError, match="different run .*n_events"):
        run_generation(bundle, N + 1, SHARD, reference_run, 7, chunk_size=CHUNK)
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "shard_00000.root").write_bytes(b"x")
    with pytest.raises(ConfigError, match="no manifest.json"):
        run_generation(bundle, N, SHARD, stray, 7, chunk_size=CHUNK)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"executor": "ray"}, "--executor: 'ray' is not allowed"),
        ({"format": "parquet"}, "--format: 'parquet'"),
        ({"scheduler": "tcp://127.0.0.1:1"}, "need --executor dask"),
        ({"energies": "bogus:1"}, "bogus"),
    ],
)
def test_bad_arguments(bundle: Path, tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        run_generation(bundle, 10, 5, tmp_path / "r", 1, **kwargs)
    assert not (tmp_path / "r").exists()


def test_unknown_model_and_hash_mismatch_on_worker(bundle: Path, tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="'ds1-photons-gann' is neither a model bundle"):
        run_generation("ds1-photons-gann", 10, 5, tmp_path / "r", 1)
    assert not (tmp_path / "r").exists()
    with pytest.raises(BundleError, match="bundle hash .* differs"):
        load_model_cached("simcompress.batch._backend:Backend", str(bundle), "0" * 64)


def test_merge_checks_shards_and_refuses_bad_targets(reference_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "all.root"
    res = merge_shards(reference_run, out)
    assert res["n_events"] == N and res["n_shards"] == 3
    merged = open_showers(out)
    assert merged.n_events == N and merged.metadata["merged_from"] == str(reference_run)
    assert merged.metadata["seed"] == 7 and "shard" not in merged.metadata and len(merged.metadata["shard_sha256"]) == 3
    assert np.array_equal(merged.read().showers, decoded(reference_run)[1])
    h5 = merge_shards(reference_run, tmp_path / "all.h5")
    assert h5["sha256"] == res["sha256"]
    with pytest.raises(ConfigError, match="outside the run directory"):
        merge_shards(reference_run, reference_run / "all.root")
    with pytest.raises(ConfigError, match="no manifest.json"):
        merge_shards(tmp_path, tmp_path / "x.root")


def test_merge_refuses_incomplete_and_modified_runs(bundle: Path, dask_cluster, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run_generation(bundle, 600, 300, run, 3, chunk_size=CHUNK, executor="dask", scheduler=dask_cluster.scheduler_address)
    m = _manifest(run)
    m["shards"]["00001"]["sha256"] = "0" * 64
    (run / MANIFEST_NAME).write_text(json.dumps(m))
    with pytest.raises(Exception, match="content differs from the manifest"):
        merge_shards(run, tmp_path / "all.root")
    assert not (tmp_path / "all.root").exists()
    del m["shards"]["00001"]
    (run / MANIFEST_NAME).write_text(json.dumps(m))
    with pytest.raises(ConfigError, match="1 of 2 shards missing"):
        merge_shards(run, tmp_path / "all.root")


def test_hdf5_shards_hold_the_same_showers(reference_run: Path, bundle: Path, dask_cluster, tmp_path: Path) -> None:
    out = tmp_path / "h5run"
    _run(bundle, out, executor="dask", scheduler=dask_cluster.scheduler_address, format="hdf5")
    assert sorted(p.name for p in out.glob("shard_*")) == ["shard_00000.h5", "shard_00001.h5", "shard_00002.h5"]
    assert np.array_equal(decoded(out)[1], decoded(reference_run)[1])


def test_single_file_generation_is_seeded_and_records_provenance(bundle: Path, tmp_path: Path) -> None:
    a = generate_to_file(bundle, 700, tmp_path / "a.root", 5, chunk_size=300)
    b = generate_to_file(bundle, 700, tmp_path / "b.h5", 5, chunk_size=300)
    assert a.sha256 == b.sha256 and a.n_events == 700
    prov = open_showers(tmp_path / "a.root").metadata
    assert prov["generator"]["bundle_hash"] == a.model_hash
    assert prov["seed"] == 5 and prov["energies"] == "ds1" and "torch" in prov["software_versions"]
    assert prov["content_hash"] == a.sha256
    with pytest.raises(ConfigError, match="cannot tell the format"):
        generate_to_file(bundle, 10, tmp_path / "c.txt", 5)


def test_custom_backend_and_model_loaded_once_per_worker_process(
    standin_bundle: Path, dask_cluster, tmp_path: Path
) -> None:
    """A backend given as ``module:attribute`` reaches the workers by name; three runs on the same
    two workers load the model once per worker process (never pickled per task)."""
    runs = [run_generation(standin_bundle, 900, 100, tmp_path / f"r{k}", k, executor="dask",
                           scheduler=dask_cluster.scheduler_address, chunk_size=50, backend=SPEC) for k in range(3)]
    assert [r.generated_events for r in runs] == [900, 900, 900]
    pids = Counter((standin_bundle / "loads.log").read_text().split())
    assert 1 <= len(pids) <= 2 and set(pids.values()) == {1}
    m = _manifest(tmp_path / "r0")
    assert m["config"]["backend"] == SPEC
    with pytest.raises(ConfigError, match="different run"):
        run_generation(standin_bundle, 900, 100, tmp_path / "r0", 0, chunk_size=50)
