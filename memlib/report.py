"""Where a tier's outputs go, and the tables and figures built from run metric files.

``Outputs(tier)`` is what a notebook uses: ``outputs/<tier>/{runs,tables,figures,manifest}``. Tables are
built only from the files runs write (``metrics.jsonl``, ``eval.json``, ``config.json``), never from
notebook text; each table is written as Markdown and CSV with a JSON sidecar naming its builder and input
runs, so ``rebuild_table`` can regenerate it and a test can check the committed copy. Every table shows
the paper's numbers beside ours and names the data source.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from memlib.config import NOTEBOOK_TIERS
from memlib.io import atomic_write_bytes, atomic_write_json, atomic_write_text, read_store
from memlib.paper import METHOD_NAMES, PAPER_TABLES, TABLE1, TABLE_A1
from memlib.runs import Run, on_weights_needed, project_root

TIERS = NOTEBOOK_TIERS  # params/<notebook>/<tier>.yaml
STAGE_VARIABLE = "MEMLIB_OUTPUTS_STAGE"
WEIGHTS_FILE = "weights.json"  # in the staging folder: runs whose weights the execution asked for
PNG_METADATA = {"Software": None}
PDF_METADATA = {"Creator": None, "Producer": None, "CreationDate": None}


class Outputs:
    """The output folders of one tier, and a manifest of what each notebook wrote."""

    def __init__(self, tier: str, notebook: str, root: str | Path | None = None):
        if tier not in TIERS:
            raise ValueError(f"unknown tier {tier!r}; choose one of {', '.join(TIERS)}")
        self.tier, self.notebook = tier, notebook
        self.project = project_root() if root is None else Path(root).resolve()
        self.dir = self.project / "outputs" / tier
        # Under the batch, tables, figures and the manifest go to a staging folder that replaces the last good
        # ones only once the whole notebook has run (memlib.reproduce); runs are written in place.
        stage = os.environ.get(STAGE_VARIABLE)
        written = Path(stage) if stage else self.dir
        self.runs, self.tables, self.figures = self.dir / "runs", written / "tables", written / "figures"
        self.data = self.project / "data"
        for d in (self.runs, self.tables, self.figures, written / "manifest"):
            d.mkdir(parents=True, exist_ok=True)
        self._manifest_path = written / "manifest" / f"{notebook}.json"
        earlier_path = self.dir / "manifest" / f"{notebook}.json"
        self.manifest = {"notebook": notebook, "tier": tier, "tables": [], "figures": [], "runs": []}
        if earlier_path.is_file():  # keep the tables and figures earlier executions recorded; the runs are
            earlier = json.loads(earlier_path.read_text())  # those this execution uses (add_run)
            self.manifest.update({k: earlier.get(k, []) for k in ("tables", "figures")})
        atomic_write_json(self._manifest_path, self.manifest)
        # the runs whose weights this execution loads: under the batch, for its status (memlib.plan)
        self._weights_path, self._weights = (Path(stage) / WEIGHTS_FILE if stage else None), []
        on_weights_needed(self._weights_needed)

    def run_config(self, **values) -> dict:
        """Config values with this tier's run folder and data folder filled in."""
        return {"out_dir": str(self.runs), "data_dir": str(self.data), **values}

    def add_run(self, run_dir: str | Path) -> None:
        rel = os.path.relpath(run_dir, self.project)
        if rel not in self.manifest["runs"]:
            self.manifest["runs"].append(rel)
            atomic_write_json(self._manifest_path, self.manifest)

    def _weights_needed(self, run_dir: Path) -> None:
        """Note a run whose weights this notebook uses (the plan then knows that its record is not enough)."""
        rel = os.path.relpath(run_dir, self.project)
        if rel not in self._weights:
            self._weights = sorted([*self._weights, rel])
            if self._weights_path is not None:
                atomic_write_json(self._weights_path, self._weights)

    def figure(self, fig, name: str, caption: str = "") -> Path:
        """Save a matplotlib figure as PNG and PDF under ``figures/``, without dates or versions in their
        metadata, so that the same figure is the same bytes."""
        png = self.figures / f"{name}.png"
        for path, kw in ((png, {"dpi": 130, "metadata": PNG_METADATA}),
                         (self.figures / f"{name}.pdf", {"metadata": PDF_METADATA})):
            buf = io.BytesIO()
            fig.savefig(buf, format=path.suffix[1:], bbox_inches="tight", **kw)
            atomic_write_bytes(path, buf.getvalue())
        self._record("figures", {"name": name, "caption": caption, "png": f"figures/{name}.png"})
        return png

    def table(self, name: str, builder: str, **inputs) -> str:
        """Build table ``name`` with ``BUILDERS[builder](project, **inputs)``, write .md/.csv/.json, and
        return the Markdown. Run folders in ``inputs`` are stored relative to the project."""
        inputs = _relative(inputs, self.project)
        table = BUILDERS[builder](self.project, **inputs)
        write_table(self.tables, name, table, builder, inputs)
        self._record("tables", {"name": name, "title": table["title"], "md": f"tables/{name}.md"})
        return table_markdown(table)

    def _record(self, kind: str, entry: dict) -> None:
        self.manifest[kind] = [e for e in self.manifest[kind] if e["name"] != entry["name"]] + [entry]
        atomic_write_json(self._manifest_path, self.manifest)


def _relative(value, project: Path):
    if isinstance(value, dict):
        return {k: _relative(v, project) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_relative(v, project) for v in value]
    if isinstance(value, Path) or (isinstance(value, str) and os.path.isabs(value) and Path(value).exists()):
        return os.path.relpath(value, project)
    return value


# --- table files ------------------------------------------------------------------------------------

def write_table(folder: Path, name: str, table: dict, builder: str, inputs: dict) -> None:
    atomic_write_text(folder / f"{name}.md", table_markdown(table))
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(table["csv_columns"])
    writer.writerows(table["csv_rows"])
    atomic_write_text(folder / f"{name}.csv", buf.getvalue())
    atomic_write_json(folder / f"{name}.json", {"builder": builder, "inputs": inputs, "title": table["title"]},
                      sort_keys=False)  # the order of the runs is the order of the rows


def table_markdown(table: dict) -> str:
    lines = [f"**{table['title']}**", ""]
    lines.append("| " + " | ".join(table["columns"]) + " |")
    lines.append("|" + "---|" * len(table["columns"]))
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in table["rows"]]
    lines += ["", table["notes"], ""]
    return "\n".join(lines)


def rebuild_table(json_path: str | Path, project: Path | None = None) -> str:
    """Regenerate a table's Markdown from its sidecar and the run files it names."""
    spec = json.loads(Path(json_path).read_text())
    project = project or project_root(Path(json_path).parent)
    return table_markdown(BUILDERS[spec["builder"]](project, **spec["inputs"]))


# --- builders: pure functions of run files. Accuracy of checkpoints (eval.json) ------------------------

def _source_note(project: Path, run_dirs) -> str:
    sources = sorted({Run(project / r).record["data_source"] for r in run_dirs})
    versions = sorted({Run(project / r).record["code_version"] for r in run_dirs})
    return f"Data: {', '.join(sources)}. Code: memlib {', '.join(versions)}."


def _fmt(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def eval_fraction(run_dir: Path, which: str, attack: str, n: int) -> float | None:
    """A checkpoint's accuracy (a fraction) under ``attack`` on ``n`` test images, as ``evaluate_run`` kept it."""
    kept, _ = read_store(Path(run_dir) / "eval.json")
    hits = [v["acc"] for k, v in kept.items() if k.startswith(f"{which}|{attack}|n={n}|")]
    return hits[0] if hits else None


def _eval_acc(project: Path, run_dir: str, which: str, attack: str, n: int) -> float | None:
    """The same in %."""
    acc = eval_fraction(project / run_dir, which, attack, n)
    return None if acc is None else 100 * acc


def build_table1(project: Path, runs: dict, dataset: str, attacks: list, n: int, title: str, setting: str) -> dict:
    """Table 1: best / final / best-minus-final test accuracy of each method under each attack, ours
    (from each run's eval.json) beside the paper's."""
    columns, csv_columns = ["Method"], ["method"]
    for a in attacks:
        columns += [f"{a} Best", f"{a} Final", f"{a} Diff"]
        csv_columns += [f"{a}_{k}_{s}" for k in ("best", "final", "diff") for s in ("ours", "paper")]
    rows, csv_rows = [], []
    for method, run_dir in runs.items():
        paper = TABLE1.get(dataset, {}).get(method, {})
        row, csv_row = [METHOD_NAMES.get(method, method)], [method]
        for a in attacks:
            ours = _best_final(project, run_dir, a, n)
            for k in ("best", "final", "diff"):
                p = paper.get(a, {}).get(k)
                row.append(f"{_fmt(ours[k])} ({_fmt(p)})")
                csv_row += [None if ours[k] is None else round(ours[k], 4), p]
        rows.append(row)
        csv_rows.append(csv_row)
    return {"title": title, "columns": columns, "rows": rows, "csv_columns": csv_columns, "csv_rows": csv_rows,
            "notes": _best_final_notes(project, list(runs.values()), n, setting)}


def _best_final(project: Path, run_dir: str, attack: str, n: int) -> dict:
    """A run's kept accuracies (%) of its best and final checkpoints under ``attack``, and best - final."""
    best, final = _eval_acc(project, run_dir, "best", attack, n), _eval_acc(project, run_dir, "final", attack, n)
    return {"best": best, "final": final, "diff": None if best is None or final is None else best - final}


def _best_final_notes(project: Path, run_dirs: list, n: int, setting: str, spread: str = "") -> str:
    """The notes of a best / final table: units, the best-epoch rule and the test examples, the data."""
    steps = Run(project / run_dirs[0]).config.eval_steps
    return (f"Ours (paper) in %. {setting} Best = epoch with the highest PGD-{steps} test accuracy during training; "
            f"evaluated on {n or 'all'} test examples. {spread}"
            f"{_source_note(project, run_dirs)}")


def _eval_steps(project: Path, runs: dict) -> int:
    return Run(project / next(iter(runs.values()))).config.eval_steps


# --- tables of learning curves (metrics.jsonl) and of analyses kept in run folders ---------------------

def build_final_accuracy(project: Path, runs: dict, title: str, setting: str) -> dict:
    """Last-epoch training (on the labels trained on) and test accuracies of each run, and their gaps."""
    columns = ["Run", "Train natural", "Train robust", "Test natural", "Test robust", "Gap natural", "Gap robust"]
    rows, csv_rows = [], []
    for label, run_dirs in runs.items():  # a run, or a list of runs (seeds): mean ± std per cell
        per = []
        for run_dir in [run_dirs] if isinstance(run_dirs, str) else run_dirs:
            m = Run(project / run_dir).metrics[-1]
            vals = [100 * m[k] for k in ("train_nat_acc", "train_rob_acc", "test_nat_acc", "test_rob_acc")]
            per.append(vals + [vals[0] - vals[2], vals[1] - vals[3]])
        if isinstance(run_dirs, str):
            rows.append([label] + [_fmt(v) for v in per[0]])
            csv_rows.append([label] + [round(v, 4) for v in per[0]] + [m["epoch"]])
        else:
            cells = [_mean_std([p[i] for p in per]) for i in range(6)]
            rows.append([f"{label} ({len(per)} seeds)"] + [_pm(*c) for c in cells])
            csv_rows.append([label] + [None if c[0] is None else round(c[0], 4) for c in cells] + [m["epoch"]])
    spread = "Cells with ± are mean ± sample standard deviation over seeds. " if any(
        not isinstance(v, str) for v in runs.values()) else ""
    all_runs = [r for v in runs.values() for r in ([v] if isinstance(v, str) else v)]
    notes = f"Accuracy in % at the last epoch. {spread}{setting} {_source_note(project, all_runs)}"
    return {"title": title, "columns": columns, "rows": rows,
            "csv_columns": ["run", "train_nat", "train_rob", "test_nat", "test_rob", "gap_nat", "gap_rob", "epoch"],
            "csv_rows": csv_rows, "notes": notes}


def build_table_a1(project: Path, runs: dict, title: str, setting: str) -> dict:
    """Table A.1: TRADES on true/random labels with regularizer combinations; keys are
    "labels|augment|weight_decay|dropout" with yes/no flags, e.g. "random|yes|no|no"."""
    columns = ["Labels", "Aug.", "WD", "Dropout", "Train nat.", "Train rob.", "Test nat.", "Test rob.",
               "Gap nat.", "Gap rob.", "Batch nat.", "Batch rob."]
    rows, csv_rows = [], []
    for key, run_dir in runs.items():
        labels, aug, wd, do = key.split("|")
        flags = (aug == "yes", wd == "yes", do == "yes")
        metrics = Run(project / run_dir).metrics
        m = metrics[-1]
        ours = [100 * m["train_nat_acc"], 100 * m["train_rob_acc"], 100 * m["test_nat_acc"], 100 * m["test_rob_acc"]]
        ours += [ours[0] - ours[2], ours[1] - ours[3]]
        batch = [None if m.get(k) is None else 100 * m[k] for k in ("train_batch_nat_acc", "train_batch_acc")]
        paper = TABLE_A1.get((labels, *flags))
        cells = [f"{_fmt(o)} ({_fmt(p)})" for o, p in zip(ours, paper or [None] * 6)] + [_fmt(b) for b in batch]
        rows.append([labels] + ["✓" if f else "✗" for f in flags] + cells)
        csv_rows.append([labels, *flags] + [round(o, 4) for o in ours] + list(paper or [None] * 6)
                        + [None if b is None else round(b, 4) for b in batch])
    notes = (f"Ours (paper) in %, at the last epoch. Train: measured after the epoch on the un-augmented training "
             f"images with the labels trained on (natural, and PGD robust), as the authors' Sec. 3 code does; Batch: "
             f"the accuracy on the batches as trained during the last epoch (augmented where the run augments; "
             f"robust: on the training attack's examples; natural: of TRADES's clean logits, recorded by runs made "
             f"since memlib kept it, – before). {setting} {_source_note(project, runs.values())}")
    csv_columns = ["labels", "augment", "weight_decay", "dropout"] + \
        [f"{c}_ours" for c in ("train_nat", "train_rob", "test_nat", "test_rob", "gap_nat", "gap_rob")] + \
        [f"{c}_paper" for c in ("train_nat", "train_rob", "test_nat", "test_rob", "gap_nat", "gap_rob")] + \
        ["batch_nat_ours", "batch_rob_ours"]
    return {"title": title, "columns": columns, "rows": rows, "csv_columns": csv_columns, "csv_rows": csv_rows,
            "notes": notes}


def build_measures(project: Path, rows: list, title: str, setting: str) -> dict:
    """A table of single numbers that analyses saved in run folders: each row names a ``label``, a ``run``
    folder, a JSON ``file`` in it (kept there by ``runs.Run.cached``), the ``key`` of the number there and
    what the ``paper`` reports (a number or a short text read off a figure)."""
    out_rows, csv_rows = [], []
    for r in rows:
        value = Run(project / r["run"]).cached_value(r["file"], r["key"])
        out_rows.append([r["label"], "–" if value is None else f"{value:.3g}", str(r.get("paper", "–"))])
        csv_rows.append([r["label"], None if value is None else round(value, 6), r.get("paper"), r["run"], r["key"]])
    notes = f"{setting} {_source_note(project, {r['run'] for r in rows})}"
    return {"title": title, "columns": ["Measure", "Ours", "Paper"], "rows": out_rows,
            "csv_columns": ["measure", "ours", "paper", "run", "key"], "csv_rows": csv_rows, "notes": notes}

def _eps_label(eps: float, norm: str) -> str:
    return f"{eps * 255:.3g}/255" if norm == "linf" else f"{eps:.3g} (l2)"


def build_robust_overfitting(project: Path, runs: dict, title: str, setting: str) -> dict:
    """Fig. 7(a, b), C.1: per run, the best robust test accuracy during training (the epoch of ``best.pt``),
    the final one and best minus final (robust overfitting), plus the final robust training accuracy, all
    from ``metrics.jsonl`` (robust = the run's per-epoch PGD at its own eps). The paper publishes curves for
    Fig. 7(b) / C.1, not numbers; its Table 1 (ResNet-18, eps 8/255, PGD-10, whole test set) is shown beside
    the ResNet-18 PGD-AT and TRADES runs at 8/255."""
    columns = ["Run", "Method", "Model", "eps", "Best robust", "Best epoch", "Final robust", "Best − final",
               "Final train robust"]
    rows, csv_rows = [], []
    for label, run_dir in runs.items():
        if not isinstance(run_dir, str):  # seeds: mean ± std per cell
            row, csv_row = _robust_overfitting_seeds(project, label, run_dir)
            rows.append(row)
            csv_rows.append(csv_row)
            continue
        cfg = Run(project / run_dir).config
        run = Run(project / run_dir)
        best, final = run.best, run.final
        diff = None if best is None else 100 * (best["test_rob_acc"] - final["test_rob_acc"])
        paper = (TABLE1["cifar10"].get(cfg.method, {}).get("pgd-10", {})
                 if cfg.dataset == "cifar10" and cfg.model == "resnet18" and cfg.norm == "linf"
                 and abs(cfg.eps * 255 - 8) < 1e-9 else {})
        ours = [None if best is None else 100 * best["test_rob_acc"],
                None if final is None else 100 * final["test_rob_acc"],
                diff, None if final is None else 100 * final["train_rob_acc"]]
        cells = [f"{_fmt(o)} ({_fmt(paper.get(k))})" for o, k in zip(ours[:3], ("best", "final", "diff"))]
        cells.insert(1, best["epoch"] if best else "–")
        rows.append([label, METHOD_NAMES.get(cfg.method, cfg.method), cfg.model, _eps_label(cfg.eps, cfg.norm),
                     *cells, _fmt(ours[3])])
        csv_rows.append([label, cfg.method, cfg.model, cfg.eps, cfg.norm, best["epoch"] if best else None,
                         *[None if o is None else round(o, 4) for o in ours],
                         paper.get("best"), paper.get("final"), paper.get("diff")])
    steps = {Run(project / r).config.eval_steps for v in runs.values() for r in ([v] if isinstance(v, str) else v)}
    notes = (f"Ours (paper) in %; robust = PGD-{'/'.join(map(str, sorted(steps)))} at the run's own eps, on the "
             f"per-epoch test subset; best = the epoch of best.pt. Paper: Table 1 (ResNet-18 at 8/255, PGD-10 on "
             f"the whole test set); Fig. 7(b)/C.1 give curves only (no robust overfitting at 1/255). {setting} "
             f"{_source_note(project, [r for v in runs.values() for r in ([v] if isinstance(v, str) else v)])}")
    csv_columns = ["run", "method", "model", "eps", "norm", "best_epoch", "best_rob_ours", "final_rob_ours",
                   "diff_ours", "final_train_rob_ours", "best_rob_paper", "final_rob_paper", "diff_paper"]
    return {"title": title, "columns": columns, "rows": rows, "csv_columns": csv_columns, "csv_rows": csv_rows,
            "notes": notes}


def _robust_overfitting_seeds(project: Path, label: str, run_dirs: list) -> tuple[list, list]:
    """A row (and its CSV row, means) of the robust-overfitting table over seeds: mean ± std of best, final,
    best − final (run by run) and final robust training accuracy; the best epochs listed."""
    runs = [Run(project / r) for r in run_dirs]
    cfg = runs[0].config
    best = [100 * r.best["test_rob_acc"] for r in runs]
    final = [100 * r.final["test_rob_acc"] for r in runs]
    train = [100 * r.final["train_rob_acc"] for r in runs]
    stats = [_mean_std(best), _mean_std(final), _mean_std([b - f for b, f in zip(best, final)]), _mean_std(train)]
    row = [f"{label} ({len(runs)} seeds)", METHOD_NAMES.get(cfg.method, cfg.method), cfg.model,
           _eps_label(cfg.eps, cfg.norm), _pm(*stats[0]), "/".join(str(r.best["epoch"]) for r in runs),
           *[_pm(*x) for x in stats[1:]]]
    csv_row = [label, cfg.method, cfg.model, cfg.eps, cfg.norm, None,
               *[None if x[0] is None else round(x[0], 4) for x in stats], None, None, None]
    return row, csv_row


def _differences(project: Path, run_a: str, run_b: str) -> str:
    """What tells two runs apart: the identity keys whose values differ, e.g. "seed 0 vs 1"."""
    (ca, ra), (cb, rb) = ((run.config, run.record) for run in (Run(project / run_a), Run(project / run_b)))
    ia, ib = ra["identity"], rb["identity"]
    keys = sorted(k for k in set(ia) | set(ib) if ia.get(k) != ib.get(k))
    a, b = {**ia, **ca.to_dict()}, {**ib, **cb.to_dict()}  # an identity leaves out keys at their defaults
    return "; ".join(f"{k} {a.get(k)} vs {b.get(k)}" for k in keys) or "identical runs"


def build_loss_consistency(project: Path, pairs: dict, key: str, title: str, setting: str) -> dict:
    """Fig. 7(c), C.2: Kendall's tau-b between the adversarial losses of all training examples under two
    models (``pairs``: comparison -> [run_a, run_b], e.g. "seeds", "architectures"), read from each run's
    ``adv_losses.npz`` (memlib.analysis.run_adversarial_losses, setting ``key``), with the paper's value
    (memlib.paper.KENDALL_TAU) beside it. Also the overlap of the two models' hardest 10% of the examples
    (chance: 10%). The two runs must hold losses for the same examples and labels."""
    import math

    import numpy as np

    from memlib.analysis import kendall_tau, read_adversarial_losses
    from memlib.paper import KENDALL_TAU

    columns = ["Comparison", "Runs differ in", "Examples", "Kendall tau", "Hardest-10% overlap", "Mean loss (a / b)"]
    rows, csv_rows = [], []
    for name, (run_a, run_b) in pairs.items():
        la, lb = read_adversarial_losses(project / run_a, key), read_adversarial_losses(project / run_b, key)
        tau = overlap = None
        n, means = 0, "–"
        if la is not None and lb is not None:
            if not (np.array_equal(la["train_ids"], lb["train_ids"]) and np.array_equal(la["labels"], lb["labels"])):
                raise ValueError(f"{name}: {run_a} and {run_b} hold losses of different training examples or labels")
            a, b = la["losses"].astype(np.float64), lb["losses"].astype(np.float64)
            n, tau = len(a), kendall_tau(a, b)
            k = max(1, math.ceil(0.1 * n))
            top_a, top_b = set(np.argsort(-a, kind="stable")[:k]), set(np.argsort(-b, kind="stable")[:k])
            overlap = 100 * len(top_a & top_b) / k
            means = f"{a.mean():.3f} / {b.mean():.3f}"
        paper = KENDALL_TAU.get(name)
        rows.append([name, _differences(project, run_a, run_b), n or "–", f"{_fmt(tau, 3)} ({_fmt(paper, 2)})",
                     f"{_fmt(overlap, 1)}%", means])
        csv_rows.append([name, run_a, run_b, n, None if tau is None else round(tau, 6), paper,
                         None if overlap is None else round(overlap, 4)])
    notes = (f"Ours (paper). Adversarial loss = CE of the final checkpoint on its PGD example of each training "
             f"example (eval mode; setting {key}); tau-b over all of them. Paper: two seeds 0.85 (Fig. 7c), WRN-28-10 "
             f"vs ResNet-18 0.78 (Fig. C.2), on all 50,000 CIFAR-10 training images. {setting} "
             f"{_source_note(project, [r for p in pairs.values() for r in p])}")
    return {"title": title, "columns": columns, "rows": rows,
            "csv_columns": ["comparison", "run_a", "run_b", "examples", "tau_ours", "tau_paper", "top10_overlap"],
            "csv_rows": csv_rows, "notes": notes}


# --- accuracy of checkpoints over one or several seeds (eval.json): Table 2, C.1, C.2 -------------------

def _mean_std(values: list) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof = 1) of the values that exist; std None for fewer than two."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    mean = sum(vals) / len(vals)
    return mean, (sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5 if len(vals) > 1 else None


def _pm(mean: float | None, std: float | None) -> str:
    return _fmt(mean) + ("" if std is None else f" ± {std:.2f}")


def _row_label(project: Path, key: str, run_dir: str) -> str:
    """A row's method name; for keys "method|network|norm" (Table C.1) also our run's network and threat model."""
    method = key.split("|")[0]
    name = METHOD_NAMES.get(method, method)
    if "|" not in key:
        return name
    cfg = Run(project / run_dir).config
    width = "" if cfg.width == 1 else f" ×{cfg.width:g}"
    return f"{name}, {cfg.model}{width}, {cfg.norm} eps {cfg.eps * 255:.0f}/255"


def build_best_final(project: Path, runs: dict, paper: str, attacks: list, n: int, title: str, setting: str) -> dict:
    """Best / final / best-minus-final test accuracy of each row under each attack (Tables 2, C.1, C.2), ours
    (from the runs' eval.json) beside the paper's (``memlib.paper.PAPER_TABLES[paper]``, looked up by row key).
    ``runs`` maps a row key to a list of run directories (seeds): one run gives its numbers, several give
    mean ± sample standard deviation (ddof = 1) per cell, Diff taken run by run."""
    columns, csv_columns = ["Method"], ["row", "runs"]
    for a in attacks:
        columns += [f"{a} Best", f"{a} Final", f"{a} Diff"]
        csv_columns += [f"{a}_{k}_{s}" for k in ("best", "final", "diff") for s in ("ours", "ours_std", "paper",
                                                                                    "paper_std")]
    rows, csv_rows, seeds = [], [], set()
    for key, run_dirs in runs.items():
        run_dirs = [run_dirs] if isinstance(run_dirs, str) else list(run_dirs)
        seeds |= {Run(project / r).config.seed for r in run_dirs}
        published = PAPER_TABLES.get(paper, {}).get(key, {})
        row, csv_row = [_row_label(project, key, run_dirs[0])], [key, len(run_dirs)]
        for a in attacks:
            cells = [_best_final(project, r, a, n) for r in run_dirs]  # Diff run by run
            for k in ("best", "final", "diff"):
                mean, std = _mean_std([c[k] for c in cells])
                p = published.get(a, {}).get(k)
                p_mean, p_std = p if isinstance(p, tuple) else (p, None)
                row.append(f"{_pm(mean, std)} ({_pm(p_mean, p_std)})")
                csv_row += [None if mean is None else round(mean, 4), None if std is None else round(std, 4),
                            p_mean, p_std]
        rows.append(row)
        csv_rows.append(csv_row)
    all_runs = [r for v in runs.values() for r in ([v] if isinstance(v, str) else v)]
    spread = (f"Cells with ± are mean ± sample standard deviation over seeds {', '.join(map(str, sorted(seeds)))}. "
              if any(not isinstance(v, str) and len(v) > 1 for v in runs.values()) else "")
    return {"title": title, "columns": columns, "rows": rows, "csv_columns": csv_columns, "csv_rows": csv_rows,
            "notes": _best_final_notes(project, all_runs, n, setting, spread)}


# --- tables of complexity measures (complexity.json) and of learning curves ---------------------------

def _g(x: float | None, digits: int = 3) -> str:
    """``x`` to ``digits`` significant digits; "–" for None and NaN."""
    return "–" if x is None or _isnan(x) else f"{x:.{digits}g}"


def _isnan(x: float) -> bool:
    import math

    return math.isnan(x)


COMPLEXITY_COLUMNS = (("margin", "Margin γ"), ("spectral_log10", "log10 Π‖W‖₂/γ²"), ("l1", "Σ‖W‖₁/γ"),
                      ("hessian", "Hessian λmax"), ("flatness", "Flatness"))


def taus_with_gap(values: dict, gaps: list, *, common: bool = False) -> tuple[list, list]:
    """Kendall's tau-b between each measure's values (a list per measure, None where undefined) and the gaps,
    over the models where that measure is defined, or with ``common`` over the models where every measure
    is (so that all taus are over the same models); and the number of models of each tau."""
    from memlib.analysis import kendall_tau
    models = [i for i in range(len(gaps)) if not common or all(v[i] is not None for v in values.values())]
    taus, counts = [], []
    for v in values.values():
        pairs = [(v[i], gaps[i]) for i in models if v[i] is not None]
        taus.append(kendall_tau([p[0] for p in pairs], [p[1] for p in pairs]) if len(pairs) >= 2 else float("nan"))
        counts.append(len(pairs))
    return taus, counts


def build_complexity(project: Path, runs: dict, settings: dict, title: str, setting: str) -> dict:
    """Fig. 6: per model its robust generalization gap (train robust accuracy on the labels trained on minus
    test robust accuracy, last evaluated epoch of metrics.jsonl) and the complexity measures that
    ``memlib.analysis.run_complexity`` saved with ``settings`` in the run's complexity.json; last rows: Kendall's
    tau-b between each measure and the gap over the models where the measure is defined, and over the models
    where every measure is (taus over different model sets are not comparable)."""
    from memlib.analysis import (
        COMPLEXITY_FILE,
        complexity_key,
        complexity_settings,
    )
    from memlib.paper import FIG6_FINDING

    s, key = complexity_settings(settings), complexity_key(settings)
    columns = ["Model", "Labels", "Train rob.", "Test rob.", "Rob. gap"] + [name for _, name in COMPLEXITY_COLUMNS]
    rows, csv_rows, gaps, values = [], [], [], {k: [] for k, _ in COMPLEXITY_COLUMNS}
    for label, run_dir in runs.items():
        cfg = Run(project / run_dir).config
        m = Run(project / run_dir).final  # the last epoch with accuracies
        train, test = 100 * m["train_rob_acc"], 100 * m["test_rob_acc"]
        cx = Run(project / run_dir).cached_value(COMPLEXITY_FILE, key) or {}
        labels = "true" if cfg.noise_rate == 0 else "random" if cfg.noise_rate == 1 else f"{cfg.noise_rate:g} noisy"
        gaps.append(train - test)
        for k, _ in COMPLEXITY_COLUMNS:
            values[k].append(cx.get(k))
        rows.append([label, labels, _fmt(train), _fmt(test), _fmt(train - test)] +
                    [_g(cx.get(k), 4 if k == "spectral_log10" else 3) for k, _ in COMPLEXITY_COLUMNS])
        csv_rows.append([label, run_dir, cfg.method, cfg.noise_rate, round(train, 4), round(test, 4),
                         round(train - test, 4)] + [cx.get(k) for k, _ in COMPLEXITY_COLUMNS] +
                        [cx.get("fit"), m["epoch"]])
    for row_label, csv_label, common in (("**Kendall τ with the gap**", "kendall_tau", False),
                                         ("**Kendall τ, models with every measure**", "kendall_tau_common", True)):
        taus, counts = taus_with_gap(values, gaps, common=common)
        rows.append([row_label, "", "", "", ""] + [f"{_g(t, 2)} (n={c})" for t, c in zip(taus, counts)])
        csv_rows.append([csv_label, "", "", "", "", "", ""] + [None if _isnan(t) else round(t, 4) for t in taus]
                        + ["", ""])
    margin_kind = f"PGD-{s['steps']} adversarial" if s["robust_margin"] else "natural"
    notes = (f"Robust accuracies (PGD-{Run(project / next(iter(runs.values()))).config.eval_steps}) in %, last "
             f"evaluated epoch; gap = train (labels trained on) − test. Measures of {s['checkpoint']}.pt on "
             f"{s['examples'] or 'all'} of the run's training examples with its training labels: γ = "
             f"{s['margin_percentile']:g}th percentile of the {margin_kind} margin (spectral and l1 are undefined, –, "
             f"where γ ≤ 0: the model does not fit its training set); Hessian: top eigenvalue of the input Hessian of "
             f"the CE by {s['hessian_iters']} power iterations, mean over {s['hessian_examples'] or 'all'} examples; "
             f"flatness: increase of the PGD-{s['steps']} adversarial loss at γ_w = {s['gamma']:g} along "
             f"{s['directions']} filter-normalized random directions. Kendall τ-b over the models where the measure "
             f"is defined, and over the models where all of them are (the same models for every measure; taus over "
             f"different models are not comparable): a measure that explains robust generalization has τ > 0 (the "
             f"margin, a denominator: τ < 0). Paper: no numbers (scatter plots); its finding: {FIG6_FINDING}. "
             f"{setting} {_source_note(project, runs.values())}")
    csv_columns = ["model", "run", "method", "noise_rate", "train_rob", "test_rob", "gap_rob"] + \
        [k for k, _ in COMPLEXITY_COLUMNS] + ["fit", "epoch"]
    return {"title": title, "columns": columns, "rows": rows, "csv_columns": csv_columns, "csv_rows": csv_rows,
            "notes": notes}


def build_init_comparison(project: Path, runs: dict, title: str, setting: str) -> dict:
    """Fig. A.10: final (last epoch) and best natural and robust test accuracy of TRADES from a random and an
    adversarial initialization; keys are "<initialization>|<SGD>", e.g. "adversarial|vanilla"."""
    from memlib.paper import FIGA10_FINDING

    columns = ["Initialization", "SGD", "Final test natural", "Final test robust", "Best test robust (epoch)",
               "Paper (Fig. A.10)"]
    rows, csv_rows = [], []
    for key, run_dir in runs.items():
        init, sgd = key.split("|")
        run = Run(project / run_dir)
        best, last = run.best, run.final
        paper = FIGA10_FINDING.get(sgd.lower(), "–")
        rows.append([init, sgd, _fmt(100 * last["test_nat_acc"]), _fmt(100 * last["test_rob_acc"]),
                     f"{_fmt(100 * best['test_rob_acc'])} ({best['epoch']})", paper])
        csv_rows.append([init, sgd, round(100 * last["test_nat_acc"], 4), round(100 * last["test_rob_acc"], 4),
                         round(100 * best["test_rob_acc"], 4), best["epoch"], last["epoch"], paper])
    notes = (f"Test accuracy in % (robust: PGD-{_eval_steps(project, runs)}). The paper shows curves, not numbers; "
             f"its finding per row. {setting} {_source_note(project, runs.values())}")
    return {"title": title, "columns": columns, "rows": rows,
            "csv_columns": ["init", "sgd", "final_test_nat", "final_test_rob", "best_test_rob", "best_epoch",
                            "last_epoch", "paper"], "csv_rows": csv_rows, "notes": notes}


# each table's JSON sidecar names its builder here, so ``rebuild_table`` can regenerate it
BUILDERS = {"table1": build_table1, "best_final": build_best_final,  # accuracy of checkpoints
            "final_accuracy": build_final_accuracy, "table_a1": build_table_a1,  # learning curves
            "robust_overfitting": build_robust_overfitting, "init_comparison": build_init_comparison,
            "measures": build_measures, "loss_consistency": build_loss_consistency,  # analyses
            "complexity": build_complexity}
