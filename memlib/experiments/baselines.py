"""Sec. 5 and App. C.2 (notebook 07): Table 2 (PGD-AT, four published remedies and TE, each row at every seed),
Table C.1 (other networks, the l2 threat model) and Table C.2 (Table 1(a) over seeds).

KD-SWA (Chen et al. 2021) distils from two other runs of this notebook, declared first so that they are trained
first: the early-stopped robust teacher is the ``kd_teacher_row`` run of the same seed (its ``best.pt``, the
checkpoint robust overfitting has not yet hurt), the optional standard teacher a ``kd_std_teacher`` run (its
``final.pt``). The robust teacher is the Table 2 row itself (one folder)."""

from memlib.config import RunConfig
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


def hyperparameters(rows: dict[str, RunConfig]) -> str:
    """The Table 2 baselines' own settings in words (``rows``: row key -> its config), for the setting line:
    the paper states none of them, so each tier's values are shown with its results."""
    parts = []
    if "pgd_at_ls" in rows:
        parts.append(f"LS s = {rows['pgd_at_ls'].label_smoothing:g}")
    if "pgd_at_sat" in rows:
        c = rows["pgd_at_sat"]
        parts.append(f"SAT alpha {c.sat_momentum:g} from epoch {c.sat_start}")
    if "kd_swa" in rows:
        c = rows["kd_swa"]
        teachers, weights = ("robust + standard", f"{c.kd_weight:g}/{c.kd_std_weight:g}") if c.kd_std_teacher \
            else ("robust", f"{c.kd_weight:g}")
        parts.append(f"KD-SWA: {teachers} teacher, T {c.kd_temperature:g}, weights {weights}, SWA from epoch "
                     f"{c.swa_start}")
    if "coteaching" in rows:
        c = rows["coteaching"]
        parts.append(f"Co-teaching tau {c.coteach_forget_rate:g}, T_k {c.coteach_gradual}")
    return "; ".join(parts)
