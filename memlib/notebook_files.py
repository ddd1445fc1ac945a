"""The committed notebooks stay clean under ordinary use: ``notebooks/*.ipynb`` hold inputs only (no outputs, no
execution counts, no cell metadata but tags) and the notebook metadata JupyterLab writes, so opening, running and
saving one in JupyterLab changes no byte of it. Three ways in, one rule (``strip``):

- ``pre_save``: a Jupyter contents-manager hook. ``python -m memlib lab`` starts JupyterLab from the project root
  with it, so autosave writes a source notebook without the outputs a student just produced (they stay on screen;
  the executed tiers are in ``outputs/<tier>/notebooks``).
- ``python -m memlib notebook-filter``: the same rule as a git clean filter, for those who start JupyterLab
  their own way (README: one ``git config`` line; ``.gitattributes`` names it).
- ``python -m memlib notebook-filter --write notebooks/*.ipynb``: rewrite files in place (after
  ``jupytext --sync``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat

# What JupyterLab writes when it opens a notebook with the project's kernel (ipykernel, CPython 3.11); the
# committed notebooks carry exactly this, so opening one leaves it unmodified.
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
LANGUAGE_INFO = {"codemirror_mode": {"name": "ipython", "version": 3}, "file_extension": ".py",
                 "mimetype": "text/x-python", "name": "python", "nbconvert_exporter": "python",
                 "pygments_lexer": "ipython3", "version": "3.11.7"}
KEPT_CELL_METADATA = ("tags",)  # papermill's `parameters` tag


def strip(nb: dict) -> dict:
    """``nb`` (a notebook as a dict, changed in place and returned) with inputs only, and as notebook metadata
    the kernelspec and language_info above (jupytext's pairing lives in ``notebooks/jupytext.toml``, not in each
    notebook)."""
    for cell in nb.get("cells", []):
        cell["metadata"] = {k: v for k, v in cell.get("metadata", {}).items() if k in KEPT_CELL_METADATA}
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    nb["metadata"] = {"kernelspec": dict(KERNELSPEC), "language_info": dict(LANGUAGE_INFO)}
    return nb


def is_source(path: Path, project: Path) -> bool:
    """A source notebook: an .ipynb directly in the project's ``notebooks/`` folder."""
    try:
        return path.suffix == ".ipynb" and path.resolve().parent == (project / "notebooks").resolve()
    except OSError:
        return False


def pre_save(model: dict, path: str, contents_manager, **kwargs) -> None:
    """Jupyter's ``ContentsManager.pre_save_hook``: a source notebook is saved stripped (``strip``), so neither
    the outputs of a session nor another kernel's version reach it. Other notebooks and files are saved as they
    are."""
    if model.get("type") != "notebook" or not model.get("content"):
        return
    root = Path(contents_manager.root_dir)
    file = root / path.strip("/")
    project = _project_of(file)
    if project is None or not is_source(file, project):
        return
    strip(model["content"])


def _project_of(file: Path) -> Path | None:
    for folder in file.resolve().parents:
        if (folder / "memlib").is_dir() and (folder / "params").is_dir() and (folder / "notebooks").is_dir():
            return folder
    return None


def write_stripped(path: Path) -> bool:
    """Rewrite the notebook at ``path`` stripped, in JupyterLab's own serialization (nbformat); True when it
    changed."""
    from memlib.io import atomic_write_text

    before = path.read_text()
    nb = nbformat.reads(before, as_version=4)
    text = nbformat.writes(nbformat.from_dict(strip(nb)))
    if not text.endswith("\n"):
        text += "\n"
    if text != before:
        atomic_write_text(path, text)
        return True
    return False


def filter_main(argv: list[str]) -> int:
    """``notebook-filter``: stdin to stdout (a git clean filter), or ``--write FILE...`` in place."""
    if argv[:1] == ["--write"]:
        for name in argv[1:]:
            if write_stripped(Path(name)):
                print(f"stripped {name}")
        return 0
    text = sys.stdin.read()
    if not text.strip():
        sys.stdout.write(text)
        return 0
    nb = nbformat.reads(text, as_version=4)
    out = nbformat.writes(nbformat.from_dict(strip(nb)))
    sys.stdout.write(out if out.endswith("\n") else out + "\n")
    return 0


def lab_command(project: Path, extra: list[str]) -> list[str]:
    """The JupyterLab command line of ``python -m memlib lab``: from the project root (so ``params/`` and
    ``outputs/`` are in the file browser), with ``pre_save`` as the contents manager's pre-save hook."""
    return [sys.executable, "-m", "jupyter", "lab", f"--ServerApp.root_dir={project}",
            "--ContentsManager.pre_save_hook=memlib.notebook_files.pre_save", *extra]


def lab_main(project: Path, extra: list[str]) -> int:
    cmd = lab_command(project, extra)
    os.chdir(project)
    os.execv(cmd[0], cmd)  # JupyterLab in this process: Ctrl-C stops it as usual
    return 0  # not reached
