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
from glm45_launch.runtime.causes import RunState
from glm45_launch.runtime.interfaces import RayQueries, Reporter
from glm45_launch.runtime.lock import running_up
from glm45_launch.runtime.records import STATE, read_json, request_stop
from glm45_launch.runtime.runtime import Runtime

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
    held = running_up()
    return held is not None and held.resolve() == run_dir.resolve()


def restarting(ref: JobRef) -> str | None:
    """``up is restarting (attempt N)`` while the run's ``up`` is between attempts (None: it is not)."""
    if not supervised(ref.run_dir):
        return None
    assert ref.run_dir is not None
    state = read_json(ref.run_dir / STATE)
    if isinstance(state, dict) and state.get("state") in (RunState.RESTARTING.value, RunState.STARTING.value):
        return f"`glm45-launch up` of {ref.run_dir} is restarting (attempt {state.get('attempt', '?')}, since " \
               f"{state.get('since', '?')})"
    return None


def known_or_restarting(ref: JobRef, ray: RayQueries) -> JobRef:
    """:func:`require_known`, but a job server that does not answer while the run's ``up``
    restarts is said as such (the next attempt's job comes; ``attach`` follows it)."""
    try:
        return require_known(ref, ray)
    except LaunchError as exc:
        why = restarting(ref)
        if why is None or exc.exit_code != ExitCode.FAILED:
            raise
        raise LaunchError(f"{why}: no job server answers yet; `glm45-launch attach` follows the next attempt's "
                          "job", ExitCode.FAILED) from None


def logs(ref: JobRef, rt: Runtime, echo: Callable[[str], None], follow: bool = False) -> int:
    """``ray job logs [--follow]``: the job's driver log to ``echo``; the command's exit code."""
    known_or_restarting(ref, rt.ray)
    if follow:
        keep_out_of_the_cleanup()
    argv = job_logs_step(ref.head, ref.address).for_job(ref.job_id, follow)[0]
    res = rt.local.run(argv, Path(os.devnull), echo)
    return 0 if res.ok else ExitCode.FAILED


def stop(ref: JobRef, rt: Runtime) -> int:
    """``ray job stop``: the job gets SIGTERM, then Ray's SIGKILL. A running ``up`` of the run is told
    first (through its run directory), so it never restarts the job, even when the stop comes while
    it restarts and no job server answers."""
    told = supervised(ref.run_dir)
    if told:
        assert ref.run_dir is not None
        request_stop(ref.run_dir, "glm45-launch stop", ref.job_id)
        rt.reporter.warn(f"told the running `glm45-launch up` of {ref.run_dir} to stop without a restart")
    try:
        known_or_restarting(ref, rt.ray)
    except LaunchError:
        if told:
            rt.reporter.ok("no job server answers now (up restarts): up ends the run instead of resubmitting")
            return 0
        raise
    rt.reporter.warn(f"stopping job {ref.job_id} at {ref.address}")
    for argv in stop_job_step(ref.head, ref.address).for_job(ref.job_id):
        res = rt.local.run(argv, Path(os.devnull), rt.reporter.echo_for("job"))
        if not res.ok:
            raise LaunchError(f"ray job stop {ref.job_id} failed: {res.reason}", exit_code=ExitCode.FAILED)
    return 0


def attach(ref: JobRef, rt: Runtime, echo: Callable[[str], None], restart_wait_s: float = 3600.0) -> int:
    """Follow the job's log until it ends; while the run's ``up`` still runs, follow the job of its
    next attempt too. Exit 0 when the last job SUCCEEDED; Ctrl-C detaches (the job keeps running)."""
    known_or_restarting(ref, rt.ray)
    keep_out_of_the_cleanup()
    current = ref
    try:
        return _follow(current, rt, echo, restart_wait_s)
    except KeyboardInterrupt:
        rt.reporter.warn(f"detached; job {current.job_id} keeps running (`glm45-launch stop` stops it)")
        return 0


def _follow(current: JobRef, rt: Runtime, echo: Callable[[str], None], restart_wait_s: float) -> int:
    reporter = rt.reporter
    while True:
        reporter.phase(f"attached to job {current.job_id} (Ctrl-C detaches; the job keeps running)")
        try:
            logs(current, rt, echo, follow=True)
        except LaunchError:
            if restarting(current) is None:
                raise
        try:
            status = rt.ray.job_status(current.address, current.job_id)
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
