"""Sec. 5 and App. C.2 (notebook 07): Table 2 (PGD-AT, four published remedies and TE, each row at every seed),
Table C.1 (other networks, the l2 threat model) and Table C.2 (Table 1(a) over seeds).

KD-SWA (Chen et al. 2021) distils from two other runs of this notebook, declared first so that they are trained
first: the early-stopped robust teacher is the ``kd_teacher_row`` run of the same seed (its ``best.pt``, the
checkpoint robust overfitting has not yet hurt), the optional standard teacher a ``kd_std_teacher`` run (its
``final.pt``). The robust teacher is the Table 2 row itself (one folder)."""

from memlib.experiments import experiment
from memlib.runs import run_dir_for


@experiment("07_baselines")
def runs(p: dict, make) -> dict:
    seeds, rows = p["seeds"], p["table2_rows"]
    planned = {("kd_teacher", s): make(**{**rows[p["kd_teacher_row"]], "seed": s}) for s in seeds}
    if p["kd_std_teacher"]:
        planned.update({("kd_std_teacher", s): make(**{**p["kd_std_teacher"], "seed": s}) for s in seeds})
    for key, changes in rows.items():
        for s in seeds:
            kd = _teachers(planned, s) if changes.get("method") == "kd_swa" else {}
            planned[("table2", key, s)] = make(**{**changes, **kd, "seed": s})
    if "table_c1" in p["tables"]:
        planned.update({("table_c1", key, s): make(**{**changes, "seed": s})
                        for key, changes in p["c1_rows"].items() for s in seeds})
    if "table_c2" in p["tables"]:
        planned.update({("table_c2", m, s): make(method=m, seed=s) for m in p["c2_methods"] for s in p["c2_seeds"]})
    return planned


def _teachers(planned: dict, seed: int) -> dict:
    """KD-SWA's teacher checkpoints for ``seed``: the robust teacher's best.pt, the standard teacher's final.pt."""
    teachers = {"kd_teacher": str(run_dir_for(planned[("kd_teacher", seed)])[0] / "best.pt")}
    if ("kd_std_teacher", seed) in planned:
        teachers["kd_std_teacher"] = str(run_dir_for(planned[("kd_std_teacher", seed)])[0] / "final.pt")
    return teachers

