# ---
# jupyter:
#   jupytext:
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
# # Sec. 4.1 — Robust overfitting: memorizing the one-hot labels of hard adversarial examples
#
# **Robust overfitting** (Rice et al., 2020). In standard training on CIFAR-10, training for longer rarely
# costs test accuracy. In adversarial training (AT) it does: with the usual piecewise-constant learning rate,
# the robust *test* accuracy jumps at the first learning-rate decay and then *declines* for the rest of
# training, while the robust *training* accuracy keeps climbing towards 100%. For PGD-AT on CIFAR-10 with a
# ResNet-18 the paper measures 52.64% PGD-10 accuracy at the best epoch and 44.92% at the end of 200 epochs
# (Table 1): training longer threw away almost 8 points of robustness. Rice et al. also found that the
# classical remedies of overfitting ($\ell_1$/$\ell_2$ penalties, data augmentation) do not beat simply
# stopping early. What they did not give is a reason. This notebook reproduces the paper's answer.
#
# **The hypothesis.** PGD-AT (Eq. 1) trains every adversarial example towards the one-hot label of its clean
# example,
#
# $$\min_\theta \frac1n\sum_{i=1}^n \max_{x'_i\in S(x_i)} L\big(f_\theta(x'_i), y_i\big), \qquad
#   S(x_i) = \{x' : \|x'-x_i\|_\infty \le \epsilon\},$$
#
# and TRADES does the same through its clean cross-entropy term. Some training images lie close to the
# decision boundary (an odd viewpoint, a cat that looks like a dog, a cluttered background). The eps-ball
# around such an image reaches across the boundary, and the worst-case point $x'_i$ in it may genuinely look
# like another class; a sensible target for it would be a *low-confidence* prediction, not a one-hot $y_i$.
# For these "hard" adversarial examples **the one-hot label is effectively a noisy label**. (The paper stresses
# that the data set's labels are right; it is the one-hot target for the perturbed point that is wrong.)
# Sec. 3 showed that AT can memorize even random labels. The hypothesis: after the learning-rate decay the
# network becomes precise enough to memorize the noisy one-hot labels of the hard examples, and, as with
# memorized label noise in standard training, this costs generalization: **robust overfitting is the
# memorization of one-hot labels**.
#
# **Two predictions, two experiments.**
#
# 1. *Small budgets should not overfit.* With a small eps the ball rarely crosses the decision boundary and the
#    one-hot labels are appropriate, so memorizing them is harmless. Fig. 7(b) (PGD-AT) and Fig. C.1 (TRADES):
#    robust test accuracy under several budgets. The paper: **no robust overfitting at eps = 1/255**, clear
#    robust overfitting at 8/255.
# 2. *Hardness should belong to the data, not to the network.* If some examples are hard because of what they
#    are, two networks trained independently should agree on which ones they are. Fig. 7(c): the adversarial
#    loss of every training example under two PGD-AT networks with different random seeds; Kendall's rank
#    correlation over all 50,000 training examples is **0.85**. Fig. C.2: the same for two architectures
#    (WRN-28-10 and ResNet-18): **0.78**. Fig. C.3 shows the hardest examples: hard to recognize, some with
#    labels that look wrong.
#
# **Kendall's tau** compares two rankings of the same items. Over all $\binom n2$ pairs of examples, a pair is
# *concordant* if both models order the two examples' losses the same way and *discordant* otherwise;
# $\tau = (\#\text{concordant} - \#\text{discordant}) / \binom n2$ (the $\tau_b$ variant corrects for ties).
# $\tau = 0$ for unrelated rankings, 1 for identical ones; $\tau = 0.85$ means that for a random pair of
# training examples the two networks agree on which one is harder $(1+\tau)/2 \approx 92\%$ of the time.
#
# The notebook trains the runs first, then draws Fig. 7(a), 7(b) + C.1, 7(c) + C.2 and C.3 from their files.

# %% tags=["parameters"]
tier: str = "smoke"  # parameter tier: smoke | quick | paper (params/05_robust_overfitting/<tier>.yaml)
interactive: bool = True  # False under papermill: the explorer becomes a static figure
force: bool = False  # retrain runs (and recompute their adversarial losses) even if finished ones exist
jobs: int = 1  # runs trained at once in separate processes (2 suits a 2-core CPU; 1 on a single GPU)
# RunConfig values shared by every run (the Sec. 5 setting: ResNet-18, SGD lr 0.1 /10 at epochs 100 and 150 of
# 200, weight decay 5e-4, augmentation, PGD-10), here shrunk to seconds. The TE keys do nothing for PGD-AT and
# TRADES; they are 06_mitigation's, so that the 8/255 runs are shared with that notebook.
base: dict = dict(model="resnet18", width=0.0625, train_subset=100, test_subset=100, train_eval_subset=100,
                  epochs=3, batch_size=50, steps=2, eval_steps=2, augment=True, weight_decay=5e-4, lr=0.1,
                  lr_schedule="multistep", lr_milestones=[2], te_weight=300.0, te_start=2, te_end=3,
                  te_momentum=0.9, eval_batch_size=500)
methods: list = ["pgd_at", "trades"]  # Fig. 7(b) (PGD-AT) and Fig. C.1 (TRADES)
eps_list: list = [1, 8]  # budgets k of the sweep, eps = k/255, attack step eps/4 (8/255 -> 2/255, the paper's)
seeds: list = [0, 1]  # Fig. 7(c): two PGD-AT runs differing only in the seed (the first sorts the plot)
architectures: list = ["resnet18", "preact_resnet18"]  # Fig. C.2: two PGD-AT runs differing only in the model
loss_checkpoint: str = "final"  # checkpoint whose adversarial losses are compared: final | best
loss_eps: int = 8  # budget of the loss's PGD attack, in units of 1/255
loss_alpha: float = 2  # its step size, in units of 1/255
loss_steps: int = 2  # its number of steps (the paper's training attack: PGD-10)
loss_seed: int = 0  # seed of its random start
sorted_examples: int = 500  # examples drawn in Fig. 7(c) / C.2 (the paper: 500 of 50,000); all if fewer
gallery_size: int = 8  # hardest training examples shown in Fig. C.3
paper_setting: str = ("Paper (Sec. 4.1, App. C.1): ResNet-18 (Fig. C.2: WRN-28-10 vs ResNet-18), all 50,000 "
                      "CIFAR-10 training images with augmentation, PGD-10 (step 2/255 at 8/255), 200 epochs, lr "
                      "0.1 /10 after epochs 100 and 150, robust accuracy on the whole test set, adversarial "
                      "losses of all training images.")

# %%
# Stop here, in one line, on a parameter this notebook does not have or a value of the wrong type
from memlib.config import check_notebook_parameters
check_notebook_parameters(globals(), "05_robust_overfitting")

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from IPython.display import Markdown, display
from matplotlib.ticker import MaxNLocator

from memlib.analysis import hardest_examples, kendall_tau, run_adversarial_losses
from memlib.attacks import attack
from memlib.config import RunConfig
from memlib.data import CIFAR10_CLASSES, load_split
from memlib.evaluate import load_weights
from memlib.paper import KENDALL_TAU, TABLE1
from memlib.report import Outputs
from memlib.runs import read_metrics
from memlib.train import lr_at, train_many

out = Outputs(tier, "05_robust_overfitting")
NAMES = {"pgd_at": "PGD-AT", "trades": "TRADES"}
if len(seeds) != 2 or len(architectures) != 2:
    raise ValueError(f"seeds and architectures each name the two runs compared; got {seeds} and {architectures}")


def config(**changes) -> RunConfig:
    """The RunConfig of one run of this notebook: the tier's base values plus ``changes``."""
    return RunConfig(**out.run_config(**{**base, **changes}))


# Every run, planned (and so checked) before anything trains. Several keys can name the same run: the PGD-AT
# run at the base eps is Fig. 7(a), the 8/255 point of the sweep, the first seed and the first architecture.
planned = {("fig7a",): config(method="pgd_at")}
for m in methods:
    for e in eps_list:
        planned[("eps", m, e)] = config(method=m, eps=e / 255, alpha=e / 4 / 255)
for s in seeds:
    planned[("seed", s)] = config(method="pgd_at", seed=s)
for a in architectures:
    planned[("arch", a)] = config(method="pgd_at", model=a)

c = planned[("fig7a",)]
DATA_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "svhn": "SVHN"}
schedule = (f"lr {c.lr} /{round(1 / c.lr_decay)} after epoch{'s' * (len(c.lr_milestones) > 1)} "
            f"{', '.join(map(str, c.lr_milestones))}" if c.lr_schedule == "multistep" else f"lr {c.lr} {c.lr_schedule}")
setting = (f"This run ({tier} tier): {DATA_NAMES[c.dataset]}, {c.model} at width {c.width}, "
           f"{c.train_subset or 'all'} training images ({'with' if c.augment else 'no'} augmentation), {c.epochs} "
           f"epochs, {schedule}, PGD-{c.steps} (step eps/4) in training, robust test accuracy by PGD-{c.eval_steps} "
           f"on {c.test_subset or 'all'} test images every {c.eval_every} epoch(s); adversarial losses by "
           f"PGD-{loss_steps} at {loss_eps}/255 (step {loss_alpha:g}/255) on the {loss_checkpoint} checkpoints. "
           f"{paper_setting}")
display(Markdown(f"> {setting}"))

# %% [markdown]
# ## Training the runs
#
# * the eps sweep: each method of `methods` at each budget of `eps_list` (eps = k/255, PGD step eps/4, so
#   8/255 uses the paper's 2/255); everything else as in the base setting;
# * the second seed of PGD-AT (same data, same subset of it; only the initialization, the shuffling, the
#   augmentation and the attacks' random starts change: `seed` is kept apart from `data_seed`);
# * PGD-AT with the second architecture.
#
# Each run logs natural and PGD robust accuracy on a fixed test subset and a fixed subset of the training
# set (without augmentation) every `eval_every` epochs, into its `metrics.jsonl`; every curve and table below
# is read from those files. Finished runs are reused, so executing the notebook again is fast.

# %%
results = train_many(list(planned.values()), jobs=jobs, force=force)  # each distinct run once
run_dirs = {key: r.run_dir for key, r in zip(planned, results)}
for path in dict.fromkeys(run_dirs.values()):
    out.add_run(path)
# per-epoch metrics; with `eval_every` > 1 only every k-th epoch (and the last) has accuracies
curves = {key: [m for m in read_metrics(path) if "test_rob_acc" in m] for key, path in run_dirs.items()}


def best_epoch(rows):
    """The epoch of `best.pt`: highest robust test accuracy, ties by natural accuracy, the first one wins."""
    return max(rows, key=lambda m: (m["test_rob_acc"], m["test_nat_acc"]))["epoch"] if rows else None


def lr_decays(cfg):
    """Epochs whose learning rate is lower than the previous epoch's."""
    return [e for e in range(2, cfg.epochs + 1) if lr_at(cfg, e) < lr_at(cfg, e - 1)]


def mark_decays(ax, cfg):
    for e in lr_decays(cfg):
        ax.axvline(e - 0.5, color="gray", ls=":", lw=1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


# %% [markdown]
# ## Fig. 7(a): robust overfitting in PGD-AT
#
# Natural and robust (PGD) accuracy on the training set and on the test set after each evaluated epoch, for
# PGD-AT at eps = 8/255. Dotted vertical lines: learning-rate decays. Star: the best epoch (highest robust
# test accuracy; the checkpoint `best.pt` and early stopping would keep).
#
# **How to read it.** Before the first decay all four curves rise together, the training ones a little above
# the test ones. Robust overfitting is what happens after it: the *robust training* accuracy (dashed blue)
# shoots up towards 100% (the network fits ever more training points, the hard ones included, within their
# whole eps-ball), while the *robust test* accuracy (dashed orange) peaks and then slides down. The growing
# vertical distance between the two dashed curves is memorization seen from outside. Natural test accuracy
# usually does not fall with it (in Table 1 PGD-AT's final natural accuracy, 84.82%, is even above the best
# checkpoint's, 83.75%): robust overfitting is a loss of *robustness* specifically.

# %%
STYLES = {"train_nat_acc": ("tab:blue", "-", "train natural"), "train_rob_acc": ("tab:blue", "--", "train robust"),
          "test_nat_acc": ("tab:orange", "-", "test natural"), "test_rob_acc": ("tab:orange", "--", "test robust")}
rows7a = curves[("fig7a",)]
fig, ax = plt.subplots(figsize=(6.5, 3.8))
ep = [m["epoch"] for m in rows7a]
for key, (color, ls, label) in STYLES.items():
    ax.plot(ep, [100 * m[key] for m in rows7a], color=color, ls=ls, marker="o" if len(ep) <= 25 else None, ms=3,
            label=label)
b7a = best_epoch(rows7a)
ax.plot([b7a], [100 * rows7a[ep.index(b7a)]["test_rob_acc"]], "*", color="tab:orange", ms=13, mec="k", mew=0.6,
        label="best epoch")
mark_decays(ax, c)
ax.set(xlabel="epoch", ylabel="accuracy (%)", title=f"PGD-AT, eps 8/255 ({tier} tier)", ylim=(0, 102))
ax.legend(fontsize=8, ncol=2)
fig.tight_layout()
out.figure(fig, "fig7a_pgd_at_curves",
           f"Fig. 7(a): PGD-AT natural and PGD-{c.eval_steps} robust accuracy on training and test data per epoch; "
           f"dotted: lr decays, star: best epoch. {setting}")
plt.show()

best7a, final7a = rows7a[ep.index(b7a)], rows7a[-1]
paper7a = TABLE1["cifar10"]["pgd_at"]["pgd-10"]
display(Markdown(
    f"**Best vs final robust test accuracy (PGD-AT, 8/255), this run:** {100 * best7a['test_rob_acc']:.1f}% at epoch "
    f"{b7a} vs {100 * final7a['test_rob_acc']:.1f}% at epoch {final7a['epoch']}: best − final = "
    f"**{100 * (best7a['test_rob_acc'] - final7a['test_rob_acc']):+.1f}** points; robust training accuracy at the "
    f"end {100 * final7a['train_rob_acc']:.1f}%.  \n"
    f"**Paper (Table 1, ResNet-18, PGD-10 on the whole test set):** {paper7a['best']:.2f}% → {paper7a['final']:.2f}%, "
    f"best − final = **{paper7a['diff']:+.2f}**."))

# %% [markdown]
# **What to expect from a small tier.** Robust overfitting needs a network that can fit its training set
# after the decay. The `smoke` tier (3 epochs, 100 images) only checks that the notebook runs. The `quick`
# tier (500 images without augmentation, 40 epochs, decays after 10 and 30) is sized so that it does fit
# them; its robust test accuracy is measured on 500 images, so single epochs jitter by about ±2 points (the
# standard error of a 15% accuracy on 500 images is 1.6 points): judge the trend, not one epoch. Note also
# that the best epoch of a noisy curve is partly chosen by that noise, which inflates "best" a little.
#
# ## Fig. 7(b) and C.1: robust overfitting depends on the budget
#
# Top row: robust test accuracy per epoch of PGD-AT (Fig. 7b) and TRADES (Fig. C.1), one curve per budget;
# each run is attacked at its *own* eps, so the curves of small budgets lie higher (a weaker attack is easier
# to resist). Compare their *shapes* after the first decay (dotted line), not their heights: robust
# overfitting is a decline from a peak. Bottom row: robust training accuracy of the same runs, the
# memorization side.
#
# **What the paper found.** At 8/255 the robust test accuracy of PGD-AT drops by several points after the
# first decay (7.72 points by the end in Table 1), TRADES less (3.07). At **1/255 there is no robust
# overfitting**: the curve stays at its level after the decay. The paper's reading: within a small ball the
# one-hot labels are appropriate targets, and only at a larger budget, where the one-hot labels of the hard
# adversarial examples become noisy, does fitting them cost test robustness. The bottom row lets you check
# the other half of that story in our runs: a network fits its training set at least as easily with a small
# ball, so if it does so at 1/255 without losing test robustness, memorization by itself is not the problem;
# memorizing *wrong* targets is.

# %%
fig, axes = plt.subplots(2, len(methods), figsize=(5.2 * len(methods), 6.4), squeeze=False, sharex=True)
colors = {e: plt.cm.viridis(i / max(1, len(eps_list) - 1) * 0.85) for i, e in enumerate(sorted(eps_list))}
for j, m in enumerate(methods):
    for e in sorted(eps_list):
        rows = curves[("eps", m, e)]
        ep_ = [r["epoch"] for r in rows]
        for i, key in enumerate(("test_rob_acc", "train_rob_acc")):
            axes[i][j].plot(ep_, [100 * r[key] for r in rows], color=colors[e], label=f"eps {e}/255")
        b = best_epoch(rows)
        axes[0][j].plot([b], [100 * rows[ep_.index(b)]["test_rob_acc"]], "*", color=colors[e], ms=10, mec="k", mew=0.5)
    axes[0][j].set(title=f"{NAMES.get(m, m)}: robust test accuracy", ylabel=f"PGD-{c.eval_steps} accuracy (%)")
    axes[1][j].set(title=f"{NAMES.get(m, m)}: robust training accuracy", xlabel="epoch", ylabel="accuracy (%)")
    for i in range(2):
        mark_decays(axes[i][j], c)
axes[0][0].legend(fontsize=8)
fig.tight_layout()
out.figure(fig, "fig7b_C1_eps_sweep",
           f"Fig. 7(b) (PGD-AT) and C.1 (TRADES): robust test accuracy (top) and robust training accuracy (bottom) "
           f"per epoch under several budgets eps, each attacked at its own eps; stars: best epochs. {setting}")
plt.show()

sweep_runs = {f"{NAMES.get(m, m)}, eps {e}/255": run_dirs[("eps", m, e)] for m in methods for e in eps_list}
display(Markdown(out.table("fig7b_C1_robust_overfitting_by_eps", "robust_overfitting", runs=sweep_runs,
                           title="Fig. 7(b) and C.1: best, final and best-minus-final robust test accuracy by "
                                 "method and budget", setting=setting)))


def gap(rows):
    """best - final robust test accuracy in points."""
    b = best_epoch(rows)
    return 100 * (next(r for r in rows if r["epoch"] == b)["test_rob_acc"] - rows[-1]["test_rob_acc"])


display(Markdown("**Best − final robust test accuracy, this run:** " + "; ".join(
    f"{NAMES.get(m, m)}: " + ", ".join(f"{e}/255 {gap(curves[('eps', m, e)]):+.1f}" for e in sorted(eps_list))
    for m in methods) + ". **Paper:** no overfitting at 1/255 (Fig. 7b, C.1); at 8/255 "
    f"{TABLE1['cifar10']['pgd_at']['pgd-10']['diff']:+.2f} (PGD-AT) and {TABLE1['cifar10']['trades']['pgd-10']['diff']:+.2f} "
    "(TRADES), Table 1."))

# %% [markdown]
# **How to read the table.** *Best* is the highest robust test accuracy over the evaluated epochs (with the
# epoch it occurred in), *final* the accuracy after the last epoch, *best − final* what training to the end
# cost. In parentheses: the paper's Table 1 for the 8/255 ResNet-18 runs (Fig. 7b and C.1 themselves are
# curves without published numbers). *Final train robust* shows how much of the training set the network fits
# within the eps-ball at the end: compare it across budgets; a network that fits its training set at 1/255
# without losing test robustness is memorizing harmlessly.
#
# A caution for a small tier: on a few hundred test images best − final carries a sampling error of about
# 2 points, and "best" is the maximum of a noisy curve (biased upward), so a gap of 1-2 points is not by
# itself robust overfitting. A decline that builds up over many epochs after the decay is.
#
# ## Fig. 7(c) and C.2: the hard examples are the same for different networks
#
# The **adversarial loss** of a training example is the cross-entropy of the network on its PGD adversarial
# example, $\max_{x'_i\in S(x_i)} L(f_\theta(x'_i), y_i)$ as PGD finds it (memlib: `run_adversarial_losses`,
# PGD on the CE from a seeded random start, model in eval mode, the final checkpoint, every one of the run's
# own training examples with the labels it was trained on). A high loss means the network does not (or
# cannot) hold the label $y_i$ over the whole eps-ball: a hard example. The losses are saved in each run's
# folder (`adv_losses.npz`, keyed by the attack's settings), and the table below computes Kendall's tau from
# those files.
#
# **How to read the plots.** The x-axis is `sorted_examples` training examples (all of them when there are
# fewer), sorted by the first network's loss, so its curve (the line) rises from left to right. The dots are
# the second network's losses on the same examples. If hardness were an accident of one training run, the
# dots would form a flat band, unrelated to the line; if it belongs to the examples, the dots climb with the
# line. Left: two seeds of PGD-AT (Fig. 7c, paper tau 0.85). Right: two architectures (Fig. C.2, paper: WRN-28-10
# and ResNet-18, tau 0.78).

# %%
loss_attack = {"eps": loss_eps / 255, "alpha": loss_alpha / 255, "steps": loss_steps, "seed": loss_seed}
pairs = {"seeds": [run_dirs[("seed", s)] for s in seeds],
         "architectures": [run_dirs[("arch", a)] for a in architectures]}
pair_labels = {"seeds": [f"seed {s}" for s in seeds], "architectures": list(architectures)}
losses = {}  # run folder -> the saved result of run_adversarial_losses
for run_dir in dict.fromkeys(d for pair in pairs.values() for d in pair):
    losses[run_dir] = run_adversarial_losses(run_dir, loss_checkpoint, force=force, **loss_attack)
loss_key = next(iter(losses.values()))["key"]

fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
for ax, (name, (run_a, run_b)) in zip(axes, pairs.items()):
    la, lb = losses[run_a]["losses"], losses[run_b]["losses"]
    n = len(la)
    shown = (np.random.default_rng(0).choice(n, sorted_examples, replace=False) if n > sorted_examples
             else np.arange(n))
    order = shown[np.argsort(la[shown], kind="stable")]
    xs = np.arange(len(order))
    label_a, label_b = pair_labels[name]
    ax.scatter(xs, lb[order], s=5, color="tab:orange", alpha=0.6, label=f"second: {label_b}")
    ax.plot(xs, la[order], color="tab:blue", lw=1.5, label=f"first: {label_a}")
    ax.set(xlabel=f"training example (sorted by the first model's loss; {len(order)} of {n})",
           ylabel="adversarial loss (CE)",
           title=f"{'Fig. 7(c)' if name == 'seeds' else 'Fig. C.2'}: {label_a} vs {label_b}\n"
                 f"Kendall tau {kendall_tau(la, lb):.2f} over all {n} (paper {KENDALL_TAU[name]:.2f})")
    ax.legend(fontsize=8, loc="upper left")
fig.tight_layout()
out.figure(fig, "fig7c_C2_adversarial_losses",
           f"Fig. 7(c) (two seeds) and C.2 (two architectures): adversarial loss of training examples under two "
           f"PGD-AT models, sorted by the first model's loss; Kendall's tau over all training examples. {setting}")
plt.show()

display(Markdown(out.table(
    "fig7c_C2_loss_consistency", "loss_consistency", pairs=pairs, key=loss_key,
    title="Fig. 7(c) and C.2: rank agreement of the adversarial losses of two PGD-AT models", setting=setting)))

# %% [markdown]
# **What the paper found, and what to look for.** With two seeds the dots follow the line closely and
# Kendall's tau over all 50,000 training examples is 0.85; across WRN-28-10 and ResNet-18 it is 0.78, a little
# lower (as one would expect of networks that differ in more than their random seed) but far from 0. The paper
# concludes that the hard examples, whose one-hot labels are noisy for AT, are *intrinsic to the data set*.
# The *hardest-10% overlap* column asks the same question about the top of the ranking, the examples that
# matter for robust overfitting: which fraction of one model's 10% hardest examples are also among the other's
# (10% would be chance).
#
# Reading our numbers: on a small training set that the networks have largely memorized by the final epoch,
# many examples have losses near zero, and the order among these easy examples is mostly noise, which pulls
# tau down; the hard end of the ranking is the more informative part. With $n$ examples the sampling error
# of tau is roughly $\sqrt{2(2n+5)/(9n(n-1))}$ for unrelated rankings (0.03 for $n = 500$), so a tau of
# 0.3 or more on 500 examples is far from chance.
#
# ## Fig. C.3: the hardest training examples
#
# The `gallery_size` training examples with the highest adversarial loss under the first PGD-AT model (the
# first seed's), hardest first. Top row: the natural image, its label and its adversarial loss (the one
# the ranking used). Bottom row: an adversarial example (PGD with the same settings, regenerated here, so
# its random start differs from the ranking's) and what the network predicts for it, with its confidence.
# The paper's Fig. C.3 shows images that are "difficult to recognize and their labels may be wrong": exactly
# the examples for which a confident one-hot target over the whole eps-ball is too much to ask.

# %%
first_run = run_dirs[("seed", seeds[0])]
first_cfg = planned[("seed", seeds[0])]
class_names = CIFAR10_CLASSES if first_cfg.dataset == "cifar10" else None
saved = losses[first_run]
train_images = load_split(first_cfg, train=True).images[torch.from_numpy(saved["train_ids"])]
train_labels = torch.from_numpy(saved["labels"])
first_losses = torch.from_numpy(saved["losses"])
ranking = hardest_examples(first_losses, len(first_losses))  # every example, hardest first
gallery_model, _ = load_weights(first_run, loss_checkpoint, "cpu")


def class_name(k: int) -> str:
    return class_names[k] if class_names else str(k)


def adversarial_view(indices):
    """Natural images, adversarial images (as the loss's attack makes them) and the model's softmax on both."""
    idx = torch.as_tensor(indices)
    x = train_images[idx].float() / 255
    y = train_labels[idx]
    with torch.random.fork_rng():
        torch.manual_seed(loss_seed)
        x_adv = attack(gallery_model, x, y, f"pgd-{loss_steps}", eps=loss_eps / 255, alpha=loss_alpha / 255)
    with torch.no_grad():
        p_nat, p_adv = F.softmax(gallery_model(x), 1), F.softmax(gallery_model(x_adv), 1)
    return x, x_adv, y, p_nat, p_adv


def draw_examples(axes_nat, axes_adv, ranks):
    """Column j: the example at rank ranks[j] (0 = hardest), natural on top, adversarial below."""
    x, x_adv, y, _, p_adv = adversarial_view(ranking[list(ranks)])
    for j, r in enumerate(ranks):
        i = int(ranking[r])
        a_nat, a_adv = axes_nat[j], axes_adv[j]
        a_nat.imshow(x[j].permute(1, 2, 0).numpy())
        a_nat.set_title(f"#{r + 1}: {class_name(int(y[j]))}\nloss {first_losses[i]:.2f}", fontsize=8)
        a_adv.imshow(x_adv[j].permute(1, 2, 0).clamp(0, 1).numpy())
        k = int(p_adv[j].argmax())
        a_adv.set_title(f"pred {class_name(k)} ({100 * p_adv[j, k]:.0f}%)", fontsize=8,
                        color="tab:red" if k != int(y[j]) else "k")
        for a in (a_nat, a_adv):
            a.set_xticks([])
            a.set_yticks([])
    axes_nat[0].set_ylabel("natural", fontsize=9)
    axes_adv[0].set_ylabel("adversarial", fontsize=9)


k = min(gallery_size, len(ranking))
fig, axes = plt.subplots(2, k, figsize=(1.45 * k, 3.6), squeeze=False)
draw_examples(axes[0], axes[1], range(k))
fig.suptitle(f"The {k} hardest training examples of PGD-AT ({first_cfg.model}, seed {seeds[0]}, {loss_checkpoint} "
             f"checkpoint)", fontsize=10)
fig.tight_layout()
out.figure(fig, "figC3_hardest_examples",
           f"Fig. C.3: the training examples with the highest adversarial loss (PGD-{loss_steps}, {loss_eps}/255) "
           f"under the first PGD-AT model; top: natural image, label and loss; bottom: an adversarial example and "
           f"the model's prediction (red: wrong). {setting}")
plt.show()

hard_share = {int(lab): int((train_labels[ranking[:max(1, len(ranking) // 10)]] == lab).sum())
              for lab in train_labels.unique()}
display(Markdown("**Classes of the hardest 10% of the training examples (first model):** " + ", ".join(
    f"{class_name(lab)} {cnt}" for lab, cnt in sorted(hard_share.items(), key=lambda kv: -kv[1]) if cnt) +
    f" (of {max(1, len(ranking) // 10)}; the training subset is class-balanced)."))

# %% [markdown]
# ## Explorer: browse the training set by hardness
#
# Move the slider through the ranking, from the hardest training example (rank 1) to the easiest. For each
# one: the natural image with the label, the adversarial example with the prediction, and the perturbation
# (magnified to the full colour range), with the example's adversarial loss under *both* seeds' models and
# its rank under the second: hard examples should be hard for both. (In a headless run this shows examples
# at evenly spaced ranks instead, hardest on the left.)

# %%
second_losses = losses[run_dirs[("seed", seeds[1])]]["losses"]
second_rank = np.empty(len(second_losses), dtype=int)
second_rank[np.argsort(-second_losses, kind="stable")] = np.arange(1, len(second_losses) + 1)


def show_rank(rank: int):
    """The example at ``rank`` (1 = hardest) under the first model."""
    x, x_adv, y, p_nat, p_adv = adversarial_view(ranking[[rank - 1]])
    i = int(ranking[rank - 1])
    fig, axes = plt.subplots(1, 3, figsize=(7.5, 2.9))
    delta = (x_adv[0] - x[0]).permute(1, 2, 0)
    span = float(delta.abs().max()) or 1.0
    k_nat, k_adv = int(p_nat[0].argmax()), int(p_adv[0].argmax())
    panels = [(x[0].permute(1, 2, 0), (f"natural: label {class_name(int(y[0]))}\npred {class_name(k_nat)} "
                                        f"({100 * p_nat[0, k_nat]:.0f}%)")),
              (x_adv[0].permute(1, 2, 0).clamp(0, 1), f"adversarial\npred {class_name(k_adv)} ({100 * p_adv[0, k_adv]:.0f}%)"),
              (delta / (2 * span) + 0.5, f"perturbation (x{0.5 / span:.0f})")]
    for ax, (img, title) in zip(axes, panels):
        ax.imshow(img.numpy())
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.suptitle(f"rank {rank} of {len(ranking)}: loss {first_losses[i]:.2f} (seed {seeds[0]}), "
                 f"{second_losses[i]:.2f} (seed {seeds[1]}, rank {second_rank[i]})", fontsize=9)
    fig.tight_layout()
    plt.show()


if interactive:
    import ipywidgets as widgets

    widgets.interact(show_rank, rank=widgets.IntSlider(value=1, min=1, max=len(ranking), step=1,
                                                       description="rank", continuous_update=False))
else:
    picks = sorted(set(np.linspace(0, len(ranking) - 1, 6).round().astype(int).tolist()))
    fig, axes = plt.subplots(2, len(picks), figsize=(1.6 * len(picks), 3.6), squeeze=False)
    draw_examples(axes[0], axes[1], picks)
    for j, r in enumerate(picks):
        axes[1][j].set_xlabel(f"2nd model: rank {second_rank[int(ranking[r])]}", fontsize=7)
    fig.suptitle("From the hardest (left) to the easiest (right) training example", fontsize=10)
    fig.tight_layout()
    plt.show()

# %% [markdown]
# ## Summary
#
# Sec. 4.1 argues from two observations to a cause. Robust overfitting needs a budget large enough that the
# one-hot labels of some adversarial examples are wrong (no overfitting at 1/255, Fig. 7b and C.1), and the
# examples with high adversarial loss are the same for independently trained networks and across
# architectures (Kendall's tau 0.85 and 0.78, Fig. 7c and C.2): they are a property of the data, ambiguous
# images whose worst-case perturbations should not be predicted with full confidence (Fig. C.3). Memorizing
# their one-hot labels after the learning-rate decay is, on this account, what robust overfitting is.
#
# Neither observation *proves* the causal claim (both are consistent with it), which is why the paper's
# strongest support comes next: a method designed for noisy labels, temporal ensembling, which keeps the
# network from fitting the one-hot targets of hard examples, removes most of robust overfitting (Sec. 4.2 and
# 5, notebook `06_mitigation`).
#
# The `smoke` tier only checks that everything runs. What a small real run shows (the `quick` tier: 500
# images, a narrow ResNet-18, 40 epochs) is in its executed notebook and in `outputs/quick/FINDINGS.md`.
