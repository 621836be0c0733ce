"""``simcompress generate`` (one file and sharded), ``merge`` and ``cluster-script`` from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from simcompress.cli import main
from simcompress.showers.io import open_showers

pytestmark = pytest.mark.timeout(180)
CLUSTER_CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "cluster"


@pytest.fixture(scope="module")
def gan_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from simcompress.generators import GANGenerator, save_generator
    from simcompress.showers import Geometry

    torch.manual_seed(1)
    gen = GANGenerator(Geometry.from_name("ds1-photons"), latent_dim=8, hidden=[16], critic_hidden=[8])
    return save_generator(gen, tmp_path_factory.mktemp("cli-model") / "tiny-gan")


def _json_tail(out: str) -> dict:
    return json.loads(out[out.index("{"):])


def test_generate_one_file_root_and_hdf5(gan_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "gen.root"
    rc = main(["generate", "--model", str(gan_bundle), "--events", "1_500", "--energies", "log-uniform:1e3,1e6",
               "--seed", "7", "--out", str(out), "--chunk-size", "400", "--no-progress", "--json"])
    assert rc == 0
    summary = _json_tail(capsys.readouterr().out)
    assert summary["n_events"] == 1500 and summary["showers_per_second"] > 0
    reader = open_showers(out)
    assert reader.n_events == 1500
    prov = reader.metadata
    assert prov["seed"] == 7 and prov["generator"]["bundle_hash"] == summary["model_hash"]
    assert prov["content_hash"] == summary["sha256"] and "torch" in prov["software_versions"]
    e = reader.incident_energy()
    assert e.min() >= 1e3 and e.max() <= 1e6
    rc = main(["generate", "--model", str(gan_bundle), "--events", "1500", "--energies", "log-uniform:1e3,1e6",
               "--seed", "7", "--out", str(tmp_path / "gen.h5"), "--format", "hdf5", "--chunk-size", "400",
               "--no-progress", "--json"])
    assert rc == 0
    assert _json_tail(capsys.readouterr().out)["sha256"] == summary["sha256"]  # same seed, other format


def test_generate_sharded_resume_and_merge(gan_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    argv = ["generate", "--model", str(gan_bundle), "--events", "1200", "--shard-size", "500", "--out", str(run),
            "--executor", "local", "--workers", "1", "--seed", "3", "--chunk-size", "250", "--no-progress", "--json"]
    assert main(argv) == 0
    first = _json_tail(capsys.readouterr().out)
    assert (first["n_shards"], first["generated_shards"], first["generated_events"]) == (3, 3, 1200)
    manifest = json.loads((run / "manifest.json").read_text())
    assert [manifest["shards"][k]["n_events"] for k in sorted(manifest["shards"])] == [500, 500, 200]
    assert main(argv) == 0  # the same command again: everything verified and kept
    again = _json_tail(capsys.readouterr().out)
    assert (again["kept_shards"], again["generated_shards"]) == (3, 0)
    merged = tmp_path / "all.root"
    assert main(["merge", str(run), "--out", str(merged), "--no-progress"]) == 0
    assert "merged 3 shards, 1,200 showers" in capsys.readouterr().out
    assert np.array_equal(open_showers(merged).read().showers, open_showers(run).read().showers)


def test_cluster_script_prints_job_scripts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cluster-script", "--cluster", str(CLUSTER_CONFIGS / "slurm-example.yaml")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("#!/usr/bin/env bash") and "#SBATCH -p short" in out
    assert "python3 -m distributed.cli.dask_worker tcp://<scheduler-address>" in out
    assert main(["cluster-script", "--cluster", str(CLUSTER_CONFIGS / "htcondor-example.yaml")]) == 0
    assert capsys.readouterr().out.startswith("#!/usr/bin/env condor_submit")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "ds1-photons-gann"], "'ds1-photons-gann' is neither a model bundle"),
        (["--energies", "bogus:3"], "bogus"),
        (["--shard-size", "10", "--out", "{tmp}/x.root"], "a sharded run writes a directory"),
        (["--shard-size", "10", "--executor", "ray"], "--executor: 'ray' is not allowed"),
        (["--cluster", "{tmp}/site.yaml"], "cpus: unknown key 'cpus'"),
        (["--events", "0"], "--events: must be a positive integer"),
        (["--out", "{tmp}/x.txt"], "cannot tell the format"),
        (["--seed", "-4"], "seed must be in"),
        (["--format", "hdf5"], "a .root file cannot hold --format hdf5"),
    ],
)
def test_bad_input_exits_2_with_one_line(gan_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         args: list[str], message: str) -> None:
    (tmp_path / "site.yaml").write_text("kind: slurm\ncpus: 4\n")
    base = {"--model": str(gan_bundle), "--events": "10", "--out": str(tmp_path / "out.root"), "--seed": "1"}
    given = dict(zip(args[::2], args[1::2], strict=False))
    if any(k in given for k in ("--shard-size", "--cluster")) and "--out" not in given:
        base["--out"] = str(tmp_path / "run")
    merged = {**base, **{k: v.format(tmp=tmp_path) for k, v in given.items()}}
    argv = ["generate", "--no-progress"] + [x for kv in merged.items() for x in kv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out.root").exists() and not (tmp_path / "run").exists()


def test_merge_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["merge", str(tmp_path), "--out", str(tmp_path.parent / "m.root")]) == 2
    assert "no manifest.json" in capsys.readouterr().err
