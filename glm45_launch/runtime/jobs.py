"""Re-attaching to a run from any shell on the head: which job, its logs, following it, stopping it.

The default job is the last one of the last run directory: ``runs/*/job_id`` (``up`` rewrites it
at every attempt), its address from that run's ``plan.json``. The commands are the plan's
(:func:`~glm45_launch.core.operations.job_logs_step`, :func:`~glm45_launch.core.operations.stop_job_step`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from glm45_launch.core.operations import job_logs_step, stop_job_step
from glm45_launch.errors import ExitCode, LaunchError
from glm45_launch.runtime.interfaces import CommandRunner, RayQueries, Reporter
from glm45_launch.runtime.lock import lock_path

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
PROCESS_NAME = "glm45-launch"


def keep_out_of_the_cleanup() -> None:
    """Name this process ``glm45-launch``: a restart's cleanup runs the recipe's ``pkill -9 python``
    on the head, which matches process names, and must not kill a shell following the job."""
    try:
        with open("/proc/self/comm", "w") as fh:
            fh.write(PROCESS_NAME)
    except OSError:
        pass


@dataclass(frozen=True)
class JobRef:
    """A job, where its job server is, and the run it belongs to (if known)."""

    job_id: str
    address: str
    head: str
    run_dir: Path | None = None


def last_run_dir(root: Path) -> Path | None:
    """The run directory under ``root`` whose ``job_id`` was written last."""
    found = [p for p in root.glob("*/job_id") if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime).parent if found else None


def _read_job_id(run_dir: Path) -> str | None:
    try:
        text = (run_dir / "job_id").read_text()[:200].strip()
    except OSError:
        return None
    except UnicodeDecodeError:
        raise LaunchError(f"{run_dir / 'job_id'}: not UTF-8 text (a damaged job_id file: give the JOB id)") from None
    return text or None


def find_job(job_id: str | None = None, run_dir: Path | None = None, runs: Path = Path("runs"),
             address: str | None = None) -> JobRef:
    """``job_id`` (default: the run's last job) of ``run_dir`` (default: the last run under ``runs``)."""
    if run_dir is None and job_id is None:
        run_dir = last_run_dir(runs)
        if run_dir is None:
            raise LaunchError(f"no run directory with a job under {runs.resolve()}: give a JOB id, --run-dir "
                              "or --runs (where `up` wrote its runs)")
    plan: dict = {}
    if run_dir is not None:
        try:
            plan = json.loads((run_dir / "plan.json").read_text())
        except (OSError, ValueError):
            plan = {}
        job_id = job_id or _read_job_id(run_dir)
        if job_id is None:
            raise LaunchError(f"{run_dir}: no job_id (the run submitted no job)")
    cluster = plan.get("cluster") if isinstance(plan, dict) else None
    cluster = cluster if isinstance(cluster, dict) else {}  # a damaged plan.json: the defaults
    assert job_id is not None
    return JobRef(job_id, address or cluster.get("job_address") or DEFAULT_ADDRESS, cluster.get("head", "head"),
                  run_dir)


def current_job(runs: Path) -> str | None:
    """The last job of the last run under ``runs`` (what logs/attach/stop default to), or None."""
    try:
        return find_job(runs=runs).job_id
    except LaunchError:
        return None


def require_known(ref: JobRef, ray: RayQueries) -> JobRef:
    """``ref`` once its job server has said it knows the job: no job server answering, or no
    such job there, is one ``LaunchError`` line (before any ``ray job`` command runs)."""
    from glm45_launch.runtime.ray_api import JobServerTimeout

    try:
        ray.job_status(ref.address, ref.job_id)
        return ref
    except JobServerTimeout as exc:
        raise LaunchError(str(exc), ExitCode.FAILED) from None
    except ConnectionError:
        raise LaunchError(f"no Ray job server answers at {ref.address} (is the cluster up? --address names "
                          "another)", ExitCode.FAILED) from None
    except ValueError as exc:
        raise LaunchError(f"job server address {ref.address!r}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - the job SDK's other errors, one line each
        text = str(exc)
        if "404" in text or "does not exist" in text:
            raise LaunchError(f"job {ref.job_id}: no such job at {ref.address}") from None
        raise LaunchError(f"job server at {ref.address}: {type(exc).__name__}: {text}", ExitCode.FAILED) from None


def supervised(run_dir: Path | None) -> bool:
    """Is an ``up`` of this run still running on this head (it may restart the job)?"""
    if run_dir is None:
        return False
    try:
        info = json.loads(lock_path().read_text() or "{}")
    except (OSError, ValueError):
        return False
    pid = info.get("pid")
    if not isinstance(pid, int) or not os.path.exists(f"/proc/{pid}"):
        return False
    return str(info.get("run_dir") or "") == str(run_dir.resolve())


def logs(ref: JobRef, local: CommandRunner, echo: Callable[[str], None], follow: bool = False) -> int:
    """``ray job logs [--follow]``: the job's driver log to ``echo``; the command's exit code."""
    if follow:
        keep_out_of_the_cleanup()
    argv = job_logs_step(ref.head, ref.address).for_job(ref.job_id, follow)[0]
    res = local.run(argv, Path(os.devnull), echo)
    return 0 if res.ok else ExitCode.FAILED


def stop(ref: JobRef, local: CommandRunner, reporter: Reporter) -> int:
    """``ray job stop``: the job gets SIGTERM, then Ray's SIGKILL (a supervising ``up`` does not restart it)."""
    reporter.warn(f"stopping job {ref.job_id} at {ref.address}")
    for argv in stop_job_step(ref.head, ref.address).for_job(ref.job_id):
        res = local.run(argv, Path(os.devnull), reporter.echo_for("job"))
        if not res.ok:
            raise LaunchError(f"ray job stop {ref.job_id} failed: {res.reason}", exit_code=ExitCode.FAILED)
    return 0


def attach(ref: JobRef, local: CommandRunner, ray: RayQueries, reporter: Reporter, echo: Callable[[str], None],
           restart_wait_s: float = 3600.0) -> int:
    """Follow the job's log until it ends; while the run's ``up`` still runs, follow the job of its
    next attempt too. Exit 0 when the last job SUCCEEDED."""
    keep_out_of_the_cleanup()
    current = ref
    while True:
        reporter.phase(f"attached to job {current.job_id} (Ctrl-C detaches; the job keeps running)")
        logs(current, local, echo, follow=True)
        try:
            status = ray.job_status(current.address, current.job_id)
        except Exception as exc:  # noqa: BLE001 - the cluster may be restarting
            status = f"unknown ({type(exc).__name__})"
        nxt = _next_job(current, restart_wait_s, reporter) if status != "SUCCEEDED" else None
        if nxt is None:
            (reporter.ok if status == "SUCCEEDED" else reporter.error)(f"job {current.job_id}: {status}")
            return 0 if status == "SUCCEEDED" else ExitCode.FAILED
        current = nxt


def _next_job(ref: JobRef, wait_s: float, reporter: Reporter) -> JobRef | None:
    """The job of the run's next attempt, while its ``up`` restarts (None: no restart coming)."""
    if not supervised(ref.run_dir):
        return None
    assert ref.run_dir is not None
    reporter.phase(f"job {ref.job_id} ended; `up` is still running {ref.run_dir}: waiting for its next attempt")
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and supervised(ref.run_dir):
        job_id = _read_job_id(ref.run_dir)
        if job_id and job_id != ref.job_id:
            return JobRef(job_id, ref.address, ref.head, ref.run_dir)
        time.sleep(1.0)
    return None
