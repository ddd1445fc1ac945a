"""What the notebooks share to show results: names, colours, units, setting lines, learning curves.

The thin presentation layer on top of memlib (it decides nothing: the best epoch is ``runs.best_epoch``, the
learning-rate drops are ``schedule.lr_decays``, the paper's names are ``paper.METHOD_NAMES``). A notebook
imports from here instead of re-typing any of it.
"""

from __future__ import annotations

from memlib.config import RunConfig
from memlib.paper import METHOD_NAMES
from memlib.runs import best_epoch
from memlib.schedule import lr_decays

# Display names of methods (the paper's where it has one) and of data sets.
NAMES = {**METHOD_NAMES, "standard": "Standard training", "mix": "Eq. 6 (PGD-AT + clean CE)",
         "pgd_at_ls": "PGD-AT+LS", "pgd_at_sat": "PGD-AT+SAT", "kd_swa": "KD-SWA", "coteaching": "Co-teaching"}
SHORT_NAMES = {**NAMES, "standard": "ST", "mix": "Eq. 6"}  # legends and table rows of the paper
DATA_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "svhn": "SVHN"}
COLORS = {"pgd_at": "tab:blue", "pgd_at_te": "tab:orange", "trades": "tab:green", "trades_te": "tab:red",
          "standard": "tab:gray", "mix": "tab:olive", "pgd_at_ls": "tab:cyan", "pgd_at_sat": "tab:pink",
          "kd_swa": "tab:purple", "coteaching": "tab:brown"}
# metrics.jsonl keys (accuracies are fractions there; plots and tables show percent) and derived curves
METRIC_NAMES = {"test_rob_acc": "robust test accuracy", "test_nat_acc": "natural test accuracy",
                "train_rob_acc": "robust training accuracy", "train_nat_acc": "natural training accuracy",
                "rob_gap": "robust gap (train - test)", "train_loss": "training loss"}
PERCENT = 100  # accuracies are shown in percent everywhere


def name(key: str, short: bool = False) -> str:
    """The display name of a method key (the key itself when it has none)."""
    return (SHORT_NAMES if short else NAMES).get(key, key)


def eps_text(eps: float) -> str:
    """A budget as the paper writes it: 8/255 (a multiple of 1/255), else the number (l2 budgets, e.g. 0.5)."""
    k = eps * 255
    return f"{round(k)}/255" if abs(k - round(k)) < 1e-6 else f"{eps:g}"


def schedule_text(cfg: RunConfig) -> str:
    """The learning-rate schedule in words: 'lr 0.1 /10 after epochs 100, 150', 'lr 0.01 cosine'."""
    if cfg.lr_schedule == "multistep":
        return (f"lr {cfg.lr:g} /{round(1 / cfg.lr_decay)} after epoch{'s' * (len(cfg.lr_milestones) > 1)} "
                f"{', '.join(map(str, cfg.lr_milestones))}")
    if cfg.lr_schedule == "step":
        return f"lr {cfg.lr:g} /{round(1 / cfg.lr_decay)} every {cfg.lr_step_every} epochs"
    return f"lr {cfg.lr:g} {cfg.lr_schedule}"


def setting(cfg: RunConfig, tier: str, *extra: str, paper: str = "") -> str:
    """The one-line setting printed next to a notebook's results: what this tier's runs are (from the run's
    config, so it cannot disagree with what was trained), then ``extra`` clauses, then the paper's setting."""
    parts = [f"{DATA_NAMES.get(cfg.dataset, cfg.dataset)}, {cfg.model} at width {cfg.width:g}",
             f"{cfg.train_subset or 'all'} training images ({'with' if cfg.augment else 'no'} augmentation)",
             f"{cfg.epochs} epochs, {schedule_text(cfg)}",
             f"{'FGSM' if cfg.train_attack == 'fgsm' else f'PGD-{cfg.steps}'} at eps {eps_text(cfg.eps)} "
             f"(step {eps_text(cfg.alpha)}) in training",
             f"robust test accuracy by PGD-{cfg.eval_steps} on {cfg.test_subset or 'all'} test images",
             *extra]
    return f"This run ({tier} tier): " + ", ".join(p for p in parts if p) + "." + (f" {paper}" if paper else "")


def show_setting(text: str) -> None:
    """Display a setting line as a Markdown quote (in a notebook)."""
    from IPython.display import Markdown, display

    display(Markdown(f"> {text}"))


def mark_schedule(ax, cfg: RunConfig, te_band: bool = False) -> None:
    """Dotted vertical lines at the learning-rate drops; with ``te_band``, a shaded band over the temporal
    ensembling ramp-up (``te_start`` to ``te_end``). Integer epoch ticks."""
    from matplotlib.ticker import MaxNLocator

    for e in lr_decays(cfg):
        ax.axvline(e - 0.5, color="gray", ls=":", lw=1)
    if te_band:
        ax.axvspan(cfg.te_start, cfg.te_end, color="tab:purple", alpha=0.08, lw=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def curve(metrics: list[dict], metric: str) -> tuple[list[int], list[float]]:
    """(epochs, values in percent) of a metrics.jsonl key over the epochs that have it; ``rob_gap`` is robust
    training minus robust test accuracy; ``train_loss`` is not scaled."""
    need = ("train_rob_acc", "test_rob_acc") if metric == "rob_gap" else (metric,)
    rows = [m for m in metrics if all(k in m for k in need)]
    scale = 1 if metric == "train_loss" else PERCENT
    value = (lambda m: m["train_rob_acc"] - m["test_rob_acc"]) if metric == "rob_gap" else (lambda m: m[metric])
    return [m["epoch"] for m in rows], [scale * value(m) for m in rows]


def plot_curve(ax, metrics: list[dict], metric: str, *, label: str | None = None, color: str | None = None,
               star: bool = True, **style) -> None:
    """One learning curve of ``metric`` (``curve``), with a star at the run's best epoch (``best.pt``)."""
    epochs, ys = curve(metrics, metric)
    if not epochs:
        return
    (line,) = ax.plot(epochs, ys, color=color, label=label, **style)
    b = best_epoch(metrics)
    if star and b in epochs and metric != "train_loss":
        ax.plot([b], [ys[epochs.index(b)]], "*", color=line.get_color(), ms=10, mec="k", mew=0.5)


def plot_metric(ax, curves: dict, metric: str, cfg: RunConfig | None = None, *, te_band: bool = False,
                labels: dict | None = None) -> None:
    """One curve per entry of ``curves`` ({method key or label: metrics rows}), coloured and named by method,
    stars at best epochs, the schedule of ``cfg`` marked, axes labelled in percent."""
    for key, metrics in curves.items():
        plot_curve(ax, metrics, metric, label=(labels or {}).get(key, name(key, short=True)), color=COLORS.get(key))
    if cfg is not None:
        mark_schedule(ax, cfg, te_band=te_band)
    unit = "" if metric == "train_loss" else " (%)"
    ax.set(xlabel="epoch", ylabel=METRIC_NAMES.get(metric, metric) + unit)
