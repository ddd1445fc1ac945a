"""A student's JupyterLab, for real: `python -m memlib lab` on a free local port, each notebook opened in
headless Chromium (Debian's, driven by Playwright through ``executable_path``: no browser download), *Run All*,
then: no error output, no widget shown as text, each explorer's figure redrawn when its control moves, 01's
explorer showing the committed trained models with a prediction that changes with eps, and `git status`
unchanged after saving and closing every notebook. Smoke tier; the runs the smoke notebook test trained are
reused (this file runs after tests/test_notebooks.py), so it takes a few minutes."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
CHROMIUM = next((p for p in (shutil.which("chromium"), "/usr/bin/chromium", shutil.which("chromium-browser")) if p
                 and Path(p).is_file()), None)
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (Debian: apt-get install chromium; "
                                                         ".ci/run installs it where apt-get can)")
WIDGET_AS_TEXT = re.compile(r"^\s*(interactive|VBox|HBox|Dropdown|IntSlider|FloatSlider|SelectionSlider|"
                            r"SelectMultiple|Output)\(|Error displaying widget|Loading widget")
TIMINGS: dict = {}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _git_status() -> str:
    """What git says changed, run folders aside (a resumable training elsewhere may be writing there)."""
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--", ".",
                           ":(exclude)outputs/*/runs"], cwd=ROOT, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab as the README starts it, with its own workspace and runtime folders; yields (url, token)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("the git status check needs a git checkout")
    port, token = _free_port(), secrets.token_hex(16)
    tmp = tmp_path_factory.mktemp("lab")
    env = {**os.environ, "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "workspaces"), "JUPYTER_RUNTIME_DIR": str(tmp / "rt"),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "memlib", "lab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
           f"--IdentityProvider.token={token}", "--ServerApp.port_retries=0"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # a CI container runs as root; JupyterLab refuses that otherwise
    log = open(tmp / "lab.log", "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited: {(tmp / 'lab.log').read_text()[-2000:]}")
            time.sleep(0.5)
    else:
        proc.terminate()
        pytest.fail("JupyterLab did not answer within 2 minutes")
    yield url, token
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def browser(lab):
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def status_before(lab):
    before = _git_status()
    yield before


def _run_all(page, url: str, token: str, name: str) -> float:
    """Open ``name`` as a student does (accepting the kernel JupyterLab proposes), Run All, wait until every
    code cell has run; the seconds it took."""
    page.goto(f"{url}/lab/tree/notebooks/{name}.ipynb?token={token}&reset")
    page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=120_000)
    try:  # JupyterLab 4.5+ asks which kernel to start (the notebook's own is preselected)
        page.locator(".jp-Dialog button:has-text('Select')").click(timeout=15_000)
    except sync_api.TimeoutError:
        pass
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
    t0 = time.time()
    page.click("div.lm-MenuBar-itemLabel:text-is('Run')")
    page.click("div.lm-Menu-itemLabel:text-is('Run All Cells')")
    while True:
        prompts = page.eval_on_selector_all(".jp-CodeCell .jp-InputPrompt", "els => els.map(e => e.textContent)")
        if prompts and all(re.fullmatch(r"\[\d+\]:", p.strip()) for p in prompts):
            idle = page.query_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']")
            if idle:
                break
        assert time.time() - t0 < 900, f"{name}: Run All did not finish in 15 min ({prompts})"
        time.sleep(1)
    page.wait_for_timeout(1500)  # widgets render after their kernel messages
    return time.time() - t0


def _outputs(page) -> list[tuple[str, str]]:
    return page.eval_on_selector_all(
        ".jp-OutputArea-output", "els => els.map(e => [e.getAttribute('data-mime-type') || '', e.innerText])")


def _explorer_image(page):
    """The src of the last explorer's figure (the last interact widget's output image)."""
    imgs = page.locator(".widget-interact .jp-OutputArea-output img, .widget-interact img")
    return imgs.last.get_attribute("src") if imgs.count() else None


def _move_a_control(page) -> str:
    """Move the last explorer's first control that changes its view: a dropdown to its next option, else a
    slider one step right; what was moved."""
    box = page.locator(".widget-interact").last
    selects = box.locator("select")
    for i in range(selects.count()):
        sel = selects.nth(i)
        options = sel.locator("option")
        if options.count() > 1 and not sel.get_attribute("multiple"):
            current = sel.input_value()
            values = [options.nth(k).get_attribute("value") for k in range(options.count())]
            sel.select_option(value=next(v for v in values if v != current))
            return f"dropdown {i}"
    handles = box.locator(".noUi-handle, .slider-container [role='slider']")
    if handles.count():
        handles.first.focus()
        page.keyboard.press("ArrowRight")
        return "slider"
    multi = box.locator("select[multiple] option")
    if multi.count() > 1:
        multi.first.click()  # select only the first method
        return "multiple select"
    raise AssertionError("no control to move in the explorer")


def _wait_changed(page, before: str | None, what: str) -> str:
    for _ in range(240):
        now = _explorer_image(page)
        if now and now != before:
            return now
        page.wait_for_timeout(500)
    raise AssertionError(f"the explorer's figure did not change after moving its {what}")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_run_all_in_jupyterlab(lab, browser, status_before, name):
    url, token = lab
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        TIMINGS[name] = _run_all(page, url, token, name)
        print(f"browser Run All {name}: {TIMINGS[name]:.0f} s")
        outputs = _outputs(page)
        errors = [text[:300] for mime, text in outputs if "stderr" in mime
                  and ("Traceback" in text or re.search(r"^\w*(Error|Exception)\b", text, re.M))]
        assert not errors, f"{name}: error output: {errors[0]}"
        as_text = [text[:120] for _, text in outputs if WIDGET_AS_TEXT.search(text)]
        assert not as_text, f"{name}: a widget shown as text: {as_text[0]}"
        assert page.locator(".widget-interact").count() >= 1, f"{name}: no explorer rendered"
        before = _explorer_image(page)
        assert before, f"{name}: the explorer shows no figure"
        moved = _move_a_control(page)
        _wait_changed(page, before, moved)
        if name == "01_introduction":
            _check_intro_predictions(page)
        page.keyboard.press("Control+s")  # save as a student would; the pre-save hook strips it
        page.wait_for_timeout(1500)
        page.click("div.lm-MenuBar-itemLabel:text-is('File')")
        page.locator("div.lm-Menu-itemLabel", has_text="Close and Shut Down").first.click()
        try:
            page.locator(".jp-Dialog button:has-text('Shut Down'), .jp-Dialog button:has-text('Ok')").first.click(
                timeout=5000)
        except sync_api.TimeoutError:
            pass
        page.wait_for_timeout(1000)
    finally:
        page.close()
    assert _git_status() == status_before, f"{name}: git status changed after running and saving it"


def _check_intro_predictions(page) -> None:
    """01's explorer: the committed quick-tier models, and the adversarial prediction changes with eps."""
    assert "Explorer models: the quick tier's trained" in page.locator(".jp-Notebook").inner_text()
    box = page.locator(".widget-interact").last
    box.locator("select").first.select_option(label="Standard training")

    def caption():
        found = re.findall(r"eps (\d+)/255 → (.+)", box.inner_text())
        return found[-1] if found else None

    def slider_state() -> str:
        """What the eps slider itself shows (its readout and the handle's aria value), for a failure message."""
        readout = box.locator(".widget-readout").first
        handle = box.locator(".noUi-handle").first
        return (f"readout {readout.inner_text() if readout.count() else None!r}, "
                f"aria-valuenow {handle.get_attribute('aria-valuenow') if handle.count() else None!r}")

    def redrawn(want: str, seconds: float) -> bool:
        for _ in range(int(seconds * 2)):
            now = caption()
            if now and now[0] == want:
                return True
            page.wait_for_timeout(500)
        return False

    def set_eps(end: str, want: str):
        """The eps slider to its first (end "Home") or last ("End") value, as a student would: by keyboard, by
        dragging its handle past the end of the track, or by arrow keys one step at a time; each way waits up to
        30 s for the explorer to redraw. A failure says where the slider was left."""
        handle, track = box.locator(".noUi-handle").first, box.locator(".noUi-target").first

        def keyboard():
            handle.focus()
            page.keyboard.press(end)

        def drag():
            handle.scroll_into_view_if_needed()
            h, t = handle.bounding_box(), track.bounding_box()
            page.mouse.move(h["x"] + h["width"] / 2, h["y"] + h["height"] / 2)
            page.mouse.down()
            x = t["x"] - 40 if end == "Home" else t["x"] + t["width"] + 40
            page.mouse.move(x, h["y"] + h["height"] / 2, steps=12)
            page.mouse.up()

        def arrows():
            handle.focus()
            for _ in range(17):
                page.keyboard.press("ArrowLeft" if end == "Home" else "ArrowRight")

        def at_target() -> bool:
            readout = box.locator(".widget-readout").first
            return readout.count() > 0 and readout.inner_text().strip().startswith(f"{want}/")

        for way in (keyboard, drag, arrows, keyboard, drag):
            if at_target():  # the slider is there but the explorer missed the change: step away, so the next
                handle.focus()  # move is a change the kernel hears of again
                page.keyboard.press("ArrowRight" if end == "Home" else "ArrowLeft")
                page.wait_for_timeout(1500)
            way()
            if redrawn(want, 30):
                return caption()
        raise AssertionError(f"the eps slider did not reach {want}/255 by keyboard, drag or arrows: "
                             f"{slider_state()}; the explorer last printed {caption()}")

    def rerun_explorer():
        """A fresh explorer: run its cell again (Ctrl+Enter in it), as a student would when a widget hangs."""
        cell = page.locator(".jp-CodeCell", has=page.locator(".widget-interact")).last
        cell.locator(".jp-InputArea-editor").click()
        page.keyboard.press("Control+Enter")
        page.wait_for_timeout(5000)
        box.locator("select").first.select_option(label="Standard training")

    try:
        seen = {"Home": set_eps("Home", "0"), "End": set_eps("End", "16")}
    except AssertionError:  # an explorer that stopped redrawing: once more with a fresh one
        rerun_explorer()
        seen = {"Home": set_eps("Home", "0"), "End": set_eps("End", "16")}
    assert seen["Home"][1] != seen["End"][1], f"the prediction does not change with eps: {seen}"

