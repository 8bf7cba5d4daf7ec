"""A run's states and why an attempt ended: enums, named in the output, the event log and the
attempt table (like torch elastic's ``WorkerState``). The cause decides whether a restart may
follow."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any


class RunState(Enum):
    """Where a run is; ``state.json`` in the run directory says it for other shells."""

    STARTING = "starting"  # preflight, cleanup, ray start, join, submit
    RUNNING = "running"  # the job runs, watched
    STOPPING = "stopping"  # the stop path runs
    RESTARTING = "restarting"  # between attempts: diagnostics, waiting for the nodes
    SUCCEEDED = "succeeded"
    SUBMITTED = "submitted"  # --no-wait: the job runs on, unwatched
    FAILED = "failed"
    STOPPED = "stopped"  # deliberately: `glm45-launch stop` / `down`, `ray job stop`
    INTERRUPTED = "interrupted"  # Ctrl-C, SIGTERM, SIGHUP

    @property
    def final(self) -> bool:
        return self in (RunState.SUCCEEDED, RunState.SUBMITTED, RunState.FAILED, RunState.STOPPED,
                        RunState.INTERRUPTED)


class CauseKind(Enum):
    """Why an attempt ended badly."""

    NODE_LOST = "node-lost"  # the health watch: raylet gone, host unreachable, DEAD in Ray's node table
    STALLED = "stalled"  # no driver output for --stall-timeout
    WORKER_START = "worker-start-failed"  # Ray's workers (or the driver) cannot start: a broken environment
    JOB_FAILED = "job-failed"  # the job ended FAILED (the trainer crashed)
    JOB_STOPPED = "job-stopped"  # stopped by someone else (`ray job stop`): never restarted
    STOP_REQUESTED = "stop-requested"  # `glm45-launch stop`/`down` from another shell: never restarted
    LAUNCH_FAILED = "launch-failed"  # bringing the cluster up failed
    PREFLIGHT_FAILED = "preflight-failed"  # a host failed preflight: nothing was started
    PREPARE_FAILED = "prepare-failed"  # `up --prepare`: a download, conversion or copy failed: nothing was started
    NETCHECK_FAILED = "netcheck-failed"  # the collective check before the job failed
    HOST_GONE = "host-gone"  # a lost node did not come back within --host-wait
    INTERRUPTED = "interrupted"  # Ctrl-C or a signal

    @property
    def restartable(self) -> bool:
        return self in (CauseKind.NODE_LOST, CauseKind.STALLED, CauseKind.JOB_FAILED, CauseKind.LAUNCH_FAILED,
                        CauseKind.NETCHECK_FAILED)

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS = {
    CauseKind.NODE_LOST: "node lost", CauseKind.STALLED: "job stalled", CauseKind.WORKER_START: "workers cannot start",
    CauseKind.JOB_FAILED: "job failed", CauseKind.JOB_STOPPED: "job stopped", CauseKind.STOP_REQUESTED: "stopped",
    CauseKind.LAUNCH_FAILED: "launch failed", CauseKind.PREFLIGHT_FAILED: "preflight failed",
    CauseKind.NETCHECK_FAILED: "netcheck failed", CauseKind.HOST_GONE: "node gone",
    CauseKind.INTERRUPTED: "interrupted",
    CauseKind.PREPARE_FAILED: "prepare failed",
}


@dataclass(frozen=True)
class Cause:
    """One failure: its kind, what was seen, and the node it concerns (if one)."""

    kind: CauseKind
    detail: str
    host: str | None = None

    @property
    def restartable(self) -> bool:
        return self.kind.restartable

    def __str__(self) -> str:
        what = self.kind.label
        return f"{what}: {self.host}: {self.detail}" if self.host else f"{what}: {self.detail}"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "host": self.host, "detail": self.detail}


def exc_line(exc: BaseException, limit: int = 200) -> str:
    """An exception as one line (Ray's and paramiko's often span several): its type and the
    first line of its text."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:limit]}" if lines else type(exc).__name__


class Interrupted(KeyboardInterrupt):  # a KeyboardInterrupt: every Ctrl-C path handles it
    """Ctrl-C, SIGTERM or SIGHUP in the main thread: the run stops what it started and exits
    128 + the signal's number."""

    def __init__(self, signum: int, name: str) -> None:
        super().__init__(name)
        self.signum, self.name = signum, name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
