"""Sec. 4.1 (notebook 05): Fig. 7(a), the eps sweep of Fig. 7(b) / C.1, two seeds (Fig. 7c), two architectures
(Fig. C.2). The PGD-AT run at the base eps is Fig. 7(a), the 8/255 point of the sweep, the first seed and the
first architecture at once (one folder). PGD-AT's sweep at each of ``sweep_seeds`` (F9's interval) and the
``attempts``. Then the roles the runs play in the notebook's tables."""

from memlib.experiments import attempt_runs, experiment


@experiment("05_robust_overfitting")
def runs(p: dict, make) -> dict:
    if len(p["seeds"]) != 2 or len(p["architectures"]) != 2:
        raise ValueError(f"seeds and architectures each name the two runs compared; got {p['seeds']} and "
                         f"{p['architectures']}")
    planned = {("fig7a",): make(method="pgd_at")}
    for m in p["methods"]:
        for e in p["eps_list"]:
            planned[("eps", m, e)] = make(method=m, eps=e / 255, alpha=e / 4 / 255)  # PGD step eps/4
    for s in p["seeds"]:
        planned[("seed", s)] = make(method="pgd_at", seed=s)
    for a in p["architectures"]:
        planned[("arch", a)] = make(method="pgd_at", model=a)
    for e in p["eps_list"]:  # seed 0 is the sweep's own run
        for s in p["sweep_seeds"]:
            planned[("eps", "pgd_at", e, "seed", s)] = make(method="pgd_at", eps=e / 255, alpha=e / 4 / 255, seed=s)
    planned.update(attempt_runs(p, make))
    return planned


def sweep(p: dict) -> list:
    """Fig. 7(b) / C.1: the run keys of the eps sweep, method by method, each method's budgets in order."""
    return [("eps", m, e) for m in p["methods"] for e in p["eps_list"]]


def loss_pairs(p: dict) -> dict:
    """Fig. 7(c) and C.2: the two comparisons of adversarial losses (memlib.paper.KENDALL_TAU's keys), each
    [(label, run key) of the first run (it sorts the plot), of the second]."""
    return {"seeds": [(f"seed {s}", ("seed", s)) for s in p["seeds"]],
            "architectures": [(a, ("arch", a)) for a in p["architectures"]]}
