"""``simcompress firmware`` on imported generators: an MLP imported with ``import-torch`` goes through
the hls4ml route bit-exactly; a transposed-convolution DCGAN is refused naming the layer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from simcompress.cli import main

pytestmark = [pytest.mark.firmware, pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")]
pytest.importorskip("hls4ml")

TOY = Path(__file__).with_name("external_dcgan.py")
FIXED = {"name": "fp", "steps": [{"method": "fixed_point", "weight": {"width": 10}, "calibration_samples": 512}]}


def _target(tmp_path: Path, extra: str = "") -> Path:
    p = tmp_path / "target.yaml"
    p.write_text("part: xcvu13p-flga2577-2-e\nclock_period_ns: 4.0\ncheck: {n_samples: 200}\n" + extra)
    return p


def test_imported_mlp_to_bit_exact_firmware(tmp_path: Path) -> None:
    from external_dcgan import ReluMLP

    torch.manual_seed(0)
    weights = tmp_path / "mlp.safetensors"
    save_file({k: v.contiguous() for k, v in ReluMLP().state_dict().items()}, str(weights))
    bundle = tmp_path / "mlp"
    assert main(["import-torch", f"{TOY}:ReluMLP", "--weights", str(weights), "--input", "concat", "-g", "ds1-photons",
                 "--latent-dim", "8", "--postprocess", "relu", "-o", str(bundle)]) == 0
    recipe = tmp_path / "fp.yaml"
    recipe.write_text(yaml.safe_dump(FIXED))
    fp = tmp_path / "fp"
    assert main(["compress", "--model", str(bundle), "--recipe", str(recipe), "--out", str(fp), "--no-gate", "--no-onnx",
                 "--report-samples", "64", "--calibration-events", "128"]) == 0
    out = tmp_path / "fw"
    assert main(["firmware", "--model", str(fp), "--config", str(_target(tmp_path)), "--out", str(out)]) == 0
    rep = json.loads((out / "firmware.json").read_text())
    assert rep["bit_exactness"]["mismatches"] == 0 and rep["bit_exactness"]["n_samples"] >= 200


def test_deconvolution_generator_is_refused_by_the_hls4ml_route(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from external_dcgan import make_dcgan

    from simcompress.compress import compress, config_from_dict
    from simcompress.compress.bundle import save_compressed
    from simcompress.interop.external import wrap_generator

    gen = wrap_generator(make_dcgan(), geometry="ds1-photons", latent_dim=16, model=f"{TOY}:DCGAN")
    res = compress(gen, config_from_dict(FIXED["steps"][0]))
    fp = tmp_path / "fp"
    save_compressed(res.model, gen.config_dict(), [res.config.to_dict()], res.report(), fp)
    # route: auto would take it through alkaid (tests/interop/test_external_dcgan_firmware.py)
    target = _target(tmp_path, "route: hls4ml\n")
    rc = main(["firmware", "--model", str(fp), "--config", str(target), "--out", str(tmp_path / "fw")])
    err = capsys.readouterr().err
    assert rc == 2 and "alkaid route can take this network" in err and not (tmp_path / "fw").exists()


def test_float_bundle_or_zoo_name_says_which_recipe_to_run_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for model in ("ds1-photons-gan", str(tmp_path / "float")):
        if model != "ds1-photons-gan":
            from external_dcgan import make_dcgan

            from simcompress.generators import save_generator
            from simcompress.interop.external import wrap_generator

            save_generator(wrap_generator(make_dcgan(), geometry="ds1-photons", latent_dim=16, model=f"{TOY}:DCGAN"), model)
        rc = main(["firmware", "--model", model, "--config", str(_target(tmp_path)), "--out", str(tmp_path / "fw")])
        err = capsys.readouterr().err
        assert rc == 2 and f"simcompress compress --model {model} --recipe configs/compress/fixed-point-qat.yaml" in err
