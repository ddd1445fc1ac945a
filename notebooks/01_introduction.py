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
# # Introduction — adversarial examples and adversarial training (Sec. 1–2)
#
# Dong et al. (ICLR 2022) study *memorization in adversarial training*. Before we can ask what an
# adversarially trained network memorizes, we need the objects the paper is built on. This notebook asks
# three questions and answers each with a small experiment:
#
# 1. **What is an adversarial example**, and how do we find one? (the threat model and PGD, Eq. 2)
# 2. **What is adversarial training** (AT)? (PGD-AT, Eq. 1, and TRADES, Eq. 3, the two methods the paper
#    studies throughout)
# 3. **What does AT buy and what does it cost?** We train a standard network and a PGD-AT network with
#    memlib and compare their accuracy on clean and on attacked test images.
#
# At the end, an explorer lets you attack test images yourself with a growing budget $\epsilon$, and a
# map of the course says where each later notebook picks up.

# %% tags=["parameters"]
tier: str = "smoke"  # parameter tier: smoke | quick | paper (params/01_introduction/<tier>.yaml)
interactive: bool = True  # False under papermill: the explorer becomes a static figure
force: bool = False  # retrain runs even if finished ones exist
# RunConfig values shared by the two runs (standard training and PGD-AT). Sec. 5 setting: ResNet-18, SGD
# lr 0.1 (/10 after epochs 100 and 150), weight decay 5e-4, crop + flip augmentation, PGD-10, 200 epochs.
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
check_notebook_parameters(globals(), "01_introduction")

# %%
import inspect

import matplotlib.pyplot as plt
import nbformat
import torch
import torch.nn.functional as F
from IPython.display import Markdown, display

import memlib.methods
from memlib.attacks import ce_objective, eval_mode, pgd
from memlib.config import RunConfig
from memlib.data import CIFAR10_CLASSES, balanced_subset, load_split
from memlib.evaluate import accuracy, load_weights
from memlib.paper import TABLE1
from memlib.report import Outputs
from memlib.runs import select_device
from memlib.train import train

out = Outputs(tier, "01_introduction")
cfg = RunConfig(**out.run_config(**base))  # the shared settings (eps, alpha, data) of both runs
device = select_device(cfg.device)
K = 10  # PGD-10: the paper's attack for "robust accuracy" (eps 8/255, step 2/255, random start)

# The test images every comparison below uses: uint8 on the device, class-balanced (with eval_n equal to
# the runs' test_subset these are exactly the images the runs were evaluated on after each epoch), in a
# seeded random order so that the first few (the demo batch, the explorer) mix the classes.
test = load_split(cfg, train=False)
ids = balanced_subset(test.labels, eval_n, cfg.data_seed + 1)
ids = ids[torch.randperm(len(ids), generator=torch.Generator().manual_seed(0))]
images, labels = test.images[ids].to(device), test.labels[ids].to(device)
setting = (f"This run ({tier} tier): {cfg.model} at width {cfg.width}, {cfg.train_subset or 'all 50,000'} "
           f"training images, {cfg.epochs} epochs, PGD-{cfg.steps} in training, PGD-{K} (eps 8/255) on "
           f"{len(labels)} test images; data {test.source}. {paper_setting}")
display(Markdown(f"> {setting}"))


def run(**changes):
    """Train (or reuse) one run of this notebook and return its directory."""
    run_cfg = RunConfig(**out.run_config(**{**base, **changes}))
    result = train(run_cfg, force=force)
    out.add_run(result.run_dir)
    return result.run_dir

# %% [markdown]
# ## 1. Adversarial examples
#
# Szegedy et al. (2014) discovered that a network which classifies an image correctly can be made to
# classify it wrongly, with high confidence, by adding a perturbation too small for a person to notice.
# Goodfellow et al. (2015) explained why this is easy: a network is close to linear in its input, and in
# $d = 3 \times 32 \times 32 = 3072$ dimensions many tiny changes, each aligned with the gradient, add up.
# For a linear score $w^\top x$, changing every pixel by $\pm\epsilon$ along $\mathrm{sign}(w)$ moves the
# score by $\epsilon \|w\|_1$, which grows with $d$ although no single pixel changes by more than
# $\epsilon$. Their *fast gradient sign method* (FGSM) takes exactly that one step:
# $x' = x + \epsilon\,\mathrm{sign}(\nabla_x L(f_\theta(x), y))$.
#
# **The threat model.** An attacker may replace a natural input $x$ by any point of the region
#
# $$S(x) = \{x' : \|x' - x\|_p \le \epsilon\}, \qquad x' \in [0, 1]^d,$$
#
# with pixel values in $[0, 1]$ (memlib feeds raw pixels to the network, as the authors do). The paper
# uses the $\ell_\infty$ norm with $\epsilon = 8/255$: each colour channel of each pixel may move by at
# most 8 of its 255 intensity levels (the $\ell_2$ threat model, with $\epsilon = 1.0$ or $128/255$,
# appears in the appendices). The attacker knows the network (a *white-box* attack). A prediction is **robust** at
# $x$ if it is correct on the whole of $S(x)$; we cannot check infinitely many points, so **robust
# accuracy** is measured against a strong attack, and is an upper bound on the true robust accuracy.
#
# ## 2. Projected gradient descent (PGD), Eq. 2
#
# The strongest simple attack iterates FGSM with a smaller step and pulls the point back into $S(x)$
# after every step (Madry et al., 2018). From a random start $x'^{(0)} = x + \mathcal{U}(-\epsilon,
# \epsilon)^d$,
#
# $$x'^{(t+1)} = \Pi_{S(x)}\Big(x'^{(t)} + \alpha \cdot \mathrm{sign}\big(\nabla_{x'} L(f_\theta(x'^{(t)}), y)\big)\Big),$$
#
# where $L$ is the cross-entropy, $\alpha$ the step size ($2/255$) and $\Pi_{S(x)}$ the projection, which for
# $\ell_\infty$ is a clip of every coordinate to $[x - \epsilon, x + \epsilon] \cap [0, 1]$. The sign is the
# steepest-ascent direction under $\ell_\infty$: of all steps with $\|\cdot\|_\infty \le \alpha$ it increases
# the linearized loss most. "PGD-10" is ten such steps. The random start is why two runs of the attack
# differ, and why the code below seeds torch before each one.
#
# **A classifier to attack.** We first train a network the ordinary way, minimizing the cross-entropy on
# natural images only (*standard training*, `method: standard`). With the tier's settings it is trained
# once and reused afterwards.

# %%
run_st = run(method="standard")
model_st, _ = load_weights(run_st, "final", device)  # the weights after the last epoch, in eval mode

# A batch of test images as floats in [0, 1], attacked with memlib.attacks.pgd (PGD-10, l-inf, eps 8/255).
x, y = images[:128].float() / 255, labels[:128]
torch.manual_seed(0)
x_adv = pgd(model_st, x, ce_objective(y), eps=cfg.eps, alpha=cfg.alpha, steps=K)
delta = x_adv - x
print(f"max |delta| = {delta.abs().max().item():.5f} = {255 * delta.abs().max().item():.2f}/255   "
      f"(eps = {cfg.eps:.5f} = {255 * cfg.eps:.0f}/255)")
print(f"x_adv lies in [{x_adv.min().item():.3f}, {x_adv.max().item():.3f}]; "
      f"mean |delta| = {255 * delta.abs().mean().item():.2f}/255")
with torch.no_grad():
    acc_clean = (model_st(x).argmax(1) == y).float().mean().item()
    acc_adv = (model_st(x_adv).argmax(1) == y).float().mean().item()
print(f"standard model on these {len(y)} images: {100 * acc_clean:.1f}% correct clean, "
      f"{100 * acc_adv:.1f}% correct after PGD-{K}")

# %% [markdown]
# The perturbation never leaves the ball: $\max|\delta| \le \epsilon$ (most coordinates sit exactly at
# $\pm\epsilon$, the corners of the $\ell_\infty$ ball, because every step moves by $\pm\alpha$), and the
# adversarial images stay valid images in $[0, 1]$.
#
# **Watching the attack climb.** Eq. 2 is only a few lines. Below it is written out by hand, recording
# the cross-entropy and the accuracy of the batch at every step. With the same seed it draws the same
# random start as `memlib.attacks.pgd` and so reaches the same adversarial examples — we check that.

# %%
def pgd_by_hand(model, x, y, eps, alpha, steps):
    """Eq. 2 written out (l-inf, uniform random start); returns x' and the loss/accuracy at each step."""
    delta = torch.empty_like(x).uniform_(-eps, eps)  # x'(0) = x + U(-eps, eps), then into [0, 1]
    delta = (x + delta).clamp(0, 1) - x
    losses, accs = [], []
    with eval_mode(model):  # BatchNorm frozen during the attack, as in the authors' code
        for t in range(steps + 1):
            delta.requires_grad_(True)
            logits = model(x + delta)
            loss = F.cross_entropy(logits.float(), y, reduction="sum")
            losses.append(loss.item() / len(y))
            accs.append((logits.argmax(1) == y).float().mean().item())
            if t == steps:
                break
            (grad,) = torch.autograd.grad(loss, delta)
            delta = (delta.detach() + alpha * grad.sign()).clamp(-eps, eps)  # ascent step, back into the ball
            delta = (x + delta).clamp(0, 1) - x  # ... and into the valid image range
    return (x + delta).detach(), losses, accs


def clean_loss(model, x, y):
    with torch.no_grad(), eval_mode(model):
        return F.cross_entropy(model(x).float(), y).item()


torch.manual_seed(0)
x_hand, losses_st, accs_st = pgd_by_hand(model_st, x, y, cfg.eps, cfg.alpha, K)
print(f"largest difference to memlib.attacks.pgd: {(x_hand - x_adv).abs().max().item():.2e}")


def plot_pgd(axes, losses, accs, clean, label, color):
    steps = range(len(losses))
    axes[0].plot(steps, losses, "o-", color=color, ms=3, label=label)
    axes[0].axhline(clean, color=color, ls=":", lw=1)
    axes[1].plot(steps, accs, "o-", color=color, ms=3, label=label)
    axes[0].set(xlabel="PGD step t", ylabel="mean cross-entropy", title="loss at x'(t) (dotted: clean x)")
    axes[1].set(xlabel="PGD step t", ylabel="accuracy on the batch", title="accuracy at x'(t)", ylim=(-0.02, 1.02))


fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
plot_pgd(axes, losses_st, accs_st, clean_loss(model_st, x, y), "standard training", "tab:blue")
axes[0].legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# **How to read it.** Step 0 is the random start: a random point of the ball barely changes the loss
# (compare with the dotted clean loss), so random noise of size $\epsilon$ is harmless. The gradient steps
# then drive the loss up, and the accuracy of a well-trained standard model collapses within a few steps.
# At the `smoke` tier the network has barely learned anything and is at chance either way; the curve still
# rises, because the attack maximizes the loss of whatever network it is given.
#
# ## 3. Adversarial training: PGD-AT (Eq. 1) and TRADES (Eq. 3)
#
# If the test-time attacker picks the worst point of $S(x)$, training should too. Madry et al. (2018)
# write adversarial training as a min-max problem:
#
# $$\min_\theta \frac{1}{n}\sum_{i=1}^{n} \max_{x'_i \in S(x_i)} L(f_\theta(x'_i), y_i). \tag{1}$$
#
# The *inner maximization* is an attack: it is approximated with PGD-10 (Eq. 2). The *outer
# minimization* is ordinary SGD on the loss at the points the attack found (by Danskin's theorem, the
# gradient of the max is the gradient at the maximizer). So one training step of **PGD-AT** is: attack the
# batch, then take a gradient step on the cross-entropy of the adversarial batch. In memlib that is the
# whole method:

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
# The cross-entropy is taken on the *clean* image; the second term asks the prediction not to change
# inside the ball, whatever the label. $\beta$ trades one against the other (the paper uses $\beta = 6$).
# The attack now maximizes the KL divergence instead of the cross-entropy. At $x' = x$ the KL and its
# gradient are exactly zero, so the attack starts from $x + 0.001\cdot\mathcal{N}(0, I)$ (as in the
# authors' code) rather than from a uniform point of the ball:

# %%
print(inspect.getsource(memlib.methods.trades))

# %% [markdown]
# The difference looks small — where the label enters the loss — but it is the thread of the whole paper:
# trained on *random* labels, TRADES memorizes the adversarial examples while PGD-AT fails to converge
# (Sec. 3.1, next notebook).
#
# ## 4. What adversarial training buys, and what it costs
#
# We now train a PGD-AT network with exactly the settings of the standard one (same architecture, data,
# schedule and seed; only `method` differs) and compare the two on the same test images: **natural
# accuracy** (clean images) and **robust accuracy** (after PGD-10 with $\epsilon = 8/255$), both with
# `memlib.evaluate.accuracy`, on the weights after the last epoch.

# %%
run_at = run(method="pgd_at")
model_at, _ = load_weights(run_at, "final", device)
models = {"Standard": model_st, "PGD-AT": model_at}

results = {}
for name, model in models.items():
    torch.manual_seed(0)  # the random start of PGD
    results[name] = {
        "natural": accuracy(model, images, labels, "natural", eps=cfg.eps, alpha=cfg.alpha,
                            batch_size=cfg.eval_batch_size),
        "robust": accuracy(model, images, labels, f"pgd-{K}", eps=cfg.eps, alpha=cfg.alpha,
                           batch_size=cfg.eval_batch_size),
    }
paper = TABLE1["cifar10"]["pgd_at"]  # Table 1, final epoch (the paper reports no standard baseline)
paper_cells = {"Standard": ("–", "–"),
               "PGD-AT": (f"{paper['natural']['final']:.2f}", f"{paper['pgd-10']['final']:.2f}")}
rows = [f"| {name} | {100 * r['natural']:.2f} | {100 * r['robust']:.2f} | {paper_cells[name][0]} | "
        f"{paper_cells[name][1]} |" for name, r in results.items()]
display(Markdown("\n".join([
    f"**Test accuracy (%) on {len(labels)} images, final weights**", "",
    f"| Model | Natural | PGD-{K} | Paper natural | Paper PGD-10 |", "|---|---|---|---|---|", *rows, "",
    f"> {setting}"])))

fig, ax = plt.subplots(figsize=(5.5, 3.4))
width = 0.36
for j, (kind, color) in enumerate((("natural", "tab:blue"), ("robust", "tab:red"))):
    xs = [i + (j - 0.5) * width for i in range(len(results))]
    vals = [100 * r[kind] for r in results.values()]
    bars = ax.bar(xs, vals, width, color=color, label="natural (clean)" if kind == "natural" else f"robust (PGD-{K})")
    ax.bar_label(bars, fmt="%.1f", fontsize=8)
ax.hlines([paper["natural"]["final"], paper["pgd-10"]["final"]], [1 - width, 1], [1, 1 + width], colors="black",
          lw=2, label="paper, PGD-AT (Table 1)")
ax.axhline(10, color="gray", lw=0.5, ls=":")
ax.set_xticks(range(len(results)), list(results))
ax.set(ylabel="test accuracy (%)", ylim=(0, 105), title=f"{tier} tier: {len(labels)} test images")
ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, frameon=False)
fig.tight_layout()
out.figure(fig, "intro_accuracy", f"Natural and PGD-{K} robust test accuracy of standard training and PGD-AT "
           f"(black: the paper's PGD-AT, Table 1, final epoch). {setting}")
plt.show()

# %% [markdown]
# **How to read it.** Blue bars: accuracy on clean test images; red bars: on the same images after PGD-10;
# black lines are the paper's PGD-AT; the dotted line is chance (10%). In the paper's setting (ResNet-18,
# 200 epochs) PGD-AT ends at 84.8% natural and 44.9% robust accuracy (Table 1, final epoch; 52.6% robust
# at its best epoch). The paper trains no standard baseline; a standard ResNet-18 on CIFAR-10 typically
# reaches about 95% natural and **0%** robust accuracy.
#
# * **Why the standard model has ~0% robust accuracy.** Nothing in its objective mentions the
#   neighbourhood of a training point, and by Goodfellow et al.'s linearity argument a network trained only
#   on natural images has large input gradients: 8/255 per pixel, aligned with the gradient, is enough to
#   cross a decision boundary for almost every image. The PGD curve above is this in action.
# * **Why PGD-AT gives up natural accuracy.** Every training point now has to be classified correctly on
#   a whole ball, so the network must keep the decision boundary at least $\epsilon$ away from the data
#   (the paper's Fig. 1); features that are predictive but fragile (tiny, high-frequency patterns) are
#   unusable, and some images genuinely lie within $\epsilon$ of another class. Capacity goes into
#   robustness, and clean accuracy drops by about 10 points (Tsipras et al., 2019, argue that some such
#   trade-off is unavoidable). TRADES makes the trade-off explicit through $\beta$.
#
# What our tier shows depends on its budget: the `smoke` tier trains tiny networks for seconds, so both
# sit near chance; the `quick` tier (a narrow ResNet-18 on 2,000 images for about a dozen epochs) shows the
# ordering — standard higher clean, PGD-AT higher robust — at much lower absolute accuracy than the paper.
#
# The table below is built from the runs' own logs (the last epoch, on the runs' per-epoch test subset):
# it adds the **training** accuracies. The gap between robust training and robust test accuracy is the
# *robust generalization gap*; it is large for adversarial training, and what the network memorizes of
# its training set is the subject of the rest of the course.

# %%
display(Markdown(out.table("intro_final_accuracy", "final_accuracy",
                           runs={"Standard training": run_st, "PGD-AT": run_at},
                           title="Last-epoch training and test accuracy of the two introduction runs",
                           setting=setting)))

fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
plot_pgd(axes, losses_st, accs_st, clean_loss(model_st, x, y), "standard training", "tab:blue")
torch.manual_seed(0)
_, losses_at, accs_at = pgd_by_hand(model_at, x, y, cfg.eps, cfg.alpha, K)
plot_pgd(axes, losses_at, accs_at, clean_loss(model_at, x, y), "PGD-AT", "tab:red")
axes[0].legend(fontsize=8)
fig.tight_layout()
out.figure(fig, "intro_pgd_loss", f"Cross-entropy and accuracy of {len(y)} test images along PGD-{K} "
           f"(Eq. 2), standard vs PGD-AT model. {setting}")
plt.show()

# %% [markdown]
# **The same attack against both models.** Once the networks have learned something (the `quick` and
# `paper` tiers), the loss of the PGD-AT network rises far less along the attack: adversarial training
# has made the loss flat around the data, which is exactly what Eq. 1 asks for, and many images stay
# correctly classified after all ten steps, while the standard network's accuracy falls towards zero.
#
# ## 5. Explorer: attack a test image yourself
#
# Choose a model, a budget $\epsilon$ (in units of 1/255) and a test image. The explorer runs PGD-10 with
# step $2.5\,\epsilon/10$ and shows the clean image, the perturbation $\delta = x' - x$ (amplified so that
# $\pm\epsilon$ spans the full grey range) and the adversarial image, each with the predicted class and its
# confidence (green: correct, red: wrong). Questions to try: at which $\epsilon$ does the standard model
# flip? Does the PGD-AT model's perturbation look different (it tends to show object-shaped structure
# rather than noise)? At $16/255$, can you still recognize the object — and does PGD-AT still?
#
# (In a headless run the explorer is a static grid: rows are test images × models, columns growing
# $\epsilon$; the last column is the perturbation at the largest $\epsilon$.)

# %%
def attack_at(model, x, y, eps_k):
    """PGD-10 with budget eps_k/255 (x unchanged for eps_k = 0)."""
    if eps_k == 0:
        return x
    eps = eps_k / 255
    torch.manual_seed(0)
    return pgd(model, x, ce_objective(y), eps=eps, alpha=2.5 * eps / K, steps=K)


def probs(model, x):
    with torch.no_grad(), eval_mode(model):
        return F.softmax(model(x).float(), 1)


def show_image(ax, img, title="", color="black"):
    ax.imshow(img.permute(1, 2, 0).clamp(0, 1).cpu().numpy(), interpolation="nearest")
    ax.set_title(title, fontsize=8, color=color)
    ax.set_xticks([])
    ax.set_yticks([])


def prediction(model, x, y):
    p = probs(model, x)[0]
    c = int(p.argmax())
    return f"{CIFAR10_CLASSES[c]} {100 * p[c].item():.0f}%", ("tab:green" if c == int(y[0]) else "tab:red")


if interactive:
    import ipywidgets as widgets

    def explore(model_name, eps_k, index):
        model = models[model_name]
        x1, y1 = images[index:index + 1].float() / 255, labels[index:index + 1]
        x1_adv = attack_at(model, x1, y1, eps_k)
        (clean, clean_color), (adv, adv_color) = prediction(model, x1, y1), prediction(model, x1_adv, y1)
        fig, axes = plt.subplots(1, 3, figsize=(7.5, 2.9))
        show_image(axes[0], x1[0], f"clean: {clean}", clean_color)
        scale = 0.5 * 255 / max(eps_k, 1)  # +-eps maps to the full grey range
        show_image(axes[1], (x1_adv - x1)[0] * scale + 0.5, f"perturbation (x{scale:.0f})" if eps_k else "no perturbation")
        show_image(axes[2], x1_adv[0], f"eps {eps_k}/255: {adv}", adv_color)
        fig.suptitle(f"{model_name}; true class: {CIFAR10_CLASSES[int(y1[0])]}", fontsize=9)
        fig.tight_layout()
        plt.show()

    widgets.interact(explore,
                     model_name=widgets.Dropdown(options=list(models), description="model"),
                     eps_k=widgets.SelectionSlider(options=[(f"{k}/255", k) for k in range(17)], value=8,
                                                   description="eps", continuous_update=False),
                     index=widgets.IntSlider(min=0, max=len(labels) - 1, value=0, description="test image",
                                             continuous_update=False))
else:
    examples = range(min(n_examples, len(labels)))
    cols, eps_max = len(eps_values) + 1, max(eps_values)
    fig, axes = plt.subplots(len(examples) * len(models), cols, figsize=(1.55 * cols, 1.75 * len(examples) * len(models)),
                             squeeze=False)
    for i in examples:
        x1, y1 = images[i:i + 1].float() / 255, labels[i:i + 1]
        for m, (model_name, model) in enumerate(models.items()):
            row = axes[i * len(models) + m]
            for j, eps_k in enumerate(eps_values):
                x1_adv = attack_at(model, x1, y1, eps_k)
                show_image(row[j], x1_adv[0], *prediction(model, x1_adv, y1))
                if i == 0 and m == 0:
                    row[j].set_title(("clean" if eps_k == 0 else f"eps = {eps_k}/255") + "\n" + row[j].get_title(),
                                     fontsize=8, color=row[j].title.get_color())
            delta_max = attack_at(model, x1, y1, eps_max) - x1
            show_image(row[-1], delta_max[0] * (0.5 * 255 / max(eps_max, 1)) + 0.5)
            if i == 0 and m == 0:
                row[-1].set_title(f"perturbation\nat {eps_max}/255", fontsize=8)
            row[0].set_ylabel(f"{model_name}\ntrue: {CIFAR10_CLASSES[int(y1[0])]}", fontsize=8)
    fig.tight_layout()
    out.figure(fig, "intro_eps_explorer", f"PGD-{K} adversarial examples of {len(examples)} test images for growing "
               f"eps, standard and PGD-AT model; titles: predicted class and confidence (green correct, red wrong); "
               f"last column: the perturbation at {eps_max}/255, amplified. {setting}")
    plt.show()

# %% [markdown]
# ## 6. The rest of the course
#
# Everything that follows builds on the three objects met here — the threat model, PGD, and the two AT
# objectives — and asks what adversarial training *memorizes*:
#
# * **Sec. 3.1, AT with random labels** ([02_random_labels.ipynb](02_random_labels.ipynb)). Can a network
#   fit adversarial examples of CIFAR-10 whose labels are random? TRADES can (~100% robust training
#   accuracy), PGD-AT does not converge, and the generalization gap grows with the label noise.
# * **Sec. 3.2, convergence** ([03_convergence.ipynb](03_convergence.ipynb)). Why does PGD-AT fail where TRADES succeeds? The gradients of the PGD-AT loss
#   are unstable: by Theorem 1 the gradient of the adversarial loss can change by up to $2\epsilon K$
#   under an arbitrarily small move of $\theta$, where TRADES's clean cross-entropy changes smoothly.
#   Mixing a clean-loss term into PGD-AT (Eq. 6) lets it converge.
# * **Sec. 3.3, generalization** ([04_generalization.ipynb](04_generalization.ipynb)). Networks trained on random labels have the same architecture and reach
#   the same training accuracy as those trained on true labels, yet do not generalize: a complexity
#   measure that explains robust generalization must tell them apart. Spectral and $\ell_1$ norms and the
#   curvature of the input loss landscape fail this test; only the flatness of the weight loss landscape
#   comes close.
# * **Sec. 4.1, robust overfitting** ([05_robust_overfitting.ipynb](05_robust_overfitting.ipynb)). After the first learning-rate decay, PGD-AT's robust test accuracy
#   *falls* while its training accuracy keeps rising (Rice et al., 2020) — the 52.6% vs 44.9% gap between
#   best and final epoch in Table 1. The paper traces it to memorizing one-hot labels that are too
#   confident for hard adversarial examples: it does not occur for small $\epsilon$, and the same training
#   examples are hard for independently trained networks.
# * **Sec. 4.2 and 5, the remedy: temporal ensembling** ([06_mitigation.ipynb](06_mitigation.ipynb)).
#   Regularize the predictions of adversarial examples towards the network's own averaged past
#   predictions (Eq. 7) instead of letting it memorize one-hot labels; robust overfitting nearly disappears
#   (Table 1: PGD-AT+TE loses 1 point between best and final epoch, PGD-AT 7.7).
# * **Table 2 and App. C, the baselines** ([07_baselines.ipynb](07_baselines.ipynb)). Label smoothing,
#   self-adaptive training, knowledge distillation with weight averaging (KD-SWA) and Co-teaching against
#   PGD-AT+TE; other architectures and the l2 threat model (Table C.1); three seeds (Table C.2).
#
# The notebooks in this folder, with their titles:

# %%
folder = out.project / "notebooks"
lines = []
for path in sorted(folder.glob("*.ipynb")):
    cells = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown"]
    title = cells[0].source.splitlines()[0].lstrip("# ").strip() if cells else ""
    lines.append(f"* [{path.name}]({path.name}) — {title}")
display(Markdown("\n".join(lines)))
