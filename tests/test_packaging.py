"""environment.yml and pyproject.toml list the same dependencies; the package layers import downwards."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CONDA_TO_PIP = {"pytorch": "torch"}


def _name(spec: str) -> str:
    return re.split(r"[<>=!~ \[]", spec.strip(), maxsplit=1)[0].lower()


def _spec(spec: str) -> str:
    return spec.replace(" ", "").lower()


def test_environment_and_pyproject_agree():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip = {_name(d): _spec(d) for d in project["dependencies"] + project["optional-dependencies"]["test"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
    conda = {}
    for dep in env:
        if isinstance(dep, dict):
            conda.update({_name(d): _spec(d) for d in dep["pip"]})
        elif _name(dep) not in ("python", "pip"):
            name = CONDA_TO_PIP.get(_name(dep), _name(dep))
            conda[name] = _spec(dep).replace(_name(dep), name, 1)
    assert set(pip) == set(conda), \
        f"only in pyproject: {set(pip) - set(conda)}; only in environment.yml: {set(conda) - set(pip)}"
    assert pip == conda  # same version bounds too
    for needed in ("torch", "torchvision", "jupyterlab", "ipywidgets", "papermill", "jupytext", "matplotlib",
                   "tqdm", "pyautoattack"):
        assert needed in pip


# Import names whose distribution is named otherwise, for when the distribution is not installed here (the test
# then still names what to declare); installed ones are looked up in their metadata.
MODULE_TO_DIST = {"PIL": "pillow", "yaml": "pyyaml", "IPython": "ipython", "autoattack": "pyautoattack",
                  "pyautoattack": "pyautoattack", "sklearn": "scikit-learn"}


def _third_party_imports(folder: str) -> dict[str, str]:
    """Every top-level module imported anywhere under ``folder`` (at the top or inside a function), that is
    neither the standard library nor memlib: {module: first file importing it}."""
    found = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                local = (path.parent / f"{top}.py").is_file()  # a module of the folder itself (tests' conftest)
                if top not in sys.stdlib_module_names and top != "memlib" and not local:
                    found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def _distribution(module: str) -> str:
    """The distribution providing ``module``: the known renames, else the installed one, else its own name."""
    if module in MODULE_TO_DIST:
        return MODULE_TO_DIST[module]
    installed = importlib.metadata.packages_distributions().get(module)
    return (installed[0] if installed else module).lower().replace("_", "-")


def _declared() -> tuple[set[str], set[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    main = {_name(d).replace("_", "-") for d in project["dependencies"]}
    return main, main | {_name(d) for extra in project["optional-dependencies"].values() for d in extra}


def test_every_imported_module_is_declared():
    """What memlib, the notebooks and the benchmarks import is in the main dependencies (`pip install -e .` is
    all the main command installs); what the tests import may come from an extra (`.[test]`)."""
    main, every = _declared()
    for folders, declared, how in ((("memlib", "notebooks", "benchmarks"), main, "dependencies"),
                                   (("tests",), every, "dependencies or optional-dependencies")):
        for folder in folders:
            for module, where in _third_party_imports(folder).items():
                dist = _distribution(module)
                assert dist in declared, f"{where} imports {module} (distribution {dist}), not in pyproject's " \
                                         f"{how}: declare it there and in environment.yml"


def test_the_import_scan_sees_function_level_imports(tmp_path, monkeypatch):
    """The scan finds an import inside a function, as memlib/reproduce.py's ``import submitit`` was."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text("import os\n\ndef f():\n    import submitit\n    from yaml import x\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert _third_party_imports("pkg") == {"submitit": "pkg/m.py", "yaml": "pkg/m.py"}


# memlib's layers: each module may import only modules of lower layers.
# The layer map (README "Layout"): a module imports only from lower layers. models comes first: it parses the
# model names a config is checked against. experiments/ and lectures/ are packages with one module per notebook:
# experiments/<section>.py declares the runs of its notebook from its parameters (data for the plan and the
# batch, nothing computed), lectures/<section>.py holds the computations and figures its notebook calls.
LAYERS = {"models": 0, "config": 1, "io": 2, "paper": 2, "schedule": 2, "stats": 2, "cluster": 3, "data": 3, "notebook_files": 3, "book": 3, "runs": 4,
          "attacks": 4, "methods": 5, "experiments": 5, "evaluate": 6, "train": 7, "analysis": 8, "report": 9,
          "present": 9, "lectures": 10, "plan": 10, "findings": 10, "showcase": 11, "jobs": 11, "reproduce": 12, "__main__": 13}


def _memlib_imports(tree: ast.AST):
    """The memlib modules a module imports, however it spells it: ``from memlib.x import y``,
    ``from memlib import x``, ``import memlib.x``, at the top or inside a function."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("memlib."):
            yield node.module.split(".")[1]
        elif isinstance(node, ast.ImportFrom) and node.module == "memlib":
            yield from (a.name for a in node.names if a.name != "__version__")
        elif isinstance(node, ast.Import):
            yield from (a.name.split(".")[1] for a in node.names if a.name.startswith("memlib."))


def test_modules_import_only_lower_layers():
    for path in sorted((ROOT / "memlib").rglob("*.py")):
        mod = path.parent.name if path.parent.name != "memlib" else path.stem
        if mod == "__init__":
            continue
        assert mod in LAYERS, f"memlib/{path.name} has no layer in tests/test_packaging.py"
        for dep in _memlib_imports(ast.parse(path.read_text())):
            same_package = dep == mod and path.parent.name == mod  # experiments/<notebook>.py: its registry
            assert LAYERS[dep] < LAYERS[mod] or mod == "__main__" or same_package, f"memlib.{mod} imports memlib.{dep}"
