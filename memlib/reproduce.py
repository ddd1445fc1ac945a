"""The batch: execute every notebook of a tier with papermill and write ``outputs/<tier>/REPORT.md``.

``python -m memlib reproduce --tier quick`` runs each ``notebooks/<name>.ipynb`` that has a parameter file
``params/<name>/<tier>.yaml``, with those parameters plus ``tier``, ``interactive=False`` and ``force``.
Notebooks train their runs through memlib (finished runs are reused, so a second call is fast) and write
tables and figures through ``memlib.report.Outputs``. Each notebook is one job for a submitit executor:
local processes by default, Slurm with ``--executor slurm``, or in this process with ``--executor inline``.
A failing notebook stops nothing else; the report lists it with the failing cell's error.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

from memlib.config import ConfigError, RunConfig
from memlib.io import atomic_write_json, atomic_write_text
from memlib.report import TIERS
from memlib.runs import code_version, project_root


def notebooks(project: Path, tier: str) -> list[str]:
    """Names of the notebooks that have parameters for ``tier``, in order."""
    return sorted(p.stem for p in (project / "notebooks").glob("*.ipynb")
                  if (project / "params" / p.stem / f"{tier}.yaml").is_file())


def notebook_parameters(path: Path) -> set[str]:
    """Names assigned in the notebook's ``parameters``-tagged cell."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    if not cells:
        raise ConfigError(f"{path.name} has no cell tagged 'parameters'")
    names = set()
    for node in ast.parse(cells[0].source).body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def load_params(project: Path, name: str, tier: str) -> dict:
    """A tier's parameters of a notebook, checked before anything runs: every key must be a parameter of
    the notebook (papermill would only warn), and every ``base`` dict must be a valid RunConfig."""
    path = project / "params" / name / f"{tier}.yaml"
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path} must hold a mapping of notebook parameters")
    known = notebook_parameters(project / "notebooks" / f"{name}.ipynb")
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown parameter(s) {', '.join(unknown)} for notebook {name} "
                          f"(its parameters: {', '.join(sorted(known))})")
    for key, value in values.items():
        if key == "base" or key.endswith("_base"):
            try:
                RunConfig.from_dict(value)
            except ConfigError as exc:
                raise ConfigError(f"{path}: {key}: {exc}") from None
    return values


def execute(project: str, name: str, tier: str, force: bool = False) -> dict:
    """Execute one notebook with papermill; never raises for a notebook error (it is returned)."""
    import papermill as pm

    project = Path(project)
    out_dir = project / "outputs" / tier / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    params = {**load_params(project, name, tier), "tier": tier, "interactive": False, "force": force}
    status = {"notebook": name, "tier": tier, "ok": True, "error": None, "started": _now(),
              "code_version": code_version()}  # memlib's checkout, as runs record it
    t0 = time.time()
    try:
        pm.execute_notebook(str(project / "notebooks" / f"{name}.ipynb"), str(out_dir / f"{name}.ipynb"),
                            parameters=params, cwd=str(project / "notebooks"), kernel_name="python3",
                            progress_bar=False, log_output=False, report_mode=False)
    except Exception as exc:  # papermill's PapermillExecutionError carries the failing cell
        status["ok"] = False
        cell = getattr(exc, "exec_count", None)
        status["error"] = (f"cell {cell}: " if cell is not None else "") + \
            f"{getattr(exc, 'ename', type(exc).__name__)}: {getattr(exc, 'evalue', str(exc))}".strip()
    status["seconds"] = time.time() - t0
    _strip_paths(out_dir / f"{name}.ipynb", project)
    atomic_write_json(project / "outputs" / tier / "status" / f"{name}.json", status)
    return status


def _strip_paths(path: Path, project: Path) -> None:
    """Write the executed notebook's paths relative to the project, so it carries no machine paths."""
    import nbformat

    if not path.is_file():
        return
    nb = nbformat.read(str(path), as_version=4)
    prefix = str(project) + os.sep
    meta = nb.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):
        if isinstance(meta.get(key), str):
            meta[key] = meta[key].replace(prefix, "")
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if isinstance(output.get("text"), str):
                output["text"] = output["text"].replace(prefix, "")
            for mime, value in output.get("data", {}).items():
                if mime.startswith("text/") and isinstance(value, str):
                    output["data"][mime] = value.replace(prefix, "")
    atomic_write_text(path, nbformat.writes(nb))


def run_batch(tier: str, only: list[str] | None = None, force: bool = False, executor: str = "local",
              jobs: int = 1, slurm: dict | None = None, project: Path | None = None, log=print) -> Path:
    """Execute the tier's notebooks (all, or ``only``) and write the report; return its path."""
    if tier not in TIERS:
        raise ConfigError(f"unknown tier {tier!r}; choose one of: {', '.join(TIERS)}")
    project = project or project_root()
    logging.getLogger("papermill").setLevel(logging.ERROR)  # parameters are validated here instead
    names = notebooks(project, tier)
    if only:
        unknown = [n for n in only if n not in names]
        if unknown:
            raise ConfigError(f"no notebook with {tier} parameters named {', '.join(unknown)}; "
                              f"have: {', '.join(names)}")
        names = [n for n in names if n in only]
    for name in names:  # every parameter file is checked before any notebook runs
        load_params(project, name, tier)
    log(f"reproduce --tier {tier}: {len(names)} notebook(s) with the {executor} executor")
    statuses = []
    if executor == "inline":
        for i, name in enumerate(names, 1):
            log(f"[{i}/{len(names)}] {name} ...")
            statuses.append(execute(str(project), name, tier, force))
            log(_status_line(statuses[-1]))
    else:
        statuses = _submit(project, names, tier, force, executor, jobs, slurm or {}, log)
    report = write_report(project, tier)
    failed = [s["notebook"] for s in statuses if not s["ok"]]
    log(f"report: {report}" + (f" ({len(failed)} failed: {', '.join(failed)})" if failed else ""))
    return report


def _submit(project, names, tier, force, executor, jobs, slurm, log) -> list[dict]:
    import submitit

    folder = project / "outputs" / tier / ".submitit"
    if executor == "local":
        ex = submitit.LocalExecutor(folder=str(folder))
        ex.update_parameters(timeout_min=slurm.get("timeout_min", 24 * 60))
    elif executor == "slurm":
        ex = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
        ex.update_parameters(timeout_min=slurm.get("timeout_min", 24 * 60), slurm_partition=slurm.get("partition"),
                             gpus_per_node=slurm.get("gpus", 1), cpus_per_task=slurm.get("cpus", 8),
                             name=f"memlib-{tier}")
        jobs = len(names)  # the scheduler queues them
    else:
        raise ConfigError(f"unknown executor {executor!r}; choose local, slurm or inline")
    statuses, pending = [], list(enumerate(names, 1))
    while pending:
        wave, pending = pending[:jobs], pending[jobs:]
        submitted = []
        for i, name in wave:
            job = ex.submit(execute, str(project), name, tier, force)
            log(f"[{i}/{len(names)}] {name}: job {job.job_id}")
            submitted.append((name, job))
        for name, job in submitted:
            try:
                status = job.result()
            except Exception as exc:  # the job itself died (killed, out of memory, scheduler error)
                status = {"notebook": name, "tier": tier, "ok": False, "seconds": 0.0,
                          "error": f"job failed: {str(exc).strip().splitlines()[-1] if str(exc).strip() else exc}"}
                atomic_write_json(project / "outputs" / tier / "status" / f"{name}.json", status)
            statuses.append(status)
            log(_status_line(status))
    return statuses


def _status_line(s: dict) -> str:
    return f"  {s['notebook']}: {'ok' if s['ok'] else 'FAILED'} in {s.get('seconds', 0):.0f}s" + \
        (f" — {s['error']}" if s.get("error") else "")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _training_minutes(project: Path, manifest: dict) -> float:
    """Sum of the per-epoch times of a notebook's runs (what training them cost, whenever it happened)."""
    total = 0.0
    for run in manifest.get("runs", []):
        path = project / run / "metrics.jsonl"
        if path.is_file():
            total += sum(json.loads(line).get("time", 0) for line in path.read_text().splitlines() if line.strip())
    return total / 60


def write_report(project: Path, tier: str) -> Path:
    """``outputs/<tier>/REPORT.md``: every notebook's status and time, every table inline, every figure."""
    out = project / "outputs" / tier
    lines = [f"# Reproduction report — `{tier}` tier", "",
             f"Written {_now()} by `python -m memlib reproduce --tier {tier}`. Tables are built from the runs' "
             f"metric files (`runs/*/metrics.jsonl`, `eval.json`); each names its data source.", ""]
    statuses = {p.stem: json.loads(p.read_text()) for p in sorted((out / "status").glob("*.json"))}
    manifests = {p.stem: json.loads(p.read_text()) for p in sorted((out / "manifest").glob("*.json"))}
    sources = set()
    for manifest in manifests.values():
        for run in manifest.get("runs", []):
            cfg = project / run / "config.json"
            if cfg.is_file():
                sources.add(json.loads(cfg.read_text())["data_source"])
    total = sum(s.get("seconds", 0) for s in statuses.values())
    train_time = {name: _training_minutes(project, m) for name, m in manifests.items()}
    lines += [f"Data: {', '.join(sorted(sources)) or 'none recorded'}. Last execution of the notebooks: "
              f"{total / 60:.1f} min; training of all their runs (reused runs were trained earlier): "
              f"{sum(train_time.values()):.1f} min of run time.", "",
              "| Notebook | Status | Last execution | Runs (training time) | Tables | Figures |",
              "|---|---|---|---|---|---|"]
    for name, s in statuses.items():
        m = manifests.get(name, {})
        state = "ok" if s["ok"] else f"**FAILED** — {s['error']}"
        lines.append(f"| [{name}](notebooks/{name}.ipynb) | {state} | {s.get('seconds', 0) / 60:.1f} min | "
                     f"{len(m.get('runs', []))} ({train_time.get(name, 0):.1f} min) | {len(m.get('tables', []))} | "
                     f"{len(m.get('figures', []))} |")
    for name, m in manifests.items():
        lines += ["", f"## {name}", ""]
        if name in statuses and not statuses[name]["ok"]:
            lines += [f"> Failed: {statuses[name]['error']}", ""]
        for t in m.get("tables", []):
            md = out / t["md"]
            lines += [md.read_text() if md.is_file() else f"(missing {t['md']})", ""]
        for f in m.get("figures", []):
            lines += [f"![{f['name']}]({f['png']})", "", f"*{f['caption']}* ([PDF](figures/{f['name']}.pdf))", ""]
    path = out / "REPORT.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
