"""The batch as a graph of jobs: one job per run to train, then one per notebook, which only renders.

From the plan (``memlib.plan``), every run that needs training is a job (``TrainRuns``) that depends on the jobs
of the runs whose checkpoints it starts from or distills (``init_from``, KD teachers); every notebook is a job
that depends on the jobs of its runs, and so trains nothing itself. Three executors run the same graph:

* ``inline``: in this process, dependencies first;
* ``local``: submitit's local processes, ``jobs`` at a time, each started once what it needs has succeeded;
* ``slurm``: all submitted at once, dependencies as ``afterok`` with ``--kill-on-invalid-dep=yes`` (a failure
  cancels only what depends on it), each job with a time limit from its planned cost. On a time limit or
  preemption (``USR2``) submitit requeues a run's job, and the run resumes after its last completed epoch.

``runs_per_gpu`` k packs k runs that no other run needs into one job, as k processes sharing its GPU. A job
submitted earlier that still lives (``memlib.cluster``) is waited for, not submitted again.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from memlib.cluster import JOB_FILE, LIVE, live_state, now, read_job, slurm_states, write_job
from memlib.config import ConfigError, RunConfig
from memlib.io import atomic_write_json
from memlib.plan import NotebookPlan, RunPlan

MARGIN, OVERHEAD_MIN = 2.0, 10  # a job's time limit: twice its planned time, plus start-up and evaluation
POLL_S = 1.0
RESULT_GRACE_S = 30.0  # how long after Slurm says a job ended its result may still appear


@dataclass
class Node:
    key: str  # "run <name>", "runs <name>+k" (packed) or "notebook <name>"
    kind: str  # run | notebook
    runs: list[RunPlan] = field(default_factory=list)  # the runs it trains (run nodes)
    notebook: str | None = None
    needs: set[str] = field(default_factory=set)  # keys of the nodes it waits for
    seconds: float = 0.0  # planned, on the machine that runs it
    job_file: Path | None = None
    job: object = None  # submitit's job
    job_id: str | None = None
    external: bool = False  # submitted earlier and still live: waited for, not submitted
    outcome: str | None = None  # ok | failed | cancelled
    error: str | None = None
    result: object = None
    ended_since: float | None = None  # when Slurm first listed its job as ended


def job_file(project: Path, tier: str, notebook: str) -> Path:
    return project / "outputs" / tier / ".jobs" / f"{notebook}.json"


def build_graph(project: Path, tier: str, plans: list[NotebookPlan], rate: float | None,
                runs_per_gpu: int = 1, force: bool = False, records_only: bool = False) -> dict[str, Node]:
    """The jobs of a plan, in an order where each comes after what it needs: {key: Node}."""
    runs = {r.path: r for nb in plans for r in nb.runs}
    train = {} if records_only else {p: r for p, r in runs.items()
                                     if r.action == "train" or (force and r.action != "wait")}
    needed = {d for r in train.values() for d in r.needs if d in train}
    nodes: dict[str, Node] = {}
    node_of: dict[str, str] = {}
    packs: dict[tuple, list[RunPlan]] = {}
    for path, r in runs.items():  # trained by a job submitted earlier: waited for
        if r.action == "wait" and path not in train:
            node_of[path] = _add(nodes, Node(f"run {Path(path).name}", "run", [r], external=True, job_id=r.job_id))
    for path, r in train.items():
        if runs_per_gpu > 1 and path not in needed:  # leaves only: a failure then cancels no other run
            packs.setdefault(tuple(sorted(d for d in r.needs if d in runs)), []).append(r)
        else:
            node_of[path] = _add(nodes, Node(f"run {Path(path).name}", "run", [r]))
    for group in packs.values():
        group.sort(key=lambda r: -r.flops_to_go)
        for i in range(0, len(group), runs_per_gpu):
            chunk = group[i:i + runs_per_gpu]
            key = f"run {Path(chunk[0].path).name}" + (f"+{len(chunk) - 1}" if len(chunk) > 1 else "")
            _add(nodes, Node(key, "run", chunk))
            node_of.update({r.path: key for r in chunk})
    for node in nodes.values():
        deps = {d for r in node.runs for d in r.needs}
        node.needs = {node_of[d] for d in deps if d in node_of} - {node.key}
        node.seconds = sum(r.flops_to_go for r in node.runs) / rate if rate else 0.0
    for nb in plans:
        node = Node(f"notebook {nb.name}", "notebook", notebook=nb.name, job_file=job_file(project, tier, nb.name))
        node.needs = {node_of[r.path] for r in nb.runs if r.path in node_of}
        node.seconds = nb.last_seconds or 60.0
        live = live_state(read_job(node.job_file))
        if live and not force:
            node.external, node.job_id = True, str(read_job(node.job_file)["job_id"])
        _add(nodes, node)
    return _ordered(nodes)


def _add(nodes: dict, node: Node) -> str:
    nodes[node.key] = node
    return node.key


def _ordered(nodes: dict[str, Node]) -> dict[str, Node]:
    out: dict[str, Node] = {}
    while len(out) < len(nodes):
        ready = [k for k, n in nodes.items() if k not in out and n.needs <= set(out)]
        if not ready:
            raise ConfigError(f"jobs {', '.join(sorted(set(nodes) - set(out)))} need each other")
        out.update({k: nodes[k] for k in ready})
    return out


# --- what a job does -----------------------------------------------------------------------------------

class TrainRuns:
    """A run job: train its runs, one in this process or several packed as separate processes. submitit calls
    ``checkpoint`` on a time limit or preemption and requeues the job: each run resumes from its ``last.pt``."""

    def __call__(self, project: str, runs: list[tuple[str, dict | None]], force: bool = False,
                 threads: int | None = None, quiet: bool = False) -> list[dict]:
        if len(runs) == 1:
            return [train_run(project, *runs[0], force=force, threads=threads, quiet=quiet)]
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(len(runs), mp_context=ctx) as pool:
            futures = [pool.submit(train_run, project, rel, values, force=force, threads=threads, quiet=quiet)
                       for rel, values in runs]
            results = [f.exception() or f.result() for f in futures]
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise failed[0]
        return results

    def checkpoint(self, *args, **kwargs):
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


def train_run(project: str, rel: str, values: dict | None, force: bool = False, threads: int | None = None,
              quiet: bool = False) -> dict:
    """Train one run to its end (a record without weights: train it again, ``train.retrain_record``), counting
    its starts in its job file; at the end the file says ``ok``, or ``failed`` with the error, and it raises.
    ``quiet``: no epoch lines or bars (in the batch's own process, under its progress bar)."""
    import torch

    from memlib.runs import run_state
    from memlib.train import retrain_record, train

    run_dir = Path(project) / rel
    path = run_dir / JOB_FILE
    starts = read_job(path).get("starts", 0) + 1
    write_job(path, starts=starts, state="running", host=socket.gethostname(), process=os.getpid(), started=now())
    if threads:
        torch.set_num_threads(threads)
    log = (lambda msg: None) if quiet else print  # a job's lines go to its log file
    bars = os.environ.get("TQDM_DISABLE")
    if quiet:
        os.environ["TQDM_DISABLE"] = "1"
    try:
        if values is None or (run_state(run_dir)[0] == "record" and not force):
            result = retrain_record(run_dir, log=log)
        else:  # forced only at its first start: a requeued job resumes
            result = train(RunConfig.from_dict(values), force=force and starts == 1, log=log)
    except BaseException as exc:
        write_job(path, state="failed", error=_one_line(exc), ended=now())
        raise
    finally:
        if quiet:
            os.environ.pop("TQDM_DISABLE") if bars is None else os.environ.__setitem__("TQDM_DISABLE", bars)
    write_job(path, state="ok", error=None, ended=now())
    return {"run": rel, "finished": result.finished, "starts": starts}


def run_notebook(fn, project: str, name: str, tier: str, force: bool, records_only: bool) -> dict:
    """A notebook job: ``fn`` (``reproduce.execute``), its start and end in the notebook's job file."""
    path = job_file(Path(project), tier, name)
    write_job(path, starts=read_job(path).get("starts", 0) + 1, state="running", started=now())
    status = fn(project, name, tier, force, records_only)
    write_job(path, state="ok" if status.get("ok") else "failed", error=status.get("error"), ended=now())
    return status


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[-1] if text else ''}".strip().rstrip(":")


# --- running the graph -----------------------------------------------------------------------------------

def run_graph(project: Path, tier: str, nodes: dict[str, Node], notebook_fn, executor: str = "local",
              jobs: int = 1, slurm: dict | None = None, force: bool = False, records_only: bool = False,
              done=lambda node: None) -> dict[str, Node]:
    """Run every node (``done(node)`` as each ends) and return them with their outcomes."""
    if executor not in ("inline", "local", "slurm"):
        raise ConfigError(f"unknown executor {executor!r}; choose local, slurm or inline")
    slurm = slurm or {}
    threads = job_threads(executor, jobs, slurm)
    nb_force = force and records_only  # with force the run jobs train again; the notebooks only render

    def work(node: Node) -> tuple:
        if node.kind == "run":
            runs = [(r.path, r.cfg.to_dict() if r.cfg else None) for r in node.runs]
            return TrainRuns(), str(project), runs, force, threads, executor == "inline"
        return run_notebook, notebook_fn, str(project), node.notebook, tier, nb_force, records_only

    if executor == "inline":
        for node in nodes.values():
            if not _cancel_if_needed(node, nodes):
                fn, *args = work(node)
                try:
                    node.result, node.outcome = fn(*args), "ok"
                except Exception as exc:
                    node.outcome, node.error = "failed", _one_line(exc)
            _settle(project, node, done)
        return nodes
    cap = slurm.get("timeout_min", 24 * 60)
    # a run longer than the cap goes on in requeued jobs, each resuming after the last completed epoch
    requeues = max([3] + [math.ceil(MARGIN * n.seconds / 60 / time_limit(n.seconds, cap)) + 2 for n in nodes.values()])
    ex = _executor(project, tier, executor, slurm, requeues)
    waiting, running = list(nodes.values()), []
    if executor == "slurm":  # the jobs that need no other job, as job arrays of equal time limits
        arrays: dict[tuple, list[Node]] = {}
        for node in waiting:
            if not node.external and not node.needs:
                arrays.setdefault((node.kind, time_limit(node.seconds, cap)), []).append(node)
        for (kind, minutes), group in arrays.items():
            try:
                _submit_array(project, ex, group, minutes, [work(n) for n in group])
            except Exception as exc:  # sbatch refused it (a wrong partition, a limit): a failure like any other
                for node in group:
                    node.outcome, node.error = "failed", f"could not submit its job: {_one_line(exc)}"
    while waiting or running:
        for node in list(waiting):
            ours = sum(not n.external for n in running)
            if _cancel_if_needed(node, nodes) or node.outcome == "failed":
                waiting.remove(node)
                _settle(project, node, done)
                _cancel_dependents(node, nodes)
            elif node.external or executor == "slurm" or (
                    ours < jobs and all(nodes[k].outcome == "ok" for k in node.needs)):
                if not node.external and node.job is None:
                    try:
                        _submit(project, ex, executor, node, nodes, slurm, work(node))
                    except Exception as exc:
                        node.outcome, node.error = "failed", f"could not submit its job: {_one_line(exc)}"
                        continue
                waiting.remove(node)
                running.append(node)
        states = slurm_states([n.job_id for n in running]) if executor == "slurm" else {}
        for node in list(running):
            if _collect(project, node, executor, states):
                running.remove(node)
                _settle(project, node, done)
                if node.outcome != "ok":
                    _cancel_dependents(node, nodes)
        if waiting or running:
            time.sleep(POLL_S)
    return nodes


def job_threads(executor: str, jobs: int, slurm: dict) -> int | None:
    """torch threads of a run job: the job's CPUs on Slurm, the cores shared by ``jobs`` local jobs, and
    whatever the calling process has inline (None)."""
    if executor == "slurm":
        return slurm.get("cpus", 1)
    return max(1, (os.cpu_count() or 1) // max(1, jobs)) if executor == "local" else None


def _executor(project: Path, tier: str, executor: str, slurm: dict, requeues: int):
    import submitit

    folder = project / "outputs" / tier / ".submitit"
    if executor == "local":
        return submitit.LocalExecutor(folder=str(folder))
    # submitit asks sacct for states, which a cluster without accounting refuses, warning at each check; the
    # states here come from squeue and the jobs' own files
    logging.getLogger("submitit").setLevel(logging.ERROR)
    ex = submitit.AutoExecutor(folder=str(folder), cluster="slurm", slurm_max_num_timeout=requeues)
    ex.update_parameters(slurm_partition=slurm.get("partition"), gpus_per_node=slurm.get("gpus", 1),
                         cpus_per_task=slurm.get("cpus", 8))
    return ex


def time_limit(seconds: float, cap: int) -> int:
    """A job's time limit in minutes: its planned time with a margin, at most ``cap``."""
    return max(1, min(cap, math.ceil(MARGIN * seconds / 60) + OVERHEAD_MIN))


def _job_files(project: Path, node: Node) -> list[Path]:
    return [project / r.path / JOB_FILE for r in node.runs] if node.kind == "run" else [node.job_file]


def _submit_array(project: Path, ex, group: list[Node], minutes: int, works: list[tuple]) -> None:
    """Submit ``group`` as one Slurm job array (``submitit``'s batch), each node one of its tasks."""
    for node in group:
        _write_submitted(project, node, "slurm")
    name = f"memlib {len(group)} {group[0].kind}s" if len(group) > 1 else f"memlib {group[0].key}"
    ex.update_parameters(timeout_min=minutes, name=name, slurm_additional_parameters={})
    with ex.batch():
        submitted = [ex.submit(*work) for work in works]
    for node, job in zip(group, submitted):
        node.job, node.job_id = job, str(job.job_id)
        for path in _job_files(project, node):
            write_job(path, job_id=node.job_id, time_limit_min=minutes)


def _write_submitted(project: Path, node: Node, executor: str) -> None:
    for path in _job_files(project, node):  # before the job can start: it counts its starts in these files
        atomic_write_json(path, {"executor": executor, "job": node.key, "submitted": now(), "state": "queued"})


def _submit(project: Path, ex, executor: str, node: Node, nodes: dict, slurm: dict, work: tuple) -> None:
    cap = slurm.get("timeout_min", 24 * 60)
    minutes = time_limit(node.seconds, cap)
    _write_submitted(project, node, executor)
    if executor == "slurm":
        deps = [nodes[k].job_id for k in sorted(node.needs) if nodes[k].outcome is None and nodes[k].job_id]
        extra = {"dependency": "afterok:" + ":".join(deps), "kill-on-invalid-dep": "yes"} if deps else {}
        ex.update_parameters(timeout_min=minutes, name=f"memlib {node.key}", slurm_additional_parameters=extra)
    else:
        ex.update_parameters(timeout_min=cap)
    node.job = ex.submit(*work)
    node.job_id = str(node.job.job_id)
    for path in _job_files(project, node):
        write_job(path, job_id=node.job_id, **({"time_limit_min": minutes} if executor == "slurm" else
                                               {"pid": node.job_id}))


def _collect(project: Path, node: Node, executor: str, states: dict) -> bool:
    """Whether the node's job has ended; if so its outcome is set."""
    if node.outcome == "cancelled":  # by a failure it needed: ended once Slurm has removed it
        return executor != "slurm" or states.get(node.job_id) not in LIVE
    if node.external:
        job = read_job(_job_files(project, node)[0])
        if live_state(job, states if executor == "slurm" else None):
            return False
        node.outcome, node.error = ("ok", None) if job.get("state") == "ok" else ("failed", job.get("error"))
        return True
    job = node.job
    if job.paths.result_pickle.exists() or (executor == "local" and job.done()):
        try:
            node.result, node.outcome = job.result(), "ok"
        except Exception as exc:  # the job raised, or died
            node.outcome, node.error = "failed", _job_error(project, node, exc)
        return True
    if executor == "slurm" and states.get(node.job_id) not in LIVE:
        # its result may land after Slurm lists it as ended (a shared file system shows new files late)
        node.ended_since = node.ended_since or time.time()
        if time.time() - node.ended_since < RESULT_GRACE_S:
            return False
        state = states.get(node.job_id, "and is no longer listed")
        node.outcome, node.error = "failed", f"Slurm job {node.job_id} ended {state} without a result (its log: " \
                                             f"{os.path.relpath(job.paths.stderr, project)})"
        return True
    return False


def _job_error(project: Path, node: Node, exc: Exception) -> str:
    """The error a run wrote in its job file, else the last line of submitit's exception."""
    for r in node.runs:
        err = read_job(project / r.path / JOB_FILE).get("error")
        if err:
            return f"{Path(r.path).name}: {err}"
    text = str(exc).strip()
    return f"job failed: {text.splitlines()[-1] if text else type(exc).__name__}"


def _cancel_if_needed(node: Node, nodes: dict) -> bool:
    failed = sorted(k for k in node.needs if nodes[k].outcome in ("failed", "cancelled"))
    if node.outcome is None and failed:
        node.outcome, node.error = "cancelled", f"not run: it needs {', '.join(failed)}, which did not succeed"
    return node.outcome == "cancelled"


def _cancel_dependents(node: Node, nodes: dict) -> None:
    """Slurm cancels them itself (``--kill-on-invalid-dep``); this also covers a cluster that ignores it."""
    for other in nodes.values():
        if node.key in other.needs and other.outcome is None:
            if other.job is not None:
                try:
                    other.job.cancel(check=False)
                except Exception:  # already gone
                    pass
            other.outcome, other.error = "cancelled", f"not run: it needs {node.key}, which did not succeed"


def _settle(project: Path, node: Node, done) -> None:
    """Write a run's end where its job could not (cancelled, killed), then report the node."""
    if node.kind == "run" and node.outcome != "ok" and not node.external:
        for path in _job_files(project, node):
            if read_job(path).get("state") != "failed":
                path.parent.mkdir(parents=True, exist_ok=True)
                write_job(path, state=node.outcome, error=node.error, ended=now())
    done(node)


def describe_graph(nodes: dict[str, Node], project: Path) -> list[str]:
    """The job graph as lines: each job, what it trains or executes, and the jobs it waits for."""
    runs = [n for n in nodes.values() if n.kind == "run"]
    lines = [f"jobs: {sum(not n.external for n in runs)} to train runs"
             + (f" ({sum(n.external for n in runs)} submitted earlier, waited for)" if any(n.external for n in runs)
                else "") + f", {sum(n.kind == 'notebook' for n in nodes.values())} notebook(s) to execute"]
    for node in nodes.values():
        what = f"{len(node.runs)} runs packed: {', '.join(Path(r.path).name for r in node.runs)}" \
            if len(node.runs) > 1 else ""
        state = f"job {node.job_id}, submitted earlier" if node.external else ""
        after = "" if not node.needs else f"after its {len(node.needs)} run job(s)" if node.kind == "notebook" \
            else f"after {', '.join(sorted(node.needs))}"
        lines.append(f"  {node.key}" + "".join(f"; {t}" for t in (what, state, after) if t))
    return lines
