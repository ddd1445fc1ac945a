"""Evaluation: natural, PGD-k, CW-k and AutoAttack accuracy of a model or of a run's checkpoints, and
the Table-1 row (best, final and best-minus-final for each attack)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.nn as nn

from memlib.attacks import attack, eval_mode, parse_attack
from memlib.config import ConfigError
from memlib.data import balanced_subset, load_split
from memlib.io import atomic_write_json, load_checkpoint
from memlib.models import fold_bn as folded_view
from memlib.runs import (check_data, ensure_weights, make_model, read_run, select_device, uses_amp,
                         uses_channels_last)

TABLE1_ATTACKS = ("natural", "pgd-10", "pgd-1000", "cw-1000", "autoattack")


def predict(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, spec: str = "natural", *,
            eps: float, alpha: float, norm: str = "linf", batch_size: int = 512, amp: bool = False,
            memory_format: torch.memory_format = torch.contiguous_format, fold_bn: bool = True) -> torch.Tensor:
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
            x_adv = attack(model, x, y, spec, eps=eps, alpha=alpha, norm=norm, batch_size=batch_size,
                           fold_bn=fold_bn)
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
    """The model of a run with the weights of checkpoint ``which`` (best | final | last | epoch_NNN), in eval
    mode; a record's weights are trained first (``runs.ensure_weights``)."""
    ensure_weights(run_dir, which)
    cfg, record = read_run(run_dir)
    state = load_checkpoint(Path(run_dir) / f"{which}.pt", expect_run_id=record["run_id"])
    model = make_model(cfg, device)
    model.load_state_dict(state["model"])
    return model.eval(), state


def evaluate_run(run_dir: str | Path, attacks: tuple[str, ...] = ("natural", "pgd-10"), *, n: int = 0,
                 checkpoints: tuple[str, ...] = ("best", "final"), batch_size: int = 500, seed: int | None = None,
                 device: str = "auto", force: bool = False, log=print) -> dict:
    """Evaluate checkpoints of a run on all (n = 0) or n class-balanced test examples; results are cached
    in ``eval.json`` under ``"<checkpoint>|<attack>|n=<n>|seed=<seed>"`` and returned as
    ``{checkpoint: {attack: acc}}``. The subset's default seed is the one training used for its per-epoch
    test subset, so with ``n = test_subset`` the best epoch is chosen and reported on the same images, as in
    the paper (which uses the whole test set for both)."""
    for spec in attacks:
        parse_attack(spec)
    if n < 0 or batch_size < 1:
        raise ConfigError(f"n must be >= 0 (0 = all test examples) and batch_size >= 1; got n={n}, "
                          f"batch_size={batch_size}")
    run_dir = Path(run_dir)
    cfg, record = read_run(run_dir)  # a damaged config.json is one line
    seed = cfg.data_seed + 1 if seed is None else seed
    check_data(run_dir, cfg, record)  # the same source, and the same files where the record has their digest
    dev = select_device(device)
    cache_path = run_dir / "eval.json"
    try:
        cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    except ValueError:
        raise ConfigError(f"{cache_path} is damaged; delete it (its results are computed again)") from None
    fmt = torch.channels_last if uses_channels_last(cfg, dev) else torch.contiguous_format
    results: dict = {}
    images = labels = None
    for which in checkpoints:
        keys = {spec: f"{which}|{spec}|n={n}|seed={seed}" for spec in attacks}
        if not force and all(k in cache for k in keys.values()):  # cached: no weights or images needed
            results[which] = {"epoch": cache[next(iter(keys.values()))]["epoch"] if keys else None,
                              **{spec: cache[k]["acc"] for spec, k in keys.items()}}
            continue
        if images is None:
            test = load_split(cfg, train=False)
            ids = balanced_subset(test.labels, n, seed)
            images, labels = test.images[ids].to(dev), test.labels[ids].to(dev)
        model, state = load_weights(run_dir, which, dev)
        results[which] = {"epoch": state.get("epoch")}
        for spec in attacks:
            key = keys[spec]
            if key not in cache or force:
                torch.manual_seed(seed)
                t0 = time.time()
                acc = accuracy(model, images, labels, spec, eps=cfg.eps, alpha=cfg.alpha, norm=cfg.norm,
                               batch_size=batch_size, amp=uses_amp(cfg, dev), memory_format=fmt, fold_bn=cfg.fold_bn)
                cache[key] = {"acc": acc, "epoch": state.get("epoch"), "seconds": time.time() - t0,
                              "n": len(labels), "data_source": record["data_source"]}
                atomic_write_json(cache_path, cache)
                log(f"{run_dir.name} {which} (epoch {state.get('epoch')}) {spec}: {100 * acc:.2f}%")
            results[which][spec] = cache[key]["acc"]
    return results


def table_row(results: dict, attacks: tuple[str, ...]) -> dict:
    """Table-1 cells in percent: ``{attack: {"best": b, "final": f, "diff": b - f}}``."""
    row = {}
    for spec in attacks:
        best, final = 100 * results["best"][spec], 100 * results["final"][spec]
        row[spec] = {"best": best, "final": final, "diff": best - final}
    return row


def format_row(name: str, row: dict) -> str:
    cells = " | ".join(f"{c['best']:.2f} | {c['final']:.2f} | {c['diff']:.2f}" for c in row.values())
    return f"| {name} | {cells} |"


def format_table(rows: dict[str, dict]) -> str:
    """A Markdown table of Table-1 rows ``{method: table_row(...)}``."""
    attacks = list(next(iter(rows.values())))
    head = "| Method | " + " | ".join(f"{a} Best | {a} Final | {a} Diff" for a in attacks) + " |"
    sep = "|---" * (1 + 3 * len(attacks)) + "|"
    return "\n".join([head, sep] + [format_row(name, row) for name, row in rows.items()])
