"""Chunked shower generation with provenance: :func:`generate_showers`.

Seeding: ``numpy.random.SeedSequence(seed)`` spawns one child per chunk for the incident
energies, and the noise of chunk ``i`` comes from ``torch.Generator().manual_seed(s_i)`` with
``s_i`` drawn from a second child, so chunk ``i`` is identical whatever the other chunks and
whether chunks are made in one process or spread over workers (``first_chunk``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._progress import progress_bar
from .._provenance import software_versions, utc_now
from ..errors import ConfigError
from ..showers.data import ShowerSet
from ..showers.energies import EnergySpec, parse_energy_spec
from .base import ShowerGenerator

__all__ = ["chunk_seeds", "generate_showers"]


def chunk_seeds(seed: int, n_chunks: int, first_chunk: int = 0) -> list[tuple[np.random.SeedSequence, int]]:
    """Per-chunk ``(energy SeedSequence, torch noise seed)`` for chunks ``first_chunk ..``."""
    root = np.random.SeedSequence(int(seed))
    children = root.spawn(first_chunk + n_chunks)[first_chunk:]
    out = []
    for child in children:
        e_seq, z_seq = child.spawn(2)
        out.append((e_seq, int(z_seq.generate_state(1, dtype=np.uint64)[0] & 0x7FFF_FFFF_FFFF_FFFF)))
    return out


def generate_showers(
    gen: ShowerGenerator | str | os.PathLike[str],
    n_events: int,
    energies: EnergySpec | str = "ds1",
    seed: int = 0,
    chunk_size: int = 10_000,
    *,
    batch_size: int | None = None,
    progress: bool = False,
    first_chunk: int = 0,
    strict: bool = False,
) -> Iterator[ShowerSet]:
    """Yield ``ceil(n_events / chunk_size)`` :class:`ShowerSet` chunks sampled from ``gen``.

    Args:
        gen: a generator, a bundle path or a zoo name.
        n_events: total number of showers.
        energies: incident-energy spec (``"ds1"``, ``"log-uniform:1e3,1e6"``, ``"file:ref.root"``, ...).
        seed: master seed (see module docstring).
        chunk_size: showers per yielded chunk (bounds memory).
        batch_size: network batch size (default ``chunk_size``).
        progress: show a rich progress bar.
        first_chunk: index of the first chunk (for sharded generation).
        strict: refuse (:class:`~simcompress.errors.ExtrapolationError`) an energy spec that reaches
            outside the generator's trained range; otherwise one
            :class:`~simcompress.errors.ExtrapolationWarning` is given.

    Each chunk's ``metadata`` holds the provenance: generator kind and bundle hash, seed,
    chunk index, energy spec and software versions.
    """
    if isinstance(gen, (str, os.PathLike)):
        from .bundle import load_generator

        gen = load_generator(gen)
    n_events = int(n_events)
    if n_events < 0:
        msg = f"generate: number of events must be >= 0, got {n_events}"
        raise ConfigError(msg)
    if chunk_size < 1:
        msg = f"generate: chunk_size must be >= 1, got {chunk_size}"
        raise ConfigError(msg)
    spec = parse_energy_spec(energies)
    gen.check_energy_range(spec.low_mev, spec.high_mev, strict=strict, source=f"energies {spec.text!r}")
    n_chunks = -(-n_events // chunk_size)
    seeds = chunk_seeds(seed, n_chunks, first_chunk)
    base_meta: dict[str, Any] = {
        "generator": {
            "kind": gen.kind,
            "bundle_hash": getattr(gen, "bundle_hash", None),
            "bundle_path": getattr(gen, "bundle_path", None),
            "name": Path(str(getattr(gen, "bundle_path", ""))).name or None,
        },
        "seed": int(seed),
        "energies": spec.to_dict(),
        "n_events": n_events,
        "chunk_size": int(chunk_size),
        "software": software_versions(),
        "created": utc_now(),
    }
    with progress_bar(f"generate {gen.kind}", n_events, enabled=progress, rate_unit="showers") as bar:
        for i, (e_seq, z_seed) in enumerate(seeds):
            n = min(chunk_size, n_events - i * chunk_size)
            e = spec.sample(n, np.random.default_rng(e_seq)).astype(np.float32)
            g = torch.Generator().manual_seed(z_seed)
            showers = gen.sample(torch.from_numpy(e), generator=g, batch_size=batch_size or chunk_size, check_range=False).cpu().numpy()
            meta = {**base_meta, "chunk": first_chunk + i}
            yield ShowerSet(e, showers, gen.geometry, meta)
            bar.advance(n)
