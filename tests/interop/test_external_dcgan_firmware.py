"""Done-when of issue 16, part 4: a user's DCGAN file (Linear -> view -> ConvTranspose2d + BatchNorm2d,
functional activations, a crop) through ``import-torch``, ``compress`` (prune + SVD + fixed point; PTQ),
``validate`` and ``firmware``: hls4ml cannot take the transposed convolutions, so the alkaid route
writes the Verilog, with 0 mismatches between the emulation and alkaid's interpreter."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file

from simcompress.cli import main

pytestmark = [pytest.mark.firmware, pytest.mark.slow]
pytest.importorskip("alkaid")

#: the user's own file: the same shape of network as a third-party conditional DCGAN, small
USER_GAN = '''
import torch
import torch.nn.functional as F
from torch import nn


class TinyDCGAN(nn.Module):
    """Linear -> view -> 2 x (ConvTranspose2d [+ BatchNorm2d]) -> crop to 16 x 23 (ds1-photons)."""

    def __init__(self, latent: int = 4, ch: int = 2):
        super().__init__()
        self.ch = ch
        self.fc1 = nn.Linear(latent + 1, 2 * ch * 4 * 6)
        self.deconv1 = nn.ConvTranspose2d(2 * ch, ch, 4, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(ch)
        self.deconv2 = nn.ConvTranspose2d(ch, 1, 4, stride=2, padding=1)

    def forward(self, z, c):
        x = self.fc1(torch.cat([z, c], 1))
        x = F.leaky_relu(x.view(-1, 2 * self.ch, 4, 6), 0.2)
        x = F.relu(self.bn1(self.deconv1(x)))
        x = torch.sigmoid(self.deconv2(x))  # (N, 1, 16, 24)
        return x[:, 0, :, :23].flatten(1)
'''

PRUNE_SVD_FIXED = {"name": "dcgan-fw", "steps": [
    {"method": "magnitude_prune", "sparsity": 0.5},
    {"method": "svd", "energy": 0.99},
    {"method": "fixed_point", "weight": {"width": 8}, "result": {"width": 10}, "activation": {"width": 8},
     "calibration_samples": 256},
]}
PTQ = {"name": "dcgan-ptq", "steps": [{"method": "ptq", "types": ["ConvTranspose2d", "Linear"], "weights": {"bits": 8}}]}


@pytest.fixture(scope="module")
def user_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from simcompress.showers.geometry import Geometry
    from simcompress.showers.io import write_showers
    from simcompress.showers.reference import simulate
    from simcompress.validation.gate import GateSpec

    d = tmp_path_factory.mktemp("dcgan_fw")
    (d / "my_gan.py").write_text(textwrap.dedent(USER_GAN))
    from simcompress.interop.external import load_object

    torch.manual_seed(0)  # the user's trained weights: seeded, non-trivial batch-norm statistics
    net = load_object(f"{d / 'my_gan.py'}:TinyDCGAN", "architecture.model")()
    with torch.no_grad():
        net.bn1.running_mean.uniform_(-0.2, 0.2)
        net.bn1.running_var.uniform_(0.5, 2.0)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(d / "gan.safetensors"))
    ref = simulate(Geometry.from_name("ds1-photons"), 600, seed=3, progress=False)
    spec = GateSpec(name="tiny", classifier={"inputs": ["high"], "epochs": 1, "n_hidden": 8, "max_events": 600},
                    fpd={"num_batches": 2, "num_points": 3}, kpd={"num_batches": 2, "batch_size": 200},
                    bootstrap={"n_boot": 2, "n_boot_hist": 10})
    (d / "gate.yaml").write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    (d / "fw.yaml").write_text(yaml.safe_dump(PRUNE_SVD_FIXED))
    (d / "ptq.yaml").write_text(yaml.safe_dump(PTQ))
    (d / "target.yaml").write_text("part: xcvu13p-flga2577-2-e\nclock_period_ns: 4.0\ncheck: {n_samples: 300}\n")
    return {"dir": d, "ref": write_showers(d / "ref.root", ref)}


def test_user_dcgan_import_compress_validate_and_alkaid_firmware(user_files: dict[str, Path]) -> None:
    d = user_files["dir"]
    bundle, fp, ptq, fw = d / "bundle", d / "fp", d / "ptq", d / "fw"
    assert main(["import-torch", f"{d / 'my_gan.py'}:TinyDCGAN", "--weights", str(d / "gan.safetensors"), "-g",
                 "ds1-photons", "--latent-dim", "4", "--postprocess", "relu", "-o", str(bundle)]) == 0
    common = ["--no-gate", "--no-onnx", "--report-samples", "32", "--calibration-events", "64"]
    assert main(["compress", "--model", str(bundle), "--recipe", str(d / "fw.yaml"), "--out", str(fp), *common]) == 0
    assert main(["compress", "--model", str(bundle), "--recipe", str(d / "ptq.yaml"), "--out", str(ptq), *common]) == 0
    # coverage is reported, for every method: the transposed convolutions are changed, not silently skipped
    cov = {c["method"]: c for c in json.loads((fp / "report.json").read_text())["coverage"]}
    assert {"magnitude_prune", "fixed_point"} <= set(cov)
    assert {r["name"] for r in cov["magnitude_prune"]["changed"]} >= {"network.deconv1", "network.deconv2"}
    assert all(c["not_handled_share"] == 0.0 for m, c in cov.items() if m != "svd")
    ptq_cov = json.loads((ptq / "report.json").read_text())["coverage"][0]
    assert ptq_cov["not_handled_share"] == 0.0 and "## Coverage" in (ptq / "report.md").read_text()
    prec = json.loads((fp / "precision.json").read_text())
    assert {"weight", "bias", "accum", "result"} <= set(prec["layers"]["deconv2"]) and prec["folded_batchnorm"] == ["bn1"]
    assert {prec["layers"][k]["kind"] for k in ("leaky_relu", "relu", "sigmoid")} == {"LeakyReLU", "ReLU", "Sigmoid"}

    # validate the fixed-point bundle (and the teacher) against reference showers
    for name, model in (("teacher", bundle), ("fixed", fp)):
        assert main(["generate", "--model", str(model), "--events", "600", "--energies", "ds1", "--seed", "5",
                     "--out", str(d / f"{name}.root")]) == 0
    rc = main(["validate", "-r", str(user_files["ref"]), "-c", f"teacher={d / 'teacher.root'}", "-c",
               f"fixed={d / 'fixed.root'}", "--gate", str(d / "gate.yaml"), "-q", "--no-html", "--out", str(d / "v")])
    assert rc in (0, 1)  # an untrained DCGAN may fail the gate; the metrics are written either way
    assert {"teacher", "fixed"} <= set(json.dumps(json.loads((d / "v" / "metrics.json").read_text())).split('"'))

    # firmware: hls4ml 1.3.0 has no ConvTranspose, so 'auto' takes the alkaid route; with --reference the showers
    # generated through alkaid's interpreter are validated too (exit 1: this untrained network fails the gate,
    # and so does the float network with the same noise: the firmware is not what fails)
    rc = main(["firmware", "--model", str(fp), "--config", str(d / "target.yaml"), "--out", str(fw), "--reference",
               str(user_files["ref"]), "--physics-events", "300", "--gate", str(d / "gate.yaml")])
    rep = json.loads((fw / "firmware.json").read_text())
    assert rc == 1 and rep["physics"]["n_events"] == 300 and not rep["physics"]["passed"]
    assert not rep["physics"]["float_passed"] and (fw / "validation" / "metrics.json").is_file()
    assert rep["route"] == "alkaid"
    assert rep["bit_exactness"]["mismatches"] == 0 and rep["bit_exactness"]["n_outputs"] == 300 * 368
    assert rep["estimate"]["total"]["dsp"] == 0 and rep["estimate"]["total"]["lut"] > 0
    assert (fw / "rtl" / "src" / "simcompress_gen.v").is_file() and not (fw / "hls").exists()
    assert np.load(fw / "vectors" / "output.npy").shape == (300, 368)


def test_pruned_fixed_point_model_computes_its_precision_record(user_files: dict[str, Path]) -> None:
    """The firmware follows precision.json; the compressed model must compute the same numbers."""
    from simcompress.compress import compress, config_from_dict
    from simcompress.firmware.alkaid_route import build_cast_network
    from simcompress.firmware.graph import resolve
    from simcompress.interop.external import load_object, wrap_generator

    d = user_files["dir"]
    torch.manual_seed(0)
    gen = wrap_generator(load_object(f"{d / 'my_gan.py'}:TinyDCGAN")().eval(), geometry="ds1-photons", latent_dim=4,
                         model=f"{d / 'my_gan.py'}:TinyDCGAN")
    model = gen
    for step in (PRUNE_SVD_FIXED["steps"][0], PRUNE_SVD_FIXED["steps"][2]):
        model = compress(model, config_from_dict(step)).model
    net, rec = resolve(model.network)
    x = [np.random.default_rng(0).normal(size=(64, 4)), np.random.default_rng(1).uniform(0, 3, (64, 1))]
    with torch.no_grad():
        y = model.network(*[torch.from_numpy(a).float() for a in x]).double().numpy()
    np.testing.assert_array_equal(build_cast_network(net, rec, [4, 1]).emulate(x), y)
