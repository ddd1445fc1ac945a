"""What a tier costs before anything runs: every unique run of its notebooks, its state, and its cost.

The runs are the notebooks' declared experiments (``memlib.experiments``), deduplicated across notebooks (a
run shared by two notebooks is one folder and is counted once). For each run the plan says:

* its state: ``finished`` (with weights), ``record`` (metrics and cached analyses, no weights), ``stopped``
  after epoch k (resumed from there), or ``missing``;
* what the batch does with it: ``reuse`` (finished), ``render`` (a record the tables are rebuilt from),
  ``train`` (missing, stopped, or a record whose weights a notebook loads: its last status says so), or
  ``wait`` (a job submitted earlier, still ``queued`` or ``running``, trains it: ``memlib.cluster``);
* its cost in floating-point operations, from the model's FLOPs per example (counted once per architecture)
  times the examples times the passes (``run_flops``), shown as time on this machine (its FLOP rate measured
  on one PGD-AT step of the quick model, one thread) and as hours on one H100 (the rate of the committed
  benchmark ``benchmarks/results/cuda-final.json``, the full ResNet-18 in bf16: small models reach less of it).
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from memlib.cluster import JOB_FILE, live_state, read_job, slurm_states
from memlib.config import MemlibError, RunConfig
from memlib.io import read_json
from memlib.runs import read_metrics, run_state

CPU_REFERENCE = Path("benchmarks") / "results" / "cpu-1thread.json"  # the quick records' machine, 1 thread
GPU_REFERENCE = Path("benchmarks") / "results" / "cuda-final.json"  # one H100, ResNet-18, PGD-10, bf16
SIZES = {"cifar10": (50000, 10000), "cifar100": (50000, 10000), "svhn": (73257, 26032)}  # (train, test)
# gradient steps of an attack named in a notebook's ``attacks`` (AutoAttack: APGD-CE, APGD-T, FAB-T and
# Square on the points still robust; a rough equivalent, its cost varies with the model's robustness)
AUTOATTACK_STEPS = 1000


@dataclass
class RunPlan:
    path: str  # the run folder, relative to the project
    state: str  # finished | record | stopped | missing (memlib.runs.run_state), or damaged
    action: str = "render"  # reuse | render | train
    epochs_done: int = 0
    epochs: int = 0
    notebooks: list[str] = field(default_factory=list)
    needs: list[str] = field(default_factory=list)  # runs whose checkpoints it starts from or distills
    flops: float = 0.0  # the whole run: training, per-epoch evaluation, its notebooks' evaluations
    recorded_seconds: float | None = None  # training time in its records
    job: str | None = None  # queued | running: a job submitted earlier trains it (``job_id``)
    job_id: str | None = None
    cfg: RunConfig | None = field(default=None, repr=False, compare=False)  # its declared config

    @property
    def flops_to_go(self) -> float:
        """What training it now costs: all of it, or the epochs after a stop."""
        if self.state == "stopped" and self.epochs:
            return self.flops * max(0, self.epochs - self.epochs_done) / self.epochs
        return self.flops


@dataclass
class NotebookPlan:
    name: str
    known: bool  # False: neither declared nor executed before, so its runs are not known
    runs: list[RunPlan] = field(default_factory=list)
    last_seconds: float | None = None  # its last execution, less the training it did then

    def to_train(self) -> list[RunPlan]:
        return [r for r in self.runs if r.action == "train"]


def plan_tier(project: Path, tier: str, names: list[str], records_only: bool = False) -> list[NotebookPlan]:
    """The plans of notebooks ``names``; a run shared by several is one ``RunPlan`` object in each."""
    shared: dict[str, RunPlan] = {}
    plans = [plan_notebook(project, tier, name, records_only, shared) for name in names]
    jobs = {rel: read_job(Path(project) / rel / JOB_FILE) for rel in shared}
    states = slurm_states([j.get("job_id") for j in jobs.values() if j.get("executor") == "slurm"])
    for rel, job in jobs.items():
        live = live_state(job, states)
        if live:
            r = shared[rel]
            r.job, r.job_id = live, str(job["job_id"])
            if r.action == "train":
                r.action = "wait"
    return plans


def plan_notebook(project: Path, tier: str, name: str, records_only: bool = False,
                  shared: dict | None = None) -> NotebookPlan:
    """One notebook's runs: its declared experiment, or (a notebook without one) the runs of its last
    execution's manifest."""
    from memlib import experiments

    project = Path(project)
    shared = {} if shared is None else shared
    out = project / "outputs" / tier
    status, manifest = read_json(out / "status" / f"{name}.json"), read_json(out / "manifest" / f"{name}.json")
    needs_weights = set(status.get("weights", [])) | set(read_json(out / ".render" / "status" / f"{name}.json")
                                                         .get("weights", []))
    params, declared = {}, None
    if name in experiments.registered():
        params = experiments.params(name, tier, project)
        declared = experiments.declare(name, params, out / "runs", project / "data")
        runs = {os.path.relpath(d, project): cfg for d, cfg in declared.unique().items()}
    else:  # a notebook without a declared experiment: the runs of its last execution
        runs = {rel: None for rel in manifest.get("runs", [])}
    nb = NotebookPlan(name, declared is not None or bool(manifest), last_seconds=_own_seconds(project, status,
                                                                                              manifest))
    for rel, cfg in runs.items():
        if rel not in shared:
            shared[rel] = _run_plan(project, rel, cfg)
        r = shared[rel]
        r.notebooks.append(name)
        r.flops += evaluation_flops(params, cfg) if cfg is not None else 0.0
        if declared is not None:
            r.needs = sorted(os.path.relpath(d, project) for d in declared.needs.get(project / rel, []))
        if r.state == "finished":
            r.action = "reuse"
        elif r.state in ("stopped", "missing", "damaged") or (r.state == "record" and not records_only
                                                            and rel in needs_weights):
            r.action = "train"
        nb.runs.append(r)
    return nb


def _run_plan(project: Path, rel: str, cfg: RunConfig | None) -> RunPlan:
    run_dir = project / rel
    try:
        state, done = run_state(run_dir)
        metrics = read_metrics(run_dir)
    except MemlibError:  # a damaged record: the notebook will say so; the plan goes on
        return RunPlan(rel, "damaged", "train")
    if cfg is None and (run_dir / "config.json").is_file():
        from memlib.runs import read_run
        cfg = read_run(run_dir)[0]
    seconds = sum(m.get("time", 0.0) for m in metrics) if metrics else None
    return RunPlan(rel, state, "render", done, cfg.epochs if cfg else 0, flops=run_flops(cfg) if cfg else 0.0,
                   recorded_seconds=seconds, cfg=cfg)


# --- cost ------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=64)
def forward_flops(model: str, width: float, dataset: str) -> float:
    """FLOPs of one forward pass of one 32x32 example (torch's FlopCounterMode: 2 per multiply-add), counted
    once per architecture, under a forked RNG (counting must not move a run's random stream)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from memlib.data import NUM_CLASSES
    from memlib.models import build_model

    with torch.random.fork_rng(devices=[]):
        net = build_model(model, num_classes=NUM_CLASSES[dataset], width=width).eval()
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            net(torch.zeros(1, 3, 32, 32))
    return float(counter.get_total_flops())


def step_flops(cfg: RunConfig) -> float:
    """FLOPs of one training example of one epoch: the training attack's steps (a forward and a backward to
    the input, 2 forwards' worth each), the update (forward and backward, 3), the method's extra forwards and
    its teachers' (its registration, ``memlib.methods``), and twice all of it for a method with a peer network
    (Co-teaching). PGD-10 gives 23 forwards: the benchmark's count."""
    from memlib.methods import method_spec

    spec = method_spec(cfg.method)
    f = forward_flops(cfg.model, cfg.width, cfg.dataset)
    steps = 0 if not spec.attacks else 1 if cfg.train_attack == "fgsm" else cfg.steps
    teachers = sum(bool(getattr(cfg, key)) for key in spec.teachers)
    return f * (2 if spec.peer else 1) * (2 * steps + 3 + spec.extra_forwards + teachers)


def run_flops(cfg: RunConfig) -> float:
    """FLOPs of training a run: every epoch's training examples (``step_flops``), and the per-epoch evaluation
    (natural and PGD-``eval_steps`` accuracy on the test subset and the training-evaluation subset, every
    ``eval_every`` epochs and at the last)."""
    f = forward_flops(cfg.model, cfg.width, cfg.dataset)
    full_train, full_test = SIZES[cfg.dataset]
    n_train = min(cfg.train_subset or full_train, full_train)
    n_eval = min(cfg.test_subset or full_test, full_test) + min(cfg.train_eval_subset or n_train, n_train)
    evaluations = len({e for e in range(1, cfg.epochs + 1) if e % cfg.eval_every == 0} | {cfg.epochs})
    return cfg.epochs * n_train * step_flops(cfg) + evaluations * n_eval * f * (2 + 2 * cfg.eval_steps)


def evaluation_flops(p: dict, cfg: RunConfig) -> float:
    """A notebook's evaluation of a run's best and final checkpoints under its ``attacks`` on ``eval_n`` test
    images (0 when it has none)."""
    from memlib.attacks import parse_attack

    attacks = p.get("attacks") or []
    n = p.get("eval_n") or SIZES[cfg.dataset][1]
    steps = 0
    for spec in attacks:
        kind, k = parse_attack(spec)
        steps += 1 + 2 * (AUTOATTACK_STEPS if kind == "autoattack" else k)  # the final forward, and the attack's
    return 2 * n * steps * forward_flops(cfg.model, cfg.width, cfg.dataset)


def _reference_rate(project: Path, path: Path, model: str, width: float) -> float | None:
    """FLOP/s of a committed benchmark: its PGD-AT examples per second times ``step_flops`` of its model."""
    ref = read_json(project / path).get("memlib_median")
    return ref * step_flops(RunConfig(model=model, width=width)) if ref else None


def gpu_rate(project: Path) -> float | None:
    return _reference_rate(project, GPU_REFERENCE, "resnet18", 1.0)


def measure_rate(threads: int = 1, batches: int = 2) -> float:
    """FLOP/s here: memlib's PGD-AT training step (PGD-10, batch 128) on the quick tier's model (ResNet-18 at
    width 0.125), timed with ``threads`` torch threads."""
    import torch

    from memlib.methods import METHODS, Context
    from memlib.runs import make_model
    from memlib.train import make_optimizer, train_step

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        cfg = RunConfig(model="resnet18", width=0.125, device="cpu")
        with torch.random.fork_rng(devices=[]):
            gen = torch.Generator().manual_seed(0)
            model = make_model(cfg, "cpu")
            optimizer = make_optimizer(cfg, model)
            x, y = torch.rand(128, 3, 32, 32, generator=gen), torch.randint(0, 10, (128,), generator=gen)
            ctx, idx = Context(cfg, 1, torch.zeros(128, 10)), torch.arange(128)
            if torch.get_num_threads() == 1:
                x = x.contiguous(memory_format=torch.channels_last)
            train_step(model, optimizer, METHODS["pgd_at"], ctx, False, x, y, idx)  # warm-up
            t0 = time.perf_counter()
            for _ in range(batches):
                train_step(model, optimizer, METHODS["pgd_at"], ctx, False, x, y, idx)
            seconds = time.perf_counter() - t0
        return 128 * batches / seconds * step_flops(cfg)
    finally:
        torch.set_num_threads(before)


def estimate(nb: NotebookPlan, rate: float | None, jobs: int = 1) -> float | None:
    """Seconds this notebook will take here: its last execution's own time plus the training it must do at
    FLOP rate ``rate`` per process, ``jobs`` runs at a time. None without a rate when it must train."""
    train = nb.to_train()
    if train and not rate:
        return None
    training = sum(r.flops_to_go for r in train) / rate / max(1, min(jobs, len(train))) if train else 0.0
    return (nb.last_seconds or 0.0) + training


def _own_seconds(project: Path, status: dict, manifest: dict) -> float | None:
    """The notebook's last execution less the training it did then."""
    if "seconds" not in status:
        return None
    if "training_seconds" in status:
        return max(0.0, status["seconds"] - status["training_seconds"])
    trained = sum(m.get("time", 0.0) for r in manifest.get("runs", []) for m in read_metrics(project / r)) / 2
    return max(0.1 * status["seconds"], status["seconds"] - trained)


def totals(plans: list[NotebookPlan]) -> dict:
    """Unique runs, and FLOPs of all of them and of those to train, over the notebooks (shared runs once)."""
    runs = {r.path: r for nb in plans for r in nb.runs}
    return {"runs": len(runs), "to_train": sum(r.action == "train" for r in runs.values()),
            "flops": sum(r.flops for r in runs.values()),
            "flops_to_train": sum(r.flops_to_go for r in runs.values() if r.action == "train")}


def describe(plans: list[NotebookPlan], rate: float | None, gpu: float | None = None, jobs: int = 1,
             verbose: bool = False) -> list[str]:
    """The plan as lines of text: per notebook its runs by action and cost, then the tier's totals."""
    def cost(flops: float) -> str:
        parts = ([f"{_duration(flops / rate)} here"] if rate else []) + ([f"{flops / gpu / 3600:.3g} H100-h"] if gpu
                                                                          else [])
        return ", ".join(parts) or f"{flops:.3g} FLOP"

    lines = []
    for nb in plans:
        if not nb.known:
            lines.append(f"  {nb.name}: no declared experiment or earlier execution: runs known once it runs")
            continue
        by = {a: [r for r in nb.runs if r.action == a] for a in ("reuse", "render", "train", "wait")}
        lines.append(f"  {nb.name}: {len(nb.runs)} run(s) ({cost(sum(r.flops for r in nb.runs))} in all): "
                     f"{len(by['reuse'])} reused with weights, {len(by['render'])} re-rendered from records, "
                     f"{len(by['train'])} to train" + (f", {len(by['wait'])} in jobs already submitted" if by["wait"]
                                                       else "") + f"; estimated {_duration(estimate(nb, rate, jobs))}")
        for r in nb.runs if verbose else by["train"] + by["wait"]:
            state = {"finished": "finished with weights", "record": "record only",
                     "stopped": f"stopped after epoch {r.epochs_done} of {r.epochs}", "missing": "missing",
                     "damaged": "damaged record"}[r.state]
            if r.job:
                state = f"{r.job} as job {r.job_id}, {state}"
            shared = f"; also in {', '.join(n for n in r.notebooks if n != nb.name)}" if len(r.notebooks) > 1 else ""
            lines.append(f"      {r.action} {Path(r.path).name} ({state}{shared}): {cost(r.flops_to_go)}")
    t = totals(plans)
    lines.append(f"  total: {t['runs']} unique run(s), {cost(t['flops'])} to train all of them; "
                 f"{t['to_train']} to train now: {cost(t['flops_to_train'])}")
    return lines


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "an unknown time"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"
