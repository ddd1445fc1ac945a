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
# RunConfig values of every run: the shared Sec. 3 base (params/bases/<tier>-sec3.yaml: no augmentation, weight
# decay 0, lr 0.1), which 03_convergence names too, so that the two notebooks' runs on random labels are one
base: dict = {"from": "smoke-sec3"}
methods: list = ["pgd_at", "trades"]  # Fig. 2(a, b)
noise_rates: list = [0.0, 0.5, 1.0]  # Fig. 2(c) and Fig. A.6/A.7
# RunConfig changes of the noise-rate runs of Fig. 2(c) and A.6/A.7 (App. A.1.2: "we adopt the weight decay and
# data augmentation"); {} = the setting of Fig. 2(a, b), whose runs at noise 0.0 and 1.0 are then reused
noise_study: dict = {}
# Table A.1 (TRADES): "labels|augmentation|weight decay|dropout"; empty list = skip the table
regularizer_grid: list = ["true|no|no|no", "random|no|no|no", "random|yes|no|no", "random|no|yes|no",
                          "random|no|no|yes"]
regularizers: dict = dict(weight_decay=2e-4, dropout=0.2)  # the values of Table A.1
# App. A.1 variants, each trained with PGD-AT and TRADES on random labels: name -> RunConfig changes (with
# noise_rates: [0.0, 1.0] also on true labels)
variants: dict = {}
finding_seeds: list = [0]  # seeds of Fig. 2(a, b)'s random-label runs (F1's interval over seeds)
attempts: dict = {}  # name -> {methods, seeds, changes}: deliberate tries at a finding (memlib.findings)
paper_setting: str = ("Paper: WRN-28-10, all 50,000 CIFAR-10 images, PGD-10, 150 epochs in Fig. 2 (200 in Figs. "
                      "A.6, A.7, A.10; lr 0.1, /10 every 100).")

# %%
# Stop here, in one line, on a parameter this notebook does not have or a value of the wrong type
from memlib.config import check_notebook_parameters
from memlib.present import show_times

check_notebook_parameters(globals(), "02_random_labels")
show_times("02_random_labels")  # the measured times of its tiers (notebooks/README.md)

# %%
import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from memlib import showcase
from memlib.experiments import declare
from memlib.present import (COLORS, PERCENT, labels_text, mark_schedule, name, plot_accuracies, plot_band, plot_curve,
                            setting, show_setting)
from memlib.report import Outputs
from memlib.runs import Run
from memlib.train import train_many

out = Outputs(tier, "02_random_labels")
# Every run of the notebook, declared first (memlib/experiments/random_labels.py: a bad setting stops here) ...
planned = declare("02_random_labels", globals(), out.runs, out.data).configs
# ... then trained (finished runs are reused; a run listed twice is trained once), `jobs` at a time.
results = train_many(list(planned.values()), jobs=jobs, force=force)
run_dirs = {key: r.run_dir for key, r in zip(planned, results)}
for path in run_dirs.values():
    out.add_run(path)
# With `eval_every` > 1 only every k-th epoch has accuracies: the curves and the last epoch are of those epochs
metrics = {key: Run(run_dirs[key]).evaluated for key in planned if key[0] in ("fig2", "noise")}

fig2_setting = setting(planned[("fig2", methods[0], 0.0)], tier, paper=paper_setting)
show_setting(fig2_setting)
noise_cfg = planned[("noise", methods[0], noise_rates[0])]
regularized = f"with weight decay {noise_cfg.weight_decay:g}" if noise_study else \
    "without regularizers (paper: with weight decay and data augmentation, App. A.1.2)"
noise_setting = setting(noise_cfg, tier, f"noise-rate runs (Fig. 2c, A.6, A.7) {regularized}", paper=paper_setting)


# %% [markdown]
# ## Fig. 2(a, b): learning curves on true and random labels
#
# Solid lines: natural training accuracy; dashed: robust (PGD) training accuracy. Blue: true labels;
# red: random labels (noise rate 1.0, each label redrawn uniformly over the 10 classes). Chance is 10%.
# Read the red curves: does the method *memorize* the random labels, i.e. climb towards 100%, and does it
# do so against the attack too?

# %%
def plot_learning_curves(ax, method, rates=(0.0, 1.0), study="fig2", metrics=metrics, configs=planned):
    """Natural (solid) and robust (dashed) training accuracy of `method`'s runs of `study` at each noise rate
    (`metrics`, `configs`: by run key, this tier's by default)."""
    for r in rates:
        color = {0.0: "tab:blue", 1.0: "tab:red"}.get(r, plt.cm.viridis(r))
        rows = metrics[(study, method, r)]
        plot_curve(ax, rows, "train_nat_acc", label=f"{labels_text(r)} (natural)", color=color, star=False)
        plot_curve(ax, rows, "train_rob_acc", label=f"{labels_text(r)} (robust)", color=color, star=False, ls="--")
        if study == "fig2" and r == 1.0:  # the seeds of `finding_seeds`: mean ± std bands
            seeds = [metrics[("fig2", method, r, "seed", s)] for s in finding_seeds]
            plot_band(ax, seeds, "train_nat_acc", color=color)
            plot_band(ax, seeds, "train_rob_acc", color=color, label="random labels")
    mark_schedule(ax, configs[(study, method, rates[-1])])
    ax.axhline(10, color="gray", lw=0.5)  # chance: one class in ten
    ax.set(title=name(method), xlabel="epoch", ylabel="training accuracy (%)", ylim=(0, 102))


fig, axes = plt.subplots(1, len(methods), figsize=(5 * len(methods), 3.6), squeeze=False)
for ax, method in zip(axes[0], methods):
    plot_learning_curves(ax, method)
axes[0][0].legend(fontsize=8)
fig.tight_layout()
out.figure(fig, "fig2ab_learning_curves", "Fig. 2(a,b): natural and robust training accuracy on true vs random labels")
plt.show()

fig2_runs = {f"{name(m)}, {labels_text(r)}": run_dirs[("fig2", m, r)] for m in methods for r in (0.0, 1.0)}
display(Markdown(out.table("fig2_final_accuracy", "final_accuracy", runs=fig2_runs,
                           title="Fig. 2(a,b): final training and test accuracy on true and random labels",
                           setting=fig2_setting)))
if len(finding_seeds) > 1:  # F1's runs at every seed: mean ± std
    seed_runs = {f"{name(m)}, random labels": [run_dirs[("fig2", m, 1.0, "seed", s)] for s in finding_seeds]
                 for m in methods}
    display(Markdown(out.table("fig2_final_accuracy_seeds", "final_accuracy", runs=seed_runs,
                               title=f"Fig. 2(a,b) on random labels over seeds {finding_seeds}", setting=fig2_setting)))
if attempts:  # deliberate attempts (their criteria: docs/criteria.md; verdicts: outputs/<tier>/FINDINGS.md)
    attempt_runs = {f"{a}: {name(k[2])}": run_dirs[k] for a in attempts for k in planned if k[:2] == ("attempt", a)}
    display(Markdown(out.table("attempts_02", "final_accuracy", runs=attempt_runs,
                               title="Deliberate attempts at F1 and F3: final training and test accuracy",
                               setting=fig2_setting)))

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
    last = [metrics[("noise", method, r)][-1] for r in noise_rates]
    for ax, kind in zip(axes, ("nat", "rob")):
        ax.plot(noise_rates, [PERCENT * (m[f"train_{kind}_acc"] - m[f"test_{kind}_acc"]) for m in last], "o-",
                label=name(method), color=COLORS.get(method))
for ax, kind in zip(axes, ("natural", "robust")):
    ax.set(xlabel="noise rate", ylabel=f"{kind} generalization gap (%)", title=f"{kind} gap (train - test)")
    ax.legend()
fig.tight_layout()
out.figure(fig, "fig2c_gap_vs_noise", "Fig. 2(c): generalization gap (last epoch) vs label noise rate")
plt.show()

gap_runs = {f"{name(m)}, noise {r}": run_dirs[("noise", m, r)] for m in methods for r in noise_rates}
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
        # the four accuracies, a star at the best epoch (chosen by robust test accuracy), the lr drops marked
        plot_accuracies(axes[i][j], metrics[("noise", method, r)], planned[("noise", method, r)])
        axes[i][j].set_title(f"{name(method)}, noise {r}")
axes[0][0].set_ylabel("accuracy (%)")
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

    # in the smoke tier, the committed quick tier's records (memlib.showcase.explorer_runs)
    view = showcase.explorer_runs(out.project, "02_random_labels", tier, run_dirs, planned)
    shown = metrics
    if view.note:
        display(Markdown(view.note))
        shown = {key: Run(path).evaluated for key, path in view.runs.items() if key[0] == "noise"}
    shown_methods = list(dict.fromkeys(key[1] for key in shown if key[0] == "noise"))
    shown_rates = sorted({key[2] for key in shown if key[0] == "noise"})

    def show(method, noise_rate):
        fig, ax = plt.subplots(figsize=(6, 3.5))
        plot_learning_curves(ax, method, rates=(noise_rate,), study="noise", metrics=shown, configs=view.configs)
        ax.legend(fontsize=8)
        plt.show()

    widgets.interact(show, method=widgets.Dropdown(options=[(name(m), m) for m in shown_methods],
                                                   description="method"),
                     noise_rate=widgets.SelectionSlider(options=shown_rates, description="noise rate"))
else:
    fig, axes = plt.subplots(1, len(methods), figsize=(5 * len(methods), 3.6), squeeze=False)
    for ax, method in zip(axes[0], methods):
        plot_learning_curves(ax, method, rates=noise_rates, study="noise")
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
                               setting=fig2_setting)))

# %% [markdown]
# ## App. A.1: other data sets, architectures, threat models and budgets
#
# The paper repeats Fig. 2 with CIFAR-100, SVHN, DenseNet-121, DLA, the l2 threat model (eps = 1.0,
# step 0.25) and larger l-inf budgets (16/255: TRADES still memorizes; 32/255: neither reaches ~100%).
# The `paper` parameter file lists these variants; the CPU tiers skip the ones that need data or compute
# this machine does not have.

# %%
if variants:
    variant_runs = {f"{v}, {name(m)}" + ("" if len(k) == 3 else f", {labels_text(k[3])}"): run_dirs[k]
                    for v in variants for m in methods for k in planned if k[:3] == ("variant", v, m)}
    display(Markdown(out.table("appA1_variants", "final_accuracy", runs=variant_runs,
                               title="App. A.1: random labels under other settings", setting=fig2_setting)))
