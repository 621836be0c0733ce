"""``simcompress qkeras-import`` / ``qkeras-export``: round trip, firmware, exit codes."""

from __future__ import annotations

import json

import torch

from simcompress.cli import main
from simcompress.generators import load_generator
from simcompress.interop.generator import QKerasMLPGenerator, load_qkeras_generator
from simcompress.interop.qkeras import export_qkeras
from simcompress.showers.geometry import Geometry


def test_import_export_round_trip_and_firmware(tmp_path, capsys) -> None:
    gen = QKerasMLPGenerator.random(Geometry.from_name("ds1-photons"), latent_dim=3, hidden=[8], seed=5)
    h5 = export_qkeras(gen, tmp_path / "gen.h5")
    (tmp_path / "target.yaml").write_text("project_name: qk_cli\ncheck:\n  n_samples: 500\n")
    rc = main(["qkeras-import", str(h5), "-o", str(tmp_path / "bundle"), "--firmware", str(tmp_path / "fw"),
               "--firmware-config", str(tmp_path / "target.yaml")])
    out = " ".join(capsys.readouterr().out.split())
    assert rc == 0, out
    assert "0 mismatches in 187000 outputs" in out
    fw = json.loads((tmp_path / "fw" / "firmware.json").read_text())
    assert fw["bit_exactness"]["mismatches"] == 0 and fw["bit_exactness"]["n_outputs"] > 10_000
    bundle = load_generator(tmp_path / "bundle")
    assert main(["qkeras-export", str(tmp_path / "bundle"), "-o", str(tmp_path / "again.h5")]) == 0
    again = load_qkeras_generator(tmp_path / "again.h5")
    e = torch.tensor([512.0, 1e5])
    want = gen.sample(e, torch.Generator().manual_seed(0))
    assert torch.equal(bundle.sample(e, torch.Generator().manual_seed(0)), want)
    assert torch.equal(again.sample(e, torch.Generator().manual_seed(0)), want)


def test_bad_input_exits_2_with_one_line(tmp_path, capsys) -> None:
    gen = QKerasMLPGenerator.random(Geometry.from_name("ds1-photons"), latent_dim=3, hidden=[8], seed=5)
    h5 = export_qkeras(gen, tmp_path / "gen.h5")
    assert main(["qkeras-import", str(h5), "-o", str(tmp_path / "b"), "--postprocess", "energy_fraction"]) == 2
    err = capsys.readouterr().err
    assert "needs 368 network outputs, the network has 374" in err
    assert not (tmp_path / "b").exists()
    assert main(["qkeras-import", str(tmp_path / "missing.h5"), "-o", str(tmp_path / "b")]) == 2
    assert "missing.h5: no such file" in capsys.readouterr().err
    assert main(["qkeras-export", str(tmp_path / "nope"), "-o", str(tmp_path / "x.keras")]) == 2
    assert ".h5" in capsys.readouterr().err
