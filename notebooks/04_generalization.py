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
# # Sec. 3.3 — Can complexity measures explain robust generalization?
#
# Sec. 3.1 (notebook `02_random_labels`) showed that adversarial training (AT), TRADES in particular, can
# memorize the adversarial examples of a training set whose labels are **random**. Such a model has the
# largest generalization gap there is: ~100% robust training accuracy on labels that carry no information,
# chance-level accuracy on the test set. The same network, trained the same way on the **true** labels,
# generalizes (not perfectly: the robust gap of AT is large even then). So what distinguishes the two?
#
# **Why complexity measures.** Classical learning theory bounds the generalization gap of a model by a
# *complexity* of the function it computes: a norm of its weights, a margin, the sharpness of its minimum.
# "Low complexity implies a small gap" is the promise; a measure keeps it only if it **ranks models by their
# gap**. Explicit regularizers are not the answer (Table A.1: augmentation, weight decay and dropout do not stop
# TRADES from memorizing random labels; App. A.3), so, as for standard training (Zhang et al. 2017; Neyshabur
# et al. 2017; Jiang et al. 2020), one looks for a measure of the *trained model*. Random labels make a sharp
# test: whatever the measure, a random-label model has to come out **more complex** than a true-label model,
# because its gap is larger. Dong et al. take four recently proposed measures:
#
# * two **norm-based** ones, made scale-insensitive by a margin $\gamma_{\text{margin}}$ on the model's output
#   (Neyshabur et al. 2017), for a network with weights $\theta = \{W_i\}_{i=1}^m$:
#   $$\text{spectral: } \frac{1}{\gamma_{\text{margin}}^2}\prod_{i=1}^m \|W_i\|_2, \qquad
#     \ell_1\text{: } \frac{1}{\gamma_{\text{margin}}}\sum_{i=1}^m \|W_i\|_1 .$$
#   The spectral norm enters the robust generalization bounds of Yin et al. (2018) and Tu et al. (2019) and
#   bounds the Lipschitz constant of the network (Cisse et al. 2017); the $\ell_1$ norm is the regularizer that
#   Yin et al. propose to shrink the robust gap;
# * two **sharpness/flatness** ones: the **curvature of the input loss landscape** (Moosavi-Dezfooli et al.
#   2019), the dominant eigenvalue of the Hessian $\nabla_x^2 L(f_\theta(x), y)$, and the **flatness of the
#   weight loss landscape** (Wu et al. 2020): how much the *adversarial* loss rises when the weights move along
#   a random direction.
#
# **The paper's finding (Fig. 6):** plotted against the robust generalization gap of TRADES models trained with
# the regularizer combinations of Table A.1 on true and random labels, the first three measures do not order
# the models: models trained on random labels, whose gap is far larger, can even have **lower** complexity
# than those trained on true labels. Only the flatness of the weight loss landscape is fairly reliable. Robust
# generalization, the paper concludes, remains unexplained. App. A.3 adds an experiment on the role of the
# optimizer (Fig. A.10), at the end of this notebook.

# %% tags=["parameters"]
tier: str = "smoke"  # parameter tier: smoke | quick | paper (params/04_generalization/<tier>.yaml)
interactive: bool = True  # False under papermill: the explorer becomes a static figure
force: bool = False  # retrain runs even if finished ones exist (the measurements are redone too)
jobs: int = 1  # runs trained at once in separate processes (2 suits a 2-core CPU; 1 on a single GPU)
# RunConfig values of the Sec. 3.1 runs: params/02_random_labels/<tier>.yaml's `base`, value for value, so that the
# models of Fig. 6 are 02's runs (same identity: reused, not trained again)
base: dict = dict(model="resnet18", width=0.0625, train_subset=100, test_subset=100, train_eval_subset=100,
                  epochs=3, batch_size=50, steps=2, eval_steps=2, augment=False, weight_decay=0.0, lr=0.1,
                  lr_schedule="constant", eval_batch_size=500)
regularizers: dict = dict(weight_decay=2e-4, dropout=0.2)  # Table A.1's values (02's `regularizers`)
# Fig. 6 models, "method|noise rate|augmentation|weight decay|dropout", built exactly as 02 builds its runs of
# Fig. 2 (method, noise rate) and Table A.1 (TRADES with regularizers)
models: list = ["pgd_at|0.0|no|no|no", "pgd_at|0.5|no|no|no", "pgd_at|1.0|no|no|no", "trades|0.0|no|no|no",
                "trades|0.5|no|no|no", "trades|1.0|no|no|no", "trades|1.0|yes|no|no"]
# Fig. 6 measurements (memlib.analysis.COMPLEXITY_DEFAULTS) on each model's final weights and its own training
# examples: `examples` measured (0 = all), PGD `steps` of the robust margin and the adversarial loss (the run's
# eps and step), margin percentile, Hessian examples and power iterations, flatness size `gamma` and number of
# random `directions`, the 1-D landscape's points and examples, the `seed` of directions and attack starts
measure: dict = dict(examples=100, steps=2, margin_percentile=5.0, robust_margin=True, hessian_examples=20,
                     hessian_iters=5, gamma=0.5, directions=2, curve=[-1.0, -0.5, 0.0, 0.5, 1.0], curve_examples=20,
                     seed=0)
# App. A.3 / Fig. A.10: TRADES on true labels from a random or an "adversarial" initialization
adv_init: str = "trades|1.0|no|no|no"  # the model (format of `models`) whose final weights are the adversarial init
a10_base: dict = dict(epochs=3, eval_every=1, train_eval_subset=50)  # RunConfig changes to `base` for the A.10 runs
sgd: dict = {"vanilla": dict(momentum=0.0, weight_decay=0.0, augment=False),  # the two "training methods"
             "SOTA": dict(momentum=0.9, weight_decay=5e-4, augment=True)}
paper_setting: str = ("Paper: WRN-28-10, all 50,000 CIFAR-10 images, PGD-10, 200 epochs (lr 0.1, /10 every 100); "
                      "Fig. 6: the 12 TRADES models of Table A.1.")

# %%
# Stop here, in one line, on a parameter this notebook does not have or a value of the wrong type
from memlib.config import check_notebook_parameters
check_notebook_parameters(globals(), "04_generalization")

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display
from matplotlib.ticker import MaxNLocator

from memlib import analysis
from memlib.config import RunConfig
from memlib.report import Outputs, taus_with_gap
from memlib.runs import read_metrics, read_run, run_dir_for
from memlib.train import lr_at, train_many

out = Outputs(tier, "04_generalization")
S = analysis.complexity_settings(measure)  # every measurement setting, defaults filled in
setting = (f"This run ({tier} tier): {base['model']} at width {base.get('width', 1.0)}, "
           f"{base.get('train_subset') or 'all'} training images, {base['epochs']} epochs, PGD-{base['steps']} "
           f"in training and PGD-{base['eval_steps']} for robust accuracy, eps 8/255; measures on "
           f"{S['examples'] or 'all'} training examples (Hessian: {S['hessian_examples'] or 'all'}, "
           f"{S['hessian_iters']} iterations; flatness: {S['directions']} directions at {S['gamma']:g}, "
           f"PGD-{S['steps']}). {paper_setting}")
display(Markdown(f"> {setting}"))
NAMES = {"pgd_at": "PGD-AT", "trades": "TRADES"}


def config(**changes) -> RunConfig:
    """The RunConfig of one run: the tier's base values plus ``changes`` (as in 02_random_labels)."""
    return RunConfig(**out.run_config(**{**base, **changes}))


def model_config(spec: str) -> RunConfig:
    """A model of `models`: 02's Fig. 2 runs config(method, noise_rate) and Table A.1 runs (TRADES with
    augmentation / weight decay / dropout set explicitly) are the same configs when the base has no
    regularizer, as in every tier of 02."""
    method, rate, aug, wd, do = spec.split("|")
    return config(method=method, noise_rate=float(rate), augment=aug == "yes",
                  weight_decay=regularizers["weight_decay"] if wd == "yes" else 0.0,
                  dropout=regularizers["dropout"] if do == "yes" else 0.0)


def model_label(spec: str) -> str:
    method, rate, aug, wd, do = spec.split("|")
    r = float(rate)
    labels = "true labels" if r == 0 else "random labels" if r == 1 else f"noise {r:g}"
    regs = [name for name, flag in (("aug.", aug), ("WD", wd), ("dropout", do)) if flag == "yes"]
    return f"{NAMES.get(method, method)}, {labels}" + (f" + {' + '.join(regs)}" if regs else "")


# Every run, planned first (a bad setting stops before any training) ...
fig6_cfgs = {spec: model_config(spec) for spec in models}
adv_cfg = model_config(adv_init)
adv_dir = run_dir_for(adv_cfg)[0]  # known before training: the run folder follows from the config
a10_cfgs = {}
for init in ("random", "adversarial"):
    for name, changes in sgd.items():
        a10_cfgs[(init, name)] = config(**{**a10_base, **changes, "method": "trades", "noise_rate": 0.0,
                                           "init_from": str(adv_dir / "final.pt") if init == "adversarial" else ""})
# ... then trained, `jobs` at a time: first the models (02's runs, normally reused) and the adversarial
# initialization, then the A.10 runs that start from its final weights.
stage1 = train_many([*fig6_cfgs.values(), adv_cfg], jobs=jobs, force=force)
fig6_dirs = {spec: r.run_dir for spec, r in zip(models, stage1)}
adv_result = stage1[-1]
stage2 = train_many(list(a10_cfgs.values()), jobs=jobs, force=force)
a10_dirs = {key: r.run_dir for key, r in zip(a10_cfgs, stage2)}
for path in [*fig6_dirs.values(), adv_result.run_dir, *a10_dirs.values()]:
    out.add_run(path)
reused = sum(r.reused for r in stage1[:len(models)])
display(Markdown(f"{reused} of the {len(models)} Fig. 6 models were finished runs already (02_random_labels' runs "
                 f"of this tier, reused); {len(models) - reused} were trained now."))

# %% [markdown]
# ## The four measures, as computed here
#
# Every measure is taken on the model's **final weights** (`final.pt`) and on its **own training examples with
# the labels it was trained on** (the random ones for a random-label model; memlib saves them in the run's
# `labels.npz`), in eval mode (BatchNorm uses its running statistics), by `memlib.analysis.run_complexity`. The
# results are saved in the run folder (`complexity.json`, keyed by the measurement settings) and reused.
#
# * **Margin.** $\gamma_{\text{margin}}$ is a low percentile (the 5th, after Neyshabur et al. 2017; the paper
#   gives no value) of the per-example margins $f(x)_y - \max_{j\neq y} f(x)_j$ on the logits. For *robust*
#   generalization we take them at the PGD adversarial examples of the training set (the `robust_margin`
#   setting): $\gamma_{\text{margin}} > 0$ then means that at least 95% of the examples are robustly fitted. A
#   model that does not fit its training set has $\gamma_{\text{margin}} \le 0$, and the two norm-based
#   measures are undefined for it ("–").
# * **Spectral** $\prod_i \|W_i\|_2 / \gamma_{\text{margin}}^2$ over the conv and linear layers, each kernel
#   reshaped to a matrix (out, in·k·k) (the usual approximation of a convolution's operator norm; BatchNorm's
#   affine maps are not counted). The product of ~20 norms (21 in a ResNet-18) spans orders of magnitude, so we
#   report its log10.
# * **$\ell_1$** $\sum_i \|W_i\|_1 / \gamma_{\text{margin}}$, the entrywise $\ell_1$ norms.
# * **Input-Hessian curvature**: the top eigenvalue $\lambda_{\max}$ of $H = \nabla_x^2 L(f_\theta(x), y)$ for each
#   example, by **power iteration** $v \leftarrow Hv/\|Hv\|$ with Hessian-vector products (the gradient of
#   $\nabla_x L \cdot v$, a double backward pass, never forming $H$: 3,072×3,072 per image), averaged over the
#   examples (on natural inputs, as in Moosavi-Dezfooli et al.'s CURE). For a ReLU network $H$ is positive
#   semi-definite, so the Rayleigh quotient $v^\top H v$ of the last iterate is the largest eigenvalue.
# * **Weight-landscape flatness** (Wu et al. 2020): with $\rho(\theta)$ the mean PGD adversarial loss over the
#   training examples,
#   $$\text{flatness} = \mathbb{E}_d\left[\rho(\theta + \gamma_w d)\right] - \rho(\theta),$$
#   $d$ a Gaussian direction normalized **filter-wise** to the norms of the filters of $\theta$ (Li et al.
#   2018; so $\gamma_w = 0.5$ moves every filter by half its norm), averaged over a few directions, the attack
#   regenerated at every point. Larger = sharper. The paper gives neither $\gamma_w$ nor the number of
#   directions; ours are in the parameters. (Wu et al. also perturb the weights adversarially in AWP; the paper
#   describes the measure with a random direction, which we follow.)

# %%
t0 = time.time()
cx = {spec: analysis.run_complexity(fig6_dirs[spec], measure, force=force, log=print) for spec in models}
last = {spec: [m for m in read_metrics(fig6_dirs[spec]) if "train_rob_acc" in m and "test_rob_acc" in m][-1]
        for spec in models}
gap = {spec: 100 * (last[spec]["train_rob_acc"] - last[spec]["test_rob_acc"]) for spec in models}
noise = {spec: float(spec.split("|")[1]) for spec in models}
measured = sum(sum(c["seconds"].values()) for c in cx.values())
display(Markdown(f"Measurements: {time.time() - t0:.0f} s here (results saved in the run folders are reused; "
                 f"measuring all {len(models)} models took {measured:.0f} s on "
                 f"{', '.join(sorted({c['device'] for c in cx.values()}))})."))

# %% [markdown]
# ## Fig. 6: complexity vs robust generalization gap
#
# One point per model: x = its **robust generalization gap**, the robust training accuracy (PGD, on the labels
# it was trained on) minus the robust test accuracy at the last epoch (from the run's `metrics.jsonl`); y = a
# complexity measure. Triangles: true labels; circles: random labels; squares: partly random labels. Colour:
# the training method. **How to read it:** a measure that explains robust generalization rises from left to
# right, i.e. the models line up along an increasing curve, and in particular every random-label circle (far
# right, since a memorized random labelling has a huge gap) sits *above* every true-label triangle. The table
# below gives each model's numbers and **Kendall's rank correlation τ** between each measure and the gap:
# +1 when the measure orders the models exactly as their gaps, 0 when unrelated (for the margin, which divides
# the norms, −1 would be the "good" direction). In the paper's Fig. 6 the x-axis runs from 50% to 100%: the
# robust gaps of the 12 TRADES models of Table A.1 (48% to 62% on true labels, 69% to 99% on random ones).

# %%
MEASURES = {"spectral_log10": "log10 (Π‖W‖₂ / γ²)", "l1": "Σ‖W‖₁ / γ", "hessian": "input-Hessian λmax",
            "flatness": "weight-landscape flatness"}
MARKERS = {0.0: "^", 1.0: "o"}  # partly random labels: squares
COLORS = {"pgd_at": "tab:blue", "trades": "tab:red"}


def scatter(ax, key, highlight=None):
    """One panel of Fig. 6: measure `key` against the robust gap, one marker per model."""
    shown = 0
    for spec in models:
        y = cx[spec].get(key)
        if y is None:
            continue
        method = spec.split("|")[0]
        regularized = "yes" in spec.split("|")[2:]
        ax.scatter(gap[spec], y, marker=MARKERS.get(noise[spec], "s"), s=90 if spec == highlight else 45,
                   facecolors="none" if regularized else COLORS.get(method, "gray"),
                   edgecolors="k" if spec == highlight else COLORS.get(method, "gray"), linewidths=1.5)
        shown += 1
    if not shown:
        ax.text(0.5, 0.5, "undefined for every model:\nmargin ≤ 0 (no model fits\nits training set)",
                ha="center", va="center", transform=ax.transAxes, fontsize=8)
    ax.set(xlabel="robust generalization gap (%)", ylabel=MEASURES.get(key, key))


def legend(ax):
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="^", ls="", color="gray", label="true labels"),
               Line2D([], [], marker="o", ls="", color="gray", label="random labels"),
               Line2D([], [], marker="s", ls="", color="gray", label="partly random labels"),
               Line2D([], [], marker="o", ls="", mfc="none", color="gray", label="with a regularizer")]
    handles += [Line2D([], [], marker="o", ls="", color=c, label=NAMES[m]) for m, c in COLORS.items()
                if any(s.startswith(m + "|") for s in models)]
    ax.legend(handles=handles, fontsize=7)


fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
for ax, key in zip(axes, MEASURES):
    scatter(ax, key)
legend(axes[0])
fig.tight_layout()
out.figure(fig, "fig6_complexity_vs_gap", f"Fig. 6: four complexity measures vs the robust generalization gap "
           f"(triangles: true labels, circles: random, squares: partly random). {setting}")
plt.show()

fig6_runs = {model_label(spec): fig6_dirs[spec] for spec in models}
display(Markdown(out.table("fig6_complexity", "complexity", runs=fig6_runs, settings=S,
                           title="Fig. 6: complexity measures, robust generalization gap and their Kendall τ",
                           setting=setting)))

# %% [markdown]
# ### What the paper found, and what we see
#
# **Paper.** The spectral and $\ell_1$ measures and the input-Hessian curvature fail the random-label test:
# models trained on random labels, with robust gaps of 69-99%, can have *lower* complexity than models trained
# on true labels, with gaps of 48-62% (Table A.1). The flatness of the weight loss landscape is the one measure
# that separates them fairly well. The paper's conclusion is negative: these measures "cannot adequately explain and
# ensure" robust generalization. (It offers no mechanism. One reading, ours: AT flattens the *input* landscape
# around every training point by design, whatever the labels, so input curvature cannot tell memorization from
# generalization; the weight landscape, in contrast, records how precariously the training set is fitted.)
#
# **Here.** The summary below is computed from the table above (so it is true of whatever tier you ran).
# Differences from the paper to keep in mind: a much smaller network (ResNet-18 at a fraction of its width,
# not WRN-28-10) trained on a few hundred images rather than 50,000, so even the true-label models generalize
# poorly (their robust gaps come close to those of random labels) and every number is noisier; a handful of
# models, so a single swapped pair moves τ by 2/(n(n−1)/2); measures on a subset of the training
# set; the models of Sec. 3.1's runs, which add PGD-AT models and partly random labels to the paper's TRADES
# models, and models that do not fit their training set (their margin is negative: no norm-based value, and a
# small gap only because they learned nothing). The `quick` tier's executed notebook and
# `outputs/quick/FINDINGS.md` record what this showed on real data.

# %%
def lower_than_true(key):
    """(random-label models with a value below at least one true-label model's, random-label models with a value)."""
    true = [cx[s][key] for s in models if noise[s] == 0 and cx[s].get(key) is not None]
    rand = [cx[s][key] for s in models if noise[s] == 1 and cx[s].get(key) is not None]
    return (sum(v < max(true) for v in rand) if true else 0), len(rand)


# Kendall's tau of each measure over the models where it is defined, and over the models where all four are:
# taus over different sets of models are not comparable (the models that fit nothing have small gaps)
values, gaps = {k: [cx[s].get(k) for s in models] for k in MEASURES}, [gap[s] for s in models]
(own, own_n), (common, common_n) = taus_with_gap(values, gaps), taus_with_gap(values, gaps, common=True)
lines = []
for i, (key, name) in enumerate(MEASURES.items()):
    low, n_rand = lower_than_true(key)
    if not own_n[i]:
        lines.append(f"* **{name}**: undefined for every model (margin ≤ 0: no model fits its training set).")
        continue
    tau_text = "undefined" if np.isnan(own[i]) else f"{own[i]:+.2f}"
    common_text = "undefined" if np.isnan(common[i]) else f"{common[i]:+.2f}"
    lines.append(f"* **{name}**: Kendall τ with the gap {tau_text} over {own_n[i]} models ({common_text} over the "
                 f"{common_n[i]} models where every measure is defined); {low} of {n_rand} random-label models have "
                 f"a *lower* value than at least one true-label model.")
fit = {model_label(s): f"{100 * cx[s]['fit']:.0f}%" for s in models}
display(Markdown("\n".join(lines) + "\n\nShare of the measured training examples each model fits (margin > 0, "
                 f"i.e. {'robustly' if S['robust_margin'] else 'naturally'} correct): "
                 + ", ".join(f"{k} {v}" for k, v in fit.items()) + f".\n\n> {setting}"))

# %% [markdown]
# ## The weight loss landscape along one random direction
#
# Flatness is one number per model; the curve behind it is more telling. Below, for each model, the mean
# adversarial loss $\rho(\theta + \lambda d)$ along the first filter-normalized direction $d$ of the flatness
# measure, on a subset of its training examples ($\lambda = 0$ is the trained model; the flatness averages
# $\rho(\theta + \gamma_w d) - \rho(\theta)$ over several directions). Wu et al. (2020) find that a flatter
# adversarial weight landscape goes with a smaller robust gap: look for the random-label models' curves rising
# faster away from $\lambda = 0$. (Their minima may also lie *lower*: the training loss of a memorized labelling
# can be small.)

# %%
def plot_curve(ax, spec, **kw):
    """The saved 1-D landscape of a model: solid = random labels, dashed = true, dotted = partly random; a hollow
    marker = trained with a regularizer."""
    c = cx[spec].get("curve")
    if c:
        method = spec.split("|")[0]
        color = COLORS.get(method, "gray")
        ax.plot(c["lambda"], c["loss"], marker=MARKERS.get(noise[spec], "s"), ms=5, color=color,
                mfc="none" if "yes" in spec.split("|")[2:] else color,
                ls="-" if noise[spec] == 1 else "--" if noise[spec] == 0 else ":", label=model_label(spec), **kw)


fig, ax = plt.subplots(figsize=(7, 4))
for spec in models:
    plot_curve(ax, spec)
ax.axvspan(-S["gamma"], S["gamma"], color="gray", alpha=0.08, lw=0)
ax.set(xlabel="λ (step along a filter-normalized random direction)",
       ylabel=f"adversarial loss (PGD-{S['steps']})", yscale="log",
       title="1-D weight loss landscape of each model")
ax.legend(fontsize=7)
fig.tight_layout()
out.figure(fig, "fig6_weight_landscape", f"Adversarial loss along a filter-normalized random direction in weight "
           f"space (the first direction of the flatness measure; band: ±γ_w), on {S['curve_examples'] or 'all'} "
           f"training examples. {setting}")
plt.show()
display(Markdown(f"> On {S['curve_examples'] or 'all'} training examples per model. {setting} (The paper shows no "
                 f"such curves; Wu et al. 2020 do, for models trained on true labels.)"))

# %% [markdown]
# ## Explorer: walk along the direction yourself
#
# Pick a model, a measure and a step λ. Left: that panel of Fig. 6 with the model circled. Right: the model's
# saved landscape curve, and the adversarial loss at your λ **computed now** (PGD on the same training examples,
# the same direction and attack start, so at the saved λs it lands on the curve; a few seconds on a CPU; the
# weights `final.pt` must be on this machine). (In a headless run this shows every model's curve and its
# flatness points instead.)

# %%
if interactive:
    import ipywidgets as widgets

    from memlib.evaluate import load_weights

    live: dict = {}  # (model, lambda) -> loss computed in this session
    loaded: dict = {}

    def live_loss(spec, lam):
        if (spec, lam) not in live:
            if spec not in loaded:
                run_dir = fig6_dirs[spec]
                cfg, _ = read_run(run_dir)
                model, _ = load_weights(run_dir, S["checkpoint"], "cpu")
                x, y = analysis.complexity_examples(run_dir, S)
                k = S["curve_examples"] or len(y)
                loaded[spec] = (cfg, model, x[:k], y[:k])
            cfg, model, x, y = loaded[spec]
            live[(spec, lam)] = analysis.adversarial_loss_along_direction(
                model, x, y, [lam], eps=cfg.eps, alpha=cfg.alpha, steps=S["steps"], norm=cfg.norm,
                seed=S["seed"]).item()
        return live[(spec, lam)]

    def show(spec, key, lam):
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
        scatter(ax1, key, highlight=spec)
        plot_curve(ax2, spec)
        try:
            value = live_loss(spec, round(lam, 3))
            pts = sorted((lm, v) for (s, lm), v in live.items() if s == spec)
            ax2.plot([p[0] for p in pts], [p[1] for p in pts], "k*", ms=9, label="computed now")
            ax2.set_title(f"ρ(θ + {lam:+.2f} d) = {value:.3f}")
        except Exception as exc:  # e.g. final.pt not on this machine (checkpoints are not committed)
            ax2.set_title(f"not computed: {type(exc).__name__}", fontsize=8)
        ax2.set(xlabel="λ", ylabel="adversarial loss", yscale="log")
        ax2.legend(fontsize=7)
        fig.tight_layout()
        plt.show()

    widgets.interact(show,
                     spec=widgets.Dropdown(options=[(model_label(s), s) for s in models], description="model"),
                     key=widgets.Dropdown(options=[(v, k) for k, v in MEASURES.items()], value="flatness",
                                          description="measure"),
                     lam=widgets.FloatSlider(value=S["gamma"], min=-1.0, max=1.0, step=0.05, continuous_update=False,
                                             description="λ"))
else:
    cols = min(4, len(models))
    rows = -(-len(models) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.9 * rows), squeeze=False)
    for ax, spec in zip(axes.flat, models):
        plot_curve(ax, spec)
        ax.plot([S["gamma"]] * len(cx[spec]["perturbed"]), cx[spec]["perturbed"], "k*", ms=7)
        ax.plot([0], [cx[spec]["adv_loss"]], "ko", ms=4)
        ax.set(title=f"{model_label(spec)}\nflatness {cx[spec]['flatness']:.3g}, gap {gap[spec]:.0f}%",
               xlabel="λ", yscale="log")
        ax.title.set_fontsize(8)
    for ax in list(axes.flat)[len(models):]:
        ax.axis("off")
    fig.tight_layout()
    plt.show()

# %% [markdown]
# ## App. A.3 / Fig. A.10: does a bad initialization hurt adversarial training?
#
# If explicit regularizers and complexity measures do not explain generalization, the optimizer might: App. A.3
# notes that, as in standard training (Arpit et al. 2017), AT reaches its best test accuracy before it fits the
# noisy labels (Figs. A.6/A.7: it learns simple patterns first), so "optimization by itself serves as an implicit
# regularizer". Liu et al. (2020b) showed that in standard training SGD can be *led* to a bad minimum: pre-train
# on a random labelling of the training set (an "adversarial initialization"), then train on the true labels,
# and plain SGD ends far below a randomly initialized network, while SGD with the usual regularizers recovers.
# Dong et al. repeat this with TRADES (PGD-AT does not converge on random labels), in a 2×2 design:
#
# * **initialization**: random, or the weights of a TRADES model trained on random labels of the same training
#   images (here: the final weights of the `adv_init` model of Sec. 3.1, loaded through the run key
#   `init_from`);
# * **training method**: *vanilla SGD* (no momentum, no weight decay, no augmentation) or *SOTA SGD* (momentum
#   0.9, weight decay, random crop + flip). The paper names the ingredients, not the values: weight decay
#   5e-4 (the value of the paper's Sec. 5 training) is our choice.
#
# **The paper's finding:** with vanilla SGD the adversarial initialization ends with *worse* natural and robust
# test accuracy than the random one; with SOTA SGD both converge to nearly the same accuracy, as in Liu et al.
# Solid lines: natural test accuracy; dashed: robust (PGD) test accuracy; blue: random init; red: adversarial.

# %%
a10_any = next(iter(a10_cfgs.values()))


def describe(changes: dict) -> str:
    """RunConfig changes of a training method in words, e.g. "momentum 0.9, weight decay 0.0005, augmentation"."""
    words = {"momentum": "momentum {}", "weight_decay": "weight decay {}", "lr": "lr {}", "nesterov": "Nesterov {}"}
    parts = [("augmentation" if v else "no augmentation") if k == "augment" else words.get(k, k + " {}").format(v)
             for k, v in changes.items()]
    return ", ".join(parts)


schedule = a10_any.lr_schedule + (f", /10 every {a10_any.lr_step_every}" if a10_any.lr_schedule == "step" else "")
a10_setting = (f"This run ({tier} tier): TRADES on the true labels of {a10_any.train_subset or 'all'} training images, "
               f"{a10_any.model} at width {a10_any.width}, {a10_any.epochs} epochs, lr {a10_any.lr} ({schedule}), "
               f"batch {a10_any.batch_size}, PGD-{a10_any.steps}, test accuracy on "
               f"{a10_any.test_subset or 'all'} test images every {a10_any.eval_every} epoch(s); "
               + "; ".join(f"{name} SGD: {describe(changes)}" for name, changes in sgd.items())
               + "; adversarial init = final weights of "
               f"{model_label(adv_init)} ({adv_cfg.epochs} epochs). Paper: WRN-28-10 (Sec. 3's setting), all 50,000 "
               f"images, 200 epochs, initialized from TRADES trained on random labels.")
a10_curves = {key: [m for m in read_metrics(path) if "test_rob_acc" in m] for key, path in a10_dirs.items()}
INIT_COLORS = {"random": "tab:blue", "adversarial": "tab:red"}
INIT_NAMES = {"random": "rand", "adversarial": "adv"}  # the paper's legend

fig, axes = plt.subplots(1, len(sgd), figsize=(5.2 * len(sgd), 3.6), squeeze=False)
for ax, name in zip(axes[0], sgd):
    for init in ("random", "adversarial"):
        rows = a10_curves[(init, name)]
        ep = [m["epoch"] for m in rows]
        ax.plot(ep, [m["test_nat_acc"] for m in rows], color=INIT_COLORS[init], marker=".",
                label=f"{INIT_NAMES[init]} init; natural acc.")
        ax.plot(ep, [m["test_rob_acc"] for m in rows], color=INIT_COLORS[init], ls="--", marker=".",
                label=f"{INIT_NAMES[init]} init; robust acc.")
    cfg = a10_cfgs[("random", name)]
    for e in range(2, cfg.epochs + 1):
        if lr_at(cfg, e) < lr_at(cfg, e - 1):
            ax.axvline(e - 0.5, color="gray", ls=":", lw=1)
    ax.set(title=f"{name} SGD", xlabel="epoch", ylabel="test accuracy", ylim=(0, 1.0))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
axes[0][0].legend(fontsize=7)
fig.tight_layout()
out.figure(fig, "figA10_init_curves", f"Fig. A.10: natural and robust test accuracy of TRADES from a random vs an "
           f"adversarial initialization, with vanilla and SOTA SGD (dotted: lr decay). {a10_setting}")
plt.show()

display(Markdown(out.table("figA10_final_accuracy", "init_comparison",
                           runs={f"{init}|{name}": a10_dirs[(init, name)] for init in ("random", "adversarial")
                                 for name in sgd},
                           title="Fig. A.10: TRADES from a random vs an adversarial initialization",
                           setting=a10_setting)))

# %% [markdown]
# **How to read it.** Compare the red and blue curves within a panel: under vanilla SGD the paper's red curves
# (adversarial init) stay below the blue ones to the end; under SOTA SGD they meet. Differences from the paper:
# the `quick` tier trains a small ResNet-18 on 500 images for a fraction of the epochs (the lr decay at the same
# relative point, half-way), from the Sec. 3.1 random-label TRADES run of the same images; its test accuracy on a
# few hundred test images moves by a few points between evaluations, so only a difference larger than that means
# something. With so little data and so few steps, vanilla SGD (no momentum: an effective step 10× smaller than
# with momentum 0.9) may barely leave either initialization; that is itself a difference from the paper's 200
# epochs on 50,000 images.
#
# ## Summary
#
# Sec. 3.3's message is a negative one: the complexity measures proposed to explain (robust) generalization —
# norms over margins and the curvature of the input loss — do not separate models that memorized random labels
# from models that generalize, and only the flatness of the weight loss landscape comes close. App. A.3 points at
# the optimizer as part of the answer: explicit regularizers do not prevent memorization, but the way SGD is run
# (momentum, weight decay, augmentation) decides whether a bad starting point is escaped. Sec. 4 turns from
# memorization of random labels to what memorization does with *true* labels: robust overfitting.
