"""The batch: execute every notebook of a tier with papermill and write ``outputs/<tier>/REPORT.md``.

``python -m memlib reproduce --tier quick`` runs each ``notebooks/<name>.ipynb`` that has a parameter file
``params/<name>/<tier>.yaml``, with those parameters plus ``tier``, ``interactive=False`` and ``force``.
Notebooks train their runs through memlib (finished runs are reused, so a second call is fast) and write
tables and figures through ``memlib.report.Outputs``. The batch is a graph of jobs (``memlib.jobs``): one
per run to train, after the runs it needs, then one per notebook, after its runs, which only renders. The
jobs run as local processes by default, as Slurm jobs with ``--executor slurm``, or in this process with
``--executor inline``. A failing job stops only what needs it; the report lists failed runs and notebooks with
their errors.
"""

from __future__ import annotations

import ast
import copy
import logging
import os
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

from tqdm.auto import tqdm

from memlib.cluster import JOB_FILE, read_job
from memlib.config import ConfigError, RunConfig, read_yaml, resolve_bases
from memlib.io import atomic_write_bytes, atomic_write_json, atomic_write_text, read_json
from memlib.jobs import build_graph, describe_graph, job_threads, run_graph
from memlib.plan import describe, gpu_rate, measure_rate, plan_tier
from memlib.report import STAGE_VARIABLE, TIERS, WEIGHTS_FILE, rebuild_table
from memlib.runs import WeightsUnavailable, code_version, project_root, read_metrics, run_state


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
    try:  # shared bases named by reference are passed to the notebook as their values
        values = resolve_bases(read_yaml(path, "notebook parameters"), project)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
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


def execute(project: str, name: str, tier: str, force: bool = False, records_only: bool = False) -> dict:
    """Execute one notebook with papermill; never raises for a notebook error (it is returned).

    The executed notebook, its tables, figures and manifest are written to ``outputs/<tier>/.staging/<name>``
    and replace the last good ones only when every cell has run: a failure leaves them as they were and keeps
    what it wrote in ``.failed/<name>`` to look at. Files whose bytes did not change are not rewritten.
    ``records_only`` (the ``render`` command): nothing is trained; the executed notebook is put in place only
    if no cell needed weights that are not here (else it goes to ``.render/``, and the committed one stays)."""
    import papermill as pm

    project = Path(project)
    out = project / "outputs" / tier
    stage = out / ".staging" / name
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    params = {**load_params(project, name, tier), "tier": tier, "interactive": False, "force": force}
    status = {"notebook": name, "tier": tier, "ok": True, "error": None, "started": _now(),
              "records_only": records_only, "code_version": code_version()}  # memlib's checkout, as runs record it
    t0 = time.time()
    # TQDM_DISABLE: progress bars in an executed notebook are timings (and random widget ids); the batch
    # shows its own progress instead
    env = {STAGE_VARIABLE: str(stage), "TQDM_DISABLE": "1", **({"MEMLIB_RECORDS_ONLY": "1"} if records_only else {})}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits them
    try:
        pm.execute_notebook(str(project / "notebooks" / f"{name}.ipynb"), str(stage / f"{name}.ipynb"),
                            parameters=params, cwd=str(project / "notebooks"), kernel_name="python3",
                            progress_bar=False, log_output=False, report_mode=False)
    except Exception as exc:  # papermill's PapermillExecutionError carries the failing cell
        status["ok"] = False
        cell = getattr(exc, "exec_count", None)
        status["error"] = (f"cell {cell}: " if cell is not None else "") + \
            f"{getattr(exc, 'ename', type(exc).__name__)}: {getattr(exc, 'evalue', str(exc))}".strip()
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    status["seconds"] = time.time() - t0
    try:
        status["training_seconds"] = _training_seconds(project, stage, t0)
        normalize_notebook(stage / f"{name}.ipynb", project)
        _keep_good(project, out, name, stage, status, records_only)
    except Exception as exc:  # e.g. a full disk while installing: a failure like any other, the stage is kept
        status.update(ok=False, error=f"after the last cell: {type(exc).__name__}: {exc}".splitlines()[0])
    if not status["ok"]:
        _fail(out, name, status)
    atomic_write_json(_status_path(out, name, records_only), status)
    return status


def _status_path(out: Path, name: str, records_only: bool) -> Path:
    """A render's status goes to ``.render/`` (the committed status is of the last execution that trained)."""
    return (out / ".render" if records_only else out) / "status" / f"{name}.json"


def _keep_good(project: Path, out: Path, name: str, stage: Path, status: dict, records_only: bool) -> None:
    """Install what a successful (or, rendering, a stopped-for-weights) execution wrote."""
    stopped = records_only and not status["ok"] and f"{WeightsUnavailable.__name__}:" in status["error"]
    if not (status["ok"] or stopped):
        return
    asked = read_json(stage / WEIGHTS_FILE, [])
    status["weights"] = asked
    main = out / "status" / f"{name}.json"
    if records_only and main.is_file():  # tell the last execution's status (the plan reads it)
        known = read_json(main)
        # a render that ran to its end asked for every weight the notebook needs now (what it found cached or
        # committed it did not ask for); one that stopped asked for some of them
        weights = sorted(set(asked) | (set(known.get("weights", [])) if stopped else set())) \
            if isinstance(known, dict) else None
        if weights is not None and weights != known.get("weights", []):
            atomic_write_json(main, {**known, "weights": weights})
    missing = [r for r in asked if run_state(project / r)[0] != "finished"]
    if stopped:  # from records alone it cannot go on: what it made up to there is good, the rest is kept
        status.update(ok=True, stopped_for_weights=status.pop("error"), error=None)
    else:
        status["last_good"] = status["started"]
    if missing:
        status["weights_missing"] = missing
    # a render that ran to its end is whole, even where it skipped what needs weights (its tables say so)
    complete = not stopped
    _install(stage, out, name, whole=complete)
    if not complete:  # the incomplete executed notebook is kept apart; the committed one stays
        _install_file(stage / f"{name}.ipynb", out / ".render" / "notebooks" / f"{name}.ipynb")
        _rebuild_tables(project, out, name)
    shutil.rmtree(stage, ignore_errors=True)


def _fail(out: Path, name: str, status: dict) -> None:
    """A failed execution: the last good outputs stay; what it wrote goes to ``.failed/<name>`` to look at."""
    earlier = read_json(out / "status" / f"{name}.json")
    status["last_good"] = earlier.get("last_good") or (earlier.get("started") if earlier.get("ok") else None)
    stage, failed = out / ".staging" / name, out / ".failed" / name
    shutil.rmtree(failed, ignore_errors=True)
    if stage.exists():
        failed.parent.mkdir(parents=True, exist_ok=True)
        stage.rename(failed)


def _training_seconds(project: Path, stage: Path, since: float) -> float:
    """Training time of the notebook's runs trained in this execution (their metrics changed since ``since``)."""
    manifest = read_json(next(iter((stage / "manifest").glob("*.json")), stage / "none"))
    total = 0.0
    for run in manifest.get("runs", []):
        path = project / run / "metrics.jsonl"
        if path.is_file() and path.stat().st_mtime >= since:
            total += sum(m.get("time", 0.0) for m in read_metrics(path.parent))
    return total


def _install(stage: Path, out: Path, name: str, whole: bool = True) -> None:
    """Move what a successful execution wrote into ``out``; unchanged files keep their bytes and dates. Not
    ``whole`` (a render that stopped where weights were needed): its tables and figures only, not its executed
    notebook or its manifest, which lack what came after."""
    order = {"tables": 0, "figures": 1, f"{name}.ipynb": 2, "manifest": 3}  # the manifest last: it names the rest
    for path in sorted((p for p in stage.rglob("*") if p.is_file()),
                       key=lambda p: (order.get(p.relative_to(stage).parts[0], 4), str(p))):
        rel = path.relative_to(stage)
        if rel == Path(WEIGHTS_FILE):  # for the status, not an output
            continue
        if rel == Path(f"{name}.ipynb"):
            if whole:
                _install_file(path, out / "notebooks" / rel)
        elif whole or rel.parts[0] in ("tables", "figures"):
            _install_file(path, out / rel)


def _rebuild_tables(project: Path, out: Path, name: str) -> None:
    """Rebuild every table of the notebook's last manifest from its sidecar and the run records it names."""
    for table in read_json(out / "manifest" / f"{name}.json").get("tables", []):
        sidecar = (out / table["md"]).with_suffix(".json")
        if sidecar.is_file():
            atomic_write_text(out / table["md"], rebuild_table(sidecar, project))


def _install_file(src: Path, dest: Path) -> None:
    atomic_write_bytes(dest, src.read_bytes())


# papermill's and nbclient's per-run values: they go to the status file, not into the executed notebook
_VOLATILE_META = ("start_time", "end_time", "duration", "exception")


def normalize_notebook(path: Path, project: Path) -> None:
    """Make the executed notebook a function of its inputs: paths relative to the project (it carries no
    machine paths), no timings or dates (papermill's start/end/duration, nbclient's execution timestamps), a
    fixed id for papermill's parameters cell."""
    import nbformat

    if not path.is_file():
        return
    nb = nbformat.read(str(path), as_version=4)
    prefix = str(project) + os.sep
    meta = nb.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):
        if isinstance(meta.get(key), str):
            meta[key] = meta[key].replace(prefix, "")
    for key in _VOLATILE_META:
        meta.pop(key, None)
    for cell in nb.cells:
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell["id"] = "injected-parameters"  # papermill gives it a random id
        cell.metadata.pop("execution", None)
        for key in _VOLATILE_META:
            cell.metadata.get("papermill", {}).pop(key, None)
        if "outputs" in cell:
            cell["outputs"] = _merged_streams(cell["outputs"])
        for output in cell.get("outputs", []):
            if isinstance(output.get("text"), str):
                output["text"] = output["text"].replace(prefix, "")
            for mime, value in output.get("data", {}).items():
                if mime.startswith("text/") and isinstance(value, str):
                    output["data"][mime] = value.replace(prefix, "")
    atomic_write_text(path, nbformat.writes(nb))


def _merged_streams(outputs: list) -> list:
    """Consecutive stdout (or stderr) outputs of a cell as one: how the kernel's messages were split in time
    (two prints, one output or two) is not part of the result."""
    merged: list = []
    for output in outputs:
        last = merged[-1] if merged else None
        if (output.get("output_type") == "stream" and last is not None and last.get("output_type") == "stream"
                and last.get("name") == output.get("name")):
            last["text"] = "".join(last["text"]) + "".join(output["text"])
        else:
            merged.append(copy.copy(output))
    return merged


def run_batch(tier: str, only: list[str] | None = None, force: bool = False, executor: str = "local",
              jobs: int | None = None, slurm: dict | None = None, project: Path | None = None, log=print,
              records_only: bool = False, measure: bool = True, runs_per_gpu: int = 1) -> tuple[Path, list[dict]]:
    """Execute the tier's notebooks (all, or ``only``) and write the report; return its path and the
    notebooks' statuses. First the plan: what each notebook reuses, re-renders from records and trains, with
    the time that takes here. ``records_only``: train nothing (``python -m memlib render``). ``jobs``: jobs at
    once with the local executor (default: the most any of the notebooks' parameters ask for)."""
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
    params = {name: load_params(project, name, tier) for name in names}  # all checked before anything runs
    plans = plan_tier(project, tier, names, records_only)
    for r in {r.path: r for p in plans for r in p.runs}.values() if force and not records_only else ():
        if r.action != "wait":  # trained again, from its first epoch
            r.action, r.epochs_done, r.state = "train", 0, "missing" if r.state == "stopped" else r.state
    # what can be shown at once is shown first: notebooks with nothing to train that share no run with one
    # that trains (a record trained again may change, and they must show the same run)
    training = {r.path for p in plans for r in p.to_train()}
    plans.sort(key=lambda p: not p.known or bool({r.path for r in p.runs} & training))
    names = [p.name for p in plans]
    rate = measure_rate() if measure and training else None
    what = "re-render from records (nothing is trained)" if records_only else "reproduce"
    log(f"{what} --tier {tier}: {len(names)} notebook(s) with the {executor} executor. The plan:")
    jobs_of = {p.name: int(params[p.name].get("jobs", 1)) for p in plans}
    jobs = jobs or max(jobs_of.values(), default=1)  # by default the parallelism the tier's notebooks declare
    for line in describe(plans, rate, gpu_rate(project), jobs):
        log(line)
    slurm = slurm or {}
    # the run jobs' planned time where they run: one H100 per job with GPUs, else this machine's rate per thread
    threads = job_threads(executor, jobs, slurm) or max(1, (os.cpu_count() or 1) // jobs)
    on_gpu = executor == "slurm" and slurm.get("gpus", 1) > 0 and gpu_rate(project)
    nodes = build_graph(project, tier, plans, gpu_rate(project) if on_gpu else rate and rate * threads,
                        runs_per_gpu, force, records_only)
    for line in describe_graph(nodes, project):
        log(line)
    # each job's share of the bar: its estimate, at least 30 s (a render-only notebook's is its few seconds of
    # last execution, on which the early ETA would be absurd); whole seconds, so that the bar ends at its total
    weights = {k: round(max(30.0 if n.kind == "notebook" else 1.0, n.seconds or 60.0)) for k, n in nodes.items()}
    bar = tqdm(total=sum(weights.values()), unit="s", desc=f"{tier} batch", disable=not nodes,
               bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} estimated s [{elapsed}<{remaining}]")
    statuses = {}

    def done(node) -> None:
        bar.update(weights[node.key])
        if node.kind == "notebook":
            statuses[node.notebook] = _notebook_status(project, tier, node, records_only)
            bar.write(_status_line(statuses[node.notebook]))
        elif node.outcome != "ok":
            bar.write(f"  {node.key}: {node.outcome.upper()} — {node.error}")

    run_graph(project, tier, nodes, execute, executor, jobs, slurm, force, records_only, done)
    statuses = [statuses[n] for n in names if n in statuses]
    bar.close()
    report = write_report(project, tier)
    from memlib import findings  # scipy's statistics: imported when a batch ends, not at every start

    written = findings.write(project, tier)
    if written:
        log(f"findings: {written}")
    failed = [s["notebook"] for s in statuses if not s["ok"]]
    log(f"report: {report}" + (f" ({len(failed)} failed: {', '.join(failed)})" if failed else ""))
    for s in statuses:
        command = f"`python -m memlib reproduce --tier {tier} --only {s['notebook']}` trains them"
        names = ", ".join(Path(r).name for r in s.get("weights_missing", []))
        if s.get("stopped_for_weights"):
            log(f"  {s['notebook']}: rendered up to {s['stopped_for_weights'].split(':')[0]}, which needs weights; "
                + (f"needs the weights of {names}" if names else "needs runs that are not trained here") +
                f" ({command}); its tables are rebuilt from records, the figures it could not draw and its executed "
                f"notebook are kept as committed (this render's notebook: "
                f"outputs/{tier}/.render/notebooks/{s['notebook']}.ipynb)")
        elif names:
            log(f"  {s['notebook']}: ran to its end without the weights of {names}; what needs them is marked as "
                f"not yet evaluated ({command})")
    return report, statuses


def _notebook_status(project: Path, tier: str, node, records_only: bool) -> dict:
    """A notebook job's status: what ``execute`` returned, or, for a job that failed or was cancelled before
    it could say, a failure that keeps the last good outputs."""
    if node.outcome == "ok" and isinstance(node.result, dict):
        return node.result
    status = {"notebook": node.notebook, "tier": tier, "ok": False, "seconds": 0.0, "started": _now(),
              "error": node.error or "job failed"}
    out = project / "outputs" / tier
    _fail(out, node.notebook, status)
    atomic_write_json(_status_path(out, node.notebook, records_only), status)
    return status


def _status_line(s: dict) -> str:
    return f"  {s['notebook']}: {'ok' if s['ok'] else 'FAILED'} in {s.get('seconds', 0):.0f}s" + \
        (f" — {s['error']}" if s.get("error") else "")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _training_minutes(project: Path, manifest: dict) -> float:
    """Sum of the per-epoch times of a notebook's runs (what training them cost, whenever it happened)."""
    return sum(m.get("time", 0) for run in manifest.get("runs", []) for m in read_metrics(project / run)) / 60


def _failed_runs(out: Path) -> list[tuple[str, dict]]:
    """The tier's runs whose last job failed or was cancelled, and that are not finished since."""
    found = []
    for path in sorted((out / "runs").glob(f"*/{JOB_FILE}")):
        job = read_job(path)
        if job.get("state") in ("failed", "cancelled") and run_state(path.parent)[0] != "finished":
            found.append((path.parent.name, job))
    return found


def write_report(project: Path, tier: str) -> Path:
    """``outputs/<tier>/REPORT.md``: every notebook's status, every table inline, every figure. It holds no
    dates or execution times of successful notebooks (those are in ``status/``), so re-rendering unchanged
    results rewrites nothing; a failed notebook is shown with its error beside its last good results."""
    out = project / "outputs" / tier
    lines = [f"# Reproduction report — `{tier}` tier", "",
             f"Written by `python -m memlib reproduce --tier {tier}`. Tables are built from the runs' metric files "
             f"(`runs/*/metrics.jsonl`, `eval.json`); each names its data source. Execution times are in "
             f"`status/`.", ""]
    statuses = {p.stem: read_json(p) for p in sorted((out / "status").glob("*.json"))}
    manifests = {p.stem: read_json(p) for p in sorted((out / "manifest").glob("*.json"))}
    sources = set()
    for manifest in manifests.values():
        for run in manifest.get("runs", []):
            source = read_json(project / run / "config.json").get("data_source")
            if source:
                sources.add(source)
    train_time = {name: _training_minutes(project, m) for name, m in manifests.items()}
    lines += [f"Data: {', '.join(sorted(sources)) or 'none recorded'}. Training of all the notebooks' runs: "
              f"{sum(train_time.values()):.1f} min of run time.", "",
              "| Notebook | Status | Runs (training time) | Tables | Figures |",
              "|---|---|---|---|---|"]
    for name in sorted(set(statuses) | set(manifests)):
        s, m = statuses.get(name, {}), manifests.get(name, {})
        state = "ok" if s.get("ok") else f"**FAILED** — {s.get('error')}" if s else "not executed"
        lines.append(f"| [{name}](notebooks/{name}.ipynb) | {state} | "
                     f"{len(m.get('runs', []))} ({train_time.get(name, 0):.1f} min) | {len(m.get('tables', []))} | "
                     f"{len(m.get('figures', []))} |")
    failed_runs = _failed_runs(out)
    if failed_runs:
        lines += ["", "Runs whose job did not succeed (the notebooks that need them are not executed):", "",
                  "| Run | Job | Error |", "|---|---|---|"]
        lines += [f"| {name} | {job.get('executor', '?')} {job.get('job_id', '')} ({job.get('state')}) | "
                  f"{str(job.get('error')).replace('|', '/')} |" for name, job in failed_runs]
    for name, m in manifests.items():
        lines += ["", f"## {name}", ""]
        s = statuses.get(name, {})
        if s and not s.get("ok"):
            good = s.get("last_good")
            lines += [f"> **Failed** on {s.get('started', '?')}: {s.get('error')}. " +
                      (f"The tables and figures below are the last good ones, of {good}." if good else
                       "No earlier good execution: what is below may be missing or incomplete."), ""]
        for t in m.get("tables", []):
            md = out / t["md"]
            lines += [md.read_text() if md.is_file() else f"(missing {t['md']})", ""]
        for f in m.get("figures", []):
            lines += [f"![{f['name']}]({f['png']})", "", f"*{f['caption']}* ([PDF](figures/{f['name']}.pdf))", ""]
    path = out / "REPORT.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
