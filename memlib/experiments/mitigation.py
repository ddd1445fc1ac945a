"""Sec. 4.2 and 5 (notebook 06): Table 1 and Fig. 8, every method of Table 1 (PGD-AT, TRADES, each with and
without temporal ensembling) on every data set. A data set may change the shared setting
(``dataset_overrides``): the paper trains SVHN with lr 0.01, a cosine schedule and 80 epochs. Each row at each of
``finding_seeds`` (F11's interval; seed 0 is the row's own run), and the ``attempts``."""

from memlib.experiments import attempt_runs, experiment


@experiment("06_mitigation")
def runs(p: dict, make) -> dict:
    # the method last: an override changes a data set's setting, never which method a row of Table 1 is
    planned = {(d, m): make(**{"dataset": d, **p["dataset_overrides"].get(d, {}), "method": m})
               for d in p["datasets"] for m in p["methods"]}
    planned.update({(d, m, "seed", s): make(**{"dataset": d, **p["dataset_overrides"].get(d, {}), "method": m,
                                                 "seed": s})
                    for d in p["datasets"] for m in p["methods"] for s in p["finding_seeds"]})
    planned.update(attempt_runs(p, make))
    return planned
