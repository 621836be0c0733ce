"""The HTML report in a real browser: headless Chromium driven over the DevTools protocol.

Chromium is started with ``--remote-debugging-pipe`` (the protocol's JSON messages on file
descriptors 3 and 4, no websocket library needed). The test opens ``report.html`` at a
1280x900 window and checks that the page logs no console error or exception, that every image
loads (``complete`` and a non-zero natural width), and that every candidate's verdict is inside
the first screen; it keeps a screenshot of that screen in ``build/test-artifacts/validation/``
(or ``$SIMCOMPRESS_TEST_ARTIFACTS``). ``make test`` installs Debian's ``chromium``
(``mk/chromium.mk``); without it the tests skip and say so.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from simcompress.validation import PreparedReference, validate
from simcompress.validation.distortions import widen_radially
from simcompress.validation.report import write_report

pytestmark = pytest.mark.browser

WIDTH, HEIGHT = 1280, 900
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("Debian package 'chromium' not installed (make test installs it when run as root: mk/chromium.mk)")
    return exe


class _Browser:
    """A minimal DevTools-protocol client over Chromium's debugging pipe."""

    def __init__(self, exe: str, profile: Path) -> None:
        cmd_r, self._cmd_w = os.pipe()
        self._out_r, out_w = os.pipe()

        def fds() -> None:  # in the child: the pipe ends Chromium expects
            os.dup2(cmd_r, 3)
            os.dup2(out_w, 4)

        self.proc = subprocess.Popen(
            [exe, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe", f"--window-size={WIDTH},{HEIGHT}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=fds, close_fds=False,  # os.pipe() ends are close-on-exec; only the dup2 copies (3, 4) pass
        )
        os.close(cmd_r)
        os.close(out_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            if time.monotonic() > deadline:
                raise TimeoutError("chromium: no DevTools answer in time")
            chunk = os.read(self._out_r, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buf += chunk
        msg, _, self._buf = self._buf.partition(b"\0")
        return json.loads(msg)

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None, timeout: float = 60) -> dict[str, Any]:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            r = self._read(deadline)
            if r.get("id") == self._id:
                if "error" in r:
                    raise RuntimeError(f"{method}: {r['error']}")
                return r.get("result", {})
            self.events.append(r)

    def wait_event(self, method: str, timeout: float = 60) -> dict[str, Any]:
        for e in self.events:
            if e.get("method") == method:
                return e
        deadline = time.monotonic() + timeout
        while True:
            r = self._read(deadline)
            self.events.append(r)
            if r.get("method") == method:
                return r

    def close(self) -> None:
        try:
            os.write(self._cmd_w, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        finally:
            os.close(self._cmd_w)
            os.close(self._out_r)


def inspect_page(html: Path, profile: Path) -> dict[str, Any]:
    """Open ``html`` in headless Chromium; console errors, image states, verdict boxes and a first-screen PNG."""
    b = _Browser(_chromium(), profile)
    try:
        target = b.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        sid = b.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for m in ("Page.enable", "Runtime.enable", "Log.enable"):
            b.send(m, session=sid)
        b.send("Emulation.setDeviceMetricsOverride", {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False}, session=sid)
        b.events.clear()
        b.send("Page.navigate", {"url": html.as_uri()}, session=sid)
        b.wait_event("Page.loadEventFired", timeout=120)

        def js(expr: str) -> Any:
            r = b.send("Runtime.evaluate", {"expression": expr, "returnByValue": True, "awaitPromise": True}, session=sid)
            if "exceptionDetails" in r:
                raise RuntimeError(f"page script failed: {r['exceptionDetails']}")
            return r["result"].get("value")

        # images decode asynchronously: wait until every one settled (loaded or failed)
        js("Promise.all(Array.from(document.images).map(i => i.complete ? 0 : new Promise(r => {i.onload = i.onerror = r})))")
        images = js("Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth}))")
        verdicts = js(
            "Array.from(document.querySelectorAll('.verdict')).map(e => {const r = e.getBoundingClientRect();"
            " return {text: e.textContent, top: r.top, bottom: r.bottom, visible: r.width > 0 && r.height > 0}})"
        )
        height = js("window.innerHeight")
        shot = base64.b64decode(b.send("Page.captureScreenshot", {"format": "png"}, session=sid)["data"])
        errors = []
        for e in b.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                errors.append("console." + p["type"] + ": " + " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
            elif m == "Runtime.exceptionThrown":
                errors.append("exception: " + str(p.get("exceptionDetails", {}).get("exception", {}).get("description", p)))
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                errors.append("log: " + p["entry"].get("text", "") + " " + p["entry"].get("url", ""))
        return {"errors": errors, "images": images, "verdicts": verdicts, "height": height, "screenshot": shot}
    finally:
        b.close()


def _artifact_dir() -> Path:
    d = Path(os.environ.get("SIMCOMPRESS_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "build" / "test-artifacts"))
    out = d / "validation"
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture(scope="module")
def report_file(reference, independent, fast_spec, tmp_path_factory):
    off = {"enabled": False}
    spec = fast_spec.model_copy(
        update={
            "classifier": fast_spec.classifier.model_copy(update=off),
            "kpd": fast_spec.kpd.model_copy(update=off),
            "false_alarm": fast_spec.false_alarm.model_copy(update={"method": "per-check"}),
        }
    )
    prep = PreparedReference.build(reference, spec, progress=False, cache=False)
    cands = {"teacher": independent[:1500], "student": widen_radially(independent[:1500], 1.1)}
    res = validate(prep, cands, spec, progress=False)
    out = write_report(res, tmp_path_factory.mktemp("browser") / "rep", max_feature_figures=12)
    return out / "report.html"


def test_report_renders_cleanly_and_leads_with_the_verdict(report_file, tmp_path) -> None:
    got = inspect_page(report_file, tmp_path / "profile")
    shot = _artifact_dir() / "report-first-screen.png"
    shot.write_bytes(got["screenshot"])
    assert got["errors"] == []
    assert len(got["images"]) >= 5
    assert all(i["complete"] and i["width"] > 0 for i in got["images"]), got["images"]
    texts = sorted(v["text"] for v in got["verdicts"])
    assert texts == ["student: FAIL", "teacher: PASS"]
    assert all(v["visible"] and v["top"] >= 0 and v["bottom"] <= got["height"] for v in got["verdicts"]), got["verdicts"]
    from PIL import Image

    img = Image.open(shot).convert("RGB")
    assert img.size == (WIDTH, HEIGHT)
    px = {c for _, c in img.getcolors(maxcolors=1 << 20)}
    # the red FAIL badge (#c0392b) and the green PASS badge (#2e8b3d) are drawn on the first screen
    assert (0xC0, 0x39, 0x2B) in px and (0x2E, 0x8B, 0x3D) in px


def test_checker_sees_console_errors_and_broken_images(tmp_path) -> None:
    """The same checks on a page that is broken on purpose: they must report every fault."""
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><body>"
        '<div style="height:3000px"></div><span class="verdict">late: PASS</span>'
        '<img alt="missing" src="does-not-exist.png"><img alt="bad" src="data:image/png;base64,AAAA">'
        "<script>console.error('boom'); undefined_function();</script></body></html>"
    )
    got = inspect_page(page, tmp_path / "profile")
    assert any("console.error: boom" in e for e in got["errors"]), got["errors"]
    assert any("exception" in e and "undefined_function" in e for e in got["errors"]), got["errors"]
    assert [i["width"] for i in got["images"]] == [0, 0]
    (v,) = got["verdicts"]
    assert v["top"] > got["height"]  # below the first screen
