"""The ``simcompress`` command: each subcommand parses its options, calls one library function and prints.

Each subcommand lives in the module of its name (``generate`` in ``generate.py``, ``plot-layers`` in
``plot_layers.py``, ``qkeras-import``/``qkeras-export`` in ``qkeras.py``) and registers itself on
:data:`app`; options used by several commands are defined once in ``_options.py``.
Exit codes: 0 success, 1 a fidelity gate failed, 2 bad input.
"""

from __future__ import annotations

import importlib
import sys

from ._app import app, console, err_console, main

# Importing the command modules registers the subcommands on ``app``, in the order ``--help`` lists them.
COMMAND_MODULES = (
    "version", "simulate", "info", "convert", "plot_layers", "train", "validate", "compress", "sweep", "firmware",
    "generate", "merge", "cluster_script", "demo", "qkeras", "import_onnx", "import_torch",
)
for _name in COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_name}")

__all__ = ["app", "console", "err_console", "main"]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
