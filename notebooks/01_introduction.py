# %% [markdown]
# # Introduction — adversarial examples and adversarial training (Sec. 1–2)
#
# Dong et al. (ICLR 2022) study *memorization in adversarial training*. Before asking what an adversarially trained
# network memorizes, we need the objects the paper is built on. Three questions, each with a small experiment:
#
# 1. **What is an adversarial example**, and how do we find one? (the threat model and PGD, Eq. 2)
# 2. **What is adversarial training** (AT)? (PGD-AT, Eq. 1, and TRADES, Eq. 3, the paper's two methods)
# 3. **What does AT buy and what does it cost?** A standard and a PGD-AT network, trained with memlib, compared
#    on clean and on attacked test images.
#
# At the end, an explorer lets you attack test images yourself with a growing budget $\epsilon$, and a map of
# the course says where each later notebook picks up.

# %% tags=["parameters"]
tier: str = "smoke"  # parameter tier: smoke | quick | paper (params/01_introduction/<tier>.yaml)
interactive: bool = True  # False under papermill: the explorer becomes a static figure
force: bool = False  # retrain runs even if finished ones exist
# RunConfig values shared by the two runs (standard training and PGD-AT); the paper's: `paper_setting`
base: dict = dict(model="resnet18", width=0.0625, train_subset=100, test_subset=50, train_eval_subset=50,
                  epochs=2, batch_size=50, steps=2, eval_steps=2, augment=True, weight_decay=5e-4, lr=0.1,
                  lr_schedule="multistep", lr_milestones=[100, 150], eval_batch_size=500)
eval_n: int = 50  # class-balanced test images for the accuracy comparison and the explorer (0 = all 10,000)
eps_values: list = [0, 2, 4, 8, 16]  # budgets of the static explorer, in units of 1/255 (0 = the clean image)
n_examples: int = 2  # test images in the static explorer (each shown for both models)
paper_setting: str = ("Paper (Sec. 5, Table 1): ResNet-18 at full width, all 50,000 CIFAR-10 training images, "
                      "PGD-AT for 200 epochs (SGD lr 0.1, /10 after epochs 100 and 150, weight decay 5e-4, "
                      "crop + flip), PGD-10 robust accuracy on all 10,000 test images.")

# %%
# Stop here, in one line, on a parameter this notebook does not have or a value of the wrong type
from memlib.config import check_notebook_parameters
from memlib.present import show_times

check_notebook_parameters(globals(), "01_introduction")
show_times("01_introduction")  # the measured times of its tiers (notebooks/README.md)

# %%
import inspect

import matplotlib.pyplot as plt
import torch
from IPython.display import Markdown, display

import memlib.methods
from memlib import showcase
from memlib.attacks import ce_objective, pgd
from memlib.evaluate import load_weights
from memlib.experiments import declare
from memlib.lectures import introduction as intro  # this notebook's figures and computations
from memlib.present import name, show_setting
from memlib.report import Outputs
from memlib.runs import select_device
from memlib.train import train_many

out = Outputs(tier, "01_introduction")
planned = declare("01_introduction", globals(), out.runs, out.data).configs  # the two runs: only `method` differs
cfg = planned["pgd_at"]  # the shared settings (eps, alpha, data) of both runs
device = select_device(cfg.device)
K = cfg.eval_steps  # PGD-K, the attack of the runs' robust accuracy (the paper's: PGD-10, step 2/255, random start)

images, labels, source = intro.comparison_images(cfg, eval_n, device)
this_setting = intro.setting_line(cfg, tier, eval_n, len(labels), source, paper_setting)
show_setting(this_setting)

results = train_many(list(planned.values()), force=force)  # trained once, then reused
run_dirs = {key: result.run_dir for key, result in zip(planned, results)}
for run_dir in run_dirs.values():
    out.add_run(run_dir)

# %% [markdown]
# ## 1. Adversarial examples
#
# Szegedy et al. (2014) found that a correctly classified image can be made to be classified wrongly, with high
# confidence, by a perturbation too small for a person to notice. Goodfellow et al. (2015) explained why: a
# network is close to linear in its input, and in $d = 3 \times 32 \times 32 = 3072$ dimensions many tiny
# changes aligned with the gradient add up. For a linear score $w^\top x$, moving every pixel by $\pm\epsilon$
# along $\mathrm{sign}(w)$ moves the score by $\epsilon \|w\|_1$, which grows with $d$ although no pixel changes
# by more than $\epsilon$. Their *fast gradient sign method* (FGSM) takes that one step:
# $x' = x + \epsilon\,\mathrm{sign}(\nabla_x L(f_\theta(x), y))$.
#
# **The threat model.** An attacker may replace a natural input $x$ by any point of the region
#
# $$S(x) = \{x' : \|x' - x\|_p \le \epsilon\}, \qquad x' \in [0, 1]^d,$$
#
# in raw pixel values (memlib feeds them to the network, as the authors do). The paper uses the $\ell_\infty$ norm
# with $\epsilon = 8/255$: each colour channel of each pixel may move by at most 8 of its 255 levels (the $\ell_2$
# threat model, $\epsilon = 1.0$ or $128/255$, appears in the appendices). The attacker knows the network (a
# *white-box* attack). A prediction is **robust** at $x$ if it is correct on all of $S(x)$; we cannot check
# infinitely many points, so **robust accuracy** is measured against a strong attack, an upper bound on the true one.
#
# ## 2. Projected gradient descent (PGD), Eq. 2
#
# The strongest simple attack iterates FGSM with a smaller step and pulls the point back into $S(x)$ after
# every step (Madry et al., 2018). From a random start $x'^{(0)} = x + \mathcal{U}(-\epsilon, \epsilon)^d$,
#
# $$x'^{(t+1)} = \Pi_{S(x)}\Big(x'^{(t)} + \alpha \cdot \mathrm{sign}\big(\nabla_{x'} L(f_\theta(x'^{(t)}), y)\big)\Big),$$
#
# where $L$ is the cross-entropy, $\alpha$ the step size ($2/255$) and $\Pi_{S(x)}$ the projection, for
# $\ell_\infty$ a clip of every coordinate to $[x - \epsilon, x + \epsilon] \cap [0, 1]$. The sign is the
# steepest-ascent direction under $\ell_\infty$: of all steps with $\|\cdot\|_\infty \le \alpha$ it increases the
# linearized loss most. "PGD-10" is ten such steps. The random start is why two runs of the attack differ, and
# why the code below seeds torch before each one.
#
# **A classifier to attack.** The first run trained above minimizes the cross-entropy on natural images only
# (*standard training*, `method: standard`).

# %%
model_st, _ = load_weights(run_dirs["standard"], "final", device)  # the weights after the last epoch, in eval mode

x, y = images[:128].float() / 255, labels[:128]  # a batch of test images as floats in [0, 1]
torch.manual_seed(0)
x_adv = pgd(model_st, x, ce_objective(y), eps=cfg.eps, alpha=cfg.alpha, steps=K)  # PGD-K, l-inf, the runs' eps
print(intro.attack_summary(model_st, x, x_adv, y, cfg.eps, K))  # the size of delta = x_adv - x; accuracy on x, x_adv

# %% [markdown]
# The perturbation never leaves the ball: $\max|\delta| \le \epsilon$ (most coordinates sit exactly at
# $\pm\epsilon$, the corners of the $\ell_\infty$ ball, as every step moves by $\pm\alpha$), and the adversarial
# images stay valid images in $[0, 1]$.
#
# **Watching the attack climb.** Eq. 2 is only a few lines. `pgd_by_hand` (printed below) writes it out,
# recording the cross-entropy and the accuracy of the batch at every step. With the same seed it draws the
# same random start as `memlib.attacks.pgd` and so reaches the same adversarial examples — we check that.

# %%
print(inspect.getsource(intro.pgd_by_hand))
torch.manual_seed(0)
x_hand, _, _ = intro.pgd_by_hand(model_st, x, y, cfg.eps, cfg.alpha, K)
print(f"largest difference to memlib.attacks.pgd: {(x_hand - x_adv).abs().max().item():.2e}")

intro.pgd_figure(x, y, {"standard training": model_st}, cfg.eps, cfg.alpha, K)  # loss and accuracy along pgd_by_hand
plt.show()

# %% [markdown]
# **How to read it.** Step 0 is the random start: a random point of the ball barely changes the loss (compare the
# dotted clean loss), so random noise of size $\epsilon$ is harmless. The gradient steps then drive the loss up, and
# the accuracy of a well-trained standard model collapses within a few steps. At the `smoke` tier the network is at
# chance either way; the curve still rises, because the attack maximizes the loss of whatever network it is given.
#
# ## 3. Adversarial training: PGD-AT (Eq. 1) and TRADES (Eq. 3)
#
# If the test-time attacker picks the worst point of $S(x)$, training should too. Madry et al. (2018) write
# adversarial training as a min-max problem:
#
# $$\min_\theta \frac{1}{n}\sum_{i=1}^{n} \max_{x'_i \in S(x_i)} L(f_\theta(x'_i), y_i). \tag{1}$$
#
# The *inner maximization* is an attack, approximated with PGD-10 (Eq. 2). The *outer minimization* is ordinary
# SGD on the loss at the points the attack found (by Danskin's theorem, the gradient of the max is the gradient
# at the maximizer). So one training step of **PGD-AT** is: attack the batch, then take a gradient step on the
# cross-entropy of the adversarial batch. In memlib that is the whole method:

# %%
print(inspect.getsource(memlib.methods.pgd_at))

# %% [markdown]
# `ctx.attack` is `memlib.attacks.pgd` with the run's `eps`, `alpha` and `steps` (uniform random start);
# like the authors' code it attacks with the model in eval mode and updates the weights in train mode.
#
# **TRADES** (Zhang et al., 2019) splits the objective into a natural term and a robustness term:
#
# $$\min_\theta \frac{1}{n}\sum_{i=1}^{n} \Big[ L(f_\theta(x_i), y_i) + \beta \cdot \max_{x'_i \in S(x_i)}
#   D_{KL}\big(f_\theta(x_i)\,\|\,f_\theta(x'_i)\big) \Big]. \tag{3}$$
#
# The cross-entropy is taken on the *clean* image; the second term asks the prediction not to change inside the ball,
# whatever the label; $\beta$ trades one against the other (the paper uses $\beta = 6$). The attack now maximizes the
# KL divergence instead. At $x' = x$ the KL and its gradient are exactly zero, so the attack starts from
# $x + 0.001\cdot\mathcal{N}(0, I)$ (as in the authors' code) rather than from a uniform point of the ball:

# %%
print(inspect.getsource(memlib.methods.trades))

# %% [markdown]
# The difference looks small — where the label enters the loss — but it is the thread of the whole paper: on *random*
# labels TRADES memorizes the adversarial examples while PGD-AT fails to converge (Sec. 3.1, next notebook).
#
# ## 4. What adversarial training buys, and what it costs
#
# The second run is a PGD-AT network with exactly the settings of the standard one (same architecture,
# data, schedule and seed; only `method` differs). We compare the two on the same test images: **natural
# accuracy** (clean images) and **robust accuracy** (after PGD-10 with $\epsilon = 8/255$ in the paper's
# setting), both with `memlib.evaluate.accuracy`, on the weights after the last epoch.

# %%
model_at, _ = load_weights(run_dirs["pgd_at"], "final", device)
models = {name("standard"): model_st, name("pgd_at"): model_at}

results = intro.accuracies(models, images, labels, cfg, K)  # natural and PGD-K, with memlib.evaluate.accuracy
display(Markdown(intro.accuracy_table(results, len(labels), K, this_setting)))  # beside Table 1's PGD-AT (final)

fig = intro.accuracy_figure(results, K, f"{tier} tier: {len(labels)} test images")
out.figure(fig, "intro_accuracy", f"Natural and PGD-{K} robust test accuracy of standard training and PGD-AT "
           f"(black: the paper's PGD-AT, Table 1, final epoch). {this_setting}")
plt.show()

# %% [markdown]
# **How to read it.** Blue bars: accuracy on clean test images; red: on the same images after the attack; black
# lines: the paper's PGD-AT; dotted: chance (10%). In the paper's setting PGD-AT ends at 84.8% natural and 44.9%
# robust accuracy (Table 1, final epoch; 52.6% robust at its best epoch). The paper trains no standard baseline; a
# standard ResNet-18 on CIFAR-10 typically reaches about 95% natural and **0%** robust accuracy.
#
# * **Why the standard model has ~0% robust accuracy.** Nothing in its objective mentions the neighbourhood of a
#   training point, and by Goodfellow et al.'s linearity argument a network trained only on natural images has
#   large input gradients: 8/255 per pixel along the gradient crosses a decision boundary for almost every
#   image. The PGD curve above is this in action.
# * **Why PGD-AT gives up natural accuracy.** Every training point must be classified correctly on a whole ball, so
#   the decision boundary has to stay at least $\epsilon$ away from the data (the paper's Fig. 1); predictive but
#   fragile features (tiny, high-frequency patterns) are unusable, and some images genuinely lie within $\epsilon$ of
#   another class. Capacity goes into robustness and clean accuracy drops by about 10 points (Tsipras et al., 2019,
#   argue that some such trade-off is unavoidable); TRADES makes it explicit through $\beta$.
#
# What our tier shows depends on its budget (setting line above): `smoke`'s tiny networks sit near chance; `quick`
# shows the ordering — standard higher clean, PGD-AT higher robust — at far lower accuracy than the paper.
#
# The table below is built from the runs' own logs (last epoch, the runs' per-epoch test subset) and adds the
# **training** accuracies. The gap between robust training and robust test accuracy, the *robust
# generalization gap*, is large for adversarial training; what the network memorizes of its training set is
# the subject of the rest of the course.

# %%
display(Markdown(out.table("intro_final_accuracy", "final_accuracy",
                           runs={name(key): run_dir for key, run_dir in run_dirs.items()},
                           title="Last-epoch training and test accuracy of the two introduction runs",
                           setting=this_setting)))

fig = intro.pgd_figure(x, y, {"standard training": model_st, "PGD-AT": model_at}, cfg.eps, cfg.alpha, K)
out.figure(fig, "intro_pgd_loss", f"Cross-entropy and accuracy of {len(y)} test images along PGD-{K} "
           f"(Eq. 2), standard vs PGD-AT model. {this_setting}")
plt.show()

# %% [markdown]
# **The same attack against both models.** Once the networks have learned something (the `quick` and `paper`
# tiers), the loss of the PGD-AT network rises far less along the attack: adversarial training has made the
# loss flat around the data, exactly what Eq. 1 asks for, and many images stay correctly classified after all
# $K$ steps, while the standard network's accuracy falls towards zero.
#
# ## 5. Explorer: attack a test image yourself
#
# Choose a model, a budget $\epsilon$ (in units of 1/255) and a test image. The explorer runs PGD-$K$ (the runs'
# robust-accuracy attack, PGD-10 in the paper's setting) with step $2.5\,\epsilon/K$ and shows the clean image,
# the perturbation $\delta = x' - x$ (amplified so that $\pm\epsilon$ spans the full grey range) and the
# adversarial image, each with the predicted class and its confidence (green: correct, red: wrong). Questions to
# try: at which $\epsilon$ does the standard model flip? Does the PGD-AT model's perturbation look different (it
# tends to show object-shaped structure rather than noise)? At $16/255$, can you still recognize the object —
# and does PGD-AT still? (Headless, the explorer is a static grid: a row per test image and model, a column per
# $\epsilon$, the perturbation at the largest $\epsilon$ last.)

# %%
if interactive:  # the committed quick-tier models when they are here (a smoke model sits at chance)
    shown = showcase.explorer_models(out.project, "01_introduction", tier, models, K, device)
    display(Markdown(shown.note))
    intro.explorer_widget(shown.models, images, labels, shown.steps)
else:
    n = min(n_examples, len(labels))
    fig = intro.explorer_grid(models, images, labels, eps_values, n, K)
    out.figure(fig, "intro_eps_explorer", f"{intro.explorer_caption(n, K, eps_values)} {this_setting}")
    plt.show()

# %% [markdown]
# ## 6. The rest of the course
#
# Everything that follows builds on the three objects met here — the threat model, PGD, and the two AT
# objectives — and asks what adversarial training *memorizes*:
#
# * **Sec. 3.1, AT with random labels** ([02_random_labels.ipynb](02_random_labels.ipynb)). Can a network fit
#   adversarial examples of CIFAR-10 whose labels are random? TRADES can (~100% robust training accuracy),
#   PGD-AT does not converge, and the generalization gap grows with the label noise.
# * **Sec. 3.2, convergence** ([03_convergence.ipynb](03_convergence.ipynb)). Why does PGD-AT fail where TRADES
#   succeeds? Its gradients are unstable: by Theorem 1 the gradient of the adversarial loss can change by up to
#   $2\epsilon K$ under an arbitrarily small move of $\theta$, where TRADES's clean cross-entropy changes
#   smoothly. Mixing a clean-loss term into PGD-AT (Eq. 6) lets it converge.
# * **Sec. 3.3, generalization** ([04_generalization.ipynb](04_generalization.ipynb)). Networks trained on random
#   labels have the same architecture and training accuracy as those trained on true labels, yet do not
#   generalize: a complexity measure that explains robust generalization must tell them apart. Spectral and
#   $\ell_1$ norms and the curvature of the input loss landscape fail; only the flatness of the weight loss
#   landscape comes close.
# * **Sec. 4.1, robust overfitting** ([05_robust_overfitting.ipynb](05_robust_overfitting.ipynb)). After the
#   first learning-rate decay, PGD-AT's robust test accuracy *falls* while its training accuracy keeps rising
#   (Rice et al., 2020) — 52.6% at the best vs 44.9% at the final epoch in Table 1. The paper traces it to
#   memorizing one-hot labels too confident for hard adversarial examples: it does not occur for small
#   $\epsilon$, and the same training examples are hard for independently trained networks.
# * **Sec. 4.2 and 5, the remedy: temporal ensembling** ([06_mitigation.ipynb](06_mitigation.ipynb)). Regularize
#   the predictions of adversarial examples towards the network's own averaged past predictions (Eq. 7)
#   instead of memorizing one-hot labels; robust overfitting nearly disappears (Table 1: PGD-AT+TE loses 1
#   point between best and final epoch, PGD-AT 7.7).
# * **Table 2 and App. C, the baselines** ([07_baselines.ipynb](07_baselines.ipynb)). Label smoothing,
#   self-adaptive training, knowledge distillation with weight averaging (KD-SWA) and Co-teaching against
#   PGD-AT+TE; other architectures and the l2 threat model (Table C.1); three seeds (Table C.2).
#
# The notebooks in this folder, with their titles:

# %%
display(Markdown(intro.course_map(out.project / "notebooks")))
