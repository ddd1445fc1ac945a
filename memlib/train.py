"""The training loop: one epoch at a time, metrics as they happen, checkpoints, exact resume.

``train(cfg)`` runs (or resumes, or reuses) the run of ``cfg`` and returns its directory. After every
epoch it writes ``last.pt`` with everything a resume needs (weights, optimizer, the per-example soft labels,
the torch and loader RNG states, the metric history, the best epoch; a peer network and a weight average for
the methods that have them), so a run killed at any moment and started again continues from its last completed
epoch and, on CPU, ends with the same metrics as an uninterrupted run. A non-finite loss stops the run at once
and leaves the last good checkpoint alone.

The loop knows methods only through their registrations (``memlib.methods.method``): ``MethodState`` sets up
what the method declared it needs (peer, frozen teachers from other runs' checkpoints, weight averaging,
soft labels, per-epoch metrics), and saves and resumes it; nothing here branches on a method's name.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel, update_bn
from tqdm.auto import tqdm

from memlib.config import WEIGHT_KEYS, ConfigError, MemlibError, RunConfig
from memlib.data import Loader, balanced_subset, data_digest, prepare_data
from memlib.evaluate import load_weights, predict
from memlib.io import (CHECKPOINT_FORMAT, CheckpointError, atomic_save_npz, atomic_write_bytes, atomic_write_json,
                       atomic_write_text, load_checkpoint, save_checkpoint)
from memlib.methods import METHODS, Context, method_spec
from memlib.runs import (RUN_FILES, Run, WeightsUnavailable, check_data, ensure_weights, is_better, is_finished,
                         make_model, read_metrics, read_record, read_run, records_only, run_dir_for, run_record,
                         run_state, select_device, set_retrainer, snapshot_path, uses_amp, uses_channels_last)
from memlib.schedule import lr_at  # noqa: F401  (re-exported: memlib.train.lr_at is what notebooks long used)



class TrainingDiverged(MemlibError):
    """The loss became NaN or infinite."""


@dataclass
class RunResult:
    run_dir: Path
    metrics: list[dict]
    finished: bool
    reused: bool = False


def make_optimizer(cfg: RunConfig, *models: torch.nn.Module | None) -> torch.optim.Optimizer:
    """One optimizer over the parameters of ``models`` (Co-teaching: the model and its peer; both SGD and Adam
    update each parameter from its own gradient alone, so one joint step is each network's own step)."""
    params = [p for m in models if m is not None for p in m.parameters()]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                           weight_decay=cfg.weight_decay)


def load_teacher(path: str, device: torch.device) -> torch.nn.Module | None:
    """A frozen teacher (KD-SWA's): the model of another run's checkpoint (its own architecture, from its
    config.json), in eval mode without gradients; None for an empty path."""
    if not path:
        return None
    teacher, _ = load_weights(Path(path).parent, Path(path).stem, device)
    return teacher.requires_grad_(False)


def update_swa(swa: AveragedModel, model: torch.nn.Module, data, cfg: RunConfig, fmt, amp: bool) -> None:
    """SWA (Izmailov et al. 2018) as in Chen et al.'s KD-SWA: add the weights after this epoch to the running
    average, then recompute the averaged model's BatchNorm statistics with one forward pass (train mode,
    cumulative average) over the clean training images. We pass them without augmentation, in a fixed order
    (deterministic, and no random draws that a resume would have to replay); Chen et al.'s bn_update used their
    augmented training loader. The order is a fixed permutation (seeded by ``cfg.seed``, drawn from its own
    generator): batches in data-set order would each hold one class of a class-sorted copy (the offline
    CIFAR-10), and averaging per-batch variances would then miss the variance between classes."""
    swa.update_parameters(model)
    device = data.train_images.device
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        update_bn(swa_bn_batches(data, cfg, fmt), swa.module)


def swa_bn_batches(data, cfg: RunConfig, fmt=torch.contiguous_format) -> Loader:
    """The clean training images over which ``update_swa`` recomputes BatchNorm statistics, in batches of
    ``eval_batch_size``, in a permutation seeded by ``cfg.seed`` (the same one at every call)."""
    return Loader(data.train_images, data.train_labels, cfg.eval_batch_size, shuffle=True,
                  generator=torch.Generator().manual_seed(cfg.seed), memory_format=fmt)


class MethodState:
    """What a run keeps for its method besides the model and its optimizer, made from the method's registration
    (``memlib.methods.MethodSpec``): the peer network (its own random init, drawn right after the model's), the
    frozen teachers (loaded in the order the registration names them), the weight average, the (N, C) soft-label
    table. Every ``last.pt`` holds the table (zeros for a method that keeps none), as it always has; the peer
    and the average are saved as "peer" and "swa" when the method has them."""

    def __init__(self, cfg: RunConfig, model: torch.nn.Module, data, device: torch.device):
        self.cfg, self.spec = cfg, method_spec(cfg.method)
        self.peer = make_model(cfg, device) if self.spec.peer else None
        self.teachers = {key: load_teacher(getattr(cfg, key), device) for key in self.spec.teachers}
        self.swa = AveragedModel(model) if self.spec.averaging else None
        self.soft_labels = torch.zeros(len(data.train_labels), data.num_classes, device=device)

    def context(self, epoch: int) -> Context:
        return Context(self.cfg, epoch, self.soft_labels if self.spec.soft_labels else None, teachers=self.teachers,
                       peer=self.peer)

    def end_epoch(self, ctx: Context, model: torch.nn.Module, data, fmt, amp: bool) -> dict:
        """After an epoch's training steps: the method's per-epoch metrics; from ``swa_start`` on, the weight
        average takes in the trained weights (``swa_n``: how many epochs it holds)."""
        m = dict(self.spec.epoch_metrics(ctx)) if self.spec.epoch_metrics is not None else {}
        if self.swa is not None and ctx.epoch >= self.cfg.swa_start:
            update_swa(self.swa, model, data, self.cfg, fmt, amp)
            m["swa_n"] = int(self.swa.n_averaged)
        return m

    def evaluated(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model that is evaluated and saved as best/final: the weight average once it holds weights."""
        return self.swa.module if self.swa is not None and self.swa.n_averaged > 0 else model

    def state_dict(self) -> dict:
        return {"soft_labels": self.soft_labels.cpu(),
                **({"peer": _cpu_state(self.peer)} if self.peer is not None else {}),
                **({"swa": _cpu_state(self.swa)} if self.swa is not None else {})}

    def load_state_dict(self, state: dict) -> None:
        self.soft_labels.copy_(state["soft_labels"])
        for extra, name in ((self.peer, "peer"), (self.swa, "swa")):
            if extra is not None:
                extra.load_state_dict(state[name])


def _rng_state(generator: torch.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "loader": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["loader"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def train(cfg: RunConfig, *, force: bool = False, until_epoch: int | None = None, log=None,
          retrain: bool = False) -> RunResult:
    """Train the run of ``cfg`` to ``cfg.epochs`` (or stop after ``until_epoch``); resume from ``last.pt``
    when present; return at once when the identical run has already finished, unless ``force``."""
    log = log or (lambda msg: tqdm.write(msg))
    device = select_device(cfg.device)
    run_dir, run_id, source = run_dir_for(cfg)
    reused = _reuse_or_clear(cfg, run_dir, force, retrain, log)
    if reused is not None:
        return reused
    _check_weight_files(cfg, log)
    data = prepare_data(cfg, device)  # any data problem is reported before the run directory is made
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = _lock(run_dir)  # one process per run at a time
    try:
        _write_records(cfg, run_dir, run_id, source, device, data, log)
        train_eval_ids = balanced_subset(data.train_labels.cpu(), cfg.train_eval_subset, cfg.data_seed + 3)
        train_eval_ids = train_eval_ids.to(device)

        torch.manual_seed(cfg.seed)
        generator = torch.Generator().manual_seed(cfg.seed)
        model = make_model(cfg, device)
        if cfg.init_from:
            try:
                model.load_state_dict(load_checkpoint(cfg.init_from)["model"])
            except RuntimeError:
                raise MemlibError(f"init_from: {cfg.init_from} holds weights of another architecture") from None
        method_state = MethodState(cfg, model, data, device)  # draws the peer's init, loads the teachers
        optimizer = make_optimizer(cfg, model, method_state.peer)
        history, best, start = _resume(run_dir, run_id, model, optimizer, method_state, generator, log)
        atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in history))
        if start == 1 and 0 in cfg.snapshot_epochs:
            save_checkpoint(snapshot_path(run_dir, 0), _weights_state(model, run_id, 0, {}))

        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        amp = uses_amp(cfg, device)
        graphs = device.type == "cuda" and cfg.cuda_graphs and cfg.optimizer == "sgd"
        fmt = torch.channels_last if uses_channels_last(cfg, device) else torch.contiguous_format
        loader = Loader(data.train_images, data.train_labels, cfg.batch_size, shuffle=True, augment=cfg.augment,
                        generator=generator, memory_format=fmt)
        eval_kw = dict(eps=cfg.eps, alpha=cfg.alpha, norm=cfg.norm, batch_size=cfg.eval_batch_size, amp=amp,
                       memory_format=fmt, fold_bn=cfg.fold_bn, clamp_start=cfg.eval_clamp_start)
        last_epoch = min(cfg.epochs, until_epoch or cfg.epochs)
        bar = tqdm(total=cfg.epochs, initial=start - 1, desc=run_dir.name[:40], unit="epoch",
                   disable=not _progress(cfg))
        for epoch in range(start, last_epoch + 1):
            t0 = time.time()
            lr = lr_at(cfg, epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            ctx = method_state.context(epoch)
            try:
                m = {"epoch": epoch, "lr": lr,
                     **train_epoch(model, optimizer, loader, METHODS[cfg.method], ctx, amp, graphs)}
            except TrainingDiverged as exc:
                bar.close()
                kept = (f"{run_dir / 'last.pt'} (epoch {history[-1]['epoch']})" if history
                        else "none (no epoch finished)")
                raise TrainingDiverged(f"{exc.args[0]} at epoch {epoch}, {exc.args[1]}; stopped, nothing saved for "
                                       f"this epoch; last good checkpoint: {kept}") from None
            m.update(method_state.end_epoch(ctx, model, data, fmt, amp))
            evaluated = method_state.evaluated(model)
            t_train, t1 = time.time() - t0, time.time()
            if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
                m.update(_evaluate_epoch(evaluated, data, train_eval_ids, cfg.eval_steps, eval_kw))
            m["time_train"] = t_train
            m["time_eval"] = time.time() - t1
            m["time"] = time.time() - t0
            history.append(m)
            best = _save_epoch(cfg, run_dir, run_id, m, model, evaluated, optimizer, method_state, generator, history,
                               best)
            bar.update(1)
            log(_epoch_line(m, cfg.epochs))
        bar.close()

        finished = last_epoch >= cfg.epochs
        if finished:  # the model in memory is the last epoch's (trained now, or loaded from last.pt)
            save_checkpoint(run_dir / "final.pt", _weights_state(method_state.evaluated(model), run_id,
                                                                 history[-1]["epoch"], history[-1]))
            atomic_write_json(run_dir / "status.json", {"finished": True, "epochs": cfg.epochs, "best": best,
                                                        "total_time": sum(h["time"] for h in history)})
    finally:
        lock.close()
    return RunResult(run_dir, history, finished)


def _reuse_or_clear(cfg: RunConfig, run_dir: Path, force: bool, retrain: bool, log) -> RunResult | None:
    """The finished run of ``cfg`` when it may be reused (its data checked); with ``force``, its folder
    emptied first. Nothing is deleted where only records may be read."""
    for key in ("out_dir", "data_dir"):
        if Path(getattr(cfg, key)).exists() and not Path(getattr(cfg, key)).is_dir():
            raise ConfigError(f"{key} {getattr(cfg, key)} is a file, not a folder; set {key} to a folder")
    if records_only() and (force or not is_finished(run_dir)):  # before anything is deleted
        raise WeightsUnavailable(f"run {run_dir.name} is not finished (or force was asked) and only records may be "
                                 f"read here; `python -m memlib reproduce --tier <tier>` trains it")
    if force and run_dir.exists():
        with _lock(run_dir):  # before anything is deleted: a run another process is training keeps its files
            for path in run_dir.iterdir():  # checkpoints, snapshots, metrics and cached analyses alike; not the
                if path.is_file() and not path.name.startswith("."):  # lock, nor the job file of the job training it
                    path.unlink()
            shutil.rmtree(run_dir / "record", ignore_errors=True)
    if retrain or not is_finished(run_dir):
        return None
    check_data(run_dir, cfg)  # a finished run of other data under the same folder name is not reused
    log(f"reusing finished run {run_dir.name} (force=True to train again)")
    try:
        metrics = Run(run_dir).metrics
    except ValueError:  # a damaged line; last.pt holds the whole history
        raise MemlibError(f"{run_dir / 'metrics.jsonl'} is damaged; delete {run_dir / 'status.json'} and run the "
                          f"same command again (it is rewritten from last.pt)") from None
    return RunResult(run_dir, metrics, True, reused=True)


def _write_records(cfg: RunConfig, run_dir: Path, run_id: str, source: str, device, data, log) -> None:
    """``config.json`` (with the data's digest, checked against the record of a run that resumes) and
    ``labels.npz``, before any training."""
    resumes = (run_dir / "last.pt").exists() and (run_dir / "config.json").exists()
    digest = check_data(run_dir, cfg) if resumes else data_digest(cfg)  # checked before anything is written
    atomic_write_json(run_dir / "config.json", {**run_record(cfg, run_id, source, device), "data_digest": digest})
    atomic_save_npz(run_dir / "labels.npz", train_ids=data.train_ids.numpy(),
                    labels=data.train_labels.cpu().numpy(), true_labels=data.train_true_labels.cpu().numpy(),
                    test_ids=data.test_ids.numpy())
    log(f"run {run_dir.name} | data: {data.source}, {len(data.train_labels)} train / {len(data.test_labels)} test, "
        f"noise rate {cfg.noise_rate} (observed {data.noisy_mask.float().mean().item():.3f}) | device {device}")


def _resume(run_dir: Path, run_id: str, model, optimizer, method_state, generator,
            log) -> tuple[list, dict | None, int]:
    """(history, best, first epoch to train): from ``last.pt`` when there is one (weights, optimizer, the
    method's state and the random state restored), else a fresh start."""
    last_path = run_dir / "last.pt"
    if not last_path.exists():
        return [], None, 1
    state = load_checkpoint(last_path, expect_run_id=run_id)
    bad = _nonfinite({k: state[k] for k in ("model", "optimizer", "peer", "swa") if k in state})
    if bad is not None:  # written before checkpoints were checked: resuming would diverge at once
        raise CheckpointError(f"{last_path} holds non-finite values ({bad}) of a diverged run; delete it "
                              f"to train from the start")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    method_state.load_state_dict(state)
    _set_rng_state(state["rng"], generator)
    log(f"resuming {run_dir.name} after epoch {state['epoch']}")
    return json.loads(state["history"]), json.loads(state["best"]) if state["best"] else None, state["epoch"] + 1


def _save_epoch(cfg: RunConfig, run_dir: Path, run_id: str, m: dict, model, evaluated, optimizer, method_state,
                generator, history: list, best: dict | None) -> dict | None:
    """An epoch's files: ``best.pt`` when it is the best so far (``runs.is_better``), ``last.pt`` (all that
    resuming needs), a snapshot when asked, its line of ``metrics.jsonl``. Returns the best epoch's metrics."""
    epoch = m["epoch"]
    if is_better(m, best):
        best = {k: m[k] for k in ("epoch", "test_rob_acc", "test_nat_acc")}
        save_checkpoint(run_dir / "best.pt", _weights_state(evaluated, run_id, epoch, m))
    save_checkpoint(run_dir / "last.pt", {
        **_weights_state(model, run_id, epoch, m),
        "optimizer": optimizer.state_dict(),
        **method_state.state_dict(),  # soft_labels, and the peer / weight average of methods that have them
        "rng": _rng_state(generator),
        "history": json.dumps(history),
        "best": json.dumps(best),
    })
    if epoch in cfg.snapshot_epochs:
        save_checkpoint(snapshot_path(run_dir, epoch), _weights_state(evaluated, run_id, epoch, m))
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(m) + "\n")
    return best


def _check_weight_files(cfg: RunConfig, log) -> None:
    """Every checkpoint the config names (``init_from``, a method's teachers) is there: a record's weights are
    trained again first (``runs.ensure_weights``); a missing file is a one-line error."""
    for key in WEIGHT_KEYS:
        path = getattr(cfg, key)
        if path and (Path(path).parent / "config.json").is_file():
            ensure_weights(Path(path).parent, Path(path).stem, log=log)  # a record's
        if path and not Path(path).is_file():
            raise MemlibError(f"{key}: no checkpoint at {path}")


def _epoch_line(m: dict, epochs: int) -> str:
    accs = (f" | train nat {m['train_nat_acc']:.3f} rob {m['train_rob_acc']:.3f} | test nat "
            f"{m['test_nat_acc']:.3f} rob {m['test_rob_acc']:.3f}") if "test_rob_acc" in m else ""
    return f"epoch {m['epoch']}/{epochs} lr {m['lr']:.4g} loss {m['train_loss']:.4f}{accs} | {m['time']:.1f}s"


def _progress(cfg: RunConfig) -> bool:
    """Progress bars: the config's ``progress``, unless ``TQDM_DISABLE`` is set (the batch sets it in the kernels
    of the notebooks it executes, whose saved outputs should not hold bars and timings)."""
    return cfg.progress and os.environ.get("TQDM_DISABLE", "") in ("", "0")


def _lock(run_dir: Path):
    """Hold an exclusive lock on the run directory while training; a second process gets a one-line error."""
    import fcntl

    handle = open(run_dir / ".lock", "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise MemlibError(f"run {run_dir} is being trained by another process; wait for it or stop it") from None
    return handle


def train_epoch(model, optimizer, loader, method, ctx: Context, amp: bool, graphs: bool = False) -> dict:
    """One pass over the training set; returns the epoch's training metrics. Raises ``TrainingDiverged``
    (with the batch number) on a non-finite loss: before the optimizer step for an eager step, one batch later
    for a graph replay (the run stops all the same and nothing of the epoch is saved). With ``graphs`` (CUDA)
    the full-size batches go through a ``GraphedStep``."""
    model.train()
    if ctx.peer is not None:
        ctx.peer.train()
    sums = {"loss": 0.0, "correct": 0, "nat_correct": None, "grad_norm": 0.0, "grad_sq_norm": 0.0}
    graphed = GraphedStep(model, optimizer, method, ctx, amp) if graphs else None
    pending = None  # (batch number, loss) of the last replay, checked once the next batch is on its way
    n = 0
    for b, (x, y, idx) in enumerate(tqdm(loader, desc=f"epoch {ctx.epoch}", leave=False,
                                         disable=not _progress(ctx.cfg)), 1):
        if graphed is not None and len(y) == loader.batch_size:
            loss, correct, sq, nat = graphed(x, y, idx, b)
            if pending is not None:
                _check_finite(*pending)
            pending = (b, loss) if graphed.graph is not None else None
        else:
            loss, correct, sq, nat = train_step(model, optimizer, method, ctx, amp, x, y, idx, batch=b)
        sums["loss"] += loss * len(y)
        sums["correct"] += correct
        if nat is not None:
            sums["nat_correct"] = nat if sums["nat_correct"] is None else sums["nat_correct"] + nat
        sums["grad_sq_norm"] += sq  # the authors' logged quantity: sum of squared gradient norms
        sums["grad_norm"] += sq.sqrt()
        n += len(y)
    if pending is not None:
        _check_finite(*pending)
    peer = {"peer": ctx.peer.state_dict()} if ctx.peer is not None else {}
    bad = _nonfinite({"model": model.state_dict(), "optimizer": optimizer.state_dict()["state"],
                      "soft_labels": ctx.soft_labels, **peer})
    if bad is not None:  # a finite loss whose step (or forward, for BatchNorm statistics) left NaN or inf behind
        raise TrainingDiverged(f"non-finite weights or buffers ({bad})", "after its last batch")
    # train_batch_acc (and train_batch_nat_acc, where the method computes clean logits): accuracy on the batches
    # as trained, augmented and, for AT, adversarial: the authors' "training accuracy" (the tables' train_nat_acc
    # and train_rob_acc are measured after the epoch on un-augmented images, as their Sec. 3 code does)
    nat = {} if sums["nat_correct"] is None else {"train_batch_nat_acc": float(sums["nat_correct"]) / n}
    return {"train_loss": float(sums["loss"]) / n, "train_batch_acc": float(sums["correct"]) / n, **nat,
            "grad_norm": float(sums["grad_norm"]) / len(loader),
            "grad_sq_norm": float(sums["grad_sq_norm"]) / len(loader)}


def _check_finite(batch: int, loss: torch.Tensor) -> None:
    if not torch.isfinite(loss).item():
        raise TrainingDiverged(f"non-finite loss ({loss.item()})", f"batch {batch}")


def _nonfinite(tensors) -> str | None:
    """The name of the first floating tensor in ``tensors`` (nested dicts and lists) holding a NaN or an
    infinity, None when all are finite: no checkpoint may keep a diverged model (inf BatchNorm statistics
    included), or its "last good checkpoint" would diverge again at once."""
    flat = list(_floats(tensors, ""))
    if not flat or torch.stack([t.isfinite().all().cpu() for _, t in flat]).all().item():
        return None
    return next(name for name, t in flat if not t.isfinite().all().item())


def _floats(obj, prefix: str):
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point():
            yield prefix, obj.detach()
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _floats(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _floats(value, f"{prefix}[{i}]")


def train_step(model, optimizer, method, ctx: Context, amp: bool, x, y, idx, batch: int | None = None):
    """One training step: the method's loss (its attack included) under bf16 autocast when ``amp``, backward,
    the squared gradient norm, the optimizer step. Returns (loss, correct, squared grad norm, correct on the
    clean batch or None where the method has no clean logits) as tensors.
    With ``batch`` given, a non-finite loss raises ``TrainingDiverged`` before the step (a sync per batch);
    without it (graph capture) nothing leaves the GPU."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        step = method(model, x, y, idx, ctx)
    loss = step.loss.float()
    if batch is not None:
        _check_finite(batch, loss)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    sq = torch.stack([p.grad.detach().float().pow(2).sum() for p in model.parameters() if p.grad is not None]).sum()
    optimizer.step()
    nat = None if step.logits_nat is None else (step.logits_nat.detach().argmax(1) == y).sum()
    return loss.detach(), (step.logits.detach().argmax(1) == y).sum(), sq, nat


class GraphedStep:
    """``train_step`` recorded as one CUDA graph and replayed for every full batch of an epoch.

    At the paper's batch of 128 an eager PGD-10 step launches some 3,000 small kernels and the GPU waits for
    the CPU most of the time (benchmarks/README.md); a replay launches the same kernels at once. A new graph
    is recorded each epoch, after ``WARMUP`` eager steps (cuDNN autotuning, optimizer state), because the lr
    and the methods' schedules (Eq. 6's gamma, TE's weight, the forget rate) enter the kernels as constants.
    The attack's random starts come from the CUDA generator, whose graph-safe state advances with each
    replay as it does in eager mode: in deterministic mode a replayed epoch equals an eager one exactly
    (tests/test_cuda.py). A method whose step waits for the GPU (``.item()``, boolean-mask indexing) cannot be
    recorded; that stops the run with a one-line error naming ``cuda_graphs: false``."""

    WARMUP = 2

    def __init__(self, model, optimizer, method, ctx: Context, amp: bool):
        self.step = functools.partial(train_step, model, optimizer, method, ctx, amp)
        self.optimizer, self.method_name = optimizer, ctx.cfg.method
        self.calls, self.graph = 0, None

    def __call__(self, x, y, idx, batch: int):
        self.calls += 1
        if self.calls <= self.WARMUP:  # on a side stream, as torch.cuda.graphs asks
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                out = self.step(x, y, idx, batch=batch)
            torch.cuda.current_stream().wait_stream(stream)
            return out
        if self.graph is None:
            self.x, self.y, self.idx = x.clone(), y.clone(), idx.clone()
            graph = torch.cuda.CUDAGraph()
            self.optimizer.zero_grad(set_to_none=True)
            try:
                with torch.cuda.graph(graph):
                    self.out = self.step(self.x, self.y, self.idx)
            except Exception as exc:  # a CPU sync in the method; the CUDA generator is left mid-capture
                raise MemlibError(f"the {self.method_name} step cannot be recorded as a CUDA graph "
                                  f"({type(exc).__name__}: {str(exc).splitlines()[0]}); the method must not wait "
                                  "for the GPU (.item(), boolean masks), or set cuda_graphs: false") from exc
            self.graph = graph
        else:
            self.x.copy_(x)
            self.y.copy_(y)
            self.idx.copy_(idx)
        self.graph.replay()
        return tuple(None if t is None else t.clone() for t in self.out)


def _evaluate_epoch(model, data, train_eval_ids, steps: int, eval_kw: dict) -> dict:
    """Natural and PGD-k accuracy on the training examples (labels trained on, no augmentation) and on
    the test examples."""
    tr_x, tr_y = data.train_images[train_eval_ids], data.train_labels[train_eval_ids]
    robust = f"pgd-{steps}"
    return {
        "train_nat_acc": _acc(predict(model, tr_x, tr_y, "natural", **eval_kw), tr_y),
        "train_rob_acc": _acc(predict(model, tr_x, tr_y, robust, **eval_kw), tr_y),
        "test_nat_acc": _acc(predict(model, data.test_images, data.test_labels, "natural", **eval_kw),
                             data.test_labels),
        "test_rob_acc": _acc(predict(model, data.test_images, data.test_labels, robust, **eval_kw), data.test_labels),
    }


def _weights_state(model: torch.nn.Module, run_id: str, epoch: int, metrics: dict) -> dict:
    return {"format": CHECKPOINT_FORMAT, "run_id": run_id, "epoch": epoch,
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "metrics": json.dumps(metrics)}


def _cpu_state(module: torch.nn.Module) -> dict:
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def _acc(pred: torch.Tensor, labels: torch.Tensor) -> float:
    return (pred == labels).float().mean().item() if len(labels) else float("nan")


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def _train_worker(values: dict, force: bool) -> RunResult:
    return train(RunConfig.from_dict(values), force=force, log=lambda msg: None)


def train_many(cfgs: list[RunConfig], *, jobs: int = 1, force: bool = False, log=None) -> list[RunResult]:
    """Train several runs (each once, however often it is listed) and return their results in order. A run
    that starts from or distills another listed run's checkpoint (``init_from``, KD teachers) trains after
    it: in waves, each wave's runs in ``jobs`` worker processes at a time, each with cores // jobs torch
    threads (on a small CPU, two single-threaded small models train faster than one after the other)."""
    log = log or (lambda msg: tqdm.write(msg))
    unique = {}
    for cfg in cfgs:
        unique.setdefault(run_dir_for(cfg)[1], cfg)
    if not os.environ.get("TQDM_DISABLE"):  # with the progress bars (a batch's executed notebooks show neither)
        log(training_status(unique, force))
    done: dict = {}
    for wave in _waves(unique):
        done.update(_train_wave(wave, jobs, force, log))
    return [done[run_dir_for(cfg)[1]] for cfg in cfgs]


def training_status(unique: dict, force: bool = False) -> str:
    """One line for the top of a notebook: how many of its runs ({run id: config}) are reused and which are
    trained now (their progress bars follow)."""
    states = {rid: run_state(run_dir_for(cfg)[0])[0] for rid, cfg in unique.items()}
    todo = [rid for rid, st in states.items() if force or st in ("missing", "stopped")]
    reused = len(unique) - len(todo)
    head = f"Status: {len(unique)} run(s) in this notebook, {reused} reused (finished, or records)"
    if not todo:
        return head + "; nothing to train."
    return head + f"; training {len(todo)} now, one progress bar each below: " + ", ".join(todo)


def _waves(unique: dict) -> list[dict]:
    """``unique`` ({run id: config}) in waves: each run after the listed runs whose checkpoints it needs."""
    by_dir = {run_dir_for(cfg)[0].resolve(): rid for rid, cfg in unique.items()}
    needs = {rid: {by_dir[d] for d in (Path(getattr(cfg, k)).resolve().parent for k in WEIGHT_KEYS
                                       if getattr(cfg, k)) if d in by_dir} for rid, cfg in unique.items()}
    waves, placed = [], set()
    while len(placed) < len(unique):
        wave = {rid: cfg for rid, cfg in unique.items() if rid not in placed and needs[rid] <= placed}
        if not wave:
            raise ConfigError(f"runs {', '.join(sorted(set(unique) - placed))} need each other's checkpoints")
        waves.append(wave)
        placed |= set(wave)
    return waves


def _train_wave(wave: dict, jobs: int, force: bool, log) -> dict:
    if jobs <= 1 or len(wave) <= 1:
        return {rid: train(cfg, force=force, log=log) for rid, cfg in wave.items()}
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor, as_completed

    threads = max(1, (os.cpu_count() or 1) // jobs)
    ctx = multiprocessing.get_context("spawn")
    done = {}
    with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker, initargs=(threads,)) as pool:
        futures = {pool.submit(_train_worker, cfg.to_dict(), force): rid for rid, cfg in wave.items()}
        for future in tqdm(as_completed(futures), total=len(futures), desc=f"{len(futures)} runs, {jobs} at a time",
                           unit="run", disable=not _progress(next(iter(wave.values())))):
            done[futures[future]] = future.result()
    for rid in wave:  # in the order asked, not of completion: the same output for the same runs
        log(f"{'reused' if done[rid].reused else 'finished'} {done[rid].run_dir.name}")
    return done


_TIMING_KEYS = ("time", "time_train", "time_eval")
RECORD_FILES = ("config.json", "metrics.jsonl", "status.json")  # what a record's retraining rewrites


def _untimed(metrics: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if k not in _TIMING_KEYS} for m in metrics]


def retrain_record(run_dir: str | Path, log=None) -> RunResult:
    """Train a record (finished metrics, no weights) again in its own folder, resumably, to get its weights.
    The record's ``config.json``, ``metrics.jsonl`` and ``status.json`` are kept in ``record/`` while it trains
    (they are what ``runs.read_metrics`` reads meanwhile, so an interrupted retraining is still a record). If
    the new metrics equal the record's (timings aside: same code, torch build, threads and data, deterministic on
    a CPU), the record's files are put back, so its committed bytes and cached analyses stay valid; otherwise
    the cached analyses of the old weights (``eval.json`` and the rest) are deleted, to be computed again on the
    new ones, and the new record (config, metrics, status) stands."""
    log = log or (lambda msg: tqdm.write(msg))
    run_dir = Path(run_dir)
    _wait_while_trained(run_dir, log)  # another notebook may be training this very record for its weights
    if run_state(run_dir)[0] == "finished":
        return RunResult(run_dir, read_metrics(run_dir), True, reused=True)
    cfg, record = read_run(run_dir)
    kept = run_dir / "record"
    kept.mkdir(exist_ok=True)
    for name in RECORD_FILES:  # a second call (after an interruption) keeps the first copy
        if (run_dir / name).is_file() and not (kept / name).is_file():
            atomic_write_bytes(kept / name, (run_dir / name).read_bytes())
    log(f"{run_dir.name} is a record without weights: training it again ({cfg.epochs} epochs)")
    threads = torch.get_num_threads()
    if record.get("threads") and not record.get("device", "").startswith("cuda"):
        torch.set_num_threads(record["threads"])  # the record's CPU thread count, for the same float sums
    try:
        result = train(cfg, log=log, retrain=True)  # resumes after an interruption; record/ stands meanwhile
    finally:
        torch.set_num_threads(threads)
    if not result.finished:
        return result
    if _untimed(read_metrics(run_dir)) == _untimed(result.metrics):  # read_metrics reads record/ while it exists
        for name in RECORD_FILES:
            atomic_write_bytes(run_dir / name, (kept / name).read_bytes())
        log(f"{run_dir.name}: trained again with the record's metrics exactly; its cached analyses stay")
    else:
        for path in run_dir.iterdir():
            if path.is_file() and path.name not in RUN_FILES and not path.name.startswith(("epoch_", ".")):
                path.unlink()
        log(f"{run_dir.name}: trained again, but its metrics differ from the record's (another torch build, "
            f"thread count or code); its cached analyses were deleted and will be computed on the new weights")
        shutil.rmtree(kept)
        for dep in _dependents(run_dir):  # trained from the old weights: their records no longer hold
            if run_state(dep)[0] in ("finished", "record"):
                for path in dep.glob("*.pt"):
                    path.unlink()
                log(f"{dep.name} started from or distilled {run_dir.name}'s old weights: training it again")
                retrain_record(dep, log=log)
        return result
    shutil.rmtree(kept)
    return result


def _wait_while_trained(run_dir: Path, log) -> None:
    """Return once no other process holds the run's training lock (a blocking ``flock``, released at once)."""
    import fcntl

    with open(run_dir / ".lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            log(f"{run_dir.name} is being trained by another process; waiting for it")
            fcntl.flock(handle, fcntl.LOCK_EX)


def _dependents(run_dir: Path) -> list[Path]:
    """The runs beside ``run_dir`` that start from or distil its weights (``init_from``, the KD teachers)."""
    found = []
    for other in sorted(p for p in run_dir.parent.iterdir() if p != run_dir and (p / "config.json").is_file()):
        try:
            values = read_record(other)["config"]
        except MemlibError:
            continue
        if any(values.get(k) and Path(values[k]).parent.name == run_dir.name for k in WEIGHT_KEYS):
            found.append(other)
    return found


set_retrainer(retrain_record)
