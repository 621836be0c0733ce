"""``simcompress validate``: compare candidate showers with reference showers, gate, report."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import ConfigError
from ._app import GateFailed, app, console, err_console
from ._options import ENERGY_BRANCH_OPT, ENERGY_UNIT_OPT, TREE_OPT, VOXEL_UNIT_OPT, VOXELS_OPT, read_options


def _parse_candidate(spec: str, index: int) -> tuple[str, str]:
    """``name=path`` or ``path`` (name from the file stem); a path may carry ``;key=value`` read options."""
    from ..showers.layout import split_source

    if "=" in spec and not Path(spec).exists():
        name, _, path = spec.partition("=")
        if ";" not in name:  # 'x.root;voxels=cells' is a path with options, not NAME=PATH
            if not name or not path:
                msg = f"--candidate {spec!r}: expected PATH or NAME=PATH"
                raise ConfigError(msg)
            return name, path
    stem = Path(split_source(spec)[0].rstrip("/")).stem or f"candidate{index}"
    return stem, spec


@app.command()
def validate(
    reference: str | None = typer.Option(
        None, "--reference", "-r", help="Reference showers: ROOT/HDF5 file, directory or glob (optional with --teacher)."
    ),
    teacher: str | None = typer.Option(
        None, "--teacher", "-t", help="Showers of the uncompressed model at the candidates' incident energies: measure each "
        "candidate's damage against them (and, with --reference, compare all three side by side).",
    ),
    candidate: list[str] = typer.Option(
        ..., "--candidate", "-c", help="Candidate showers, PATH or NAME=PATH; repeat for several (side by side)."
    ),
    gate: str = typer.Option("default", "--gate", "-g", help="Gate preset name (default, strict, loose) or YAML path."),
    classifier: str | None = typer.Option(
        None, "--classifier", help="Classifier preset: calochallenge (CaloChallenge's DNN, 3 x 2048, 50 epochs; hours "
        "on 2 CPU cores at 100k showers) or gate (the cheap 2 x 256 preset of the compression gate). Default: the "
        "gate spec's (classifier.preset). See docs/classifier.md.",
    ),
    threshold_mev: float | None = typer.Option(
        None, "--threshold-mev", help="Voxel threshold in MeV (default: CaloChallenge's, 1 MeV ds1, 15.15 keV ds2/3)."
    ),
    per_energy_bin: bool | None = typer.Option(
        None, "--per-energy-bin/--inclusive", help="Also gate per incident-energy bin (default: from the gate spec)."
    ),
    geometry: str | None = typer.Option(None, "--geometry", help="Geometry name or file, if the files do not carry one."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Report directory (report.html + metrics.json)."),
    no_html: bool = typer.Option(False, "--no-html", help="Write metrics.json only."),
    max_figures: int | None = typer.Option(None, "--max-figures", help="Cap on per-feature figures (default 80; the rest in tables)."),
    step_size: int = typer.Option(100_000, "--step-size", help="Events per streamed chunk."),
    progress: bool = typer.Option(
        True, "--progress/--no-progress", " /--quiet", " /-q", help="Show progress bars (-q, --quiet: the same as --no-progress)."
    ),
    cache_dir: Path | None = typer.Option(
        None, "--cache-dir", help="Folder (or .npz file) of the cached reference (default: $SIMCOMPRESS_CACHE_DIR or ~/.cache/simcompress/validation)."
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="Neither read nor write the cached reference."),
    tree: str | None = TREE_OPT,
    energy_branch: str | None = ENERGY_BRANCH_OPT,
    voxels: str | None = VOXELS_OPT,
    energy_unit: str | None = ENERGY_UNIT_OPT,
    voxel_unit: str | None = VOXEL_UNIT_OPT,
) -> None:
    """Validate generated showers against reference showers.

    Computes the CaloChallenge high-level features chunk by chunk, per-feature KS / W1 /
    separation power with bootstrap errors, FPD, KPD and a classifier test, each next to the
    reference-versus-reference noise floor, and applies the gate. With --teacher, each candidate
    is compared with the teacher's showers (the damage, next to the teacher-versus-teacher floor)
    and, with --reference, teacher and candidates with the reference, side by side; a candidate
    passes when its damage is within the floor-based thresholds and it passes every reference
    check the teacher passes. Exit codes: 0 all gates pass, 1 a gate failed, 2 bad input.
    """
    import warnings

    from ..validation import EnergyMismatchWarning, load_gate_spec
    from ..validation import validate as run_validate
    from ..validation.spec import with_classifier_preset

    if reference is None and teacher is None:
        msg = "--reference is required (or --teacher T.root to measure the damage against the teacher)"
        raise ConfigError(msg)
    spec = load_gate_spec(gate)
    if classifier is not None:
        spec = with_classifier_preset(spec, classifier)  # an unknown name: one-line error, exit 2
    cands: dict[str, str] = {}
    for i, c in enumerate(candidate):
        name, path = _parse_candidate(c, i)
        if name in cands:
            name = f"{name}_{i}"
        cands[name] = path
    geom = None
    if geometry is not None:
        from ..showers.geometry import Geometry

        geom = Geometry.from_name(geometry)
    if step_size < 1:
        msg = f"--step-size must be >= 1, got {step_size}"
        raise ConfigError(msg)
    ref_src: object = reference
    teacher_src: object = teacher
    opts = read_options(tree, energy_branch, voxels, energy_unit, voxel_unit)
    if geom is not None or not opts.is_default:
        # the layout options describe files written by other tools; our own files need none and
        # are opened with the defaults, so a foreign reference can be compared with our candidates
        from ..errors import ShowerFileError
        from ..showers.io import open_showers

        def _open(p: str) -> object:
            try:
                return open_showers(p, geometry=geom, options=opts)
            except ShowerFileError as first:
                if opts.is_default:
                    raise
                try:
                    return open_showers(p, geometry=geom)
                except ShowerFileError:
                    raise first from None

        ref_src = None if reference is None else _open(reference)
        teacher_src = None if teacher is None else _open(teacher)
        cands_src = {n: _open(p) for n, p in cands.items()}
    else:
        cands_src = dict(cands)
    cache = False if no_cache else (cache_dir or "auto")
    if teacher_src is not None:
        _teacher_comparison(teacher_src, cands_src, spec, ref_src, out, threshold_mev=threshold_mev,
                            per_energy_bin=per_energy_bin, step_size=step_size, progress=progress, cache=cache,
                            html=not no_html, max_figures=max_figures)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EnergyMismatchWarning)
        result = run_validate(
            ref_src, cands_src, spec, None, threshold_mev=threshold_mev, per_energy_bin=per_energy_bin,
            step_size=step_size, progress=progress, cache=cache,
        )
    for cres in result.candidates.values():
        for w in cres.warnings:
            err_console.print(f"[bold yellow]WARNING:[/bold yellow] {w}", highlight=False, soft_wrap=True)
    if out is not None:
        result.write(out, html=not no_html, progress=progress, max_feature_figures=max_figures)
        console.print(f"report written to {out}/", highlight=False)
    _print_summary(result)
    if not result.passed:
        failed = result.failed_checks()
        names = sorted({c.candidate for c in failed})
        msg = f"{len(failed)} of {len(result.checks)} checks failed (gate {spec.name!r}; candidates: {', '.join(names)})"
        raise GateFailed(msg)


def _print_summary(result: object) -> None:
    from rich.table import Table

    t = Table(title="validation summary")
    for col in ("candidate", "events", "checks failed", "worst check", "value / threshold", "verdict"):
        t.add_column(col)
    for name, c in result.candidates.items():  # type: ignore[attr-defined]
        chks = [k for k in result.checks if k.candidate == name]  # type: ignore[attr-defined]
        worst = max(chks, key=lambda k: k.value / k.threshold if k.threshold > 0 else (0.0 if k.value <= 0 else 1e300), default=None)
        ok = all(k.passed for k in chks)
        t.add_row(
            name,
            str(c.n_events),
            f"{sum(not k.passed for k in chks)} / {len(chks)}",
            f"{worst.metric}({worst.target})" if worst else "-",
            f"{worst.value:.4g} / {worst.threshold:.4g}" if worst else "-",
            "[green]PASS[/green]" if ok else "[red]FAIL[/red]",
        )
    console.print(t)


def _teacher_comparison(teacher: object, cands: dict[str, object], spec: object, reference: object, out: Path | None,
                        *, html: bool, max_figures: int | None, progress: bool, **kw: object) -> None:
    """``--teacher``: damage against the teacher next to the reference comparison; prints both side by side."""
    import warnings

    from ..validation import EnergyMismatchWarning, compare_to_teacher

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EnergyMismatchWarning)
        comp = compare_to_teacher(teacher, cands, spec, reference=reference, html=html, progress=progress, **kw)  # type: ignore[arg-type]
    for res in (comp.vs_teacher, comp.vs_reference):
        for cres in (res.candidates.values() if res is not None else ()):
            for w in cres.warnings:
                err_console.print(f"[bold yellow]WARNING:[/bold yellow] {w}", highlight=False, soft_wrap=True)
    if out is not None:
        comp.write(out, html=html, progress=progress, max_feature_figures=max_figures)
        console.print(f"report written to {out}/", highlight=False)
    _print_teacher_summary(comp)
    if not comp.passed:
        names = [n for n in comp.names if not comp.passed_for(n)]
        msg = f"gate {getattr(spec, 'name', '')!r} (damage against the teacher) failed for: {', '.join(names)}"
        raise GateFailed(msg)


def _print_teacher_summary(comp: object) -> None:
    from rich.table import Table

    t = Table(title="damage against the teacher | against the reference")
    for col in ("candidate", "damage checks failed", "AUC vs teacher (floor)", "reference checks failed",
                "teacher's failed", "lost", "verdict"):
        t.add_column(col)
    for name in comp.names:  # type: ignore[attr-defined]
        v = comp.verdict(name)  # type: ignore[attr-defined]
        d, r = v["damage"], v.get("reference")
        auc, fl = d.get("auc_high"), d.get("auc_high_floor")
        t.add_row(
            name,
            f"{d['failed']} / {d['total']}",
            "-" if auc is None else f"{auc:.3f}" + ("" if fl is None else f" ({fl:.3f})"),
            f"{r['failed']} / {r['total']}" if r else "-",
            f"{r['teacher_failed']} / {r['total']}" if r else "-",
            str(r["lost"]) if r else "-",
            "[green]PASS[/green]" if v["passed"] else "[red]FAIL[/red]",
        )
    console.print(t)
    console.print(comp.rule, highlight=False)  # type: ignore[attr-defined]
