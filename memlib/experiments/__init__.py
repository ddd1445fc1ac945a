"""Experiments as data: for each notebook, the runs its parameters ask for.

Each notebook's module here registers one function ``runs(p, make) -> {key: RunConfig}``: ``p`` is the
notebook's parameters (its parameters cell's defaults, or a tier's ``params/<notebook>/<tier>.yaml``), ``make``
builds a RunConfig from the notebook's ``base`` plus changes. The notebook calls the same function
(``declare``), so what the plan counts, what the batch distributes and what the notebook trains are one list.

Keys name a run's role in the notebook (``("eps", "pgd_at", 8)``); several keys may be the same run (one
folder). Dependencies between runs (``init_from``, KD teachers) are the checkpoint paths in their configs.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from memlib.config import WEIGHT_KEYS, ConfigError, RunConfig, notebook_defaults, read_yaml, resolve_bases
from memlib.runs import project_root, run_dir_for

_REGISTRY: dict[str, Callable] = {}


def experiment(notebook: str):
    """Register the function that declares the runs of ``notebook``."""
    def register(fn):
        _REGISTRY[notebook] = fn
        return fn
    return register


def registered() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


@dataclass
class Declared:
    """The runs of one notebook: ``configs[key]`` for each role, ``dirs[key]`` its run folder, ``needs``: for
    each run folder, the run folders whose checkpoints it starts from or distills."""
    notebook: str
    configs: dict
    dirs: dict = field(default_factory=dict)
    needs: dict = field(default_factory=dict)

    def unique(self) -> dict[Path, RunConfig]:
        """Each distinct run once, in declaration order: {run folder: config}."""
        out: dict[Path, RunConfig] = {}
        for key, cfg in self.configs.items():
            out.setdefault(self.dirs[key], cfg)
        return out


def params(notebook: str, tier: str, project: Path | None = None, overrides: dict | None = None) -> dict:
    """The parameters of ``notebook`` in ``tier``: its parameters cell's defaults, then the tier's YAML file,
    then ``overrides``; ``base`` references resolved (``config.resolve_bases``)."""
    project = project or project_root()
    path = project / "params" / notebook / f"{tier}.yaml"
    if not path.is_file():
        raise ConfigError(f"notebook {notebook} has no {tier} parameters ({path.relative_to(project)} is missing)")
    values = {**notebook_defaults(notebook, project), **read_yaml(path, "notebook parameters"), **(overrides or {})}
    return resolve_bases(values, project)


def declare(notebook: str, p: dict, out_dir: str | Path, data_dir: str | Path) -> Declared:
    """The runs of ``notebook`` for parameters ``p`` (a dict, or a notebook's globals), their folders under
    ``out_dir`` and their dependencies. Every config is built, and so validated, before anything trains."""
    _load_all()
    if notebook not in _REGISTRY:
        raise ConfigError(f"no experiment is declared for notebook {notebook}; known: {', '.join(sorted(_REGISTRY))}")
    base = p.get("base") or {}

    def make(_base: dict | None = None, **changes) -> RunConfig:
        return RunConfig(**{"out_dir": str(out_dir), "data_dir": str(data_dir), **(base if _base is None else _base),
                            **changes})

    configs = _REGISTRY[notebook](p, make)
    dirs = {key: run_dir_for(cfg)[0] for key, cfg in configs.items()}
    known = set(dirs.values())
    needs: dict = {}
    for key, cfg in configs.items():
        deps = [Path(getattr(cfg, k)).parent for k in WEIGHT_KEYS if getattr(cfg, k)]
        needs.setdefault(dirs[key], sorted({d for d in deps if d in known}))
    return Declared(notebook, configs, dirs, needs)


ATTEMPT_KEYS = ("methods", "seeds", "changes")


def attempt_runs(p: dict, make) -> dict:
    """The runs of a notebook's ``attempts``: {name: {"methods": [...], "seeds": [...], "changes": {key: value}}},
    each a deliberate try at a quick-scale setting where a finding may show (its criterion is fixed in
    ``memlib.findings`` before it runs): one run per method and seed, keyed ``("attempt", name, method, seed)``."""
    planned = {}
    for name, spec in (p.get("attempts") or {}).items():
        if not isinstance(spec, dict) or set(spec) - set(ATTEMPT_KEYS) or not spec.get("methods"):
            raise ConfigError(f"attempt {name!r} must be a mapping with methods (a list), and optionally seeds "
                              f"and changes; got {spec!r}")
        for m in spec["methods"]:
            for s in spec.get("seeds") or [0]:
                planned[("attempt", name, m, s)] = make(**{**(spec.get("changes") or {}), "method": m, "seed": s})
    return planned


def _load_all() -> None:
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
