"""FINDINGS.md, written from the run records: each finding's criterion (docs/criteria.md) evaluated by a
function, with the 95% interval of every quantity it compares (``memlib.stats``), so that the verdicts cannot
drift from the records the tables are built from.

Each ``f*`` function takes the tier's ``Records`` and returns a ``Result``: the comparisons of its "holds"
clause, the alternatives of its "partial" clause, and the verdict they give. Runs are found by their roles in
the notebooks' declared experiments (``memlib.experiments``); a run that is not there yet is "not measured".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from memlib import experiments
from memlib.analysis import COMPLEXITY_FILE, adv_losses_key, complexity_key, read_adversarial_losses
from memlib.io import atomic_write_text
from memlib.report import eval_fraction
from memlib.runs import Run, run_state
from memlib.stats import AtLeast, Comparison, Estimate, bootstrap, difference, over_seeds, tau_b, verdict, wilson

RANDOM = 1.0


@dataclass
class Result:
    finding: str
    holds: list
    partial: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    @property
    def measured(self) -> bool:
        """Every comparison of the "holds" clause has a value (docs/criteria.md: no verdict on part of the data;
        "at least k of" counts as measured when k of its comparisons are)."""
        return all(c.estimate is not None if not isinstance(c, AtLeast)
                   else sum(i.estimate is not None for i in c.items) >= c.k for c in self.holds)

    @property
    def verdict(self) -> str:
        return verdict(self.holds, self.partial) if self.measured else "not measured"


class Records:
    """The finished (or recorded) runs of a tier, by notebook and role."""

    def __init__(self, project: Path, tier: str):
        self.project, self.tier, self._declared, self._params = Path(project), tier, {}, {}

    def params(self, nb: str) -> dict:
        if nb not in self._params:
            self._params[nb] = experiments.params(nb, self.tier, self.project)
        return self._params[nb]

    def run(self, nb: str, key: tuple) -> Run | None:
        if nb not in self._declared:
            out = self.project / "outputs" / self.tier / "runs"
            self._declared[nb] = experiments.declare(nb, self.params(nb), out, self.project / "data").dirs
        path = self._declared[nb].get(key)
        if path is None or run_state(path)[0] not in ("finished", "record"):
            return None
        return Run(path)

    def runs(self, nb: str, keys: list) -> list[Run]:
        return [r for r in (self.run(nb, k) for k in keys) if r is not None]


# --- what a run measured -------------------------------------------------------------------------

def n_train_eval(run: Run) -> int:
    c = run.config
    return min(c.train_eval_subset or c.train_subset or 50000, c.train_subset or 50000)


def n_test(run: Run) -> int:
    return run.config.test_subset or 10000


def final_acc(run: Run, metric: str) -> tuple[float, int]:
    """The last evaluated epoch's ``metric`` (a fraction) and the number of images it was measured on."""
    return run.final[metric], n_train_eval(run) if metric.startswith("train") else n_test(run)


def eval_acc(run: Run, which: str, attack: str, n: int) -> float | None:
    return eval_fraction(run.dir, which, attack, n)


def per_seed(runs: list, value) -> Estimate | None:
    """``value(run)`` (in %) over the runs of several seeds with its t interval; for one run, ``value``'s own
    interval (``value(run, one=True)`` returns an Estimate)."""
    if not runs:
        return None
    if len(runs) == 1:
        return value(runs[0], one=True)
    return over_seeds([value(r) for r in runs])


def paired(runs_a: list, runs_b: list, value) -> Estimate | None:
    """value(a, b) per seed (the two lists' runs seed by seed) with the t interval over seeds; for one pair,
    ``value(a, b, one=True)``."""
    pairs = [(a, b) for a in runs_a for b in runs_b if a.config.seed == b.config.seed]
    if not pairs:
        return None
    if len(pairs) == 1:
        return value(*pairs[0], one=True)
    return over_seeds([value(a, b) for a, b in pairs])


def _acc_value(metric: str):
    def value(run, one=False):
        p, n = final_acc(run, metric)
        return wilson(p, n) if one else 100 * p
    return value


def _acc_diff(metric: str):
    def value(a, b, one=False):
        (pa, na), (pb, nb) = final_acc(a, metric), final_acc(b, metric)
        return difference([(1, pa, na), (-1, pb, nb)]) if one else 100 * (pa - pb)
    return value


def best_minus_final(run, one=False):
    """Best minus final per-epoch robust test accuracy (PGD at the run's eps), in points."""
    b, f, n = run.best["test_rob_acc"], run.final["test_rob_acc"], n_test(run)
    return difference([(1, b, n), (-1, f, n)]) if one else 100 * (b - f)


# --- the findings ----------------------------------------------------------------------------------

def _fits_random_labels(name: str, runs: dict) -> Result:
    """F1's criterion on ``runs`` ({"pgd_at": [runs], "trades": [runs]}, seed by seed)."""
    rob = _acc_value("train_rob_acc")
    trades = Comparison("TRADES's robust training accuracy (%)", per_seed(runs["trades"], rob), ">=", 90)
    pgd = Comparison("PGD-AT's robust training accuracy (%)", per_seed(runs["pgd_at"], rob), "<=", 30)
    gap = Comparison("TRADES minus PGD-AT (points)", paired(runs["trades"], runs["pgd_at"], _acc_diff("train_rob_acc")),
                     ">=", 30)
    return Result(name, [trades, pgd], [[trades, gap]])


def f1(rec: Records) -> Result:
    nb, seeds = "02_random_labels", rec.params("02_random_labels")["finding_seeds"]
    return _fits_random_labels("F1", {m: rec.runs(nb, [("fig2", m, RANDOM, "seed", s) for s in seeds])
                                      for m in ("pgd_at", "trades")})


def a1(rec: Records) -> Result:
    return _fits_random_labels("A1", {m: rec.runs("02_random_labels", [("attempt", "A1_more_images", m, 0)])
                                      for m in ("pgd_at", "trades")})


def f2(rec: Records) -> Result:
    nb = "02_random_labels"
    runs = [rec.run(nb, ("noise", "trades", r)) for r in rec.params(nb)["noise_rates"]]
    holds = []
    for lo, hi, (ra, rb) in zip(runs, runs[1:], zip(rec.params(nb)["noise_rates"], rec.params(nb)["noise_rates"][1:])):
        est = None
        if lo is not None and hi is not None:
            terms = []
            for sign, run in ((1, hi), (-1, lo)):
                (ptr, ntr), (pte, nte) = final_acc(run, "train_nat_acc"), final_acc(run, "test_nat_acc")
                terms += [(sign, ptr, ntr), (-sign, pte, nte)]
            est = difference(terms)
        holds.append(Comparison(f"TRADES's natural gap at noise {rb:g} minus at {ra:g} (points)", est, ">", 0))
    return Result("F2", holds)


def _random_regularized_rows(p: dict) -> list[str]:
    return [row for row in p["regularizer_grid"] if row.startswith("random|") and "yes" in row.split("|")[1:]]


def f3(rec: Records) -> Result:
    nb = "02_random_labels"
    comps = []
    for row in _random_regularized_rows(rec.params(nb)):
        run = rec.run(nb, ("a1", row))
        _, aug, wd, do = row.split("|")
        name = ", ".join(n for n, f in (("augmentation", aug), ("weight decay", wd), ("dropout", do)) if f == "yes")
        est = None if run is None else wilson(*final_acc(run, "train_nat_acc"))
        comps.append(Comparison(f"TRADES + {name}: natural training accuracy (%)", est, ">=", 90))
    return Result("F3", comps, [[c] for c in comps])


def a3(rec: Records) -> Result:
    runs = rec.runs("02_random_labels", [("attempt", "A3_longer_augmented", "trades", 0)])
    est = per_seed(runs, _acc_value("train_nat_acc"))
    return Result("A3", [Comparison("natural training accuracy after 180 epochs (%)", est, ">=", 90)],
                  [[Comparison("natural training accuracy after 180 epochs (%)", est, ">=", 50)]])


def _convergence(rec: Records, m: str, name: str, suffix: str, seeds: list) -> Estimate | None:
    """A per-seed summary of notebook 03's gradient analysis (convergence.json of each seed's run) over seeds."""
    nb = "03_convergence"
    n = rec.params(nb)["n_examples"]
    key = f"summary|{name}|{suffix.format(n=n)}"
    values = [r.cached_value("convergence.json", key) for r in rec.runs(nb, [("grad", m, "seed", s) for s in seeds])]
    values = [v for v in values if v is not None]
    if not values:
        return None
    return over_seeds(values) if len(values) > 1 else Estimate(values[0], how="one seed, point value")


def _convergence_diff(rec, name, suffix, seeds, a="pgd_at", b="trades") -> Estimate | None:
    nb = "03_convergence"
    n = rec.params(nb)["n_examples"]
    key = f"summary|{name}|{suffix.format(n=n)}"
    per = []
    for s in seeds:
        ra, rb = rec.run(nb, ("grad", a, "seed", s)), rec.run(nb, ("grad", b, "seed", s))
        va = None if ra is None else ra.cached_value("convergence.json", key)
        vb = None if rb is None else rb.cached_value("convergence.json", key)
        if va is not None and vb is not None:
            per.append(va - vb)
    if not per:
        return None
    return over_seeds(per) if len(per) > 1 else Estimate(per[0], how="one seed, point value")


PICK = "n={n}|pick=balanced-seed0"


def f4(rec: Records, seeds: list | None = None, name: str = "F4") -> Result:
    seeds = seeds or [0]
    kl = Comparison("TRADES's ‖grad bKL‖ / ‖grad CE‖ after epoch 1",
                    _convergence(rec, "trades", "fig3a_kl_over_ce_epoch1", PICK, seeds), "<", 0.5, digits=3)
    higher = Comparison("PGD-AT's minus TRADES's mean ratio, first half of the kept epochs",
                        _convergence_diff(rec, "fig3b_ratio_first_half", PICK, seeds), ">", 0, digits=3)
    return Result(name, [kl, higher], [[kl], [higher]])


def f5(rec: Records) -> Result:
    nb = "03_convergence"
    run = rec.run(nb, ("grad", "pgd_at"))
    key = "summary|fig4a_l2|loss={loss}|lambda=0.01|" + PICK.format(n=rec.params(nb)["n_examples"])
    v = {} if run is None else {loss: run.cached_value("convergence.json", key.format(loss=loss))
                                for loss in ("pgd_at", "trades", "clean_ce")}
    ratio = {o: Estimate(v["pgd_at"] / v[o], how="one run, point value")
             for o in ("trades", "clean_ce") if v.get("pgd_at") is not None and v.get(o)}
    names = {"trades": "TRADES's", "clean_ce": "the clean CE's"}
    label = "PGD-AT's l2 gradient change at lambda 0.01 over {}".format
    holds = [Comparison(label(names[o]), ratio.get(o), ">=", 1.5, digits=3) for o in names]
    partial = [Comparison(label(names[o]), ratio.get(o), ">", 1, digits=3) for o in names]
    return Result("F5", holds, [partial])


def f6(rec: Records, seeds: list | None = None, name: str = "F6") -> Result:
    suffix = "successive_cosine|epochs={e}|{pick}|proj={proj}".format(
        e=rec.params("03_convergence")["grad_epochs"], pick=PICK, proj=rec.params("03_convergence")["project_dim"])
    diff = _convergence_diff(rec, "successive_cosine_mean", suffix, seeds or [0], a="trades", b="pgd_at")
    label = "TRADES's minus PGD-AT's mean successive-epoch cosine"
    return Result(name, [Comparison(label, diff, ">=", 0.05, digits=3)], [[Comparison(label, diff, ">", 0, digits=3)]])


def f7(rec: Records) -> Result:
    mix, pgd = rec.run("03_convergence", ("fig5", "mix")), rec.run("03_convergence", ("fig5", "pgd_at"))
    fit = Comparison("Eq. 6's robust training accuracy (%)", None if mix is None else
                     wilson(*final_acc(mix, "train_rob_acc")), ">=", 90)
    more = Comparison("Eq. 6 minus PGD-AT (points)", None if mix is None or pgd is None else
                      _acc_diff("train_rob_acc")(mix, pgd, one=True), ">=", 20)
    return Result("F7", [fit, more], [[more]])


MEASURES = ("spectral_log10", "l1", "hessian", "flatness")
MEASURE_NAMES = {"spectral_log10": "spectral / margin²", "l1": "l1 / margin", "hessian": "the input-Hessian eigenvalue",
                 "flatness": "flatness"}


def _complexity(rec: Records, specs: list) -> tuple[list, dict]:
    nb = "04_generalization"
    key = complexity_key(rec.params(nb)["measure"])
    gaps, values = [], {k: [] for k in MEASURES}
    for spec in specs:
        run = rec.run(nb, ("fig6", spec))
        cx = None if run is None else run.cached_value(COMPLEXITY_FILE, key)
        if cx is None or any(cx.get(k) is None or not math.isfinite(cx[k]) for k in MEASURES):
            continue  # the models where every measure is defined
        gaps.append(100 * (run.final["train_rob_acc"] - run.final["test_rob_acc"]))
        for k in MEASURES:
            values[k].append(cx[k])
    return gaps, values


F8_MODELS = 7  # F8 itself: the first 7 models of 04's list (the tier's models when F8 was fixed); A8: all


def f8(rec: Records, models: int | None = F8_MODELS, name: str = "F8") -> Result:
    gaps, values = _complexity(rec, rec.params("04_generalization")["models"][:models])
    n = len(gaps)
    g = np.asarray(gaps)

    def tau(k, idx=None):
        idx = np.arange(n) if idx is None else idx
        return tau_b(np.asarray(values[k])[idx], g[idx])

    def est(stat):
        if n < 3:
            return None
        lo, hi, how = bootstrap(stat, n, what="models")
        return Estimate(stat(np.arange(n)), lo, hi, how)

    low = tuple(Comparison(f"Kendall tau of {MEASURE_NAMES[k]} with the robust gap", est(lambda i, k=k: tau(k, i)),
                           "<=", 0.3, digits=3) for k in MEASURES[:3])
    flat = [Comparison(f"flatness's tau minus {MEASURE_NAMES[k]}'s",
                       est(lambda i, k=k: tau("flatness", i) - tau(k, i)), ">", 0, digits=3) for k in MEASURES[:3]]
    first = AtLeast(2, low)
    return Result(name, [first, *flat], [[first]], notes=[f"over the {n} models where all four measures are defined"])


def f9(rec: Records) -> Result:
    nb = "05_robust_overfitting"
    seeds = rec.params(nb)["sweep_seeds"]
    at = {e: rec.runs(nb, [("eps", "pgd_at", e, "seed", s) for s in seeds]) for e in (8, 1)}
    big = Comparison("PGD-AT at 8/255: best minus final PGD-10 (points)", per_seed(at[8], best_minus_final), ">=", 3)
    small = Comparison("PGD-AT at 1/255: best minus final PGD-10 (points)", per_seed(at[1], best_minus_final), "<=", 1)
    return Result("F9", [big, small], [[big]])


def a9(rec: Records) -> Result:
    runs = rec.runs("05_robust_overfitting", [("attempt", "A9_augmented_1", "pgd_at", s) for s in (0, 1, 2)])
    est = per_seed(runs, best_minus_final)
    point = None if est is None else Estimate(est.value, how="mean, point value")
    label = "PGD-AT at 1/255 with augmentation: best minus final PGD-10 (points)"
    return Result("A9", [Comparison(label, est, "<=", 1)], [[Comparison(label + ", mean", point, "<=", 1)]])


def f10(rec: Records) -> Result:
    nb = "05_robust_overfitting"
    p = rec.params(nb)
    key = adv_losses_key(p["loss_checkpoint"], eps=p["loss_eps"] / 255, alpha=p["loss_alpha"] / 255,
                         steps=p["loss_steps"], seed=p["loss_seed"])
    taus = {}
    for name, keys in (("two seeds", [("seed", s) for s in p["seeds"]]),
                       ("two architectures", [("arch", a) for a in p["architectures"]])):
        runs = rec.runs(nb, keys)
        losses = [read_adversarial_losses(r.dir, key) for r in runs]
        if len(runs) < 2 or any(x is None for x in losses):
            taus[name] = None
            continue
        a, b = (x["losses"].astype(np.float64) for x in losses)
        lo, hi, how = bootstrap(lambda i: tau_b(a[i], b[i]), len(a), what="training examples")
        taus[name] = Estimate(tau_b(a, b), lo, hi, how)
    return Result("F10", [Comparison(f"Kendall tau, {k}", v, ">=", 0.5, digits=3) for k, v in taus.items()],
                  [[Comparison(f"Kendall tau, {k}", v, ">=", 0.3, digits=3) for k, v in taus.items()]])


def _te_comparisons(rec: Records, nb: str, base: str, te: str, keys) -> list:
    n = rec.params(nb)["eval_n"]
    runs = {m: rec.runs(nb, keys(m)) for m in (base, te)}
    runs = {m: [r for r in rs if eval_acc(r, "best", "pgd-10", n) is not None
                and eval_acc(r, "final", "pgd-10", n) is not None] for m, rs in runs.items()}

    def gap_vs_half(a, b, one=False):  # TE's gap minus half the baseline's
        ab, af, bb, bf = (eval_acc(r, w, "pgd-10", n) for r in (a, b) for w in ("best", "final"))
        if one:
            return difference([(1, ab, n), (-1, af, n), (-0.5, bb, n), (0.5, bf, n)])
        return 100 * ((ab - af) - 0.5 * (bb - bf))

    def final_diff(a, b, one=False):
        af, bf = eval_acc(a, "final", "pgd-10", n), eval_acc(b, "final", "pgd-10", n)
        return difference([(1, af, n), (-1, bf, n)]) if one else 100 * (af - bf)

    names = {"pgd_at": "PGD-AT", "trades": "TRADES"}
    return [Comparison(f"{names[base]}+TE's best minus final minus half of {names[base]}'s (points, PGD-10, "
                       f"{n} images)", paired(runs[te], runs[base], gap_vs_half), "<=", 0),
            Comparison(f"{names[base]}+TE's final minus {names[base]}'s final (points)",
                       paired(runs[te], runs[base], final_diff), ">=", 0)]


def f11(rec: Records) -> Result:
    nb = "06_mitigation"
    seeds = rec.params(nb)["finding_seeds"]
    parts = [_te_comparisons(rec, nb, base, f"{base}_te", lambda m: [("cifar10", m, "seed", s) for s in seeds])
             for base in ("pgd_at", "trades")]
    return Result("F11", parts[0] + parts[1], parts)


def a11(rec: Records) -> Result:
    part = _te_comparisons(rec, "06_mitigation", "trades", "trades_te",
                           lambda m: [("attempt", "A11_longer", m, 0)])
    return Result("A11", part)


def a4(rec: Records) -> Result:
    return f4(rec, rec.params("03_convergence")["finding_seeds"], "A4")


def a6(rec: Records) -> Result:
    return f6(rec, rec.params("03_convergence")["finding_seeds"], "A6")


def a8(rec: Records) -> Result:
    return f8(rec, None, "A8")


def a7_text(rec: Records) -> str:
    """Check A7 of the paper setting (docs/criteria.md): PGD-AT with the authors' unclamped random starts against
    the clamped run of seed 0, beside the spread of the clamped runs over seeds; no verdict."""
    nb = "06_mitigation"
    p = rec.params(nb)
    if not any(k == "A7_authors_start" for k in p["attempts"]):
        return ""
    n, d = p["eval_n"], p["datasets"][0]
    unclamped = rec.run(nb, ("attempt", "A7_authors_start", "pgd_at", 0))
    clamped = rec.runs(nb, [(d, "pgd_at", "seed", s) for s in p["finding_seeds"]])
    if unclamped is None or not clamped:
        return "Check A7 (the authors' unclamped random starts): not measured yet."
    parts = []
    for which in ("best", "final"):
        u = eval_acc(unclamped, which, "pgd-10", n)
        c = [eval_acc(r, which, "pgd-10", n) for r in clamped]
        if u is None or c[0] is None:
            return "Check A7 (the authors' unclamped random starts): not evaluated yet."
        spread = over_seeds([100 * x for x in c if x is not None])
        parts.append(f"{which} PGD-10 {100 * u:.1f} unclamped vs {100 * c[0]:.1f} clamped (seed 0; clamped over "
                     f"seeds: {spread.text()})")
    return ("Check A7 (the authors' unclamped random starts in training and evaluation, PGD-AT, seed 0, "
            f"{n} test images): " + "; ".join(parts) + ".")


FINDINGS = (f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11)
ATTEMPTS = {"A1": a1, "A3": a3, "A4": a4, "A6": a6, "A8": a8, "A9": a9, "A11": a11}


NOTEBOOK = {"F1": "02_random_labels", "F2": "02_random_labels", "F3": "02_random_labels", "F4": "03_convergence",
            "F5": "03_convergence", "F6": "03_convergence", "F7": "03_convergence", "F8": "04_generalization",
            "F9": "05_robust_overfitting", "F10": "05_robust_overfitting", "F11": "06_mitigation"}


def evaluate(project: Path, tier: str) -> dict[str, Result]:
    """Each finding and attempt whose notebook the project has in ``tier``, evaluated from the records."""
    rec = Records(project, tier)
    here = {nb for nb in set(NOTEBOOK.values()) if (Path(project) / "params" / nb / f"{tier}.yaml").is_file()}
    found = {fn.__name__.upper(): fn for fn in FINDINGS} | ATTEMPTS
    return {k: fn(rec) for k, fn in found.items() if NOTEBOOK[ATTEMPT_OF.get(k, k)] in here}
CRITERIA = {  # finding: (the paper's finding, the criterion at quick scale), fixed before the runs
    "F1": ('TRADES memorizes random labels, PGD-AT does not converge (Fig. 2a,b)',
           "holds: TRADES's last-epoch robust training accuracy on random labels >= 90% and PGD-AT's "
           '<= 30%; partial: TRADES >= 90% and PGD-AT at least 30 points lower'),
    "F2": ('The generalization gap grows with the noise rate (Fig. 2c)',
           "holds: TRADES's natural gap (last epoch) strictly increases over noise 0 -> 0.5 -> 1.0"),
    "F3": ('Explicit regularizers do not prevent memorization (Table A.1)',
           'holds: every regularized TRADES run on random labels reaches >= 90% natural training '
           'accuracy; partial: some do'),
    "F4": ('Gradient magnitude: KL term small early in TRADES; ratio higher in PGD-AT (Fig. 3)',
           "holds: TRADES's ‖grad bKL‖/‖grad CE‖ after epoch 1 < 0.5 AND PGD-AT's mean ‖grad R‖/‖grad"
           " CE‖ over the first half of the kept epochs > TRADES's ratio there; partial: one of the "
           'two'),
    "F5": ("PGD-AT's gradient changes abruptly along a random direction (Fig. 4a)",
           "holds: at the smallest nonzero lambda, PGD-AT's mean l2 gradient change >= 1.5x TRADES's "
           "and >= 1.5x the clean CE's; partial: > 1x both"),
    "F6": ('Lower successive-epoch gradient cosine for PGD-AT (Fig. 4b)',
           "holds: PGD-AT's mean successive-epoch cosine is at least 0.05 below TRADES's; partial: "
           'below by less'),
    "F7": ('Eq. 6 makes PGD-AT converge on random labels (Fig. 5)',
           "holds: the Eq. 6 run's last-epoch robust training accuracy >= 90% and >= PGD-AT's + 20 "
           "points; partial: >= PGD-AT's + 20 points"),
    "F8": ('Complexity measures do not order models by robust gap; flatness is the most reliable '
           '(Fig. 6)',
           "holds: Kendall's tau between measure and robust gap over the models is <= 0.3 for at "
           'least two of spectral / l1 / Hessian, AND flatness has the highest tau of the four; '
           'partial: the first part only'),
    "F9": ('Robust overfitting for PGD-AT, none at small eps (Fig. 7a,b)',
           'holds: PGD-AT at 8/255 loses >= 3 points of PGD-10 test accuracy between best and last '
           'epoch, and at 1/255 <= 1 point; partial: the first only'),
    "F10": ('Hard examples agree across seeds and architectures (Fig. 7c, C.2)',
           "holds: Kendall's tau of per-example adversarial training losses >= 0.5 for two seeds and "
           'for two architectures; partial: >= 0.3 for both'),
    "F11": ('TE removes most of the best-minus-final gap and improves robustness (Table 1)',
           "holds: for PGD-AT and for TRADES, +TE's best-minus-final PGD-10 gap is <= half the "
           "baseline's AND its final PGD-10 accuracy is >= the baseline's; partial: for one of the "
           'two methods'),
}
PAPER = {  # finding: the paper's evidence and its number
    "F1": ('Fig. 2(a,b), WRN-28-10: TRADES on random labels ~100% natural / 99.55% robust training '
           'accuracy; PGD-AT stays at ~10%'),
    "F2": ('Fig. 2(c): the gap grows steadily with the noise rate (until PGD-AT fails to converge); '
           "the paper's noise-rate runs have weight decay and augmentation (App. A.1.2), ours none"),
    "F3": ('Table A.1: TRADES with augmentation on random labels 99.36 / 86.10 (and >= 92% natural '
           'with every regularizer)'),
    "F4": ("Fig. 3: KL gradient much smaller than CE's early in TRADES; PGD-AT's ratio consistently "
           "higher than TRADES's in the first 1,000 iterations"),
    "F5": ("Fig. 4(a): PGD-AT's gradient jumps around lambda = 0, TRADES's and the clean CE's change "
           'smoothly'),
    "F6": ('Fig. 4(b): lower successive-epoch cosine for PGD-AT over the first 20 epochs'),
    "F7": ('Fig. 5: Eq. 6 converges on random labels'),
    "F8": ('Fig. 6: spectral, l1 and input-Hessian measures do not order models by robust gap; '
           'flatness is more reliable'),
    "F9": ('Fig. 7(a,b): PGD-AT best 52.64 -> final 44.92 PGD-10 (diff 7.72); no overfitting at eps ='
           ' 1/255'),
    "F10": ("Fig. 7(c), C.2: Kendall's tau of per-example adversarial losses 0.85 (two seeds), 0.78 "
           '(two architectures)'),
    "F11": ('Table 1(a): best-minus-final PGD-10 7.72 -> 1.16 with TE (PGD-AT), 3.07 -> 0.89 (TRADES);'
           ' final robustness up'),
}
ATTEMPT_OF = {"A1": "F1", "A3": "F3", "A4": "F4", "A6": "F6", "A8": "F8", "A9": "F9", "A11": "F11"}
ATTEMPT_SETTING = {  # docs/criteria.md's table, fixed before the runs
    "A1": "1,000 training images instead of 500, PGD-AT and TRADES on random labels, seed 0",
    "A3": "TRADES + augmentation on random labels for 180 epochs (lr /10 after 120), seed 0",
    "A4": "F4 at seeds 0, 1, 2 of the gradient-analysis runs",
    "A6": "F6 at seeds 0, 1, 2 of the gradient-analysis runs",
    "A8": "F8 over 9 models (02's weight-decay and dropout rows added)",
    "A9": "PGD-AT at 1/255 with augmentation, seeds 0, 1, 2",
    "A11": "TRADES and TRADES+TE for 60 epochs instead of 40, seed 0",
}


# --- FINDINGS.md -------------------------------------------------------------------------------------

def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _comparisons(result: Result) -> str:
    lines = [c.text() for c in result.holds]
    for alt in result.partial:
        extra = [c.text() for c in alt if c not in result.holds]
        if extra:
            lines.append("partial clause: " + "; ".join(extra))
    return "<br>".join(_cell(x) for x in lines + result.notes)


def _tier_cost(project: Path, tier: str) -> list[str]:
    """The training time of the tier's finished runs, from their records (the notebooks' own times, which
    change with every execution, are in REPORT.md)."""
    from memlib.io import read_json

    done = [read_json(p, {}) for p in sorted((project / "outputs" / tier / "runs").glob("*/status.json"))]
    done = [s for s in done if s.get("finished")]
    hours = sum(s.get("total_time") or 0.0 for s in done) / 3600
    return [f"Training time of the {len(done)} finished runs in `runs/`, summed over runs: {hours:.1f} h "
            "(the time per notebook, and how many ran at once: [REPORT.md](REPORT.md))."]


def render(project: Path, tier: str) -> str:
    """The text of ``outputs/<tier>/FINDINGS.md``, from the records alone (deterministic)."""
    results = evaluate(Path(project), tier)
    summary = {v: [k for k, r in results.items() if k in CRITERIA and r.verdict == v]
               for v in ("holds", "partial", "does not hold", "not measured")}
    lines = [f"# Findings of the paper, checked at the {tier} tier",
             "",
             "Written by `memlib.findings` from the run records of this folder (`python -m memlib render` or "
             "`reproduce` rewrites it); nothing here is typed by hand. How each verdict is decided, the 95% "
             "intervals and the deliberate attempts' criteria: [docs/criteria.md](../../docs/criteria.md), fixed "
             "before the runs they judge. A comparison is **met** when its whole interval is on the right side of "
             "its threshold, **failed** when wholly on the wrong side, **undecided** otherwise; **holds** needs "
             "every comparison of the holds clause met. [REPORT.md](REPORT.md) links the tables and figures.",
             "",
             "## The criteria, written before the results",
             "",
             "| # | Finding of the paper | Criterion at quick scale |",
             "|---|---|---|",
             *[f"| {k} | {_cell(f)} | {_cell(c)} |" for k, (f, c) in CRITERIA.items()],
             "",
             "## Results",
             "",
             "| # | Paper | Ours: each comparison, its 95% interval and status | Verdict |",
             "|---|---|---|---|",
             *[f"| {k} | {_cell(PAPER[k])} | {_comparisons(r)} | **{r.verdict}** |"
               for k, r in results.items() if k in CRITERIA],
             "",
             "## Deliberate attempts",
             "",
             "| Attempt | For | Setting | Each comparison, its 95% interval and status | Verdict |",
             "|---|---|---|---|---|",
             *[f"| {k} | {ATTEMPT_OF[k]} | {_cell(ATTEMPT_SETTING[k])} | {_comparisons(r)} | **{r.verdict}** |"
               for k, r in results.items() if k in ATTEMPTS],
             "",
             *([a7_text(Records(Path(project), tier)), ""] if "F11" in results else []),
             "## Summary",
             "",
             f"Holds: {', '.join(summary['holds']) or 'none'}. Partial: {', '.join(summary['partial']) or 'none'}. "
             f"Does not hold: {', '.join(summary['does not hold']) or 'none'}. "
             f"Not measured: {', '.join(summary['not measured']) or 'none'}.",
             "",
             "## Cost of the tier",
             "",
             *_tier_cost(project, tier),
             ""]
    return "\n".join(lines)


def write(project: Path, tier: str) -> Path | None:
    """Write ``outputs/<tier>/FINDINGS.md`` (atomically; unchanged text leaves the file untouched); None, and
    nothing written, for a project without the findings' notebooks."""
    if not evaluate(project, tier):
        return None
    path = Path(project) / "outputs" / tier / "FINDINGS.md"
    atomic_write_text(path, render(Path(project), tier))
    return path
