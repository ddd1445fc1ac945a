"""The static book: one folder of HTML pages, browsable offline, built from what a tier committed. The README's
story is the front page; then REPORT (every table and figure), FINDINGS (each finding's verdict), the criteria,
and each executed notebook as a page with its figures (nbconvert). Links between these files become links
between pages, figures are copied beside them, and links to anything else (source files, parameter files)
point into the checkout the book was built in. ``check_links`` then fails the build on any internal link or
image that does not resolve.

``python -m memlib book --tier quick`` writes ``build/book/index.html``."""

from __future__ import annotations

import html
import re
import shutil
from pathlib import Path

from memlib.config import MemlibError
from memlib.io import atomic_write_text

LINK = re.compile(r'(href|src)="([^"]*)"')
EXTERNAL = ("http://", "https://", "mailto:", "data:", "#", "javascript:")


class BrokenLinks(MemlibError):
    """Internal links or images of the book that do not resolve."""


def pages(project: Path, tier: str) -> dict[Path, str]:
    """{source file: page name} of the book, in its reading order."""
    out_dir = project / "outputs" / tier
    found = {project / "README.md": "index.html", out_dir / "REPORT.md": "report.html",
             out_dir / "FINDINGS.md": "findings.html", project / "docs" / "criteria.md": "criteria.html",
             project / "notebooks" / "README.md": "notebooks.html"}
    for nb in sorted((out_dir / "notebooks").glob("*.ipynb")):
        found[nb] = f"{nb.stem}.html"
    return {src: page for src, page in found.items() if src.is_file()}


def _title(src: Path, text: str) -> str:
    first = next((line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("# ")), src.stem)
    return re.sub(r"[`*]", "", first)


def _markdown(text: str) -> str:
    import mistune

    return mistune.create_markdown(escape=False, plugins=["table", "strikethrough", "footnotes", "url"])(text)


def _notebook(src: Path) -> tuple[str, str]:
    """(title, HTML body) of an executed notebook, with its outputs (figures are embedded images)."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(src, as_version=4)
    exporter = HTMLExporter(template_name="basic")  # the body only; the page around it is ours
    body, _ = exporter.from_notebook_node(nb)
    first = next((c.source for c in nb.cells if c.cell_type == "markdown"), src.stem)
    return _title(src, first), body


STYLE = """body{font-family:system-ui,sans-serif;max-width:60rem;margin:0 auto;padding:1rem 1.5rem;line-height:1.5}
nav{border-bottom:1px solid #ccc;padding-bottom:.5rem;margin-bottom:1rem;font-size:.9rem}
nav a{margin-right:.8rem}table{border-collapse:collapse;font-size:.85rem}td,th{border:1px solid #ccc;
padding:.2rem .4rem}img{max-width:100%}pre{background:#f6f6f6;padding:.5rem;overflow-x:auto;font-size:.8rem}
.jp-InputPrompt,.jp-OutputPrompt{display:none}.jp-Cell{margin:.6rem 0}"""


# MathJax 2.7 from the jupyter-server-mathjax package, copied into the book: the lectures' formulas render
# without a network ($...$ and $$...$$ as in the notebooks; code and pre blocks are left alone), in the
# STIX-Web fonts the package ships
MATHJAX = ('<script type="text/x-mathjax-config">MathJax.Hub.Config({tex2jax: {inlineMath: [["$", "$"], '
           '["\\\\(", "\\\\)"]], processEscapes: true}, messageStyle: "none", '
           '"HTML-CSS": {availableFonts: ["STIX-Web"], preferredFont: "STIX-Web", webFont: "STIX-Web", '
           'imageFont: null}});</script>'
           '<script src="mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"></script>')


def _page(title: str, body: str, nav: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style>{MATHJAX}</head>\n<body><nav>{nav}</nav>\n{body}\n</body></html>\n")


def _copy_mathjax(out: Path) -> None:
    import jupyter_server_mathjax

    shutil.copytree(Path(jupyter_server_mathjax.__file__).parent / "static", out / "mathjax")


def build(project: Path, tier: str = "quick", out: Path | None = None) -> Path:
    """Write the book of ``tier`` into ``out`` (default ``build/book``), check its links, return index.html."""
    project = Path(project).resolve()
    out = Path(out or project / "build" / "book").resolve()
    found = pages(project, tier)
    if not any(src.suffix == ".ipynb" for src in found):
        raise MemlibError(f"outputs/{tier}/notebooks/ holds no executed notebook: `python -m memlib reproduce "
                          f"--tier {tier}` (or `render`) writes them")
    if out.exists():
        shutil.rmtree(out)
    (out / "figures").mkdir(parents=True)
    _copy_mathjax(out)
    # executed notebooks are also what the source notebooks' links should open in the book
    targets = {src.resolve(): page for src, page in found.items()}
    targets.update({(project / "notebooks" / f"{Path(p).stem}.ipynb").resolve(): p
                    for s, p in found.items() if s.suffix == ".ipynb"})
    titles, bodies = {}, {}
    for src, page in found.items():
        if src.suffix == ".ipynb":
            titles[page], bodies[page] = _notebook(src)
        else:
            text = src.read_text()
            titles[page], bodies[page] = _title(src, text), _markdown(text)
    nav = " ".join(f'<a href="{p}">{html.escape(t if p != "index.html" else "Home")}</a>'
                   for p, t in ((p, _short(titles[p])) for p in found.values()))
    for src, page in found.items():
        body = LINK.sub(lambda m: f'{m.group(1)}="{_target(m.group(2), src, project, out, targets)}"',
                        bodies[page])
        atomic_write_text(out / page, _page(titles[page], body, nav))
    broken = check_links(out)
    if broken:
        raise BrokenLinks(f"{len(broken)} broken link(s) in the book, first: {broken[0]}")
    return out / "index.html"


def _short(title: str) -> str:
    return title.split(" — ")[0].split(":")[0][:40]


def _target(url: str, src: Path, project: Path, out: Path, targets: dict) -> str:
    """Where link ``url`` of page source ``src`` points in the book: another page, a copied figure, or the
    file in the checkout (relative to the book folder)."""
    url = html.unescape(url)
    if not url or url.startswith(EXTERNAL):
        return html.escape(url, quote=True)
    path, _, fragment = url.partition("#")
    resolved = (src.parent / path).resolve()
    suffix = f"#{fragment}" if fragment else ""
    if resolved in targets:
        return targets[resolved] + suffix
    if resolved.suffix.lower() in (".png", ".pdf", ".svg", ".jpg") and resolved.is_file():
        shutil.copyfile(resolved, out / "figures" / resolved.name)
        return f"figures/{resolved.name}{suffix}"
    try:
        rel = Path(*[".."] * len(out.relative_to(project).parts)) / resolved.relative_to(project)
    except ValueError:  # a book outside the checkout: absolute paths
        rel = resolved
    return html.escape(rel.as_posix() + suffix, quote=True)


def check_links(book: Path) -> list[str]:
    """Every internal link and image of the HTML pages in ``book`` that does not resolve to a file, as
    ``page: target``."""
    broken = []
    for page in sorted(Path(book).glob("*.html")):
        for _, url in LINK.findall(page.read_text()):
            url = html.unescape(url)
            if not url or url.startswith(EXTERNAL):
                continue
            path = url.partition("#")[0].partition("?")[0]
            if path and not (page.parent / path).exists():
                broken.append(f"{page.name}: {url}")
    return broken
