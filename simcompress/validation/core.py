"""The validation run: stream reference and candidates, compute metrics and noise floor, gate.

:func:`validate` is the public entry point (``simcompress validate`` calls it). The pieces it
wires together live in their own modules: :mod:`.sources` (reading), :mod:`.floor` (noise floor),
:mod:`.prepared` (:class:`PreparedReference`), :mod:`.evaluation` (candidates), :mod:`.checks`
(the gate) and :mod:`.result` (:class:`ValidationResult`); their public names are importable
from here too.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

from ..errors import ConfigError, GeometryError, ShowerFileError
from ..showers.data import ShowerSet
from ..showers.geometry import Geometry
from . import cache as C
from . import metrics as M
from .checks import evaluate_gate
from .evaluation import CandidateResult, EnergyMismatchWarning, evaluate_candidate
from .prepared import PreparedReference, _cache_lookup, _cache_store
from .result import ValidationResult
from .sources import Sample, _describe, _open, read_sample
from .spec import GateSpec, load_gate_spec

__all__ = [
    "CandidateResult",
    "EnergyMismatchWarning",
    "PreparedReference",
    "ValidationResult",
    "evaluate_candidate",
    "read_sample",
    "validate",
]

log = logging.getLogger(__name__)


def _preflight(reference: Any, candidates: dict[str, Any], spec: GateSpec) -> None:
    """Cheap checks before any heavy work: files open, geometries match, enough events (where known)."""
    if isinstance(reference, PreparedReference):
        rgeom: Geometry | None = reference.geometry
    elif isinstance(reference, (str, os.PathLike, ShowerSet)):
        rgeom, _, n = _open(reference, None)
        if n is not None and n < spec.min_events:
            msg = f"{_describe(reference)}: {n} reference events, the gate spec needs at least min_events={spec.min_events}"
            raise M.TooFewEventsError(msg)
    else:
        return
    for src in candidates.values():
        if not isinstance(src, (str, os.PathLike, ShowerSet)):
            continue
        g, _, n = _open(src, rgeom)
        if n == 0:
            msg = f"{_describe(src)}: no events (empty file or selection)"
            raise ShowerFileError(msg)
        if g is not None and rgeom is not None and not g.same_binning(rgeom):
            msg = (
                f"{_describe(src)}: geometry {g.name!r} ({g.n_voxels} voxels) does not match the reference geometry "
                f"{rgeom.name!r} ({rgeom.n_voxels} voxels)"
            )
            raise GeometryError(msg)
        if n is not None and n < spec.min_events:
            msg = f"{_describe(src)}: {n} candidate events, the gate spec needs at least min_events={spec.min_events}"
            raise M.TooFewEventsError(msg)


def validate(
    reference: Any,
    candidates: dict[str, Any],
    spec: GateSpec | str | os.PathLike[str] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    threshold_mev: float | None = None,
    per_energy_bin: bool | None = None,
    step_size: int = 100_000,
    progress: bool = True,
    html: bool = True,
    cache: Any = "auto",
) -> ValidationResult:
    """Validate candidates against a reference.

    Args:
        reference: path (ROOT/HDF5/dir/glob), ShowerSet, reader, or :class:`PreparedReference`.
        candidates: name -> source (same kinds as ``reference``).
        spec: :class:`GateSpec`, preset name or YAML path (``"default"`` if None).
        out_dir: if given, write ``metrics.json`` and ``report.html`` there.
        threshold_mev: voxel threshold (overrides the spec; default CaloChallenge's per dataset).
        per_energy_bin: gate on per-incident-energy-bin metrics too (overrides the spec).
        cache: the cached reference (:mod:`simcompress.validation.cache`): "auto" (user cache
            folder), a folder or ``.npz`` path, or False. With a matching entry the reference is
            not read again and its noise floor is not recomputed.
    """
    gate_spec = load_gate_spec(spec)
    updates: dict[str, Any] = {}
    if threshold_mev is not None:
        updates["threshold_mev"] = threshold_mev
    if per_energy_bin is not None:
        updates["per_energy_bin"] = per_energy_bin
    if updates:
        gate_spec = gate_spec.model_copy(update=updates)
    if not candidates:
        msg = "validate: no candidates given"
        raise ConfigError(msg)
    _preflight(reference, candidates, gate_spec)
    keep = gate_spec.classifier.max_events if (gate_spec.classifier.enabled and "low" in gate_spec.classifier.inputs) else 0
    # read everything first (one streaming pass each), so bad files fail before the costly floor
    ref_sample: Sample | None = None
    key: dict[str, Any] | None = None
    cpath: Path | None = None
    if isinstance(reference, PreparedReference):
        prep: PreparedReference | None = reference
    else:
        key, cpath, prep = _cache_lookup(reference, gate_spec, gate_spec.threshold_mev, cache)
    if prep is not None:
        geom, thr = prep.geometry, prep.features.threshold_mev
    else:
        ref_sample = read_sample(
            reference, "reference", threshold_mev=gate_spec.threshold_mev, keep_voxels=keep, step_size=step_size,
            seed=gate_spec.seed, progress=progress,
        )
        geom, thr = ref_sample.geometry, ref_sample.features.threshold_mev
    samples: dict[str, Sample] = {}
    for name, src in candidates.items():
        smp = src if isinstance(src, Sample) else read_sample(
            src, name, geometry=geom, threshold_mev=thr, keep_voxels=keep, step_size=step_size,
            seed=gate_spec.seed + 1, progress=progress,
        )
        if smp.features.n_events < gate_spec.min_events:
            msg = (
                f"{smp.source}: {smp.features.n_events} candidate events, the gate spec needs at least "
                f"min_events={gate_spec.min_events}"
            )
            raise M.TooFewEventsError(msg)
        samples[name] = smp
    if prep is None:
        assert ref_sample is not None
        prep = PreparedReference.from_sample(ref_sample, gate_spec, progress=progress)
        _cache_store(prep, key, cpath)
    results = {}
    for name, smp in samples.items():
        results[name] = evaluate_candidate(prep, name, smp, step_size=step_size, progress=progress)
    for r in results.values():
        for w in r.warnings:
            if r.incident_energy.get("mismatch") and "incident-energy distribution differs" in w:
                warnings.warn(w, EnergyMismatchWarning, stacklevel=2)
            else:
                log.warning(w)
    n_cal = len(C.calibrations(prep))
    res = ValidationResult(prep, results, gate_spec, evaluate_gate(gate_spec, results, reference=prep))
    if key is not None and cpath is not None and len(C.calibrations(prep)) > n_cal:
        _cache_store(prep, key, cpath, prep.cache_info.get("status") == "loaded")  # keep the new calibration too
    if out_dir is not None:
        res.write(out_dir, html=html, progress=progress)
    return res
