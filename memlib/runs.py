"""Run directories: where a run lives, what it records about itself, and how its model is rebuilt.

A run directory ``<out_dir>/<name>-<hash>`` is identified by the run's config (all keys that change what
is computed, plus the resolved data source). It holds:

* ``config.json``   the full config, its identity, data source, code version, device, library versions
* ``labels.npz``    example ids, labels trained on and true labels (noise saved with the run)
* ``metrics.jsonl`` one JSON line per finished epoch, written as it happens
* ``last.pt``       everything needed to resume (weights, optimizer, TE soft labels, RNG states, history)
* ``best.pt``       weights of the epoch with the highest test PGD-k accuracy (ties: natural accuracy)
* ``final.pt``      weights after the last epoch
* ``status.json``   ``{"finished": true, ...}`` once the run is complete
* ``eval.json``     results of ``memlib evaluate``
"""

from __future__ import annotations

import json
import platform
import subprocess
from pathlib import Path

import torch
import torch.nn as nn

from memlib import __version__
from memlib.config import ConfigError, RunConfig
from memlib.data import NUM_CLASSES, resolve_source, source_label
from memlib.models import build_model

# Per-channel statistics used only when ``normalize: true`` (the authors feed raw [0, 1] pixels).
STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
}


PATH_KEYS = ("out_dir", "data_dir", "data_path", "init_from", "kd_teacher", "kd_std_teacher")


def project_root(start: Path | None = None) -> Path:
    """The project folder (holding ``memlib/`` and ``params/``): from ``start`` (default: the current
    folder) upwards, else the folder above the memlib package."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "memlib").is_dir() and (folder / "params").is_dir():
            return folder
    return Path(__file__).resolve().parent.parent


def _portable(values: dict) -> dict:
    """Config values with paths inside the project written relative to it (records carry no machine paths)."""
    root, out = project_root(), dict(values)
    for key in PATH_KEYS:
        path = Path(out[key]) if out.get(key) else None
        if path is not None and path.is_absolute() and path.resolve().is_relative_to(root):
            out[key] = str(path.resolve().relative_to(root))
    return out


def _local(values: dict, run_dir: Path) -> dict:
    """The inverse of ``_portable``: relative paths of a record are relative to the project of its run."""
    root, out = project_root(run_dir), dict(values)
    for key in PATH_KEYS:
        if out.get(key) and not Path(out[key]).is_absolute():
            out[key] = str(root / out[key])
    return out


def select_device(name: str = "auto") -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA device is available; use device=auto or cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def make_model(cfg: RunConfig, device: torch.device | str = "cpu") -> nn.Module:
    """The run's model, built with the current torch RNG, on ``device`` (channels_last unless disabled)."""
    mean, std = STATS[cfg.dataset] if cfg.normalize else (None, None)
    model = build_model(cfg.model, num_classes=NUM_CLASSES[cfg.dataset], width=cfg.width, dropout=cfg.dropout,
                        mean=mean, std=std).to(device)
    if uses_channels_last(cfg, device):
        model = model.to(memory_format=torch.channels_last)
    return model


def uses_channels_last(cfg: RunConfig, device: torch.device | str) -> bool:
    """channels_last pays on CUDA (tensor cores). On a CPU (measured for the small ResNets of the CPU tiers on
    2 cores, see benchmarks/README.md) it pays with one thread per process (as ``train_many`` workers use),
    and with several threads when the attack's BatchNorm is folded (``fold_bn``: 1.26x NCHW's PGD-AT step
    with two threads); eval-mode BatchNorm in channels_last is what is slow with several threads, so without
    folding a multi-threaded CPU process keeps NCHW."""
    if torch.device(device).type == "cuda":
        return cfg.channels_last
    return cfg.channels_last and (torch.get_num_threads() == 1 or cfg.fold_bn)


def uses_amp(cfg: RunConfig, device: torch.device | str) -> bool:
    """bfloat16 autocast: on CUDA with ``amp``, on a CPU with ``amp`` and ``cpu_amp``."""
    return cfg.amp and (torch.device(device).type == "cuda" or cfg.cpu_amp)


def run_dir_for(cfg: RunConfig) -> tuple[Path, str, str]:
    """(run directory, run id, data source label) of a config, without reading any data."""
    kind, path = resolve_source(cfg)
    label = source_label(kind, path, cfg.dataset)
    run_id = cfg.run_id(label)
    return Path(cfg.out_dir) / run_id, run_id, label


# what computes results: changes elsewhere (notebooks and results being rewritten) do not make a run "dirty"
CODE_PATHS = (":/memlib", ":/benchmarks/*.py", ":/pyproject.toml")


def code_version(where: str | Path | None = None) -> str:
    """memlib's version plus the git commit of the checkout (of ``where``, default memlib's own), with
    ".dirty" when memlib's code, the benchmark scripts or pyproject.toml differ from that commit."""
    cwd = Path(where) if where is not None else Path(__file__).parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=cwd,
                             capture_output=True, text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS],
                               cwd=cwd, capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha, dirty = "", ""
    return f"{__version__}+{sha}{'.dirty' if dirty else ''}" if sha else __version__


def run_record(cfg: RunConfig, run_id: str, source: str, device: torch.device) -> dict:
    return {
        "run_id": run_id,
        "config": _portable(cfg.to_dict()),
        "identity": cfg.identity(source),
        "data_source": source,
        "code_version": code_version(),
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def read_run(run_dir: str | Path) -> tuple[RunConfig, dict]:
    """The config and record of an existing run directory."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a memlib run directory (no config.json)")
    record = json.loads(path.read_text())
    return RunConfig.from_dict(_local(record["config"], Path(run_dir))), record


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
