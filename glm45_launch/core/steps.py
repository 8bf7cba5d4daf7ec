"""The steps of a plan: one frozen type per kind, each carrying what its handler needs.

Every command a launch runs, on any host, is a step's ``commands``: the executor has one
handler per ``kind`` and adds nothing inside a command. A step runs on the head (``where ==
HEAD``, the machine the launcher runs on) or on a worker over SSH (``WORKER``: its
``remote_command`` is the one ssh argument).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from glm45_launch.core.quoting import remote_command, shell_command
from glm45_launch.recipes import Argv

HEAD = "head"
WORKER = "worker"
DEFAULT_PARALLEL = 256  # hosts a fan-out runs at once: a rack row in one or two rounds (bench/fanout.py)
JOB_ID = "{job_id}"  # in a stop-job command: the submitted job's id, known only at run time
RUN_DIR = "{run_dir}"  # in a netcheck command: the run directory, known only at run time


def canonical_order(invocations: Iterable[Sequence[str]]) -> list[list[str]]:
    """The order invocations are compared in: head-side commands as they ran, then the
    parallel ssh fan-out sorted by its arguments (the one definition; the recorder uses it too)."""
    argvs = [list(a) for a in invocations]
    head = [a for a in argvs if not a or a[0] != "ssh"]
    return head + sorted((a for a in argvs if a and a[0] == "ssh"), key=lambda a: a[1:])


@dataclass(frozen=True, kw_only=True)
class Step:
    """One step: where it runs, what it runs, and why."""

    kind: ClassVar[str] = "step"
    chained: ClassVar[bool] = False  # the remote command stops at the first failure and keeps cwd and env
    where: str  # HEAD or WORKER
    host: str
    purpose: str
    commands: tuple[Argv, ...] = ()
    env: tuple[tuple[str, str], ...] = ()  # exported before the commands (head side)
    cwd: str | None = None
    ignore_errors: bool = False

    @property
    def remote_command(self) -> str:
        """The single ssh argument of a worker step: the recipe's `` ; ``-joined commands, or
        (``chained``) ``cd CWD && env K=V argv && ...``."""
        return shell_command(self.commands, self.cwd, self.env) if self.chained else remote_command(self.commands)

    def invocations(self, ssh_user: str) -> list[list[str]]:
        """The argv the bash recipe would run for this step."""
        if self.where == WORKER:
            return [["ssh", f"{ssh_user}@{self.host}", self.remote_command]]
        return [list(c) for c in self.commands]

    def payload(self) -> dict[str, Any]:
        """Kind-specific fields for the JSON plan."""
        return {}

    def to_json(self, ssh_user: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind, "where": self.where, "host": self.host, "purpose": self.purpose,
            "commands": [list(c) for c in self.commands],
        }
        if self.where == WORKER:
            out["remote_command"] = self.remote_command
            out["ssh"] = f"{ssh_user}@{self.host}"
        if self.env:
            out["env"] = dict(self.env)
        if self.cwd:
            out["cwd"] = self.cwd
        out["ignore_errors"] = self.ignore_errors
        out.update(self.payload())
        return out


@dataclass(frozen=True, kw_only=True)
class CleanupStep(Step):
    """Stop leftovers of a previous run. ``spare_launcher``: the kill commands (``pkill``,
    ``killall``) never signal the launcher or its ancestors, and ``sleep`` waits only until the
    killed Ray processes are gone. ``guard_ports``: refuse first when a non-Ray service holds
    one of them (the cleanup would not free it)."""

    kind: ClassVar[str] = "cleanup"
    spare_launcher: bool = False
    guard_ports: tuple[tuple[str, int, str], ...] = ()

    def payload(self) -> dict[str, Any]:
        return {"spare_launcher": True} if self.spare_launcher else {}


@dataclass(frozen=True, kw_only=True)
class HeadStartStep(Step):
    """``ray start --head``. ``free_ports``: must be free first (no foreign cluster).
    ``ready_port``: the next steps start once this port answers (the GCS), while this one
    finishes in the background; None: they wait for it to end (the bash order)."""

    kind: ClassVar[str] = "head-start"
    free_ports: tuple[tuple[str, int, str], ...] = ()
    ready_port: int | None = None

    def payload(self) -> dict[str, Any]:
        return {"ready_port": self.ready_port} if self.ready_port else {}


@dataclass(frozen=True, kw_only=True)
class WorkerStartStep(Step):
    """One worker's ssh command: the recipe's cleanup, then ``ray start --address``.
    Consecutive worker steps run in parallel."""

    kind: ClassVar[str] = "worker-start"


@dataclass(frozen=True, kw_only=True)
class HoldStep(Step):
    """Keep one worker's SSH session open while the job runs (for platforms that reap a node
    whose entry process returns): its command blocks reading the session's stdin, which ends
    when the launcher closes the session after the job. Consecutive hold steps run in the
    background, in parallel, from this point of the plan until the job ends."""

    kind: ClassVar[str] = "hold"


@dataclass(frozen=True, kw_only=True)
class JoinStep(Step):
    """Wait (Ray's state API at ``address``) until every host of ``hosts`` is an alive node
    and the cluster has ``gpus`` GPUs."""

    kind: ClassVar[str] = "join"
    hosts: tuple[str, ...] = ()
    gpus: int = 0
    address: str = ""

    def payload(self) -> dict[str, Any]:
        return {"expect": {"hosts": list(self.hosts), "gpus": self.gpus}, "address": self.address}


@dataclass(frozen=True, kw_only=True)
class WriteFileStep(Step):
    """Files the job reads, written on ``host`` (the head, on the shared filesystem)."""

    kind: ClassVar[str] = "write-file"
    files: tuple[tuple[str, str], ...] = ()  # (path, content)

    def payload(self) -> dict[str, Any]:
        return {"files": [{"path": p, "content": c} for p, c in self.files]}


@dataclass(frozen=True, kw_only=True)
class SubmitStep(Step):
    """``ray job submit``: its output names the job id; the job's end is asked at ``address``.
    ``options``: its words up to and including ``--``; ``commands[0]`` is them, then the job's entrypoint."""

    kind: ClassVar[str] = "submit"
    address: str = ""
    no_wait: bool = False
    options: Argv = ()


@dataclass(frozen=True, kw_only=True)
class NetcheckStep(Step):
    """The network check on the head, after the join and before the submit (core/netcheck.py):
    ``config`` (JSON) is written to ``config_path``, then ``commands[0]`` (a Ray driver) runs for
    at most ``timeout_s`` and writes its report to ``out_path``; :data:`RUN_DIR` is filled in at
    run time. The bash recipe runs no such step: it has no invocations."""

    kind: ClassVar[str] = "netcheck"
    config: str = ""
    config_path: str = ""
    out_path: str = ""
    timeout_s: float = 0.0

    def for_run(self, run_dir: str) -> tuple[Argv, ...]:
        return tuple(tuple(w.replace(RUN_DIR, run_dir) for w in c) for c in self.commands)

    def invocations(self, ssh_user: str) -> list[list[str]]:
        return []

    def payload(self) -> dict[str, Any]:
        return {"config_path": self.config_path, "config": json.loads(self.config) if self.config else None,
                "out_path": self.out_path, "timeout_s": self.timeout_s}


@dataclass(frozen=True, kw_only=True)
class StopStep(Step):
    """``ray stop --force`` on one host (teardown after a failure, and ``down``)."""

    kind: ClassVar[str] = "stop"


@dataclass(frozen=True, kw_only=True)
class StopJobStep(Step):
    """``ray job stop``: the job id is filled in at run time (:data:`JOB_ID`)."""

    kind: ClassVar[str] = "stop-job"

    def for_job(self, job_id: str) -> tuple[Argv, ...]:
        return tuple(tuple(job_id if w == JOB_ID else w for w in c) for c in self.commands)


@dataclass(frozen=True, kw_only=True)
class ProbeStep(Step):
    """A read-only command whose exit status answers a question (``status``'s raylet check)."""

    kind: ClassVar[str] = "probe"


@dataclass(frozen=True, kw_only=True)
class PreflightStep(Step):
    """The preflight probe on one host: ``python3 -c PROGRAM CONFIG``, one JSON report line."""

    kind: ClassVar[str] = "preflight"


@dataclass(frozen=True, kw_only=True)
class ConvertStep(Step):
    """One node's ``torchrun`` of the checkpoint conversion; its remote command keeps the
    cwd and env (``cd CWD && env K=V argv``)."""

    kind: ClassVar[str] = "convert"
    chained: ClassVar[bool] = True


@dataclass(frozen=True, kw_only=True)
class ConvertCheckStep(ConvertStep):
    """Exit 0 when the conversion's target is already there."""

    kind: ClassVar[str] = "convert-check"


@dataclass(frozen=True)
class DoneCheck:
    """How a runner knows a step's work is done before it runs: every command of ``commands``
    exits 0 on the step's host (and, with ``quiet``, prints nothing). ``says`` is what that means,
    for the plan and the output."""

    commands: tuple[Argv, ...]
    says: str
    quiet: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"commands": [list(c) for c in self.commands], "quiet": self.quiet, "says": self.says}


@dataclass(frozen=True, kw_only=True)
class PrepareStep(Step):
    """A step of the preparation before the job (downloads, the FP8 copy, the local copies):
    ``commands`` on ``host`` (chained: they stop at the first failure), skipped when ``done`` holds
    there first. ``subject`` is what it makes (a repo, a directory), for a one-line error."""

    kind: ClassVar[str] = "prepare"
    chained: ClassVar[bool] = True
    subject: str = ""
    done: DoneCheck | None = None

    def payload(self) -> dict[str, Any]:
        return {"subject": self.subject, "done": self.done.to_json() if self.done else None}


# -- around the job: the health watch, diagnostics, the job's logs (core/operations.py builds them) --


@dataclass(frozen=True, kw_only=True)
class HealthCheckStep(Step):
    """While the job runs, on one node: is its raylet running? Exit 0: yes; 1: no raylet;
    no exit (cannot connect, no answer in time): unreachable."""

    kind: ClassVar[str] = "health-check"


@dataclass(frozen=True, kw_only=True)
class DiagnoseStep(Step):
    """After a failure, on one node: ``python3 -c PROGRAM CONFIG`` prints the tails of Ray's
    logs, of ``dmesg`` (Xid errors) and ``nvidia-smi``, bounded, then one summary line.
    ``program`` names the program file (its text is ``commands[0][2]``)."""

    kind: ClassVar[str] = "diagnose"
    program: str = "diagnose.py"

    def to_json(self, ssh_user: str) -> dict[str, Any]:
        out = super().to_json(ssh_user)
        # The program's text is shown by name (like a log line): plan output stays readable.
        out["commands"] = [[f"<{self.program}>" if i == 2 and c[:2] == ("python3", "-c") else w
                            for i, w in enumerate(c)] for c in self.commands]
        out.pop("remote_command", None)
        out["program"] = self.program
        return out


@dataclass(frozen=True, kw_only=True)
class JobLogsStep(Step):
    """``ray job logs``: the job's driver log (:data:`JOB_ID` filled in at run time)."""

    kind: ClassVar[str] = "job-logs"

    def for_job(self, job_id: str, follow: bool = False) -> tuple[Argv, ...]:
        extra = ("--follow",) if follow else ()
        return tuple(tuple(job_id if w == JOB_ID else w for w in c) + extra for c in self.commands)
