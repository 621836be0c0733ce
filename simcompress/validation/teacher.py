"""Compression damage measured directly: candidates against their teacher, next to the reference.

:func:`compare_to_teacher` runs :func:`~.core.validate` twice: with a teacher sample as the
reference (the damage: every feature's KS / W1 / separation power, FPD/KPD and the classifier AUC
of each candidate against the teacher, each next to the teacher-versus-teacher floor of the
teacher sample's half-splits, thresholds calibrated as for any reference), and, with a reference,
teacher and candidates against it. The verdict per candidate is :data:`~.checks.TEACHER_RULE`.
"""

from __future__ import annotations

import html as H
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_dir
from ..errors import ConfigError
from ._shared import jsonable
from .checks import TEACHER_RULE, GateCheck, teacher_rule
from .core import validate
from .result import ValidationResult
from .spec import GateSpec, load_gate_spec

__all__ = ["TeacherComparison", "compare_to_teacher"]

#: the teacher's name among the candidates of the reference comparison
TEACHER = "teacher"


def _label(src: Any) -> str:
    if isinstance(src, (str, os.PathLike)):
        return str(src)
    meta = getattr(src, "metadata", None)
    if isinstance(meta, dict) and meta.get("source"):
        return str(meta["source"])
    return type(src).__name__


def _incident_energy(src: Any) -> np.ndarray | None:
    """The incident energies of a source, read cheaply, or None where that would mean reading it twice."""
    if isinstance(src, (str, os.PathLike)):
        from ..showers.io import open_showers

        return np.asarray(open_showers(src).incident_energy(), dtype=np.float64)
    e = getattr(src, "incident_energy", None)
    if callable(e):  # a reader
        return np.asarray(e(), dtype=np.float64)
    if e is not None:  # a ShowerSet
        return np.asarray(e, dtype=np.float64)
    feats = getattr(src, "features", None)  # a PreparedReference
    return None if feats is None else np.asarray(feats.incident_energy, dtype=np.float64)


def _check_energies(teacher: Any, candidates: dict[str, Any], spec: GateSpec) -> None:
    """One-line :class:`ConfigError` naming both sources when a candidate's E_inc differs from the teacher's."""
    from scipy.stats import ks_2samp

    et = _incident_energy(teacher)
    if et is None or et.size == 0:
        return
    for name, src in candidates.items():
        ec = _incident_energy(src)
        if ec is None or ec.size == 0:
            continue
        if et.size == ec.size and np.array_equal(et, ec):
            continue
        res = ks_2samp(et, ec)
        if float(res.pvalue) < spec.energy_mismatch_pvalue:
            msg = (
                f"teacher {_label(teacher)} and candidate {name!r} ({_label(src)}) were generated at different incident "
                f"energies (KS D={float(res.statistic):.3g}, p={float(res.pvalue):.2g}); the damage comparison needs both "
                "at the same incident energies (the same energy spec)"
            )
            raise ConfigError(msg)


@dataclass
class TeacherComparison:
    """Candidates against their teacher (``vs_teacher``) and, optionally, against a reference (``vs_reference``).

    ``vs_teacher`` is a :class:`ValidationResult` with the teacher sample as its reference;
    ``vs_reference`` (or None) has the teacher among its candidates, named ``"teacher"``.
    """

    vs_teacher: ValidationResult
    vs_reference: ValidationResult | None
    rule: str = TEACHER_RULE

    @property
    def names(self) -> list[str]:
        return list(self.vs_teacher.candidates)

    def _checks(self, res: ValidationResult | None, name: str) -> list[GateCheck] | None:
        return None if res is None else [c for c in res.checks if c.candidate == name]

    def verdict(self, name: str) -> dict[str, Any]:
        """The rule's verdict for one candidate: passed, failed damage checks, reference checks lost."""
        damage = self._checks(self.vs_teacher, name) or []
        student_ref = self._checks(self.vs_reference, name) or []
        teacher_ref = self._checks(self.vs_reference, TEACHER)
        passed, failed, lost = teacher_rule(damage, student_ref, teacher_ref)
        out: dict[str, Any] = {
            "passed": passed,
            "damage": {"passed": not failed, "failed": len(failed), "total": len(damage),
                       "failed_checks": [c.to_dict() for c in failed]},
        }
        cres = self.vs_teacher.candidates[name]
        for kind, m in cres.classifier.items():
            out["damage"][f"auc_{kind}"] = m.get("auc")
            out["damage"][f"auc_{kind}_floor"] = (m.get("floor") or {}).get("auc")
        if teacher_ref is not None:
            out["reference"] = {
                "passed": all(c.passed for c in student_ref),
                "failed": sum(not c.passed for c in student_ref),
                "total": len(student_ref),
                "teacher_failed": sum(not c.passed for c in teacher_ref),
                "teacher_passes": sum(c.passed for c in teacher_ref),
                "lost": len(lost),
                "lost_checks": [c.to_dict() for c in lost],
            }
        return out

    def passed_for(self, name: str) -> bool:
        return bool(self.verdict(name)["passed"])

    @property
    def passed(self) -> bool:
        return all(self.passed_for(n) for n in self.names)

    def features(self, name: str) -> dict[str, dict[str, Any]]:
        """Per feature, side by side: damage (KS/W1/sp and their teacher floor) and both models against the reference."""
        out: dict[str, dict[str, Any]] = {}
        ref = self.vs_reference
        for feat, m in self.vs_teacher.candidates[name].features.items():
            if m.get("skipped"):
                continue
            fl = m.get("floor") or {}
            row: dict[str, Any] = {"vs_teacher": {k: m.get(k) for k in ("ks", "w1", "sp")},
                                   "teacher_floor": {k: fl.get(k) for k in ("ks", "w1", "sp")}}
            if ref is not None:
                for who in (name, TEACHER):
                    rm = ref.candidates[who].features.get(feat) or {}
                    row["student_vs_reference" if who == name else "teacher_vs_reference"] = {
                        k: rm.get(k) for k in ("ks", "w1", "sp")
                    }
            out[feat] = row
        return out

    def to_dict(self) -> dict[str, Any]:
        return jsonable({
            "format_version": 1,
            "rule": self.rule,
            "passed": self.passed,
            "teacher": self.vs_teacher.reference.sample.source,
            "reference": None if self.vs_reference is None else self.vs_reference.reference.sample.source,
            "candidates": {n: {**self.verdict(n), "features": self.features(n)} for n in self.names},
        })

    def write(self, out_dir: str | os.PathLike[str], *, html: bool = True, progress: bool = False,
              max_feature_figures: int | None = None) -> Path:
        """Write ``comparison.json``, ``report.html`` (with ``html``), ``vs_teacher/`` and ``vs_reference/`` atomically."""
        out = Path(out_dir)
        with atomic_dir(out, overwrite=True) as tmp:
            kw: dict[str, Any] = {"html": html, "progress": progress, "max_feature_figures": max_feature_figures}
            self.vs_teacher.write(tmp / "vs_teacher", **kw)
            if self.vs_reference is not None:
                self.vs_reference.write(tmp / "vs_reference", **kw)
            (tmp / "comparison.json").write_text(json.dumps(self.to_dict(), indent=1, allow_nan=False))
            if html:
                (tmp / "report.html").write_text(self._html(max_feature_figures))
        return out

    def _html(self, max_feature_figures: int | None) -> str:
        from .report import report_section

        def f(v: Any) -> str:
            return "-" if v is None else (f"{v:.4g}" if isinstance(v, float) else H.escape(str(v)))

        rows = []
        for n in self.names:
            v = self.verdict(n)
            d, r = v["damage"], v.get("reference")
            rows.append(
                f"<tr><td>{H.escape(n)}</td><td>{d['failed']} / {d['total']}</td><td>{f(d.get('auc_high'))} "
                f"(floor {f(d.get('auc_high_floor'))})</td>"
                + (f"<td>{r['failed']} / {r['total']}</td><td>{r['teacher_failed']} / {r['total']}</td><td>{r['lost']}</td>"
                   if r else "<td>-</td><td>-</td><td>-</td>")
                + f"<td>{'PASS' if v['passed'] else 'FAIL'}</td></tr>"
            )
        feats = []
        for n in self.names:
            for feat, row in self.features(n).items():
                sr, tr = row.get("student_vs_reference") or {}, row.get("teacher_vs_reference") or {}
                feats.append(
                    f"<tr><td>{H.escape(n)}</td><td>{H.escape(feat)}</td><td>{f(row['vs_teacher']['w1'])}</td>"
                    f"<td>{f(row['teacher_floor']['w1'])}</td><td>{f(row['vs_teacher']['sp'])}</td>"
                    f"<td>{f(row['teacher_floor']['sp'])}</td><td>{f(sr.get('w1'))}</td><td>{f(tr.get('w1'))}</td></tr>"
                )
        sections = [f"<h2>Damage: candidates against the teacher</h2>{report_section(self.vs_teacher, max_feature_figures=max_feature_figures)}"]
        if self.vs_reference is not None:
            sections.append("<h2>Teacher and candidates against the reference</h2>"
                            + report_section(self.vs_reference, max_feature_figures=max_feature_figures))
        return (
            "<!doctype html><html><head><meta charset='utf-8'><title>Teacher comparison</title></head><body>"
            f"<h1>Compression damage: against the teacher and against the reference</h1><p><b>Rule.</b> {H.escape(self.rule)}</p>"
            "<table border='1'><tr><th>candidate</th><th>damage checks failed</th><th>AUC vs teacher</th>"
            "<th>reference checks failed</th><th>teacher's reference checks failed</th><th>lost</th><th>verdict</th></tr>"
            + "".join(rows) + "</table><h2>Features side by side</h2><table border='1'><tr><th>candidate</th><th>feature</th>"
            "<th>W1 vs teacher</th><th>teacher floor</th><th>sp vs teacher</th><th>teacher floor</th>"
            "<th>W1 vs reference</th><th>teacher W1 vs reference</th></tr>" + "".join(feats) + "</table>"
            + "".join(sections) + "</body></html>"
        )


def compare_to_teacher(
    teacher_source: Any,
    candidates: dict[str, Any],
    spec: GateSpec | str | os.PathLike[str] | None = None,
    reference: Any = None,
    *,
    threshold_mev: float | None = None,
    per_energy_bin: bool | None = None,
    step_size: int = 100_000,
    progress: bool = False,
    html: bool = True,
    cache: Any = "auto",
) -> TeacherComparison:
    """Compare ``candidates`` with their teacher's showers (and, with ``reference``, all with the reference).

    ``teacher_source`` and the candidates must be generated at the same incident energies (other
    noise seeds); sources are those of :func:`~.core.validate`. The damage comparison is
    ``validate(teacher_source, candidates, spec)``: its floor and calibrated thresholds come from
    the teacher sample's half-splits. A candidate's E_inc distribution differing from the
    teacher's raises a one-line :class:`ConfigError` naming both, before anything is computed.
    """
    gate_spec = load_gate_spec(spec)
    if not candidates:
        msg = "compare_to_teacher: no candidates given"
        raise ConfigError(msg)
    if reference is not None and TEACHER in candidates:
        msg = f"compare_to_teacher: candidate name {TEACHER!r} is reserved for the teacher; rename it"
        raise ConfigError(msg)
    _check_energies(teacher_source, candidates, gate_spec)
    kw: dict[str, Any] = {"threshold_mev": threshold_mev, "per_energy_bin": per_energy_bin, "step_size": step_size,
                          "progress": progress, "html": html, "cache": cache}
    vs_teacher = validate(teacher_source, dict(candidates), gate_spec, **kw)
    vs_reference = None
    if reference is not None:
        vs_reference = validate(reference, {TEACHER: teacher_source, **candidates}, gate_spec, **kw)
    return TeacherComparison(vs_teacher, vs_reference)
