"""The report page (report.html) in a real browser: headless Chromium opens it from disk, a
screenshot is taken, and the page fails on a blank page, a console error, a failed resource load
or an image that does not load.

How: Chromium's own DevTools Protocol over ``--remote-debugging-pipe`` (JSON messages ending in a
NUL byte on file descriptors 3 and 4 of the browser; the transport Playwright itself uses), spoken
with the standard library. That is the fewest moving parts that still sees console errors: no
Python package to add or pin, no driver binary whose version must match the browser's (selenium +
chromium-driver), no websocket client or debugging port (CDP over a websocket), no Node driver
(playwright-python). ``chromium --screenshot``/``--dump-dom`` alone see neither console errors nor
whether an image decoded. The screenshot is decoded with PIL and numpy (already dependencies).

Skipped only where no ``chromium`` binary is found; where ``CI=true`` that is a failure instead,
so that CI (``.ci/run`` installs Debian's chromium) cannot pass by skipping.
"""
from __future__ import annotations

import base64
import json
import os
import re
import select
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks import report

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-extensions", "--hide-scrollbars", "--mute-audio"]
TIMEOUT = 60.0  # seconds for any one answer of the browser; a page from disk loads in well under one


class Browser:
    """One headless Chromium, driven over the DevTools Protocol on a pipe pair (its fds 3 and 4)."""

    def __init__(self, exe: str, workdir: Path):
        self.log = workdir / "chromium-stderr.log"
        to_r, self.wfd = os.pipe()
        self.rfd, from_w = os.pipe()
        # The pipes go in as the shell's stdin and stdout, which it moves to fds 3 and 4 of the
        # browser (the fds --remote-debugging-pipe reads and writes) before it becomes the browser.
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen(["sh", "-c", 'exec "$0" "$@" 3<&0 4>&1 </dev/null >/dev/null', exe, *FLAGS,
                                          f"--user-data-dir={workdir / 'profile'}", "--remote-debugging-pipe", "about:blank"],
                                         stdin=to_r, stdout=from_w, stderr=err)
        os.close(to_r)
        os.close(from_w)
        self.buf, self.events, self.next_id = b"", [], 0

    def stderr_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.rfd], [], [], left)[0]:
                raise TimeoutError(f"chromium did not answer in {TIMEOUT:.0f} s; its stderr:\n{self.stderr_tail()}")
            chunk = os.read(self.rfd, 1 << 20)
            if not chunk:
                raise RuntimeError(f"chromium closed the pipe (exit code {self.proc.poll()}); its stderr:\n{self.stderr_tail()}")
            self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, session: str | None = None, **params) -> dict:
        """A command's result; the events that arrive meanwhile are kept in ``self.events``."""
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params} | ({"sessionId": session} if session else {})
        os.write(self.wfd, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT
        while True:
            m = self._read_message(deadline)
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m["result"]
            self.events.append(m)

    def wait_for(self, method: str, session: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not any(e.get("method") == method and e.get("sessionId") == session for e in self.events):
            self.events.append(self._read_message(deadline))

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except Exception:  # noqa: BLE001 - it is going away either way
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.wfd)
        os.close(self.rfd)


def check_page(browser: Browser, page: Path, png: Path, width: int = 1280) -> list[str]:
    """Open ``page`` in a fresh tab, save a full-page screenshot to ``png``, and return its problems
    (an empty list for a good page): console errors and uncaught exceptions, failed resource loads,
    images not loaded (``complete`` and ``naturalWidth > 0``), and a blank page (no text, or a
    screenshot of one uniform colour)."""
    target = browser.send("Target.createTarget", url="about:blank")["targetId"]
    s = browser.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    try:
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.send(f"{domain}.enable", s)
        browser.send("Emulation.setDeviceMetricsOverride", s, width=width, height=900, deviceScaleFactor=1, mobile=False)
        browser.events.clear()
        nav = browser.send("Page.navigate", s, url=page.resolve().as_uri())
        problems = [f"navigation failed: {nav['errorText']}"] if nav.get("errorText") else []
        browser.wait_for("Page.loadEventFired", s)  # after every image has loaded or failed
        state = browser.send("Runtime.evaluate", s, returnByValue=True, expression="""({
            text: document.body ? document.body.innerText.trim().length : 0,
            height: Math.ceil(document.documentElement.scrollHeight),
            images: Array.from(document.images, (i, n) => ({n: n, alt: i.alt, src: i.src.slice(0, 60),
                                                             complete: i.complete, width: i.naturalWidth}))})""")["result"]["value"]
        height = min(max(state["height"], 1), 16_000)
        shot = browser.send("Page.captureScreenshot", s, format="png", captureBeyondViewport=True,
                            clip={"x": 0, "y": 0, "width": width, "height": height, "scale": 1})
        png.write_bytes(base64.b64decode(shot["data"]))
        for e in (e for e in browser.events if e.get("sessionId") == s):
            p = e.get("params", {})
            if e["method"] == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
                problems.append("console error: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"]))
            elif e["method"] == "Runtime.exceptionThrown":
                d = p["exceptionDetails"]
                problems.append(f"uncaught exception: {d.get('exception', {}).get('description') or d.get('text')}")
            elif e["method"] == "Log.entryAdded" and p["entry"]["level"] == "error":
                problems.append(f"console error ({p['entry']['source']}): {p['entry']['text']} {p['entry'].get('url', '')}".rstrip())
            elif e["method"] == "Network.loadingFailed":
                problems.append(f"failed to load a {p.get('type', 'resource')}: {p['errorText']}")
        for i in state["images"]:
            if not (i["complete"] and i["width"] > 0):
                problems.append(f"image {i['n']} ({i['alt'] or 'no alt'}, {i['src']}...) did not load: "
                                f"complete={i['complete']}, naturalWidth={i['width']}")
        pixels = np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3)
        _, counts = np.unique(pixels, axis=0, return_counts=True)
        inked = 1 - counts.max() / len(pixels)  # the share of pixels not of the background colour
        if state["text"] == 0:
            problems.append("blank page: no text in the body")
        if inked < 0.001:
            problems.append(f"blank page: the screenshot is {100 * (1 - inked):.2f}% one colour")
        return problems
    finally:
        browser.send("Target.closeTarget", targetId=target)


@pytest.fixture(scope="session")  # session, like smoke_runs, so that it comes first: a skip costs no smoke run
def chromium():
    exe = shutil.which("chromium")
    if exe is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium not installed, and CI=true: CI must run the browser test (.ci/run installs Debian's chromium)")
        pytest.skip("chromium not installed (Debian: apt-get install chromium)")
    return exe


@pytest.fixture(scope="module")
def browser(chromium, tmp_path_factory):
    b = Browser(chromium, tmp_path_factory.mktemp("chromium"))
    yield b
    b.close()


@pytest.fixture(scope="module")
def report_html(chromium, smoke_runs, tmp_path_factory) -> Path:
    """report.html of the smoke records of CLIP and CLIP-Lung, with the one-glance figure and
    one interpretability figure inline (two images)."""
    root = tmp_path_factory.mktemp("report")
    runs, figs = root / "runs", root / "figures"
    runs.mkdir()
    figs.mkdir()
    for m in ("clip", "clip_lung"):
        for p in smoke_runs.glob(f"{m}_LIDC-B_fold0_seed0_smoke_phantom_*"):
            shutil.copy(p, runs / p.name)
    grid = np.indices((120, 200)).sum(axis=0) % 40 < 20
    Image.fromarray(np.where(grid, 40, 220).astype(np.uint8)).save(figs / "tsne_LIDC-B_fold0_smoke_phantom.png")
    report.main(["--tables", "2", "--profile", "smoke", "--runs", str(runs), "--figures", str(figs), "--out", str(root / "out")])
    return root / "out" / "report.html"


def test_report_page_in_headless_chromium(browser, report_html, tmp_path):
    png = tmp_path / "report.png"
    problems = check_page(browser, report_html, png)
    assert problems == [], f"{report_html} in chromium (screenshot {png}):\n" + "\n".join(problems)
    assert Image.open(png).size[0] == 1280 and Image.open(png).size[1] > 900, png  # the whole page, past one screen
    assert report_html.read_text().count("<img ") == 2


def test_the_check_catches_a_broken_page(browser, report_html, tmp_path):
    """Negative controls, through the same check_page: the report with one image's data URI corrupted
    and a console error injected; a blank page; an image whose file is missing."""
    page = report_html.read_text()
    broken = tmp_path / "broken.html"
    broken.write_text(re.sub(r'(src="data:image/png;base64,)[A-Za-z0-9+/]{16}', r"\1" + "A" * 16, page, count=1)
                      .replace("</body>", "<script>console.error('x')</script>\n</body>"))
    problems = check_page(browser, broken, tmp_path / "broken.png")
    assert len(problems) == 2, f"screenshot {tmp_path / 'broken.png'}: {problems}"
    assert problems[0] == "console error: x", problems
    assert problems[1].startswith("image 0 (accuracy per method and dataset beside the paper's, data:image/png;base64,AAAAAAAAAAAAAAAA") \
        and problems[1].endswith("did not load: complete=True, naturalWidth=0"), problems

    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><head><title>t</title></head><body></body></html>")
    problems = check_page(browser, blank, tmp_path / "blank.png")
    assert problems == ["blank page: no text in the body", "blank page: the screenshot is 100.00% one colour"], \
        f"screenshot {tmp_path / 'blank.png'}: {problems}"

    missing = tmp_path / "missing.html"
    missing.write_text('<!DOCTYPE html><html><body><h1>A heading</h1><img alt="gone" src="no-such.png"></body></html>')
    problems = check_page(browser, missing, tmp_path / "missing.png")
    assert any(p.startswith("failed to load a Image: net::ERR_FILE_NOT_FOUND") for p in problems), problems
    assert any(p.startswith("image 0 (gone, file://") and p.endswith("complete=True, naturalWidth=0") for p in problems), problems
