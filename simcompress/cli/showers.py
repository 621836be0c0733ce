"""``simcompress simulate`` and ``simcompress info`` (owned by the showers work)."""

from __future__ import annotations

from ._app import app  # noqa: F401
