"""What the notebooks share to show results: names, colours, units, setting lines, learning curves.

The thin presentation layer on top of memlib (it decides nothing: the best epoch is ``runs.best_epoch``, the
learning-rate drops are ``schedule.lr_decays``, the paper's names are ``paper.METHOD_NAMES``). A notebook
imports from here instead of re-typing any of it.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from memlib.config import RunConfig
from memlib.paper import METHOD_NAMES
from memlib.runs import best_epoch
from memlib.schedule import lr_decays

# Method names are the paper's (``paper.METHOD_NAMES``, which the tables use too); two of them are spelled out
# where prose or a title has room.
LONG_NAMES = {"standard": "Standard training", "mix": "Eq. 6 (PGD-AT + clean CE)"}
DATA_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "svhn": "SVHN"}
COLORS = {"pgd_at": "tab:blue", "pgd_at_te": "tab:orange", "trades": "tab:green", "trades_te": "tab:red",
          "standard": "tab:gray", "mix": "tab:olive", "pgd_at_ls": "tab:cyan", "pgd_at_sat": "tab:pink",
          "kd_swa": "tab:purple", "coteaching": "tab:brown"}
# metrics.jsonl keys (accuracies are fractions there; plots and tables show percent) and derived curves
METRIC_NAMES = {"test_rob_acc": "robust test accuracy", "test_nat_acc": "natural test accuracy",
                "train_rob_acc": "robust training accuracy", "train_nat_acc": "natural training accuracy",
                "rob_gap": "robust gap (train - test)", "train_loss": "training loss"}
# the per-example losses of memlib.analysis (analysis.LOSSES): a method's training loss, or one of its terms
LOSS_NAMES = {"pgd_at": METHOD_NAMES["pgd_at"], "trades": METHOD_NAMES["trades"], "clean_ce": "clean CE",
              "trades_ce": "clean CE",
              "trades_kl": "beta*KL", "r": "R = CE(x') - CE(x)"}
PERCENT = 100  # accuracies are shown in percent everywhere


def name(key: str, short: bool = False) -> str:
    """The display name of a method key: the paper's (``short``, or where it has no longer form), else the
    spelled-out one of ``LONG_NAMES``; the key itself for a method the paper does not name."""
    return (None if short else LONG_NAMES.get(key)) or METHOD_NAMES.get(key, key)


def eps_text(eps: float) -> str:
    """A budget as the paper writes it: 8/255 (a multiple of 1/255), else the number (l2 budgets, e.g. 0.5)."""
    k = eps * 255
    return f"{round(k)}/255" if abs(k - round(k)) < 1e-6 else f"{eps:g}"


def labels_text(noise_rate: float) -> str:
    """The labels a run trained on (Sec. 3.1): 'true labels' (noise rate 0), 'random labels' (1), 'noise 0.5'."""
    return "true labels" if noise_rate == 0 else "random labels" if noise_rate == 1 else f"noise {noise_rate:g}"


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


TIMES_FILE = Path("notebooks") / "README.md"  # its table "How long each notebook takes": the measured times


def times_line(notebook: str, project: Path | None = None) -> str:
    """How long ``notebook`` takes, from the one table of measured times (``TIMES_FILE``); "" without a row."""
    from memlib.runs import project_root

    path = (project or project_root()) / TIMES_FILE
    row = re.search(rf"^\| {re.escape(notebook)} \| ([^|]+?) \| ([^|]+?) \|$", path.read_text(), re.M) \
        if path.is_file() else None
    if not row:
        return ""
    return (f"**How long it takes** (measured on a 2-core CPU; {TIMES_FILE.as_posix()}): *Run All* in the smoke "
            f"tier {row[1]} with its runs already trained; the quick tier's runs {row[2]} of training (one thread, "
            f"summed; `python -m memlib plan --tier quick --only {notebook}` says what is left to train here).")


def show_times(notebook: str) -> None:
    """Display ``times_line`` (in a notebook, under its parameter check)."""
    from IPython.display import Markdown, display

    if text := times_line(notebook):
        display(Markdown(text))


def show_image(ax, img, title: str = "", color: str = "black") -> None:
    """Draw one image (a CHW tensor in [0, 1], clipped) without ticks, titled in ``color``."""
    ax.imshow(img.detach().permute(1, 2, 0).clamp(0, 1).cpu().numpy(), interpolation="nearest")
    ax.set_title(title, fontsize=8, color=color)
    ax.set_xticks([])
    ax.set_yticks([])


def show_perturbation(ax, delta, span: float, title: str = "") -> None:
    """Draw a perturbation x' - x (CHW) with -span..+span mapped to black..white (grey: unchanged); an attack's
    perturbation is far too small to see at its own scale."""
    show_image(ax, delta * (0.5 / span) + 0.5, title)


def prediction_text(probs, label: int, classes=None) -> tuple[str, str]:
    """The most probable class of a softmax vector with its confidence ('cat 87%'), and its colour: green if it
    is the true ``label``, red if not."""
    c = int(probs.argmax())
    return (f"{classes[c] if classes else c} {PERCENT * float(probs[c]):.0f}%",
            "tab:green" if c == int(label) else "tab:red")


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


def plot_band(ax, runs: list[list[dict]], metric: str, *, color: str | None = None, label: str | None = None,
              alpha: float = 0.18) -> None:
    """Mean ± standard deviation (ddof = 1) over the runs of several seeds of ``metric`` (``curve``), at the epochs
    every run has: a shaded band and a thin mean line. Nothing for fewer than two runs."""
    series = [dict(zip(*curve(rows, metric))) for rows in runs]
    if len(series) < 2:
        return
    epochs = sorted(set.intersection(*(set(s) for s in series)))
    values = np.array([[s[e] for e in epochs] for s in series])
    mean, std = values.mean(0), values.std(0, ddof=1)
    ax.fill_between(epochs, mean - std, mean + std, color=color, alpha=alpha, lw=0,
                    label=None if label is None else f"{label}: ± std over {len(series)} seeds")
    ax.plot(epochs, mean, color=color, lw=0.8, ls=":")


# the four accuracies of a run's metrics.jsonl: (colour: blue training, orange test; line: solid natural, dashed
# robust; legend label)
ACCURACIES = {"train_nat_acc": ("tab:blue", "-", "train natural"), "train_rob_acc": ("tab:blue", "--", "train robust"),
              "test_nat_acc": ("tab:orange", "-", "test natural"), "test_rob_acc": ("tab:orange", "--", "test robust")}


def plot_accuracies(ax, metrics: list[dict], cfg: RunConfig, **style) -> None:
    """The four accuracies of one run per evaluated epoch (``ACCURACIES``; Fig. 7a, A.6, A.7), a star at its best
    epoch on the robust test curve (the curve that picks it), the schedule of ``cfg`` marked, the y-axis 0-102%;
    ``style`` goes to every curve (markers, say). The caller adds the y label and the legend."""
    for key, (color, ls, label) in ACCURACIES.items():
        plot_curve(ax, metrics, key, label=label, color=color, ls=ls, star=key == "test_rob_acc", **style)
    mark_schedule(ax, cfg)
    ax.set(xlabel="epoch", ylim=(0, 102))


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


def explore_curves(groups: dict, cfgs: dict, interactive: bool, *, te_band: bool = False,
                   panels: tuple = ("test_rob_acc", "train_rob_acc", "rob_gap")) -> None:
    """A notebook's learning-curve explorer (``plot_metric``): ``groups`` is {title: {method key: metrics rows}}
    (one group per data set, say), ``cfgs`` {title: the RunConfig whose schedule is marked}. With ``interactive``,
    widgets pick the group, the methods and the metric; without (papermill), a static grid: a row per group, a
    column per metric of ``panels`` (by default the memorization side: robust training accuracy and the gap)."""
    import matplotlib.pyplot as plt

    titled = len(groups) > 1
    if interactive:
        import ipywidgets as widgets

        def show(group, methods, metric):
            fig, ax = plt.subplots(figsize=(6.5, 3.8))
            plot_metric(ax, {k: groups[group][k] for k in methods if k in groups[group]}, metric, cfgs[group],
                        te_band=te_band)
            ax.set_title(group if titled else "")
            if methods:
                ax.legend(fontsize=8)
            plt.show()

        keys = list(dict.fromkeys(k for curves in groups.values() for k in curves))
        widgets.interact(show, group=widgets.Dropdown(options=list(groups), description="runs") if titled
                         else widgets.fixed(next(iter(groups))),
                         methods=widgets.SelectMultiple(options=[(name(k), k) for k in keys], value=tuple(keys),
                                                        rows=len(keys), description="methods"),  # all in view
                         metric=widgets.Dropdown(options=[(v, k) for k, v in METRIC_NAMES.items()],
                                                 value="test_rob_acc", description="metric"))
        return
    fig, axes = plt.subplots(len(groups), len(panels), figsize=(4.6 * len(panels), 3.3 * len(groups)), squeeze=False)
    for row, (title, curves) in zip(axes, groups.items()):
        for ax, metric in zip(row, panels):
            plot_metric(ax, curves, metric, cfgs[title], te_band=te_band)
            ax.set_title(f"{title}: {METRIC_NAMES[metric]}" if titled else METRIC_NAMES[metric])
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    plt.show()


def te_text(cfg: RunConfig) -> str:
    """The temporal-ensembling schedule of a run (Sec. 4.2), a clause for ``setting``: 'TE weight 300 ramped over
    epochs 90-150'."""
    return f"TE weight {cfg.te_weight:g} ramped over epochs {cfg.te_start}-{cfg.te_end}"


def plot_lr(ax, cfg: RunConfig, loc: str = "best") -> None:
    """The learning rate of ``cfg`` per epoch (dashed, gray) on a log-scale twin axis of ``ax``, one legend for
    both axes, integer epoch ticks: what a schedule drawn on ``ax`` (TE weight, SAT, SWA) is timed against."""
    from matplotlib.ticker import MaxNLocator

    from memlib.schedule import lr_at

    epochs = range(1, cfg.epochs + 1)
    twin = ax.twinx()
    twin.plot(epochs, [lr_at(cfg, e) for e in epochs], "--", color="gray", drawstyle="steps-mid", label="learning rate")
    twin.set_yscale("log")
    twin.set_ylabel("learning rate (log scale)", color="gray")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], fontsize=7, loc=loc)


def plot_timing(ax, cfgs: dict, epochs: int) -> None:
    """When each remedy of ``cfgs`` ({key: RunConfig}, coloured by key) acts in epochs 1..``epochs`` (Sec. 5):
    curves for the fraction of each batch Co-teaching keeps, R(T), and the TE weight relative to its maximum;
    shaded spans for the epochs in which SAT updates its targets and in which SWA averages the weights. Methods
    without a schedule of their own (PGD-AT, LS) draw nothing. What a method draws follows from its registration
    (``memlib.methods.method_spec``): the schedules among its settings, weight averaging if it has it. Axes on a
    0-1 scale."""
    from memlib.methods import Context, method_spec

    ep = range(1, epochs + 1)
    for key, c in cfgs.items():
        spec, color = method_spec(c.method), COLORS.get(key)
        if "coteach_forget_rate" in spec.settings:
            ax.plot(ep, [1 - Context(c, e).forget_rate() for e in ep], color=color,
                    label="Co-teaching: fraction of the batch kept")
        if "te_weight" in spec.settings:
            ax.plot(ep, [Context(c, e).te_weight() / c.te_weight for e in ep], color=color, label="TE weight / maximum")
        if "sat_start" in spec.settings:
            ax.axvspan(c.sat_start - 0.5, epochs + 0.5, color=color, alpha=0.12, label="SAT updates its targets")
        if spec.averaging:
            ax.axvspan(c.swa_start - 0.5, epochs + 0.5, ymax=0.5, fill=False, hatch="//", edgecolor=color, lw=0,
                       label="SWA averages the weights")
    ax.set(xlabel="epoch", ylabel="fraction", ylim=(0, 1.05))


def diff_points(result: dict, attack: str) -> float | None:
    """Best minus final accuracy under ``attack`` in points, from one ``evaluate_run`` result; None while either
    is not evaluated."""
    best, final = result["best"][attack], result["final"][attack]
    return None if best is None or final is None else PERCENT * (best - final)


def not_evaluated(evals: dict, runs: dict, n: int, command: str) -> str:
    """A note naming the runs of ``evals`` ({key: evaluate_run's result}) with a result still missing (their
    weights are not on this machine, ``evaluate_run(missing_weights="skip")``), and the ``command`` that trains
    and evaluates them; "" when nothing is missing."""
    missing = sorted({Path(runs[k]).name for k, e in evals.items()
                      if any(v is None for c in e.values() for a, v in c.items() if a != "epoch")})
    if not missing:
        return ""
    return (f"> **Not yet evaluated on {n or 'all'} test images:** {len(missing)} run(s), shown as – in the tables "
            f"and left out of the verdicts: {', '.join(missing)}. Their records are here, their weights are not; "
            f"`{command}` trains them again and evaluates them.")


def gap_summary(attack: str, ours: dict, paper: dict, notes: dict | None = None) -> str:
    """The line under a best/final table (Tables 1, 2): each method's best minus final accuracy under ``attack``
    (``ours``: {method: points}; ``notes``: {method: text shown in brackets}), then the paper's PGD-10 Diff of the
    methods its table has (``paper``: a table of memlib.paper, {method: {"pgd-10": {"diff": points}}}); a
    method whose value is None (not yet evaluated) shows as "–"."""
    this = ", ".join(f"{name(m)} " + ("–" if v is None else f"{v:+.2f}")
                     + (f" ({notes[m]})" if m in (notes or {}) else "") for m, v in ours.items())
    theirs = ", ".join(f"{name(m)} {paper[m]['pgd-10']['diff']:+.2f}" for m in ours if m in paper)
    return f"**Best − final under {attack}, this run:** {this}.  \n**Paper, PGD-10:** {theirs}."
