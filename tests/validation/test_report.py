"""HTML report and metrics.json: self-contained, every number, several candidates side by side."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest

from simcompress.validation import PreparedReference, validate
from simcompress.validation.distortions import widen_radially
from simcompress.validation.figures import _grid_groups, _grid_values, _hist_edges
from simcompress.validation.report import report_section, write_report


@pytest.fixture(scope="module")
def result(reference, independent, fast_spec):
    spec = fast_spec.model_copy(update={"classifier": fast_spec.classifier.model_copy(update={"enabled": False})})
    prep = PreparedReference.build(reference, spec, progress=False)
    return validate(prep, {"teacher": independent[:1500], "student": widen_radially(independent[:1500], 1.1)}, spec, progress=False)


def test_report_files(result, tmp_path) -> None:
    out = write_report(result, tmp_path / "rep", max_feature_figures=3)
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "report.html"]
    d = json.loads((out / "metrics.json").read_text())
    assert set(d["candidates"]) == {"teacher", "student"}
    assert d["candidates"]["teacher"]["passed"] and not d["candidates"]["student"]["passed"]
    feats = d["candidates"]["student"]["features"]
    assert feats["width_r_2"]["w1"] > feats["width_r_2"]["floor"]["w1"]
    assert "noise_floor_raw" in d["reference"] and d["reference"]["noise_floor_raw"]["E_ratio"]["n_half"] > 0
    page = (out / "report.html").read_text()
    # self-contained: no external resources, figures embedded as PNG data URIs
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    pngs = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    assert len(pngs) >= 4 + 2  # profiles + histogram grids (overall; E_layer up to the cap of 3 panels)
    assert all(base64.b64decode(p)[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert "teacher: PASS" in page and "student: FAIL" in page
    assert 'class="fail"' in page and "× floor" in page
    assert "further features are in the tables only" in page


def test_section_is_embeddable(result) -> None:
    sec = report_section(result, max_feature_figures=1)
    assert sec.lstrip().startswith('<section class="simcompress-validation">') and "<html" not in sec


def test_no_partial_output_on_failure(result, tmp_path, monkeypatch) -> None:
    def boom(*a, **k):
        raise RuntimeError("figure failed")

    monkeypatch.setattr("simcompress.validation.report.longitudinal_figure", boom)
    with pytest.raises(RuntimeError):
        write_report(result, tmp_path / "rep", max_feature_figures=1)
    assert not (tmp_path / "rep").exists()


def test_report_leads_with_the_answer(result, tmp_path) -> None:
    page = (write_report(result, tmp_path / "rep", max_feature_figures=6) / "report.html").read_text()
    pos = [page.index(k) for k in ('id="verdict"', "Feature matrix", 'class="fig grid"', "Multivariate metrics", 'id="failed"')]
    assert pos == sorted(pos), pos  # verdict, matrix, histogram grid, ..., failed checks last
    assert '<details id="failed">' in page  # collapsed: no "open"
    n_failed = len(result.failed_checks())
    assert n_failed > 0 and f"Failed checks ({n_failed})" in page
    # one matrix row per feature, one cell per candidate, coloured by the gate
    matrix = page[page.index('<table class="matrix">') : page.index("</table>", page.index('<table class="matrix">'))]
    assert matrix.count("<tr>") == 1 + len(result.reference.features.names)
    assert re.search(r'class="m[34]"', matrix) and re.search(r'class="m[012]"', matrix)
    assert "student: FAIL" in page[: page.index("Feature matrix")]
    assert "worst " in page[: page.index("Feature matrix")]


def test_layer_energies_are_not_comb_plots(result) -> None:
    rt = result.reference.features
    ct = {n: c.sample.features for n, c in result.candidates.items()}
    rv, cv, label = _grid_values("E_layer_2", rt, ct)
    assert label == "E_layer_2 / E_inc" and np.allclose(rv, rt["E_layer_2"] / rt.incident_energy)
    edges, logx = _hist_edges("E_tot", rt["E_tot"].astype(float), [])
    assert logx and np.allclose(np.diff(np.log(edges)), np.log(edges[1] / edges[0]))
    # E_layer / E_inc has no gaps between the discrete incident energies: no empty bins inside its range
    e2, _ = _hist_edges(label, rv, list(cv.values()))
    lo, hi = np.quantile(rv[rv > 0], [0.1, 0.9])
    h, _ = np.histogram(rv, e2)
    inner = (e2[:-1] >= lo) & (e2[1:] <= hi)
    assert inner.sum() > 5 and (h[inner] > 0).all()
    groups, skipped = _grid_groups(rt.names, 7)
    assert groups[0][0] == "overall" and sum(len(g[1]) for g in groups) == 7 and skipped == len(rt.names) - 7
