"""The paper's analysis measures (Secs. 3.2, 3.3, 4.1 and Apps. A.2, A.3, C.1), on plain models and tensors.

* Gradient magnitude (Fig. 3, A.9): per-example parameter-gradient norms of the PGD-AT loss, the clean CE,
  TRADES's CE and beta * KL terms, and R = CE(x') - CE(x); their ratios.
* Gradient stability (Fig. 4, A.8): the change of the parameter gradient along a filter-normalized random
  direction (Li et al. 2018), and the cosine similarity of per-example gradients between two epochs.
* Complexity measures (Fig. 6): margin, spectral and l1 norms over the margin, the top eigenvalue of the
  input Hessian, and the flatness of the weight loss landscape (Wu et al. 2020); all four of a run's checkpoint
  on its own training examples, cached in the run folder: ``run_complexity``.
* Robust overfitting (Fig. 7c, C.2, C.3): per-example adversarial losses (of a run's checkpoint on its own
  training examples, saved in the run folder: ``run_adversarial_losses``), Kendall's tau-b, hardest examples.

Conventions. Inputs are uint8 or float in [0, 1] (like ``memlib.evaluate.predict``) and are moved to the
model's device and dtype; CPU and CUDA both work. Attacks come from ``memlib.attacks`` and run in eval mode,
as in the authors' code. Unlike training (whose weight update runs in train mode), every loss and gradient
here is also computed in eval mode (BatchNorm uses its running statistics, dropout is off), so that each
example's loss depends on that example only and the measurements are deterministic given the attack's
random start: pass ``seed`` (or ``attack_seed``) to fix it; the caller's RNG state is left untouched then.
Per-example gradients are computed with ``torch.func`` (vmap over grad, ``chunk_size`` examples at a time).
"""

from __future__ import annotations

import json
import math
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, grad as func_grad, vmap

from memlib.attacks import ce_objective, eval_mode, kl_objective, pgd
from memlib.data import balanced_subset
from memlib.io import read_store, write_store
from memlib.methods import clean_probs
from memlib.runs import Run, select_device

# per-example losses; the attack each one needs ("ce": PGD-AT's, "kl": TRADES's, None: clean only)
LOSSES = {"pgd_at": "ce", "r": "ce", "clean_ce": None, "trades_ce": None, "trades_kl": "kl", "trades": "kl"}


# --- plumbing ---------------------------------------------------------------------------------------------

def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _prepare(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None):
    """x (uint8 or float in [0, 1]) as the model's float dtype on its device; y as int64 on that device."""
    p = next(model.parameters())
    x = x.to(p.device)
    x = (x.float() / 255 if x.dtype == torch.uint8 else x).to(p.dtype)
    return x if y is None else (x, y.to(p.device).long())


@contextmanager
def _seeded(seed: int | None, device: torch.device):
    """Seed the global RNG of ``device`` (and the CPU's) for the duration; restore the caller's state after."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.random.default_generator.manual_seed(seed)
        if device.type == "cuda":
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        yield


def _check_loss(loss: str) -> str:
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    return loss


def _adversarial(model, x, y, kind, *, eps, alpha, steps, norm="linf") -> torch.Tensor:
    """The attack of a loss, in eval mode: PGD on the CE from a uniform start (PGD-AT, ``kind="ce"``), PGD on
    KL(p(x) || p(x')) from x + 0.001 N(0, I) (TRADES, ``kind="kl"``), or none (``kind=None``)."""
    if kind is None:
        return x
    if kind == "ce":
        return pgd(model, x, ce_objective(y), eps=eps, alpha=alpha, steps=steps, norm=norm)
    return pgd(model, x, kl_objective(clean_probs(model, x)), eps=eps, alpha=alpha, steps=steps, norm=norm,
               start="normal")


def _loss(forward, name: str, x, x_adv, y, beta: float) -> torch.Tensor:
    """Per-example loss (B,): ``pgd_at`` CE(f(x'), y); ``clean_ce`` = ``trades_ce`` CE(f(x), y); ``r``
    CE(f(x'), y) - CE(f(x), y); ``trades_kl`` beta * KL(p(x) || p(x')) (differentiated through both
    predictions, as in training); ``trades`` the sum of TRADES's two terms."""
    if name in ("clean_ce", "trades_ce"):
        return F.cross_entropy(forward(x).float(), y, reduction="none")
    if name == "pgd_at":
        return F.cross_entropy(forward(x_adv).float(), y, reduction="none")
    if name == "r":
        return (F.cross_entropy(forward(x_adv).float(), y, reduction="none")
                - F.cross_entropy(forward(x).float(), y, reduction="none"))
    logits_nat = forward(x).float()
    # the target as log-probabilities: p log p then has a finite gradient where a probability underflows to 0
    # (softmax(logits_nat) as the target gives 0 * log 0 = NaN gradients for confident models)
    kl = beta * F.kl_div(F.log_softmax(forward(x_adv).float(), 1), F.log_softmax(logits_nat, 1),
                         reduction="none", log_target=True).sum(1)
    return kl if name == "trades_kl" else F.cross_entropy(logits_nat, y, reduction="none") + kl


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _grad_chunks(model, name, x, x_adv, y, beta, chunk_size) -> Iterator[torch.Tensor]:
    """Per-example gradients of loss ``name`` w.r.t. all trainable parameters, flattened in
    ``named_parameters`` order: one (b, P) tensor per chunk of ``chunk_size`` examples (eval mode)."""
    params = {n: p.detach() for n, p in _params(model).items()}
    buffers = dict(model.named_buffers())

    def one(p, xi, xai, yi):
        forward = lambda inp: functional_call(model, (p, buffers), (inp,))  # noqa: E731
        return _loss(forward, name, xi[None], xai[None], yi[None], beta).sum()

    per_example = vmap(func_grad(one), in_dims=(None, 0, 0, 0))
    with eval_mode(model):
        for s in range(0, len(y), chunk_size):
            g = per_example(params, x[s:s + chunk_size], x_adv[s:s + chunk_size], y[s:s + chunk_size])
            yield torch.cat([g[n].flatten(1) for n in params], dim=1)


# --- Sec. 3.2: gradient magnitude -------------------------------------------------------------------------

def probe_examples(true_labels: torch.Tensor, n: int, *, seed: int = 0, among: torch.Tensor | None = None
                   ) -> torch.Tensor:
    """Indices of the ``n`` training examples whose per-example gradients are measured (Figs. 3, 4, A.8, A.9):
    class-balanced by the data set's own labels and chosen with a seeded permutation (``balanced_subset``),
    only among the examples where the boolean mask ``among`` is true if it is given (A.9: the clean or the
    noisy ones). Sorted. Never "the first n": a training subset is stored in data-set order, and the offline
    CIFAR-10 copy is sorted by class, so its first examples are all airplanes."""
    true_labels = true_labels.cpu()
    pool = torch.arange(len(true_labels)) if among is None else torch.nonzero(among.cpu()).squeeze(1)
    if n > len(pool):
        raise ValueError(f"{n} probe examples asked for, but only {len(pool)} qualify")
    return pool[balanced_subset(true_labels[pool], n, seed)]


def per_example_grad_norms(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                           losses=("pgd_at", "clean_ce", "trades_ce", "trades_kl", "r"), *, eps: float,
                           alpha: float, steps: int, beta: float = 6.0, norm: str = "linf", seed: int | None = None,
                           chunk_size: int = 16) -> dict[str, torch.Tensor]:
    """Fig. 3(a), 3(b): the l2 norm of the gradient w.r.t. all parameters of each example's loss, for every
    name in ``losses`` (see ``LOSSES``): PGD-AT's adversarial CE, the clean CE (= TRADES's CE term), TRADES's
    beta * KL term and R = CE(x') - CE(x) with x' the PGD-AT adversarial example. Each attack is generated
    once (the PGD-AT one first, then TRADES's) and shared by the losses that use it; attack, losses and
    gradients run in eval mode. Returns ``{loss: (B,) norms}``; Fig. 3(a) plots their means over examples."""
    for name in losses:
        _check_loss(name)
    x, y = _prepare(model, x, y)
    kinds = [k for k in ("ce", "kl") if any(LOSSES[n] == k for n in losses)]
    with _seeded(seed, x.device):
        adv = {k: _adversarial(model, x, y, k, eps=eps, alpha=alpha, steps=steps, norm=norm) for k in kinds}
    adv[None] = x
    return {name: torch.cat([g.norm(dim=1) for g in
                             _grad_chunks(model, name, x, adv[LOSSES[name]], y, beta, chunk_size)])
            for name in dict.fromkeys(losses)}


RATIO_LOSSES = ("clean_ce", "r", "trades_kl")  # the per-example norms Fig. 3(b)'s ratios are made of


def ratios_from_norms(norms: dict, reduce: bool = True) -> dict:
    """Fig. 3(b) from per-example gradient norms (``per_example_grad_norms`` with at least ``RATIO_LOSSES``):
    ||grad R|| / ||grad CE|| ("pgd_at") and ||grad beta*KL|| / ||grad CE|| ("trades"), CE being the clean CE;
    each example's ratio (``reduce=False``: (B,) tensors) or their mean over examples (floats)."""
    ce = norms["clean_ce"].clamp_min(1e-30)
    ratios = {"pgd_at": norms["r"] / ce, "trades": norms["trades_kl"] / ce}
    return {k: v.mean().item() for k, v in ratios.items()} if reduce else ratios


def grad_norm_ratios(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, alpha: float, steps: int,
                     beta: float = 6.0, norm: str = "linf", seed: int | None = None, chunk_size: int = 16,
                     reduce: bool = True) -> dict:
    """Fig. 3(b): the mean over examples (each example's with ``reduce=False``) of ||grad R|| / ||grad CE||
    ("pgd_at") and of ||grad beta*KL|| / ||grad CE|| ("trades"), CE being the clean CE (``ratios_from_norms``).
    Both are computed on the given model; the figure uses "pgd_at" for the PGD-AT model and "trades" for the
    TRADES model."""
    n = per_example_grad_norms(model, x, y, RATIO_LOSSES, eps=eps, alpha=alpha, steps=steps, beta=beta, norm=norm,
                               seed=seed, chunk_size=chunk_size)
    return ratios_from_norms(n, reduce)


def grad_norms_by_noise(model: nn.Module, x: torch.Tensor, y: torch.Tensor, noisy_mask: torch.Tensor,
                        loss: str = "pgd_at", *, eps: float = 0.0, alpha: float = 0.0, steps: int = 0,
                        norm: str = "linf", seed: int | None = None, chunk_size: int = 16) -> dict[str, float]:
    """Fig. A.9: the mean per-example parameter-gradient norm of ``loss`` over the examples whose label ``y``
    (the label trained on) is correct ("clean") and over those whose label was corrupted ("noisy").
    ``loss="pgd_at"`` for the PGD-AT model, ``"clean_ce"`` for standard training."""
    norms = per_example_grad_norms(model, x, y, (loss,), eps=eps, alpha=alpha, steps=steps, norm=norm, seed=seed,
                                   chunk_size=chunk_size)[loss]
    noisy = noisy_mask.to(norms.device).bool()
    return {"clean": norms[~noisy].mean().item(), "noisy": norms[noisy].mean().item()}


# --- Sec. 3.2: gradient stability -------------------------------------------------------------------------

def per_example_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str = "pgd_at", *,
                          eps: float = 0.0, alpha: float = 0.0, steps: int = 0, beta: float = 6.0,
                          norm: str = "linf", project_dim: int | None = None, seed: int = 0,
                          attack_seed: int | None = None, chunk_size: int = 16) -> torch.Tensor:
    """Fig. 4(b): the flattened parameter gradient of each example's ``loss`` (eval mode), (B, P) in
    ``named_parameters`` order. With ``project_dim = k`` each gradient g is replaced by M^T g / sqrt(k), M a
    (P, k) standard Gaussian matrix generated block by block from ``seed`` (never stored whole), so gradients
    saved at two epochs with the same seed, model and device type are projected alike. By the
    Johnson-Lindenstrauss lemma such a projection preserves norms, distances and hence cosines up to a
    relative error of order 1/sqrt(k) (k = 1024: a few percent). ``attack_seed`` fixes the attack's start."""
    name = _check_loss(loss)
    x, y = _prepare(model, x, y)
    with _seeded(attack_seed, x.device):
        x_adv = _adversarial(model, x, y, LOSSES[name], eps=eps, alpha=alpha, steps=steps, norm=norm)
    out = []
    for g in _grad_chunks(model, name, x, x_adv, y, beta, chunk_size):
        out.append(g if project_dim is None else _random_projection(g, project_dim, seed))
    return torch.cat(out)


def _random_projection(g: torch.Tensor, k: int, seed: int, block_elems: int = 1 << 24) -> torch.Tensor:
    """g (b, P) @ M / sqrt(k), M ~ N(0, 1)^(P x k) drawn in row blocks of a fixed size from ``seed``."""
    gen = torch.Generator(device=g.device).manual_seed(seed)
    rows = max(1, block_elems // k)
    out = torch.zeros(len(g), k, device=g.device, dtype=g.dtype)
    for s in range(0, g.shape[1], rows):
        block = torch.randn(min(rows, g.shape[1] - s), k, generator=gen, device=g.device, dtype=g.dtype)
        out += g[:, s:s + rows] @ block
    return out / math.sqrt(k)


def successive_epoch_cosine(grads_a: torch.Tensor, grads_b: torch.Tensor) -> torch.Tensor:
    """Fig. 4(b): the cosine similarity between the gradients of the same examples saved at two (successive)
    epochs, (B,) from two (B, P) outputs of ``per_example_gradients``; the figure plots the mean."""
    return F.cosine_similarity(grads_a.float(), grads_b.float(), dim=1, eps=1e-30)


def flat_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str = "pgd_at", *, eps: float = 0.0,
                  alpha: float = 0.0, steps: int = 0, beta: float = 6.0, norm: str = "linf", batch_size: int = 128,
                  seed: int | None = None) -> torch.Tensor:
    """The flattened parameter gradient (P,) of the mean of ``loss`` over all examples (eval mode; the attack
    regenerated for the current weights, batch by batch, from the global RNG seeded with ``seed``)."""
    name = _check_loss(loss)
    x, y = _prepare(model, x, y)
    params = list(_params(model).values())
    total = torch.zeros(sum(p.numel() for p in params), device=x.device, dtype=params[0].dtype)
    with _seeded(seed, x.device):
        for s in range(0, len(y), batch_size):
            xb, yb = x[s:s + batch_size], y[s:s + batch_size]
            xa = _adversarial(model, xb, yb, LOSSES[name], eps=eps, alpha=alpha, steps=steps, norm=norm)
            with eval_mode(model):
                value = _loss(model, name, xb, xa, yb, beta).sum() / len(y)
                grads = torch.autograd.grad(value, params, allow_unused=True)
            total += torch.cat([(g if g is not None else torch.zeros_like(p)).flatten()
                                for g, p in zip(grads, params)])
    return total


def filter_normalized_direction(model: nn.Module, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Fig. 4(a), A.8 (and the flatness of Fig. 6): a Gaussian direction d over the parameters, normalized
    filter-wise as in Li et al. (2018): for each weight of dimension >= 2, each filter d_f (a slice along the
    output dimension; a row of a linear layer) is scaled to the norm of the same filter of theta. Parameters
    of dimension <= 1 (biases, BatchNorm weights and biases) get 0, as Li et al.'s "biasbn" option. Drawn
    from ``generator`` on its device (CPU by default, so the direction does not depend on the model's)."""
    out = {}
    for name, p in model.named_parameters():
        if p.dim() <= 1:
            out[name] = torch.zeros_like(p)
            continue
        gen_device = generator.device if generator is not None else torch.device("cpu")
        d = torch.randn(p.shape, generator=generator, device=gen_device, dtype=p.dtype).to(p.device)
        w = p.detach()
        scale = w.flatten(1).norm(dim=1) / (d.flatten(1).norm(dim=1) + 1e-10)
        out[name] = d * scale.view(-1, *([1] * (p.dim() - 1)))
    return out


@contextmanager
def _restored(model: nn.Module):
    """Save the parameters and copy them back afterwards (exactly, whatever happened in between)."""
    saved = {n: p.detach().clone() for n, p in model.named_parameters()}
    try:
        yield saved
    finally:
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(saved[n])


def _move(model: nn.Module, saved: dict, direction: dict, step: float) -> None:
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(saved[n] + step * direction[n] if n in direction else saved[n])


def gradient_change_along_direction(model: nn.Module, x: torch.Tensor, y: torch.Tensor, lambdas,
                                    loss: str = "pgd_at", *, eps: float, alpha: float, steps: int, seed: int = 0,
                                    beta: float = 6.0, norm: str = "linf", batch_size: int = 128,
                                    per_example: bool = False, direction: dict | None = None,
                                    chunk_size: int = 16) -> dict[str, torch.Tensor]:
    """Fig. 4(a) (l2 distance) and Fig. A.8 (cosine similarity): how the parameter gradient of ``loss``
    ("pgd_at", "trades" or "clean_ce") changes when theta moves to theta + lambda * d, d a filter-normalized
    Gaussian direction drawn from ``seed`` (or ``direction``). The adversarial examples are regenerated at
    every point (from the same random start, seeded with ``seed``, so lambda = 0 reproduces the reference
    exactly). By default the gradient compared is that of the mean loss over the examples; with
    ``per_example`` each example's gradient is compared with its own reference and the distances and cosines
    are averaged over examples ("averaged over all data samples"; memory B x P). Eval mode throughout; the
    parameters are restored exactly afterwards. Returns ``{"lambda", "l2", "cosine"}``, each (L,)."""
    name = _check_loss(loss)
    lambdas = [float(v) for v in lambdas]
    if direction is None:
        direction = filter_normalized_direction(model, torch.Generator().manual_seed(seed))
    kw = dict(eps=eps, alpha=alpha, steps=steps, beta=beta, norm=norm)

    def gradient():
        if per_example:
            return per_example_gradients(model, x, y, name, attack_seed=seed, chunk_size=chunk_size, **kw)
        return flat_gradient(model, x, y, name, batch_size=batch_size, seed=seed, **kw)[None]

    l2, cos = [], []
    with _restored(model) as saved:
        ref = gradient()
        for lam in lambdas:
            _move(model, saved, direction, lam)
            g = gradient()
            l2.append((g - ref).norm(dim=1).mean().item())
            cos.append(F.cosine_similarity(g, ref, dim=1, eps=1e-30).mean().item())
    return {"lambda": torch.tensor(lambdas), "l2": torch.tensor(l2), "cosine": torch.tensor(cos)}


# --- Sec. 3.3: complexity measures ------------------------------------------------------------------------

def per_example_margins(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float = 0.0,
                        alpha: float = 0.0, steps: int = 0, norm: str = "linf", batch_size: int = 256,
                        seed: int | None = None) -> torch.Tensor:
    """Fig. 6 (margin of the norm-based measures): f(x)_y - max_{j != y} f(x)_j for each example, on the
    logits, eval mode; > 0 exactly when the example is classified correctly. With eps > 0 and steps > 0
    it is taken at the PGD adversarial example of the CE (the robust-accuracy attack), so it is > 0 exactly
    when the example is robustly correct."""
    x, y = _prepare(model, x, y)
    out = []
    with _seeded(seed, x.device):
        for s in range(0, len(y), batch_size):
            xb, yb = x[s:s + batch_size], y[s:s + batch_size]
            if eps > 0 and steps > 0:
                xb = _adversarial(model, xb, yb, "ce", eps=eps, alpha=alpha, steps=steps, norm=norm)
            with torch.no_grad(), eval_mode(model):
                logits = model(xb).float()
            true = logits.gather(1, yb[:, None]).squeeze(1)
            other = logits.masked_fill(F.one_hot(yb, logits.shape[1]).bool(), float("-inf")).amax(1)
            out.append(true - other)
    return torch.cat(out)


def margin(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, percentile: float = 5.0, **kw) -> float:
    """Fig. 6: the margin gamma_margin of the norm-based measures (Neyshabur et al. 2017): the ``percentile``-th
    percentile of the per-example margins over the (training) set, a low percentile rather than the minimum
    so that a few outliers do not decide it. The paper only cites Neyshabur et al. and gives no value; the
    default 5 is the 5th-percentile margin used there. For the robust measures of Fig. 6 pass the training
    attack's ``eps``, ``alpha``, ``steps`` so the margins are taken at the PGD adversarial examples (see
    ``per_example_margins``); the measures need a positive margin."""
    m = per_example_margins(model, x, y, **kw)
    return torch.quantile(m.double().cpu(), percentile / 100).item()


def _weight_matrices(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """The weights of conv and linear layers as matrices (out, in * kh * kw)."""
    for name, m in model.named_modules():
        if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)):
            yield name, m.weight.detach().flatten(1)


def spectral_norms(model: nn.Module) -> dict[str, float]:
    """The largest singular value of each conv/linear weight reshaped to (out, in * k * k). For a conv this
    is the usual approximation, not the operator norm of the convolution itself (Sedghi et al. 2019)."""
    return {n: torch.linalg.matrix_norm(w.double(), ord=2).item() for n, w in _weight_matrices(model)}


def spectral_complexity(model: nn.Module, margin: float) -> dict[str, float]:
    """Fig. 6: prod_i ||W_i||_2 / gamma_margin^2 over the conv and linear weights (BatchNorm's affine maps
    and biases are not counted), summed in log space. Returns ``{"log10", "value"}`` (value may be inf)."""
    if not margin > 0:
        raise ValueError(f"the margin must be positive, got {margin}")
    log10 = sum(math.log10(s) for s in spectral_norms(model).values()) - 2 * math.log10(margin)
    return {"log10": log10, "value": 10 ** log10 if log10 < 308 else math.inf}


def l1_complexity(model: nn.Module, margin: float) -> float:
    """Fig. 6: sum_i ||W_i||_1 / gamma_margin, the entrywise l1 norms of the conv and linear weights."""
    if not margin > 0:
        raise ValueError(f"the margin must be positive, got {margin}")
    return sum(w.double().abs().sum().item() for _, w in _weight_matrices(model)) / margin


def input_hessian_top_eigenvalue(model: nn.Module, x: torch.Tensor, y: torch.Tensor, iters: int = 20, *,
                                 batch_size: int = 128, seed: int = 0, reduction: str = "mean"):
    """Fig. 6 (curvature of the input loss landscape, Moosavi-Dezfooli et al. 2019): the dominant
    eigenvalue of the Hessian of each example's CE loss w.r.t. its own (natural) input, by ``iters`` steps of
    power iteration with Hessian-vector products (double backward), then averaged over the examples
    (``reduction="mean"``; ``"none"`` returns the (B,) values). In eval mode the batch loss is a sum of
    per-example losses, so one Hessian-vector product of the batch gives every example's product at once
    (the Hessian is block diagonal) and all examples are iterated together. The estimate is the Rayleigh
    quotient of the last iterate (for ReLU networks the Hessian is PSD, so this is the top eigenvalue)."""
    x, y = _prepare(model, x, y)
    gen = torch.Generator(device=x.device).manual_seed(seed)
    out = []

    def unit(v):
        return v / v.flatten(1).norm(dim=1).clamp_min(1e-30).view(-1, *([1] * (v.dim() - 1)))

    with eval_mode(model):
        for s in range(0, len(y), batch_size):
            xb = x[s:s + batch_size].clone().requires_grad_(True)
            loss = F.cross_entropy(model(xb), y[s:s + batch_size], reduction="sum")
            (g,) = torch.autograd.grad(loss, xb, create_graph=True)
            v = unit(torch.randn(xb.shape, generator=gen, device=x.device, dtype=x.dtype))
            eig = torch.zeros(len(xb), device=x.device, dtype=x.dtype)
            for _ in range(iters):
                (hv,) = torch.autograd.grad(g, xb, grad_outputs=v, retain_graph=True)
                eig = (v * hv).flatten(1).sum(1)
                v = unit(hv)
            out.append(eig.detach())
    eigs = torch.cat(out)
    return eigs.mean().item() if reduction == "mean" else eigs


def adversarial_loss_mean(model, x, y, *, eps, alpha, steps, norm="linf", batch_size=256, seed=None) -> float:
    """The mean adversarial CE rho(theta) over the examples (PGD on the CE, eval mode)."""
    return adversarial_losses(model, x, y, eps=eps, alpha=alpha, steps=steps, norm=norm, batch_size=batch_size,
                              seed=seed).mean().item()


def weight_flatness(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, alpha: float, steps: int,
                    gamma: float = 0.5, directions: int = 3, seed: int = 0, norm: str = "linf",
                    batch_size: int = 256) -> dict:
    """Fig. 6 (flatness of the weight loss landscape, Wu et al. 2020): the increase of the adversarial loss
    rho(theta) = mean_i max_{x'} CE(f_theta(x'_i), y_i) when the weights move to theta + gamma * d, d a
    filter-normalized Gaussian direction (so gamma is the size relative to each filter's norm), averaged
    over ``directions`` directions drawn from ``seed``: mean_k rho(theta + gamma d_k) - rho(theta). The PGD
    attack is regenerated at each point, from the same random start (``seed``); eval mode; the parameters are
    restored exactly. Larger is sharper. The paper gives no size; ``gamma`` = 0.5 (the middle of the [-1, 1]
    range of Li et al.'s 1-D landscape plots) is a free choice: compare models at the same gamma.
    Returns ``{"flatness", "loss", "perturbed"}``."""
    kw = dict(eps=eps, alpha=alpha, steps=steps, norm=norm, batch_size=batch_size, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    dirs = [filter_normalized_direction(model, gen) for _ in range(directions)]  # all scaled to theta's filters
    base = adversarial_loss_mean(model, x, y, **kw)
    perturbed = []
    with _restored(model) as saved:
        for d in dirs:
            _move(model, saved, d, gamma)
            perturbed.append(adversarial_loss_mean(model, x, y, **kw))
    perturbed = torch.tensor(perturbed, dtype=torch.float64)
    return {"flatness": (perturbed - base).mean().item(), "loss": base, "perturbed": perturbed}


def adversarial_loss_along_direction(model: nn.Module, x: torch.Tensor, y: torch.Tensor, lambdas, *, eps: float,
                                     alpha: float, steps: int, seed: int = 0, norm: str = "linf",
                                     batch_size: int = 256, direction: dict | None = None) -> torch.Tensor:
    """Fig. 6 (the flatness of Wu et al. 2020, seen as a 1-D weight loss landscape, Li et al. 2018): the mean
    adversarial CE rho(theta + lambda d) for each lambda, d a filter-normalized Gaussian direction drawn from
    ``seed`` (or ``direction``). With the same ``seed`` d is the first direction of ``weight_flatness`` and the
    PGD start is the same, so the curve at lambda = 0 is its ``loss`` and at lambda = gamma its first
    ``perturbed`` value. Eval mode; the parameters are restored exactly. Returns (L,) float64."""
    if direction is None:
        direction = filter_normalized_direction(model, torch.Generator().manual_seed(seed))
    kw = {"eps": eps, "alpha": alpha, "steps": steps, "norm": norm, "batch_size": batch_size, "seed": seed}
    out = []
    with _restored(model) as saved:
        for lam in lambdas:
            _move(model, saved, direction, float(lam))
            out.append(adversarial_loss_mean(model, x, y, **kw))
    return torch.tensor(out, dtype=torch.float64)


# Fig. 6 measurement settings of ``complexity_measures`` / ``run_complexity`` (the part of the cache key that
# is not the checkpoint): examples = training examples measured (0 = all of the run's), steps = PGD steps of
# the robust margin and of the adversarial loss (eps and alpha are the run's), hessian_examples /
# curve_examples = the first that many of them (in a seeded random order) for the Hessian and the 1-D curve.
COMPLEXITY_DEFAULTS = {"checkpoint": "final", "examples": 500, "steps": 10, "margin_percentile": 5.0,
                       "robust_margin": True, "hessian_examples": 100, "hessian_iters": 20, "gamma": 0.5,
                       "directions": 3, "curve": [-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0], "curve_examples": 100,
                       "seed": 0}
COMPLEXITY_FILE = "complexity.json"


def complexity_settings(settings: dict | None = None) -> dict:
    """``COMPLEXITY_DEFAULTS`` updated with ``settings``; unknown keys raise ``ValueError``."""
    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(COMPLEXITY_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown complexity setting(s) {', '.join(unknown)}; known: {', '.join(COMPLEXITY_DEFAULTS)}")
    out = {**COMPLEXITY_DEFAULTS, **settings}
    out["curve"] = [float(v) for v in out["curve"]]
    return out


def complexity_key(settings: dict | None = None) -> str:
    """The key of a measurement in a run's ``complexity.json``: its full settings as sorted JSON."""
    return json.dumps(complexity_settings(settings), sort_keys=True)


def complexity_measures(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, alpha: float,
                        steps: int, norm: str = "linf", margin_percentile: float = 5.0, robust_margin: bool = True,
                        hessian_examples: int = 0, hessian_iters: int = 20, gamma: float = 0.5,
                        directions: int = 3, curve=(), curve_examples: int = 0, seed: int = 0,
                        batch_size: int = 256) -> dict:
    """Fig. 6: the four complexity measures of one model, on training examples ``x`` with the labels it was
    trained on ``y`` (random ones for a random-label model):

    * ``margin``: gamma_margin, the ``margin_percentile``-th percentile of f(x)_y - max_{j!=y} f(x)_j, at the
      PGD-``steps`` adversarial examples when ``robust_margin`` (else at x); ``fit`` is the fraction > 0;
    * ``spectral_log10``: log10(prod_i ||W_i||_2 / gamma_margin^2), and ``l1``: sum_i ||W_i||_1 / gamma_margin
      (Neyshabur et al. 2017); both None (undefined) when gamma_margin <= 0, i.e. when more than
      ``margin_percentile``% of the examples are not (robustly) fitted;
    * ``hessian``: the dominant eigenvalue of the input Hessian of the CE, by ``hessian_iters`` power
      iterations, averaged over the first ``hessian_examples`` examples (0 = all; Moosavi-Dezfooli et al. 2019);
    * ``flatness``: mean_k rho(theta + gamma d_k) - rho(theta) over ``directions`` filter-normalized directions
      (Wu et al. 2020), rho the PGD-``steps`` adversarial loss; ``adv_loss`` = rho(theta);
    * ``curve``: rho(theta + lambda d_1) for each lambda of ``curve`` on the first ``curve_examples`` examples
      (the 1-D landscape along the first flatness direction), when ``curve`` is not empty.

    Returns a JSON-serializable dict (plus ``seconds`` per measure). Eval mode throughout; ``seed`` fixes the
    attacks' random starts and the directions; the parameters are left exactly as they were."""
    attack = {"eps": eps, "alpha": alpha, "steps": steps, "norm": norm}
    seconds, t0 = {}, time.time()
    margins = per_example_margins(model, x, y, batch_size=batch_size, seed=seed,
                                  **(attack if robust_margin else {}))
    gamma_m = torch.quantile(margins.double().cpu(), margin_percentile / 100).item()
    out = {"margin": gamma_m, "fit": (margins > 0).double().mean().item(), "spectral_log10": None, "l1": None}
    if gamma_m > 0:
        out["spectral_log10"] = spectral_complexity(model, gamma_m)["log10"]
        out["l1"] = l1_complexity(model, gamma_m)
    seconds["norms"], t0 = time.time() - t0, time.time()
    k = hessian_examples or len(y)
    out["hessian"] = input_hessian_top_eigenvalue(model, x[:k], y[:k], hessian_iters, batch_size=min(batch_size, 128),
                                                  seed=seed)  # double backward: batches of at most 128
    seconds["hessian"], t0 = time.time() - t0, time.time()
    flat = weight_flatness(model, x, y, gamma=gamma, directions=directions, seed=seed, batch_size=batch_size,
                           **attack)
    out.update(flatness=flat["flatness"], adv_loss=flat["loss"], perturbed=flat["perturbed"].tolist())
    seconds["flatness"], t0 = time.time() - t0, time.time()
    if len(curve):
        k = curve_examples or len(y)
        losses = adversarial_loss_along_direction(model, x[:k], y[:k], curve, seed=seed, batch_size=batch_size,
                                                  **attack)
        out["curve"] = {"lambda": [float(v) for v in curve], "loss": losses.tolist()}
        seconds["curve"] = time.time() - t0
    out["seconds"] = seconds
    return out


def complexity_examples(run_dir: str | Path, settings: dict | None = None, device: str | torch.device = "cpu"):
    """The training examples ``run_complexity`` measures a run on: ``settings["examples"]`` class-balanced
    examples (by true label; 0 = all) of the run's own training set, read from ``labels.npz`` (the same images,
    with the labels the run was trained on), in a random order seeded by ``settings["seed"]`` (so the first k
    of them, used for the Hessian and the curve, are a random subset). Returns (uint8 images, labels) on
    ``device``; checks that the data is still the data the run was trained on (``runs.check_data``)."""

    s = complexity_settings(settings)
    run = run_dir if isinstance(run_dir, Run) else Run(run_dir)
    ids, labels, true = run.train_examples()
    pick = balanced_subset(true, min(s["examples"], len(ids)) if s["examples"] else 0, s["seed"])
    pick = pick[torch.randperm(len(pick), generator=torch.Generator().manual_seed(s["seed"]))]
    return run.train_images(ids[pick], device), labels[pick].to(device)


def run_complexity(run_dir: str | Path, settings: dict | None = None, *, device: str = "auto",
                   force: bool = False, log=print) -> dict:
    """Fig. 6 for a run folder: ``complexity_measures`` of checkpoint ``settings["checkpoint"]`` (final.pt by
    default) on the training examples of ``complexity_examples`` (the labels the run was trained on), with the
    run's eps, alpha and threat model. Cached in ``<run_dir>/complexity.json`` under ``complexity_key(settings)``
    (written atomically; other keys are kept, with the checkpoint's sha256), so a notebook executed again reuses
    it and a table can be built from it; ``force`` measures again. See ``COMPLEXITY_DEFAULTS`` for the settings."""

    s = complexity_settings(settings)
    run = Run(run_dir)

    def compute() -> dict:
        cfg, dev = run.config, select_device(device)
        x, y = complexity_examples(run, s, dev)
        model, state = run.load(s["checkpoint"], dev)
        t0 = time.time()
        result = complexity_measures(model, x, y, eps=cfg.eps, alpha=cfg.alpha, steps=s["steps"], norm=cfg.norm,
                                     margin_percentile=s["margin_percentile"], robust_margin=s["robust_margin"],
                                     hessian_examples=s["hessian_examples"], hessian_iters=s["hessian_iters"],
                                     gamma=s["gamma"], directions=s["directions"], curve=s["curve"],
                                     curve_examples=s["curve_examples"], seed=s["seed"],
                                     batch_size=cfg.eval_batch_size)
        result.update(epoch=state.get("epoch"), examples=len(y), device=str(dev), eps=cfg.eps, alpha=cfg.alpha,
                      norm=cfg.norm, data_source=run.record["data_source"],
                      checkpoint_sha256=run.weights_digest(s["checkpoint"]))
        log(f"{run.dir.name}: complexity measures of {s['checkpoint']}.pt on {len(y)} training examples in "
            f"{time.time() - t0:.0f} s")
        return result

    return run.cached(COMPLEXITY_FILE, complexity_key(s), compute, weights=s["checkpoint"], force=force)


# --- Sec. 4.1: robust overfitting -------------------------------------------------------------------------

def adversarial_losses(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, eps: float, alpha: float,
                       steps: int, norm: str = "linf", batch_size: int = 256, seed: int | None = None) -> torch.Tensor:
    """Fig. 7(c), C.2: each example's adversarial loss CE(f(x'), y), x' the PGD attack on the CE (random
    start, eval mode), computed in batches; returned as float32 (N,) on ``images``' device."""
    out = []
    device = _device(model)
    with _seeded(seed, device):
        for s in range(0, len(labels), batch_size):
            x, y = _prepare(model, images[s:s + batch_size], labels[s:s + batch_size])
            xa = _adversarial(model, x, y, "ce", eps=eps, alpha=alpha, steps=steps, norm=norm)
            with torch.no_grad(), eval_mode(model):
                out.append(F.cross_entropy(model(xa).float(), y, reduction="none"))
    return (torch.cat(out) if out else torch.empty(0)).float().to(images.device)


def _dense_ranks(a: np.ndarray) -> np.ndarray:
    return np.unique(a, return_inverse=True)[1].reshape(-1).astype(np.int64)


def _tie_pairs(ranks: np.ndarray) -> int:
    counts = np.bincount(ranks).astype(np.int64)
    return int((counts * (counts - 1) // 2).sum())


def _count_inversions(v: np.ndarray) -> int:
    """#{(i, j): i < j, v_i > v_j} for non-negative ints, by a bottom-up merge sort vectorized over blocks
    (O(N log^2 N) in numpy): at width w, each right block counts the elements of its left block above it."""
    n, total = len(v), 0
    v = v.astype(np.int64)
    m = int(v.max()) + 2 if n else 2  # keys pair * m + value keep the pairs apart
    idx = np.arange(n)
    w = 1
    while w < n:
        pair = idx // (2 * w)
        left = (idx // w) % 2 == 0
        left_keys = pair[left] * m + v[left]  # sorted: blocks are sorted and pairs increase
        rp, rv = pair[~left], v[~left]
        above = (np.searchsorted(left_keys, rp * m + (m - 1), side="right")
                 - np.searchsorted(left_keys, rp * m + rv, side="right"))
        total += int(above.sum())
        v = np.sort(pair * m + v) - pair * m  # merge each pair (pair ids are non-decreasing in idx)
        w *= 2
    return total


def kendall_tau(a, b) -> float:
    """Sec. 4.1, C.1: Kendall's rank correlation tau-b (Kendall 1938/1945, with ties) between two score
    vectors, e.g. the adversarial losses of two models on the same examples (0.85 and 0.78 in the paper).
    O(N log^2 N): sort by (a, b), count the discordant pairs as inversions of b, then
    tau_b = (n0 - n1 - n2 + n3 - 2 D) / sqrt((n0 - n1)(n0 - n2)) with n0 all pairs, n1 / n2 the pairs tied
    in a / b, n3 the pairs tied in both. NaN when fewer than 2 examples or a or b is constant."""
    a = np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a, dtype=np.float64).reshape(-1)
    b = np.asarray(b.detach().cpu() if isinstance(b, torch.Tensor) else b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same length, got {a.shape} and {b.shape}")
    n = len(a)
    if n < 2:
        return float("nan")
    ra, rb = _dense_ranks(a), _dense_ranks(b)
    order = np.lexsort((rb, ra))  # by a, then b: pairs tied in a are never inversions
    discordant = _count_inversions(rb[order])
    n0 = n * (n - 1) // 2
    n1, n2 = _tie_pairs(ra), _tie_pairs(rb)
    n3 = _tie_pairs(_dense_ranks(ra * (int(rb.max()) + 1) + rb))
    if n0 == n1 or n0 == n2:
        return float("nan")
    return float((n0 - n1 - n2 + n3 - 2 * discordant) / math.sqrt(n0 - n1) / math.sqrt(n0 - n2))


def hardest_examples(losses: torch.Tensor, k: int) -> torch.Tensor:
    """Fig. C.3: the indices of the ``k`` examples with the highest adversarial loss, hardest first."""
    return torch.topk(losses, min(k, len(losses))).indices


# Per-example adversarial losses of a run's checkpoint, saved in the run folder so that tables (Kendall's tau,
# memlib.report's "loss_consistency") are built from files: one array per attack setting, plus the example ids
# and the labels they were computed with.
ADV_LOSSES_FILE = "adv_losses.npz"


def adv_losses_key(which: str = "final", *, eps: float, alpha: float, steps: int, norm: str = "linf",
                   seed: int = 0) -> str:
    """The name of one setting in a run's ``adv_losses.npz``: checkpoint, threat model, PGD steps, eps, step
    size and the seed of the random start, e.g. ``final|linf|pgd-10|eps=0.0313725|alpha=0.00784314|seed=0``."""
    return f"{which}|{norm}|pgd-{steps}|eps={eps:.6g}|alpha={alpha:.6g}|seed={seed}"


def read_adversarial_losses(run_dir, key: str) -> dict | None:
    """The kept losses of setting ``key`` of a run, ``{"losses", "train_ids", "labels"}`` as numpy arrays, or
    None when the run has none kept under that key."""
    values, _ = read_store(Path(run_dir) / ADV_LOSSES_FILE)
    if key not in values:
        return None
    return {"losses": values[key], "train_ids": values["train_ids"], "labels": values["labels"]}


def run_adversarial_losses(run_dir, which: str = "final", *, eps: float | None = None, alpha: float | None = None,
                           steps: int = 10, norm: str | None = None, seed: int = 0, batch_size: int | None = None,
                           device: str = "auto", force: bool = False) -> dict:
    """Fig. 7(c), C.2, C.3: the adversarial loss CE(f(x'), y) (``adversarial_losses``: PGD on the CE, random
    start drawn from ``seed``, eval mode) of checkpoint ``which`` of a run on every one of **the run's own
    training examples** (the ids of its ``labels.npz``, without augmentation) with the labels it was trained on.
    eps, alpha and norm default to the run's training attack. The result is saved in the run folder's
    ``adv_losses.npz`` under ``adv_losses_key(...)`` (written atomically, other settings kept) and reused, unless
    ``force``, when it was computed from the same checkpoint file (a digest is saved with it) or the checkpoint
    is absent. Returns ``{"key", "losses" (N,) float32, "train_ids" (N,), "labels" (N,)}``."""


    run = Run(run_dir)
    cfg = run.config
    eps, alpha = cfg.eps if eps is None else eps, cfg.alpha if alpha is None else alpha
    norm = cfg.norm if norm is None else norm
    key = adv_losses_key(which, eps=eps, alpha=alpha, steps=steps, norm=norm, seed=seed)
    ids, labels, _ = run.train_examples()
    path = run.dir / ADV_LOSSES_FILE
    kept, _ = read_store(path)
    if kept and not (np.array_equal(kept.get("train_ids"), ids.numpy())
                     and np.array_equal(kept.get("labels"), labels.numpy())):
        path.unlink()  # kept for other examples (a retrained run): stale

    def compute() -> np.ndarray:
        dev = select_device(device)
        model, _ = run.load(which, dev)
        if not path.is_file():  # the examples the losses are of, once per file
            write_store(path, {"train_ids": ids.numpy(), "labels": labels.numpy()}, {})
        return adversarial_losses(model, run.train_images(ids, dev), labels.to(dev), eps=eps, alpha=alpha,
                                  steps=steps, norm=norm, seed=seed,
                                  batch_size=batch_size or cfg.eval_batch_size).cpu().numpy()

    losses = run.cached(ADV_LOSSES_FILE, key, compute, weights=which, force=force)
    return {"key": key, "losses": losses, "train_ids": ids.numpy(), "labels": labels.numpy()}
