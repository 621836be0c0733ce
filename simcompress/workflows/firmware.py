"""``simcompress firmware`` in one call: the hls4ml IP of a fixed-point generator and, with a
reference, what the firmware costs in physics.

:func:`build_firmware` runs :func:`simcompress.firmware.export_firmware` (which writes the IP
folder atomically) and, given reference showers, generates showers through the C simulation and
through the float network with the same noise, validates both against the reference
(``validation/`` in the IP folder) and adds the outcome to ``firmware.json`` as ``physics``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._atomic import write_text_atomic
from ..errors import ConfigError

__all__ = ["FirmwareRun", "build_firmware", "firmware_physics"]


@dataclass
class FirmwareRun:
    """The IP folder, its ``firmware.json`` content, and the vendor-synthesis error if ``synth`` found no tool
    (the project is written all the same)."""

    out_dir: Path
    report: dict[str, Any]
    synth_error: Exception | None = None

    @property
    def passed(self) -> bool:
        """Bit-exact against the C simulation (and Verilator, when run), physics within the gate when measured."""
        r = self.report
        if not r["bit_exactness"]["passed"]:
            return False
        if r.get("rtl") and r["rtl"]["mismatches"]:
            return False
        return not (r.get("physics") and not r["physics"]["passed"])


def build_firmware(
    model: str | os.PathLike[str],
    config: Any,
    out_dir: str | os.PathLike[str],
    *,
    n_samples: int | None = None,
    synth: bool = False,
    rtl: bool | None = None,
    overwrite: bool = False,
    reference: str | os.PathLike[str] | None = None,
    physics_events: int = 5000,
    gate: str = "default",
) -> FirmwareRun:
    """Export the firmware of ``model`` (bundle with ``precision.json``) to ``out_dir``; see the module docstring."""
    from ..firmware import export_firmware
    from ..firmware.export import SynthesisUnavailableError

    out = Path(out_dir)
    if n_samples is not None and n_samples < 1:
        msg = f"--samples must be >= 1, got {n_samples}"
        raise ConfigError(msg)
    if reference is not None and not Path(reference).exists():
        msg = f"--reference {reference}: file not found"
        raise ConfigError(msg)
    synth_error: Exception | None = None
    try:
        res = export_firmware(model, config, out, n_samples=n_samples, synth=synth, rtl=rtl, overwrite=overwrite,
                              keep_model=reference is not None)
    except SynthesisUnavailableError as err:
        synth_error = err
        res = None
    report = json.loads((out / "firmware.json").read_text())
    if res is not None and reference is not None:
        report["physics"] = firmware_physics(res, Path(reference), physics_events, gate, out)
        write_text_atomic(out / "firmware.json", json.dumps(report, indent=2, default=str) + "\n")
    return FirmwareRun(out, report, synth_error)


def firmware_physics(res: Any, reference: Path, n_events: int, gate: str, out: Path) -> dict[str, Any]:
    """Showers generated through the C simulation, and through the float network with the same noise,
    vs the reference (simcompress.validation): what the firmware costs in physics, separately from the model."""
    import numpy as np
    import torch

    from ..firmware.export import csim_showers, float_network
    from ..firmware.graph import resolve
    from ..showers.data import ShowerSet
    from ..showers.io import open_showers
    from ..validation import validate

    gen = res.model
    if not all(hasattr(gen, a) for a in ("condition", "postprocess", "latent_dim", "geometry")):
        msg = f"--reference needs a shower generator bundle; {type(gen).__name__} is not one"
        raise ConfigError(msg)
    reader = open_showers(str(reference))
    energies = reader.incident_energy()[:n_events].astype(np.float32)
    showers = csim_showers(gen, res.hls_model, res.graph, energies, seed=0)
    e = torch.from_numpy(energies)
    rng = torch.Generator().manual_seed(0)
    z = torch.randn(len(e), int(gen.latent_dim), generator=rng)  # as csim_showers: noise, then extras
    extras = gen.sample_extras(len(e), rng) if hasattr(gen, "sample_extras") else {}
    with torch.no_grad():
        net, _ = resolve(gen)
        y = float_network(net)(z, gen.condition(e).reshape(len(e), -1))
        showers_float = gen.postprocess(y, e, **extras).cpu().numpy().astype(np.float32)
    cands = {"csim": ShowerSet(energies, showers, gen.geometry, {"source": "hls4ml C simulation"}),
             "float": ShowerSet(energies, showers_float, gen.geometry, {"source": "float network, same noise"})}
    vres = validate(str(reference), cands, gate, out_dir=out / "validation", progress=False)
    d = vres.to_dict().get("candidates", {})

    def feats(name: str) -> dict[str, Any]:
        return {k: {m: v for m, v in f.items() if m in ("ks", "w1", "sp")}
                for k, f in d.get(name, {}).get("features", {}).items() if isinstance(f, dict)}

    return {"n_events": len(energies), "reference": str(reference), "gate": gate,
            "passed": bool(vres.passed_for("csim")), "float_passed": bool(vres.passed_for("float")),
            "report": "validation/ (metrics.json, report.html)", "features": feats("csim"),
            "features_float_same_noise": feats("float")}
