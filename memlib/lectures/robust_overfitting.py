"""The figures and computations of notebook 05 (Sec. 4.1, robust overfitting): the setting line, the learning
curves of Fig. 7(a), 7(b) and C.1 with their best-minus-final texts, the adversarial losses of Fig. 7(c) and C.2,
and the hardest training examples of Fig. C.3 with their explorer. The runs: memlib.experiments.robust_overfitting."""

import numpy as np
import torch
import torch.nn.functional as F

from memlib.experiments.robust_overfitting import loss_pairs, sweep
from memlib.paper import KENDALL_TAU
from memlib.present import (PERCENT, eps_text, mark_schedule, name, plot_band, plot_curve, prediction_text, show_image,
                            show_perturbation)
from memlib.runs import best_row


def setting_clauses(p: dict, cfg) -> tuple[str, ...]:
    """What the notebook's setting line adds to ``present.setting`` of the Fig. 7(a) run ``cfg``: the sweep's
    budgets, how often accuracies were measured, the attack and checkpoint of the adversarial losses."""
    every = "every epoch" if cfg.eval_every == 1 else f"every {cfg.eval_every} epochs"
    return (f"the sweep at eps {', '.join(f'{e}/255' for e in p['eps_list'])} with step eps/4", f"accuracies {every}",
            f"adversarial losses by PGD-{p['loss_steps']} at {p['loss_eps']}/255 (step {p['loss_alpha']:g}/255) of "
            f"the {p['loss_checkpoint']} checkpoints")


# --- Fig. 7(a), 7(b), C.1: learning curves ----------------------------------------------------------------

def gap(rows: list[dict]) -> float:
    """Robust overfitting in points: robust test accuracy at the best epoch (``best.pt``) minus the last one."""
    return PERCENT * (best_row(rows)["test_rob_acc"] - rows[-1]["test_rob_acc"])


def best_final_text(rows: list[dict], eps: float, paper: dict) -> str:
    """The lines under Fig. 7(a): best vs final robust test accuracy of this PGD-AT run, and the paper's Table 1
    (``paper``: {"best", "final", "diff"} in %)."""
    best, final = best_row(rows), rows[-1]
    return (f"**Best vs final robust test accuracy (PGD-AT, {eps_text(eps)}), this run:** "
            f"{PERCENT * best['test_rob_acc']:.1f}% at epoch {best['epoch']} vs {PERCENT * final['test_rob_acc']:.1f}% "
            f"at epoch {final['epoch']}: best − final = **{gap(rows):+.1f}** points; robust training accuracy at the "
            f"end {PERCENT * final['train_rob_acc']:.1f}%.  \n**Paper (Table 1, ResNet-18, PGD-10 on the whole test "
            f"set):** {paper['best']:.2f}% → {paper['final']:.2f}%, best − final = **{paper['diff']:+.2f}**.")


def sweep_runs(p: dict, run_dirs: dict) -> dict:
    """The rows of the eps-sweep table (Fig. 7b / C.1): {"PGD-AT, eps 8/255": run folder}, method by method."""
    return {f"{name(m)}, eps {e}/255": run_dirs[("eps", m, e)] for _, m, e in sweep(p)}


def plot_sweep(axes, curves: dict, methods: list, eps_list: list, cfg) -> None:
    """Fig. 7(b) (PGD-AT) and C.1 (TRADES): a column per method, robust test accuracy per epoch on top (stars:
    best epochs) and robust training accuracy below, one curve per budget (dark: small, light: large)."""
    import matplotlib.pyplot as plt

    budgets = sorted(eps_list)
    colors = {e: plt.cm.viridis(i / max(1, len(budgets) - 1) * 0.85) for i, e in enumerate(budgets)}
    for j, m in enumerate(methods):
        for i, metric in enumerate(("test_rob_acc", "train_rob_acc")):
            for e in budgets:
                plot_curve(axes[i][j], curves[("eps", m, e)], metric, label=f"eps {e}/255", color=colors[e],
                           star=i == 0)
            mark_schedule(axes[i][j], cfg)
        axes[0][j].set(title=f"{name(m)}: robust test accuracy", ylabel=f"PGD-{cfg.eval_steps} accuracy (%)")
        axes[1][j].set(title=f"{name(m)}: robust training accuracy", xlabel="epoch", ylabel="accuracy (%)")
    axes[0][0].legend(fontsize=8)


def sweep_seed_runs(p: dict, run_dirs: dict) -> dict:
    """The rows of the sweep's table over seeds (F9): {"PGD-AT, eps 8/255": [the run folder of each seed]}."""
    return {f"{name('pgd_at')}, eps {e}/255": [run_dirs[("eps", "pgd_at", e, "seed", s)] for s in p["sweep_seeds"]]
            for e in p["eps_list"]}


def plot_sweep_bands(axes, curves: dict, eps_list: list, seeds: list) -> None:
    """Mean ± std bands over ``seeds`` of PGD-AT's robust test (top) and training (bottom) accuracy per budget,
    in the budgets' colours of ``plot_sweep``."""
    import matplotlib.pyplot as plt

    budgets = sorted(eps_list)
    for i, e in enumerate(budgets):
        color = plt.cm.viridis(i / max(1, len(budgets) - 1) * 0.85)
        runs = [curves[("eps", "pgd_at", e, "seed", s)] for s in seeds]
        for ax, metric in zip(axes, ("test_rob_acc", "train_rob_acc")):
            plot_band(ax, runs, metric, color=color)


def sweep_gaps_text(curves: dict, methods: list, eps_list: list, table1: dict) -> str:
    """The line under the eps-sweep table: best − final per method and budget, and the paper's (Table 1 at
    8/255; ``table1``: memlib.paper.TABLE1["cifar10"])."""
    ours = "; ".join(f"{name(m)}: " + ", ".join(f"{e}/255 {gap(curves[('eps', m, e)]):+.1f}" for e in sorted(eps_list))
                     for m in methods)
    return (f"**Best − final robust test accuracy, this run:** {ours}. **Paper:** no overfitting at 1/255 (Fig. 7b, "
            f"C.1); at 8/255 {table1['pgd_at']['pgd-10']['diff']:+.2f} (PGD-AT) and "
            f"{table1['trades']['pgd-10']['diff']:+.2f} (TRADES), Table 1.")


# --- Fig. 7(c), C.2: adversarial losses of two models --------------------------------------------------------

def loss_attack(p: dict) -> dict:
    """The PGD attack that measures the adversarial loss of each training example (Fig. 7c, C.2, C.3): the
    keyword arguments of memlib.analysis.run_adversarial_losses, budgets given in units of 1/255."""
    return {"eps": p["loss_eps"] / 255, "alpha": p["loss_alpha"] / 255, "steps": p["loss_steps"],
            "seed": p["loss_seed"]}


def loss_runs(p: dict, run_dirs: dict) -> dict:
    """The run folders of the two comparisons (``loss_pairs``): {"seeds": [first, second], "architectures": ...}."""
    return {comparison: [run_dirs[key] for _, key in pair] for comparison, pair in loss_pairs(p).items()}


def adversarial_losses(p: dict, pairs: dict, force: bool = False) -> dict:
    """{run folder: its saved adversarial losses} (``run_adversarial_losses`` at ``p``'s ``loss_checkpoint`` and
    ``loss_attack``; kept in each run's folder), for every run of ``pairs`` (``loss_runs``)."""
    from memlib.analysis import run_adversarial_losses

    folders = dict.fromkeys(d for pair in pairs.values() for d in pair)
    return {d: run_adversarial_losses(d, p["loss_checkpoint"], force=force, **loss_attack(p)) for d in folders}


def plot_sorted_losses(ax, title: str, first: tuple, second: tuple, shown: int, paper_tau: float) -> None:
    """Fig. 7(c) / C.2: ``shown`` training examples (a seeded choice; all if fewer) sorted by the first model's
    adversarial loss (the line), the second model's losses on the same examples as dots, Kendall's tau over all
    examples in the title. ``first`` and ``second``: (label, losses of every training example)."""
    from memlib.analysis import kendall_tau

    (label_a, la), (label_b, lb) = first, second
    n = len(la)
    picked = np.random.default_rng(0).choice(n, shown, replace=False) if n > shown else np.arange(n)
    order = picked[np.argsort(la[picked], kind="stable")]
    ax.scatter(np.arange(len(order)), lb[order], s=5, color="tab:orange", alpha=0.6, label=f"second: {label_b}")
    ax.plot(np.arange(len(order)), la[order], color="tab:blue", lw=1.5, label=f"first: {label_a}")
    ax.set(xlabel=f"training example (sorted by the first model's loss; {len(order)} of {n})",
           ylabel="adversarial loss (CE)",
           title=f"{title}: {label_a} vs {label_b}\nKendall tau {kendall_tau(la, lb):.2f} over all {n} "
                 f"(paper {paper_tau:.2f})")
    ax.legend(fontsize=8, loc="upper left")


def plot_loss_pairs(axes, p: dict, run_dirs: dict, saved: dict) -> None:
    """Fig. 7(c) (two seeds, left) and C.2 (two architectures, right): ``plot_sorted_losses`` of each comparison
    of ``loss_pairs``, ``p["sorted_examples"]`` examples drawn, the paper's tau (memlib.paper.KENDALL_TAU)."""
    for ax, (comparison, pair) in zip(axes, loss_pairs(p).items()):
        a, b = ((label, saved[run_dirs[key]]["losses"]) for label, key in pair)
        plot_sorted_losses(ax, "Fig. 7(c)" if comparison == "seeds" else "Fig. C.2", a, b, p["sorted_examples"],
                           KENDALL_TAU[comparison])


# --- Fig. C.3 and the explorer: the hardest training examples ------------------------------------------------

class HardExamples:
    """A run's training examples ranked by their adversarial loss under its model, hardest first (Fig. C.3),
    with their natural and adversarial views: the adversarial example is made again by the loss's attack
    (``attack_kw``, ``loss_attack``) from its seed, so its random start differs from the ranking's."""

    def __init__(self, model, images, labels, losses, attack_kw: dict, classes=None):
        from memlib.analysis import hardest_examples

        self.model, self.images, self.labels, self.losses = model, images, labels, losses
        self.attack_kw, self.classes = attack_kw, classes
        self.ranking = hardest_examples(losses, len(losses))  # every example, hardest first

    @classmethod
    def of_run(cls, run_dir, saved: dict, which: str, attack_kw: dict):
        """From a run's saved losses (``run_adversarial_losses``): its training images and checkpoint ``which``."""
        from memlib.data import CIFAR10_CLASSES
        from memlib.runs import Run

        run = Run(run_dir)
        model, _ = run.load(which, "cpu")
        return cls(model, run.train_images(torch.from_numpy(saved["train_ids"])), torch.from_numpy(saved["labels"]),
                   torch.from_numpy(saved["losses"]), attack_kw, CIFAR10_CLASSES if run.config.dataset == "cifar10"
                   else None)

    def class_name(self, k) -> str:
        return self.classes[int(k)] if self.classes else str(int(k))

    def view(self, ranks):
        """The examples at ``ranks`` (0 = hardest): natural and adversarial images, labels, softmax on both."""
        from memlib.attacks import attack

        idx = self.ranking[list(ranks)]
        x, y = self.images[idx].float() / 255, self.labels[idx]
        a = self.attack_kw
        with torch.random.fork_rng():
            torch.manual_seed(a["seed"])
            x_adv = attack(self.model, x, y, f"pgd-{a['steps']}", eps=a["eps"], alpha=a["alpha"])
        with torch.no_grad():
            return x, x_adv, y, F.softmax(self.model(x), 1), F.softmax(self.model(x_adv), 1)

    def draw(self, axes_nat, axes_adv, ranks) -> None:
        """Column j: the example at rank ranks[j], natural (label, loss) on top, adversarial (prediction) below."""
        x, x_adv, y, _, p_adv = self.view(ranks)
        for j, r in enumerate(ranks):
            loss = float(self.losses[self.ranking[r]])
            show_image(axes_nat[j], x[j], f"#{r + 1}: {self.class_name(y[j])}\nloss {loss:.2f}")
            text, color = prediction_text(p_adv[j], y[j], self.classes)
            show_image(axes_adv[j], x_adv[j], f"pred {text}", color)
        axes_nat[0].set_ylabel("natural", fontsize=9)
        axes_adv[0].set_ylabel("adversarial", fontsize=9)

    def class_counts(self) -> str:
        """The classes of the hardest 10% of the examples, most frequent first."""
        top = self.labels[self.ranking[:max(1, len(self.ranking) // 10)]]
        classes, counts = top.unique(return_counts=True)
        pairs = sorted(zip(classes.tolist(), counts.tolist()), key=lambda kv: -kv[1])
        return ("**Classes of the hardest 10% of the training examples (first model):** "
                + ", ".join(f"{self.class_name(k)} {n}" for k, n in pairs)
                + f" (of {len(top)}; the training subset is class-balanced).")

    @staticmethod
    def ranks_of(losses) -> np.ndarray:
        """Each example's rank (1 = highest loss) under other losses of the same examples."""
        rank = np.empty(len(losses), dtype=int)
        rank[np.argsort(-np.asarray(losses), kind="stable")] = np.arange(1, len(losses) + 1)
        return rank

    def show_rank(self, rank: int, second, names: tuple):
        """The explorer's view of the example at ``rank`` (1 = hardest): natural, adversarial and the perturbation
        (magnified to the full range), with its loss under this model and under a second one (``second``: its
        losses of the same examples; ``names``: the two models')."""
        import matplotlib.pyplot as plt

        x, x_adv, y, p_nat, p_adv = (t[0] for t in self.view([rank - 1]))
        i, span = int(self.ranking[rank - 1]), float((x_adv - x).abs().max()) or 1.0
        fig, axes = plt.subplots(1, 3, figsize=(7.5, 2.9))
        nat, nat_color = prediction_text(p_nat, y, self.classes)
        show_image(axes[0], x, f"natural: label {self.class_name(y)}\npred {nat}", nat_color)
        adv, adv_color = prediction_text(p_adv, y, self.classes)
        show_image(axes[1], x_adv, f"adversarial\npred {adv}", adv_color)
        show_perturbation(axes[2], x_adv - x, span, f"perturbation (x{0.5 / span:.0f})")
        fig.suptitle(f"rank {rank} of {len(self.ranking)}: loss {float(self.losses[i]):.2f} ({names[0]}), "
                     f"{second[i]:.2f} ({names[1]}, rank {self.ranks_of(second)[i]})", fontsize=9)
        fig.tight_layout()
        return fig

    def explorer(self, second, names: tuple, interactive: bool = True) -> None:
        """The explorer: a slider over the ranking, showing ``show_rank``; without ``interactive`` (papermill),
        the static ``spread`` instead."""
        import matplotlib.pyplot as plt

        if not interactive:
            self.spread(second)
            plt.show()
            return
        import ipywidgets as widgets

        def show(rank: int):
            self.show_rank(rank, second, names)
            plt.show()

        widgets.interact(show, rank=widgets.IntSlider(value=1, min=1, max=len(self.ranking), step=1,
                                                      description="rank", continuous_update=False))

    def spread(self, second, n: int = 6):
        """The explorer as one static figure: ``n`` examples at evenly spaced ranks, hardest on the left, each
        with its rank under the second model (``second``: its losses)."""
        import matplotlib.pyplot as plt

        picks = sorted(set(np.linspace(0, len(self.ranking) - 1, n).round().astype(int).tolist()))
        fig, axes = plt.subplots(2, len(picks), figsize=(1.6 * len(picks), 3.6), squeeze=False)
        self.draw(axes[0], axes[1], picks)
        second_rank = self.ranks_of(second)
        for j, r in enumerate(picks):
            axes[1][j].set_xlabel(f"2nd model: rank {second_rank[int(self.ranking[r])]}", fontsize=7)
        fig.suptitle("From the hardest (left) to the easiest (right) training example", fontsize=10)
        fig.tight_layout()
        return fig
