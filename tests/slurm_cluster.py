"""A real single-node Slurm cluster on localhost, for tests.

``SlurmCluster(root)`` runs munged, slurmctld and slurmd (Debian's ``slurm-wlm`` and ``munge`` packages) with
every file they use in ``root``: config, munge key and socket, state, spool, pid and log files. Nothing is
written to /etc or /var, nothing goes through system services, and the ports are chosen free at start, so
several clusters (or a real Slurm) can coexist. Clients reach it through ``env`` (``SLURM_CONF`` and ``PATH``)::

    with SlurmCluster(tmp_path) as cluster:
        job_id = cluster.run("sbatch", "--parsable", "--wrap", "true")
"""

from __future__ import annotations

import ctypes
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "slurmstepd")
CLIENTS = ("sbatch", "srun", "squeue", "sinfo", "scontrol", "scancel")
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def _which(name: str) -> str | None:
    return shutil.which(name, path=_SEARCH_PATH)


def missing() -> str | None:
    """None when every program the cluster needs is installed, else a sentence naming the missing ones."""
    absent = [name for name in DAEMONS + CLIENTS if _which(name) is None]
    if not absent:
        return None
    return f"a local Slurm cluster needs {', '.join(absent)} (Debian: apt-get install slurm-wlm munge)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the daemon, before exec: get SIGTERM when the test process dies, so no daemon outlives it."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


class SlurmCluster:
    partition = "debug"
    start_timeout_s = 30.0

    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self.conf = self.root / "slurm.conf"
        self.host = socket.gethostname().split(".")[0]
        client_dirs = dict.fromkeys(str(Path(_which(c) or "/usr/bin").parent) for c in CLIENTS)
        self.env = {"SLURM_CONF": str(self.conf),
                    "PATH": os.pathsep.join([*client_dirs, os.environ.get("PATH", "")])}
        self._daemons: dict[str, subprocess.Popen] = {}

    def __enter__(self) -> SlurmCluster:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def run(self, *args: str, check: bool = True, timeout: float = 30) -> str:
        """Runs a Slurm client command (``run("squeue", "-h")``) against this cluster; returns its stdout."""
        result = subprocess.run(args, env={**os.environ, **self.env}, capture_output=True, text=True,
                                timeout=timeout)
        if check and result.returncode:
            raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
        return result.stdout

    def _slurm_conf(self) -> str:
        r = self.root
        return f"""\
ClusterName=test
SlurmctldHost={self.host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
# cred_expire: a requeued job may start again only after this many seconds (default 120)
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={r}/munge.socket,cred_expire=5
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/slurmctld.log
SlurmdLogFile={r}/slurmd.log
PlugStackConfig={r}/plugstack.conf
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MinJobAge=600
KillWait=5
InactiveLimit=0
JobRequeue=1
SchedulerType=sched/backfill
# backfill skips cycles in which nothing changed: a job that only became eligible (a requeued one) waits for
# the main loop's sched_interval (default 60 s)
SchedulerParameters=bf_interval=1,sched_interval=1
SlurmdParameters=config_overrides
NodeName={self.host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} State=UNKNOWN
PartitionName={self.partition} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""

    def start(self) -> None:
        """Writes the config and munge key into root, starts the daemons, waits until the node is idle."""
        for folder in ("state", "spool"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        self.conf.write_text(self._slurm_conf())
        (self.root / "plugstack.conf").write_text("")
        key = self.root / "munge.key"
        key.touch(mode=0o600)
        key.write_bytes(os.urandom(1024))
        r = self.root
        if len(f"{r}/munge.socket") > 100:  # a Unix socket's path has at most 107 bytes
            raise ValueError(f"Slurm test cluster: root {r} is too long a path for munged's socket")
        self._spawn("munged", "--foreground", "--force", f"--socket={r}/munge.socket", f"--key-file={key}",
                    f"--pid-file={r}/munged.pid", f"--log-file={r}/munged.log", f"--seed-file={r}/munged.seed")
        self._wait(lambda: (r / "munge.socket").exists(), "munged to open its socket")
        self._spawn("slurmctld", "-D", "-f", str(self.conf))
        self._spawn("slurmd", "-D", "-f", str(self.conf), "-N", self.host)
        self._wait(lambda: self.run("sinfo", "-h", "-o", "%t", check=False).strip() == "idle",
                   "the node to be idle")

    def _spawn(self, name: str, *args: str) -> None:
        with open(self.root / f"{name}.out", "wb") as out:
            self._daemons[name] = subprocess.Popen([_which(name), *args], stdin=subprocess.DEVNULL, stdout=out,
                                                   stderr=subprocess.STDOUT, env={**os.environ, **self.env},
                                                   start_new_session=True, preexec_fn=_die_with_parent)

    def _wait(self, ready, what: str) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while not ready():
            dead = [f"{n} exited with {p.returncode}" for n, p in self._daemons.items() if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                logs = self.logs()
                self.stop()
                reason = "; ".join(dead) or f"timed out after {self.start_timeout_s:.0f} s"
                raise RuntimeError(f"Slurm test cluster: waiting for {what}: {reason}\n{logs}")
            time.sleep(0.2)

    def logs(self, lines: int = 20) -> str:
        """The last lines of each daemon's log and output file."""
        parts = []
        for path in sorted(self.root.glob("*.log")) + sorted(self.root.glob("*.out")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(parts)

    def stop(self) -> None:
        """Cancels every job, waits for them to end, then stops the daemons (SIGTERM, then SIGKILL)."""
        ctld = self._daemons.get("slurmctld")
        if ctld is not None and ctld.poll() is None:
            self.run("scancel", "--user", getpass.getuser(), check=False)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                active = self.run("squeue", "-h", "-t", "RUNNING,COMPLETING", "-o", "%i", check=False, timeout=5)
                if not active.strip():
                    break
                time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self._daemons.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
