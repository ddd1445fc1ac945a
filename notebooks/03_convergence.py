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
# RunConfig values shared by every run: the Sec. 3 base that 02_random_labels names too (params/bases/<tier>-sec3.yaml:
# no augmentation, weight decay 0), so that the PGD-AT run on random labels of Fig. 5 is the very run of Fig. 2
base: dict = {"from": "smoke-sec3"}
grad_epochs: int = 3  # length of the gradient-analysis runs (Figs. 3, 4b, A.9); weights kept after every epoch
n_examples: int = 16  # training examples whose per-example gradients are measured (Figs. 3, 4, A.9: per group)
lambda_max: float = 0.05  # Fig. 4(a), A.8: lambda in [-lambda_max, lambda_max] (paper 0.05)
lambda_points: int = 5  # number of lambda values (odd, so that 0 is one of them)
project_dim: int = 0  # Fig. 4(b): random projection of per-example gradients to this many dims (0: exact)
noise_a9: float = 0.8  # Fig. A.9: label noise rate of the PGD-AT vs standard training runs
gamma_ramp_epochs: int = 2  # Fig. 5: epochs over which Eq. 6's gamma rises from 0 to 1
variants: dict = {}  # App. A.2: name -> RunConfig changes of PGD-AT on random labels (fast AT, optimizers, eps...)
finding_seeds: list = [0]  # seeds of the gradient-analysis runs on random labels (F4's and F6's intervals)
attempts: dict = {}  # name -> {methods, seeds, changes}: deliberate tries at a finding (memlib.findings)
paper_setting: str = ("Paper: WRN-28-10, all 50,000 CIFAR-10 images, PGD-10, 150 epochs in Fig. 2 (200 in Figs. "
                      "A.6, A.7, A.10; lr 0.1, /10 every 100).")

# %%
# Stop here, in one line, on a parameter this notebook does not have or a value of the wrong type
from memlib.config import check_notebook_parameters
from memlib.present import show_times

check_notebook_parameters(globals(), "03_convergence")
show_times("03_convergence")  # the measured times of its tiers (notebooks/README.md)

# %%
import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from memlib import showcase
from memlib.experiments import declare
from memlib.experiments.convergence import snapshots
from memlib.lectures.convergence import (findings, grad_norms, gradient_change, noise_norms, ratio_samples,
                                         seed_rows, successive_cosines)
from memlib.present import COLORS, LOSS_NAMES, mark_schedule, name, plot_curve, setting as setting_line, show_setting
from memlib.report import Outputs
from memlib.runs import Run
from memlib.train import train_many

out = Outputs(tier, "03_convergence")
# Every run (memlib/experiments/convergence.py), planned first (a bad setting stops before any training), then
# trained `jobs` at a time; Fig. 5's PGD-AT and TRADES runs are 02's (same base values: the same folders)
planned = declare("03_convergence", globals(), out.runs, out.data).configs
setting = setting_line(planned[("fig5", "pgd_at")], tier, f"gradient-analysis runs of {grad_epochs} epochs with "
                       f"weights kept after each", f"per-example gradients of {n_examples} training examples",
                       paper=paper_setting)
show_setting(setting)
results = train_many(list(planned.values()), jobs=jobs, force=force)
run_dirs = {key: r.run_dir for key, r in zip(planned, results)}
for path in run_dirs.values():
    out.add_run(path)
SNAPSHOTS = snapshots(globals())  # 0 (the initialization) to grad_epochs

# %% [markdown]
# ## Fig. 3: gradient magnitude along training on random labels
#
# For each kept epoch we take the model and measure, on the same `n_examples` training images with their random
# labels, the norm of the parameter gradient of each example's loss, averaged over the examples. The images are
# class-balanced and drawn with a fixed seed (`probe` in `memlib/lectures/convergence.py`), never the first
# n: the offline copy is sorted by class, so those would all be airplanes; the choice is part of every cache
# key, so changing it recomputes instead of reusing old numbers.
#
# * PGD-AT model: the adversarial loss $\mathrm{CE}(f(x'), y)$, its clean part $\mathrm{CE}(f(x), y)$ and
#   $R = \mathrm{CE}(f(x'), y) - \mathrm{CE}(f(x), y)$;
# * TRADES model: its clean CE term and its $\beta\,\mathrm{KL}$ term (with TRADES's own attack).
#
# Fig. 3(b) plots the ratios $\|\nabla R\|/\|\nabla \mathrm{CE}\|$ (PGD-AT) and
# $\|\nabla \beta\mathrm{KL}\|/\|\nabla \mathrm{CE}\|$ (TRADES), per example then averaged
# (`analysis.ratios_from_norms`), against the training iteration of the snapshot. **Paper:** the KL term's
# gradient is much smaller than the CE term's in TRADES's first epochs (CE dominates, natural images get
# memorized first) and grows later; PGD-AT's ratio is consistently higher than TRADES's over the first 1,000
# iterations.

# %%
norms = {m: [grad_norms(run_dirs[("grad", m)], e, n_examples) for e in SNAPSHOTS] for m in ("pgd_at", "trades")}
grad_run = Run(run_dirs[("grad", "pgd_at")])  # iterations after each kept epoch: the run's batches per epoch
its = [e * -(-len(grad_run.train_examples()[0]) // grad_run.config.batch_size) for e in SNAPSHOTS]
fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 3.8))
for m, loss, fmt, term in (("pgd_at", "pgd_at", "-o", "adversarial CE"), ("trades", "clean_ce", "-o", "clean CE term"),
                           ("trades", "trades_kl", "--o", "beta*KL term")):
    ax.plot(SNAPSHOTS, [v[loss] for v in norms[m]], fmt, color=COLORS[m], ms=3, label=f"{name(m)}: {term}")
for m, key, what in (("pgd_at", "ratio_r", "|grad R|"), ("trades", "ratio_kl", "|grad beta*KL|")):
    bx.plot(its, [v[key] for v in norms[m]], "-o", color=COLORS[m], ms=3, label=f"{name(m)}: {what} / |grad CE|")
ax.set(xlabel="epoch (0 = initialization)", ylabel="mean per-example gradient norm", yscale="log",
       title="(a) gradient norms on random labels")
bx.set(xlabel="training iteration of the snapshot", ylabel="ratio of gradient norms", title="(b) relative magnitude")
for a in (ax, bx):
    a.legend(fontsize=8)
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
assert lambda_points % 2, "lambda_points must be odd so that lambda = 0 is measured"
init_run = run_dirs[("grad", "pgd_at")]  # its epoch-0 weights: the initialization both random-label runs share
change = {loss: gradient_change(init_run, loss, lambda_max, lambda_points, n_examples)
          for loss in ("pgd_at", "trades", "clean_ce")}
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
for loss, res in change.items():
    for ax, measure in zip(axes, ("l2", "cosine")):
        ax.plot(res["lambda"], res[measure], "-o", ms=3, label=LOSS_NAMES[loss])
axes[0].set(xlabel="lambda", ylabel="l2 distance to the gradient at lambda = 0", title="Fig. 4(a)")
axes[1].set(xlabel="lambda", ylabel="cosine similarity to the gradient at lambda = 0", title="Fig. A.8")
for ax in axes:
    ax.legend(fontsize=8)
fig.tight_layout()
out.figure(fig, "fig4a_A8_gradient_change", "Fig. 4(a), A.8: gradient change along a filter-normalized direction")
plt.show()

# %% [markdown]
# ## Fig. 4(b): cosine similarity of each example's gradient between successive epochs
#
# For every pair of kept epochs $(e-1, e)$ of the random-label runs, each example's gradient of the method's
# own loss (PGD-AT: adversarial CE; TRADES: CE + $\beta$KL) is computed with both weights (the attack
# regenerated for each) and their cosine similarity averaged over the examples. **Paper:** PGD-AT's cosine is
# lower than TRADES's throughout the first 20 epochs: its update direction keeps changing.

# %%
cosines = {m: successive_cosines(run_dirs[("grad", m)], grad_epochs, n_examples, project_dim)
           for m in ("pgd_at", "trades")}
fig, ax = plt.subplots(figsize=(6, 3.6))
for m, values in cosines.items():
    ax.plot(SNAPSHOTS[1:], values, "-o", ms=3, color=COLORS[m], label=name(m))
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
for m in ("mix", "pgd_at", "trades"):
    metrics = Run(run_dirs[("fig5", m)]).metrics
    for metric, ls, kind in (("train_nat_acc", "-", "natural"), ("train_rob_acc", "--", "robust")):
        plot_curve(ax, metrics, metric, label=f"{name(m)} ({kind})", color=COLORS[m], ls=ls, star=False)
mark_schedule(ax, planned[("fig5", "mix")])  # the learning-rate drops
ax.axvline(gamma_ramp_epochs + 1, color=COLORS["mix"], lw=0.8, ls="-.")  # Eq. 6's gamma reaches 1
ax.axhline(10, color="gray", lw=0.5)  # chance
ax.set(xlabel="epoch", ylabel="training accuracy on the random labels (%)", ylim=(0, 102),
       title="Fig. 5: Eq. 6 vs PGD-AT vs TRADES on random labels")
ax.legend(fontsize=7)
fig.tight_layout()
out.figure(fig, "fig5_eq6_random_labels", "Fig. 5: training accuracy on random labels with Eq. 6")
plt.show()
fig5_runs = {name(m): run_dirs[("fig5", m)] for m in ("mix", "pgd_at", "trades")}
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
a9 = {m: noise_norms(run_dirs[("a9", m)], grad_epochs, n_examples) for m in ("pgd_at", "standard")}
fig, ax = plt.subplots(figsize=(6.5, 3.8))
for m, values in a9.items():
    ax.plot(SNAPSHOTS, [v["clean"] for v in values], color=COLORS[m], label=f"{name(m)} (clean)")
    ax.plot(SNAPSHOTS, [v["noisy"] for v in values], color=COLORS[m], ls="--", label=f"{name(m)} (noisy)")
ax.set(xlabel="epoch", ylabel="mean per-example gradient norm", yscale="log",
       title=f"Fig. A.9: clean vs noisy examples, noise rate {noise_a9}")
ax.legend(fontsize=8)
fig.tight_layout()
out.figure(fig, "figA9_noisy_gradients", "Fig. A.9: gradient norms of clean and noisy examples under label noise")
plt.show()

# %% [markdown]
# ## The findings in numbers
#
# Each number below is computed from the measurements above (`findings` in `memlib/lectures/convergence.py`),
# saved in the run folders' `convergence.json` files and read from there (the table is rebuilt from them, never
# from this notebook's text).

# %%
rows = findings(run_dirs, globals())
display(Markdown(out.table("sec32_convergence", "measures", rows=rows,
                           title="Sec. 3.2: gradient magnitude and stability in numbers", setting=setting)))

# %% [markdown]
# **Over seeds.** One seed's gradients can be dominated by one unstable epoch (a spike early in training).
# With several `finding_seeds`, the gradient-analysis runs are repeated with other seeds (other initializations
# and batch orders, the same data) and the numbers that F4 and F6 compare are measured on each;
# `outputs/<tier>/FINDINGS.md` decides them on the interval over seeds.

# %%
if len(finding_seeds) > 1:
    display(Markdown(out.table("sec32_convergence_seeds", "measures", rows=seed_rows(run_dirs, globals()),
                               title="Sec. 3.2 over seeds: the numbers of Fig. 3 and 4(b) per seed", setting=setting)))

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
                    **{label: run_dirs[("a2", label)] for label in variants}}
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
if interactive:
    import ipywidgets as widgets

    if note := showcase.own_models_note("03_convergence", tier):
        display(Markdown(note))

    def show(method, epoch):
        fig, ax = plt.subplots(figsize=(6, 3.4))
        ax.hist(ratio_samples(run_dirs[("grad", method)], method, epoch, n_examples), bins=20, color=COLORS[method])
        ax.set(xlabel="per-example gradient-norm ratio", ylabel="examples", title=f"{name(method)}, epoch {epoch}")
        plt.show()

    widgets.interact(show, method=widgets.Dropdown(options=[(name(m), m) for m in ("pgd_at", "trades")],
                                                   description="run"),
                     epoch=widgets.IntSlider(min=0, max=grad_epochs, value=min(1, grad_epochs), description="epoch"))
else:
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for m, key in (("pgd_at", "ratio_r"), ("trades", "ratio_kl")):
        ax.plot(SNAPSHOTS, [v[key] for v in norms[m]], "-o", ms=3, color=COLORS[m], label=name(m))
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
