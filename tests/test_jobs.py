"""The batch as a graph of jobs: one per run after the runs it needs, notebooks after their runs; packing; a
failure cancels only what needs it; a live job is not submitted twice; time limits. (A real Slurm runs the
graph in tests/test_slurm.py.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from memlib.cluster import JOB_FILE, parse_minutes, read_job, write_job
from memlib.jobs import TrainRuns, build_graph, describe_graph, run_graph, time_limit
from memlib.plan import NotebookPlan, RunPlan, plan_tier
from memlib.reproduce import notebooks, write_report
from memlib.runs import run_dir_for, run_state

ROOT = Path(__file__).resolve().parent.parent


def test_the_smoke_tier_is_one_job_per_run_after_what_it_needs():
    plans = plan_tier(ROOT, "smoke", notebooks(ROOT, "smoke"))
    runs = {r.path: r for nb in plans for r in nb.runs}
    nodes = build_graph(ROOT, "smoke", plans, rate=1e9, force=True)  # force: every run trains, whatever is here
    run_nodes = {n.runs[0].path: n for n in nodes.values() if n.kind == "run"}
    assert set(run_nodes) == set(runs) and all(len(n.runs) == 1 for n in run_nodes.values())
    order = list(nodes)
    for path, node in run_nodes.items():  # a job waits for exactly the jobs of the runs it starts from or distils
        assert node.needs == {run_nodes[d].key for d in runs[path].needs}
        assert all(order.index(k) < order.index(node.key) for k in node.needs)
    students = [n for n in run_nodes.values() if n.needs]
    assert any("kd_swa" in n.key and len(n.needs) == 2 for n in students)  # KD-SWA: its two teachers
    assert any("init_from" in str(runs[n.runs[0].path].cfg.init_from or "") or runs[n.runs[0].path].cfg.init_from
               for n in students)  # a run started from another's checkpoint
    for nb in plans:  # a notebook waits for all its runs, and nothing else
        assert nodes[f"notebook {nb.name}"].needs == {run_nodes[r.path].key for r in nb.runs}
    lines = describe_graph(nodes, ROOT)
    assert lines[0] == f"jobs: {len(runs)} to train runs, {len(plans)} notebook(s) to execute"

    packed = build_graph(ROOT, "smoke", plans, rate=1e9, runs_per_gpu=4, force=True)
    placed = [r.path for n in packed.values() for r in n.runs]
    assert sorted(placed) == sorted(runs)  # every run in exactly one job
    needed = {d for r in runs.values() for d in r.needs}
    for node in packed.values():
        assert len(node.runs) <= 4
        if len(node.runs) > 1:  # only runs no other run needs are packed: a failure there cancels no run
            assert not {r.path for r in node.runs} & needed
    assert sum(n.kind == "run" for n in packed.values()) < len(runs) / 2


def _plan(project: Path, cfg, needs=()) -> RunPlan:
    rel = os.path.relpath(run_dir_for(cfg)[0], project)
    return RunPlan(rel, "missing", "train", epochs=cfg.epochs, needs=list(needs), flops=1e9, cfg=cfg)


def _notebook_fn(project, name, tier, force, records_only):  # the notebook job's work, here a stand-in
    return {"notebook": name, "ok": True, "error": None}


def test_a_failed_run_cancels_only_what_needs_it_and_the_report_names_it(tiny_cfg, tmp_path, one_thread):
    project = tmp_path / "project"
    out = project / "outputs" / "smoke" / "runs"
    (out.parent / "status").mkdir(parents=True)
    broken = tiny_cfg(out_dir=str(out), data_source="torchvision", download=False, data_dir=str(tmp_path / "none"))
    teacher = _plan(project, broken)
    student = _plan(project, tiny_cfg(out_dir=str(out), epochs=1, method="kd_swa", swa_start=1,
                                      kd_teacher=str(run_dir_for(broken)[0] / "best.pt")), needs=[teacher.path])
    alone = _plan(project, tiny_cfg(out_dir=str(out), epochs=1))
    plans = [NotebookPlan("a_needs_the_student", True, [teacher, student]), NotebookPlan("b_alone", True, [alone])]
    nodes = build_graph(project, "smoke", plans, rate=1e9)
    ended = []
    run_graph(project, "smoke", nodes, _notebook_fn, "inline", done=lambda n: ended.append((n.key, n.outcome)))
    outcome = dict(ended)
    key = {r.path: f"run {Path(r.path).name}" for r in (teacher, student, alone)}
    assert outcome[key[teacher.path]] == "failed" and "torchvision" in nodes[key[teacher.path]].error
    assert outcome[key[student.path]] == "cancelled" and key[teacher.path] in nodes[key[student.path]].error
    assert outcome["notebook a_needs_the_student"] == "cancelled"
    assert outcome[key[alone.path]] == "ok" and outcome["notebook b_alone"] == "ok"
    assert run_state(project / alone.path)[0] == "finished" and run_state(project / student.path)[0] == "missing"
    teacher_job = read_job(project / teacher.path / JOB_FILE)
    assert teacher_job["state"] == "failed" and teacher_job["starts"] == 1 and "torchvision" in teacher_job["error"]
    assert read_job(project / student.path / JOB_FILE)["state"] == "cancelled"
    report = write_report(project, "smoke").read_text()
    assert f"| {Path(teacher.path).name} |" in report and teacher_job["error"].replace("|", "/") in report
    assert f"| {Path(alone.path).name} |" not in report


def test_a_live_job_is_shown_by_the_plan_and_waited_for_not_submitted_again(tiny_cfg, tmp_path, monkeypatch):
    from memlib import experiments
    from test_plan import _notebook

    project = tmp_path / "project"
    cfg = tiny_cfg(out_dir=str(project / "outputs" / "smoke" / "runs"))
    _notebook(project, "t1_only", "x = 0\n", "{}\n")
    experiments.registered()
    monkeypatch.setattr(experiments, "_REGISTRY", {**experiments._REGISTRY})
    experiments.experiment("t1_only")(lambda p, make: {"run": cfg})
    run_dir = run_dir_for(cfg)[0]
    run_dir.mkdir(parents=True)
    me = str(os.getpid())  # a live process stands for the job's
    write_job(run_dir / JOB_FILE, executor="local", job_id=me, pid=me, starts=1, state="running")

    plans = plan_tier(project, "smoke", ["t1_only"])
    run = plans[0].runs[0]
    assert (run.state, run.job, run.job_id, run.action) == ("missing", "running", me, "wait")
    nodes = build_graph(project, "smoke", plans, rate=1e9)
    node = nodes[f"run {run_dir.name}"]
    assert node.external and node.job_id == me and nodes["notebook t1_only"].needs == {node.key}
    assert "1 submitted earlier, waited for" in describe_graph(nodes, project)[0]

    write_job(run_dir / JOB_FILE, state="ok")  # a job that has ended is no longer live: the run is planned again
    run = plan_tier(project, "smoke", ["t1_only"])[0].runs[0]
    assert (run.job, run.action) == (None, "train")


@pytest.mark.parametrize("text, minutes", [("30", 30), ("1:30", 2), ("2:00:00", 120), ("1-00:00:00", 1440),
                                           ("2-12", 3600), ("infinite", None), ("UNLIMITED", None)])
def test_slurm_time_limits_parse(text, minutes):
    assert parse_minutes(text) == minutes


def test_a_jobs_time_limit_is_its_planned_time_with_a_margin_under_the_cap():
    assert time_limit(0, 60) == 10  # start-up and evaluation
    assert time_limit(3600, 24 * 60) == 130  # twice an hour, plus 10 min
    assert time_limit(100 * 3600, 24 * 60) == 24 * 60  # capped: the run goes on in requeued jobs


def test_packed_runs_train_at_once_in_separate_processes(tiny_cfg, tmp_path):
    project = tmp_path / "project"
    out = project / "outputs" / "smoke" / "runs"
    a, b = (_plan(project, tiny_cfg(out_dir=str(out), epochs=1, seed=s)) for s in (0, 1))
    results = TrainRuns()(str(project), [(r.path, r.cfg.to_dict()) for r in (a, b)], threads=1, quiet=True)
    assert [r["run"] for r in results] == [a.path, b.path]
    jobs = [read_job(project / r.path / JOB_FILE) for r in (a, b)]
    assert all(j["state"] == "ok" and j["starts"] == 1 for j in jobs)
    assert len({j["process"] for j in jobs} | {os.getpid()}) == 3
    assert all(run_state(project / r.path)[0] == "finished" for r in (a, b))
