"""The figures and computations of notebook 07 (Sec. 5 and App. C.2, other remedies, networks, threat models and
seeds): the setting lines of Tables 2, C.1 and C.2 (with the baselines' own hyper-parameters), the evaluation of
their runs, the best/final tables and the best-minus-final line under Table 2. The runs: memlib.experiments.baselines
(KD-SWA's teachers first)."""

from __future__ import annotations

from memlib.config import RunConfig
from memlib.paper import TABLE2
from memlib.present import diff_points, eps_text, gap_summary, not_evaluated, setting, show_setting, te_text


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


def seeds_text(row_seeds: list) -> str:
    return f"seed{'s' * (len(row_seeds) > 1)} {', '.join(map(str, row_seeds))}"


def settings(p: dict, planned: dict, rows: dict[str, RunConfig]) -> dict:
    """The setting line of each table ({"table2" | "table_c1" | "table_c2": text}): this tier's runs (from their
    configs: ``rows``, each Table 2 row's config, the first one's schedule), then the paper's (``paper_setting``)."""
    c0 = next(iter(rows.values()))
    l2 = [c for k, c in planned.items() if k[0] == "table_c1" and c.norm == "l2"]
    common = (p["tier"], te_text(c0))
    return {"table2": setting(c0, *common, seeds_text(p["seeds"]), hyperparameters(rows), paper=p["paper_setting"]),
            "table_c1": setting(c0, *common, seeds_text(p["seeds"]),
                                f"l2 rows: PGD step {eps_text(l2[0].alpha)} (our assumption)" if l2 else "",
                                paper=p["paper_setting"]),
            "table_c2": setting(c0, *common, seeds_text(p["c2_seeds"]), paper=p["paper_setting"])}


def table_attacks(p: dict) -> dict:
    """The attacks of each table: Tables 2 and C.2 ``attacks``, Table C.1 ``c1_attacks``."""
    return {"table2": p["attacks"], "table_c1": p["c1_attacks"], "table_c2": p["attacks"]}


def evaluate_tables(p: dict, runs: dict) -> None:
    """Evaluate the best and final checkpoints of every table's runs (``runs``: run key -> folder) under its
    table's attacks on ``eval_n`` test images; the results are kept in each run's eval.json. The robust teachers
    are Table 2 rows; KD-SWA's standard teacher is not evaluated. A render from records evaluates only the runs
    whose weights are here, and a note names the others (their cells stay "–")."""
    from IPython.display import Markdown, display

    from memlib.evaluate import evaluate_run

    attacks = table_attacks(p)
    evals = {key: evaluate_run(path, attacks[key[0]], n=p["eval_n"], missing_weights="skip")
             for key, path in runs.items() if key[0] in attacks}
    command = f"python -m memlib reproduce --tier {p['tier']} --only 07_baselines"
    if note := not_evaluated(evals, runs, p["eval_n"], command):
        display(Markdown(note))


def best_final(out, p: dict, runs: dict, name: str, keys, row_seeds, table_setting: str, title: str) -> None:
    """Show one best/final table of this tier's runs (Tables 2, C.1, C.2: ``name``; its rows ``keys``, each at
    every seed of ``row_seeds``), with its setting line, or say that the tier leaves it out."""
    from IPython.display import Markdown, display

    if not any(k[0] == name for k in runs):
        display(Markdown(f"*{title.split(':')[0]} is not part of the {p['tier']} tier "
                         f"(see params/07_baselines/{p['tier']}.yaml).*"))
        return
    show_setting(table_setting)
    display(Markdown(out.table(name, "best_final", runs={k: [runs[(name, k, s)] for s in row_seeds] for k in keys},
                               paper=name, attacks=table_attacks(p)[name], n=p["eval_n"], setting=table_setting,
                               title=title)))


def show_gaps(p: dict, runs: dict) -> None:
    """The line under Table 2: each row's best − final accuracy under the first PGD attack of ``attacks`` (mean
    over the seeds), then the paper's PGD-10 Diff (memlib.paper.TABLE2); nothing without a PGD attack."""
    from IPython.display import Markdown, display

    from memlib.evaluate import evaluate_run

    robust = next((a for a in p["attacks"] if a.startswith("pgd")), None)
    if not robust:
        return

    def gap(key):  # None while a seed is not evaluated
        cells = [diff_points(evaluate_run(runs[("table2", key, s)], [robust], n=p["eval_n"], log=lambda m: None,
                                          missing_weights="skip"), robust) for s in p["seeds"]]
        return None if None in cells else sum(cells) / len(cells)

    display(Markdown(gap_summary(robust, {k: gap(k) for k in p["table2_rows"]}, TABLE2)))
