"""Jobs as the folders know them: which job trains a run (or executes a notebook), and whether it still lives.

A submitted job leaves a small JSON file where its work lands (``<run folder>/.job.json``, or
``outputs/<tier>/.jobs/<notebook>.json``): the executor, the job id, the submission time, how often the job
started, and at its end ``ok`` or ``failed`` with the error. A second ``reproduce`` reads these files: a job
that Slurm still lists (``squeue``), or a local process still alive, is not submitted again.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from memlib.io import atomic_write_json, read_json

JOB_FILE = ".job.json"
LIVE = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING",
        "SUSPENDED", "PREEMPTED", "STAGE_OUT", "SIGNALING")  # Slurm states of a job that has not ended


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def read_job(path: str | Path) -> dict:
    """The job file at ``path`` ({} when there is none, or it is damaged)."""
    job = read_json(Path(path), {})
    return job if isinstance(job, dict) else {}


def write_job(path: str | Path, **values) -> dict:
    """Update the job file at ``path`` with ``values`` (atomically) and return it."""
    job = {**read_job(path), **values}
    atomic_write_json(Path(path), job)
    return job


def slurm_states(job_ids: list[str]) -> dict[str, str]:
    """{job id: Slurm state} of the jobs Slurm still knows (``squeue --states=all``; finished jobs stay listed for
    the cluster's ``MinJobAge``). Empty where Slurm's commands are not installed."""
    ids = sorted({str(j) for j in job_ids if j})
    if not ids or shutil.which("squeue") is None:
        return {}
    done = subprocess.run(["squeue", "--noheader", "--array", "--states=all", "--format=%i %T", "--jobs",
                           ",".join(ids)],
                          capture_output=True, text=True)
    states = {}
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            states[parts[0]] = parts[1]
    return states


def _pid_alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def live_state(job: dict, states: dict | None = None) -> str | None:
    """``queued`` or ``running`` when the job of this job file has not ended (asking Slurm, or the local
    process), else None. ``states``: Slurm's states already asked for (``slurm_states``)."""
    if not job.get("job_id") or job.get("state") in ("ok", "failed"):
        return None
    if job.get("executor") == "slurm":
        state = (states if states is not None else slurm_states([job["job_id"]])).get(str(job["job_id"]))
        if state not in LIVE:
            return None
        return "running" if state in ("RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT") else "queued"
    if job.get("executor") == "local" and job.get("pid") and _pid_alive(job["pid"]):
        return "running" if job.get("starts") else "queued"
    return None


def partition_minutes(partition: str | None) -> int | None:
    """The time limit of a Slurm partition in minutes (``sinfo``), None when it has none or is unknown."""
    if shutil.which("sinfo") is None:
        return None
    args = ["sinfo", "--noheader", "--format=%l"] + (["--partition", partition] if partition else [])
    out = subprocess.run(args, capture_output=True, text=True).stdout.split()
    limits = [m for m in (parse_minutes(s) for s in out) if m]
    return min(limits) if limits else None


def parse_minutes(text: str) -> int | None:
    """Slurm's time format ([days-]hours:minutes:seconds, minutes:seconds, or minutes) in minutes; None for
    ``infinite`` and what does not parse."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not m:
        return None
    days, a, b, c = (int(g) if g else None for g in m.groups())
    if c is not None:  # h:m:s
        return (days or 0) * 1440 + a * 60 + b + (c > 0)
    if days is not None:  # d-h[:m]
        return days * 1440 + a * 60 + (b or 0)
    if b is not None:  # m:s
        return a + (b > 0)
    return a
