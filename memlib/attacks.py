"""Attacks on models whose inputs live in [0, 1].

* ``pgd``: projected gradient ascent (Madry et al. 2018; the paper's Eq. 2) under the l-inf or l2 threat
  model, on any per-example objective (``ce``, TRADES's ``kl``, the C&W ``margin``), with random start
  and restarts. Random starts follow the authors' code: uniform in the l-inf ball for PGD-AT and for
  evaluation, ``0.001 * N(0, 1)`` for the TRADES attack and for the l2 threat model. ``clamp_start``
  (default) puts x + start into [0, 1] before the first step; the authors do so only in their Sec. 3
  PGD-AT, not in PGD+TE, TRADES or evaluation (``clamp_start=False``; the configs' ``clamp_start`` and
  ``eval_clamp_start``).
* ``fgsm``: FGSM with a uniform random start ("fast AT", Wong et al. 2020), i.e. one PGD step.
* ``autoattack``: the standard AutoAttack through the real package (``autoattack`` or ``pyautoattack``).

Every attack runs the model in eval mode (BatchNorm frozen, dropout off) and restores each module's
mode afterwards; only the input gradient is computed, never parameter gradients. With ``fold_bn`` (the
default) the eval-mode model runs with each BatchNorm folded into the convolution before it
(``memlib.models.fold_bn``): the same function up to float rounding, with fewer passes over memory.
"""

from __future__ import annotations

import inspect
import re
from contextlib import contextmanager
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from memlib.models import fold_bn as folded_view

Objective = Callable[[torch.Tensor], torch.Tensor]  # logits (B, C) -> per-example loss (B,) to maximize


@contextmanager
def eval_mode(model: nn.Module):
    """Put every module in eval mode for the duration, then restore each module's own mode."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


# --- objectives ---------------------------------------------------------------------------------

def ce_objective(y: torch.Tensor) -> Objective:
    """Cross-entropy of the labels, per example (the PGD-AT attack and PGD-k evaluation)."""
    return lambda logits: F.cross_entropy(logits.float(), y, reduction="none")


def kl_objective(p_clean: torch.Tensor) -> Objective:
    """KL(p(x) || p(x')) per example with ``p_clean`` the clean prediction (the TRADES attack, Eq. 3)."""
    def objective(logits: torch.Tensor) -> torch.Tensor:
        return F.kl_div(F.log_softmax(logits.float(), dim=1), p_clean, reduction="none").sum(1)
    return objective


def margin_objective(y: torch.Tensor) -> Objective:
    """The C&W margin max_{j != y} z_j - z_y per example (> 0 exactly when misclassified)."""
    def objective(logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        true = logits.gather(1, y[:, None]).squeeze(1)
        other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(1)
        return other - true
    return objective


# --- PGD ----------------------------------------------------------------------------------------

def _ball(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Project onto the eps-ball."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
    return delta * (eps / norms).clamp(max=1.0).view(-1, 1, 1, 1)


def _project(delta: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Project onto the eps-ball and keep x + delta in [0, 1]."""
    return (x + _ball(delta, eps, norm)).clamp(0, 1) - x


def _start(x: torch.Tensor, eps: float, norm: str, start: str, clamp: bool = True) -> torch.Tensor:
    if start == "uniform":
        if norm != "linf":
            raise ValueError("a uniform start is defined for the l-inf ball only")
        delta = torch.empty_like(x).uniform_(-eps, eps)
    elif start == "normal":
        delta = 0.001 * torch.randn_like(x)
    elif start == "zero":
        delta = torch.zeros_like(x)
    else:
        raise ValueError(f"unknown start {start!r}; choose uniform, normal or zero")
    # unclamped (the authors' PGD+TE, TRADES and evaluation), the first gradient may be taken outside [0, 1]
    return _project(delta, x, eps, norm) if clamp else _ball(delta, eps, norm)


def pgd(model: nn.Module, x: torch.Tensor, objective: Objective, *, eps: float, alpha: float, steps: int,
        norm: str = "linf", start: str | None = None, restarts: int = 1, fold_bn: bool = True,
        clamp_start: bool = True) -> torch.Tensor:
    """PGD (Eq. 2): ``steps`` ascent steps on ``objective`` from a random start, projected onto
    {x' : ||x' - x||_p <= eps} and [0, 1]. l-inf steps along the gradient's sign; l2 steps along the
    gradient divided by its l2 norm. With ``restarts`` > 1, each example keeps the restart with the
    highest final objective. ``start`` defaults to "uniform" for l-inf and "normal" for l2; ``clamp_start``
    puts x + start into [0, 1] (every step's result is in [0, 1] either way)."""
    if norm not in ("linf", "l2"):
        raise ValueError(f"unknown norm {norm!r}; choose linf or l2")
    start = start or ("uniform" if norm == "linf" else "normal")
    x = x.detach()
    best, best_value = x.clone(), None
    with eval_mode(model):
        net = folded_view(model) if fold_bn else model
        for _ in range(restarts):
            delta = _start(x, eps, norm, start, clamp_start)
            for _ in range(steps):
                delta.requires_grad_(True)
                loss = objective(net(x + delta)).sum()
                (grad,) = torch.autograd.grad(loss, delta)
                if norm == "linf":
                    step = grad.sign()
                else:
                    step = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
                delta = _project(delta.detach() + alpha * step, x, eps, norm)
            if restarts == 1:
                return (x + delta).detach()
            with torch.no_grad():
                value = objective(net(x + delta))
                better = value > best_value if best_value is not None else torch.ones_like(value, dtype=torch.bool)
                best = torch.where(better.view(-1, 1, 1, 1), x + delta, best)
                best_value = value if best_value is None else torch.maximum(value, best_value)
    return best.detach()


def fgsm(model: nn.Module, x: torch.Tensor, objective: Objective, *, eps: float, alpha: float,
         norm: str = "linf", fold_bn: bool = True, clamp_start: bool = True) -> torch.Tensor:
    """FGSM with random initialization (Wong et al. 2020, "fast AT"): one PGD step of size ``alpha``
    (they use 1.25 * eps) from a uniform start."""
    return pgd(model, x, objective, eps=eps, alpha=alpha, steps=1, norm=norm,
               start="uniform" if norm == "linf" else "normal", fold_bn=fold_bn, clamp_start=clamp_start)


# --- AutoAttack ---------------------------------------------------------------------------------

def _autoattack_class():
    try:
        from autoattack import AutoAttack  # installed from the authors' repository
    except ImportError:
        try:
            from pyautoattack import AutoAttack  # the PyPI package
        except ImportError:
            raise ImportError("AutoAttack is not installed: pip install pyautoattack "
                              "(or pip install git+https://github.com/fra31/auto-attack)") from None
    return AutoAttack


def autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
               batch_size: int = 500, seed: int = 0, verbose: bool = False, fold_bn: bool = True) -> torch.Tensor:
    """Standard AutoAttack (Croce & Hein 2020: APGD-CE, APGD-T, FAB-T, Square) on ``model`` as it is
    (inputs in [0, 1], logits out), in eval mode, in float32. Returns the adversarial examples."""
    AutoAttack = _autoattack_class()
    params = inspect.signature(AutoAttack.__init__).parameters
    kwargs = {"norm": {"linf": "Linf", "l2": "L2"}[norm], "eps": eps, "version": "standard",
              "device": x.device if "device" in params else None, "seed": seed}
    kwargs = {k: v for k, v in kwargs.items() if k in params and v is not None}
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:  # FAB calls .backward(): keep parameter gradients untouched (and skip computing them)
        p.requires_grad_(False)
    try:
        with eval_mode(model), torch.autocast(x.device.type, enabled=False):
            adversary = AutoAttack(folded_view(model) if fold_bn else model, **kwargs)
            adversary.verbose = verbose
            run = adversary.run_standard_evaluation
            bs_key = "batch_size" if "batch_size" in inspect.signature(run).parameters else "bs"
            x_adv = run(x.detach(), y, **{bs_key: batch_size})
    finally:
        for p in frozen:
            p.requires_grad_(True)
    if isinstance(x_adv, tuple):  # pyautoattack returns (x_adv, y_adv); the authors' package x_adv alone
        x_adv = x_adv[0]
    return x_adv.detach()


# --- attack specs used by evaluation ------------------------------------------------------------

_SPEC = re.compile(r"^(natural|autoattack|aa|(pgd|cw)-(\d+))$")


def parse_attack(spec: str) -> tuple[str, int]:
    """"natural" -> ("natural", 0); "pgd-10" -> ("pgd", 10); "cw-1000" -> ("cw", 1000); "autoattack"."""
    match = _SPEC.match(spec.strip().lower())
    if not match or (match.group(3) is not None and int(match.group(3)) < 1):
        raise ValueError(f"unknown attack {spec!r}; use natural, pgd-K, cw-K (K >= 1 steps) or autoattack")
    if match.group(2):
        return match.group(2), int(match.group(3))
    return ("autoattack", 0) if match.group(1) in ("autoattack", "aa") else ("natural", 0)


def attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: str, *, eps: float, alpha: float,
           norm: str = "linf", restarts: int = 1, batch_size: int = 500, fold_bn: bool = True,
           clamp_start: bool = True) -> torch.Tensor:
    """Adversarial examples for an evaluation attack spec (see ``parse_attack``)."""
    kind, steps = parse_attack(spec)
    if kind == "natural":
        return x
    if kind == "autoattack":
        return autoattack(model, x, y, eps=eps, norm=norm, batch_size=batch_size, fold_bn=fold_bn)
    objective = ce_objective(y) if kind == "pgd" else margin_objective(y)
    return pgd(model, x, objective, eps=eps, alpha=alpha, steps=steps, norm=norm, restarts=restarts, fold_bn=fold_bn,
               clamp_start=clamp_start)
