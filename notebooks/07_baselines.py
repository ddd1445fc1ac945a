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
# # Sec. 5 and App. C.2 — Other remedies for robust overfitting, other networks, other threat models, other seeds
#
# Notebook 06 showed the paper's remedy: temporal ensembling (TE) keeps the network from fitting the one-hot
# labels of the "hard" adversarial examples, and the best-to-final drop of robust accuracy (robust overfitting)
# nearly disappears. This notebook asks the three questions a careful reader asks next:
#
# 1. **Is TE better than what was already known?** (Table 2) Four published remedies also make training
#    targets or weights smoother: label smoothing, self-adaptive training, knowledge distillation with
#    stochastic weight averaging, and Co-teaching. Dong et al. read them all as answers to the problem they
#    identify — *one-hot labels are noisy for adversarial examples* — and compare them with TE on CIFAR-10.
# 2. **Does the finding depend on ResNet-18 and the l-inf threat model?** (Table C.1) The same comparison of
#    PGD-AT and PGD-AT+TE on WRN-34-10 and VGG-16, and of all four Table 1 methods under an l2 threat model.
# 3. **Is a 7-point gap a fluke of one training run?** (Table C.2) Table 1(a) over three seeds, mean ± std.
#
# Every table is built from the runs' metric files, with the paper's number in parentheses after ours.
#
# ## The baselines, one equation each
#
# All of them are PGD-AT (Eq. 1-2: train on $x'_i$, the PGD-10 maximizer of the cross-entropy in the
# eps-ball around $x_i$) with one change. Where Dong et al. do not give a baseline's hyper-parameters, memlib
# takes the cited paper's defaults (its code where the text is silent), as the docstrings in
# `memlib/methods.py` record.
#
# **PGD-AT + label smoothing (LS)** (Szegedy et al. 2016, studied for AT by Pang et al. 2021, "Bag of tricks
# for adversarial training"): the one-hot target is replaced by
# $\tilde y_i = (1-s)\,\mathrm{onehot}(y_i) + s/C$, a fixed amount of probability spread over all classes, for
# every example alike. Dong et al. do not state $s$; we use $s = 0.1$, a value Pang et al. evaluated and the
# usual one (`label_smoothing: 0.1`; a row of `pgd_at` with that key). The attack still maximizes the plain CE.
#
# **Self-adaptive training (SAT)** (Huang, Zhang & Zhang 2020): each example keeps a target $t_i$ (one-hot at
# first) that moves towards the network's own prediction, $t_i \leftarrow \alpha t_i + (1-\alpha) f_\theta(x_i)$,
# from epoch $E_s$ on, and the loss is the cross-entropy to $t_i$, weighted by the confidence $w_i=\max_c t_{ic}$:
# $-\sum_i w_i \sum_c t_{ic}\log f_\theta(x'_i)_c / \sum_i w_i$. Examples the network keeps disagreeing with
# get soft targets and low weight. Defaults $\alpha = 0.9$, $E_s = 70$ (of 200) from the SAT authors' TRADES+SAT
# script (method `pgd_at_sat`).
#
# **KD-SWA** (Chen et al. 2021, "Robust overfitting may be mitigated by properly learned smoothening"):
# distil from an *early-stopped* adversarially trained teacher $f_{\mathrm{rob}}$ (a PGD-AT run's best
# checkpoint — exactly the model robust overfitting has not yet hurt), optionally also from a standard-trained
# teacher $f_{\mathrm{std}}$, on the student's adversarial examples:
#
# $$(1-\lambda_r-\lambda_s)\,\mathrm{CE}(f_\theta(x'), y) + \lambda_r T^2\,\mathrm{KL}\big(\sigma(f_{\mathrm{rob}}(x')/T)\,\|\,\sigma(f_\theta(x')/T)\big) + \lambda_s T^2\,\mathrm{KL}\big(\sigma(f_{\mathrm{std}}(x')/T)\,\|\,\sigma(f_\theta(x')/T)\big),$$
#
# and smooth the *weights* too: from epoch $E_{\mathrm{swa}}$ on, the model that is evaluated and saved is the
# running average of the weights after each epoch, $\bar\theta = \frac1n\sum_e \theta_e$ (stochastic weight
# averaging, `torch.optim.swa_utils.AveragedModel`), whose BatchNorm statistics are recomputed with one pass over
# the clean training images after every update. Defaults from Chen et al.'s code: $T = 2$, $\lambda_r = 0.6$,
# $\lambda_s = 0.1$ (CE weight 0.3), SWA from 5 epochs after the first learning-rate decay (their epoch 56 with
# a decay after 50; here epoch 106 with the decay after 100). Two choices are ours: the BN pass sees the training
# images without augmentation (Chen et al. used their augmented loader), and a tier may leave out the standard
# teacher, in which case the CE weight is 0.4 (method `kd_swa`).
#
# **Co-teaching** (Han et al. 2018), adapted to PGD-AT: two networks with different initializations train
# side by side; each computes the adversarial loss of every example of the batch, keeps the fraction
# $R(T) = 1-\tau\min(T/T_k, 1)$ with the *smallest* loss (after $T$ epochs) — examples it believes have
# clean labels — and its **peer** is updated on those. The two networks filter each other's mistakes instead of
# confirming their own. Han et al. set $\tau$ to the known noise rate and $T_k = 10$; for adversarial examples
# no noise rate is known and Dong et al. give none, so we take $\tau = 0.2$ (the default noise rate of Han et
# al.'s code) and $T_k = 10$. The first network is the one evaluated (method `coteaching`; both networks'
# parameters sit in one SGD optimizer, which is the same as two optimizers because each loss depends on one
# network only).
#
# **PGD-AT + TE** is the paper's method (notebook 06, Eq. 7).
#
# The common thread: LS smooths every target by the same amount; SAT, TE and KD replace the one-hot target with
# a learned, example-specific one (the network's own past predictions, or a teacher's); SWA smooths the weights;
# Co-teaching drops the examples that look noisy. Dong et al. note that these methods did not come with an
# explanation of robust overfitting and "could be viewed as solutions to our identified problem". A reading of
# Table 2 that fits their explanation (ours, not a claim of the paper): the methods that adapt the target *per
# example* while keeping all the data (TE, SAT, KD) do best, label smoothing, which treats all labels alike, least.

# %% tags=["parameters"]
tier: str = "smoke"  # parameter tier: smoke | quick | paper (params/07_baselines/<tier>.yaml)
interactive: bool = True  # False under papermill: the explorer becomes a static figure
force: bool = False  # retrain runs even if finished ones exist
jobs: int = 1  # runs trained at once in separate processes (2 suits a 2-core CPU; 1 on a single GPU)
# RunConfig values shared by every run (Sec. 5: ResNet-18, CIFAR-10, l-inf 8/255, PGD-10, lr 0.1 /10 at 100 and
# 150 of 200 epochs), here notebook 06's smoke setting, so that the PGD-AT and PGD-AT+TE runs are shared with it
base: dict = dict(model="resnet18", width=0.0625, train_subset=100, test_subset=100, train_eval_subset=100,
                  epochs=3, batch_size=50, steps=2, eval_steps=2, augment=True, weight_decay=5e-4, lr=0.1,
                  lr_schedule="multistep", lr_milestones=[2], te_weight=300.0, te_start=2, te_end=3,
                  te_momentum=0.9, eval_batch_size=500)
seeds: list = [0]  # seeds of the Table 2 and C.1 runs; several give mean ± std in every cell
tables: list = ["table2", "table_c1", "table_c2"]  # which tables this tier makes
# Table 2 rows: key -> RunConfig changes on `base` (the keys name the rows of memlib.paper.TABLE2)
table2_rows: dict = {"pgd_at": {"method": "pgd_at"},
                     "pgd_at_ls": {"method": "pgd_at", "label_smoothing": 0.1},
                     "pgd_at_sat": {"method": "pgd_at_sat", "sat_start": 2},
                     "kd_swa": {"method": "kd_swa", "swa_start": 2},
                     "coteaching": {"method": "coteaching", "coteach_gradual": 1},
                     "pgd_at_te": {"method": "pgd_at_te"}}
kd_teacher_row: str = "pgd_at"  # the row whose best.pt (same seed) is KD-SWA's robust teacher
kd_std_teacher: dict = {"method": "standard"}  # changes on `base` of KD-SWA's standard teacher run ({}: none)
attacks: list = ["natural", "pgd-2", "cw-2"]  # Tables 2 and C.2 (paper: natural, pgd-10, pgd-1000, cw-1000, autoattack)
eval_n: int = 50  # class-balanced test images for the tables (0: the whole test set)
# Table C.1 rows: key "method|network|norm" (rows of memlib.paper.TABLE_C1) -> RunConfig changes on `base`
c1_rows: dict = {"pgd_at|wrn-34-10|linf": {"method": "pgd_at", "model": "wrn-34-10"},
                 "pgd_at_te|wrn-34-10|linf": {"method": "pgd_at_te", "model": "wrn-34-10"},
                 "pgd_at|vgg16|linf": {"method": "pgd_at", "model": "vgg16"},
                 "pgd_at_te|vgg16|linf": {"method": "pgd_at_te", "model": "vgg16"},
                 "pgd_at|resnet18|l2": {"method": "pgd_at", "norm": "l2", "eps": 128 / 255, "alpha": 15 / 255},
                 "pgd_at_te|resnet18|l2": {"method": "pgd_at_te", "norm": "l2", "eps": 128 / 255, "alpha": 15 / 255},
                 "trades|resnet18|l2": {"method": "trades", "norm": "l2", "eps": 128 / 255, "alpha": 15 / 255},
                 "trades_te|resnet18|l2": {"method": "trades_te", "norm": "l2", "eps": 128 / 255, "alpha": 15 / 255}}
c1_attacks: list = ["natural", "pgd-2"]  # Table C.1 columns (paper: natural, pgd-10)
c2_methods: list = ["pgd_at", "pgd_at_te", "trades", "trades_te"]  # Table C.2 rows (Table 1(a) over seeds)
c2_seeds: list = [0, 1, 2]  # Table C.2 seeds (paper: 3 runs)
paper_setting: str = ("Paper: ResNet-18 (C.1: also WRN-34-10, VGG-16), all training images, PGD-10 (step 2/255), "
                      "200 epochs, lr 0.1 /10 at epochs 100 and 150, evaluated on the whole test set.")

# %%
# Stop here, in one line, on a parameter this notebook does not have or a value of the wrong type
from memlib.config import check_notebook_parameters
check_notebook_parameters(globals(), "07_baselines")

# %%
import matplotlib.pyplot as plt
from IPython.display import Markdown, display
from matplotlib.ticker import MaxNLocator

from memlib.config import RunConfig
from memlib.evaluate import evaluate_run
from memlib.methods import Context
from memlib.paper import METHOD_NAMES, TABLE2
from memlib.report import Outputs
from memlib.runs import read_metrics, run_dir_for
from memlib.train import lr_at, train_many

out = Outputs(tier, "07_baselines")
COLORS = {"pgd_at": "tab:blue", "pgd_at_ls": "tab:cyan", "pgd_at_sat": "tab:green", "kd_swa": "tab:purple",
          "coteaching": "tab:brown", "pgd_at_te": "tab:orange"}


def make_cfg(changes: dict, seed: int) -> RunConfig:
    return RunConfig(**out.run_config(**{**base, **changes, "seed": seed}))


# KD-SWA's teachers are other runs of this notebook: their checkpoints' paths are known before they are trained
teacher_cfgs = {s: make_cfg(table2_rows[kd_teacher_row], s) for s in seeds}
std_teacher_cfgs = {s: make_cfg(kd_std_teacher, s) for s in seeds} if kd_std_teacher else {}


def kd_changes(seed: int) -> dict:
    changes = {"kd_teacher": str(run_dir_for(teacher_cfgs[seed])[0] / "best.pt")}  # early-stopped robust teacher
    if std_teacher_cfgs:
        changes["kd_std_teacher"] = str(run_dir_for(std_teacher_cfgs[seed])[0] / "final.pt")
    return changes


# Every config is built (and so checked) before anything trains.
cfgs = {("table2", key, s): make_cfg({**ch, **(kd_changes(s) if ch.get("method") == "kd_swa" else {})}, s)
        for key, ch in table2_rows.items() for s in seeds}
if "table_c1" in tables:
    cfgs.update({("table_c1", key, s): make_cfg(ch, s) for key, ch in c1_rows.items() for s in seeds})
if "table_c2" in tables:
    cfgs.update({("table_c2", m, s): make_cfg({"method": m}, s) for m in c2_methods for s in c2_seeds})
c0 = next(iter(cfgs.values()))


def schedule_text(c: RunConfig) -> str:
    if c.lr_schedule == "multistep":
        return (f"lr {c.lr} /{round(1 / c.lr_decay)} after epoch{'s' * (len(c.lr_milestones) > 1)} "
                f"{', '.join(map(str, c.lr_milestones))}")
    return f"lr {c.lr} {c.lr_schedule}"


def seeds_text(row_seeds: list) -> str:
    return f"seed{'s' * (len(row_seeds) > 1)} {', '.join(map(str, row_seeds))}"


def row_cfg(key: str) -> RunConfig:
    return cfgs[("table2", key, seeds[0])]


def baseline_text() -> str:
    """The baselines' hyper-parameters in this tier."""
    parts = []
    if "pgd_at_ls" in table2_rows:
        parts.append(f"LS s = {row_cfg('pgd_at_ls').label_smoothing:g}")
    if "pgd_at_sat" in table2_rows:
        c = row_cfg("pgd_at_sat")
        parts.append(f"SAT alpha {c.sat_momentum:g} from epoch {c.sat_start}")
    if "kd_swa" in table2_rows:
        c = row_cfg("kd_swa")
        teachers = "robust" + (" + standard" if c.kd_std_teacher else "") + " teacher"
        parts.append(f"KD-SWA: {teachers}, T {c.kd_temperature:g}, weights {c.kd_weight:g}"
                     + (f"/{c.kd_std_weight:g}" if c.kd_std_teacher else "") + f", SWA from epoch {c.swa_start}")
    if "coteaching" in table2_rows:
        c = row_cfg("coteaching")
        parts.append(f"Co-teaching tau {c.coteach_forget_rate:g}, T_k {c.coteach_gradual}")
    return "; ".join(parts)


# the `setting` strings printed next to every result: this tier's runs, then the paper's
core = (f"This run ({tier} tier): CIFAR-10, {c0.model} at width {c0.width}, {c0.train_subset or 'all'} training "
        f"images ({'with' if c0.augment else 'no'} augmentation), {c0.epochs} epochs, {schedule_text(c0)}, "
        f"PGD-{c0.steps} in training, best epoch by PGD-{c0.eval_steps} on {c0.test_subset or 'all'} test images, "
        f"TE weight {c0.te_weight:g} ramped over epochs {c0.te_start}-{c0.te_end}")
setting = f"{core}, {seeds_text(seeds)}; {baseline_text()}. {paper_setting}"
l2 = [c for k, c in cfgs.items() if k[0] == "table_c1" and c.norm == "l2"]
c1_setting = (f"{core}, {seeds_text(seeds)}" + (f"; l2 rows: PGD step {l2[0].alpha * 255:g}/255 (our assumption)"
                                                  if l2 else "") + f". {paper_setting}")
c2_setting = f"{core}, {seeds_text(c2_seeds)}. {paper_setting}"
display(Markdown(f"> {setting}"))

# %% [markdown]
# ## When each baseline acts
#
# The baselines differ in *when* they change PGD-AT, and robust overfitting starts at the first learning-rate
# decay, so the timing matters. The figure shows, for this tier's configs: the learning rate (gray, log scale),
# the fraction of each batch Co-teaching keeps, $R(T)$, the TE weight relative to its maximum, and the epochs in
# which SAT updates its targets and in which SWA averages weights (shaded). Before those epochs SAT and KD-SWA's
# averaging are plain PGD-AT (KD-SWA distils from the first epoch on).

# %%
epochs = range(1, c0.epochs + 1)
fig, ax = plt.subplots(figsize=(7.5, 3.4))
if "coteaching" in table2_rows:
    c = row_cfg("coteaching")
    ax.plot(epochs, [1 - Context(c, e).forget_rate() for e in epochs], color=COLORS["coteaching"],
            label="Co-teaching: fraction of the batch kept")
if "pgd_at_te" in table2_rows:
    c = row_cfg("pgd_at_te")
    ax.plot(epochs, [Context(c, e).te_weight() / c.te_weight for e in epochs], color=COLORS["pgd_at_te"],
            label="TE weight / maximum")
if "pgd_at_sat" in table2_rows:
    ax.axvspan(row_cfg("pgd_at_sat").sat_start - 0.5, c0.epochs + 0.5, color=COLORS["pgd_at_sat"], alpha=0.12,
               label="SAT updates its targets")
if "kd_swa" in table2_rows:
    ax.axvspan(row_cfg("kd_swa").swa_start - 0.5, c0.epochs + 0.5, ymax=0.5, fill=False, hatch="//",
               edgecolor=COLORS["kd_swa"], lw=0, label="SWA averages the weights")
ax.set(xlabel="epoch", ylabel="fraction", ylim=(0, 1.05))
ax.xaxis.set_major_locator(MaxNLocator(integer=True))
ax2 = ax.twinx()
ax2.plot(epochs, [lr_at(c0, e) for e in epochs], "--", color="gray", drawstyle="steps-mid", label="learning rate")
ax2.set_yscale("log")
ax2.set_ylabel("learning rate (log scale)", color="gray")
handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
ax.legend(handles, [h.get_label() for h in handles], fontsize=7, loc="lower left")
fig.tight_layout()
out.figure(fig, "baseline_schedules", f"When the Table 2 baselines act in this tier. {setting}")
plt.show()

# %% [markdown]
# ## Training
#
# KD-SWA needs its teacher first: the `pgd_at` row's run of the same seed (its `best.pt`, the checkpoint with the
# highest PGD test accuracy, i.e. early-stopped PGD-AT) and, where configured, a standard-training run (its
# `final.pt`). Those are trained first, then everything else. Runs shared with notebook 06 (PGD-AT, PGD-AT+TE,
# TRADES, TRADES+TE on the same base) are the same runs and are reused. The Co-teaching row trains two
# networks, so it costs about twice a PGD-AT run.

# %%
first = list(teacher_cfgs.values()) + list(std_teacher_cfgs.values())
done = {r.run_dir.name for r in train_many(first, jobs=jobs, force=force)}
train_many([c for c in cfgs.values() if run_dir_for(c)[0].name not in done], jobs=jobs, force=force)
runs = {key: run_dir_for(c)[0] for key, c in cfgs.items()}
for path in [run_dir_for(c)[0] for c in first] + list(runs.values()):
    out.add_run(path)
curves = {key: read_metrics(path) for key, path in runs.items()}

# %% [markdown]
# ## Table 2: TE against the other remedies
#
# Each run's `best` (highest PGD test accuracy during training) and `final` checkpoints are evaluated under the
# `attacks`; **Diff = best − final** is what training on cost. For KD-SWA both checkpoints are the weight
# average (from its start epoch on; before it, the plain model), for Co-teaching the first network. Cells read
# *ours (paper)*; with several seeds ours is mean ± std.

# %%
for key, path in runs.items():
    evaluate_run(path, c1_attacks if key[0] == "table_c1" else attacks, n=eval_n)


def by_row(table: str, keys, row_seeds) -> dict:
    return {k: [runs[(table, k, s)] for s in row_seeds] for k in keys}


display(Markdown(f"> {setting}"))
display(Markdown(out.table("table2", "best_final", runs=by_row("table2", table2_rows, seeds), paper="table2",
                           attacks=attacks, n=eval_n, setting=setting,
                           title="Table 2: PGD-AT, its extensions and TE on CIFAR-10 (best / final / diff)")))
robust = next((a for a in attacks if a.startswith("pgd")), None)
if robust:
    def gap(key):
        cells = [evaluate_run(runs[("table2", key, s)], [robust], n=eval_n, log=lambda m: None) for s in seeds]
        return sum(100 * (r["best"][robust] - r["final"][robust]) for r in cells) / len(cells)
    ours = ", ".join(f"{METHOD_NAMES.get(k, k)} {gap(k):+.2f}" for k in table2_rows)
    paper = ", ".join(f"{METHOD_NAMES.get(k, k)} {TABLE2[k]['pgd-10']['diff']:+.2f}"
                      for k in table2_rows if k in TABLE2)
    display(Markdown(f"**Best − final under {robust}, this run:** {ours}.  \n**Paper, PGD-10:** {paper}."))

# %% [markdown]
# **What the paper found.** Every remedy shrinks PGD-AT's PGD-10 gap of 7.72 points, LS the least (4.80; it
# smooths every label alike, and even raises the final natural accuracy), SAT (0.50), KD-SWA (1.09) and
# Co-teaching (0.75) about as much as TE (0.96). The difference is in the level: PGD-AT+TE has the highest best and
# final robust accuracy under PGD-10, PGD-1000 and C&W-1000 (55.79 / 54.83 under PGD-10, against 54.89 / 53.80 for
# KD-SWA, the next); under AutoAttack its best checkpoint is the most robust (50.59) and its final one a little
# below KD-SWA's and SAT's (49.62 vs 49.83 and 49.73). Co-teaching pays for discarding examples: at the best
# checkpoint its PGD-10 and PGD-1000 accuracies are even below plain PGD-AT's. KD-SWA has the best natural
# accuracy, a gift of its teacher and the averaging.
#
# **What to look for here.** First, whether PGD-AT overfits at all in this tier (a clearly positive robust Diff);
# without it, the other rows' Diffs mean nothing. Then whether the baselines reduce it, and at what level of
# robustness they end. Small tiers add noise: on a few hundred test images a cell moves by a couple of points.
#
# ## Learning curves of the Table 2 methods
#
# Natural and robust test accuracy per epoch (first seed); stars mark the best epochs. KD-SWA's curve switches to
# the averaged model at its SWA start, which is why it flattens: an average of weights changes slowly.

# %%
METRIC_NAMES = {"test_rob_acc": "robust test accuracy", "test_nat_acc": "natural test accuracy",
                "train_rob_acc": "robust training accuracy", "train_nat_acc": "natural training accuracy",
                "rob_gap": "robust gap (train - test)", "train_loss": "training loss"}


def plot_metric(ax, keys, metric):
    """One curve per Table 2 row (first seed) of a metrics.jsonl key, or "rob_gap" = train - test robust."""
    for k in keys:
        need = ("train_rob_acc", "test_rob_acc") if metric == "rob_gap" else (metric,)
        rows = [r for r in curves[("table2", k, seeds[0])] if all(n in r for n in need)]
        if not rows:
            continue
        ep = [r["epoch"] for r in rows]
        ys = [(r["train_rob_acc"] - r["test_rob_acc"]) if metric == "rob_gap" else r[metric] for r in rows]
        ax.plot(ep, ys, color=COLORS.get(k), label=METHOD_NAMES.get(k, k))
        if metric != "train_loss" and "test_rob_acc" in rows[0]:
            b = max(rows, key=lambda r: (r["test_rob_acc"], r["test_nat_acc"]))["epoch"]
            ax.plot([b], [ys[ep.index(b)]], "*", color=COLORS.get(k), ms=10, mec="k", mew=0.5)
    for e in range(2, c0.epochs + 1):
        if lr_at(c0, e) < lr_at(c0, e - 1):
            ax.axvline(e - 0.5, color="gray", ls=":", lw=1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch", ylabel=METRIC_NAMES.get(metric, metric))


fig, axes = plt.subplots(1, 2, figsize=(10.5, 3.8))
for ax, metric in zip(axes, ("test_nat_acc", "test_rob_acc")):
    plot_metric(ax, table2_rows, metric)
    ax.set_title(METRIC_NAMES[metric])
axes[1].set_ylabel(f"robust test accuracy (PGD-{c0.eval_steps})")
axes[0].legend(fontsize=7)
fig.tight_layout()
out.figure(fig, "table2_learning_curves", f"Natural and PGD-{c0.eval_steps} test accuracy per epoch of the Table 2 "
           f"methods (seed {seeds[0]}); dotted: lr decays; stars: best epochs. {setting}")
plt.show()

# %% [markdown]
# ## Explorer
#
# Pick methods and a metric. *Robust training accuracy* and the *robust gap* show the memorization side: after the
# decay plain PGD-AT fits its training set's adversarial examples ever better while its test robustness falls;
# the remedies hold the training fit back, each in its own way (Co-teaching by not training on the examples with
# the largest loss at all). (In a headless run this shows three metrics for every method.)

# %%
if interactive:
    import ipywidgets as widgets

    def show(methods_shown, metric):
        fig, ax = plt.subplots(figsize=(6.5, 3.8))
        plot_metric(ax, methods_shown, metric)
        if methods_shown:
            ax.legend(fontsize=8)
        plt.show()

    widgets.interact(show,
                     methods_shown=widgets.SelectMultiple(options=[(METHOD_NAMES.get(k, k), k) for k in table2_rows],
                                                          value=tuple(table2_rows), description="methods"),
                     metric=widgets.Dropdown(options=[(v, k) for k, v in METRIC_NAMES.items()], value="test_rob_acc",
                                             description="metric"))
else:
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    for ax, metric in zip(axes, ("test_rob_acc", "train_rob_acc", "rob_gap")):
        plot_metric(ax, table2_rows, metric)
        ax.set_title(METRIC_NAMES[metric])
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    plt.show()

# %% [markdown]
# ## Table C.1: other networks and the l2 threat model
#
# The same best/final comparison for PGD-AT and PGD-AT+TE on a wide network (WRN-34-10, 46M parameters) and a
# network without skip connections (VGG-16), both under l-inf 8/255, and for all four Table 1 methods on ResNet-18
# under an **l2** threat model with $\epsilon = 128/255$: the perturbation may change the image by at most 0.5 in
# Euclidean norm, so it can make a few large pixel changes instead of many small ones. The l2 PGD steps along the
# normalized gradient, $x' \leftarrow \Pi(x' + \alpha\,\nabla/\|\nabla\|_2)$, from $x + 0.001\,\mathcal N(0, I)$
# (the authors' code). Dong et al. give no l2 step size; we use $\alpha = 15/255$, the value commonly paired
# with 128/255 (Rice et al. 2020's l2 setting, as we recall it; an assumption). The row labels name our runs'
# network and threat model; the paper's number is for the network in the row key.
#
# **What the paper found.** TE shrinks the PGD-10 gap on every network and threat model: WRN-34-10 6.31 → 2.67,
# VGG-16 5.50 → 0.77, and under l2 PGD-AT 3.09 → 0.65 and TRADES 4.15 → 0.29, with higher best and final robust
# accuracy throughout. Robust overfitting is milder under l2 to begin with.

# %%
if "table_c1" in tables:
    display(Markdown(f"> {c1_setting}"))
    display(Markdown(out.table("table_c1", "best_final", runs=by_row("table_c1", c1_rows, seeds), paper="table_c1",
                               attacks=c1_attacks, n=eval_n, setting=c1_setting,
                               title="Table C.1: other networks (l-inf 8/255) and the l2 threat model (eps 128/255)")))
else:
    display(Markdown(f"*Table C.1 is not part of the {tier} tier (see params/07_baselines/{tier}.yaml).*"))

# %% [markdown]
# ## Table C.2: Table 1(a) over three seeds
#
# The four Table 1 methods trained with `c2_seeds` (the seed sets the initialization, the batch order, the
# augmentation and the attacks' random starts; the data are the same). Each cell is the mean ± sample standard
# deviation over the seeds, Diff computed seed by seed.
#
# **What the paper found.** The spread between seeds is small, 0.01-0.36 points in every cell, far below the
# differences between methods: PGD-AT's PGD-10 gap is 7.71 ± 0.11, PGD-AT+TE's 0.92 ± 0.07. The conclusion of
# Table 1 is not a lucky run. On a small tier the spread is much larger (few test images, short training), so
# compare a method's mean difference with its std before reading anything into it.

# %%
if "table_c2" in tables:
    display(Markdown(f"> {c2_setting}"))
    display(Markdown(out.table("table_c2", "best_final", runs=by_row("table_c2", c2_methods, c2_seeds),
                               paper="table_c2", attacks=attacks, n=eval_n, setting=c2_setting,
                               title=f"Table C.2: Table 1(a) over {len(c2_seeds)} seeds (mean ± std)")))
else:
    display(Markdown(f"*Table C.2 is not part of the {tier} tier (see params/07_baselines/{tier}.yaml).*"))

# %% [markdown]
# ## Summary
#
# Sec. 5 ends the paper's argument with a comparison: the remedies that smooth the training targets per example or
# smooth the weights (SAT, KD-SWA, TE) all but remove robust overfitting, label smoothing helps less, Co-teaching
# removes it but ends less robust, which the paper attributes to the training data it throws away, and TE, which
# keeps all the data and only softens the targets the network itself finds hard, ends with the most robust model
# under every attack but AutoAttack's final checkpoint. Appendix C.2 shows the
# effect holds on WRN-34-10, VGG-16 and under l2, and over seeds. The settings the paper does not state (LS
# amount, the baselines' hyper-parameters, the l2 step size) are the cited papers' defaults or ours, as listed
# above; the published setting is the `paper` tier's parameter file.
