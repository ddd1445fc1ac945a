"""The figures and computations of notebook 01 (Sec. 1-2, adversarial examples and adversarial training): the
test images of the comparisons and the setting line, PGD written out by hand (Eq. 2) with the loss along the
attack, natural vs robust accuracy beside Table 1, the eps explorer and the map of the course. The runs:
memlib.experiments.introduction."""

from pathlib import Path

import torch
import torch.nn.functional as F

from memlib.attacks import ce_objective, eval_mode, pgd
from memlib.data import CIFAR10_CLASSES, balanced_subset, load_split
from memlib.evaluate import accuracy
from memlib.paper import TABLE1
from memlib.present import PERCENT, eps_text, name, prediction_text, setting, show_image, show_perturbation

# What the accuracies are compared with: Table 1's PGD-AT cells (the paper reports no standard-training baseline)
PAPER, PAPER_KEY = TABLE1["cifar10"]["pgd_at"], name("pgd_at")


def comparison_images(cfg, n: int, device):
    """The test images the notebook's comparisons use: ``n`` class-balanced ones (0 = all), uint8 on ``device``,
    with their labels and the data's source. With ``n`` equal to the runs' ``test_subset`` they are exactly the
    images the runs were evaluated on after each epoch; a seeded shuffle makes the first few (the demo batch, the
    explorer) mix the classes."""
    test = load_split(cfg, train=False)
    ids = balanced_subset(test.labels, n, cfg.data_seed + 1)
    ids = ids[torch.randperm(len(ids), generator=torch.Generator().manual_seed(0))]
    return test.images[ids].to(device), test.labels[ids].to(device), test.source


def setting_line(cfg, tier: str, eval_n: int, n: int, source: str, paper: str) -> str:
    """The notebook's setting line (``present.setting`` of the runs' ``cfg``): the ``n`` test images of the
    comparisons where ``eval_n`` is not the runs' own test subset, the data's ``source``, the ``paper``'s setting."""
    here = f"the comparisons below on {n} test images" if eval_n != cfg.test_subset else ""
    return setting(cfg, tier, here, f"data {source}", paper=paper)


def attack_summary(model, x, x_adv, y, eps: float, steps: int, label: str = "standard model") -> str:
    """Two lines on a batch ``x`` attacked into ``x_adv`` by PGD-``steps``: the size of delta = x_adv - x against
    the budget ``eps`` (in units of 1/255), the range of x_adv, and the model's accuracy on x and on x_adv."""
    delta = (x_adv - x).abs()
    with torch.no_grad(), eval_mode(model):
        acc_clean, acc_adv = ((model(z).argmax(1) == y).float().mean().item() for z in (x, x_adv))
    return (f"max |delta| = {255 * delta.max().item():.2f}/255 (eps = {eps_text(eps)}), mean |delta| = "
            f"{255 * delta.mean().item():.2f}/255; x_adv lies in [{x_adv.min().item():.3f}, {x_adv.max().item():.3f}]\n"
            f"{label} on these {len(y)} images: {PERCENT * acc_clean:.1f}% correct clean, "
            f"{PERCENT * acc_adv:.1f}% correct after PGD-{steps}")


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


def pgd_figure(x, y, models: dict, eps: float, alpha: float, steps: int):
    """The mean cross-entropy (left) and the accuracy (right) of the batch ``x, y`` at each PGD step x'(t) of
    ``pgd_by_hand`` (from the random start of torch seed 0), one line per model of ``models`` ({label: model};
    blue, then red), the clean loss dotted: step 0 is the random start, every later point one ascent step of Eq. 2."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for (label, model), color in zip(models.items(), ("tab:blue", "tab:red")):
        torch.manual_seed(0)
        _, losses, accs = pgd_by_hand(model, x, y, eps, alpha, steps)
        with torch.no_grad(), eval_mode(model):
            clean = F.cross_entropy(model(x).float(), y).item()
        ts = range(len(losses))
        axes[0].plot(ts, losses, "o-", color=color, ms=3, label=label)
        axes[0].axhline(clean, color=color, ls=":", lw=1)
        axes[1].plot(ts, accs, "o-", color=color, ms=3, label=label)
    axes[0].set(xlabel="PGD step t", ylabel="mean cross-entropy", title="loss at x'(t) (dotted: clean x)")
    axes[1].set(xlabel="PGD step t", ylabel="accuracy on the batch", title="accuracy at x'(t)", ylim=(-0.02, 1.02))
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def accuracies(models: dict, images, labels, cfg, steps: int) -> dict:
    """{model name: {"natural": natural accuracy, "robust": PGD-``steps`` accuracy}} at the runs' eps and step
    (fractions, ``memlib.evaluate.accuracy``; PGD's random start seeded per model)."""
    results = {}
    for label, model in models.items():
        torch.manual_seed(0)
        results[label] = {kind: accuracy(model, images, labels, spec, eps=cfg.eps, alpha=cfg.alpha,
                                         batch_size=cfg.eval_batch_size)
                          for kind, spec in (("natural", "natural"), ("robust", f"pgd-{steps}"))}
    return results


def accuracy_table(results: dict, n: int, steps: int, setting: str, paper: dict = PAPER,
                   paper_key: str = PAPER_KEY) -> str:
    """Markdown: natural and PGD-``steps`` accuracy (%) of each model on ``n`` test images beside the paper's
    Table 1 final-epoch cells (``paper``) for ``paper_key`` (it reports no standard baseline), then ``setting``."""
    cells = {paper_key: f"{paper['natural']['final']:.2f} | {paper['pgd-10']['final']:.2f}"}
    return "\n".join([f"**Test accuracy (%) on {n} images, final weights**", "",
                      f"| Model | Natural | PGD-{steps} | Paper natural | Paper PGD-10 |", "|---|---|---|---|---|",
                      *(f"| {label} | {PERCENT * r['natural']:.2f} | {PERCENT * r['robust']:.2f} | "
                        f"{cells.get(label, '– | –')} |" for label, r in results.items()), "", f"> {setting}"])


def accuracy_figure(results: dict, steps: int, title: str, paper: dict = PAPER, paper_key: str = PAPER_KEY):
    """Natural and PGD-``steps`` accuracy of each model ({label: {"natural", "robust"} fractions}) as bars, the
    paper's Table 1 final-epoch cells (``paper``) as black lines over the bars of ``paper_key``, chance dotted."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    width = 0.36
    for j, (kind, color) in enumerate((("natural", "tab:blue"), ("robust", "tab:red"))):
        xs = [i + (j - 0.5) * width for i in range(len(results))]
        bars = ax.bar(xs, [PERCENT * r[kind] for r in results.values()], width, color=color,
                      label="natural (clean)" if kind == "natural" else f"robust (PGD-{steps})")
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    at = list(results).index(paper_key)
    ax.hlines([paper["natural"]["final"], paper["pgd-10"]["final"]], [at - width, at], [at, at + width],
              colors="black", lw=2, label=f"paper, {paper_key} (Table 1)")
    ax.axhline(10, color="gray", lw=0.5, ls=":")
    ax.set_xticks(range(len(results)), list(results))
    ax.set(ylabel="test accuracy (%)", ylim=(0, 105), title=title)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, frameon=False)
    fig.tight_layout()
    return fig


def attack_at(model, x, y, eps_k: int, steps: int):
    """PGD-``steps`` (Eq. 2) at budget eps_k/255 with step 2.5 eps / steps (so that the attack can walk across
    the ball whatever the budget), seeded; ``x`` itself at eps_k = 0."""
    if eps_k == 0:
        return x
    eps = eps_k / 255
    torch.manual_seed(0)
    return pgd(model, x, ce_objective(y), eps=eps, alpha=2.5 * eps / steps, steps=steps)


def probabilities(model, x):
    """The model's softmax on ``x`` (eval mode, no gradients)."""
    with torch.no_grad(), eval_mode(model):
        return F.softmax(model(x).float(), 1)


def explorer_view(model, model_name: str, x1, y1, eps_k: int, steps: int, classes=CIFAR10_CLASSES):
    """One test image attacked at eps_k/255: clean image, perturbation (+-eps spans the grey range) and
    adversarial image, each titled with the prediction and its confidence (green correct, red wrong); returns
    the figure and the same predictions as one line of text (printed under it, and read by the browser test)."""
    import matplotlib.pyplot as plt

    x1_adv = attack_at(model, x1, y1, eps_k, steps)
    (clean, clean_color), (adv, adv_color) = (prediction_text(probabilities(model, z)[0], y1[0], classes)
                                              for z in (x1, x1_adv))
    fig, axes = plt.subplots(1, 3, figsize=(7.5, 2.9))
    show_image(axes[0], x1[0], f"clean: {clean}", clean_color)
    span = max(eps_k, 1) / 255
    show_perturbation(axes[1], (x1_adv - x1)[0], span,
                      f"perturbation (x{0.5 / span:.0f})" if eps_k else "no perturbation")
    show_image(axes[2], x1_adv[0], f"eps {eps_k}/255: {adv}", adv_color)
    fig.suptitle(f"{model_name}; true class: {classes[int(y1[0])]}", fontsize=9)
    fig.tight_layout()
    return fig, f"{model_name}, true class {classes[int(y1[0])]}: clean → {clean}; eps {eps_k}/255 → {adv}"


def explorer_widget(models: dict, images, labels, steps: int, classes=CIFAR10_CLASSES) -> None:
    """The interactive explorer: choose a model ({name: model}), a budget (0..16/255) and a test image (uint8
    ``images``); shows ``explorer_view``."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    def explore(model_name, eps_k, index):
        x1, y1 = images[index:index + 1].float() / 255, labels[index:index + 1]
        _, caption = explorer_view(models[model_name], model_name, x1, y1, eps_k, steps, classes)
        plt.show()
        print(caption)

    widgets.interact(explore,
                     model_name=widgets.Dropdown(options=list(models), description="model"),
                     eps_k=widgets.SelectionSlider(options=[(f"{k}/255", k) for k in range(17)], value=8,
                                                   description="eps", continuous_update=False),
                     index=widgets.IntSlider(min=0, max=len(labels) - 1, value=0, description="test image",
                                             continuous_update=False))


def explorer_grid(models: dict, images, labels, eps_values: list, n: int, steps: int, classes=CIFAR10_CLASSES):
    """The explorer as one static figure: a row per test image and model ({name: model}), a column per budget
    in ``eps_values`` (units of 1/255, 0 = clean), the perturbation at the largest budget last."""
    import matplotlib.pyplot as plt

    cols, eps_max = len(eps_values) + 1, max(eps_values)
    fig, axes = plt.subplots(n * len(models), cols, figsize=(1.55 * cols, 1.75 * n * len(models)), squeeze=False)
    for i in range(n):
        x1, y1 = images[i:i + 1].float() / 255, labels[i:i + 1]
        for m, (model_name, model) in enumerate(models.items()):
            row, top = axes[i * len(models) + m], i == 0 and m == 0
            for j, eps_k in enumerate(eps_values):
                x1_adv = attack_at(model, x1, y1, eps_k, steps)
                text, color = prediction_text(probabilities(model, x1_adv)[0], y1[0], classes)
                head = ("clean" if eps_k == 0 else f"eps = {eps_k}/255") + "\n" if top else ""
                show_image(row[j], x1_adv[0], head + text, color)
            delta = attack_at(model, x1, y1, eps_max, steps) - x1
            show_perturbation(row[-1], delta[0], max(eps_max, 1) / 255,
                              f"perturbation\nat {eps_max}/255" if top else "")
            row[0].set_ylabel(f"{model_name}\ntrue: {classes[int(y1[0])]}", fontsize=8)
    fig.tight_layout()
    return fig


def explorer_caption(n: int, steps: int, eps_values: list) -> str:
    """The caption of ``explorer_grid``'s figure."""
    return (f"PGD-{steps} adversarial examples of {n} test images for growing eps, standard and PGD-AT model; "
            f"titles: predicted class and confidence (green correct, red wrong); last column: the perturbation at "
            f"{max(eps_values)}/255, amplified.")


def course_map(folder) -> str:
    """Markdown: a link to each notebook in ``folder`` with its title (the first line of its first Markdown
    cell)."""
    import nbformat

    lines = []
    for path in sorted(Path(folder).glob("*.ipynb")):
        cells = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown"]
        title = cells[0].source.splitlines()[0].lstrip("# ").strip() if cells else ""
        lines.append(f"* [{path.name}]({path.name}) — {title}")
    return "\n".join(lines)
