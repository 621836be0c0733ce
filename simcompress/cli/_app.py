"""The typer application and the error handling shared by every subcommand."""

from __future__ import annotations

import logging
import sys

import typer
from rich.console import Console

from ..errors import FidelityGateError, SimcompressError

app = typer.Typer(
    name="simcompress",
    help=(
        "Compress calorimeter fast-simulation generators, validate their physics against "
        "reference showers, build FPGA firmware, and generate showers in batch.\n\n"
        "Exit codes: 0 success, 1 a fidelity gate failed, 2 bad input."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


class GateFailed(Exception):
    """Raised by a command whose fidelity gate failed (exit code 1)."""


def main(argv: list[str] | None = None) -> int:
    """Console entry point: one-line errors and the documented exit codes."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app(args=argv, standalone_mode=False)
    except (GateFailed, FidelityGateError) as err:
        err_console.print(f"[red]gate failed:[/red] {err}", highlight=False, soft_wrap=True)
        return 1
    except SimcompressError as err:
        err_console.print(f"[red]error:[/red] {err}", highlight=False, soft_wrap=True)
        return 2
    except FileNotFoundError as err:
        err_console.print(f"[red]error:[/red] {err.filename}: file not found", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    except typer.Exit as ex:
        return int(ex.exit_code or 0)
    except typer.Abort:
        return 1
    except Exception as err:  # usage errors from typer's (vendored) click
        if _is_click_exception(err):
            err.show()  # type: ignore[attr-defined]
            return 2
        raise
    return 0


def _is_click_exception(err: BaseException) -> bool:
    """typer >= 0.25 vendors click as ``typer._click``; older typer uses ``click``."""
    classes: list[type] = []
    for mod in ("typer._click.exceptions", "click.exceptions"):
        try:
            classes.append(__import__(mod, fromlist=["ClickException"]).ClickException)
        except ImportError:
            continue
    return isinstance(err, tuple(classes))


def run() -> None:  # pragma: no cover - console script shim
    sys.exit(main())


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details (INFO level)."),
) -> None:
    """simcompress: calorimeter fast-simulation compression, validation, firmware and batch generation."""
    if verbose:
        logging.getLogger("simcompress").setLevel(logging.INFO)
