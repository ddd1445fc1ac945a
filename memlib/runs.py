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

A folder whose ``status.json`` says finished but that lacks ``best.pt`` or ``final.pt`` is a *record*: its
metrics and cached analyses are there (the committed quick tier ships them without weights), so tables and
figures can be rebuilt from it, but anything that needs its weights must first train it again
(``ensure_weights``).
"""

from __future__ import annotations

import functools
import json
import os
import platform
import subprocess
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from memlib import __version__
from memlib.config import ConfigError, MemlibError, RunConfig
from memlib.data import NUM_CLASSES, DataError, data_digest, load_split, resolve_source, source_label
from memlib.io import (DIGEST_FIELD, file_digest, load_checkpoint, load_weights_file, read_store, weights_file_metadata,
                       write_store)
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
    folding a multi-threaded CPU process keeps NCHW. Models with fewer than 8 channels in a convolution (the
    smoke tier's width 0.0625) keep NCHW on a CPU: torch 2.14's CPU backward of a strided 1x1 convolution
    from 4 channels in channels_last crashes the process (a double free)."""
    if torch.device(device).type == "cuda":
        return cfg.channels_last
    return (cfg.channels_last and (torch.get_num_threads() == 1 or cfg.fold_bn)
            and _narrowest_conv(cfg.model, cfg.width, cfg.dataset) >= 8)


@functools.lru_cache(maxsize=32)
def _narrowest_conv(model: str, width: float, dataset: str) -> int:
    """The fewest input channels of any convolution after the first (which sees the 3 image channels). The
    model is built under a forked RNG: asking must not move the random stream that initializes the run."""
    with torch.random.fork_rng(devices=[]):
        convs = [m for m in build_model(model, num_classes=NUM_CLASSES[dataset], width=width).modules()
                 if isinstance(m, nn.Conv2d)]
    return min((m.in_channels for m in convs[1:]), default=64)


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
        "threads": torch.get_num_threads(),  # CPU results depend on it (the order of float sums)
        "python": platform.python_version(),
    }


def read_run(run_dir: str | Path) -> tuple[RunConfig, dict]:
    """The config and record of an existing run directory."""
    record = read_record(run_dir)
    return RunConfig.from_dict(_local(record["config"], Path(run_dir))), record


def read_record(run_dir: str | Path) -> dict:
    """A run's ``config.json`` as a dict, with one-line errors for a missing, unreadable or damaged file."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a memlib run directory (no config.json)")
    try:
        record = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise ConfigError(f"{path} is damaged ({type(exc).__name__}: {str(exc).splitlines()[0]}); delete it and "
                          f"train the run again with the same config (it is rewritten, training resumes from "
                          f"last.pt)") from None
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict) or "run_id" not in record:
        raise ConfigError(f"{path} is not a memlib run record; delete it and train the run again with the same "
                          f"config (it is rewritten, training resumes from last.pt)")
    return record


def check_data(run_dir: str | Path, cfg: RunConfig, record: dict | None = None) -> str | None:
    """Check that the data ``cfg`` resolves to now is the data the run in ``run_dir`` was trained on: the same
    source (e.g. ``imagefolder:cifar10-jpeg``) and, where the record has one, the same ``data_digest`` (by
    content, so another data set in a folder of the same name is caught). Records from before digests existed
    are accepted. Returns the current digest (None when the data is not there to be digested yet)."""
    run_dir = Path(run_dir)
    record = read_record(run_dir) if record is None else record
    source = run_dir_for(cfg)[2]
    if source != record.get("data_source"):
        raise DataError(f"run {run_dir.name} was trained on {record.get('data_source')} but the data now resolves "
                        f"to {source}; make the same data available (data_source/data_path)")
    current, recorded = data_digest(cfg), record.get("data_digest")
    if recorded and current and current != recorded:
        kind, path = resolve_source(cfg)
        raise DataError(f"run {run_dir.name} was trained on data with digest {recorded}, but {source} at {path} now "
                        f"has digest {current} (other files under the same folder name); put that data back, give "
                        f"the new data a folder of another name, or retrain this run on it with --force")
    return current


def read_metrics(run_dir: str | Path) -> list[dict]:
    kept = Path(run_dir) / "record" / "metrics.jsonl"  # a record being trained again: the record stands meanwhile
    path = kept if kept.is_file() else Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is damaged ({type(exc).__name__}); restore it (git checkout, for a committed "
                          f"run) or delete the run folder to train it again") from None


# --- the best-epoch rule ------------------------------------------------------------------------------------

def is_better(m: dict, best: dict | None) -> bool:
    """Whether epoch ``m`` beats ``best`` as the run's best checkpoint: highest test robust accuracy, ties
    broken by natural accuracy, the earlier epoch kept on a full tie (the authors' code). Epochs that were not
    evaluated (``eval_every``) never are."""
    if "test_rob_acc" not in m:
        return False
    return best is None or (m["test_rob_acc"], m["test_nat_acc"]) > (best["test_rob_acc"], best["test_nat_acc"])


def best_row(metrics: list[dict]) -> dict | None:
    """The metrics row of the epoch ``best.pt`` holds (``is_better``), None when no epoch was evaluated."""
    best = None
    for m in metrics:
        if is_better(m, best):
            best = m
    return best


def best_epoch(metrics: list[dict]) -> int | None:
    """The epoch of ``best.pt`` (``is_better``); None when no epoch was evaluated."""
    row = best_row(metrics)
    return None if row is None else row["epoch"]


# --- the state of a run folder: finished with weights, record, stopped, missing ---------------------------

WEIGHTS = ("best.pt", "final.pt")
RUN_FILES = ("config.json", "labels.npz", "metrics.jsonl", "last.pt", *WEIGHTS, "status.json")  # training's own


class WeightsUnavailable(MemlibError):
    """A run is a record (metrics without weights) and its weights are needed but may not be trained here."""


def is_finished(run_dir: str | Path) -> bool:
    """Whether the run's ``status.json`` says finished (a damaged one does not: the run resumes from
    ``last.pt``, ends at once and writes it again)."""
    try:
        return bool(json.loads((Path(run_dir) / "status.json").read_text()).get("finished"))
    except (OSError, ValueError, AttributeError):
        return False


def run_state(run_dir: str | Path) -> tuple[str, int]:
    """(state, epochs done) of a run folder. ``finished``: complete, with ``best.pt`` and ``final.pt``;
    ``record``: complete records without those weights; ``stopped``: some epochs done, resumable;
    ``missing``: nothing yet."""
    run_dir = Path(run_dir)
    done = len(read_metrics(run_dir))
    if retraining(run_dir):  # its weights so far are of an unfinished retraining
        return "record", done
    if is_finished(run_dir):
        return ("finished" if all((run_dir / w).is_file() for w in WEIGHTS) else "record"), done
    return ("stopped" if done else "missing"), done


def retraining(run_dir: str | Path) -> bool:
    """A record being trained again (``train.retrain_record``): ``record/`` holds its record meanwhile."""
    return (Path(run_dir) / "record" / "status.json").is_file()


def records_only() -> bool:
    """True when this process may only read records, never train (``python -m memlib render``, or the
    environment variable ``MEMLIB_RECORDS_ONLY=1``, which notebook kernels inherit)."""
    return os.environ.get("MEMLIB_RECORDS_ONLY", "") not in ("", "0")


_retrain = None  # set by memlib.train (a higher layer): how a record's weights are trained again
_weights_listener = None  # called with each run folder whose weights are asked for (the current report.Outputs)


def set_retrainer(fn) -> None:
    global _retrain
    _retrain = fn


def on_weights_needed(fn) -> None:
    """Call ``fn(run_dir)`` whenever a run's weights are asked for (one listener: the latest replaces it)."""
    global _weights_listener
    _weights_listener = fn


def ensure_weights(run_dir: str | Path, which: str = "final", log=print) -> None:
    """Make sure checkpoint ``which`` (best, final or a snapshot ``epoch_NNN``) of a finished run is on disk: a
    record is trained again (resumably; its metrics are compared with the record's), unless only records may
    be read, which raises ``WeightsUnavailable`` with the command that trains it. Runs that are not records, and
    checkpoints that training does not write, are left to ``load_checkpoint``'s own error. A checkpoint
    committed as ``<which>.safetensors`` (``committed_weights``) is there already: nothing to train."""
    run_dir = Path(run_dir)
    if committed_weights(run_dir, which) is not None:
        return
    if _weights_listener is not None:
        _weights_listener(run_dir)
    if run_state(run_dir)[0] != "record" or ((run_dir / f"{which}.pt").is_file() and not retraining(run_dir)):
        return
    if which.startswith("epoch_"):
        snapshots = read_record(run_dir)["config"].get("snapshot_epochs") or []
        if int(which.split("_")[1]) not in snapshots:
            return  # not a checkpoint this run writes
    if records_only():
        raise WeightsUnavailable(f"the weights of run {run_dir.name} ({which}.pt) are not on this machine "
                                 f"(committed runs carry records, not weights); `python -m memlib reproduce "
                                 f"--tier <tier>` trains them")
    if _retrain is None:
        raise WeightsUnavailable(f"the weights of run {run_dir.name} ({which}.pt) are not on this machine; import "
                                 f"memlib.train (it trains records again) or run `python -m memlib reproduce`")
    _retrain(run_dir, log=log)


def committed_weights(run_dir: str | Path, which: str) -> Path | None:
    """``<which>.safetensors`` of a record whose ``<which>.pt`` is not on disk: weights committed with the
    record (``python -m memlib export-weights``), used in place of the checkpoint; None when there is none, when
    the checkpoint itself is there, or while the run is trained again."""
    run_dir = Path(run_dir)
    path = run_dir / f"{which}.safetensors"
    if path.is_file() and not (run_dir / f"{which}.pt").is_file() and not retraining(run_dir):
        return path
    return None


def snapshot_path(run_dir: str | Path, epoch: int) -> Path:
    """Where ``snapshot_epochs`` keeps the weights after ``epoch`` (0: the initialization), ``epoch_NNN.pt``."""
    return Path(run_dir) / f"epoch_{epoch:03d}.pt"


# --- one run folder ---------------------------------------------------------------------------------------

class Run:
    """One run folder, read once: its config, record and metrics, the best-epoch rule, its checkpoints and
    model, its training examples (the data checked once), and the cache of results computed from its weights.

    ``Run(path)`` for an existing folder, ``Run.of(cfg)`` for the folder a config trains into. Reading is lazy
    and cached on the object: make a new ``Run`` (or call ``refresh``) to see a run that is still training."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        self._data_checked = False
        self._digests: dict = {}

    @classmethod
    def of(cls, cfg: RunConfig) -> "Run":
        return cls(run_dir_for(cfg)[0])

    def __repr__(self) -> str:
        return f"Run({str(self.dir)!r})"

    def refresh(self) -> "Run":
        for name in ("record", "config", "metrics"):
            self.__dict__.pop(name, None)
        self._digests = {}
        return self

    # records
    @functools.cached_property
    def record(self) -> dict:
        return read_record(self.dir)

    @functools.cached_property
    def config(self) -> RunConfig:
        return RunConfig.from_dict(_local(self.record["config"], self.dir))

    @functools.cached_property
    def metrics(self) -> list[dict]:
        return read_metrics(self.dir)

    @property
    def evaluated(self) -> list[dict]:
        """The epochs with accuracies (every ``eval_every``-th and the last)."""
        return [m for m in self.metrics if "test_rob_acc" in m]

    @property
    def best(self) -> dict | None:
        """The metrics of the epoch ``best.pt`` holds (``is_better``)."""
        return best_row(self.metrics)

    @property
    def best_epoch(self) -> int | None:
        return best_epoch(self.metrics)

    @property
    def final(self) -> dict | None:
        """The metrics of the last evaluated epoch (``final.pt``)."""
        rows = self.evaluated
        return rows[-1] if rows else None

    @property
    def state(self) -> tuple[str, int]:
        return run_state(self.dir)

    # weights
    def checkpoint(self, which: str = "final") -> Path:
        return self.dir / f"{which}.pt"

    def snapshot(self, epoch: int) -> Path:
        """The checkpoint of the weights kept after ``epoch`` (``snapshot_epochs``; 0: the initialization)."""
        return snapshot_path(self.dir, epoch)

    def load(self, which: str = "best", device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
        """The model with the weights of checkpoint ``which`` (best | final | last | epoch_NNN), in eval mode,
        and the checkpoint's state; a record's weights are trained first (``ensure_weights``)."""
        ensure_weights(self.dir, which)
        committed = committed_weights(self.dir, which)
        state = (load_weights_file(committed, expect_run_id=self.record["run_id"]) if committed else
                 load_checkpoint(self.checkpoint(which), expect_run_id=self.record["run_id"]))
        model = make_model(self.config, device)
        model.load_state_dict(state["model"])
        return model.eval(), state

    def weights_digest(self, which: str) -> str | None:
        """The sha256 of checkpoint ``which``, None when it is not on disk (a record); computed once per file
        version (size and modification time). For committed weights: the sha256 of the checkpoint they were
        exported from, so results cached on that checkpoint are reused."""
        path = self.checkpoint(which)
        committed = committed_weights(self.dir, which)
        if committed is not None:
            return weights_file_metadata(committed).get("source_sha256") or None
        if not path.is_file():
            return None
        stat = path.stat()
        key = (which, stat.st_size, stat.st_mtime_ns)
        if key not in self._digests:
            self._digests[key] = file_digest(path)
        return self._digests[key]

    # data
    def check_data(self) -> None:
        """Check, once, that the data the config resolves to is the data the run was trained on (``check_data``)."""
        if not self._data_checked:
            check_data(self.dir, self.config, self.record)
            self._data_checked = True

    def train_examples(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(example ids, labels trained on, true labels) of the run's training set, from ``labels.npz``."""
        with np.load(self.dir / "labels.npz", allow_pickle=False) as f:
            return tuple(torch.from_numpy(f[k]).long() for k in ("train_ids", "labels", "true_labels"))

    def train_images(self, ids: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
        """The run's training images ``ids`` (uint8, un-augmented), after the data check."""
        self.check_data()
        return load_split(self.config, train=True).images[ids].to(device)

    def test_set(self):
        self.check_data()
        return load_split(self.config, train=False)

    # results computed from the weights
    def cached(self, file: str, key: str, compute, weights: str | None = None, force: bool = False):
        """``compute()`` once per ``key``, kept in the result file ``file`` of the run folder (JSON, or .npz for
        arrays) with the digest of checkpoint ``weights`` it was computed on. A kept result is reused when that
        checkpoint is the same file or is not on disk (a record); a retrained run's results are computed again.
        The one cache of per-run analyses: evaluation (``eval.json``), complexity measures, adversarial losses,
        the convergence analyses."""
        path = self.dir / file
        values, digests = read_store(path)
        digest = self.weights_digest(weights) if weights else None
        kept = digests.get(key)
        if not force and key in values and (digest is None or kept is None or digest.startswith(kept)):
            return values[key]
        value = compute()  # a record's weights may be trained meanwhile: the digest is of what was used
        digest = self.weights_digest(weights) if weights else None
        write_store(path, {key: value}, {key: digest})
        return {**value, DIGEST_FIELD: digest} if isinstance(value, dict) and digest else value  # as kept

    def cached_value(self, file: str, key: str):
        """A kept result (``cached``) without computing anything: None when there is none."""
        return read_store(self.dir / file)[0].get(key)
