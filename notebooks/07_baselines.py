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
# RunConfig values of every run (Sec. 5: ResNet-18, CIFAR-10, l-inf 8/255, PGD-10, lr 0.1 /10 at 100 and 150 of
# 200 epochs): a dict, or {"from": name} for params/bases/<name>.yaml; smoke-sec5 is notebook 06's smoke setting,
# so that the PGD-AT and PGD-AT+TE runs are its runs
base: dict = {"from": "smoke-sec5"}
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
from memlib.present import show_times

check_notebook_parameters(globals(), "07_baselines")
show_times("07_baselines")  # the measured times of its tiers (notebooks/README.md)

# %%
import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from memlib import present, showcase
from memlib.experiments import declare
from memlib.lectures import baselines as bl  # this notebook's setting lines, evaluations and tables
from memlib.present import METRIC_NAMES, show_setting
from memlib.report import Outputs
from memlib.runs import Run
from memlib.train import train_many

out = Outputs(tier, "07_baselines")
# Every config is built (and so checked) before anything trains: memlib/experiments/baselines.py declares them,
# KD-SWA's teachers first (their checkpoints' paths are known before they are trained).
declared = declare("07_baselines", globals(), out.runs, out.data)
planned, runs = declared.configs, declared.dirs
rows = {k: planned[("table2", k, seeds[0])] for k in table2_rows}  # each Table 2 row's config (first seed)
c0 = next(iter(rows.values()))
# the setting lines printed next to every result: this tier's runs (from their configs), then the paper's
settings = bl.settings(globals(), planned, rows)  # {"table2" | "table_c1" | "table_c2": its setting line}
setting = settings["table2"]
show_setting(setting)

# %% [markdown]
# ## When each baseline acts
#
# The baselines differ in *when* they change PGD-AT, and robust overfitting starts at the first learning-rate
# decay, so the timing matters. The figure shows, for this tier's configs: the learning rate (gray, log scale),
# the fraction of each batch Co-teaching keeps, $R(T)$, the TE weight relative to its maximum, and the epochs in
# which SAT updates its targets and in which SWA averages weights (shaded). Before those epochs SAT and KD-SWA's
# averaging are plain PGD-AT (KD-SWA distils from the first epoch on).

# %%
fig, ax = plt.subplots(figsize=(7.5, 3.4))
present.plot_timing(ax, rows, c0.epochs)
present.plot_lr(ax, c0, loc="lower left")
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
train_many(list(planned.values()), jobs=jobs, force=force)  # the teachers first: KD-SWA runs distill them
for path in dict.fromkeys(runs.values()):  # each run once, the teachers first
    out.add_run(path)
curves = {key: Run(path).metrics for key, path in runs.items()}

# %% [markdown]
# ## Table 2: TE against the other remedies
#
# Each run's `best` (highest PGD test accuracy during training) and `final` checkpoints are evaluated under the
# `attacks`; **Diff = best − final** is what training on cost. For KD-SWA both checkpoints are the weight
# average (from its start epoch on; before it, the plain model), for Co-teaching the first network. Cells read
# *ours (paper)*; with several seeds ours is mean ± std.

# %%
bl.evaluate_tables(globals(), runs)  # the teachers as Table 2 rows (KD-SWA's standard teacher not at all)
bl.best_final(out, globals(), runs, "table2", table2_rows, seeds, setting,
              "Table 2: PGD-AT, its extensions and TE on CIFAR-10 (best / final / diff)")
bl.show_gaps(globals(), runs)  # best − final under the first PGD attack, and the paper's

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
first_seed = {k: curves[("table2", k, seeds[0])] for k in table2_rows}
fig, axes = plt.subplots(1, 2, figsize=(10.5, 3.8))
for ax, metric in zip(axes, ("test_nat_acc", "test_rob_acc")):
    present.plot_metric(ax, first_seed, metric, c0)
    ax.set_title(METRIC_NAMES[metric])
axes[1].set_ylabel(f"robust test accuracy (PGD-{c0.eval_steps}, %)")
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
shown, shown_cfg = first_seed, c0
if interactive:  # in the smoke tier, the committed quick tier's records (memlib.showcase.explorer_runs)
    view = showcase.explorer_runs(out.project, "07_baselines", tier, runs, {})
    if view.note:
        display(Markdown(view.note))
        shown = {key[1]: Run(path).metrics for key, path in view.runs.items() if key[0] == "table2" and key[2] == 0}
        shown_cfg = next(view.configs[key] for key in view.runs if key[0] == "table2")
present.explore_curves({"Table 2": shown}, {"Table 2": shown_cfg}, interactive)

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
bl.best_final(out, globals(), runs, "table_c1", c1_rows, seeds, settings["table_c1"],
              "Table C.1: other networks (l-inf 8/255) and the l2 threat model (eps 128/255)")

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
bl.best_final(out, globals(), runs, "table_c2", c2_methods, c2_seeds, settings["table_c2"],
              f"Table C.2: Table 1(a) over {len(c2_seeds)} seeds (mean ± std)")

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
