"""Sec. 3.2 and App. A.2 (notebook 03): PGD-AT and TRADES on random labels (Figs. 3, 4, A.8) and PGD-AT and
standard training under label noise (Fig. A.9), each short run keeping its weights after every epoch for the
gradient measurements; Eq. 6 against PGD-AT and TRADES on random labels (Fig. 5: the last two, built from the
same base, are 02_random_labels' runs of Fig. 2, one folder each); the App. A.2 variants of PGD-AT on random
labels; the gradient-analysis runs at each of ``finding_seeds`` (F4's and F6's intervals). What the notebook
measures on them: memlib.lectures.convergence."""

from memlib.experiments import attempt_runs, experiment


def snapshots(p: dict) -> list[int]:
    """The epochs whose weights the gradient-analysis runs keep: 0 (the initialization) to ``grad_epochs``."""
    return list(range(p["grad_epochs"] + 1))


@experiment("03_convergence")
def runs(p: dict, make) -> dict:
    grad = dict(epochs=p["grad_epochs"], snapshot_epochs=snapshots(p))
    planned = {
        ("grad", "pgd_at"): make(method="pgd_at", noise_rate=1.0, **grad),
        ("grad", "trades"): make(method="trades", noise_rate=1.0, **grad),
        ("a9", "pgd_at"): make(method="pgd_at", noise_rate=p["noise_a9"], **grad),
        ("a9", "standard"): make(method="standard", noise_rate=p["noise_a9"], **grad),
        ("fig5", "mix"): make(method="mix", noise_rate=1.0, gamma_ramp_epochs=p["gamma_ramp_epochs"]),
        ("fig5", "pgd_at"): make(method="pgd_at", noise_rate=1.0),
        ("fig5", "trades"): make(method="trades", noise_rate=1.0),
    }
    for label, changes in p["variants"].items():
        planned[("a2", label)] = make(method="pgd_at", noise_rate=1.0, **changes)
    for m in ("pgd_at", "trades"):  # seed 0 is the ("grad", m) run itself
        for s in p["finding_seeds"]:
            planned[("grad", m, "seed", s)] = make(method=m, noise_rate=1.0, seed=s, **grad)
    planned.update(attempt_runs(p, make))
    return planned
