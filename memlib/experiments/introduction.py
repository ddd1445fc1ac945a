"""Sec. 2 (notebook 01): one standard-training run and one PGD-AT run in the same setting (only ``method``
differs). Their figures and computations: memlib.lectures.introduction."""

from memlib.experiments import experiment


@experiment("01_introduction")
def runs(p: dict, make) -> dict:
    return {"standard": make(method="standard"), "pgd_at": make(method="pgd_at")}
