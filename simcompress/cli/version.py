"""``simcompress version``: the versions of simcompress and the libraries it builds on."""

from __future__ import annotations

from ._app import app, console

__all__ = ["version"]


@app.command()
def version() -> None:
    """Print the versions of simcompress and the libraries it builds on."""
    from .._provenance import software_versions

    for k, v in software_versions().items():
        console.print(f"{k} {v}")
