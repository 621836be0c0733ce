"""The engine's only contact with generators and shower files.

:class:`Backend` gathers the calls the batch engine makes into the rest of
simcompress (model bundles, the generation loop, shower-file I/O), so that the
engine itself is pure orchestration. Workers receive the backend as an import
string (``"module:attribute"``), never as a pickled object. The default backend
uses the contract functions of ``simcompress.generators`` and
``simcompress.showers.io``; another package can hand in its own backend (for
example a generator that is not a simcompress bundle) through the ``backend``
argument of :func:`simcompress.batch.run_generation`.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..errors import ConfigError, UnknownNameError, did_you_mean

__all__ = ["DEFAULT_BACKEND", "Backend", "get_backend"]

DEFAULT_BACKEND = "simcompress.batch._backend:Backend"


class Backend:
    """Default backend: simcompress model bundles and shower files."""

    def warm(self) -> None:
        """Import what tasks need (called once per worker process before the timed run)."""
        import awkward  # noqa: F401
        import h5py  # noqa: F401
        import rich.progress  # noqa: F401
        import uproot  # noqa: F401

        from ..generators import (
            GENERATORS,
            generate,  # noqa: F401
        )
        from ..showers import io  # noqa: F401

        GENERATORS.list()  # loads the entry-point plugins (compressed/distilled generator kinds)

    # ---- models (client and workers) -------------------------------------------------
    def zoo_names(self) -> list[str]:
        from ..generators import zoo_names

        return list(zoo_names())

    def model_path(self, ref: str) -> Path:
        """Local path of a bundle given as a path or a shipped ("zoo") name."""
        p = Path(ref).expanduser()
        if p.exists():
            return p.resolve()
        if os.sep not in ref and "/" not in ref and ref in self.zoo_names():
            from ..generators.bundle import zoo_path

            return Path(zoo_path(ref))
        msg = (
            f"--model: {ref!r} is neither a model bundle directory nor a shipped model; "
            f"{did_you_mean(ref, self.zoo_names())}"
        )
        raise UnknownNameError(msg)

    def model_ref_for_workers(self, ref: str) -> str:
        """What workers receive: shipped names stay names (each node resolves its own install), paths become absolute."""
        path = self.model_path(ref)
        return ref if not Path(ref).expanduser().exists() else str(path)

    def model_hash(self, ref: str) -> str:
        from ..generators import bundle_hash

        return str(bundle_hash(self.model_path(ref)))

    def load_model(self, ref: str) -> Any:
        from ..generators import load_generator

        return load_generator(self.model_path(ref), device="cpu")

    def model_info(self, model: Any) -> dict[str, Any]:
        geometry = getattr(model, "geometry", None)
        return {
            "kind": getattr(model, "kind", type(model).__name__),
            "geometry": getattr(geometry, "name", None),
            "n_voxels": getattr(geometry, "n_voxels", None),
        }

    # ---- energies -------------------------------------------------------------------
    def check_energies(self, spec: str) -> str:
        """Validate an energy spec on the client; returns it with ``file:`` paths made absolute."""
        from ..showers.energies import parse_energy_spec

        spec = spec.strip()
        if spec.startswith("file:"):
            spec = "file:" + str(Path(spec[5:]).expanduser().resolve())
        parse_energy_spec(spec)
        return spec

    # ---- generation -------------------------------------------------------------------
    def iter_showers(self, model: Any, n_events: int, energies: str, seed: int, chunk_size: int) -> Iterator[Any]:
        """Yield :class:`~simcompress.showers.ShowerSet` chunks (``generate_showers`` of the generators package)."""
        from ..generators.generate import generate_showers

        return generate_showers(model, n_events, energies, seed=seed, chunk_size=chunk_size)

    # ---- files ------------------------------------------------------------------------
    def write(self, path: Path, chunks: Iterable[Any], *, format: str, metadata: dict[str, Any]) -> None:
        from ..showers.io import write_showers

        write_showers(path, chunks, format=format, metadata=metadata)

    def iter_file(self, path: Path | list[Path], step: int) -> Iterator[Any]:
        from ..showers.io import open_showers

        reader = open_showers([str(p) for p in path] if isinstance(path, list) else str(path))
        return reader.iterate(step_size=step)

    def file_metadata(self, path: Path) -> dict[str, Any]:
        from ..showers.io import open_showers

        return dict(open_showers(str(path)).metadata)


_CACHE: dict[str, Backend] = {}


def get_backend(spec: str | None = None) -> Backend:
    """Import the backend named ``"module:attribute"`` (a class or an instance); cached per process."""
    spec = spec or DEFAULT_BACKEND
    if spec in _CACHE:
        return _CACHE[spec]
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        msg = f"backend {spec!r}: expected 'module:attribute'"
        raise ConfigError(msg)
    try:
        obj = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as err:
        msg = f"backend {spec!r} cannot be imported: {err}"
        raise ConfigError(msg) from None
    backend = obj() if isinstance(obj, type) else obj
    _CACHE[spec] = backend
    return backend
