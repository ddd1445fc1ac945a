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
# # Sec. 3.1 — Adversarial training with random labels
#
# Zhang et al. (2017) showed that a standard network can fit CIFAR-10 with **completely random labels**: it
# has the capacity to memorize every training example. Dong et al. ask the same question for adversarial
# training (AT): can a network memorize *adversarial examples* of the training data when the labels are
# random, so that it must fit a label not just at each point but on a whole eps-ball around it?
#
# They train two AT methods, on true and on random labels:
#
# * **PGD-AT** (Madry et al., 2018), Eq. 1: $\min_\theta \frac1n\sum_i \max_{x'_i\in S(x_i)} L(f_\theta(x'_i), y_i)$,
#   the inner max solved by PGD (Eq. 2);
# * **TRADES** (Zhang et al., 2019), Eq. 3: $\min_\theta \frac1n\sum_i L(f_\theta(x_i), y_i) + \beta\max_{x'_i}
#   D_{KL}(f_\theta(x_i)\,\|\,f_\theta(x'_i))$ with $\beta = 6$.
#
# **The paper's finding (Fig. 2):** on true labels both reach ~100% natural and robust *training* accuracy.
# On random labels **TRADES still memorizes** (~100%) while **PGD-AT fails to converge** (near chance).
# With partially corrupted labels the generalization gap grows with the noise rate (Fig. 2c), and explicit
# regularizers (augmentation, weight decay, dropout) do not stop TRADES from memorizing (Table A.1).
#
# "Training accuracy" is measured on the labels the network was trained on (random ones for random
# labels), without augmentation; "robust" means against PGD-10 (l-inf, eps = 8/255, step 2/255).

# %% tags=["parameters"]
tier: str = "smoke"  # parameter tier: smoke | quick | paper (params/02_random_labels/<tier>.yaml)
interactive: bool = True  # False under papermill: the explorer becomes a static figure
force: bool = False  # retrain runs even if finished ones exist
jobs: int = 1  # runs trained at once in separate processes (2 suits a 2-core CPU; 1 on a single GPU)
# RunConfig values shared by every run (Sec. 3 code: no augmentation, weight decay 0, lr 0.1 step-decayed)
base: dict = dict(model="resnet18", width=0.0625, train_subset=100, test_subset=100, train_eval_subset=100,
                  epochs=3, batch_size=50, steps=2, eval_steps=2, augment=False, weight_decay=0.0, lr=0.1,
                  lr_schedule="constant", eval_batch_size=500)
methods: list = ["pgd_at", "trades"]  # Fig. 2(a, b)
noise_rates: list = [0.0, 0.5, 1.0]  # Fig. 2(c) and Fig. A.6/A.7
# RunConfig changes of the noise-rate runs of Fig. 2(c) and A.6/A.7 (App. A.1.2: "we adopt the weight decay and
# data augmentation"); {} = the setting of Fig. 2(a, b), whose runs at noise 0.0 and 1.0 are then reused
noise_study: dict = {}
# Table A.1 (TRADES): "labels|augmentation|weight decay|dropout"; empty list = skip the table
regularizer_grid: list = ["true|no|no|no", "random|no|no|no", "random|yes|no|no", "random|no|yes|no",
                          "random|no|no|yes"]
regularizers: dict = dict(weight_decay=2e-4, dropout=0.2)  # the values of Table A.1
# App. A.1 variants, each trained with PGD-AT and TRADES on random labels: name -> RunConfig changes
variants: dict = {}
paper_setting: str = "Paper: WRN-28-10, all 50,000 CIFAR-10 images, PGD-10, 200 epochs (lr 0.1, /10 every 100)."

# %%
# Stop here, in one line, on a parameter this notebook does not have or a value of the wrong type
from memlib.config import check_notebook_parameters
check_notebook_parameters(globals(), "02_random_labels")

# %%
import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from memlib.config import RunConfig
from memlib.report import Outputs
from memlib.runs import read_metrics
from memlib.train import train_many

out = Outputs(tier, "02_random_labels")
setting = (f"This run ({tier} tier): {base['model']} at width {base.get('width', 1.0)}, "
           f"{base.get('train_subset') or 'all'} training images, {base['epochs']} epochs, PGD-{base['steps']} "
           f"in training and PGD-{base['eval_steps']} for robust accuracy, eps 8/255. {paper_setting}")
display(Markdown(f"> {setting}"))
noise_setting = setting + (f" Noise-rate runs (Fig. 2c, A.6, A.7) with {noise_study}." if noise_study else
                           " Noise-rate runs (Fig. 2c, A.6, A.7) without regularizers; paper: with weight decay "
                           "and data augmentation (App. A.1.2).")


def config(**changes) -> RunConfig:
    """The RunConfig of one run of this notebook: the tier's base values plus ``changes``."""
    return RunConfig(**out.run_config(**{**base, **changes}))


# Every run of the notebook, planned first (so a bad setting stops before any training) ...
planned = {("fig2", m, r): config(method=m, noise_rate=r) for m in methods for r in (0.0, 1.0)}  # Fig. 2(a, b)
planned.update({("noise", m, r): config(method=m, noise_rate=r, **noise_study)  # Fig. 2(c), A.6, A.7
                for m in methods for r in noise_rates})
for key in regularizer_grid:  # Table A.1
    labels, aug, wd, do = key.split("|")
    planned[("a1", key)] = config(method="trades", noise_rate=1.0 if labels == "random" else 0.0,
                                  augment=aug == "yes", weight_decay=regularizers["weight_decay"] if wd == "yes" else 0.0,
                                  dropout=regularizers["dropout"] if do == "yes" else 0.0)
for name, changes in variants.items():  # App. A.1
    for m in methods:
        planned[("variant", name, m)] = config(method=m, noise_rate=1.0, **changes)
# ... then trained (finished runs are reused; a run listed twice is trained once), `jobs` at a time.
results = train_many(list(planned.values()), jobs=jobs, force=force)
run_dirs = {key: r.run_dir for key, r in zip(planned, results)}
for path in run_dirs.values():
    out.add_run(path)

NAMES = {"pgd_at": "PGD-AT", "trades": "TRADES"}
runs = {(m, r): run_dirs[("fig2", m, r)] for m in methods for r in (0.0, 1.0)}  # Fig. 2(a, b)
noise_runs = {(m, r): run_dirs[("noise", m, r)] for m in methods for r in noise_rates}  # Fig. 2(c), A.6, A.7


def accuracy_curves(paths: dict) -> dict:
    """Per-epoch metrics of each run; with `eval_every` > 1 only every k-th epoch has accuracies: those."""
    return {key: [m for m in read_metrics(path) if "train_nat_acc" in m] for key, path in paths.items()}


curves, noise_curves = accuracy_curves(runs), accuracy_curves(noise_runs)

# %% [markdown]
# ## Fig. 2(a, b): learning curves on true and random labels
#
# Solid lines: natural training accuracy; dashed: robust (PGD) training accuracy. Blue: true labels;
# red: random labels (noise rate 1.0, each label redrawn uniformly over the 10 classes). Chance is 10%.
# Read the red curves: does the method *memorize* the random labels, i.e. climb towards 100%, and does it
# do so against the attack too?


# %%
def plot_learning_curves(ax, method, rates=(0.0, 1.0), source=None):
    colors = {0.0: "tab:blue", 1.0: "tab:red"}
    for r in rates:
        m = (curves if source is None else source).get((method, r))
        if not m:
            continue
        ep = [x["epoch"] for x in m]
        c = colors.get(r, plt.cm.viridis(r))
        label = "true labels" if r == 0 else ("random labels" if r == 1 else f"noise {r}")
        ax.plot(ep, [x["train_nat_acc"] for x in m], color=c, label=f"{label} (natural)")
        ax.plot(ep, [x["train_rob_acc"] for x in m], color=c, ls="--", label=f"{label} (robust)")
    ax.axhline(0.1, color="gray", lw=0.5)
    ax.set(title=NAMES.get(method, method), xlabel="epoch", ylabel="training accuracy", ylim=(0, 1.02))


fig, axes = plt.subplots(1, len(methods), figsize=(5 * len(methods), 3.6), squeeze=False)
for ax, method in zip(axes[0], methods):
    plot_learning_curves(ax, method)
axes[0][0].legend(fontsize=8)
fig.tight_layout()
out.figure(fig, "fig2ab_learning_curves", "Fig. 2(a,b): natural and robust training accuracy on true vs random labels")
plt.show()

fig2_runs = {f"{NAMES.get(m, m)}, {'true' if r == 0 else 'random'} labels": runs[(m, r)]
             for m in methods for r in (0.0, 1.0) if (m, r) in runs}
display(Markdown(out.table("fig2_final_accuracy", "final_accuracy", runs=fig2_runs,
                           title="Fig. 2(a,b): final training and test accuracy on true and random labels",
                           setting=setting)))

# %% [markdown]
# **What to look for.** In the paper (WRN-28-10, full CIFAR-10) TRADES on random labels reaches ~100%
# natural and robust training accuracy, while PGD-AT stays near 10%. TRADES first fits the *natural*
# examples through its clean cross-entropy term (natural accuracy rises first), then the adversarial
# ones; PGD-AT only ever sees adversarial examples with random labels and its gradients are unstable
# (Sec. 3.2). At the small `smoke`/`quick` scale, memorization is easier (few examples) and training is
# shorter; the quick tier's executed notebook and `outputs/quick/FINDINGS.md` say whether the contrast shows.
#
# ## Fig. 2(c): generalization gap vs noise rate
#
# The generalization gap is training accuracy (on the labels trained on) minus test accuracy (on the
# clean test set). As more labels are random, what is learned is memorized rather than generalized, so
# the gap grows — as long as the method can still fit the training set.
#
# Unlike Fig. 2(a, b), the paper trains these noise-rate runs (and those of Fig. A.6/A.7) **with** weight
# decay and data augmentation (App. A.1.2). The `noise_study` parameter holds those changes: the paper tier
# has augmentation and weight decay 2e-4 (the paper gives no value for this experiment; 2e-4 is Table A.1's).
# The CPU tiers leave it empty and reuse the unregularized runs: with augmentation the small network does not
# fit random labels within their epochs (Table A.1 below), so there would be no gap to compare.

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
for method in methods:
    rates = [r for r in noise_rates if (method, r) in noise_curves]
    last = [noise_curves[(method, r)][-1] for r in rates]
    axes[0].plot(rates, [m["train_nat_acc"] - m["test_nat_acc"] for m in last], "o-", label=NAMES.get(method, method))
    axes[1].plot(rates, [m["train_rob_acc"] - m["test_rob_acc"] for m in last], "o-", label=NAMES.get(method, method))
for ax, kind in zip(axes, ("natural", "robust")):
    ax.set(xlabel="noise rate", ylabel=f"{kind} generalization gap", title=f"{kind} gap (train - test)")
    ax.legend()
fig.tight_layout()
out.figure(fig, "fig2c_gap_vs_noise", "Fig. 2(c): generalization gap (last epoch) vs label noise rate")
plt.show()

gap_runs = {f"{NAMES.get(m, m)}, noise {r}": noise_runs[(m, r)] for m in methods for r in noise_rates}
display(Markdown(out.table("fig2c_gap_vs_noise", "final_accuracy", runs=gap_runs,
                           title="Fig. 2(c): accuracy and generalization gap under label noise",
                           setting=noise_setting)))

# %% [markdown]
# ## Fig. A.6 / A.7: learning curves for every noise rate
#
# One panel per noise rate; as in the paper, training accuracy (on the noisy labels) and test accuracy.

# %%
fig, axes = plt.subplots(len(methods), len(noise_rates), figsize=(3.2 * len(noise_rates), 2.8 * len(methods)),
                         squeeze=False, sharey=True)
for i, method in enumerate(methods):
    for j, r in enumerate(noise_rates):
        ax, m = axes[i][j], noise_curves[(method, r)]
        ep = [x["epoch"] for x in m]
        for key, style in (("train_nat_acc", "C0-"), ("train_rob_acc", "C0--"), ("test_nat_acc", "C1-"),
                           ("test_rob_acc", "C1--")):
            ax.plot(ep, [x[key] for x in m], style, label=key.replace("_acc", "").replace("_", " "))
        ax.set(title=f"{NAMES.get(method, method)}, noise {r}", xlabel="epoch", ylim=(0, 1.02))
axes[0][0].legend(fontsize=7)
fig.tight_layout()
out.figure(fig, "figA6_A7_noise_curves", "Fig. A.6/A.7: accuracy curves under each noise rate")
plt.show()

# %% [markdown]
# ## Explorer: learning curves of any run
#
# Pick a method and a noise rate. (In a headless run this shows every run at once instead.)

# %%
if interactive:
    import ipywidgets as widgets

    def show(method, noise_rate):
        fig, ax = plt.subplots(figsize=(6, 3.5))
        plot_learning_curves(ax, method, rates=(noise_rate,), source=noise_curves)
        ax.legend(fontsize=8)
        plt.show()

    widgets.interact(show, method=widgets.Dropdown(options=methods, description="method"),
                     noise_rate=widgets.SelectionSlider(options=noise_rates, description="noise rate"))
else:
    fig, axes = plt.subplots(1, len(methods), figsize=(5 * len(methods), 3.6), squeeze=False)
    for ax, method in zip(axes[0], methods):
        plot_learning_curves(ax, method, rates=noise_rates, source=noise_curves)
    axes[0][0].legend(fontsize=6)
    plt.show()

# %% [markdown]
# ## Table A.1: explicit regularizers do not prevent memorization
#
# TRADES on true and random labels with data augmentation (random crop + flip), weight decay (2e-4) and
# dropout (0.2), alone and combined. In the paper the regularizers lower robust training accuracy on random
# labels somewhat (e.g. 69.6% with augmentation + weight decay) but the network still memorizes most of
# the random labels, while test accuracy stays at chance: regularizers are not what makes AT generalize.

# %%
if regularizer_grid:
    grid_runs = {key: run_dirs[("a1", key)] for key in regularizer_grid}
    display(Markdown(out.table("table_a1", "table_a1", runs=grid_runs,
                               title="Table A.1: TRADES with explicit regularizers on true and random labels",
                               setting=setting)))

# %% [markdown]
# ## App. A.1: other data sets, architectures, threat models and budgets
#
# The paper repeats Fig. 2 with CIFAR-100, SVHN, DenseNet-121, DLA, the l2 threat model (eps = 1.0,
# step 0.25) and larger l-inf budgets (16/255: TRADES still memorizes; 32/255: neither reaches ~100%).
# The `paper` parameter file lists these variants; the CPU tiers skip the ones that need data or compute
# this machine does not have.

# %%
if variants:
    variant_runs = {f"{name}, {NAMES.get(m, m)}": run_dirs[("variant", name, m)]
                    for name in variants for m in methods}
    display(Markdown(out.table("appA1_variants", "final_accuracy", runs=variant_runs,
                               title="App. A.1: random labels under other settings", setting=setting)))
