"""Questions asked of a Ray cluster: who joined, how a job ended, which jobs exist.

Ray's own state API and job SDK, through the head's job server address (``ray[default]``).
:class:`RayClient` is the real :class:`~.interfaces.RayQueries`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from glm45_launch.runtime.interfaces import JobInfo, NodeInfo

T = TypeVar("T")
JOB_SDK_TIMEOUT_S = 10.0  # the job SDK has no timeout of its own: a server that accepts and never answers


class JobServerTimeout(TimeoutError):
    """The job server took a request and did not answer in time."""


def bounded(seconds: float, address: str, call: Callable[[], T]) -> T:
    """``call()``'s result, or :class:`JobServerTimeout` after ``seconds`` (the request is left to
    a daemon thread: the job SDK's ``requests`` calls cannot be cancelled)."""
    out: list[T] = []
    err: list[BaseException] = []

    def run() -> None:
        try:
            out.append(call())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            err.append(exc)

    worker = threading.Thread(target=run, name="ray-job-sdk", daemon=True)
    worker.start()
    worker.join(seconds)
    if err:
        raise err[0]
    if not out:
        raise JobServerTimeout(f"the Ray job server at {address} did not answer within {seconds:g}s")
    return out[0]


class RayClient:
    """The real :class:`~.interfaces.RayQueries` (imports Ray only when asked)."""

    def __init__(self, timeout_s: int = 5, job_sdk_timeout_s: float = JOB_SDK_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self.job_sdk_timeout_s = job_sdk_timeout_s

    def nodes(self, address: str) -> list[NodeInfo]:
        """Nodes the cluster knows, from Ray's state API (raises while the dashboard starts)."""
        from ray.util.state import list_nodes

        found = list_nodes(address=address, timeout=self.timeout_s, limit=10000, raise_on_missing_output=False)
        return [
            NodeInfo(ip=n.node_ip, alive=n.state == "ALIVE", gpus=float((n.resources_total or {}).get("GPU", 0)),
                     is_head=bool(n.is_head_node))
            for n in found
        ]

    def job_status(self, address: str, job_id: str) -> str:
        """SUCCEEDED / FAILED / STOPPED / RUNNING / PENDING, from the job SDK."""
        from ray.job_submission import JobSubmissionClient

        return bounded(self.job_sdk_timeout_s, address,
                       lambda: str(JobSubmissionClient(address).get_job_status(job_id).value))

    def list_jobs(self, address: str) -> list[tuple[str, str, str]]:
        """(submission id, status, entrypoint) of every job the cluster knows."""
        from ray.job_submission import JobSubmissionClient

        jobs = bounded(self.job_sdk_timeout_s, address, lambda: JobSubmissionClient(address).list_jobs())
        return [(j.submission_id or j.job_id or "?", str(j.status.value), j.entrypoint) for j in jobs
                if not _netcheck_driver(j)]

    def jobs(self, address: str) -> list[JobInfo]:
        """Every job the cluster knows, with its start and end times, oldest first."""
        from ray.job_submission import JobSubmissionClient

        listed = bounded(self.job_sdk_timeout_s, address, lambda: JobSubmissionClient(address).list_jobs())
        found = [
            JobInfo(j.submission_id or j.job_id or "?", str(j.status.value), j.entrypoint,
                    j.start_time / 1000 if j.start_time else None, j.end_time / 1000 if j.end_time else None)
            for j in listed if not _netcheck_driver(j)
        ]
        return sorted(found, key=lambda j: j.start_time or 0.0)


def _netcheck_driver(job: Any) -> bool:
    """The launcher's own network check (a Ray driver, not a submitted job): not the run's job."""
    return not job.submission_id and "netcheck_driver" in (job.entrypoint or "")
