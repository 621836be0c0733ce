"""Validation report: self-contained HTML (Jinja2, base64 PNG figures, no network) and ``metrics.json``.

The page leads with the answer: the verdict per candidate (with its worst check), then the
feature matrix (each feature's W1 and separation power in units of the reference-versus-reference
noise floor, coloured by the gate), then CaloChallenge-style histogram grids (reference filled,
candidates as lines, ratio panels; layer energies as E_layer / E_inc and energies on log bins, so
the discrete ds1 incident energies draw no comb), then the multivariate metrics, per-energy-bin
table, profiles and average images; the failed-check table and the detailed distances are
collapsed below. Several candidates appear side by side everywhere. :func:`report_section`
returns the same content as an HTML fragment, so other reports (e.g. the compression report) can
embed a validation section.
"""

from __future__ import annotations

import html as _html
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from .._atomic import atomic_path
from .._progress import progress_bar
from .checks import false_alarm_summary
from .figures import (
    MAX_FEATURE_FIGURES,
    _grid_groups,
    histogram_grid_figure,
    image_figure,
    longitudinal_figure,
    radial_figure,
    voxel_spectrum_figure,
)

if TYPE_CHECKING:  # pragma: no cover
    from .checks import GateCheck
    from .evaluation import CandidateResult
    from .prepared import PreparedReference
    from .spec import GateSpec

__all__ = ["MAX_FEATURE_FIGURES", "ReportInput", "render_html", "report_section", "write_report"]


class ReportInput(Protocol):
    """What the report reads of a :class:`simcompress.validation.result.ValidationResult`."""

    reference: PreparedReference
    candidates: dict[str, CandidateResult]
    spec: GateSpec
    checks: list[GateCheck]
    created: str

    def failed_checks(self) -> list[GateCheck]: ...

    def to_json(self) -> str: ...


# ------------------------------------------------------------------ tables and HTML


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, str):
        return _html.escape(v)
    try:
        f = float(v)
    except (TypeError, ValueError):
        return _html.escape(str(v))
    if not math.isfinite(f):
        return "–"
    return f"{f:.{digits}g}"


def _worst(chks: list[Any]) -> str:
    """The check closest to (or furthest over) its threshold, as one phrase."""
    scored = [(k.value / k.threshold if k.threshold > 0 else (0.0 if k.value <= 0 else math.inf), k) for k in chks]
    if not scored:
        return ""
    r, k = max(scored, key=lambda rk: rk[0])
    where = f" in {k.energy_bin}" if k.energy_bin else ""
    return f"{k.metric}({k.target}){where} at {_fmt(r, 3)}× its threshold"


def _check_index(result: ReportInput) -> dict[tuple[str, str, str, str], Any]:
    return {(c.candidate, c.metric, c.target, c.energy_bin): c for c in result.checks}


def _metric_cell(result: ReportInput, idx: dict[Any, Any], cand: str, metric: str, feat: str, key: str, m: dict[str, Any], ebin: str = "") -> str:
    chk = idx.get((cand, metric, feat, ebin))
    cls = "" if chk is None else ("pass" if chk.passed else "fail")
    err = m.get(f"{key}_err")
    fl = m["floor"][key]
    title = f"floor {_fmt(fl)} ± {_fmt(m['floor'][key + '_std'])}"
    if chk is not None:
        title += f"; threshold {_fmt(chk.threshold)}"
    txt = _fmt(m[key]) + (f" ± {_fmt(err, 2)}" if err is not None and math.isfinite(float(err)) else "")
    ratio = m[key] / fl if fl > 0 else (0.0 if m[key] == 0 else math.inf)
    return f'<td class="{cls}" title="{_html.escape(title)}">{txt}<br><span class="floor">{_fmt(ratio, 3)}× floor</span></td>'


_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:1.5em;color:#222;max-width:1500px}
h1{font-size:1.6em}h2{border-bottom:2px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:right;vertical-align:top}
th{background:#f0f0f0}td.name{text-align:left;font-family:monospace}
td.pass{background:#d9f2d9}td.fail{background:#f8d0d0;font-weight:bold}
.floor{color:#666;font-size:.8em}
.verdict{display:inline-block;padding:.3em .8em;border-radius:.3em;color:#fff;font-weight:bold}
.verdict.pass{background:#2e8b3d}.verdict.fail{background:#c0392b}
.warn{background:#fff3cd;border:1px solid #e0b000;padding:.6em;margin:.5em 0}
.fig{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start;margin-bottom:1.2em}
.fig img{max-width:640px;border:1px solid #eee}
details{margin:.5em 0}code{background:#f4f4f4;padding:0 .2em}
.verdicts{display:flex;flex-wrap:wrap;gap:.8em;margin:.4em 0}
.vcard{border:2px solid #ccc;border-radius:.4em;padding:.5em .8em}.vcard.pass{border-color:#2e8b3d}.vcard.fail{border-color:#c0392b}
.vcard .verdict{font-size:1.25em}.vline{font-size:.9em;margin-top:.3em;color:#444}
table.matrix td{text-align:center;min-width:7em}td.m0{background:#e3f5e3}td.m1{background:#c6ebc6}td.m2{background:#a5dca5}
td.m3{background:#f8d0d0;font-weight:bold}td.m4{background:#ec9a9a;font-weight:bold}
.fig.grid img{max-width:100%}summary{cursor:pointer;font-weight:bold}
"""

_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>simcompress validation: {{ title }}</title>
<style>{{ css }}</style></head><body>
<h1>simcompress validation report</h1>
{{ section }}
<footer><p class="floor">created {{ created }} · simcompress {{ version }} · all figures embedded; no network needed.</p></footer>
</body></html>
"""

_SECTION = """<section class="simcompress-validation">
<div class="answer" id="verdict">
<h2>Verdict</h2>
<div class="verdicts">{% for c in cands %}<div class="vcard {{ 'pass' if c.passed else 'fail' }}"><span class="verdict {{ 'pass' if c.passed else 'fail' }}">{{ c.name }}: {{ 'PASS' if c.passed else 'FAIL' }}</span>
<div class="vline">{{ c.n_failed }} of {{ c.n_checks }} checks failed{% if c.worst %}; worst {{ c.worst }}{% endif %}</div></div>{% endfor %}</div>
<p class="gate">Gate <b>{{ spec.name }}</b>{% if spec.description %}: {{ spec.description }}{% endif %}</p>
{% if false_alarm %}<p class="floor">{{ false_alarm }}</p>{% endif %}
{% for w in warnings %}<div class="warn">⚠ {{ w }}</div>{% endfor %}
</div>
<h2>Feature matrix: distance in units of the noise floor</h2>
<p class="floor">Each cell: W1 / floor and separation power / floor of one feature for one candidate (the floor is the same metric
between halves of the reference, rescaled to the candidate's size). Green: every check of the cell passes, the darker the closer to
its threshold; red: a check fails. Hover for values and thresholds.</p>
<table class="matrix"><tr><th>feature</th>{% for c in cands %}<th>{{ c.name }}</th>{% endfor %}</tr>
{% for row in matrix %}<tr><td class="name"><a href="#g-{{ row.group }}">{{ row.name }}</a></td>{% for cell in row.cells %}{{ cell }}{% endfor %}</tr>{% endfor %}
</table>
<h2>Histograms</h2>
<p class="floor">Reference filled, candidates as lines, candidate / reference below (grey band: reference statistical error). Energies use
logarithmic bins so that the discrete incident energies do not draw a comb.{% if n_skipped_figs %} {{ n_skipped_figs }} further features are in the tables only (figure cap {{ max_figs }}).{% endif %}</p>
{% for g in grid_figs %}<div class="fig grid" id="g-{{ g.group }}"><img alt="histograms {{ g.group }}" src="data:image/png;base64,{{ g.png }}"></div>{% endfor %}
<h2>Multivariate metrics</h2>
<table><tr><th>candidate</th>{% for k in mv_keys %}<th>{{ k }}</th>{% endfor %}</tr>
<tr><td class="name">reference vs reference (floor)</td>{% for k in mv_keys %}<td>{{ mv_floor[k] }}</td>{% endfor %}</tr>
{% for c in cands %}<tr><td class="name">{{ c.name }}</td>{% for k in mv_keys %}{{ c.mv[k] }}{% endfor %}</tr>{% endfor %}
</table>
<p class="floor">FPD/KPD: JetNet definitions (arXiv:2211.10295) on the CaloChallenge high-level vector; FPD ×10³ and KPD ×10³ as in the CaloChallenge tables.
Classifier: held-out AUC / JSD = (ln2 − BCE)/ln2.</p>
{% if cls_settings %}<h3>Classifier settings</h3>{{ cls_settings }}{% endif %}
{% if bin_rows %}<h2>Per incident-energy bin (worst feature per bin)</h2>
<table><tr><th>bin</th>{% for c in cands %}<th>{{ c.name }}: worst W1 / floor</th>{% endfor %}</tr>
{% for row in bin_rows %}<tr><td class="name">{{ row.label }}</td>{% for cell in row.cells %}{{ cell }}{% endfor %}</tr>{% endfor %}
</table>{% endif %}
<h2>Profiles and images</h2>
{% for f in profile_figs %}<div class="fig"><img alt="{{ f.alt }}" src="data:image/png;base64,{{ f.png }}"></div>{% endfor %}
<h2>Details</h2>
{% if failed %}<details id="failed"><summary>Failed checks ({{ failed|length }})</summary><table>
<tr><th>candidate</th><th>metric</th><th>target</th><th>energy bin</th><th>value</th><th>threshold</th><th>detail</th></tr>
{% for f in failed %}<tr><td class="name">{{ f.candidate }}</td><td class="name">{{ f.metric }}</td><td class="name">{{ f.target }}</td>
<td class="name">{{ f.energy_bin }}</td><td class="fail">{{ fmt(f.value) }}</td><td>{{ fmt(f.threshold) }}</td><td class="name">{{ f.detail }}</td></tr>{% endfor %}
</table></details>{% else %}<p>No check failed.</p>{% endif %}
<details><summary>Per-feature distances with bootstrap errors (W1, KS, separation power)</summary>
<table><tr><th rowspan="2">feature</th><th rowspan="2">ref. mean</th>{% for c in cands %}<th colspan="3">{{ c.name }}</th>{% endfor %}</tr>
<tr>{% for c in cands %}<th>W1</th><th>KS</th><th>sep. power</th>{% endfor %}</tr>
{% for row in feat_rows %}<tr><td class="name">{{ row.name }}</td><td>{{ row.ref_mean }}</td>{% for cell in row.cells %}{{ cell }}{% endfor %}</tr>{% endfor %}
</table></details>
<details><summary>Samples</summary>
<table><tr><th>sample</th><th>source</th><th>events</th><th>checks failed</th><th>E_inc KS D (p)</th></tr>
<tr><td class="name">reference</td><td class="name">{{ ref.source }}</td><td>{{ ref.n }}</td><td></td><td></td></tr>
{% for c in cands %}<tr><td class="name">{{ c.name }}</td><td class="name">{{ c.source }}</td><td>{{ c.n }}</td>
<td class="{{ 'pass' if c.passed else 'fail' }}">{{ c.n_failed }} / {{ c.n_checks }}</td><td>{{ c.einc }}</td></tr>{% endfor %}
</table>
<p>Geometry <code>{{ ref.geometry }}</code>, voxel threshold {{ ref.threshold }} MeV. Noise floor: each metric between disjoint
halves of the reference ({{ ref.n_splits }} random splits of {{ ref.n_half }} events each), rescaled to each candidate's sample
sizes; a distance is read against it ("× floor").{% if ref.cache %} Reference: {{ ref.cache }}.{% endif %}</p></details>
</section>
"""


def _env() -> Any:
    import jinja2

    return jinja2.Environment(autoescape=jinja2.select_autoescape(default=True, default_for_string=True), undefined=jinja2.StrictUndefined)


def report_section(result: ReportInput, *, max_feature_figures: int | None = None, progress: bool = False) -> str:
    """The validation report as an HTML fragment (``<section>``), for embedding in other reports.

    ``max_feature_figures`` caps the per-feature figures (default :data:`MAX_FEATURE_FIGURES`).
    """
    if max_feature_figures is None:
        max_feature_figures = MAX_FEATURE_FIGURES
    from markupsafe import Markup

    ref = result.reference
    rt = ref.features
    ctabs = {n: c.sample.features for n, c in result.candidates.items() if c.sample is not None}
    idx = _check_index(result)
    cands: list[dict[str, Any]] = []
    for n, c in result.candidates.items():
        chks = [k for k in result.checks if k.candidate == n]
        mv = {}
        for key in ("fpd", "kpd"):
            m = c.multivariate.get(key)
            chk = idx.get((n, key, key, ""))
            cls = "" if chk is None else ("pass" if chk.passed else "fail")
            if m is None:
                mv[key] = Markup("<td>–</td>")
            elif "skipped" in m:
                mv[key] = Markup(f'<td title="{_html.escape(m["skipped"])}">skipped</td>')
            else:
                mv[key] = Markup(f'<td class="{cls}">{_fmt(m["value"] * 1e3)} ± {_fmt(m["err"] * 1e3, 2)}</td>')
        for kind, m in c.classifier.items():
            chk = idx.get((n, "auc", f"classifier:{kind}", ""))
            cls = "" if chk is None else ("pass" if chk.passed else "fail")
            if "skipped" in m:
                mv[f"AUC ({kind})"] = Markup(f'<td title="{_html.escape(m["skipped"])}">skipped</td>')
            else:
                mv[f"AUC ({kind})"] = Markup(f'<td class="{cls}">{_fmt(m["auc"], 3)} / JSD {_fmt(m["jsd"], 2)}</td>')
        e = c.incident_energy
        cands.append(
            {
                "name": n,
                "source": c.source,
                "n": c.n_events,
                "passed": all(k.passed for k in chks),
                "n_failed": sum(not k.passed for k in chks),
                "n_checks": len(chks),
                "einc": f"{_fmt(e['ks'], 3)} ({_fmt(e['pvalue'], 2)})" + (" ⚠" if e["mismatch"] else ""),
                "worst": _worst(chks),
                "mv": mv,
            }
        )
    mv_keys = ["fpd", "kpd"] + [f"AUC ({k})" for k in result.spec.classifier.inputs if result.spec.classifier.enabled]
    mv_floor: dict[str, str] = {}
    for key in ("fpd", "kpd"):
        fl = ref.multivariate_floor.get(key)
        mv_floor[key] = "–" if not fl else (fl.get("skipped", "") and "skipped") or f"{_fmt(fl['value'] * 1e3)} ± {_fmt(fl['err'] * 1e3, 2)}"
    for k in result.spec.classifier.inputs:
        fl = ref.classifier_floor.get(k)
        mv_floor[f"AUC ({k})"] = "–" if not fl else ("skipped" if "skipped" in fl else f"{_fmt(fl['auc'], 3)}")
    for row in cands:
        for col in mv_keys:
            row["mv"].setdefault(col, Markup("<td>–</td>"))

    names = rt.names
    feat_rows = []
    for f in names:
        cells = []
        for n, c in result.candidates.items():
            m = c.features[f]
            cells += [Markup(_metric_cell(result, idx, n, met, f, key, m)) for met, key in (("w1", "w1"), ("ks", "ks"), ("separation_power", "sp"))]
        feat_rows.append({"name": f, "ref_mean": _fmt(float(np.mean(rt[f]))), "cells": cells})

    bin_rows = []
    for b in ref.bins:
        cells = []
        for n, c in result.candidates.items():
            fm = c.per_energy_bin.get(b.label, {})
            if "_skipped" in fm or not fm:
                why = fm.get("_skipped", {}).get("skipped", "not computed") if fm else "not computed"
                cells.append(Markup(f'<td title="{_html.escape(why)}">skipped</td>'))
                continue
            worst = max(fm.items(), key=lambda kv: kv[1]["w1"] / kv[1]["floor"]["w1"] if kv[1]["floor"]["w1"] > 0 else 0.0)
            wf, wm = worst
            chk = idx.get((n, "w1", wf, b.label))
            cls = "" if chk is None else ("pass" if chk.passed else "fail")
            ratio = wm["w1"] / wm["floor"]["w1"] if wm["floor"]["w1"] > 0 else 0.0
            cells.append(Markup(f'<td class="{cls}">{_html.escape(wf)}: {_fmt(ratio, 3)}×</td>'))
        bin_rows.append({"label": b.label, "cells": cells})

    profile_figs = []
    if ctabs:
        profile_figs.append({"alt": "longitudinal profile", "png": longitudinal_figure(rt, ctabs)})
        profile_figs.append({"alt": "radial profiles", "png": radial_figure(rt, ctabs)})
        profile_figs.append({"alt": "voxel-energy spectrum", "png": voxel_spectrum_figure(rt, ctabs)})
        profile_figs.append({"alt": "average shower images", "png": image_figure(rt, ctabs)})

    matrix = []
    groups, n_skipped = _grid_groups(names, max_feature_figures)
    group_of = {f: g for g, fs in groups for f in fs}
    for f in names:
        cells = [Markup(_matrix_cell(idx, n, f, c.features[f])) for n, c in result.candidates.items()]
        matrix.append({"name": f, "group": group_of.get(f, "none"), "cells": cells})

    grid_figs = []
    with progress_bar("figures", len(groups), enabled=progress, transient=True) as bar:
        for g, fs in groups:
            if ctabs:
                grid_figs.append({"group": g, "png": histogram_grid_figure(fs, rt, ctabs)})
            bar.advance(1)

    false_alarm = ""
    try:
        false_alarm = str(false_alarm_summary(result.spec, ref).get("sentence", ""))
    except (ValueError, KeyError):  # no calibration
        false_alarm = ""
    ci = ref.cache_info or {}
    cache_txt = {"loaded": "loaded from the cached reference", "written": "computed and cached"}.get(ci.get("status", ""), "")
    warnings_ = [w for c in result.candidates.values() for w in c.warnings] + list(ref.notes)
    from .classifier import settings_html

    cls_settings = Markup(settings_html({
        **{f"floor ({k})": m for k, m in ref.classifier_floor.items()},
        **{f"{n} ({k})": m for n, c in result.candidates.items() for k, m in c.classifier.items()},
    }))
    tmpl = _env().from_string(_SECTION)
    return tmpl.render(
        cls_settings=cls_settings,
        spec=result.spec,
        cands=cands,
        ref={
            "source": ref.sample.source,
            "n": ref.n_events,
            "geometry": ref.geometry.name,
            "threshold": _fmt(rt.threshold_mev),
            "n_splits": result.spec.noise_floor.n_splits,
            "n_half": ref.floor.n_half,
            "cache": (f"{cache_txt} ({ci['path']})" if cache_txt and ci.get("path") else cache_txt),
        },
        warnings=warnings_,
        false_alarm=false_alarm,
        failed=result.failed_checks(),
        fmt=_fmt,
        mv_keys=mv_keys,
        mv_floor=mv_floor,
        feat_rows=feat_rows,
        matrix=matrix,
        bin_rows=bin_rows,
        profile_figs=profile_figs,
        grid_figs=grid_figs,
        n_skipped_figs=n_skipped,
        max_figs=max_feature_figures,
    )


def _matrix_cell(idx: dict[Any, Any], cand: str, feat: str, m: dict[str, Any]) -> str:
    """W1 and separation power in units of the floor, coloured by the gate (m0-m2 pass, m3-m4 fail)."""
    parts, titles, worst = [], [], 0.0
    failed = False
    for metric, key, short in (("w1", "w1", "W1"), ("separation_power", "sp", "SP")):
        fl = m["floor"][key]
        v = m[key]
        ratio = v / fl if fl > 0 else (0.0 if v == 0 else math.inf)
        parts.append(f"{_fmt(ratio, 2)}")
        chk = idx.get((cand, metric, feat, ""))
        t = f"{short} {_fmt(v)} = {_fmt(ratio, 3)}× floor {_fmt(fl)}"
        if chk is not None:
            t += f", threshold {_fmt(chk.threshold)} ({'pass' if chk.passed else 'FAIL'})"
            failed |= not chk.passed
            if chk.threshold > 0:
                worst = max(worst, chk.value / chk.threshold)
        titles.append(t)
    cls = ("m4" if worst > 2 else "m3") if failed else "m2" if worst > 0.7 else "m1" if worst > 0.35 else "m0"
    return f'<td class="{cls}" title="{_html.escape("; ".join(titles))}">{" / ".join(parts)}</td>'


def render_html(result: ReportInput, **kwargs: Any) -> str:
    """The complete self-contained HTML page."""
    from markupsafe import Markup

    from .. import __version__ as version

    section = report_section(result, **kwargs)
    return _env().from_string(_TEMPLATE).render(
        title=", ".join(result.candidates), css=Markup(_CSS), section=Markup(section), created=result.created, version=version
    )


def _atomic_write(path: Path, text: str) -> None:
    """Write ``text`` atomically, with the permissions a plain ``open(path, "w")`` gives (not 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
        tmp.chmod(0o666 & ~umask)


def write_report(
    result: ReportInput,
    out_dir: str | os.PathLike[str],
    *,
    html: bool = True,
    progress: bool = False,
    max_feature_figures: int | None = None,
) -> Path:
    """Write ``metrics.json`` and (optionally) ``report.html`` into ``out_dir``; each file atomically.

    Both are rendered in memory first, so a failure leaves no partial output.
    """
    out = Path(out_dir)
    js = result.to_json()
    page = render_html(result, progress=progress, max_feature_figures=max_feature_figures) if html else None
    out.mkdir(parents=True, exist_ok=True)
    _atomic_write(out / "metrics.json", js + "\n")
    if page is not None:
        _atomic_write(out / "report.html", page)
    return out
