"""The figures and computations of notebook 03 (Sec. 3.2 and App. A.2, convergence): what its figures plot, the
per-example parameter gradients (``memlib.analysis``) of a few training examples at the kept epochs of the runs,
each measurement saved once in the run folder's ``convergence.json`` under a key that names everything it depends
on (the notebook's table reads the numbers there, and the committed records carry them without weights);
``findings``: the table's rows. The runs: memlib.experiments.convergence."""

from functools import cache
from pathlib import Path

import numpy as np
import torch

from memlib import analysis
from memlib.methods import method_spec
from memlib.present import LOSS_NAMES, name
from memlib.runs import Run

FILE = "convergence.json"


def pick(n: int) -> str:
    """The part of every cache key that names the measured examples (``probe``): changing the choice recomputes
    instead of reusing numbers measured on other examples."""
    return f"n={n}|pick=balanced-seed0"


def run_of(run_dir) -> Run:
    """The one ``Run`` of a run folder in this process: its record is read, its data checked and the digest of each
    of its checkpoints computed once, however many measurements are taken on it."""
    return _run(Path(run_dir).resolve())


@cache
def _run(run_dir: Path) -> Run:
    return Run(run_dir)


def cached(run_dir, key: str, compute, epoch: int | None = None):
    """``compute()`` once per ``key`` in the run folder's convergence.json (``runs.Run.cached``), kept with the
    digest of the weights kept after ``epoch`` that it was measured on."""
    run = run_of(run_dir)
    return run.cached(FILE, key, compute, weights=run.snapshot(epoch).stem if epoch is not None else None)


@cache
def examples(run_dir) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The run's own training examples (``labels.npz``): uint8 images (the data checked once), the labels it was
    trained on and the true labels."""
    run = run_of(run_dir)
    ids, labels, true = run.train_examples()
    return run.train_images(ids), labels, true


def snapshot(run_dir, epoch: int):
    """The model with the weights kept after ``epoch`` (0: the initialization)."""
    run = run_of(run_dir)
    return run.load(run.snapshot(epoch).stem)[0]


def own_loss(run_dir) -> str:
    """The per-example loss (``analysis.LOSSES``) of the method the run trained with: its own (PGD-AT's adversarial
    CE, TRADES's CE + beta KL), or the clean CE for a method without a training attack (standard training)."""
    method = run_of(run_dir).config.method
    if method in analysis.LOSSES:
        return method
    if not method_spec(method).attacks:
        return "clean_ce"
    raise ValueError(f"no per-example loss of memlib.analysis is the training loss of method {method!r}")


def _attack(cfg, beta: bool = True) -> dict:
    """The run's own training attack (and TRADES's beta), as the gradient measurements take it."""
    return dict(eps=cfg.eps, alpha=cfg.alpha, steps=cfg.steps, **({"beta": cfg.trades_beta} if beta else {}))


def probe(run_dir, n: int):
    """The measured examples of a run: ``n`` class-balanced ones (by true class) drawn with seed 0, never the
    first n (the offline copy is sorted by class: those would all be airplanes); uint8 images and the labels
    the run was trained on."""
    images, labels, true = examples(run_dir)
    ids = analysis.probe_examples(true, n, seed=0)
    return images[ids], labels[ids]


def grad_norms(run_dir, epoch: int, n: int) -> dict:
    """Fig. 3(a): the mean per-example gradient norms of PGD-AT's adversarial CE, the clean CE and TRADES's
    beta * KL term at a kept epoch; Fig. 3(b): the mean per-example ratios ``ratio_r`` (||grad R|| / ||grad CE||)
    and ``ratio_kl`` (||grad beta*KL|| / ||grad CE||), ``analysis.ratios_from_norms`` of the same norms (one set of
    attacks and gradients for all five numbers)."""
    cfg = run_of(run_dir).config
    x, y = probe(run_dir, n)

    def compute():
        norms = analysis.per_example_grad_norms(snapshot(run_dir, epoch), x, y, ("pgd_at", *analysis.RATIO_LOSSES),
                                                **_attack(cfg), seed=epoch)
        ratios = analysis.ratios_from_norms(norms)
        return {**{k: norms[k].mean().item() for k in ("pgd_at", "clean_ce", "trades_kl")},
                "ratio_r": ratios["pgd_at"], "ratio_kl": ratios["trades"]}

    return cached(run_dir, f"grad_norms|epoch={epoch}|{pick(n)}", compute, epoch)


def ratio_samples(run_dir, method: str, epoch: int, n: int) -> np.ndarray:
    """Each example's ratio at a kept epoch (||grad R|| / ||grad CE|| for PGD-AT, ||grad beta*KL|| / ||grad CE||
    for TRADES; ``method`` "pgd_at" or "trades"): the values whose mean ``grad_norms`` gives, computed again (not
    cached) by ``analysis.grad_norm_ratios`` with ``reduce=False``."""
    cfg = run_of(run_dir).config
    x, y = probe(run_dir, n)
    ratios = analysis.grad_norm_ratios(snapshot(run_dir, epoch), x, y, **_attack(cfg), seed=epoch, reduce=False)
    return ratios[method].cpu().numpy()


def gradient_change(run_dir, loss: str, lambda_max: float, points: int, n: int) -> dict:
    """Fig. 4(a), A.8: per-example l2 distance and cosine of the gradient of ``loss`` at theta + lambda d to the
    one at theta (the initialization), d filter-normalized, for ``points`` lambdas in [-lambda_max, lambda_max]."""
    cfg = run_of(run_dir).config
    x, y = probe(run_dir, n)
    lambdas = np.linspace(-lambda_max, lambda_max, points)

    def compute():
        res = analysis.gradient_change_along_direction(snapshot(run_dir, 0), x, y, lambdas, loss, **_attack(cfg),
                                                       seed=0, per_example=True)
        return {**{k: v.tolist() for k, v in res.items()}, "lambda": [float(v) for v in lambdas]}

    return cached(run_dir, f"grad_change|loss={loss}|lmax={lambda_max}|points={points}|{pick(n)}", compute, 0)


def cosine_key(epochs: int, n: int, project_dim: int) -> str:
    return f"successive_cosine|epochs={epochs}|{pick(n)}|proj={project_dim}"


def successive_cosines(run_dir, epochs: int, n: int, project_dim: int) -> list[float]:
    """Fig. 4(b): for e = 1..epochs, the mean cosine between each example's gradient of the method's own loss
    (``own_loss``) with the weights after epochs e-1 and e (attack regenerated for each; ``project_dim`` > 0:
    gradients randomly projected to that many dimensions)."""
    cfg = run_of(run_dir).config
    x, y = probe(run_dir, n)

    def grads(epoch):
        return analysis.per_example_gradients(snapshot(run_dir, epoch), x, y, own_loss(run_dir), **_attack(cfg),
                                              attack_seed=epoch, project_dim=project_dim or None)

    def compute():
        gs = [grads(e) for e in range(epochs + 1)]
        return [analysis.successive_epoch_cosine(a, b).mean().item() for a, b in zip(gs, gs[1:])]

    return cached(run_dir, cosine_key(epochs, n, project_dim), compute, epochs)


def noise_norms(run_dir, epochs: int, n: int) -> list[dict]:
    """Fig. A.9: at each kept epoch 0..epochs, the mean gradient norm of the method's own loss (``own_loss``; PGD-AT:
    adversarial CE; standard training: clean CE) over ``n`` examples whose label is still correct ("clean") and
    ``n`` whose label was corrupted ("noisy")."""
    cfg, (images, labels, true) = run_of(run_dir).config, examples(run_dir)
    noisy = labels != true
    ids = torch.cat([analysis.probe_examples(true, n, seed=0, among=m) for m in (~noisy, noisy)])
    x, y, mask, loss = images[ids], labels[ids], noisy[ids], own_loss(run_dir)
    return [cached(run_dir, f"noise_norms|epoch={e}|{pick(n)}", lambda e=e: analysis.grad_norms_by_noise(
        snapshot(run_dir, e), x, y, mask, loss, **_attack(cfg, beta=False), seed=e), e) for e in range(epochs + 1)]


def findings(run_dirs: dict, p: dict) -> list[dict]:
    """The rows of the notebook's table "Sec. 3.2 in numbers" (report builder ``measures``): one number per
    finding, from the measurements above, each saved once in its run's convergence.json, where the table reads
    it. ``run_dirs``: the notebook's {key of ``runs``: run folder}; ``p``: its parameters."""
    n, epochs, tag = p["n_examples"], p["grad_epochs"], pick(p["n_examples"])
    grad = {m: run_dirs[("grad", m)] for m in ("pgd_at", "trades")}
    norms = {m: [grad_norms(grad[m], e, n) for e in range(epochs + 1)] for m in grad}
    early = max(1, (epochs + 1) // 2)  # the first half of the kept epochs, for "the initial training stage"
    after1 = norms["trades"][min(1, epochs)]
    change = {loss: gradient_change(grad["pgd_at"], loss, p["lambda_max"], p["lambda_points"], n)
              for loss in ("pgd_at", "trades", "clean_ce")}
    small = min(abs(v) for v in change["pgd_at"]["lambda"] if abs(v) > 1e-12)  # the smallest |lambda| > 0 measured
    cos_key = cosine_key(epochs, n, p["project_dim"])
    cosines = {m: successive_cosines(grad[m], epochs, n, p["project_dim"]) for m in grad}
    a9 = {m: noise_norms(run_dirs[("a9", m)], epochs, n) for m in ("pgd_at", "standard")}

    def row(label, run, key, paper, value):
        cached(run, key, value)
        return dict(label=label, run=run, key=key, paper=paper, file=FILE)

    return [
        row("Fig. 3(b): PGD-AT mean ‖grad R‖ / ‖grad CE‖, first half of kept epochs", grad["pgd_at"],
            f"summary|fig3b_ratio_first_half|{tag}", "consistently higher than TRADES's",
            lambda: float(np.mean([v["ratio_r"] for v in norms["pgd_at"][:early + 1]]))),
        row("Fig. 3(b): TRADES mean ‖grad bKL‖ / ‖grad CE‖, first half of kept epochs", grad["trades"],
            f"summary|fig3b_ratio_first_half|{tag}", "lower",
            lambda: float(np.mean([v["ratio_kl"] for v in norms["trades"][:early + 1]]))),
        row("Fig. 3(a): TRADES mean ‖grad bKL‖ / mean ‖grad CE‖ after epoch 1", grad["trades"],
            f"summary|fig3a_kl_over_ce_epoch1|{tag}", "much smaller than 1",
            lambda: after1["trades_kl"] / after1["clean_ce"]),
        *[row(f"Fig. 4(a): l2 gradient change at |lambda| = {small:g}, {LOSS_NAMES[loss]}", grad["pgd_at"],
              f"summary|fig4a_l2|loss={loss}|lambda={small:g}|{tag}", "largest for PGD-AT (abrupt)",
              lambda: float(np.mean([d for d, v in zip(res["l2"], res["lambda"]) if abs(abs(v) - small) < 1e-9])))
          for loss, res in change.items()],
        *[row(f"Fig. 4(b): mean successive-epoch cosine, {name(m)}", grad[m],
              f"summary|successive_cosine_mean|{cos_key}", "PGD-AT lower than TRADES",
              lambda: float(np.mean(values))) for m, values in cosines.items()],
        # one number per method: the mean over the kept epochs after the first of clean / noisy norm
        *[row(f"Fig. A.9: mean clean/noisy gradient-norm ratio, {name(m)}", run_dirs[("a9", m)],
              f"summary|a9_clean_over_noisy|{tag}", "~1 for PGD-AT (curves overlap), > 1 for ST early",
              lambda: float(np.mean([v["clean"] / v["noisy"] for v in values[1:]]))) for m, values in a9.items()],
    ]


def seed_rows(run_dirs: dict, p: dict) -> list[dict]:
    """The numbers F4 and F6 compare (docs/criteria.md), for the gradient-analysis runs of every seed of
    ``finding_seeds``: TRADES's KL / CE ratio after epoch 1, each method's mean ratio over the first half of the
    kept epochs and its mean successive-epoch cosine; each saved in its run's convergence.json under the keys
    of ``findings`` (seed 0's are the same runs, so the same numbers)."""
    n, epochs, tag = p["n_examples"], p["grad_epochs"], pick(p["n_examples"])
    early, cos_key, rows = max(1, (epochs + 1) // 2), cosine_key(epochs, n, p["project_dim"]), []
    for s in p["finding_seeds"]:
        grad = {m: run_dirs[("grad", m, "seed", s)] for m in ("pgd_at", "trades")}
        for m, ratio in (("pgd_at", "ratio_r"), ("trades", "ratio_kl")):
            key = f"summary|fig3b_ratio_first_half|{tag}"
            cached(grad[m], key, lambda m=m, r=ratio: float(np.mean(
                [grad_norms(grad[m], e, n)[r] for e in range(early + 1)])))
            rows.append(dict(label=f"seed {s}: {name(m)} mean gradient ratio, first half of kept epochs",
                             run=grad[m], key=key, paper="PGD-AT's higher", file=FILE))
        key = f"summary|fig3a_kl_over_ce_epoch1|{tag}"
        cached(grad["trades"], key, lambda g=grad["trades"]: (lambda v: v["trades_kl"] / v["clean_ce"])(
            grad_norms(g, min(1, epochs), n)))
        rows.append(dict(label=f"seed {s}: TRADES ‖grad bKL‖ / ‖grad CE‖ after epoch 1", run=grad["trades"], key=key,
                         paper="much smaller than 1", file=FILE))
        for m in grad:
            key = f"summary|successive_cosine_mean|{cos_key}"
            cached(grad[m], key, lambda g=grad[m]: float(np.mean(successive_cosines(g, epochs, n, p["project_dim"]))))
            rows.append(dict(label=f"seed {s}: {name(m)} mean successive-epoch cosine", run=grad[m], key=key,
                             paper="PGD-AT lower than TRADES", file=FILE))
    return rows
