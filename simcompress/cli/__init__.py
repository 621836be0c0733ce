"""The ``simcompress`` command. The only place that wires the subpackages together.

Each subcommand lives in its own module of this package and registers itself on
:data:`app`. Exit codes: 0 success, 1 a fidelity gate failed, 2 bad input.
"""

from __future__ import annotations

import sys

# Importing the command modules registers the subcommands on ``app``.
from . import showers as _showers  # noqa: F401
from ._app import app, console, err_console, main

for _mod in ("generators", "validate", "compress", "sweep", "firmware", "batch", "demo", "interop", "external"):
    try:
        __import__(f"{__name__}.{_mod}")
    except ModuleNotFoundError as _err:  # a command module not written yet
        if _err.name != f"{__name__}.{_mod}":
            raise

__all__ = ["app", "console", "err_console", "main"]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
