"""Atomic writes, shared by every subpackage.

A file (or a folder) is written under a temporary name in the destination's own folder
and moved into place with :func:`os.replace` only when complete, so an interrupted
write never leaves a file that looks finished. The standard library has no such helper
and the small ones on PyPI (``atomicwrites``) are archived, hence this module.

>>> import json, pathlib, tempfile
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> write_json_atomic(d / "a.json", {"x": 1})
>>> json.loads((d / "a.json").read_text())
{'x': 1}
>>> with atomic_path(d / "b.txt") as tmp:
...     _ = tmp.write_text("done")
>>> (d / "b.txt").read_text(), sorted(p.name for p in d.iterdir())
('done', ['a.json', 'b.txt'])
>>> oct((d / "b.txt").stat().st_mode & 0o777 & ~0o022)  # the umask's permissions, not mkstemp's 0600
'0o644'

"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_dir", "atomic_path", "tmp_name", "write_bytes_atomic", "write_json_atomic", "write_text_atomic"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def tmp_name(path: str | os.PathLike[str]) -> Path:
    """A hidden temporary name beside ``path`` (same folder, so ``os.replace`` is atomic)."""
    p = Path(path)
    return p.with_name(f".{p.name}.{os.getpid()}.part")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on any error it is removed."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".part", dir=p.parent)
    os.close(fd)
    tmp = Path(name)
    tmp.chmod(0o666 & ~_umask())  # mkstemp makes 0600; a finished file gets the usual permissions
    try:
        yield tmp
        if fsync and tmp.exists():
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it becomes ``path``.

    An existing ``path`` is replaced only with ``overwrite`` (it is moved aside first and
    removed after the new folder is in place); otherwise :class:`FileExistsError`.
    """
    p = Path(path)
    if p.exists() and not overwrite:
        msg = f"{p}: exists (pass overwrite=True to replace it)"
        raise FileExistsError(msg)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{p.name}.", suffix=".part", dir=p.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700
    try:
        yield tmp
        old = None
        if p.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{p.name}.", suffix=".old", dir=p.parent))
            os.replace(p, old / p.name)
        os.replace(tmp, p)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike[str], data: Any, *, indent: int | None = 1, sort_keys: bool = False) -> None:
    """Write ``data`` as strict JSON (no NaN) plus a newline to ``path`` atomically."""
    write_text_atomic(path, json.dumps(data, indent=indent, sort_keys=sort_keys, allow_nan=False) + "\n")
