"""``simcompress train`` in one call: a generator trained on reference showers read from files or
simulated with the built-in GFlash reference, written as a bundle."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["train_on_reference"]


def train_on_reference(
    kind: str,
    out_dir: str | os.PathLike[str],
    *,
    data: str | os.PathLike[str] | None = None,
    reference_events: int = 0,
    reference_seed: int = 1,
    reference_energies: str = "ds1",
    config: str | os.PathLike[str] | None = None,
    overrides: dict[str, Any] | None = None,
    resume: bool = True,
    progress: bool = True,
    command: str | None = None,
    log: Callable[[str], None] | None = None,
) -> Any:
    """Train a ``kind`` generator (recipe ``config`` with ``overrides``) on the showers in ``data``, or on
    ``reference_events`` simulated ones (exactly one of the two), and write its bundle to ``out_dir``.

    ``command`` is recorded in the card as the way to retrain; ``log`` receives the JSON monitor lines.
    Returns the trained generator.
    """
    from ..generators.train import load_train_config, train_generator

    cfg = load_train_config(kind, config, overrides or {})
    if (data is None) == (reference_events <= 0):
        msg = "train: give exactly one of --data FILE or --reference-events N"
        raise ConfigError(msg)
    if data is not None:
        from ..showers.geometry import Geometry
        from ..showers.io import open_showers

        reader = open_showers(str(data), geometry=Geometry.from_name(cfg.geometry))
        showers = reader.read()
        source = str(data)
    else:
        from ..showers.reference import simulate

        showers = simulate(cfg.geometry, reference_events, energies=reference_energies, seed=reference_seed, progress=progress)
        source = (
            f"simcompress.showers.reference.simulate({cfg.geometry!r}, {reference_events}, "
            f"energies={reference_energies!r}, seed={reference_seed})"
        )
    return train_generator(
        showers, cfg, Path(out_dir), resume=resume, progress=progress, data_source=source,
        card_extra={"retrain_command": command} if command else None, log=log,
    )
