"""``manifest.json``: the record of a sharded run, rewritten atomically.

The manifest names the run (model bundle hash, event counts, energy spec, root
seed, file format, chunk size), the software that produced it, and for every
finished shard its file, event count and content hash (sha256 of the decoded
arrays, :mod:`simcompress.showers.io.hashing`). A shard counts as done only once it is
in the manifest, so a shard is never counted twice; resuming compares the run's
identity with the manifest and refuses a directory that holds a different run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .._atomic import write_json_atomic
from .._provenance import software_versions, utc_now
from ..errors import ConfigError

__all__ = ["FORMAT_VERSION", "IDENTITY_KEYS", "MANIFEST_NAME", "Manifest", "shard_filename", "write_json_atomic"]

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
#: config keys that define a run: a directory may only be resumed with the same values.
IDENTITY_KEYS = ("model_hash", "n_events", "shard_size", "energies", "root_seed", "format", "chunk_size", "backend")
_EXT = {"root": "root", "hdf5": "h5"}


def shard_filename(index: int, format: str) -> str:
    return f"shard_{index:05d}.{_EXT[format]}"


class Manifest:
    """In-memory view of ``<run>/manifest.json``."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data

    # ---- construction ---------------------------------------------------------------
    @classmethod
    def new(cls, run_dir: Path, config: dict[str, Any], model: dict[str, Any]) -> Manifest:
        now = utc_now()
        data = {
            "format_version": FORMAT_VERSION,
            "kind": "simcompress.batch.run",
            "created": now,
            "updated": now,
            "config": dict(config),
            "model": dict(model),
            "software_versions": software_versions(),
            "complete": False,
            "shards": {},
            "history": [],
        }
        return cls(run_dir / MANIFEST_NAME, data)

    @classmethod
    def load(cls, run_dir: Path) -> Manifest | None:
        path = run_dir / MANIFEST_NAME
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            msg = f"{path}: not a readable manifest ({err}); move it away to start a new run"
            raise ConfigError(msg) from None
        if not isinstance(data, dict) or data.get("kind") != "simcompress.batch.run" or "config" not in data:
            msg = f"{path}: not a simcompress batch manifest"
            raise ConfigError(msg)
        if data.get("format_version") != FORMAT_VERSION:
            msg = f"{path}: manifest format_version {data.get('format_version')!r}; this simcompress reads {FORMAT_VERSION}"
            raise ConfigError(msg)
        data.setdefault("shards", {})
        data.setdefault("history", [])
        return cls(path, data)

    # ---- identity -------------------------------------------------------------------
    @property
    def config(self) -> dict[str, Any]:
        return self.data["config"]

    def check_same_run(self, config: dict[str, Any]) -> None:
        for key in IDENTITY_KEYS:
            old, new = self.config.get(key), config.get(key)
            if old != new:
                msg = (
                    f"{self.path}: this directory holds a different run ({key}: {old!r} in the manifest, "
                    f"{new!r} now); use another --out or the original settings to resume"
                )
                raise ConfigError(msg)

    # ---- shards ---------------------------------------------------------------------
    @property
    def n_shards(self) -> int:
        return int(self.config["n_shards"])

    def shard(self, index: int) -> dict[str, Any] | None:
        return self.data["shards"].get(f"{index:05d}")

    def record(self, result: dict[str, Any]) -> None:
        entry: dict[str, Any] = {k: result[k] for k in ("file", "n_events", "sha256") if k in result}
        for k in ("seed", "seconds", "host"):
            if k in result and result.get("status") == "generated":
                entry[k] = result[k]
        old = self.shard(int(result["shard"]))
        if old is not None and result.get("status") == "kept":
            entry = {**old, **entry}
        self.data["shards"][f"{int(result['shard']):05d}"] = entry

    def forget(self, index: int) -> None:
        self.data["shards"].pop(f"{index:05d}", None)

    def done_events(self) -> int:
        return sum(int(s["n_events"]) for s in self.data["shards"].values())

    def missing(self) -> list[int]:
        return [i for i in range(self.n_shards) if self.shard(i) is None]

    def shard_files(self) -> list[Path]:
        run_dir = self.path.parent
        return [run_dir / self.data["shards"][f"{i:05d}"]["file"] for i in range(self.n_shards)]

    def write(self) -> None:
        self.data["updated"] = utc_now()
        self.data["complete"] = not self.missing() and self.done_events() == int(self.config["n_events"])
        write_json_atomic(self.path, self.data)
