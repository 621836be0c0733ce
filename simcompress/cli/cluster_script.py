"""``simcompress cluster-script``: the batch job script a ``--cluster`` run would submit."""

from __future__ import annotations

from pathlib import Path

import typer

from ._app import app

__all__ = ["cluster_script_command"]


@app.command("cluster-script")
def cluster_script_command(
    cluster: Path = typer.Option(..., "--cluster", help="Batch-site config, configs/cluster/<site>.yaml."),
) -> None:
    """Print the batch job script that a --cluster run would submit (no batch system needed)."""
    from ..batch import job_script

    typer.echo(job_script(cluster))
