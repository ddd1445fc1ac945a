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

from memlib.io import atomic_write_json, atomic_write_text
from memlib.paper import METHOD_NAMES, TABLE1, TABLE_A1
from memlib.runs import project_root, read_metrics, read_run

TIERS = ("smoke", "quick", "paper")


class Outputs:
    """The output folders of one tier, and a manifest of what each notebook wrote."""

    def __init__(self, tier: str, notebook: str, root: str | Path | None = None):
        if tier not in TIERS:
            raise ValueError(f"unknown tier {tier!r}; choose one of {', '.join(TIERS)}")
        self.tier, self.notebook = tier, notebook
        self.project = project_root() if root is None else Path(root).resolve()
        self.dir = self.project / "outputs" / tier
        self.runs, self.tables, self.figures = self.dir / "runs", self.dir / "tables", self.dir / "figures"
        self.data = self.project / "data"
        for d in (self.runs, self.tables, self.figures, self.dir / "manifest"):
            d.mkdir(parents=True, exist_ok=True)
        self._manifest_path = self.dir / "manifest" / f"{notebook}.json"
        self.manifest = {"notebook": notebook, "tier": tier, "tables": [], "figures": [], "runs": []}
        if self._manifest_path.is_file():  # keep what earlier (e.g. headless) executions recorded
            self.manifest.update(json.loads(self._manifest_path.read_text()))
        atomic_write_json(self._manifest_path, self.manifest)

    def run_config(self, **values) -> dict:
        """Config values with this tier's run folder and data folder filled in."""
        return {"out_dir": str(self.runs), "data_dir": str(self.data), **values}

    def add_run(self, run_dir: str | Path) -> None:
        rel = os.path.relpath(run_dir, self.project)
        if rel not in self.manifest["runs"]:
            self.manifest["runs"].append(rel)
            atomic_write_json(self._manifest_path, self.manifest)

    def figure(self, fig, name: str, caption: str = "") -> Path:
        """Save a matplotlib figure as PNG and PDF under ``figures/``."""
        png = self.figures / f"{name}.png"
        fig.savefig(png, dpi=130, bbox_inches="tight")
        fig.savefig(self.figures / f"{name}.pdf", bbox_inches="tight")
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


# --- builders: pure functions of run files ------------------------------------------------------------

def _source_note(project: Path, run_dirs) -> str:
    sources = sorted({read_run(project / r)[1]["data_source"] for r in run_dirs})
    versions = sorted({read_run(project / r)[1]["code_version"] for r in run_dirs})
    return f"Data: {', '.join(sources)}. Code: memlib {', '.join(versions)}."


def _fmt(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _eval_acc(project: Path, run_dir: str, which: str, attack: str, n: int) -> float | None:
    path = project / run_dir / "eval.json"
    if not path.is_file():
        return None
    cache = json.loads(path.read_text())
    hits = [v["acc"] for k, v in cache.items() if k.startswith(f"{which}|{attack}|n={n}|")]
    return 100 * hits[0] if hits else None


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
            best, final = _eval_acc(project, run_dir, "best", a, n), _eval_acc(project, run_dir, "final", a, n)
            ours = {"best": best, "final": final,
                    "diff": None if best is None or final is None else best - final}
            for k in ("best", "final", "diff"):
                p = paper.get(a, {}).get(k)
                row.append(f"{_fmt(ours[k])} ({_fmt(p)})")
                csv_row += [None if ours[k] is None else round(ours[k], 4), p]
        rows.append(row)
        csv_rows.append(csv_row)
    notes = (f"Ours (paper) in %. {setting} Best = epoch with the highest PGD-{_eval_steps(project, runs)} test "
             f"accuracy during training; evaluated on {n or 'all'} test examples. "
             f"{_source_note(project, runs.values())}")
    return {"title": title, "columns": columns, "rows": rows, "csv_columns": csv_columns, "csv_rows": csv_rows,
            "notes": notes}


def _eval_steps(project: Path, runs: dict) -> int:
    return read_run(project / next(iter(runs.values())))[0].eval_steps


def build_final_accuracy(project: Path, runs: dict, title: str, setting: str) -> dict:
    """Last-epoch training (on the labels trained on) and test accuracies of each run, and their gaps."""
    columns = ["Run", "Train natural", "Train robust", "Test natural", "Test robust", "Gap natural", "Gap robust"]
    rows, csv_rows = [], []
    for label, run_dir in runs.items():
        m = read_metrics(project / run_dir)[-1]
        vals = [100 * m["train_nat_acc"], 100 * m["train_rob_acc"], 100 * m["test_nat_acc"], 100 * m["test_rob_acc"]]
        vals += [vals[0] - vals[2], vals[1] - vals[3]]
        rows.append([label] + [_fmt(v) for v in vals])
        csv_rows.append([label] + [round(v, 4) for v in vals] + [m["epoch"]])
    notes = f"Accuracy in % at the last epoch. {setting} {_source_note(project, runs.values())}"
    return {"title": title, "columns": columns, "rows": rows,
            "csv_columns": ["run", "train_nat", "train_rob", "test_nat", "test_rob", "gap_nat", "gap_rob", "epoch"],
            "csv_rows": csv_rows, "notes": notes}


def build_table_a1(project: Path, runs: dict, title: str, setting: str) -> dict:
    """Table A.1: TRADES on true/random labels with regularizer combinations; keys are
    "labels|augment|weight_decay|dropout" with yes/no flags, e.g. "random|yes|no|no"."""
    columns = ["Labels", "Aug.", "WD", "Dropout", "Train nat.", "Train rob.", "Test nat.", "Test rob.",
               "Gap nat.", "Gap rob."]
    rows, csv_rows = [], []
    for key, run_dir in runs.items():
        labels, aug, wd, do = key.split("|")
        flags = (aug == "yes", wd == "yes", do == "yes")
        m = read_metrics(project / run_dir)[-1]
        ours = [100 * m["train_nat_acc"], 100 * m["train_rob_acc"], 100 * m["test_nat_acc"], 100 * m["test_rob_acc"]]
        ours += [ours[0] - ours[2], ours[1] - ours[3]]
        paper = TABLE_A1.get((labels, *flags))
        cells = [f"{_fmt(o)} ({_fmt(p)})" for o, p in zip(ours, paper or [None] * 6)]
        rows.append([labels] + ["✓" if f else "✗" for f in flags] + cells)
        csv_rows.append([labels, *flags] + [round(o, 4) for o in ours] + list(paper or [None] * 6))
    notes = f"Ours (paper) in %, at the last epoch. {setting} {_source_note(project, runs.values())}"
    csv_columns = ["labels", "augment", "weight_decay", "dropout"] + \
        [f"{c}_ours" for c in ("train_nat", "train_rob", "test_nat", "test_rob", "gap_nat", "gap_rob")] + \
        [f"{c}_paper" for c in ("train_nat", "train_rob", "test_nat", "test_rob", "gap_nat", "gap_rob")]
    return {"title": title, "columns": columns, "rows": rows, "csv_columns": csv_columns, "csv_rows": csv_rows,
            "notes": notes}


BUILDERS = {"table1": build_table1, "final_accuracy": build_final_accuracy, "table_a1": build_table_a1}
