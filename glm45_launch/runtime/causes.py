"""Why a job attempt ended badly: one typed cause, named in the output, the event log and
the attempt table; it decides whether a restart may follow."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

NODE_LOST = "node-lost"  # the health watch: raylet gone, host unreachable, DEAD in Ray's node table
STALLED = "stalled"  # no driver output for --stall-timeout
JOB_FAILED = "job-failed"  # the job ended FAILED (the trainer crashed)
JOB_STOPPED = "job-stopped"  # stopped by someone else (`glm45-launch stop`, `ray job stop`): never restarted
LAUNCH_FAILED = "launch-failed"  # bringing the cluster up again failed (a restart's launch)
HOST_GONE = "host-gone"  # a lost node did not come back within --host-wait


@dataclass(frozen=True)
class Cause:
    """One failure: its kind, what was seen, and the node it concerns (if one)."""

    kind: str
    detail: str
    host: str | None = None

    @property
    def restartable(self) -> bool:
        return self.kind in (NODE_LOST, STALLED, JOB_FAILED, LAUNCH_FAILED)

    def __str__(self) -> str:
        what = {NODE_LOST: "node lost", STALLED: "job stalled", JOB_FAILED: "job failed",
                JOB_STOPPED: "job stopped", LAUNCH_FAILED: "launch failed", HOST_GONE: "node gone"}[self.kind]
        return f"{what}: {self.host}: {self.detail}" if self.host else f"{what}: {self.detail}"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "host": self.host, "detail": self.detail}


def exc_line(exc: BaseException, limit: int = 200) -> str:
    """An exception as one line (Ray's and paramiko's often span several): its type and the
    first line of its text."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:limit]}" if lines else type(exc).__name__


def job_cause(seen: Cause | None, job_id: str | None, status: str | None, reason: str) -> Cause:
    """Why a job failed: what the health watch saw (``seen``), else what Ray says of it."""
    if seen is not None:
        return seen
    if status == "STOPPED":
        return Cause(JOB_STOPPED, f"job {job_id} was stopped (ray job stop / glm45-launch stop)")
    if status is None:
        return Cause(JOB_FAILED, f"not submitted ({reason or 'no job id'})")
    return Cause(JOB_FAILED, f"job {job_id} ended {status}")
