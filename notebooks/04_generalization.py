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
# *complexity* of the function it computes: a norm of its weights, a margin, the sharpness of its minimum. "Low
# complexity implies a small gap" is the promise; a measure keeps it only if it **ranks models by their gap**.
# Explicit regularizers are not the answer (Table A.1: augmentation, weight decay and dropout do not stop TRADES
# from memorizing random labels; App. A.3), so, as for standard training (Zhang et al. 2017; Neyshabur et al.
# 2017; Jiang et al. 2020), one looks for a measure of the *trained model*. Random labels make a sharp test: a
# random-label model has to come out **more complex** than a true-label model, because its gap is larger. Dong et
# al. take four recently proposed measures:
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
# RunConfig values of the Sec. 3.1 runs: the shared Sec. 3 base that 02_random_labels names too
# (params/bases/<tier>-sec3.yaml), so that the models of Fig. 6 are 02's runs (same identity: reused, not trained again)
base: dict = {"from": "smoke-sec3"}
regularizers: dict = dict(weight_decay=2e-4, dropout=0.2)  # Table A.1's values (02's `regularizers`)
# Fig. 6 models, "method|noise rate|augmentation|weight decay|dropout", built exactly as 02 builds its runs of
# Fig. 2 (method, noise rate) and Table A.1 (TRADES with regularizers)
models: list = ["pgd_at|0.0|no|no|no", "pgd_at|0.5|no|no|no", "pgd_at|1.0|no|no|no", "trades|0.0|no|no|no",
                "trades|0.5|no|no|no", "trades|1.0|no|no|no", "trades|1.0|yes|no|no"]
# Fig. 6 measurements (memlib.analysis.COMPLEXITY_DEFAULTS) on each model's final weights and own training examples:
# `examples` (0 = all), PGD `steps` of the robust margin and adversarial loss (at the run's eps and step), margin
# percentile, Hessian examples and iterations, flatness size `gamma` and random `directions`, the 1-D landscape's
# points and examples, the `seed` of directions and attack starts
measure: dict = dict(examples=100, steps=2, margin_percentile=5.0, robust_margin=True, hessian_examples=20,
                     hessian_iters=5, gamma=0.5, directions=2, curve=[-1.0, -0.5, 0.0, 0.5, 1.0], curve_examples=20,
                     seed=0)
# App. A.3 / Fig. A.10: TRADES on true labels from a random or an "adversarial" initialization
adv_init: str = "trades|1.0|no|no|no"  # the model (format of `models`) whose final weights are the adversarial init
a10_base: dict = dict(epochs=3, eval_every=1, train_eval_subset=50)  # RunConfig changes to `base` for the A.10 runs
sgd: dict = {"vanilla": dict(momentum=0.0, weight_decay=0.0, augment=False),  # the two "training methods"
             "SOTA": dict(momentum=0.9, weight_decay=5e-4, augment=True)}
paper_setting: str = ("Paper: WRN-28-10, all 50,000 CIFAR-10 images, PGD-10, 150 epochs in Fig. 2 (200 in Figs. "
                      "A.6, A.7, A.10; lr 0.1, /10 every 100); Fig. 6: the 12 TRADES models of Table A.1.")

# %%
# Stop here, in one line, on a parameter this notebook does not have or a value of the wrong type
from memlib.config import check_notebook_parameters
from memlib.present import show_times

check_notebook_parameters(globals(), "04_generalization")
show_times("04_generalization")  # the measured times of its tiers (notebooks/README.md)

# %%
import time

import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from memlib import analysis, showcase
from memlib.experiments import declare
from memlib.lectures import generalization as gen  # this notebook's figures and computations
from memlib.present import curve, setting, show_setting
from memlib.report import Outputs
from memlib.runs import Run
from memlib.train import train_many

out = Outputs(tier, "04_generalization")
planned = declare("04_generalization", globals(), out.runs, out.data).configs  # every run, built before training
fig6 = {spec: planned[("fig6", spec)] for spec in models}
a10 = {key[1:]: cfg for key, cfg in planned.items() if key[0] == "a10"}  # (init, SGD) -> config
S = analysis.complexity_settings(measure)  # every measurement setting, defaults filled in
fig6_setting = setting(fig6[models[0]], tier, gen.measures_text(S), paper=paper_setting)
show_setting(fig6_setting)
# Trained `jobs` at a time: the models (02's runs, normally reused) and adv. init, then the A.10 runs from its
# weights (train_many trains a run after the runs whose checkpoints it starts from)
results = dict(zip(planned, train_many(list(planned.values()), jobs=jobs, force=force)))
fig6_dirs = {spec: results[("fig6", spec)].run_dir for spec in models}
a10_dirs = {key: results[("a10", *key)].run_dir for key in a10}
for path in dict.fromkeys([*fig6_dirs.values(), results[("adv_init",)].run_dir, *a10_dirs.values()]):
    out.add_run(path)
reused = sum(results[("fig6", spec)].reused for spec in models)
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
gap = {spec: curve(Run(fig6_dirs[spec]).evaluated, "rob_gap")[1][-1] for spec in models}  # last evaluated epoch, %
display(Markdown(gen.timing_text(cx, time.time() - t0)))

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
fig = gen.fig6_figure(cx, gap, models)  # a panel per measure (gen.MEASURES)
out.figure(fig, "fig6_complexity_vs_gap", f"Fig. 6: four complexity measures vs the robust generalization gap "
           f"(triangles: true labels, circles: random, squares: partly random). {fig6_setting}")
plt.show()

display(Markdown(out.table("fig6_complexity", "complexity", runs={gen.model_label(s): fig6_dirs[s] for s in models},
                           settings=S, title="Fig. 6: complexity measures, robust generalization gap and their "
                           "Kendall τ", setting=fig6_setting)))

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
# Differences from the paper to keep in mind: a much smaller network (ResNet-18 at a fraction of its width, not
# WRN-28-10) trained on a few hundred images rather than 50,000, so even the true-label models generalize poorly
# (their robust gaps come close to those of random labels) and every number is noisier; a handful of models, so a
# single swapped pair moves τ by 2/(n(n−1)/2); measures on a subset of the training set; the models of Sec. 3.1's
# runs, which add PGD-AT models and partly random labels to the paper's TRADES models, and models that do not fit
# their training set (their margin is negative: no norm-based value, and a small gap only because they learned
# nothing). The `quick` tier's executed notebook and `outputs/quick/FINDINGS.md` record what this showed.

# %%
display(Markdown(gen.summary_text(cx, gap, S["robust_margin"], fig6_setting)))  # Kendall taus, random-label test

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
fig = gen.landscape_figure(cx, S)
examples = S["curve_examples"] or "all"
out.figure(fig, "fig6_weight_landscape", f"Adversarial loss along a filter-normalized random direction in weight "
           f"space (the first direction of the flatness measure; band: ±γ_w), on {examples} training examples. "
           f"{fig6_setting}")
plt.show()
show_setting(f"On {examples} training examples per model. {fig6_setting} (The paper shows no such curves; Wu et "
             f"al. 2020 do, for models trained on true labels.)")

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
    if note := showcase.own_models_note("04_generalization", tier):
        display(Markdown(note))
    live = gen.Landscape(fig6_dirs, fig6, S)  # loads a model's final.pt on first use
    gen.explorer_widget(live, cx, gap, S["gamma"])
else:
    gen.landscape_grid(cx, gap, S["gamma"])
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
# Solid lines: natural test accuracy; dashed: robust (PGD) test accuracy; blue: random init; red: adversarial;
# stars: the epoch of each run's `best.pt`.

# %%
a10_setting = gen.a10_setting(a10, planned[("adv_init",)], tier, gen.model_label(adv_init))
fig = gen.a10_figure({key: Run(path).metrics for key, path in a10_dirs.items()}, a10)
out.figure(fig, "figA10_init_curves", f"Fig. A.10: natural and robust test accuracy of TRADES from a random vs an "
           f"adversarial initialization, with vanilla and SOTA SGD (dotted: lr decay). {a10_setting}")
plt.show()

display(Markdown(out.table("figA10_final_accuracy", "init_comparison",
                           runs={f"{init}|{k}": path for (init, k), path in a10_dirs.items()},
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
