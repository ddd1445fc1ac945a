"""Sec. 3.3 and App. A.3 (notebook 04): the models of Fig. 6 and the 2x2 runs of Fig. A.10.

Fig. 6 trains nothing of its own: each entry of ``models``, "method|noise rate|augmentation|weight decay|
dropout", is built as 02_random_labels builds its Fig. 2 runs (method, noise rate) and its Table A.1 runs (TRADES
with regularizers set explicitly), and with the shared base both name (params/bases), it is 02's run (one
folder, reused).
Fig. A.10 repeats Liu et al. (2020b)'s test with TRADES: true labels, from a random or an "adversarial"
initialization (``init_from``: the final weights of the ``adv_init`` model, trained on random labels), under each
training method of ``sgd``; the A.10 runs are ``base`` with the changes of ``a10_base``. Their figures and
computations: memlib.lectures.generalization.
"""

from memlib.experiments import experiment
from memlib.runs import run_dir_for

INITS = ("random", "adversarial")  # Fig. A.10's initializations
REGULARIZERS = ("augment", "weight_decay", "dropout")  # the yes/no fields of a model, in order


def parse_model(spec: str) -> dict:
    """A model of ``models`` as its fields: {"method", "noise_rate", "augment": bool, "weight_decay": bool,
    "dropout": bool}; e.g. "trades|1.0|yes|no|no" is TRADES on random labels with augmentation."""
    method, rate, *flags = spec.split("|")
    if len(flags) != len(REGULARIZERS) or not set(flags) <= {"yes", "no"}:
        raise ValueError(f"model {spec!r}: expected 'method|noise rate|augmentation|weight decay|dropout', each "
                         f"regularizer yes or no")
    return {"method": method, "noise_rate": float(rate), **{k: f == "yes" for k, f in zip(REGULARIZERS, flags)}}


def model_changes(spec: str, regularizers: dict) -> dict:
    """The RunConfig changes of a model: Table A.1's regularizer values where it has one, none otherwise (02 sets
    them the same way, so its runs and these are one folder whenever the base has no regularizer)."""
    m = parse_model(spec)
    return dict(method=m["method"], noise_rate=m["noise_rate"], augment=m["augment"],
                weight_decay=regularizers["weight_decay"] if m["weight_decay"] else 0.0,
                dropout=regularizers["dropout"] if m["dropout"] else 0.0)


@experiment("04_generalization")
def runs(p: dict, make) -> dict:
    planned = {("fig6", spec): make(**model_changes(spec, p["regularizers"])) for spec in p["models"]}
    adv = make(**model_changes(p["adv_init"], p["regularizers"]))  # usually one of the Fig. 6 models
    planned[("adv_init",)] = adv
    a10 = {**p["base"], **p["a10_base"]}  # a10_base: changes to the base
    for init in INITS:
        start = str(run_dir_for(adv)[0] / "final.pt") if init == "adversarial" else ""
        for sgd, changes in p["sgd"].items():
            planned[("a10", init, sgd)] = make(a10, **{**changes, "method": "trades", "noise_rate": 0.0,
                                                       "init_from": start})
    return planned
