"""A real single-node Slurm cluster on this machine, for the tests: munged, slurmctld and slurmd.

Debian's slurm-wlm and munge (installed by local/setup.sh) run on 127.0.0.1 with a minimal slurm.conf,
their own munge key, free ports and every file under one folder; ``stop()`` ends the three daemons.
Jobs see the cluster through ``SLURM_CONF`` (``cluster.env``), so the machine's own Slurm settings,
if any, are untouched.
"""

import os
import pathlib
import shutil
import signal
import socket
import subprocess
import time

COMMANDS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "sinfo")


def _free_ports(count: int) -> list:
    """``count`` distinct free ports (each probe held open until all are chosen)."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


class SlurmUnavailable(RuntimeError):
    """Slurm cannot start here (what is missing or what failed, with the daemon's log)."""


class SlurmCluster:
    def __init__(self, root: pathlib.Path, cpus: int = 2):
        self.root = pathlib.Path(root)
        if any(c.isspace() for c in str(self.root)) or len(str(self.root)) > 80:
            # slurm.conf has no quoting, and munge's socket path must fit a Unix socket address.
            raise ValueError(f"the cluster's folder must be a short path without spaces, got {str(self.root)!r}")
        self.cpus = cpus
        self.conf = self.root / "slurm.conf"
        self.socket = self.root / "munge" / "munge.socket"
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))

    def start(self, timeout: float = 60.0) -> "SlurmCluster":
        missing = [name for name in COMMANDS if shutil.which(name) is None]
        if missing:
            raise SlurmUnavailable(f"not installed: {', '.join(missing)} (local/setup.sh installs slurm-wlm and munge)")
        if os.geteuid() != 0:
            raise SlurmUnavailable("slurmd must run as root to start jobs, and this process is not root")
        munge = self.root / "munge"
        for folder in (munge, self.root / "state", self.root / "spool", self.root / "log"):
            folder.mkdir(parents=True, exist_ok=True)
        munge.chmod(0o700)
        key = munge / "munge.key"
        self._run(["mungekey", "--create", f"--keyfile={key}"])
        key.chmod(0o600)
        self._run(["munged", "--force", f"--key-file={key}", f"--socket={self.socket}",
                   f"--pid-file={munge / 'munged.pid'}", f"--log-file={munge / 'munged.log'}",
                   f"--seed-file={munge / 'munged.seed'}"], log=munge / "munged.log")
        self.conf.write_text(self._slurm_conf())
        self._run(["slurmctld", "-f", str(self.conf)], log=self.root / "log" / "slurmctld.log")
        self._run(["slurmd", "-f", str(self.conf), "-N", "localhost"], log=self.root / "log" / "slurmd.log")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = subprocess.run(["sinfo", "--noheader", "--format=%T"], env=self.env, capture_output=True, text=True)
            if state.returncode == 0 and state.stdout.strip() == "idle":
                return self
            time.sleep(0.5)
        self.stop()
        raise SlurmUnavailable(f"the node did not become idle in {timeout:.0f} s: {self._tail(self.root / 'log' / 'slurmd.log')}")

    def stop(self) -> None:
        for pid_file in ("slurmd.pid", "slurmctld.pid", "munge/munged.pid"):
            path = self.root / pid_file
            try:
                pid = int(path.read_text().strip())
            except (OSError, ValueError):
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(100):  # slurmd waits for nothing; let each go before the next
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)

    def _slurm_conf(self) -> str:
        root = self.root
        controller_port, node_port = _free_ports(2)
        return "\n".join([
            "ClusterName=espnet_amortized_test",
            "SlurmctldHost=localhost(127.0.0.1)",
            f"SlurmctldPort={controller_port}",
            f"SlurmdPort={node_port}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.socket}",
            "SlurmUser=root",
            "SlurmdUser=root",
            f"StateSaveLocation={root / 'state'}",
            f"SlurmdSpoolDir={root / 'spool'}",
            f"SlurmctldPidFile={root / 'slurmctld.pid'}",
            f"SlurmdPidFile={root / 'slurmd.pid'}",
            f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={root / 'log' / 'slurmd.log'}",
            # No cgroups in a container: processes tracked by their parents, tasks not bound.
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "SchedulerType=sched/backfill",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            "MpiDefault=none",
            "ReturnToService=2",
            f"NodeName=localhost NodeAddr=127.0.0.1 CPUs={self.cpus} State=UNKNOWN",
            # Jobs may share the node's CPUs, as the recipe's side-by-side jobs share them locally.
            "PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4",
            "",
        ])

    def _run(self, command, log: pathlib.Path = None) -> None:
        result = subprocess.run(command, env=self.env, capture_output=True, text=True)
        if result.returncode != 0:
            self.stop()
            detail = result.stderr.strip() or (self._tail(log) if log else "")
            raise SlurmUnavailable(f"{command[0]} exited {result.returncode}: {detail}")

    @staticmethod
    def _tail(path: pathlib.Path, lines: int = 10) -> str:
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return f"(no {path})"
