"""What a batch will do before it does it: each notebook's runs, their state, and what training them costs here.

The runs of a notebook are those its last execution used (``outputs/<tier>/manifest/<notebook>.json``), and
the runs whose weights it loaded are in its status (``status/<notebook>.json``, or ``.render/status/`` for a
render). For each run the plan says one of:

* ``reuse``: finished, with its weights on this machine;
* ``render``: a record (metrics and cached analyses, no weights) that the notebook rebuilds its tables from;
* ``train``: a record whose weights the notebook needs, a stopped run (resumed after its last epoch) or a
  run with nothing on disk.

The time of a run to train is its recorded training time scaled by this machine's measured speed: one
PGD-AT step of the quick tier's model is timed here and compared with the committed CPU benchmark
(``benchmarks/results/cpu-1thread.json``), on which the quick tier's records were made. A run without any
record has no estimate. A notebook's own time (evaluations, analyses, figures) is its last execution's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from memlib.config import MemlibError
from memlib.io import read_json
from memlib.runs import read_metrics, run_state

REFERENCE = Path("benchmarks") / "results" / "cpu-1thread.json"  # memlib's PGD-AT rate of the quick model, 1 thread


@dataclass
class RunPlan:
    path: str  # the run folder, relative to the project
    state: str  # finished | record | stopped | missing (memlib.runs.run_state), or damaged
    action: str  # reuse | render | train
    epochs_done: int = 0
    recorded_seconds: float | None = None  # training time in its records (None: nothing recorded)


@dataclass
class NotebookPlan:
    name: str
    known: bool  # False: no earlier execution, so its runs are not known before it runs
    runs: list[RunPlan] = field(default_factory=list)
    last_seconds: float | None = None  # its last execution, less the training it did then

    def to_train(self) -> list[RunPlan]:
        return [r for r in self.runs if r.action == "train"]


def plan_notebook(project: Path, tier: str, name: str, records_only: bool = False) -> NotebookPlan:
    out = project / "outputs" / tier
    manifest_path, status_path = out / "manifest" / f"{name}.json", out / "status" / f"{name}.json"
    status, manifest = read_json(status_path), read_json(manifest_path)
    nb = NotebookPlan(name, manifest_path.is_file(), last_seconds=_own_seconds(project, status, manifest))
    if not nb.known:
        return nb
    # runs whose weights its last execution (or render) asked for
    needs_weights = set(status.get("weights", [])) | set(read_json(out / ".render" / "status" / f"{name}.json")
                                                         .get("weights", []))
    for rel in manifest.get("runs", []):
        run_dir = project / rel
        try:
            state, done = run_state(run_dir)
            metrics = read_metrics(run_dir)  # a record being trained again: the record's
        except MemlibError:  # a damaged record: the notebook will say so; the plan goes on
            nb.runs.append(RunPlan(rel, "damaged", "train"))
            continue
        seconds = sum(m.get("time", 0.0) for m in metrics) if metrics else None
        if state == "stopped" and metrics:  # the epochs still to go, at its own pace
            epochs = read_json(run_dir / "config.json").get("config", {}).get("epochs", len(metrics))
            seconds = seconds / len(metrics) * max(0, epochs - len(metrics))
        if state == "finished":
            action = "reuse"
        elif state == "record" and (records_only or rel not in needs_weights):
            action = "render"
        else:
            action = "train"
        nb.runs.append(RunPlan(rel, state, action, done, seconds))
    return nb


def _own_seconds(project: Path, status: dict, manifest: dict) -> float | None:
    """The notebook's last execution less the training it did then (recorded since the batch records it;
    for older statuses, less its runs' recorded training, as if all of them had been trained then, two at a
    time, but at least a tenth of it)."""
    if "seconds" not in status:
        return None
    if "training_seconds" in status:
        return max(0.0, status["seconds"] - status["training_seconds"])
    trained = sum(m.get("time", 0.0) for r in manifest.get("runs", []) for m in read_metrics(project / r)) / 2
    return max(0.1 * status["seconds"], status["seconds"] - trained)


def measure_speed(threads: int = 1, batches: int = 2) -> float:
    """Examples per second of memlib's PGD-AT training step (PGD-10, batch 128) on the quick tier's model
    (ResNet-18 at width 0.125), here, with ``threads`` torch threads."""
    import torch

    from memlib.config import RunConfig
    from memlib.methods import METHODS, Context
    from memlib.runs import make_model
    from memlib.train import make_optimizer, train_step

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        cfg = RunConfig(model="resnet18", width=0.125, device="cpu")
        gen = torch.Generator().manual_seed(0)
        model = make_model(cfg, "cpu")
        optimizer = make_optimizer(cfg, model)
        x, y = torch.rand(128, 3, 32, 32, generator=gen), torch.randint(0, 10, (128,), generator=gen)
        ctx = Context(cfg, 1, torch.zeros(128, 10))
        idx = torch.arange(128)
        if torch.get_num_threads() == 1:
            x = x.contiguous(memory_format=torch.channels_last)
        train_step(model, optimizer, METHODS["pgd_at"], ctx, False, x, y, idx)  # warm-up
        t0 = time.perf_counter()
        for _ in range(batches):
            train_step(model, optimizer, METHODS["pgd_at"], ctx, False, x, y, idx)
        return 128 * batches / (time.perf_counter() - t0)
    finally:
        torch.set_num_threads(before)


def speed_factor(project: Path, log=print) -> float | None:
    """How much longer training takes here than on the machine of the committed benchmark (None: unknown)."""
    ref = read_json(project / REFERENCE).get("memlib_median")
    if not ref:
        return None
    here = measure_speed()
    log(f"measured speed here: {here:.0f} examples/s for a PGD-AT step of the quick model (1 thread); "
        f"the committed records' machine: {ref:.0f}")
    return ref / here


def estimate(nb: NotebookPlan, factor: float | None, jobs: int = 2) -> float | None:
    """Seconds this notebook will take: its last execution, plus the training it must do (runs trained
    ``jobs`` at a time) at this machine's speed. None when a run to train has no record or no speed is known."""
    if not nb.known:
        return None
    train = [r.recorded_seconds for r in nb.to_train()]
    if any(s is None for s in train) or (train and factor is None):
        return None
    training = sum(s * factor for s in train) / max(1, min(jobs, len(train))) if train else 0.0
    return (nb.last_seconds or 0.0) + training


def describe(plans: list[NotebookPlan], factor: float | None, jobs: int = 2) -> list[str]:
    """The plan as lines of text: per notebook its runs by action, then the totals."""
    lines, total, unknown = [], 0.0, []
    for nb in plans:
        if not nb.known:
            lines.append(f"  {nb.name}: no earlier execution here, so its runs are known only once it runs")
            unknown.append(nb.name)
            continue
        by = {a: [r for r in nb.runs if r.action == a] for a in ("reuse", "render", "train")}
        secs = estimate(nb, factor, jobs)
        total += secs or 0.0
        if secs is None:
            unknown.append(nb.name)
        lines.append(f"  {nb.name}: {len(nb.runs)} run(s): {len(by['reuse'])} reused with weights, "
                     f"{len(by['render'])} re-rendered from records, {len(by['train'])} to train; "
                     f"estimated {_duration(secs)}")
        for r in by["train"]:
            why = {"record": "record without the weights it needs", "stopped": f"stopped after epoch "
                   f"{r.epochs_done}, resumed", "missing": "not trained yet", "damaged": "damaged record"}[r.state]
            cost = _duration(r.recorded_seconds * factor) if r.recorded_seconds is not None and factor else "unknown"
            lines.append(f"      train {Path(r.path).name} ({why}): about {cost} of one core")
    lines.append(f"  total: about {_duration(total)}" + (f", plus {', '.join(unknown)} (no estimate)" if unknown
                                                          else ""))
    return lines


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "an unknown time"
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"
