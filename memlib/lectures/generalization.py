"""The figures and computations of notebook 04 (Sec. 3.3 and App. A.3, generalization): the models' labels and
markers, Fig. 6's panels of the complexity measures against the robust generalization gap with their Kendall taus
and the random-label test, the 1-D weight landscapes and their explorer (computing the loss at any step live), and
the learning curves of Fig. A.10. The runs: memlib.experiments.generalization."""

import math

from memlib import analysis
from memlib.evaluate import load_weights
from memlib.experiments.generalization import INITS, REGULARIZERS, parse_model
from memlib.present import COLORS, PERCENT, labels_text, mark_schedule, name, plot_curve, setting
from memlib.report import taus_with_gap

REGULARIZER_WORDS = {"augment": "aug.", "weight_decay": "WD", "dropout": "dropout"}  # as the model labels say
# Fig. 6's four measures (keys of complexity.json, memlib.analysis.complexity_measures) and their axis labels
MEASURES = {"spectral_log10": "log10 (Π‖W‖₂ / γ²)", "l1": "Σ‖W‖₁ / γ",
            "hessian": "input-Hessian λmax", "flatness": "weight-landscape flatness"}
LABEL_MARKERS = {0.0: "^", 1.0: "o"}  # true labels: triangles, random: circles; partly random: squares
LABEL_LINES = {0.0: "--", 1.0: "-"}  # the landscape curves: dashed true, solid random; partly random: dotted
INIT_COLORS = {"random": "tab:blue", "adversarial": "tab:red"}  # Fig. A.10's colours and legend
INIT_NAMES = {"random": "rand", "adversarial": "adv"}


def regularized(spec: str) -> bool:
    """Whether a model was trained with at least one explicit regularizer (hollow markers)."""
    return any(parse_model(spec)[k] for k in REGULARIZERS)


def model_label(spec: str) -> str:
    """A model's row label, e.g. "TRADES, random labels + aug." (the Fig. 6 table's and the legends')."""
    m = parse_model(spec)
    regs = [REGULARIZER_WORDS[k] for k in REGULARIZERS if m[k]]
    return f"{name(m['method'])}, {labels_text(m['noise_rate'])}" + (f" + {' + '.join(regs)}" if regs else "")


# --- Fig. 6: complexity vs the robust generalization gap ---------------------------------------------------

def measures_text(s: dict) -> str:
    """The measurement settings (``analysis.complexity_settings``) as a clause of the setting line."""
    return (f"measures on {s['examples'] or 'all'} training examples (Hessian: {s['hessian_examples'] or 'all'}, "
            f"{s['hessian_iters']} iterations; flatness: {s['directions']} directions at {s['gamma']:g}, "
            f"PGD-{s['steps']})")


def _style(spec: str) -> tuple[str, str, str]:
    """(colour by method, marker by labels, marker face: hollow when regularized) of a model."""
    m = parse_model(spec)
    color = COLORS.get(m["method"], "gray")
    return color, LABEL_MARKERS.get(m["noise_rate"], "s"), "none" if regularized(spec) else color


def scatter(ax, key: str, cx: dict, gap: dict, highlight: str | None = None) -> None:
    """One panel of Fig. 6: measure ``key`` of each model ({spec: complexity.json entry}) against its robust gap
    ({spec: %}), one marker per model; ``highlight`` circles one."""
    shown = [spec for spec in cx if cx[spec].get(key) is not None]
    for spec in shown:
        color, marker, face = _style(spec)
        ax.scatter(gap[spec], cx[spec][key], marker=marker, s=90 if spec == highlight else 45, facecolors=face,
                   edgecolors="k" if spec == highlight else color, linewidths=1.5)
    if not shown:
        ax.text(0.5, 0.5, "undefined for every model:\nmargin ≤ 0 (no model fits\nits training set)",
                ha="center", va="center", transform=ax.transAxes, fontsize=8)
    ax.set(xlabel="robust generalization gap (%)", ylabel=MEASURES.get(key, key))


def legend(ax, specs) -> None:
    """Fig. 6's legend: marker by labels, hollow = regularized, colour by method (those of ``specs``)."""
    from matplotlib.lines import Line2D

    kinds = [("^", "gray", "true labels", None), ("o", "gray", "random labels", None),
             ("s", "gray", "partly random labels", None), ("o", "gray", "with a regularizer", "none")]
    methods = dict.fromkeys(parse_model(s)["method"] for s in specs)
    kinds += [("o", COLORS.get(m, "gray"), name(m), None) for m in methods]
    ax.legend(handles=[Line2D([], [], marker=mk, ls="", color=c, mfc=face, label=t) for mk, c, t, face in kinds],
              fontsize=7)


def fig6_figure(cx: dict, gap: dict, specs):
    """Fig. 6: a panel (``scatter``) per measure of ``MEASURES``, the legend of the models ``specs`` in the first."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(MEASURES), figsize=(17, 3.8))
    for ax, key in zip(axes, MEASURES):
        scatter(ax, key, cx, gap)
    legend(axes[0], specs)
    fig.tight_layout()
    return fig


def plot_landscape(ax, spec: str, result: dict, **style) -> None:
    """The saved 1-D weight landscape of a model (``result["curve"]``: rho(theta + lambda d_1), Wu et al. 2020)."""
    c = result.get("curve")
    if c:
        color, marker, face = _style(spec)
        noise = parse_model(spec)["noise_rate"]
        ax.plot(c["lambda"], c["loss"], marker=marker, ms=5, color=color, mfc=face, label=model_label(spec),
                ls=LABEL_LINES.get(noise, ":"), **style)


def landscape_figure(cx: dict, s: dict):
    """Every model's saved 1-D landscape in one panel, the band +-gamma_w of the flatness measure shaded."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for spec, result in cx.items():
        plot_landscape(ax, spec, result)
    ax.axvspan(-s["gamma"], s["gamma"], color="gray", alpha=0.08, lw=0)
    ax.set(xlabel="λ (step along a filter-normalized random direction)", ylabel=f"adversarial loss (PGD-{s['steps']})",
           yscale="log", title="1-D weight loss landscape of each model")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def landscape_grid(cx: dict, gap: dict, gamma: float):
    """The explorer's static view: each model's landscape, its flatness points (stars at gamma_w, a dot at
    lambda = 0) and its gap; returns the figure."""
    import matplotlib.pyplot as plt

    cols = min(4, len(cx))
    rows = -(-len(cx) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.9 * rows), squeeze=False)
    for ax, (spec, r) in zip(axes.flat, cx.items()):
        plot_landscape(ax, spec, r)
        ax.plot([gamma] * len(r["perturbed"]), r["perturbed"], "k*", ms=7)
        ax.plot([0], [r["adv_loss"]], "ko", ms=4)
        ax.set(title=f"{model_label(spec)}\nflatness {r['flatness']:.3g}, gap {gap[spec]:.0f}%", xlabel="λ",
               yscale="log")
        ax.title.set_fontsize(8)
    for ax in list(axes.flat)[len(cx):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def timing_text(cx: dict, seconds_here: float) -> str:
    """How long the measurements of ``cx`` took: here (``seconds_here``; saved results are reused) and when each
    was made (``complexity.json``'s seconds), with the devices they were made on."""
    measured = sum(sum(c["seconds"].values()) for c in cx.values())
    return (f"Measurements: {seconds_here:.0f} s here (results saved in the run folders are reused; measuring all "
            f"{len(cx)} models took {measured:.0f} s on {', '.join(sorted({c['device'] for c in cx.values()}))}).")


def random_below_true(cx: dict, key: str) -> tuple[int, int]:
    """The random-label test of Sec. 3.3: (random-label models with a value of ``key`` below at least one
    true-label model's, random-label models with a value)."""
    true, rand = ([r[key] for s, r in cx.items() if parse_model(s)["noise_rate"] == rate and r.get(key) is not None]
                  for rate in (0.0, 1.0))
    return (sum(v < max(true) for v in rand) if true else 0), len(rand)


def summary(cx: dict, gap: dict) -> list[str]:
    """One Markdown bullet per measure: its Kendall tau with the gap over the models where it is defined and over
    the models where all four are (taus over different sets of models are not comparable: the models that fit
    nothing have small gaps), and the random-label test."""
    values, gaps = {k: [r.get(k) for r in cx.values()] for k in MEASURES}, [gap[s] for s in cx]
    (own, own_n), (common, common_n) = taus_with_gap(values, gaps), taus_with_gap(values, gaps, common=True)
    tau = lambda t: "undefined" if math.isnan(t) else f"{t:+.2f}"  # noqa: E731
    lines = []
    for i, (key, label) in enumerate(MEASURES.items()):
        low, n_rand = random_below_true(cx, key)
        lines.append(f"* **{label}**: " + (
            f"Kendall τ with the gap {tau(own[i])} over {own_n[i]} models ({tau(common[i])} over the {common_n[i]} "
            f"models where every measure is defined); {low} of {n_rand} random-label models have a *lower* value "
            f"than at least one true-label model." if own_n[i] else
            "undefined for every model (margin ≤ 0: no model fits its training set)."))
    return lines


def summary_text(cx: dict, gap: dict, robust_margin: bool, fig6_setting: str) -> str:
    """Markdown: the bullets of ``summary``, then the share of the measured training examples each model fits
    (margin > 0 on adversarial examples if ``robust_margin``, else on natural ones), then the setting line."""
    fit = ", ".join(f"{model_label(s)} {PERCENT * r['fit']:.0f}%" for s, r in cx.items())
    return ("\n".join(summary(cx, gap)) + "\n\nShare of the measured training examples each model fits (margin > 0, "
            f"i.e. {'robustly' if robust_margin else 'naturally'} correct): {fit}.\n\n> {fig6_setting}")


class Landscape:
    """The explorer's live computation: rho(theta + lambda d_1) of a model at any lambda, on the examples and with
    the direction and attack start of its saved curve (so at the saved lambdas it lands on the curve). Loads each
    model's weights (``final.pt``) once; remembers every value computed."""

    def __init__(self, dirs: dict, cfgs: dict, settings: dict):
        self.dirs, self.cfgs, self.s = dirs, cfgs, settings
        self.loaded: dict = {}
        self.values: dict = {}  # (spec, lambda) -> loss

    def loss(self, spec: str, lam: float) -> float:
        if spec not in self.loaded:
            model, _ = load_weights(self.dirs[spec], self.s["checkpoint"], "cpu")
            x, y = analysis.complexity_examples(self.dirs[spec], self.s)
            k = self.s["curve_examples"] or len(y)
            self.loaded[spec] = (model, x[:k], y[:k])
        if (spec, lam) not in self.values:
            cfg, (model, x, y) = self.cfgs[spec], self.loaded[spec]
            self.values[(spec, lam)] = analysis.adversarial_loss_along_direction(
                model, x, y, [lam], eps=cfg.eps, alpha=cfg.alpha, steps=self.s["steps"], norm=cfg.norm,
                seed=self.s["seed"]).item()
        return self.values[(spec, lam)]

    def computed(self, spec: str) -> list[tuple[float, float]]:
        return sorted((lam, v) for (s, lam), v in self.values.items() if s == spec)


def explorer_view(live: Landscape, cx: dict, gap: dict, spec: str, key: str, lam: float) -> None:
    """The explorer: left, Fig. 6's panel of measure ``key`` with ``spec`` circled; right, its saved landscape
    and the loss at ``lam`` computed now (``live``), with every value computed so far."""
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    scatter(ax1, key, cx, gap, highlight=spec)
    plot_landscape(ax2, spec, cx[spec])
    try:
        value = live.loss(spec, round(lam, 3))
        ax2.plot(*zip(*live.computed(spec)), "k*", ms=9, label="computed now")
        ax2.set_title(f"ρ(θ + {lam:+.2f} d) = {value:.3f}")
    except Exception as exc:  # e.g. final.pt not on this machine (checkpoints are not committed)
        ax2.set_title(f"not computed: {type(exc).__name__}", fontsize=8)
    ax2.set(xlabel="λ", ylabel="adversarial loss", yscale="log")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    plt.show()


def explorer_widget(live: Landscape, cx: dict, gap: dict, gamma: float) -> None:
    """The interactive explorer (``explorer_view``): choose a model of ``cx``, a measure and a step lambda (starting
    at the flatness's ``gamma``)."""
    import ipywidgets as widgets

    widgets.interact(lambda spec, key, lam: explorer_view(live, cx, gap, spec, key, lam),
                     spec=widgets.Dropdown(options=[(model_label(s), s) for s in cx], description="model"),
                     key=widgets.Dropdown(options=[(v, k) for k, v in MEASURES.items()], value="flatness",
                                          description="measure"),
                     lam=widgets.FloatSlider(value=gamma, min=-1.0, max=1.0, step=0.05, continuous_update=False,
                                             description="λ"))


# --- App. A.3 / Fig. A.10: a random vs an adversarial initialization ---------------------------------------

def a10_setting(a10: dict, adv, tier: str, adv_label: str) -> str:
    """The setting line of Fig. A.10 from its runs' configs ({(init, SGD): config}) and the adversarial
    initialization's (``adv``)."""
    c = next(iter(a10.values()))
    methods = [f"{k} SGD: momentum {v.momentum:g}, weight decay {v.weight_decay:g}, "
               f"{'with' if v.augment else 'no'} augmentation" for (init, k), v in a10.items() if init == INITS[0]]
    return setting(c, tier, f"TRADES on the true labels, batch {c.batch_size}, evaluated every {c.eval_every} "
                   f"epoch(s)", *methods, f"adversarial init = final weights of {adv_label} ({adv.epochs} epochs)",
                   paper="Paper: WRN-28-10 (Sec. 3's setting), all 50,000 images, 200 epochs, initialized from "
                         "TRADES trained on random labels.")


def a10_figure(curves: dict, a10: dict):
    """Fig. A.10: one panel per SGD of the runs ``a10`` ({(init, SGD): config}), natural (solid) and robust
    (dashed) test accuracy of each initialization ({(init, SGD): metrics rows}), stars at the best epochs, the lr
    decays dotted."""
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(k for _, k in a10))
    fig, axes = plt.subplots(1, len(methods), figsize=(5.2 * len(methods), 3.6), squeeze=False)
    axes = axes[0]
    for ax, k in zip(axes, methods):
        for init in INITS:
            for metric, ls, kind in (("test_nat_acc", "-", "natural"), ("test_rob_acc", "--", "robust")):
                plot_curve(ax, curves[(init, k)], metric, color=INIT_COLORS[init], ls=ls, marker=".",
                           label=f"{INIT_NAMES[init]} init; {kind} acc.")
        mark_schedule(ax, a10[(INITS[0], k)])
        ax.set(title=f"{k} SGD", xlabel="epoch", ylabel="test accuracy (%)", ylim=(0, 100))
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig
