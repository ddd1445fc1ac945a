"""The batch on a real Slurm (tests/slurm_cluster.py starts one on localhost): one job per run, ``afterok``
dependencies, notebooks that only render, no duplicates while jobs are queued, and a run whose job is
signalled mid-way requeued and resumed to the metrics of an uninterrupted run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from memlib.cluster import JOB_FILE, read_job
from memlib.data import find_offline_cifar10
from memlib.jobs import build_graph, run_graph
from memlib.plan import NotebookPlan, RunPlan, plan_tier
from memlib.reproduce import run_batch
from memlib.runs import read_metrics, run_dir_for
from memlib.train import train
from slurm_cluster import SlurmCluster, missing

ROOT = Path(__file__).resolve().parent.parent
TIMING = ("time", "time_train", "time_eval")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    why = missing()
    if why:
        pytest.skip(why)
    with SlurmCluster(tmp_path_factory.mktemp("slurm")) as c:
        yield c


@pytest.fixture
def project(cluster, tmp_path, monkeypatch):
    """A copy of the project's sources (its own outputs), with the cluster's environment, which jobs inherit."""
    data = find_offline_cifar10()
    if data is None:
        pytest.skip("the offline CIFAR-10 copy (shared/data/cifar10-jpeg) is not present")
    copy = tmp_path / "project"
    for name in ("memlib", "notebooks", "params", "benchmarks"):
        shutil.copytree(ROOT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (ROOT / "data").mkdir(exist_ok=True)
    (copy / "data").symlink_to(ROOT / "data")  # the decoded-image cache, shared
    for key, value in {**cluster.env, "MEMLIB_CIFAR10_JPEG": str(data), "OMP_NUM_THREADS": "1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(copy)
    return copy


def _slurm(cpus: int = 1, minutes: int = 10) -> dict:
    return {"partition": "debug", "gpus": 0, "cpus": cpus, "timeout_min": minutes}


def test_the_smoke_tier_runs_as_one_job_per_run_after_its_dependencies(project):
    only = ["01_introduction", "04_generalization"]  # 04: runs started from another run's checkpoint
    plans = plan_tier(project, "smoke", only)
    runs = {r.path: r for nb in plans for r in nb.runs}
    lines = []
    _, statuses = run_batch("smoke", only=only, executor="slurm", slurm=_slurm(), project=project, log=lines.append)
    assert [s["ok"] for s in statuses] == [True, True], statuses
    assert f"jobs: {len(runs)} to train runs, 2 notebook(s) to execute" in lines
    jobs = {path: read_job(project / path / JOB_FILE) for path in runs}
    assert all(j["executor"] == "slurm" and j["state"] == "ok" and j["starts"] == 1 for j in jobs.values())
    assert len({j["job_id"] for j in jobs.values()}) == len(runs)  # one job per run
    students = [p for p, r in runs.items() if r.needs]
    assert students
    for path in students:  # started only once the jobs of the runs it needs had ended well
        for need in runs[path].needs:
            assert jobs[path]["started"] >= jobs[need]["ended"]
    for s in statuses:  # the notebook jobs rendered: they trained nothing
        assert s["training_seconds"] == 0.0 and read_job(project / "outputs/smoke/.jobs" /
                                                         f"{s['notebook']}.json")["state"] == "ok"
    again = plan_tier(project, "smoke", only)
    assert {r.action for nb in again for r in nb.runs} == {"reuse"}


def test_a_second_batch_while_jobs_are_queued_submits_no_duplicates(cluster, project):
    command = [sys.executable, "-m", "memlib", "reproduce", "--tier", "smoke", "--only", "01_introduction",
               "--executor", "slurm", "--slurm-partition", "debug", "--slurm-gpus", "0", "--slurm-cpus", "1"]
    node = cluster.host
    cluster.run("scontrol", "update", f"nodename={node}", "state=drain", "reason=test")
    first = subprocess.Popen(command, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        runs = plan_tier(project, "smoke", ["01_introduction"])[0].runs
        deadline = time.time() + 120
        while len(_queued(cluster)) < len(runs) + 1 and time.time() < deadline:  # its runs and its notebook
            time.sleep(0.5)
        queued = _queued(cluster)
        assert len(queued) == len(runs) + 1, queued
        planned = plan_tier(project, "smoke", ["01_introduction"])[0].runs
        assert {(r.job, r.action) for r in planned} == {("queued", "wait")}
        second = subprocess.Popen(command, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  env={**os.environ, "PYTHONUNBUFFERED": "1"})
        lines: list[str] = []  # it plans, finds the queued jobs and says it waits for them (slow on a busy machine)
        reader = threading.Thread(target=lambda: lines.extend(iter(second.stdout.readline, "")), daemon=True)
        reader.start()
        deadline = time.time() + 180
        while not any("waited for" in line for line in lines) and second.poll() is None and time.time() < deadline:
            time.sleep(0.5)
        time.sleep(5)  # a duplicate submission would come right after the plan
        assert _queued(cluster) == queued  # nothing more was submitted
        second.terminate()
        second.wait(timeout=30)
        reader.join(timeout=10)
        out = "".join(lines)
        assert "2 submitted earlier, waited for" in out, out
    finally:
        cluster.run("scontrol", "update", f"nodename={node}", "state=resume")
    out = first.communicate(timeout=300)[0]
    assert first.returncode == 0, out
    assert {r.state for r in plan_tier(project, "smoke", ["01_introduction"])[0].runs} == {"finished"}


def _queued(cluster) -> list[str]:
    return sorted(cluster.run("squeue", "--noheader", "--array", "--states=PENDING,RUNNING", "--format=%i").split())


def test_a_signalled_run_is_requeued_and_resumes_to_the_same_metrics(cluster, project, tiny_cfg, tmp_path,
                                                                     one_thread):
    values = dict(epochs=8, train_subset=120, test_subset=60, lr_milestones=[6])
    cfg = tiny_cfg(out_dir=str(project / "outputs" / "smoke" / "runs"), **values)
    rel = os.path.relpath(run_dir_for(cfg)[0], project)
    plan = RunPlan(rel, "missing", "train", epochs=cfg.epochs, flops=1e9, cfg=cfg)
    nodes = build_graph(project, "smoke", [NotebookPlan("nb", True, [plan])], rate=1e9)
    del nodes["notebook nb"]
    import threading

    result = {}
    thread = threading.Thread(target=lambda: result.update(run_graph(project, "smoke", nodes, None, "slurm",
                                                                     slurm=_slurm())))
    thread.start()
    run_dir = project / rel
    deadline = time.time() + 120
    while len(read_metrics(run_dir)) < 2 and time.time() < deadline:
        time.sleep(0.2)
    assert len(read_metrics(run_dir)) >= 2, "the run did not start"
    job_id = read_job(run_dir / JOB_FILE)["job_id"]
    cluster.run("scancel", "--signal=USR2", job_id)  # as on preemption, or before a time limit
    thread.join(timeout=300)
    job = read_job(run_dir / JOB_FILE)
    assert job["state"] == "ok" and job["starts"] == 2, job  # requeued once, resumed to its end
    assert len(read_metrics(run_dir)) == cfg.epochs

    whole = train(tiny_cfg(out_dir=str(tmp_path / "uninterrupted"), **values))
    untimed = [{k: v for k, v in m.items() if k not in TIMING} for m in read_metrics(run_dir)]
    assert untimed == [{k: v for k, v in m.items() if k not in TIMING} for m in whole.metrics]


def test_a_failed_run_cancels_only_the_jobs_that_need_it(project, tiny_cfg, tmp_path, one_thread):
    from test_jobs import _plan

    out = project / "outputs" / "smoke" / "runs"
    broken = tiny_cfg(out_dir=str(out), data_source="torchvision", download=False, data_dir=str(tmp_path / "none"))
    teacher = _plan(project, broken)
    student = _plan(project, tiny_cfg(out_dir=str(out), epochs=1, method="kd_swa", swa_start=1,
                                      kd_teacher=str(run_dir_for(broken)[0] / "best.pt")), needs=[teacher.path])
    alone = _plan(project, tiny_cfg(out_dir=str(out), epochs=1))
    nodes = build_graph(project, "smoke", [NotebookPlan("nb", True, [teacher, student, alone])], rate=1e9)
    del nodes["notebook nb"]
    run_graph(project, "smoke", nodes, None, "slurm", slurm=_slurm())
    jobs = {r.path: read_job(project / r.path / JOB_FILE) for r in (teacher, student, alone)}
    assert jobs[teacher.path]["state"] == "failed" and "torchvision" in jobs[teacher.path]["error"]
    assert jobs[student.path]["state"] == "cancelled" and not jobs[student.path].get("starts")  # never started
    assert jobs[alone.path]["state"] == "ok" and read_metrics(project / alone.path)


def test_a_job_slurm_refuses_is_a_failure_with_sbatchs_reason(project, tiny_cfg):
    from test_jobs import _plan

    run = _plan(project, tiny_cfg(out_dir=str(project / "outputs" / "smoke" / "runs"), epochs=1))
    nodes = build_graph(project, "smoke", [NotebookPlan("nb", True, [run])], rate=1e9)
    run_graph(project, "smoke", nodes, None, "slurm", slurm={**_slurm(), "partition": "no-such-partition"})
    node = nodes[f"run {Path(run.path).name}"]
    assert node.outcome == "failed" and "could not submit its job" in node.error and "partition" in node.error
    assert nodes["notebook nb"].outcome == "cancelled"
    assert read_job(project / run.path / JOB_FILE)["state"] == "failed"
