# %% [markdown]
# # Sec. 4.1 — Robust overfitting: memorizing the one-hot labels of hard adversarial examples
#
# **Robust overfitting** (Rice et al., 2020). In standard training on CIFAR-10, training longer rarely costs
# test accuracy. In adversarial training (AT) it does: with the usual piecewise-constant learning rate, the
# robust *test* accuracy jumps at the first learning-rate decay and then *declines* for the rest of training,
# while the robust *training* accuracy climbs towards 100%. For PGD-AT on CIFAR-10 with a ResNet-18 the paper
# measures 52.64% PGD-10 accuracy at the best epoch and 44.92% after 200 epochs (Table 1): almost 8 points of
# robustness lost. Rice et al. found that the classical remedies ($\ell_1$/$\ell_2$ penalties, data
# augmentation) do not beat early stopping, but gave no reason. This notebook reproduces the paper's answer.
#
# **The hypothesis.** PGD-AT (Eq. 1) trains every adversarial example towards the one-hot label of its clean
# example,
#
# $$\min_\theta \frac1n\sum_{i=1}^n \max_{x'_i\in S(x_i)} L\big(f_\theta(x'_i), y_i\big), \qquad
#   S(x_i) = \{x' : \|x'-x_i\|_\infty \le \epsilon\},$$
#
# and TRADES does the same through its clean cross-entropy term. Some training images lie close to the
# decision boundary (an odd viewpoint, a cat that looks like a dog, a cluttered background): the eps-ball
# around such an image reaches across the boundary, and its worst-case point $x'_i$ may genuinely look like
# another class, for which a *low-confidence* prediction would be a sensible target, not a one-hot $y_i$. For
# these "hard" adversarial examples **the one-hot label is effectively a noisy label** (the data set's labels
# are right; the one-hot target for the perturbed point is wrong). Sec. 3 showed that AT can memorize even
# random labels. The hypothesis: after the learning-rate decay the network becomes precise enough to memorize
# the noisy one-hot labels of the hard examples, and, as with label noise in standard training, this costs
# generalization: **robust overfitting is the memorization of one-hot labels**.
#
# **Two predictions, two experiments.**
#
# 1. *Small budgets should not overfit.* A small eps-ball rarely crosses the decision boundary, the one-hot
#    labels are appropriate, and memorizing them is harmless. Fig. 7(b) (PGD-AT) and C.1 (TRADES): robust test
#    accuracy under several budgets; the paper: **no robust overfitting at 1/255**, clear at 8/255.
# 2. *Hardness should belong to the data, not to the network.* Then two networks trained independently agree
#    on which examples are hard. Fig. 7(c): the adversarial loss of every training example under two PGD-AT
#    networks with different seeds, Kendall's rank correlation over all 50,000 of them **0.85**; Fig. C.2: two
#    architectures (WRN-28-10, ResNet-18), **0.78**. Fig. C.3: the hardest examples, hard to recognize, some
#    with labels that look wrong.
#
# **Kendall's tau** compares two rankings of the same items. Over all $\binom n2$ pairs of examples, a pair is
# *concordant* if both models order the two examples' losses the same way and *discordant* otherwise;
# $\tau = (\#\text{concordant} - \#\text{discordant}) / \binom n2$ (the $\tau_b$ variant corrects for ties).
# $\tau = 0$ for unrelated rankings, 1 for identical ones; $\tau = 0.85$ means that for a random pair of
# training examples the two networks agree on which one is harder $(1+\tau)/2 \approx 92\%$ of the time.
# The notebook trains the runs first, then draws Fig. 7(a), 7(b) + C.1, 7(c) + C.2 and C.3 from their files.

# %% tags=["parameters"]
tier: str = "smoke"  # parameter tier: smoke | quick | paper (params/05_robust_overfitting/<tier>.yaml)
interactive: bool = True  # False under papermill: the explorer becomes a static figure
force: bool = False  # retrain runs (and recompute their adversarial losses) even if finished ones exist
jobs: int = 1  # runs trained at once in separate processes (2 suits a 2-core CPU; 1 on a single GPU)
# RunConfig values shared by every run: a dict, or {"from": name} = params/bases/<name>.yaml (plus any changes).
# The Sec. 5 setting (ResNet-18, SGD lr 0.1 /10 at epochs 100 and 150 of 200, weight decay 5e-4, augmentation,
# PGD-10), which smoke-sec5 shrinks to seconds. It is 06_mitigation's base too, so the 8/255 runs are shared.
base: dict = {"from": "smoke-sec5"}
methods: list = ["pgd_at", "trades"]  # Fig. 7(b) (PGD-AT) and Fig. C.1 (TRADES)
eps_list: list = [1, 8]  # budgets k of the sweep, eps = k/255, attack step eps/4 (8/255 -> 2/255, the paper's)
seeds: list = [0, 1]  # Fig. 7(c): two PGD-AT runs differing only in the seed (the first sorts the plot)
sweep_seeds: list = [0]  # seeds of PGD-AT's runs of the sweep (F9's interval over seeds; 0 is the sweep)
attempts: dict = {}  # name -> {methods, seeds, changes}: deliberate tries at a finding (memlib.findings)
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
from memlib.present import show_times

check_notebook_parameters(globals(), "05_robust_overfitting")
show_times("05_robust_overfitting")  # the measured times of its tiers (notebooks/README.md)

# %%
import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from memlib import present, showcase
from memlib.experiments import declare
from memlib.lectures import robust_overfitting as ro  # this notebook's figures and computations
from memlib.paper import TABLE1
from memlib.report import Outputs
from memlib.runs import Run
from memlib.train import train_many

out = Outputs(tier, "05_robust_overfitting")
# every run, declared (and so checked) before anything trains: memlib/experiments/robust_overfitting.py
planned = declare("05_robust_overfitting", globals(), out.runs, out.data).configs
c = planned[("fig7a",)]
setting = present.setting(c, tier, *ro.setting_clauses(globals(), c), paper=paper_setting)
present.show_setting(setting)

# %% [markdown]
# ## Training the runs
#
# The eps sweep (each method of `methods` at each budget of `eps_list`, eps = k/255, PGD step eps/4: 2/255 at
# 8/255, the paper's), PGD-AT with the second seed (only the initialization, the shuffling, the augmentation and
# the attacks' random starts change: `seed` is kept apart from `data_seed`, so the data subset is the same) and
# PGD-AT with the second architecture. One run plays several roles: PGD-AT at the base eps is Fig. 7(a), the
# 8/255 point of the sweep, the first seed and the first architecture. Each run logs natural and PGD robust
# accuracy on fixed test and training subsets (no augmentation) every `eval_every` epochs into its
# `metrics.jsonl`; every curve and table below is read from those files. Finished runs are reused.

# %%
results = train_many(list(planned.values()), jobs=jobs, force=force)  # each distinct run once
run_dirs = {key: r.run_dir for key, r in zip(planned, results)}
for path in dict.fromkeys(run_dirs.values()):
    out.add_run(path)
curves = {key: Run(path).evaluated for key, path in run_dirs.items()}  # the epochs with accuracies (eval_every)

# %% [markdown]
# ## Fig. 7(a): robust overfitting in PGD-AT
#
# Natural and robust (PGD) accuracy on the training and the test set per evaluated epoch, PGD-AT at 8/255.
# Dotted lines: learning-rate decays. Star: the best epoch (highest robust test accuracy: `best.pt`, the
# checkpoint early stopping would keep).
#
# **How to read it.** Before the first decay all four curves rise together, the training ones a little above
# the test ones. Robust overfitting is what happens after it: the *robust training* accuracy (dashed blue)
# shoots up towards 100% (the network fits ever more training points, the hard ones included, within their
# whole eps-ball), while the *robust test* accuracy (dashed orange) peaks and then slides down. The growing
# vertical distance between the two dashed curves is memorization seen from outside. Natural test accuracy
# usually does not fall with it (in Table 1 PGD-AT's final natural accuracy, 84.82%, is even above the best
# checkpoint's, 83.75%): robust overfitting is a loss of *robustness* specifically.

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.8))
present.plot_accuracies(ax, curves[("fig7a",)], c, marker="o" if len(curves[("fig7a",)]) <= 25 else None, ms=3)
ax.set(title=f"PGD-AT, eps {present.eps_text(c.eps)} ({tier} tier)", ylabel="accuracy (%)")
ax.legend(fontsize=8, ncol=2)
fig.tight_layout()
out.figure(fig, "fig7a_pgd_at_curves",
           f"Fig. 7(a): PGD-AT natural and PGD-{c.eval_steps} robust accuracy on training and test data per epoch; "
           f"dotted: lr decays, star: best epoch. {setting}")
plt.show()
display(Markdown(ro.best_final_text(curves[("fig7a",)], c.eps, TABLE1["cifar10"]["pgd_at"]["pgd-10"])))

# %% [markdown]
# **What to expect from a small tier.** Robust overfitting needs a network that can fit its training set
# after the decay. The `smoke` tier (3 epochs, 100 images) only checks that the notebook runs; the `quick`
# tier (500 images without augmentation, 40 epochs, decays after 10 and 30) is sized so that it does fit
# them. Its robust test accuracy on 500 images jitters by about ±2 points per epoch (the standard error of a
# 15% accuracy on 500 images is 1.6), and "best", the maximum of a noisy curve, is biased upward: a best −
# final gap of 1-2 points is not by itself robust overfitting; a decline building up over many epochs after
# the decay is. Judge the trend, not one epoch.
#
# ## Fig. 7(b) and C.1: robust overfitting depends on the budget
#
# Top row: robust test accuracy per epoch of PGD-AT (Fig. 7b) and TRADES (Fig. C.1), one curve per budget;
# each run is attacked at its *own* eps, so the curves of small budgets lie higher (a weaker attack is easier
# to resist). Compare their *shapes* after the first decay (dotted line), not their heights: robust
# overfitting is a decline from a peak. Bottom row: robust training accuracy of the same runs, the
# memorization side.
#
# **What the paper found.** At 8/255 PGD-AT's robust test accuracy drops by several points after the first
# decay (7.72 by the end, Table 1), TRADES' less (3.07). At **1/255 there is no robust overfitting**. The
# paper's reading: within a small ball the one-hot labels are appropriate targets; only at a larger budget,
# where the one-hot labels of the hard adversarial examples become noisy, does fitting them cost test
# robustness. The bottom row checks the other half of that story: a network fits its training set at least as
# easily within a small ball, so if it does so at 1/255 without losing test robustness, memorization by
# itself is not the problem; memorizing *wrong* targets is.

# %%
fig, axes = plt.subplots(2, len(methods), figsize=(5.2 * len(methods), 6.4), squeeze=False, sharex=True)
ro.plot_sweep(axes, curves, methods, eps_list, c)
if len(sweep_seeds) > 1 and "pgd_at" in methods:  # PGD-AT's budgets over seeds: mean ± std bands
    ro.plot_sweep_bands(axes[:, methods.index("pgd_at")], curves, eps_list, sweep_seeds)
fig.tight_layout()
out.figure(fig, "fig7b_C1_eps_sweep",
           f"Fig. 7(b) (PGD-AT) and C.1 (TRADES): robust test accuracy (top) and robust training accuracy (bottom) "
           f"per epoch under several budgets eps, each attacked at its own eps; stars: best epochs. {setting}")
plt.show()

display(Markdown(out.table("fig7b_C1_robust_overfitting_by_eps", "robust_overfitting",
                           runs=ro.sweep_runs(globals(), run_dirs),
                           title="Fig. 7(b) and C.1: best, final and best-minus-final robust test accuracy by "
                                 "method and budget", setting=setting)))
display(Markdown(ro.sweep_gaps_text(curves, methods, eps_list, TABLE1["cifar10"])))
if len(sweep_seeds) > 1:  # F9's runs at every seed: mean ± std
    display(Markdown(out.table("fig7b_robust_overfitting_seeds", "robust_overfitting",
                               runs=ro.sweep_seed_runs(globals(), run_dirs),
                               title=f"Fig. 7(b): PGD-AT's best, final and best-minus-final robust test accuracy over "
                                     f"seeds {sweep_seeds}", setting=setting)))
if attempts:  # deliberate attempts (their criteria: docs/criteria.md; verdicts: outputs/<tier>/FINDINGS.md)
    display(Markdown(out.table("attempts_05", "robust_overfitting",
                               runs={a: [run_dirs[k] for k in planned if k[:2] == ("attempt", a)] for a in attempts},
                               title="Deliberate attempt at F9: best, final and best-minus-final robust test accuracy",
                               setting=setting)))

# %% [markdown]
# **How to read the table.** *Best* is the highest robust test accuracy over the evaluated epochs (the epoch
# of `best.pt`), *final* the one after the last epoch, *best − final* what training to the end cost; in
# parentheses the paper's Table 1 for the 8/255 ResNet-18 runs (Fig. 7b and C.1 are curves without numbers).
# *Final train robust*: how much of the training set the network fits within the eps-ball at the end.
#
# ## Fig. 7(c) and C.2: the hard examples are the same for different networks
#
# The **adversarial loss** of a training example is the cross-entropy of the network on its PGD adversarial
# example, $\max_{x'_i\in S(x_i)} L(f_\theta(x'_i), y_i)$ as PGD finds it (`run_adversarial_losses`: PGD on
# the CE from a seeded random start, eval mode, the `loss_checkpoint`, every training example of the run with
# the label it was trained on). A high loss means the network does not (or cannot) hold $y_i$ over the whole
# eps-ball: a hard example. The losses are saved in each run's folder (`adv_losses.npz`, keyed by the attack's
# settings); the table computes Kendall's tau from those files.
#
# **How to read the plots.** The x-axis is `sorted_examples` training examples (all of them when there are
# fewer), sorted by the first network's loss, so its curve (the line) rises from left to right. The dots are
# the second network's losses on the same examples. If hardness were an accident of one training run, the
# dots would form a flat band, unrelated to the line; if it belongs to the examples, the dots climb with the
# line. Left: two seeds of PGD-AT (Fig. 7c, paper tau 0.85). Right: two architectures (Fig. C.2, paper:
# WRN-28-10 and ResNet-18, tau 0.78).

# %%
pairs = ro.loss_runs(globals(), run_dirs)  # {"seeds" | "architectures": the two run folders compared}
saved = ro.adversarial_losses(globals(), pairs, force)  # {run folder: its losses}, kept in each run folder

fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
ro.plot_loss_pairs(axes, globals(), run_dirs, saved)
fig.tight_layout()
out.figure(fig, "fig7c_C2_adversarial_losses",
           f"Fig. 7(c) (two seeds) and C.2 (two architectures): adversarial loss of training examples under two "
           f"PGD-AT models, sorted by the first model's loss; Kendall's tau over all training examples. {setting}")
plt.show()

display(Markdown(out.table(
    "fig7c_C2_loss_consistency", "loss_consistency", pairs=pairs, key=next(iter(saved.values()))["key"],
    title="Fig. 7(c) and C.2: rank agreement of the adversarial losses of two PGD-AT models", setting=setting)))

# %% [markdown]
# **What the paper found, and what to look for.** With two seeds the dots follow the line closely, tau 0.85
# over all 50,000 training examples; across WRN-28-10 and ResNet-18 it is 0.78, a little lower (the networks
# differ in more than their seed) but far from 0. The paper concludes that the hard examples, whose one-hot
# labels are noisy for AT, are *intrinsic to the data set*. The *hardest-10% overlap* column asks the same of
# the top of the ranking, the examples that matter for robust overfitting: which fraction of one model's 10%
# hardest examples are among the other's (10% would be chance).
#
# Reading our numbers: on a small training set the networks have largely memorized by the final epoch, many
# losses are near zero and the order among these easy examples is mostly noise, which pulls tau down; the hard
# end of the ranking is the more informative part. With $n$ examples the sampling error of tau is roughly
# $\sqrt{2(2n+5)/(9n(n-1))}$ for unrelated rankings (0.03 for $n = 500$): a tau of 0.3 on 500 is far from chance.
#
# ## Fig. C.3: the hardest training examples
#
# The `gallery_size` training examples with the highest adversarial loss under the first seed's PGD-AT model,
# hardest first. Top: the natural image, its label and the loss the ranking used. Bottom: an adversarial
# example (the same attack, regenerated here, so its random start differs from the ranking's) and what the
# network predicts for it, with its confidence. The paper's Fig. C.3 shows images that are "difficult to
# recognize and their labels may be wrong": the examples for which a confident one-hot target over the whole
# eps-ball is too much to ask.

# %%
first_run = run_dirs[("seed", seeds[0])]
hard = ro.HardExamples.of_run(first_run, saved[first_run], loss_checkpoint, ro.loss_attack(globals()))
k = min(gallery_size, len(hard.ranking))
fig, axes = plt.subplots(2, k, figsize=(1.45 * k, 3.6), squeeze=False)
hard.draw(axes[0], axes[1], range(k))
fig.suptitle(f"The {k} hardest training examples of PGD-AT ({c.model}, seed {seeds[0]}, {loss_checkpoint} "
             f"checkpoint)", fontsize=10)
fig.tight_layout()
out.figure(fig, "figC3_hardest_examples",
           f"Fig. C.3: the training examples with the highest adversarial loss (PGD-{loss_steps}, {loss_eps}/255) "
           f"under the first PGD-AT model; top: natural image, label and loss; bottom: an adversarial example and "
           f"the model's prediction (red: wrong). {setting}")
plt.show()
display(Markdown(hard.class_counts()))

# %% [markdown]
# ## Explorer: browse the training set by hardness
#
# Move the slider through the ranking, from the hardest training example (rank 1) to the easiest. For each
# one: the natural image with the label, the adversarial example with the prediction, and the perturbation
# (magnified to the full colour range), with the example's adversarial loss under *both* seeds' models and
# its rank under the second: hard examples should be hard for both. (In a headless run this shows examples
# at evenly spaced ranks instead, hardest on the left.)

# %%
second, names = saved[run_dirs[("seed", seeds[1])]]["losses"], (f"seed {seeds[0]}", f"seed {seeds[1]}")
if interactive:  # the committed quick-tier model and losses when they are here (a smoke model ranks noise)
    hard, second, names, note = showcase.explorer_hard_examples(out.project, tier, hard, second, names)
    if note:
        display(Markdown(note))
hard.explorer(second, names, interactive)

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
# strongest support comes next: temporal ensembling, a method designed for noisy labels that keeps the network
# from fitting the one-hot targets of hard examples, removes most of robust overfitting (Sec. 4.2 and 5,
# notebook `06_mitigation`). What a small real run shows: the `quick` tier's executed notebook and
# `outputs/quick/FINDINGS.md`.
