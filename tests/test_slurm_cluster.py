"""The local Slurm test cluster (tests/slurm_cluster.py): batch jobs, dependencies, requeue, and submitit on it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from slurm_cluster import SlurmCluster, missing

if missing():
    pytest.skip(missing(), allow_module_level=True)

FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with SlurmCluster(tmp_path_factory.mktemp("slurm")) as running:
        yield running


@pytest.fixture
def slurm_env(cluster, monkeypatch):
    """For in-process code (submitit) that calls sbatch, squeue, scontrol and scancel. The jobs inherit the
    environment: PYTHONPATH lets them unpickle the functions and classes defined here."""
    for name, value in cluster.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(Path(__file__).parent),
                                                                  os.environ.get("PYTHONPATH")])))
    return cluster


def sbatch(cluster: SlurmCluster, folder: Path, *args: str) -> str:
    return cluster.run("sbatch", "--parsable", f"--chdir={folder}", f"--output={folder}/%j.out", *args).strip()


def state(cluster: SlurmCluster, job_id: str) -> str:
    return cluster.run("squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T").strip()


def wait_until(condition, timeout: float = 60, what: str = "a condition"):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.2)
    return result


def wait_finished(cluster: SlurmCluster, job_id: str, timeout: float = 60) -> str:
    """Polls squeue until the job has left the queue (finished jobs stay listed for MinJobAge); its last state."""
    return wait_until(lambda: (s := state(cluster, job_id)) in FINISHED and s, timeout, f"job {job_id} to finish")


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_batch_job_runs(cluster, tmp_path):
    job = sbatch(cluster, tmp_path, "--wrap", f"echo hello > {tmp_path}/hello.txt")
    assert wait_finished(cluster, job) == "COMPLETED"
    assert lines(tmp_path / "hello.txt") == ["hello"]
    assert cluster.run("sinfo", "-h", "-o", "%P %t").split() == [f"{cluster.partition}*", "idle"]


def test_dependencies(cluster, tmp_path):
    first = sbatch(cluster, tmp_path, "--wrap", f"sleep 2; echo first > {tmp_path}/first.txt")
    second = sbatch(cluster, tmp_path, f"--dependency=afterok:{first}", "--wrap",
                    f"cat {tmp_path}/first.txt > {tmp_path}/second.txt")
    failing = sbatch(cluster, tmp_path, "--wrap", "exit 1")
    never = sbatch(cluster, tmp_path, f"--dependency=afterok:{failing}", "--kill-on-invalid-dep=yes", "--wrap",
                   f"echo never > {tmp_path}/never.txt")
    assert state(cluster, second) == "PENDING"
    assert wait_finished(cluster, second) == "COMPLETED"
    assert lines(tmp_path / "second.txt") == ["first"]  # it ran after the first had written its file
    assert wait_finished(cluster, failing) == "FAILED"
    assert wait_finished(cluster, never) == "CANCELLED"
    assert not (tmp_path / "never.txt").exists() and not (tmp_path / f"{never}.out").exists()


def test_requeue_restarts_a_running_job(cluster, tmp_path):
    script = tmp_path / "job.sh"
    script.write_text(f"#!/bin/bash\necho started >> {tmp_path}/starts.txt\nsleep 60\n")
    job = sbatch(cluster, tmp_path, str(script))
    wait_until(lambda: lines(tmp_path / "starts.txt"), 30, "the job to start")
    cluster.run("scontrol", "requeue", job)
    # a requeued job may start again after AuthInfo's cred_expire + 1 s (6 s here; 121 s by default)
    wait_until(lambda: len(lines(tmp_path / "starts.txt")) == 2, 30, "the requeued job to start again")
    assert state(cluster, job) == "RUNNING"
    assert "Restarts=1" in cluster.run("scontrol", "show", "job", job)
    cluster.run("scancel", job)
    assert wait_finished(cluster, job) == "CANCELLED"


def add(a, b):
    return a + b


def test_submitit_function(slurm_env, tmp_path):
    submitit = pytest.importorskip("submitit")
    executor = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm")
    executor.update_parameters(slurm_partition=slurm_env.partition, timeout_min=5, gpus_per_node=0, cpus_per_task=1)
    job = executor.submit(add, 2, 3)
    # without accounting, done() only looks for the result pickle: result() would wait forever for a job that died
    wait_until(job.done, 60, "the result pickle")
    assert job.result() == 5
    assert job.state == "UNKNOWN"  # submitit reads the state from sacct, which fails without accounting
    assert wait_finished(slurm_env, job.job_id) == "COMPLETED"


class Resumable:
    """Notes each start in a file and returns how many there were; sleeps on its first start only (the test
    signals it then). Checkpointable: on USR2 submitit calls checkpoint, requeues the job and calls it again."""

    def __init__(self, log: Path, seconds: float):
        self.log, self.seconds = log, seconds

    def __call__(self) -> int:
        with open(self.log, "a") as f:
            f.write("started\n")
        starts = len(lines(self.log))
        if starts == 1:
            time.sleep(self.seconds)
        return starts

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def test_submitit_requeues_a_signalled_checkpointable_job(slurm_env, tmp_path):
    submitit = pytest.importorskip("submitit")
    executor = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm")
    executor.update_parameters(slurm_partition=slurm_env.partition, timeout_min=5, gpus_per_node=0, cpus_per_task=1)
    log = tmp_path / "starts.txt"
    job = executor.submit(Resumable(log, seconds=20))
    wait_until(lambda: lines(log), 30, "the job to start")
    # Without --batch or --full, scancel signals the job's steps but not its batch shell: here the srun step in
    # which submitit's Python runs. (--batch kills the shell and fails the job; --full also hits the shell.)
    slurm_env.run("scancel", "--signal=USR2", job.job_id)
    wait_until(lambda: len(lines(log)) == 2, 30, "the requeued job to start again")
    wait_until(job.done, 30, "the result pickle")
    assert job.result() == 2
    assert "Caught signal SIGUSR2" in job.stderr() and "Requeued job" in job.stdout()
    assert "Restarts=1" in slurm_env.run("scontrol", "show", "job", job.job_id)
