"""Run the TensorFlow side (QKeras, hls4ml's Keras route) in its own interpreter.

TensorFlow 2.14.1 (the last version QKeras 0.9.0 and hls4ml 1.3.0's ``qkeras`` extra
support) needs ``numpy<2``, while the simcompress environment has numpy 2 and torch,
so the TensorFlow side lives in a separate virtual environment (``make qkeras-env``
creates ``.venv-qkeras`` with the pinned set, see ``pyproject.toml``'s ``qkeras``
extra) and is driven through :func:`run_tf_job`, which runs
``simcompress/interop/_tf_scripts/qkeras_tool.py`` there. Nothing here imports TensorFlow.

The interpreter is ``$SIMCOMPRESS_QKERAS_PYTHON`` if set, else ``.venv-qkeras/bin/python``
in the current directory or the source checkout.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["PINNED_REQUIREMENTS", "TOOL", "TFJobError", "qkeras_python", "run_tf_job"]

#: The TensorFlow-side script (standalone; never imports simcompress).
TOOL = Path(__file__).resolve().parent / "_tf_scripts" / "qkeras_tool.py"
#: The measured-to-work set (TF 2.14.1 needs numpy<2; qkeras lacks its pyparsing dependency;
#: tfmot 0.8 would pull tf-keras 2.15 and a long pip backtrack).
PINNED_REQUIREMENTS = ("tensorflow-cpu==2.14.1", "qkeras==0.9.0", "hls4ml==1.3.0",
                       "tensorflow-model-optimization==0.7.5", "pyparsing")


class TFJobError(RuntimeError):
    """A task of the TensorFlow-side job failed (message carries its error)."""


def qkeras_python() -> Path | None:
    """The TensorFlow-side interpreter, or ``None`` if there is none."""
    env = os.environ.get("SIMCOMPRESS_QKERAS_PYTHON")
    if env:
        p = Path(env)
        if not (p.is_file() and os.access(p, os.X_OK)):
            msg = f"SIMCOMPRESS_QKERAS_PYTHON={env!r} is not an executable file"
            raise ConfigError(msg)
        return p
    roots = [Path.cwd(), Path(__file__).resolve().parents[2]]
    for root in roots:
        p = root / ".venv-qkeras" / "bin" / "python"
        if p.is_file() and os.access(p, os.X_OK):
            return p
    return None


def run_tf_job(tasks: list[dict[str, Any]], workdir: str | os.PathLike[str], *, timeout: float = 600.0,
               python: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """Run ``tasks`` (see the tool's docstring) in the TensorFlow interpreter; returns per-task results.

    Raises:
        ConfigError: no TensorFlow-side interpreter (run ``make qkeras-env``).
        TFJobError: a task failed (not marked ``may_fail``), or the interpreter crashed.
    """
    py = Path(python) if python is not None else qkeras_python()
    if py is None:
        msg = (
            "no QKeras/TensorFlow interpreter: run `make qkeras-env` (creates .venv-qkeras) "
                          "or set SIMCOMPRESS_QKERAS_PYTHON"
        )
        raise ConfigError(msg)
    wd = Path(workdir).resolve()
    wd.mkdir(parents=True, exist_ok=True)
    fd, job = tempfile.mkstemp(prefix="qkeras_job.", suffix=".json", dir=wd)
    with os.fdopen(fd, "w") as f:
        json.dump({"workdir": str(wd), "tasks": tasks}, f)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("OMP_NUM_THREADS", "1")
    try:
        proc = subprocess.run([str(py), str(TOOL), job], capture_output=True, text=True, timeout=timeout, env=env,
                              check=False)
    finally:
        Path(job).unlink(missing_ok=True)
    res_file = wd / "result.json"
    results = json.loads(res_file.read_text()) if res_file.is_file() else []
    failed = [r for r in results if not r.get("ok")]
    if proc.returncode != 0 or not results:
        msg = failed[0]["error"] if failed else (proc.stderr.strip().splitlines() or ["no output"])[-1]
        detail = failed[0].get("traceback", "") if failed else proc.stderr[-3000:]
        msg_0 = f"TensorFlow-side job failed ({py}): {msg}\n{detail}"
        raise TFJobError(msg_0)
    return results
