"""A tiny stand-in generator and a batch backend around it, importable by worker processes.

The model is a small ``nn.Module`` with the contract's interface (``geometry``,
``latent_dim``, ``network(z, c)``, ``sample(E, generator=...)``), stored as a
bundle directory (``config.json`` + ``weights.safetensors``) and loaded without
pickles. The generation loop is the generators package's ``generate_showers``.
Loads are counted in a file next to the bundle so tests can check that each
worker process loads the model once.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from simcompress.batch._backend import Backend
from simcompress.errors import BundleError
from simcompress.showers import Geometry

GEOMETRY = "ds1-photons"


class TinyGenerator(nn.Module):
    """Noise + log-energy -> 368 voxel fractions times the incident energy (MeV)."""

    kind = "tiny"

    def __init__(self, latent_dim: int = 4) -> None:
        super().__init__()
        self.geometry = Geometry.from_name(GEOMETRY)
        self.latent_dim = latent_dim
        self.energy_range_mev = (256.0, 4194304.0)
        self.network = nn.Sequential(nn.Linear(latent_dim + 1, 16), nn.ReLU(), nn.Linear(16, self.geometry.n_voxels))

    def condition(self, e: torch.Tensor) -> torch.Tensor:
        return (torch.log(e) / np.log(4194304.0)).reshape(-1, 1)

    def postprocess(self, y: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        return torch.softmax(y, dim=1) * e.reshape(-1, 1)

    def check_energy_range(self, low_mev: float, high_mev: float, *, strict: bool = False, source: str = "") -> bool:
        """The contract's range check; the stand-in's range is CaloChallenge ds1's, so ``ds1`` always fits."""
        lo, hi = self.energy_range_mev
        inside = low_mev >= lo * (1 - 1e-6) and high_mev <= hi * (1 + 1e-6)
        if not inside and strict:
            raise ValueError(f"{source}: energies outside the stand-in's range {lo}..{hi} MeV")
        return inside

    @torch.no_grad()
    def sample(self, incident_energies: torch.Tensor, generator: torch.Generator | None = None,
               batch_size: int = 10_000, **_options: Any) -> torch.Tensor:
        e = torch.as_tensor(incident_energies, dtype=torch.float32).reshape(-1)
        z = torch.randn(e.shape[0], self.latent_dim, generator=generator)
        return self.postprocess(self.network(torch.cat([z, self.condition(e)], dim=1)), e)


def make_bundle(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = TinyGenerator()
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"kind": "tiny", "latent_dim": model.latent_dim}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path / "weights.safetensors"))
    return path


def _generate_standin(gen: Any, n_events: int, energies: str, seed: int, chunk_size: int) -> Any:
    """Used only while ``simcompress.generators.generate`` is not available."""
    from simcompress.showers import ShowerSet
    from simcompress.showers.energies import parse_energy_spec

    spec = parse_energy_spec(energies)
    e_ss, t_ss = np.random.SeedSequence(seed).spawn(2)
    rng = np.random.default_rng(e_ss)
    g = torch.Generator().manual_seed(int(t_ss.generate_state(1, np.uint64)[0] >> 1))
    for start in range(0, n_events, chunk_size):
        m = min(chunk_size, n_events - start)
        e = spec.sample(m, rng)
        showers = gen.sample(torch.from_numpy(e.astype(np.float32)), generator=g)
        yield ShowerSet(e.astype(np.float32), showers.numpy(), gen.geometry, {"seed": seed})


class StandinBackend(Backend):
    def model_path(self, ref: str) -> Path:
        p = Path(ref)
        if not (p / "config.json").is_file():
            from simcompress.errors import UnknownNameError

            raise UnknownNameError(f"--model: {ref!r} is not a stand-in bundle")
        return p.resolve()

    def model_ref_for_workers(self, ref: str) -> str:
        return str(self.model_path(ref))

    def model_hash(self, ref: str) -> str:
        p = self.model_path(ref)
        h = hashlib.sha256()
        for name in ("config.json", "weights.safetensors"):
            if not (p / name).is_file():
                raise BundleError(f"{p}: {name} missing")
            h.update((p / name).read_bytes())
        return h.hexdigest()

    def load_model(self, ref: str) -> Any:
        p = self.model_path(ref)
        with open(p / "loads.log", "a") as f:
            f.write(f"{os.getpid()}\n")
        model = TinyGenerator(json.loads((p / "config.json").read_text())["latent_dim"])
        model.load_state_dict(load_file(str(p / "weights.safetensors")))
        return model.eval()

    def iter_showers(self, model: Any, n_events: int, energies: str, seed: int, chunk_size: int) -> Any:
        try:
            from simcompress.generators.generate import generate_showers
        except ImportError:
            chunks = _generate_standin(model, n_events, energies, seed, chunk_size)
        else:
            chunks = generate_showers(model, n_events, energies, seed=seed, chunk_size=chunk_size)
        return _slowed(chunks)


#: test hook (set in a batch job's prologue): seconds to sleep before each chunk, so that a run
#: lasts long enough to be cancelled or to outlive its walltime without using CPU. The showers
#: do not change. With SLOW_FLAG_ENV set, it sleeps only while that file exists.
SLEEP_ENV = "BATCH_STANDIN_CHUNK_SLEEP"
SLOW_FLAG_ENV = "BATCH_STANDIN_SLOW_FLAG"


def _slowed(chunks: Any) -> Any:
    import time

    delay = float(os.environ.get(SLEEP_ENV, "0") or 0)
    flag = os.environ.get(SLOW_FLAG_ENV)
    for chunk in chunks:
        if delay > 0 and (flag is None or os.path.exists(flag)):
            time.sleep(delay)
        yield chunk


SPEC = "batch_standin:StandinBackend"


def set_env(name: str, value: str | None) -> None:
    """Set (or with ``None`` remove) an environment variable in this process; for ``client.run``."""
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def decoded(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    from simcompress.showers.io import open_showers

    s = open_showers(run_dir).read()
    return s.incident_energy, s.showers
