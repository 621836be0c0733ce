"""``simcompress firmware`` end to end on a compressed generator bundle."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from simcompress.cli import main

pytestmark = [pytest.mark.firmware, pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")]
pytest.importorskip("hls4ml")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ds1-photons GAN generator, quantized with fixed_point and saved as a compressed bundle."""
    from simcompress.compress import compress, config_from_dict
    from simcompress.compress.bundle import save_compressed
    from simcompress.generators.gan import GANGenerator
    from simcompress.showers.geometry import Geometry

    torch.manual_seed(0)
    gen = GANGenerator(Geometry.from_name("ds1-photons"), latent_dim=4, hidden=[8])
    res = compress(gen, config_from_dict({"method": "fixed_point", "calibration_samples": 256}))
    out = tmp_path_factory.mktemp("bundle") / "compressed"
    save_compressed(res.model, gen.config_dict(), [res.config.to_dict()], res.report(), out)
    return out


def _cfg(tmp_path: Path, extra: str = "") -> Path:
    p = tmp_path / "target.yaml"
    p.write_text("part: xcvu13p-flga2577-2-e\nclock_period_ns: 4.0\ncheck: {n_samples: 300}\n" + extra)
    return p


def test_synth_without_vendor_tool_fails_cleanly(bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                                               if not any((Path(p) / t).exists() for t in ("vitis_hls", "vivado_hls", "vitis-run"))))
    out = tmp_path / "fw"
    rc = main(["firmware", "--model", str(bundle), "--config", str(_cfg(tmp_path)), "--out", str(out), "--synth"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "synthesis needs the vendor tool (vitis_hls)" in err and "build_prj.tcl" in err
    # the project is left complete and checked
    rep = json.loads((out / "firmware.json").read_text())
    assert rep["bit_exactness"]["mismatches"] == 0
    assert rep["synthesis"]["status"] == "unavailable"
    assert rep["estimate"]["clock_period_ns"] == 4.0
    assert rep["inputs"] == [{"name": "z", "size": 4, "type": rep["precisions"]["z"]["result"]},
                             {"name": "c", "size": 1, "type": rep["precisions"]["c"]["result"]}]
    assert (out / "hls" / "build_prj.tcl").is_file()
    # a second run refuses to overwrite without --overwrite
    rc = main(["firmware", "--model", str(bundle), "--config", str(_cfg(tmp_path)), "--out", str(out)])
    assert rc == 2 and "--overwrite" in capsys.readouterr().err


def test_bad_inputs_exit_2(bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _cfg(tmp_path, "strategy: Fast\n")
    assert main(["firmware", "--model", str(bundle), "--config", str(cfg), "--out", str(tmp_path / "a")]) == 2
    assert "strategy" in capsys.readouterr().err
    plain = tmp_path / "plain"
    plain.mkdir()
    assert main(["firmware", "--model", str(plain), "--config", str(_cfg(tmp_path)), "--out", str(tmp_path / "b")]) == 2
    assert "precision.json" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_float_bundle_or_zoo_name_says_which_recipe_to_run_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from simcompress.generators import save_generator
    from simcompress.generators.gan import GANGenerator
    from simcompress.showers.geometry import Geometry

    torch.manual_seed(0)
    save_generator(GANGenerator(Geometry.from_name("ds1-photons"), latent_dim=4, hidden=[8]), tmp_path / "float")
    for model in ("ds1-photons-gan", str(tmp_path / "float")):
        rc = main(["firmware", "--model", model, "--config", str(_cfg(tmp_path)), "--out", str(tmp_path / "fw")])
        err = capsys.readouterr().err
        assert rc == 2 and f"simcompress compress --model {model} --recipe configs/compress/fixed-point-qat.yaml" in err
        assert "then simcompress firmware --model fp/" in err and not (tmp_path / "fw").exists()
    rc = main(["firmware", "--model", "ds1-photons-gan", "--config", str(_cfg(tmp_path, "route: vivado\n")), "--out",
               str(tmp_path / "fw")])
    err = capsys.readouterr().err
    assert rc == 2 and "route" in err and "alkaid" in err
