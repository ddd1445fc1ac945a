# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Sec. 3.2 — Why PGD-AT fails to converge on random labels: gradient magnitude and stability
#
# In Sec. 3.1 ([02_random_labels.ipynb](02_random_labels.ipynb)) TRADES memorized adversarial examples
# with random labels while PGD-AT did not even fit them. Both methods attack the same network with the same
# budget; what differs is the **loss**. This notebook follows the paper's convergence analysis:
#
# 1. **Gradient magnitude (Fig. 3).** TRADES minimizes $\mathrm{CE}(f_\theta(x), y) + \beta\,
#    \mathrm{KL}(p(x)\,\|\,p(x'))$: early on its clean CE term dominates, so it first memorizes the
#    *natural* images. PGD-AT's loss can be split the same way,
#    $\max_{x'} \mathrm{CE}(f_\theta(x'), y) = \mathrm{CE}(f_\theta(x), y) + R(x, y, \theta)$, and the paper
#    finds $\|\nabla_\theta R\| / \|\nabla_\theta \mathrm{CE}\|$ consistently *higher* than TRADES's
#    $\|\nabla_\theta \beta\mathrm{KL}\| / \|\nabla_\theta \mathrm{CE}\|$: the adversarial part is not negligible.
# 2. **Gradient stability (Theorem 1, Fig. 4, A.8).** If the clean-loss gradient is $K$-Lipschitz in the
#    input, the gradient of the adversarial loss $J(\theta) = \max_{x'} \mathrm{CE}(f_\theta(x'), y)$ obeys
#    $\|\nabla J(\theta_1) - \nabla J(\theta_2)\| \le \|\nabla L(\theta_1) - \nabla L(\theta_2)\| + 2\epsilon K$:
#    even for $\theta_1 \to \theta_2$ it may jump by $2\epsilon K$, because the maximizer $x'$ can jump.
#    We move $\theta$ along a random filter-normalized direction $d$ (Li et al., 2018), regenerate the attack at
#    every $\theta + \lambda d$, and measure how far the gradient moves. During training this shows up as a low
#    cosine similarity between an example's gradients in successive epochs (Fig. 4b).
# 3. **The fix (Eq. 6, Fig. 5).** Train on $(1-\gamma)\,\mathrm{CE}(f_\theta(x), y) + \gamma \max_{x'}
#    \mathrm{CE}(f_\theta(x'), y)$ with $\gamma$ ramped from 0 to 1: the clean term lets PGD-AT converge on
#    random labels.
# 4. **Beyond random labels (App. A.2).** Other training configurations (fast AT, optimizers, schedules,
#    budgets) do not make PGD-AT converge, except a small budget; under 80% label noise the gradients of the
#    noisy examples are as large as those of the clean ones for PGD-AT, not for standard training (Fig. A.9).
#
# All gradients here are w.r.t. **all parameters**, per training example, in eval mode (BatchNorm running
# statistics, so each example's gradient depends on that example only), with the attack regenerated for the
# weights at hand (`memlib.analysis`).

# %% tags=["parameters"]
tier: str = "smoke"  # parameter tier: smoke | quick | paper (params/03_convergence/<tier>.yaml)
interactive: bool = True  # False under papermill: the explorer becomes a static figure
force: bool = False  # retrain runs even if finished ones exist
jobs: int = 1  # runs trained at once in separate processes (2 suits a 2-core CPU; 1 on a single GPU)
# RunConfig values shared by every run: the Sec. 3 setting of 02_random_labels (no augmentation, weight decay 0),
# so that the PGD-AT run on random labels of Fig. 5 is the very run of Fig. 2 (same identity, trained once)
base: dict = dict(model="resnet18", width=0.0625, train_subset=100, test_subset=100, train_eval_subset=100,
                  epochs=3, batch_size=50, steps=2, eval_steps=2, augment=False, weight_decay=0.0, lr=0.1,
                  lr_schedule="constant", eval_batch_size=500)
grad_epochs: int = 3  # length of the gradient-analysis runs (Figs. 3, 4b, A.9); weights kept after every epoch
n_examples: int = 16  # training examples whose per-example gradients are measured (Figs. 3, 4, A.9: per group)
lambda_max: float = 0.05  # Fig. 4(a), A.8: lambda in [-lambda_max, lambda_max] (paper 0.05)
lambda_points: int = 5  # number of lambda values (odd, so that 0 is one of them)
project_dim: int = 0  # Fig. 4(b): random projection of per-example gradients to this many dims (0: exact)
noise_a9: float = 0.8  # Fig. A.9: label noise rate of the PGD-AT vs standard training runs
gamma_ramp_epochs: int = 2  # Fig. 5: epochs over which Eq. 6's gamma rises from 0 to 1
variants: dict = {}  # App. A.2: name -> RunConfig changes of PGD-AT on random labels (fast AT, optimizers, eps...)
paper_setting: str = "Paper: WRN-28-10, all 50,000 CIFAR-10 images, PGD-10, 200 epochs (lr 0.1, /10 every 100)."

# %%
# Stop here, in one line, on a parameter this notebook does not have or a value of the wrong type
from memlib.config import check_notebook_parameters
check_notebook_parameters(globals(), "03_convergence")

# %%
from functools import cache

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Markdown, display

from memlib import analysis
from memlib.config import RunConfig
from memlib.data import prepare_data
from memlib.evaluate import load_weights
from memlib.io import json_cache
from memlib.report import Outputs
from memlib.runs import read_metrics, read_run
from memlib.train import snapshot_path, train_many

out = Outputs(tier, "03_convergence")
setting = (f"This run ({tier} tier): {base['model']} at width {base.get('width', 1.0)}, "
           f"{base.get('train_subset') or 'all'} training images (no augmentation), PGD-{base['steps']} "
           f"(eps 8/255, step 2/255), gradient-analysis runs of {grad_epochs} epochs with weights kept after each, "
           f"per-example gradients of {n_examples} training examples. {paper_setting}")
display(Markdown(f"> {setting}"))
SNAPSHOTS = list(range(grad_epochs + 1))


def config(**changes) -> RunConfig:
    """The RunConfig of one run of this notebook: the tier's base values plus ``changes``."""
    return RunConfig(**out.run_config(**{**base, **changes}))


# Every run, planned first (a bad setting stops before any training), then trained `jobs` at a time.
planned = {
    # Figs. 3, 4, 4(b): PGD-AT and TRADES on random labels, weights kept after every epoch
    ("grad", "pgd_at"): config(method="pgd_at", noise_rate=1.0, epochs=grad_epochs, snapshot_epochs=SNAPSHOTS),
    ("grad", "trades"): config(method="trades", noise_rate=1.0, epochs=grad_epochs, snapshot_epochs=SNAPSHOTS),
    # Fig. A.9: PGD-AT and standard training under 80% label noise
    ("a9", "pgd_at"): config(method="pgd_at", noise_rate=noise_a9, epochs=grad_epochs, snapshot_epochs=SNAPSHOTS),
    ("a9", "standard"): config(method="standard", noise_rate=noise_a9, epochs=grad_epochs,
                               snapshot_epochs=SNAPSHOTS),
    # Fig. 5: Eq. 6 on random labels, against plain PGD-AT and TRADES on random labels (02's runs)
    ("fig5", "mix"): config(method="mix", noise_rate=1.0, gamma_ramp_epochs=gamma_ramp_epochs),
    ("fig5", "pgd_at"): config(method="pgd_at", noise_rate=1.0),
    ("fig5", "trades"): config(method="trades", noise_rate=1.0),
}
for name, changes in variants.items():  # App. A.2
    planned[("a2", name)] = config(method="pgd_at", noise_rate=1.0, **changes)
results = train_many(list(planned.values()), jobs=jobs, force=force)
run_dirs = {key: r.run_dir for key, r in zip(planned, results)}
for path in run_dirs.values():
    out.add_run(path)
NAMES = {"pgd_at": "PGD-AT", "trades": "TRADES", "standard": "Standard training", "mix": "Eq. 6 (PGD-AT + clean CE)"}


@cache
def run_data(run_dir):
    """The run's config and data (training images with the labels it was trained on, noise mask)."""
    cfg, _ = read_run(run_dir)
    data = prepare_data(cfg)
    return cfg, data


def snapshot(run_dir, epoch):
    return load_weights(run_dir, snapshot_path(run_dir, epoch).stem)[0]


# Which training examples are measured: `n_examples` class-balanced ones (by true class) drawn with a fixed
# seed, never the first n (the offline copy is sorted by class: those would all be airplanes). The choice is
# part of every cache key below, so changing it recomputes instead of reusing old numbers.
PICK = f"n={n_examples}|pick=balanced-seed0"


def probe(run_dir):
    """The measured examples of a run: uint8 images and the labels the run was trained on."""
    _, data = run_data(run_dir)
    ids = analysis.probe_examples(data.train_true_labels, n_examples, seed=0)
    return data.train_images[ids], data.train_labels[ids]


# %% [markdown]
# ## Fig. 3: gradient magnitude along training on random labels
#
# For each kept epoch we take the model and measure, on the same `n_examples` training images (class-balanced,
# drawn with a fixed seed: `PICK` above) with their random labels, the norm of the parameter gradient of each
# example's loss, averaged over the examples:
#
# * PGD-AT model: the adversarial loss $\mathrm{CE}(f(x'), y)$, its clean part $\mathrm{CE}(f(x), y)$ and
#   $R = \mathrm{CE}(f(x'), y) - \mathrm{CE}(f(x), y)$;
# * TRADES model: its clean CE term and its $\beta\,\mathrm{KL}$ term (with TRADES's own attack).
#
# Fig. 3(b) plots the ratios $\|\nabla R\|/\|\nabla \mathrm{CE}\|$ (PGD-AT) and
# $\|\nabla \beta\mathrm{KL}\|/\|\nabla \mathrm{CE}\|$ (TRADES), per example then averaged, against the
# training iteration of the snapshot. **Paper:** the KL term's gradient is much smaller than the CE term's
# in TRADES's first epochs (CE dominates, natural images get memorized first) and grows later; PGD-AT's
# ratio is consistently higher than TRADES's over the first 1,000 iterations.

# %%
LOSSES = ("pgd_at", "clean_ce", "r", "trades_kl")


def grad_norms(run_dir, epoch):
    """Mean per-example gradient norms of the four losses at a kept epoch, and the mean per-example ratios."""
    cfg, _ = run_data(run_dir)
    x, y = probe(run_dir)

    def compute():
        model = snapshot(run_dir, epoch)
        norms = analysis.per_example_grad_norms(model, x, y, LOSSES, eps=cfg.eps, alpha=cfg.alpha, steps=cfg.steps,
                                                beta=cfg.trades_beta, seed=epoch)
        ce = norms["clean_ce"].clamp_min(1e-30)
        return {**{k: v.mean().item() for k, v in norms.items()},
                "ratio_r": (norms["r"] / ce).mean().item(), "ratio_kl": (norms["trades_kl"] / ce).mean().item()}

    return json_cache(run_dir / "convergence.json", f"grad_norms|epoch={epoch}|{PICK}", compute)


norms = {m: [grad_norms(run_dirs[("grad", m)], e) for e in SNAPSHOTS] for m in ("pgd_at", "trades")}
iters_per_epoch = -(-(base.get("train_subset") or 50000) // base["batch_size"])
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
ax = axes[0]
ax.plot(SNAPSHOTS, [v["pgd_at"] for v in norms["pgd_at"]], "C0-o", ms=3, label="PGD-AT: adversarial CE")
ax.plot(SNAPSHOTS, [v["clean_ce"] for v in norms["trades"]], "C2-o", ms=3, label="TRADES: clean CE term")
ax.plot(SNAPSHOTS, [v["trades_kl"] for v in norms["trades"]], "C3-o", ms=3, label="TRADES: beta*KL term")
ax.set(xlabel="epoch (0 = initialization)", ylabel="mean per-example gradient norm", yscale="log",
       title="(a) gradient norms on random labels")
ax.legend(fontsize=8)
ax = axes[1]
its = [e * iters_per_epoch for e in SNAPSHOTS]
ax.plot(its, [v["ratio_r"] for v in norms["pgd_at"]], "C0-o", ms=3, label="PGD-AT: |grad R| / |grad CE|")
ax.plot(its, [v["ratio_kl"] for v in norms["trades"]], "C3-o", ms=3, label="TRADES: |grad beta*KL| / |grad CE|")
ax.set(xlabel="training iteration of the snapshot", ylabel="ratio of gradient norms", title="(b) relative magnitude")
ax.legend(fontsize=8)
fig.tight_layout()
out.figure(fig, "fig3_gradient_norms", "Fig. 3: (a) gradient norms along training on random labels; (b) ratios")
plt.show()

# %% [markdown]
# ## Fig. 4(a) and A.8: how abruptly does the gradient change when the weights move a little?
#
# At the **initialization** (the paper's $\theta$; both runs start from the same weights), we draw one
# Gaussian direction $d$, scale each filter of $d$ to the norm of the same filter of $\theta$ (biases and
# BatchNorm get 0), and for each $\lambda$ compute the gradient of the loss at $\theta + \lambda d$ — with the
# attack **regenerated** there (same random start) — then its $\ell_2$ distance (Fig. 4a) and cosine
# similarity (Fig. A.8) to the gradient at $\theta$, per example and averaged. Losses: PGD-AT's adversarial
# CE, TRADES's full loss, and the clean CE of standard training. **Paper:** PGD-AT's curve jumps up
# immediately around $\lambda = 0$ (a kink, as Theorem 1's $2\epsilon K$ allows); TRADES and the clean CE
# change smoothly.

# %%
lambdas = np.linspace(-lambda_max, lambda_max, lambda_points)
assert 0.0 in np.round(lambdas, 12), "lambda_points must be odd so that lambda = 0 is measured"
init_run = run_dirs[("grad", "pgd_at")]


def gradient_change(loss):
    cfg, _ = run_data(init_run)
    x, y = probe(init_run)

    def compute():
        res = analysis.gradient_change_along_direction(
            snapshot(init_run, 0), x, y, lambdas, loss, eps=cfg.eps, alpha=cfg.alpha, steps=cfg.steps, seed=0,
            beta=cfg.trades_beta, per_example=True)
        return {**{k: v.tolist() for k, v in res.items()}, "lambda": [float(v) for v in lambdas]}

    key = f"grad_change|loss={loss}|lmax={lambda_max}|points={lambda_points}|{PICK}"
    return json_cache(init_run / "convergence.json", key, compute)


change = {loss: gradient_change(loss) for loss in ("pgd_at", "trades", "clean_ce")}
LOSS_NAMES = {"pgd_at": "PGD-AT", "trades": "TRADES", "clean_ce": "clean CE"}
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
for loss, res in change.items():
    axes[0].plot(res["lambda"], res["l2"], "-o", ms=3, label=LOSS_NAMES[loss])
    axes[1].plot(res["lambda"], res["cosine"], "-o", ms=3, label=LOSS_NAMES[loss])
axes[0].set(xlabel="lambda", ylabel="l2 distance to the gradient at lambda = 0", title="Fig. 4(a)")
axes[1].set(xlabel="lambda", ylabel="cosine similarity to the gradient at lambda = 0", title="Fig. A.8")
for ax in axes:
    ax.legend(fontsize=8)
fig.tight_layout()
out.figure(fig, "fig4a_A8_gradient_change", "Fig. 4(a), A.8: gradient change along a filter-normalized direction")
plt.show()
# the smallest nonzero |lambda| measured: the "abrupt change" in one number per loss, relative to the gradient's norm
small = min(abs(v) for v in lambdas if abs(v) > 1e-12)
for loss, res in change.items():
    i = [j for j, v in enumerate(res["lambda"]) if abs(abs(v) - small) < 1e-9]
    json_cache(init_run / "convergence.json", f"summary|fig4a_l2|loss={loss}|lambda={small:g}|{PICK}",
               lambda: float(np.mean([res["l2"][j] for j in i])))

# %% [markdown]
# ## Fig. 4(b): cosine similarity of each example's gradient between successive epochs
#
# For every pair of kept epochs $(e-1, e)$ of the random-label runs, each example's gradient of the method's
# own loss (PGD-AT: adversarial CE; TRADES: CE + $\beta$KL) is computed with both weights (the attack
# regenerated for each) and their cosine similarity averaged over the examples. **Paper:** PGD-AT's cosine is
# lower than TRADES's throughout the first 20 epochs: its update direction keeps changing.

# %%
def successive_cosines(method):
    run_dir = run_dirs[("grad", method)]
    cfg, _ = run_data(run_dir)
    x, y = probe(run_dir)

    def grads(epoch):
        return analysis.per_example_gradients(snapshot(run_dir, epoch), x, y, method, eps=cfg.eps, alpha=cfg.alpha,
                                              steps=cfg.steps, beta=cfg.trades_beta, attack_seed=epoch,
                                              project_dim=project_dim or None)

    def compute():
        gs = [grads(e) for e in SNAPSHOTS]
        return [analysis.successive_epoch_cosine(a, b).mean().item() for a, b in zip(gs, gs[1:])]

    key = f"successive_cosine|epochs={grad_epochs}|{PICK}|proj={project_dim}"
    values = json_cache(run_dir / "convergence.json", key, compute)
    json_cache(run_dir / "convergence.json", f"summary|successive_cosine_mean|{key}", lambda: float(np.mean(values)))
    return values


cosines = {m: successive_cosines(m) for m in ("pgd_at", "trades")}
fig, ax = plt.subplots(figsize=(6, 3.6))
for m, values in cosines.items():
    ax.plot(SNAPSHOTS[1:], values, "-o", ms=3, label=NAMES[m])
ax.set(xlabel="epoch e (cosine between epochs e-1 and e)", ylabel="mean cosine similarity", ylim=(None, 1.0),
       title="Fig. 4(b): successive-epoch gradient similarity, random labels")
ax.legend(fontsize=8)
fig.tight_layout()
out.figure(fig, "fig4b_successive_cosine", "Fig. 4(b): cosine similarity of per-example gradients in successive epochs")
plt.show()

# %% [markdown]
# ## Fig. 5: a clean-CE term lets PGD-AT converge on random labels (Eq. 6)
#
# $\gamma$ rises linearly from 0 (epoch 1) to 1 after `gamma_ramp_epochs` epochs
# (`memlib.methods.mix`): training starts as standard training, which memorizes the natural images, and ends
# as plain PGD-AT. **Paper:** with Eq. 6 the natural and robust training accuracies on random labels climb to
# ~100%, where plain PGD-AT stays at chance.

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.8))
for key, color in ((("fig5", "mix"), "C1"), (("fig5", "pgd_at"), "C0"), (("fig5", "trades"), "C2")):
    ms = [m for m in read_metrics(run_dirs[key]) if "train_nat_acc" in m]
    ep = [m["epoch"] for m in ms]
    ax.plot(ep, [m["train_nat_acc"] for m in ms], color=color, label=f"{NAMES[key[1]]} (natural)")
    ax.plot(ep, [m["train_rob_acc"] for m in ms], color=color, ls="--", label=f"{NAMES[key[1]]} (robust)")
ax.axvline(gamma_ramp_epochs + 1, color="gray", lw=0.6, ls=":")
ax.axhline(0.1, color="gray", lw=0.5)
ax.set(xlabel="epoch", ylabel="training accuracy (random labels)", ylim=(0, 1.02),
       title="Fig. 5: Eq. 6 vs PGD-AT vs TRADES on random labels")
ax.legend(fontsize=7)
fig.tight_layout()
out.figure(fig, "fig5_eq6_random_labels", "Fig. 5: training accuracy on random labels with Eq. 6")
plt.show()
fig5_runs = {NAMES[k[1]]: run_dirs[k] for k in (("fig5", "mix"), ("fig5", "pgd_at"), ("fig5", "trades"))}
display(Markdown(out.table("fig5_final_accuracy", "final_accuracy", runs=fig5_runs,
                           title="Fig. 5: final accuracy on random labels (train: on the random labels)",
                           setting=setting)))

# %% [markdown]
# ## Fig. A.9: under 80% label noise, PGD-AT's noisy examples pull as hard as its clean ones
#
# Two runs on 80%-noisy labels, PGD-AT and standard training. At each kept epoch: the mean gradient norm of
# the method's loss over `n_examples` training examples whose label is still correct ("clean") and over
# `n_examples` whose label was corrupted ("noisy"; paper: 100 and 100). **Paper:** for standard training the
# clean examples' gradients are larger at the beginning (the network learns the true pattern first); for
# PGD-AT the two curves overlap, so the noisy examples' unstable gradients overwhelm the useful ones.

# %%
def noise_norms(method):
    run_dir = run_dirs[("a9", method)]
    cfg, data = run_data(run_dir)
    noisy = data.noisy_mask.cpu()
    ids = torch.cat([analysis.probe_examples(data.train_true_labels, n_examples, seed=0, among=m)
                     for m in (~noisy, noisy)])
    x, y, mask = data.train_images[ids], data.train_labels[ids], noisy[ids]
    loss = "pgd_at" if method == "pgd_at" else "clean_ce"

    def at(epoch):
        return json_cache(run_dir / "convergence.json", f"noise_norms|epoch={epoch}|{PICK}",
                          lambda: analysis.grad_norms_by_noise(snapshot(run_dir, epoch), x, y, mask, loss, eps=cfg.eps,
                                                               alpha=cfg.alpha, steps=cfg.steps, seed=epoch))

    return [at(e) for e in SNAPSHOTS]


a9 = {m: noise_norms(m) for m in ("pgd_at", "standard")}
fig, ax = plt.subplots(figsize=(6.5, 3.8))
for m, color in (("pgd_at", "C0"), ("standard", "C1")):
    ax.plot(SNAPSHOTS, [v["clean"] for v in a9[m]], color=color, label=f"{NAMES[m]} (clean)")
    ax.plot(SNAPSHOTS, [v["noisy"] for v in a9[m]], color=color, ls="--", label=f"{NAMES[m]} (noisy)")
ax.set(xlabel="epoch", ylabel="mean per-example gradient norm", yscale="log",
       title=f"Fig. A.9: clean vs noisy examples, noise rate {noise_a9}")
ax.legend(fontsize=8)
fig.tight_layout()
out.figure(fig, "figA9_noisy_gradients", "Fig. A.9: gradient norms of clean and noisy examples under label noise")
plt.show()
for m in a9:  # one number per method: mean over the kept epochs after the first of clean / noisy norm
    json_cache(run_dirs[("a9", m)] / "convergence.json", f"summary|a9_clean_over_noisy|{PICK}",
               lambda m=m: float(np.mean([v["clean"] / v["noisy"] for v in a9[m][1:]])))

# %% [markdown]
# ## The findings in numbers
#
# Each number below is read from the `convergence.json` files the measurements above saved in the run
# folders (the table is rebuilt from them, never from this notebook's text).

# %%
early = max(1, len(SNAPSHOTS) // 2)  # the first half of the kept epochs, for "the initial training stage"
for m, key in (("pgd_at", "ratio_r"), ("trades", "ratio_kl")):
    json_cache(run_dirs[("grad", m)] / "convergence.json", f"summary|fig3b_ratio_first_half|{PICK}",
               lambda m=m, key=key: float(np.mean([v[key] for v in norms[m][:early + 1]])))
json_cache(run_dirs[("grad", "trades")] / "convergence.json", f"summary|fig3a_kl_over_ce_epoch1|{PICK}",
           lambda: norms["trades"][min(1, grad_epochs)]["trades_kl"] / norms["trades"][min(1, grad_epochs)]["clean_ce"])
cos_key = f"successive_cosine|epochs={grad_epochs}|{PICK}|proj={project_dim}"
rows = [
    dict(label="Fig. 3(b): PGD-AT mean ‖grad R‖ / ‖grad CE‖, first half of kept epochs", run=run_dirs[("grad", "pgd_at")],
         key=f"summary|fig3b_ratio_first_half|{PICK}", paper="consistently higher than TRADES's"),
    dict(label="Fig. 3(b): TRADES mean ‖grad bKL‖ / ‖grad CE‖, first half of kept epochs", run=run_dirs[("grad", "trades")],
         key=f"summary|fig3b_ratio_first_half|{PICK}", paper="lower"),
    dict(label="Fig. 3(a): TRADES mean ‖grad bKL‖ / mean ‖grad CE‖ after epoch 1",
         run=run_dirs[("grad", "trades")],
         key=f"summary|fig3a_kl_over_ce_epoch1|{PICK}", paper="much smaller than 1"),
    *[dict(label=f"Fig. 4(a): l2 gradient change at |lambda| = {small:g}, {LOSS_NAMES[loss]}", run=init_run,
           key=f"summary|fig4a_l2|loss={loss}|lambda={small:g}|{PICK}", paper="largest for PGD-AT (abrupt)")
      for loss in ("pgd_at", "trades", "clean_ce")],
    *[dict(label=f"Fig. 4(b): mean successive-epoch cosine, {NAMES[m]}", run=run_dirs[("grad", m)],
           key=f"summary|successive_cosine_mean|{cos_key}", paper="PGD-AT lower than TRADES")
      for m in ("pgd_at", "trades")],
    *[dict(label=f"Fig. A.9: mean clean/noisy gradient-norm ratio, {NAMES[m]}", run=run_dirs[("a9", m)],
           key=f"summary|a9_clean_over_noisy|{PICK}",
           paper="~1 for PGD-AT (curves overlap), > 1 for ST early")
      for m in ("pgd_at", "standard")],
]
for r in rows:
    r["file"] = "convergence.json"
display(Markdown(out.table("sec32_convergence", "measures", rows=rows,
                           title="Sec. 3.2: gradient magnitude and stability in numbers", setting=setting)))

# %% [markdown]
# ## App. A.2: other training configurations on random labels
#
# The paper tried larger models (WRN-34-20, WRN-70-16), fast AT (FGSM with random start, step 10/255),
# Adam and Nesterov, piecewise and cosine schedules, lr 0.1 and 0.01, and smaller budgets: none made PGD-AT
# converge on random labels except eps = 1/255. The `variants` parameter lists them (the paper tier has
# all; the CPU tiers a few); each row is PGD-AT on random labels with that change.

# %%
if variants:
    variant_runs = {"PGD-AT (as above)": run_dirs[("fig5", "pgd_at")],
                    **{name: run_dirs[("a2", name)] for name in variants}}
    display(Markdown(out.table("appA2_training_configs", "final_accuracy", runs=variant_runs,
                               title="App. A.2: PGD-AT on random labels under other training configurations",
                               setting=setting)))

# %% [markdown]
# ## Explorer: the gradient at any kept epoch
#
# Pick a random-label run and an epoch: the histogram of the per-example gradient-norm ratio
# ($\|\nabla R\|/\|\nabla\mathrm{CE}\|$ for PGD-AT, $\|\nabla\beta\mathrm{KL}\|/\|\nabla\mathrm{CE}\|$ for TRADES)
# over the examples. (Headless: all kept epochs of both runs as lines.)


# %%
def ratio_samples(method, epoch):
    run_dir = run_dirs[("grad", method)]
    cfg, _ = run_data(run_dir)
    x, y = probe(run_dir)
    n = analysis.per_example_grad_norms(snapshot(run_dir, epoch), x, y, ("clean_ce", "r", "trades_kl"), eps=cfg.eps,
                                        alpha=cfg.alpha, steps=cfg.steps, beta=cfg.trades_beta, seed=epoch)
    top = n["r"] if method == "pgd_at" else n["trades_kl"]
    return (top / n["clean_ce"].clamp_min(1e-30)).cpu().numpy()


if interactive:
    import ipywidgets as widgets

    def show(method, epoch):
        fig, ax = plt.subplots(figsize=(6, 3.4))
        ax.hist(ratio_samples(method, epoch), bins=20, color="C0" if method == "pgd_at" else "C3")
        ax.set(xlabel="per-example gradient-norm ratio", ylabel="examples", title=f"{NAMES[method]}, epoch {epoch}")
        plt.show()

    widgets.interact(show, method=widgets.Dropdown(options=["pgd_at", "trades"], description="run"),
                     epoch=widgets.IntSlider(min=0, max=grad_epochs, value=min(1, grad_epochs), description="epoch"))
else:
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for m, key, color in (("pgd_at", "ratio_r", "C0"), ("trades", "ratio_kl", "C3")):
        ax.plot(SNAPSHOTS, [v[key] for v in norms[m]], "-o", ms=3, color=color, label=NAMES[m])
    ax.set(xlabel="epoch", ylabel="mean per-example ratio", title="gradient-norm ratio at every kept epoch")
    ax.legend(fontsize=8)
    plt.show()

# %% [markdown]
# ## What this shows
#
# Read the table above against the paper: the quick tier's executed notebook and
# `outputs/quick/FINDINGS.md` state, for F4 (magnitude), F5 (abrupt change), F6 (successive-epoch cosine)
# and F7 (Eq. 6), whether the finding shows at this scale. Note the scale: `n_examples` per-example
# gradients of a small network over a few epochs, against the paper's WRN-28-10 over the whole training set.
