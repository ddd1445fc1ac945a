"""Sec. 3.1 and App. A.1 (notebook 02): PGD-AT and TRADES on true and random labels (Fig. 2a, b), at each label noise
rate (Fig. 2c, A.6, A.7), TRADES with explicit regularizers (Table A.1) and the App. A.1 variants on random labels
(and at the ``noise_rates`` a variant lists, e.g. [0.0, 1.0] for its true-label curves too); Fig. 2(a, b)'s random-
label runs at each of ``finding_seeds`` (F1's interval) and the ``attempts``. With no ``noise_study`` changes the
noise-rate runs at 0.0 and 1.0 are Fig. 2(a, b)'s (one folder each), and so is Table A.1's row without
regularizers."""

from memlib.experiments import attempt_runs, experiment

TRUE, RANDOM = 0.0, 1.0  # noise rates of Fig. 2(a, b): true labels, and every label redrawn uniformly


def table_a1_changes(row: str, regularizers: dict) -> dict:
    """The RunConfig changes of one Table A.1 row, ``"labels|augmentation|weight decay|dropout"`` (e.g.
    ``"random|yes|no|no"``), with the regularizers' values of ``regularizers``."""
    labels, aug, wd, do = row.split("|")
    return dict(noise_rate=RANDOM if labels == "random" else TRUE, augment=aug == "yes",
                weight_decay=regularizers["weight_decay"] if wd == "yes" else 0.0,
                dropout=regularizers["dropout"] if do == "yes" else 0.0)


@experiment("02_random_labels")
def runs(p: dict, make) -> dict:
    methods = p["methods"]
    planned = {("fig2", m, r): make(method=m, noise_rate=r) for m in methods for r in (TRUE, RANDOM)}
    for m in methods:  # App. A.1.2 trains these with the paper's regularizers (noise_study)
        for r in p["noise_rates"]:
            planned[("noise", m, r)] = make(method=m, noise_rate=r, **p["noise_study"])
    for row in p["regularizer_grid"]:  # Table A.1 is TRADES only
        planned[("a1", row)] = make(method="trades", **table_a1_changes(row, p["regularizers"]))
    for name, changes in p["variants"].items():  # on random labels, and at a variant's own noise_rates
        changes = dict(changes)
        rates = changes.pop("noise_rates", [RANDOM])
        for m in methods:
            for r in rates:
                planned[("variant", name, m) if r == RANDOM else ("variant", name, m, r)] = make(
                    method=m, **changes, noise_rate=r)
    for m in methods:  # seed 0 is Fig. 2's own run
        for s in p["finding_seeds"]:
            planned[("fig2", m, RANDOM, "seed", s)] = make(method=m, noise_rate=RANDOM, seed=s)
    planned.update(attempt_runs(p, make))
    return planned
