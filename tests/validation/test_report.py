"""HTML report and metrics.json: self-contained, every number, several candidates side by side."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess

import pytest

from simcompress.validation import PreparedReference, validate
from simcompress.validation.distortions import widen_radially
from simcompress.validation.report import render_html, report_section, write_report


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
    assert len(pngs) >= 4 + 3
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


@pytest.mark.browser
def test_report_renders_in_headless_chromium(result, tmp_path) -> None:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("Debian package 'chromium' not installed")
    html = tmp_path / "report.html"
    html.write_text(render_html(result, max_feature_figures=2))
    shot = tmp_path / "shot.png"
    subprocess.run(
        [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         f"--screenshot={shot}", "--window-size=1280,2400", html.as_uri()],
        check=True, capture_output=True, timeout=120,
    )
    from PIL import Image

    img = Image.open(shot).convert("RGB")
    assert img.size == (1280, 2400)
    colours = img.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 200  # text, tables and figures drawn, not a blank page
    # the red FAIL verdict badge (#c0392b) and green PASS badge (#2e8b3d) are on screen
    px = {c for _, c in colours}
    assert (0xC0, 0x39, 0x2B) in px and (0x2E, 0x8B, 0x3D) in px
