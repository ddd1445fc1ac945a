# %% [markdown]
# # Sec. 4.2 and 5 — Mitigating robust overfitting with temporal ensembling
#
# **Robust overfitting** (Rice et al., 2020) is the signature failure of adversarial training (AT): shortly
# after the first learning-rate decay the robust *test* accuracy peaks and then falls for the rest of
# training, while the robust *training* accuracy keeps climbing. Early stopping is the best remedy Rice et
# al. found; explicit regularizers do not beat it. This notebook asks the question of Sec. 5: **if we stop
# the network from memorizing one-hot labels, does robust overfitting go away?**
#
# **Why memorization (Sec. 4.1).** AT trains every adversarial example $x'_i$ towards the one-hot label
# $y_i$. For an example close to the decision boundary the eps-ball around it reaches across that boundary,
# and a confident one-hot prediction on its worst-case point is not a sensible target: for adversarial
# examples, *some one-hot labels are noisy*. (The data set's labels are right; the one-hot target for the
# perturbed point is not.) Sec. 3 showed that AT can memorize even random labels; after the learning-rate
# decay the network does the same to these "hard" examples, and memorizing noisy labels costs test
# robustness. Two pieces of evidence in the paper: with a small eps there is no robust overfitting (Fig.
# 7b: the one-hot labels are fine in a small neighbourhood), and the hard examples are the same for two
# independently trained networks (Fig. 7c, Kendall's tau 0.85): they are a property of the data.
#
# **The remedy (Sec. 4.2): temporal ensembling (TE)** (Laine & Aila, 2017), a method for learning with
# noisy labels that, unlike filtering methods such as Co-teaching, keeps every training example (AT needs
# data). Each training example keeps a running average of the network's predictions on it,
#
# $$p_i \leftarrow \eta\, p_i + (1-\eta)\, f_\theta(x_i), \qquad \eta = 0.9,$$
#
# and training adds a penalty for moving away from that ensemble, Eq. 7:
#
# $$\min_\theta \sum_{i=1}^n \max_{x'_i\in S(x_i)} \Big[ L(f_\theta(x'_i), y_i) + w\,\big\|f_\theta(x'_i) - \hat p_i\big\|_2^2 \Big],$$
#
# where $\hat p_i$ is $p_i$ normalized to a probability vector and $w$ a weight that ramps up during
# training. The ensemble of past predictions is less confident than the one-hot label on hard examples, so
# after the learning-rate decay the network keeps predicting them with low confidence instead of fitting
# $y_i$ exactly. TRADES is combined with TE "with the same regularization term".
#
# **Where memlib follows the authors' code rather than the text** (see `memlib/methods.py` and the
# project's REFERENCE_FACTS):
#
# * *Weight.* The paper writes $w = 30$ with a squared $\ell_2$ distance (a sum over classes); the code uses
#   `te_weight = 300` times the **mean** over classes, the same thing for 10 classes. memlib keeps the
#   code's 300-with-a-mean for every data set (so on CIFAR-100 it is $w = 3$ per summed class).
# * *Ramp-up.* $w(\text{epoch}) = 300 \cdot \exp(-5(1-t)^2)$ with $t = (\text{epoch}-90)/(150-90)$: zero before
#   epoch 90, full weight from epoch 150 on. This is the sigmoid-shaped ("Gaussian") ramp-up of Laine & Aila;
#   the paper names the curve but not the epochs. The soft labels start at zero and are updated only from
#   epoch 90 on, once per epoch per example, from the *clean* input with the model in eval mode; before
#   that PGD-AT+TE is exactly PGD-AT.
# * *Normalization.* $\hat p_i = p_i / \sum_c p_{ic}$ (an $\ell_1$ normalization; it also undoes the start-up
#   bias of averaging from zero, which Laine & Aila corrected by $1/(1-\eta^t)$).
# * *Attack.* As the max in Eq. 7 says, the PGD attack maximizes CE **plus** the TE term during the TE
#   epochs, not the CE alone.
# * *TRADES+TE* puts the term on the **clean** input, $w\|f_\theta(x_i) - \hat p_i\|^2$, added to the TRADES
#   loss; its attack maximizes $\beta\,\mathrm{KL} + w\|f_\theta(x'_i)-\hat p_i\|^2$.
#
# **The paper's finding (Table 1, Fig. 8):** with TE the gap between the best checkpoint (highest PGD-10
# test accuracy) and the final one shrinks to about 1% on CIFAR-10, CIFAR-100 and SVHN, under every attack,
# and because less is lost to overfitting the final models are more robust than the baselines'.

# %% tags=["parameters"]
tier: str = "smoke"  # parameter tier: smoke | quick | paper (params/06_mitigation/<tier>.yaml)
interactive: bool = True  # False under papermill: the explorer becomes a static figure
force: bool = False  # retrain runs even if finished ones exist
jobs: int = 1  # runs trained at once in separate processes (2 suits a 2-core CPU; 1 on a single GPU)
# RunConfig values shared by every run: a dict, or {"from": name} = params/bases/<name>.yaml (plus any changes).
# Sec. 5: ResNet-18, SGD lr 0.1 decayed 10x at epochs 100 and 150 of 200, weight decay 5e-4, augmentation, PGD-10;
# TE weight 300, eta 0.9, ramp over epochs 90-150. smoke-sec5 shrinks it to seconds (and is 05's and 07's base too)
base: dict = {"from": "smoke-sec5"}
datasets: list = ["cifar10"]  # Table 1(a, b, c): cifar10 | cifar100 | svhn (only CIFAR-10 has an offline copy)
dataset_overrides: dict = {}  # dataset -> RunConfig changes, e.g. the paper's SVHN schedule (lr 0.01, cosine, 80 ep.)
methods: list = ["pgd_at", "pgd_at_te", "trades", "trades_te"]  # the rows of Table 1
finding_seeds: list = [0]  # seeds of every row (F11's interval over seeds; 0 is the row's own run)
attempts: dict = {}  # name -> {methods, seeds, changes}: deliberate tries at a finding (memlib.findings)
attacks: list = ["natural", "pgd-2", "cw-2"]  # Table 1 columns (paper: natural, pgd-10, pgd-1000, cw-1000, autoattack)
eval_n: int = 50  # class-balanced test images for Table 1 (0: the whole test set)
paper_setting: str = ("Paper (Sec. 5): ResNet-18, all training images, PGD-10 (step 2/255), 200 epochs, lr 0.1 "
                      "/10 at epochs 100 and 150, TE ramp over epochs 90-150 (SVHN: 80 epochs, lr 0.01 cosine, no "
                      "augmentation, ramp not given), evaluated on the whole test set.")

# %%
# Stop here, in one line, on a parameter this notebook does not have or a value of the wrong type
from memlib.config import check_notebook_parameters
from memlib.present import show_times

check_notebook_parameters(globals(), "06_mitigation")
show_times("06_mitigation")  # the measured times of its tiers (notebooks/README.md)

# %%
import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from memlib import present, showcase
from memlib.evaluate import evaluate_run
from memlib.experiments import declare
from memlib.methods import Context, method_spec
from memlib.paper import TABLE1
from memlib.present import DATA_NAMES, METRIC_NAMES, show_setting
from memlib.report import Outputs
from memlib.runs import Run
from memlib.train import train_many

out = Outputs(tier, "06_mitigation")
LETTERS = {"cifar10": "a", "cifar100": "b", "svhn": "c"}  # Table 1(a), (b), (c)

# Every config is built (and so checked) before anything trains: a typo in the SVHN overrides should not
# surface after the CIFAR-10 runs have taken their hours. memlib/experiments/mitigation.py declares them.
planned = declare("06_mitigation", globals(), out.runs, out.data).configs
first = {d: planned[(d, methods[0])] for d in datasets}  # a data set's schedule (the same for all its methods)
# the TE ramp-up is shaded where a run of a method with a TE schedule (memlib.methods' registration) is drawn
te_band = any("te_weight" in method_spec(m).settings for m in methods)
settings = {d: present.setting(c, tier, present.te_text(c), paper=paper_setting) for d, c in first.items()}
for d, c in first.items():
    show_setting(settings[d])
    if c.te_end > c.epochs:
        display(Markdown(f"> **Note:** on {DATA_NAMES[d]} the TE ramp ends at epoch {c.te_end}, after the last "
                         f"epoch ({c.epochs}); the TE weight never reaches its full value."))

# %% [markdown]
# ## The TE weight over training
#
# The schedule of $w$ is the one design choice of TE that interacts with the learning rate: the ramp starts
# a little before the first decay (epoch 90 of 200 in the paper; the decay comes after epoch 100), when
# robust overfitting is about to begin, and reaches its full value at the second decay. Before the ramp the
# soft labels are not even updated, so the first phase of training is plain PGD-AT or TRADES. The solid
# line is $w(\text{epoch})$ as `memlib.methods.Context(cfg, epoch).te_weight()` computes it for this tier;
# the dashed line is the learning rate.
#
# The paper gives no ramp epochs for its SVHN schedule (80 epochs, cosine). memlib keeps the CIFAR ramp at the
# same fraction of training: it starts at 0.45 and ends at 0.75 of the epochs (epochs 36-60 of 80 in the
# `paper` tier). This is our choice, not the authors'.

# %%
fig, axes = plt.subplots(1, len(datasets), figsize=(4.6 * len(datasets), 3.0), squeeze=False)
for ax, (d, c) in zip(axes[0], first.items()):
    epochs = range(1, c.epochs + 1)
    ax.plot(epochs, [Context(c, e).te_weight() for e in epochs], "o-" if c.epochs <= 20 else "-", ms=3,
            color="tab:purple", label="TE weight w")
    ax.set(xlabel="epoch", ylabel="TE weight (mean over classes)", title=DATA_NAMES[d])
    present.plot_lr(ax, c, loc="center left")
fig.tight_layout()
out.figure(fig, "te_weight_ramp", "TE weight w(epoch) (Gaussian ramp-up of Laine & Aila) and the learning rate, "
           "as configured in this tier")
plt.show()

# %% [markdown]
# ## Training the four methods of Table 1
#
# For each data set: PGD-AT, PGD-AT+TE, TRADES ($\beta = 6$) and TRADES+TE, with identical settings otherwise.
# Every epoch memlib logs natural and PGD robust accuracy on a fixed test subset and on a fixed subset of
# the training set (without augmentation), and keeps the checkpoint with the highest robust test accuracy
# as `best.pt` (ties broken by natural accuracy, as in the authors' code) and the last one as `final.pt`.
#
# Only CIFAR-10 exists offline on this machine (a JPEG-degraded copy of it; the tables name the data
# source). CIFAR-100 and SVHN are downloaded by torchvision where there is internet; the `quick` and `smoke`
# tiers therefore train on CIFAR-10 only, and Table 1(b, c) appear in the `paper` tier.

# %%
results = train_many(list(planned.values()), jobs=jobs, force=force)  # finished runs are reused
runs = {key: r.run_dir for key, r in zip(planned, results)}
for path in runs.values():
    out.add_run(path)
curves = {d: {m: Run(runs[(d, m)]).metrics for m in methods} for d in datasets}  # per data set, per method

# %% [markdown]
# ## Table 1: best and final checkpoints under several attacks
#
# Each run's `best` and `final` checkpoints are evaluated under the attacks of the `attacks` parameter (the
# paper: natural accuracy, PGD-10, PGD-1000, C&W-1000, i.e. PGD on the margin loss, and AutoAttack), on
# `eval_n` class-balanced test images (0 = the whole test set). **Diff = best − final**: how much robustness
# continuing to train cost. Robust overfitting shows as a large positive Diff under the robust attacks; a
# negative Diff in natural accuracy is normal (natural accuracy keeps improving while robustness decays).
#
# How to read the cells: *ours (paper)*. Where this tier uses an attack the paper did not run (e.g. PGD-50
# instead of PGD-1000 in the `quick` tier, PGD-2 in `smoke`) the paper's number is "–": compare a PGD-50
# column with the paper's PGD-1000 only loosely (PGD-1000 is a bit stronger). Like the paper, which picks
# the best epoch and reports it on the same 10,000 test images (which flatters "best" a little), a subset
# tier reports on the same `test_subset` images it picked the best epoch on, when `eval_n` equals
# `test_subset` (memlib evaluates the run's own test subset then). On few images each cell carries sampling
# noise of a few percent (on 500 images, the standard error of a 40% accuracy is about 2.2%).

# %%
robust_attacks = [a for a in attacks if a != "natural"]
# the attack of the one-line gap summary: the first PGD column (the paper's best epoch is chosen by PGD-10)
selection_attack = next((a for a in robust_attacks if a.startswith("pgd")), (robust_attacks or [None])[0])
# Table 1's own runs under every attack; the other seeds and the attempts under natural and that attack only
few = [a for a in ("natural", selection_attack) if a in attacks]
# a render from records (`python -m memlib render`) evaluates only the runs whose weights are here: the others'
# cells stay "–" until a run of the tier trains them again
evals = {key: evaluate_run(path, attacks if len(key) == 2 else few, n=eval_n, missing_weights="skip")
         for key, path in runs.items()}
command = f"python -m memlib reproduce --tier {tier} --only 06_mitigation"
if note := present.not_evaluated(evals, runs, eval_n, command):
    display(Markdown(note))

for d in datasets:
    letter = LETTERS.get(d, "")
    display(Markdown(out.table(f"table1{letter}_{d}", "table1", runs={m: runs[(d, m)] for m in methods},
                               dataset=d, attacks=attacks, n=eval_n,
                               title=f"Table 1({letter}): test accuracy of the best and final checkpoints on "
                                     f"{DATA_NAMES[d]}", setting=settings[d])))
    if selection_attack:
        cells = {m: evals[(d, m)] for m in methods}
        display(Markdown(present.gap_summary(
            selection_attack, {m: present.diff_points(e, selection_attack) for m, e in cells.items()},
            TABLE1.get(d, {}),
            {m: f"best epoch {e['best']['epoch']} of {e['final']['epoch']}" for m, e in cells.items()
             if e["best"]["epoch"] is not None})))
    if len(finding_seeds) > 1:  # every row at every seed: mean ± std (F11's interval: FINDINGS.md)
        display(Markdown(out.table(
            f"table1{letter}_{d}_seeds", "best_final", paper="table_c2" if d == "cifar10" else "",
            runs={m: [runs[(d, m, "seed", s)] for s in finding_seeds] for m in methods}, attacks=few, n=eval_n,
            title=f"Table 1({letter}) over seeds {finding_seeds}: best and final checkpoints on {DATA_NAMES[d]}",
            setting=settings[d])))
for a, spec in attempts.items():  # deliberate attempts (criteria: docs/criteria.md; verdicts: FINDINGS.md)
    display(Markdown(out.table(f"attempt_{a}", "best_final", paper="", attacks=few, n=eval_n,
                               runs={k[2]: runs[k] for k in planned if k[:2] == ("attempt", a)},
                               title=f"{a}: {', '.join(f'{k} {v}' for k, v in (spec.get('changes') or {}).items())}",
                               setting=settings[datasets[0]])))

# %% [markdown]
# **What the paper found.** On CIFAR-10 the best-minus-final PGD-10 gap of PGD-AT is **7.72** points (52.64%
# at the best epoch, 44.92% at the end); with TE it is **0.96** (55.79% → 54.83%). TRADES overfits less to
# begin with (3.07) and TE brings it to 0.73. The same holds under PGD-1000, C&W-1000 and AutoAttack (PGD-AT
# 5.90 → 0.97 under AutoAttack), so the effect is not an artefact of the attack used to choose the best
# epoch. On CIFAR-100 the PGD-10 gap goes from 7.65 to 1.50 (PGD-AT) and 2.23 to 0.97 (TRADES); on SVHN
# from 7.54 to 0.69 and 2.46 to 1.32. TE also raises the *best* robust accuracy (55.79% vs 52.64% for PGD-AT
# on CIFAR-10), at a small cost in natural accuracy for PGD-AT.
#
# **What to look for here.** The question is whether the TE rows have a smaller robust Diff than their
# baselines. That needs robust overfitting to happen in the first place: a tier too short or too small to
# memorize its training set has Diffs near zero (or negative, if robustness is still rising at the end) for
# every method, and then the table says nothing about TE. The `smoke` tier trains for seconds on 100 images
# and only checks that the notebook runs; the `quick` tier's executed notebook and `outputs/quick/FINDINGS.md`
# say what a small real run shows.
#
# ## Fig. 8: test accuracy during training
#
# Natural (left) and robust (right, PGD on the per-epoch test subset) test accuracy of the four methods,
# one figure per data set. Dotted vertical lines: learning-rate decays; shaded band: the TE ramp-up; stars:
# each run's best epoch (the `best.pt` of Table 1). In the paper's Fig. 8 (CIFAR-10) the PGD-AT and TRADES
# robust curves jump at the first decay (epoch 100) and then slide down for the remaining 100 epochs,
# while the +TE curves jump as high or higher and stay flat.

# %%
for d, c in first.items():
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, metric in zip(axes, ("test_nat_acc", "test_rob_acc")):
        present.plot_metric(ax, curves[d], metric, c, te_band=te_band)
        for m in methods if len(finding_seeds) > 1 else []:  # mean ± std over seeds
            present.plot_band(ax, [Run(runs[(d, m, "seed", s)]).metrics for s in finding_seeds], metric,
                              color=present.COLORS.get(m))
        ax.set_title(f"{DATA_NAMES[d]}: {METRIC_NAMES[metric]}" + (" (cosine lr)" if c.lr_schedule == "cosine" else ""))
    axes[1].set_ylabel(f"robust test accuracy (PGD-{c.eval_steps}, %)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    out.figure(fig, f"fig8_learning_curves_{d}",
               f"Fig. 8 ({DATA_NAMES[d]}): natural and PGD-{c.eval_steps} robust test accuracy per epoch; dotted: "
               f"lr decays, band: TE ramp-up (epochs {c.te_start}-{c.te_end}), stars: best epochs. {settings[d]}")
    plt.show()

# %% [markdown]
# **How to read it.** Robust overfitting is the robust curve of a baseline peaking right after a decay and
# then declining; TE should flatten that decline. The natural curves usually keep rising (or stay flat)
# through the end: robust overfitting is specifically a loss of robustness. On a test subset of a few hundred
# images the per-epoch robust accuracy jitters by a couple of points, so judge the trend, not single epochs,
# and remember that the best epoch of a noisy curve is partly chosen by noise.
#
# ## Explorer: what does TE change during training?
#
# Pick a data set, methods and a metric. *Robust training accuracy* and the *robust gap* (train − test) show
# the memorization side of the story: after the decay the baselines' robust training accuracy climbs towards
# 100% (they fit the one-hot labels of the hard examples, too) while TE holds it lower, and the gap between
# training and test robustness is what robust overfitting looks like from the training set. Stars mark the
# best epochs. (In a headless run this shows the robust metrics of every method at once instead.)

# %%
groups, cfgs = {DATA_NAMES[d]: curves[d] for d in datasets}, {DATA_NAMES[d]: c for d, c in first.items()}
if interactive:  # in the smoke tier, the committed quick tier's records (memlib.showcase.explorer_runs)
    view = showcase.explorer_runs(out.project, "06_mitigation", tier, runs, planned)
    if view.note:
        display(Markdown(view.note))
        groups, cfgs = {}, {}
        for key, path in view.runs.items():
            if len(key) == 2:  # Table 1's runs: (data set, method)
                groups.setdefault(DATA_NAMES[key[0]], {})[key[1]] = Run(path).metrics
                cfgs.setdefault(DATA_NAMES[key[0]], view.configs[key])
present.explore_curves(groups, cfgs, interactive, te_band=te_band)

# %% [markdown]
# ## Summary
#
# The paper's argument runs from Sec. 3 to here: AT can memorize (even random labels); for adversarial
# examples some one-hot labels are effectively noisy; memorizing them after the learning-rate decay is what
# robust overfitting is; and a noisy-label method that keeps all the data, temporal ensembling, removes most
# of the best-to-final gap (to about 1% in Table 1) while improving the final robustness. Sec. 5 also
# compares TE with label smoothing, self-adaptive training, KD-SWA and Co-teaching (Table 2): all of them
# reduce robust overfitting to some degree, and PGD-AT+TE is the most robust of them, while Co-teaching pays
# for filtering data with lower accuracy. Table 2 is not reproduced in this notebook.
