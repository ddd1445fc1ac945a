"""The static book: built by its documented command from the committed quick tier, every page there (the
README's story, REPORT, FINDINGS, each executed notebook with its figures), every internal link and image
resolving, and nothing of this machine's paths in it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from memlib.book import check_links, pages

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = next((p for p in (shutil.which("chromium"), "/usr/bin/chromium", shutil.which("chromium-browser")) if p
                 and Path(p).is_file()), None)


def test_the_book_builds_with_its_command_and_every_link_resolves():
    proc = subprocess.run([sys.executable, "-m", "memlib", "book", "--tier", "quick"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    book = ROOT / "build" / "book"
    names = {p.name for p in book.glob("*.html")}
    executed = sorted((ROOT / "outputs/quick/notebooks").glob("*.ipynb"))
    assert executed and {f"{nb.stem}.html" for nb in executed} <= names
    assert {"index.html", "report.html", "findings.html"} <= names
    assert check_links(book) == []
    report = (book / "report.html").read_text()
    figures = re.findall(r'<img src="(figures/[^"]+)"', report)
    assert len(figures) >= 20 and all((book / f).stat().st_size > 1000 for f in figures)
    for nb in executed:  # each notebook page carries its figures (embedded) and links back to the others
        page = (book / f"{nb.stem}.html").read_text()
        assert "data:image/png;base64" in page, nb.stem
    index = (book / "index.html").read_text()
    assert 'href="01_introduction.html"' in index and 'href="findings.html"' in index
    for page in book.glob("*.html"):
        assert str(ROOT) not in page.read_text(), f"{page.name} holds a path of this machine"
    assert (book / "mathjax" / "MathJax.js").is_file()  # the formulas need no network
    _formulas_render_offline(book / "01_introduction.html")


def _formulas_render_offline(page: Path) -> None:
    """Open a book page in Debian's chromium (no network is asked for: every request but file:// is refused)
    and check that MathJax typeset its formulas."""
    if CHROMIUM is None:
        pytest.skip("no chromium binary (Debian: apt-get install chromium) to check the formulas in")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page_ = browser.new_page()
            remote = []
            page_.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file://")
                        else (remote.append(route.request.url), route.abort()))
            page_.goto(page.as_uri())
            page_.wait_for_function("() => window.MathJax && MathJax.Hub", timeout=60_000)
            page_.evaluate("() => new Promise(done => MathJax.Hub.Queue(() => done(true)))")  # typesetting ended
            typeset = page_.locator(".MathJax, .MathJax_Display").count()
            assert typeset >= 5 and not remote, (typeset, remote[:3])
            assert page_.locator("text=Math Processing Error").count() == 0, "MathJax failed on a formula"
        finally:
            browser.close()


def test_a_broken_link_is_reported(tmp_path):
    (tmp_path / "a.html").write_text('<a href="b.html">b</a> <img src="figures/none.png"> '
                                     '<a href="https://example.org">x</a> <a href="#top">t</a>')
    (tmp_path / "b.html").write_text("ok")
    assert check_links(tmp_path) == ["a.html: figures/none.png"]


def test_the_book_covers_what_the_tier_committed():
    found = pages(ROOT, "quick")
    assert ROOT / "README.md" in found and found[ROOT / "README.md"] == "index.html"
    assert ROOT / "outputs/quick/FINDINGS.md" in found
