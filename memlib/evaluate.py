"""Evaluation: natural, PGD-k, CW-k and AutoAttack accuracy of a model or of a run's checkpoints (kept in
the run's ``eval.json``; the Table 1 formatter is ``report.build_table1``)."""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn as nn

from memlib.attacks import attack, eval_mode, parse_attack
from memlib.config import ConfigError
from memlib.data import balanced_subset
from memlib.models import fold_bn as folded_view
from memlib.runs import Run, WeightsUnavailable, select_device, uses_amp, uses_channels_last

TABLE1_ATTACKS = ("natural", "pgd-10", "pgd-1000", "cw-1000", "autoattack")


def predict(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, spec: str = "natural", *,
            eps: float, alpha: float, norm: str = "linf", batch_size: int = 512, amp: bool = False,
            memory_format: torch.memory_format = torch.contiguous_format, fold_bn: bool = True,
            clamp_start: bool = True) -> torch.Tensor:
    """Predicted classes of ``images`` (uint8 or float in [0, 1]) under the attack ``spec``, eval mode (with
    BatchNorm folded into the convolutions when ``fold_bn``, see ``memlib.attacks``)."""
    preds = []
    kind, _ = parse_attack(spec)
    device = images.device
    use_amp = amp and kind != "autoattack"
    for start in range(0, len(labels), batch_size):
        x = images[start:start + batch_size]
        x = (x.float() / 255 if x.dtype == torch.uint8 else x).contiguous(memory_format=memory_format)
        y = labels[start:start + batch_size]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            try:
                x_adv = attack(model, x, y, spec, eps=eps, alpha=alpha, norm=norm, batch_size=batch_size,
                               fold_bn=fold_bn, clamp_start=clamp_start)
            except ImportError as exc:  # AutoAttack not installed: the one line, as a config error
                raise ConfigError(str(exc)) from None
            with torch.no_grad(), eval_mode(model):
                preds.append((folded_view(model) if fold_bn else model)(x_adv).argmax(1))
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long, device=device)


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, spec: str = "natural", **kw) -> float:
    """Fraction of examples classified correctly under ``spec`` (natural, pgd-K, cw-K, autoattack)."""
    if len(labels) == 0:
        return float("nan")
    return (predict(model, images, labels, spec, **kw) == labels).float().mean().item()


def load_weights(run_dir: str | Path, which: str = "best",
                 device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """The model of a run with the weights of checkpoint ``which`` (``runs.Run.load``)."""
    return Run(run_dir).load(which, device)


EVAL_FILE = "eval.json"


def check_attacks(attacks) -> None:
    """The config layer's one-line error for an attack spec ``attacks.parse_attack`` rejects."""
    for spec in attacks:
        try:
            parse_attack(spec)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None


def evaluate_run(run_dir: str | Path | Run, attacks: tuple[str, ...] = ("natural", "pgd-10"), *, n: int = 0,
                 checkpoints: tuple[str, ...] = ("best", "final"), batch_size: int = 500, seed: int | None = None,
                 device: str = "auto", force: bool = False, missing_weights: str = "raise", log=print) -> dict:
    """Evaluate checkpoints of a run on all (n = 0) or n class-balanced test examples; each result is kept in
    the run's ``eval.json`` (``Run.cached``, with the checkpoint's digest) under
    ``"<checkpoint>|<attack>|n=<n>|seed=<seed>"``, and returned as ``{checkpoint: {"epoch", attack: acc}}``.
    The subset's default seed is the one training used for its per-epoch test subset, so with
    ``n = test_subset`` the best epoch is chosen and reported on the same images, as in the paper (which uses
    the whole test set for both).

    A record whose weights are not on this machine is trained again first, except while only records may be
    read (``python -m memlib render``): then it raises ``WeightsUnavailable``, or with ``missing_weights="skip"``
    each result that is not kept is None (a table shows it as not yet evaluated)."""
    check_attacks(attacks)
    if missing_weights not in ("raise", "skip"):
        raise ConfigError(f"missing_weights must be 'raise' or 'skip'; got {missing_weights!r}")
    if n < 0 or batch_size < 1:
        raise ConfigError(f"n must be >= 0 (0 = all test examples) and batch_size >= 1; got n={n}, "
                          f"batch_size={batch_size}")
    run = run_dir if isinstance(run_dir, Run) else Run(run_dir)
    cfg = run.config  # a damaged config.json is one line
    seed = cfg.data_seed + 1 if seed is None else seed
    run.check_data()  # the same source, and the same files where the record has their digest
    dev = select_device(device)
    fmt = torch.channels_last if uses_channels_last(cfg, dev) else torch.contiguous_format
    loaded: dict = {}  # the test subset and each checkpoint's model, only once a result must be computed

    def measure(which: str, spec: str) -> dict:
        if "images" not in loaded:
            test = run.test_set()
            ids = balanced_subset(test.labels, n, seed)
            loaded["images"], loaded["labels"] = test.images[ids].to(dev), test.labels[ids].to(dev)
        if which not in loaded:
            loaded[which] = run.load(which, dev)
        (model, state), images, labels = loaded[which], loaded["images"], loaded["labels"]
        torch.manual_seed(seed)
        t0 = time.time()
        acc = accuracy(model, images, labels, spec, eps=cfg.eps, alpha=cfg.alpha, norm=cfg.norm,
                       batch_size=batch_size, amp=uses_amp(cfg, dev), memory_format=fmt, fold_bn=cfg.fold_bn,
                       clamp_start=cfg.eval_clamp_start)
        log(f"{run.dir.name} {which} (epoch {state.get('epoch')}) {spec}: {100 * acc:.2f}%")
        return {"acc": acc, "epoch": state.get("epoch"), "seconds": time.time() - t0, "n": len(labels),
                "data_source": run.record["data_source"]}

    def kept(which: str, spec: str) -> dict | None:
        try:
            return run.cached(EVAL_FILE, f"{which}|{spec}|n={n}|seed={seed}", lambda: measure(which, spec),
                              weights=which, force=force)
        except WeightsUnavailable:
            if missing_weights == "raise":
                raise
            return None

    results: dict = {}
    for which in checkpoints:
        entries = {spec: kept(which, spec) for spec in attacks}
        epoch = next((e["epoch"] for e in entries.values() if e), None)
        results[which] = {"epoch": epoch, **{spec: e and e["acc"] for spec, e in entries.items()}}
    return results
