"""The committed notebooks stay clean: they hold inputs only and JupyterLab's metadata, and each way of saving
one (Jupyter's contents manager with the pre-save hook, jupytext's paired contents manager, the git filter)
strips a notebook with outputs back to exactly the committed bytes. (The real JupyterLab, in a browser:
tests/test_browser.py.)"""

from __future__ import annotations

import asyncio
import copy
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from memlib.notebook_files import KERNELSPEC, lab_command, pre_save, strip

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _executed(path: Path) -> dict:
    """The notebook at ``path`` as JupyterLab holds it after "Run All": outputs, counts, cell metadata, and
    the kernel's language_info (another Python version)."""
    nb = json.loads(path.read_text())
    for i, cell in enumerate(nb["cells"]):
        cell["source"] = "".join(cell["source"])  # JupyterLab sends each source as one string
        cell["metadata"]["scrolled"] = True
        cell["metadata"]["jupyter"] = {"outputs_hidden": False}
        if cell["cell_type"] == "code":
            cell["execution_count"] = i + 1
            cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "trained\n"}]
    nb["metadata"]["language_info"] = {**nb["metadata"]["language_info"], "version": "3.12.4"}
    nb["metadata"]["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    return nb


def test_committed_notebooks_are_stripped_with_jupyterlab_metadata():
    assert SOURCES
    for path in SOURCES:
        nb = json.loads(path.read_text())
        assert nb["metadata"]["kernelspec"] == KERNELSPEC, path.name  # what JupyterLab writes: no "modified" on open
        assert "jupytext" not in nb["metadata"], f"{path.name}: pairing belongs in notebooks/jupytext.toml"
        for cell in nb["cells"]:
            assert set(cell["metadata"]) <= {"tags"}, path.name
            if cell["cell_type"] == "code":
                assert cell["outputs"] == [] and cell["execution_count"] is None, path.name
        assert nbformat.writes(nbformat.from_dict(strip(copy.deepcopy(nb)))) + "\n" == path.read_text(), \
            f"{path.name} is not stripped: python -m memlib notebook-filter --write {path.relative_to(ROOT)}"


def _project(tmp_path: Path) -> Path:
    for folder in ("memlib", "params", "notebooks"):
        (tmp_path / folder).mkdir()
    src = SOURCES[0]
    (tmp_path / "notebooks" / src.name).write_bytes(src.read_bytes())
    (tmp_path / "notebooks" / "jupytext.toml").write_bytes((ROOT / "notebooks" / "jupytext.toml").read_bytes())
    (tmp_path / "notebooks" / (src.stem + ".py")).write_bytes(src.with_suffix(".py").read_bytes())
    return tmp_path


def test_saving_through_the_contents_manager_keeps_the_committed_bytes(tmp_path):
    from jupyter_server.services.contents.filemanager import FileContentsManager

    project = _project(tmp_path)
    rel = f"notebooks/{SOURCES[0].name}"
    cm = FileContentsManager(root_dir=str(project))
    cm.register_pre_save_hook(pre_save)
    cm.save({"type": "notebook", "format": "json", "content": _executed(SOURCES[0])}, rel)
    assert (project / rel).read_bytes() == SOURCES[0].read_bytes()
    # a notebook outside notebooks/ (an executed tier, a student's own) is saved as it is
    (project / "outputs").mkdir()
    cm.save({"type": "notebook", "format": "json", "content": _executed(SOURCES[0])}, "outputs/mine.ipynb")
    assert json.loads((project / "outputs/mine.ipynb").read_text())["cells"][1].get("outputs")


def test_jupytext_pairing_saves_both_files_unchanged(tmp_path):
    """JupyterLab's contents manager when jupytext is installed: saving the .ipynb writes its .py twin too."""
    from jupytext.async_contentsmanager import build_async_jupytext_contents_manager_class
    from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager

    project = _project(tmp_path)
    rel = f"notebooks/{SOURCES[0].name}"
    cm = build_async_jupytext_contents_manager_class(AsyncLargeFileManager)(root_dir=str(project))
    cm.register_pre_save_hook(pre_save)
    model = asyncio.run(cm.get(rel))  # read as JupyterLab reads it (inputs from the .py, the pairing from the toml)
    model["content"] = _executed(SOURCES[0])
    asyncio.run(cm.save({"type": "notebook", "format": "json", "content": model["content"]}, rel))
    assert (project / rel).read_bytes() == SOURCES[0].read_bytes()
    assert (project / rel).with_suffix(".py").read_bytes() == SOURCES[0].with_suffix(".py").read_bytes()


def test_git_filter_strips_to_the_committed_bytes():
    text = json.dumps(_executed(SOURCES[0]))
    out = subprocess.run([sys.executable, "-m", "memlib", "notebook-filter"], input=text, capture_output=True,
                         text=True, check=True).stdout
    assert out == SOURCES[0].read_text()


def test_lab_starts_at_the_project_root_with_the_hook():
    cmd = lab_command(ROOT, ["--port", "8890"])
    assert f"--ServerApp.root_dir={ROOT}" in cmd and cmd[-2:] == ["--port", "8890"]
    assert "--ContentsManager.pre_save_hook=memlib.notebook_files.pre_save" in cmd


@pytest.mark.parametrize("bad", ["not json", ""])
def test_git_filter_passes_empty_input_and_rejects_garbage_in_one_line(bad):
    proc = subprocess.run([sys.executable, "-m", "memlib", "notebook-filter"], input=bad, capture_output=True,
                          text=True)
    if bad:
        assert proc.returncode != 0
    else:
        assert proc.returncode == 0 and proc.stdout == ""
