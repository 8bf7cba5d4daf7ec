"""Health watch, job stop, diagnostics, restarts and re-attach, with the runtime's test doubles.

No process, socket or SSH: the fakes answer the plan's commands (``pgrep -x raylet``,
``ray job submit/stop/logs``, the diagnostics program) the way the real ones would.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from glm45_launch.core.builder import build_plan
from glm45_launch.core.hostfile import parse_hostfile_text
from glm45_launch.core.operations import (
    DIAG_MARKER,
    WatchSettings,
    build_operations,
    checkpoint_dir,
    restart_problem,
)
from glm45_launch.core.plan import LaunchSpec
from glm45_launch.core.render import render
from glm45_launch.errors import LaunchError
from glm45_launch.runtime import jobs
from glm45_launch.runtime.causes import Cause, CauseKind
from glm45_launch.runtime.diagnostics import collect
from glm45_launch.runtime.executor import ExecOptions
from glm45_launch.runtime.interfaces import NodeInfo
from glm45_launch.runtime.lock import head_lock
from glm45_launch.runtime.programs import diagnose_program
from glm45_launch.runtime.records import read_events
from glm45_launch.runtime.results import CommandResult
from glm45_launch.runtime.runtime import Runtime
from glm45_launch.runtime.status import status
from glm45_launch.runtime.supervisor import Supervisor, read_iteration
from glm45_launch.runtime.usecases import UpOptions, up
from glm45_launch.testing import standin_trainer
from glm45_launch.testing.fakes import (
    FakeLocalRunner,
    FakeRay,
    FakeRemoteRunner,
    RecordingReporter,
    fake_runtime,
)

HOSTS = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
FORCED = "pkill -9 -f 'ray [s]tart' ; ray stop --force"  # the forced stop on a worker
FAST = WatchSettings(interval_s=0.05, probe_timeout_s=0.3, stop_grace_s=0.5, collect_timeout_s=5, host_wait_s=0.3)


def _plan(tmp_path: Path, **kw: object):
    spec = LaunchSpec(hostfile=parse_hostfile_text("\n".join(HOSTS)), head=HOSTS[0], base_dir="/data",
                      workdir=str(tmp_path), actor_num_nodes=3, checkpoint_dir=str(tmp_path / "ckpt"), **kw)
    return build_plan(spec)


# -- the steps around the job (pure) -----------------------------------------------------------------------
def test_operations_are_steps_made_from_the_plan(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    ops = build_operations(plan, FAST, "PROGRAM")
    assert [(s.where, s.host, s.commands) for s in ops.health] == \
        [("head", HOSTS[0], (("pgrep", "-x", "raylet"),))] + [("worker", h, (("pgrep", "-x", "raylet"),))
                                                              for h in HOSTS[1:]]
    assert [s.remote_command for s in ops.health[1:]] == ["pgrep -x raylet"] * 2
    assert ops.stop_job == plan.on_interrupt  # the graceful stop is the plan's Ctrl-C step
    # The forced stop is the plan's teardown; on a worker it first ends a `ray start` still running.
    assert [(s.host, s.commands) for s in ops.force_stop] == [(plan.head, (("ray", "stop", "--force"),))] + [
        (h, (("pkill", "-9", "-f", "ray [s]tart"), ("ray", "stop", "--force"))) for h in HOSTS[1:]]
    assert ops.force_stop == plan.on_failure  # what `plan` shows under "If the launch fails"
    assert ops.force_stop[1].remote_command == "pkill -9 -f 'ray [s]tart' ; ray stop --force"
    assert [s.commands[0][:3] for s in ops.diagnose] == [("python3", "-c", "PROGRAM")] * 3
    config = json.loads(ops.diagnose[0].commands[0][3])
    assert config["ray_logs"] == "/tmp/ray/session_latest/logs" and config["marker"] == DIAG_MARKER
    assert ops.job_logs.for_job("raysubmit_1", follow=True) == (
        ("ray", "job", "logs", f"--address={plan.job_address}", "raysubmit_1", "--follow"),)
    assert ops.checkpoint_dir == checkpoint_dir(plan) == str(tmp_path / "ckpt")


def test_restarts_need_a_checkpoint_to_resume_from(tmp_path: Path) -> None:
    no_ckpt = build_plan(replace(_plan(tmp_path).spec, checkpoint_dir=None))
    assert restart_problem(no_ckpt, WatchSettings()) is None  # no restarts asked
    assert "--checkpoint-dir" in (restart_problem(no_ckpt, WatchSettings(max_restarts=1)) or "")
    assert restart_problem(_plan(tmp_path), WatchSettings(max_restarts=1)) is None
    waitless = build_plan(replace(_plan(tmp_path).spec, no_wait=True))
    assert "--no-wait" in (restart_problem(waitless, WatchSettings(max_restarts=1)) or "")
    with pytest.raises(LaunchError, match="--checkpoint-dir"):  # refused before anything runs
        up(no_ckpt, UpOptions(run_dir=tmp_path / "r", watch=WatchSettings(max_restarts=2)), _runtime())


def test_plan_shows_what_runs_around_the_job(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    text = render(plan, "text", ops=build_operations(plan, replace(FAST, max_restarts=3), "x" * 5000))
    for needle in ("While the job runs: the health watch", "$ ssh root@10.0.0.2 'pgrep -x raylet'",
                   "When a node is lost, workers cannot start or the job stalls", "While the job starts", "ray job stop --address=http://127.0.0.1:8265",
                   "$ ssh root@10.0.0.3 'pkill -9 -f '\"'\"'ray [s]tart'\"'\"' ; ray stop --force'",
                   "the forced stop runs on every node", "Diagnostics, on a failure",
                   "python3 -c <diagnose.py>", "ray job logs --address=", "Restarts: up to 3",
                   f"{tmp_path}/ckpt/latest_checkpointed_iteration.txt"):
        assert needle in text, needle
    assert "x" * 100 not in text  # the program is shown by name
    data = json.loads(render(plan, "json"))
    assert list(data)[-1] == "operations"  # after the existing keys
    collect_steps = data["operations"]["collect"]["steps"]
    assert collect_steps[0]["commands"][0][:3] == ["python3", "-c", "<diagnose.py>"]
    assert [s["kind"] for s in data["operations"]["watch"]["steps"]] == ["health-check"] * 3


# -- the health watch (the supervisor's loop) -------------------------------------------------------------
class ClusterLocal(FakeLocalRunner):
    """`ray job submit` prints its id, then blocks until `ray job stop` (or the forced stop)."""

    def __init__(self, cluster: Cluster) -> None:
        super().__init__(cluster.answer_here)
        self.cluster = cluster

    def run(self, argv, log_path, echo=None, env=None, cwd=None, timeout_s=None, on_line=None):  # type: ignore[no-untyped-def]
        if list(argv[:3]) == ["ray", "job", "submit"] and on_line:
            on_line("Job 'raysubmit_1' submitted successfully")
            self.cluster.running()
        return super().run(argv, log_path, echo, env, cwd, timeout_s, on_line)

    def kill_children(self) -> list[int]:
        return self.cluster.kill()


class Cluster:
    """Fakes for a running job: `ray job submit` blocks until `ray job stop` (or the forced stop)."""

    def __init__(self, raylet: dict[str, int | None] | None = None, stops: bool = True) -> None:
        self.raylet = raylet or {}
        self.stopped = threading.Event()
        self.stops = stops
        self.local = ClusterLocal(self)
        self.remote = FakeRemoteRunner(answer=lambda host, command: (
            self.raylet.get(host, 0) if command == "pgrep -x raylet" else 0, []))
        self.ray = FakeRay.alive(HOSTS)
        self.ray.default_status = "RUNNING"
        self.killed = 0
        self.running: Callable[[], object] = lambda: None  # what happens once the job runs


    def answer_here(self, argv: Sequence[str]) -> tuple[int, list[str]]:
        if list(argv[:3]) == ["ray", "job", "submit"]:
            self.stopped.wait(30)
            return 1, []
        if list(argv[:3]) == ["ray", "job", "stop"] and self.stops:
            self.ray.statuses["raysubmit_1"] = "STOPPED"
            self.stopped.set()
        if list(argv) == ["pgrep", "-x", "raylet"]:
            return self.raylet.get(HOSTS[0], 0) or 0, []
        return 0, []

    def kill(self) -> list[int]:
        self.killed += 1
        self.stopped.set()
        return [4242]


def _watched(tmp_path: Path, cluster: Cluster, settings: WatchSettings = FAST, **kw: object):
    """Supervise one attempt of the plan with the watch on; the run's result and reporter."""
    plan = _plan(tmp_path, **kw)
    rt = fake_runtime(cluster.local, cluster.remote, cluster.ray, here=[HOSTS[0]])
    ops = build_operations(plan, replace(settings, collect=False), "P")
    return Supervisor(plan, ops, rt, tmp_path / "run", ExecOptions(join_timeout=5)).run(), rt.reporter, plan, ops


def _events(tmp_path: Path) -> list[str]:
    return [e["event"] for e in read_events(tmp_path / "run" / "events.jsonl")]


def test_a_dead_raylet_is_a_lost_node_and_the_job_is_stopped(tmp_path: Path) -> None:
    cluster = Cluster({HOSTS[2]: 1})
    result, reporter, _, _ = _watched(tmp_path, cluster)
    assert result.cause == Cause(CauseKind.NODE_LOST, "raylet not running (pgrep -x raylet found none)", HOSTS[2])
    assert result.exit_code == 1 and result.error == f"node lost: {HOSTS[2]}: raylet not running (pgrep -x raylet found none)"
    assert ["ray", "job", "stop", "--address=http://127.0.0.1:8265", "raysubmit_1"] in cluster.local.calls
    assert ["ssh", f"root@{HOSTS[1]}", "pgrep -x raylet"] in cluster.remote.calls
    assert ["pgrep", "-x", "raylet"] in cluster.local.calls  # the head, here
    assert cluster.killed == 0  # stopped gracefully: nothing forced
    assert _events(tmp_path)[1:4] == ["fault-detected", "stop-sent", "job-stopped"]
    assert f"node lost: {HOSTS[2]}: raylet not running" in reporter.text("error")
    health = (tmp_path / "run" / "health.log").read_text()  # changes only, not every check
    assert f" {HOSTS[2]} no raylet" in health and health.count(f" {HOSTS[1]} ok") == 1


def test_an_unreachable_node_is_lost_only_when_it_stays_unreachable(tmp_path: Path) -> None:
    cluster = Cluster({HOSTS[1]: None})  # cannot connect
    result, reporter, _, _ = _watched(tmp_path, cluster, replace(FAST, unreachable_after=3))
    cause = result.cause
    assert cause is not None and cause.host == HOSTS[1] and "unreachable" in cause.detail
    assert "3 checks in a row" in cause.detail and "connection refused" in cause.detail
    warned = reporter.text("warn")
    assert warned.count(f"{HOSTS[1]}: health check failed (cannot connect") == 1 and "lost after 3 in a row" in warned
    assert sum(c[1] == f"root@{HOSTS[1]}" for c in cluster.remote.calls) >= 3


def test_a_check_that_never_answers_counts_once_per_round(tmp_path: Path) -> None:
    hang = threading.Event()
    cluster = Cluster()
    cluster.remote.answer = lambda host, command: (hang.wait(10), (0, []))[1] if host == HOSTS[2] else (0, [])
    result, _, _, _ = _watched(tmp_path, cluster, replace(FAST, probe_timeout_s=0.1))
    hang.set()
    cause = result.cause
    assert cause is not None and cause.host == HOSTS[2]
    assert "no answer to the health check within 0.1s" in cause.detail


def test_dead_in_rays_node_table_is_a_lost_node(tmp_path: Path) -> None:
    cluster = Cluster()
    cluster.running = lambda: cluster.ray.node_table.__setitem__(1, NodeInfo(HOSTS[1], alive=False, gpus=8,
                                                                             is_head=False))
    result, _, _, _ = _watched(tmp_path, cluster)
    assert result.cause == Cause(CauseKind.NODE_LOST, "DEAD in Ray's node table", HOSTS[1])


def test_no_driver_output_for_the_stall_timeout_is_a_stall(tmp_path: Path) -> None:
    cluster = Cluster()
    result, _, _, _ = _watched(tmp_path, cluster, replace(FAST, stall_timeout_s=1.0))
    cause = result.cause
    assert cause is not None and cause.kind is CauseKind.STALLED and "no driver output for 1s" in cause.detail


def test_driver_output_keeps_the_stall_clock_from_firing(tmp_path: Path) -> None:
    cluster = Cluster()

    class Talking(ClusterLocal):
        def run(self, argv, log_path, echo=None, env=None, cwd=None, timeout_s=None, on_line=None):  # type: ignore[no-untyped-def]
            if list(argv[:3]) == ["ray", "job", "submit"] and on_line:
                on_line("Job 'raysubmit_1' submitted successfully")
                for i in range(8):  # 1.6 s of output, a line every 0.2 s: never 1 s quiet
                    time.sleep(0.2)
                    on_line(f"iteration {i}")
                cluster.ray.statuses["raysubmit_1"] = "SUCCEEDED"
                self.calls.append(list(argv))
                return CommandResult(argv=list(argv), exit_code=0)
            return super().run(argv, log_path, echo, env, cwd, timeout_s, on_line)

    cluster.local = Talking(cluster)
    result, _, _, _ = _watched(tmp_path, cluster, replace(FAST, stall_timeout_s=1.0))
    assert result.exit_code == 0 and result.job_status == "SUCCEEDED"


def test_a_job_that_does_not_stop_is_forced(tmp_path: Path) -> None:
    cluster = Cluster({HOSTS[1]: 1}, stops=False)  # `ray job stop` does nothing
    result, _, _, _ = _watched(tmp_path, cluster)
    assert result.cause is not None and result.cause.kind is CauseKind.NODE_LOST
    assert cluster.killed >= 1  # the launcher's `ray job submit` killed
    assert ["ray", "stop", "--force"] in cluster.local.calls
    assert sorted(c[1] for c in cluster.remote.calls if c[2] == FORCED) == [f"root@{h}" for h in HOSTS[1:]]
    events = _events(tmp_path)
    assert events.index("force-stop") < events.index("stopped-ray") < events.index("job-stopped")


def test_the_supervisor_runs_nothing_outside_the_plan_and_its_operations(tmp_path: Path) -> None:
    """With the watch on, every command up runs is a step of the plan or of its operations."""
    cluster = Cluster({HOSTS[2]: 1})
    result, _, plan, ops = _watched(tmp_path, cluster)
    assert result.exit_code == 1 and result.job_status == "STOPPED"
    assert result.cause == Cause(CauseKind.NODE_LOST, "raylet not running (pgrep -x raylet found none)", HOSTS[2])
    user = plan.cluster.ssh_user
    allowed = {tuple(a) for a in plan.invocations()}
    for step in (*ops.health, *ops.startup, *ops.force_stop):
        allowed |= {tuple(a) for a in step.invocations(user)}
    allowed |= {tuple(a) for s in ops.stop_job for a in s.for_job("raysubmit_1")}
    ran = cluster.local.calls + cluster.remote.calls
    assert [c for c in ran if tuple(c) not in allowed] == []
    assert (tmp_path / "run" / "job_id").read_text().strip() == "raysubmit_1"


# -- diagnostics ----------------------------------------------------------------------------------------------
def test_diagnostics_one_line_per_node_and_the_driver_log(tmp_path: Path) -> None:
    summary = {"raylet": False, "ray_logs": 4, "errors": 2, "last_error": "raylet.out: Check failed", "dmesg": "ok",
               "xid": 1, "gpus": 8}

    def remote(host: str, command: str) -> tuple[int | None, list[str]]:
        return (None, []) if host == HOSTS[2] else (0, ["== ray log ==", DIAG_MARKER + json.dumps(summary)])

    def here(argv: Sequence[str]) -> tuple[int, list[str]]:
        if list(argv[:3]) == ["ray", "job", "logs"]:
            return 0, [f"driver line {i}" for i in range(5)]
        return 0, [DIAG_MARKER + json.dumps({**summary, "raylet": True, "gpus": "no nvidia-smi"})]

    ops = build_operations(_plan(tmp_path), FAST, "P")
    reporter = RecordingReporter()
    rt = fake_runtime(FakeLocalRunner(here), FakeRemoteRunner(answer=remote), reporter=reporter, here=[HOSTS[0]])
    diag = collect(ops, tmp_path / "d", "raysubmit_1", rt, HOSTS[0])
    lines = (tmp_path / "d" / "summary.txt").read_text().splitlines()
    assert lines[0] == (f"{HOSTS[0]}: raylet running; ray logs: 4 file(s), 2 error line(s); last: raylet.out: "
                        "Check failed; dmesg: 1 Xid; GPUs: no nvidia-smi")
    assert lines[1].startswith(f"{HOSTS[1]}: raylet NOT running") and "GPUs: 8" in lines[1]
    assert lines[2] == f"{HOSTS[2]}: no evidence (cannot connect to {HOSTS[2]}: connection refused)"
    assert (tmp_path / "d" / "driver.log").read_text().splitlines()[-1] == "driver line 4"
    assert diag.driver_log == tmp_path / "d" / "driver.log"
    assert json.loads((tmp_path / "d" / "summary.json").read_text())["job_id"] == "raysubmit_1"
    assert reporter.text("line").count("[diagnostics]") == 4


def test_the_diagnostics_program_is_bounded_and_summarises(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "raylet.out").write_text("".join(f"[2026-01-01 00:00:00,000 I 1 1] ok {i}\n" for i in range(5000))
                                     + "[2026-01-01 00:00:01,000 E 1 1] node_manager.cc:1: Check failed: x\n")
    (logs / "worker-abc-1.err").write_text("Traceback (most recent call last):\nValueError: boom\n")
    (logs / "worker-abc-2.err").write_text("")
    cfg = {"ray_logs": str(logs), "lines": 50, "worker_files": 5, "dmesg_lines": 10, "max_bytes": 20000,
           "cmd_timeout": 5, "marker": DIAG_MARKER}
    res = subprocess.run([sys.executable, "-c", diagnose_program(), json.dumps(cfg)], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    out = res.stdout.splitlines()
    summary = json.loads(out[-1][len(DIAG_MARKER):])
    assert summary["ray_logs"] == 2 and summary["errors"] == 2 and "ValueError" in summary["last_error"] or \
        "Traceback" in summary["last_error"]
    assert any(line.startswith("== ray log ") and "raylet.out (last 50 lines)" in line for line in out)
    assert len(res.stdout) < 20000 + 2000  # the byte cap (plus the summary line)
    assert "raylet" in summary and "gpus" in summary


# -- restarts -------------------------------------------------------------------------------------------------
class Jobs:
    """`ray job submit` prints a new job id per attempt; Ray says how each attempt's job ended."""

    def __init__(self, outcomes: list[str], checkpoint: Path | None = None) -> None:
        self.outcomes, self.n, self.checkpoint = outcomes, 0, checkpoint
        self.ray = FakeRay.alive(HOSTS)

    def answer(self, argv: Sequence[str]) -> tuple[int, list[str]]:
        if list(argv[:3]) == ["ray", "job", "submit"]:
            self.n += 1
            job = f"raysubmit_{self.n}"
            self.ray.statuses[job] = self.outcomes[self.n - 1]
            if self.checkpoint is not None:  # the trainer saved before it failed
                self.checkpoint.mkdir(parents=True, exist_ok=True)
                (self.checkpoint / "latest_checkpointed_iteration.txt").write_text(f"{self.n * 10}\n")
            return 0, [f"Job '{job}' submitted successfully"]
        if list(argv[:3]) == ["ray", "job", "logs"]:
            return 0, ["driver says hi"]
        return 0, [DIAG_MARKER + "{}"] if "-c" in argv else []


def _runtime(local: FakeLocalRunner | None = None, remote: FakeRemoteRunner | None = None,
             ray: FakeRay | None = None) -> Runtime:
    return fake_runtime(local, remote, ray or FakeRay.alive(HOSTS), here=[HOSTS[0]])


def _supervise(tmp_path: Path, jobs_: Jobs, settings: WatchSettings, remote: FakeRemoteRunner | None = None):
    plan = _plan(tmp_path)
    rt = _runtime(FakeLocalRunner(jobs_.answer), remote, jobs_.ray)
    ops = build_operations(plan, replace(settings, watch=False), "P")
    sup = Supervisor(plan, ops, rt, tmp_path / "run")
    return sup, rt


def test_a_failed_job_is_restarted_and_resumes_from_the_checkpoint(tmp_path: Path) -> None:
    jobs_ = Jobs(["FAILED", "SUCCEEDED"], tmp_path / "ckpt")
    sup, rt = _supervise(tmp_path, jobs_, replace(FAST, max_restarts=2))
    result = sup.run()
    assert (result.exit_code, result.job_id) == (0, "raysubmit_2")
    attempts = json.loads((tmp_path / "run" / "attempts.json").read_text())
    assert [(a["number"], a["resumed_from"], a["outcome"]) for a in attempts] == [
        (1, None, "job failed: job raysubmit_1 ended FAILED"), (2, "10", "succeeded")]
    assert attempts[1]["why"] == "restart 1 of 2 after job failed: job raysubmit_1 ended FAILED"
    assert (tmp_path / "run" / "diagnostics" / "attempt-1" / "summary.txt").exists()
    assert "attempt 2 of at most 3" in rt.reporter.text("phase")  # type: ignore[attr-defined]
    assert "resuming from iteration 10" in rt.reporter.text("phase")  # type: ignore[attr-defined]
    assert (tmp_path / "run" / "job_id").read_text().strip() == "raysubmit_2"


def test_restarts_run_out(tmp_path: Path) -> None:
    sup, _ = _supervise(tmp_path, Jobs(["FAILED", "FAILED"]), replace(FAST, max_restarts=1))
    result = sup.run()
    assert result.exit_code == 1 and result.error == ("restarts exhausted: 2 attempt(s) failed; the last: job failed: "
                                                      "job raysubmit_2 ended FAILED")


def test_without_restarts_a_failed_job_is_its_exit_code(tmp_path: Path) -> None:
    sup, _ = _supervise(tmp_path, Jobs(["FAILED"]), FAST)
    result = sup.run()
    assert result.exit_code == 1 and result.cause is not None and result.cause.kind is CauseKind.JOB_FAILED
    assert (tmp_path / "run" / "diagnostics" / "attempt-1" / "driver.log").read_text() == "driver says hi\n"


def test_a_job_stopped_by_someone_is_not_restarted(tmp_path: Path) -> None:
    sup, _ = _supervise(tmp_path, Jobs(["STOPPED", "SUCCEEDED"]), replace(FAST, max_restarts=3))
    result = sup.run()
    assert result.exit_code == 1 and result.cause is not None and result.cause.kind is CauseKind.JOB_STOPPED
    assert len(sup.attempts) == 1 and not (tmp_path / "run" / "diagnostics").exists()


def test_a_lost_node_that_does_not_come_back(tmp_path: Path) -> None:
    jobs_ = Jobs(["FAILED", "SUCCEEDED"])  # the host goes down once the first job runs
    down = FakeRemoteRunner(answer=lambda host, command: (None, []) if host == HOSTS[1] and jobs_.n else (0, []))
    sup, _ = _supervise(tmp_path, jobs_, replace(FAST, max_restarts=1), down)
    result = sup.run()
    assert result.exit_code == 1 and re.match(r"node gone: 10\.0\.0\.2: did not come back within 0s .*connection "
                                              r"refused", result.error or "")
    assert len(sup.attempts) == 1


def test_ctrl_c_between_attempts_stops_ray_everywhere(tmp_path: Path) -> None:
    sup, rt = _supervise(tmp_path, Jobs(["FAILED", "SUCCEEDED"]), replace(FAST, max_restarts=1))
    fresh = FakeRemoteRunner()
    rt.connect = lambda: fresh  # Ctrl-C in a fan-out closed the run's connections: the teardown opens its own

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt

    sup._wait_for_nodes = interrupted  # type: ignore[method-assign]
    result = sup.run()
    assert result.exit_code == 130 and len(sup.attempts) == 1
    assert sorted(fresh.calls) == [["ssh", f"root@{h}", FORCED] for h in HOSTS[1:]] and fresh.closed
    assert rt.local.calls[-1] == ["ray", "stop", "--force"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(("where", "stopped"), [("cleanup", False), ("join", True), ("submit", True)])
def test_ctrl_c_before_the_job_stops_what_the_attempt_started(tmp_path: Path, where: str, stopped: bool) -> None:
    """Without restarts: Ctrl-C in the cleanup stops nothing (nothing was started); in the join
    wait, or in the submit before the job has an id, the forced stop runs where Ray was started."""
    plan = _plan(tmp_path)
    ray = FakeRay.alive(HOSTS)
    cleaned = threading.Event()
    released = threading.Event()

    def local(argv: Sequence[str]) -> tuple[int, list[str]]:
        if list(argv) == ["ray", "stop", "--force"] and not cleaned.is_set():
            cleaned.set()
            if where == "cleanup":
                raise KeyboardInterrupt
        if where == "submit" and list(argv[:3]) == ["ray", "job", "submit"]:
            # Ctrl-C comes to the main thread while the submit runs (in the follower's thread).
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # type: ignore[arg-type]
            released.wait(5)
        return 0, []

    def nodes(address: str) -> list[NodeInfo]:
        raise KeyboardInterrupt

    if where == "join":
        ray.nodes = nodes  # type: ignore[method-assign]
    rt = _runtime(FakeLocalRunner(local), ray=ray)
    fresh = FakeRemoteRunner()
    rt.connect = lambda: fresh
    sup = Supervisor(plan, build_operations(plan, replace(FAST, watch=False), "P"), rt, tmp_path / "run")
    result = sup.run()
    released.set()
    assert result.exit_code == 130
    forced = [c for c in fresh.calls if c[2] == FORCED]
    assert sorted(forced) == ([["ssh", f"root@{h}", FORCED] for h in HOSTS[1:]] if stopped else [])
    assert (rt.local.calls.count(["ray", "stop", "--force"]) == 2) is stopped  # type: ignore[attr-defined]
    assert "still running" not in rt.reporter.text()  # type: ignore[attr-defined]
    if stopped:
        assert "stopping Ray on every node (Ctrl-C before the job" in rt.reporter.text("warn")  # type: ignore[attr-defined]


def test_checkpoint_iteration_and_causes(tmp_path: Path) -> None:
    assert read_iteration(None) is None and read_iteration(str(tmp_path)) is None
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("120\n")
    assert read_iteration(str(tmp_path)) == "120"
    assert Cause(CauseKind.NODE_LOST, "x", "h").restartable and not Cause(CauseKind.JOB_STOPPED, "x").restartable
    assert not Cause(CauseKind.STOP_REQUESTED, "x").restartable and not Cause(CauseKind.WORKER_START, "x").restartable
    assert str(Cause(CauseKind.NODE_LOST, "raylet gone", "10.0.0.2")) == "node lost: 10.0.0.2: raylet gone"


def test_the_standin_trainer_saves_like_megatron(tmp_path: Path) -> None:
    assert standin_trainer.resume_point(None) == 0 and standin_trainer.resume_point(str(tmp_path)) == 0
    standin_trainer.save_checkpoint(str(tmp_path), 4)
    assert (tmp_path / "iter_0000004" / "standin.txt").exists()
    assert standin_trainer.resume_point(str(tmp_path)) == 4


# -- re-attach and status -------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _keep_pytests_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """attach/logs --follow rename their process (out of the recipe's `pkill -9 python`): not pytest's."""
    monkeypatch.setattr(jobs, "keep_out_of_the_cleanup", lambda: None)


def test_the_default_job_is_the_last_job_of_the_last_run(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for name, job, t in (("a", "raysubmit_old", 1000), ("b", "raysubmit_new", 2000)):
        (runs / name).mkdir(parents=True)
        (runs / name / "job_id").write_text(job + "\n")
        os.utime(runs / name / "job_id", (t, t))
    (runs / "b" / "plan.json").write_text(json.dumps({"cluster": {"job_address": "http://10.0.0.1:8265",
                                                                  "head": "10.0.0.1"}}))
    ref = jobs.find_job(runs=runs)
    assert (ref.job_id, ref.address, ref.run_dir) == ("raysubmit_new", "http://10.0.0.1:8265", runs / "b")
    assert jobs.find_job("raysubmit_x", runs=runs).address == jobs.DEFAULT_ADDRESS
    with pytest.raises(LaunchError, match="no run directory with a job"):
        jobs.find_job(runs=tmp_path / "none")
    local = FakeLocalRunner(lambda argv: (0, ["line 1", "line 2"]))
    rt = fake_runtime(local, ray=FakeRay(default_status="RUNNING"))
    seen: list[str] = []
    assert jobs.logs(ref, rt, seen.append, follow=True) == 0 and seen == ["line 1", "line 2"]
    assert jobs.stop(ref, rt) == 0
    assert local.calls == [["ray", "job", "logs", "--address=http://10.0.0.1:8265", "raysubmit_new", "--follow"],
                           ["ray", "job", "stop", "--address=http://10.0.0.1:8265", "raysubmit_new"]]


def test_attach_follows_the_next_attempt_of_a_running_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "job_id").write_text("raysubmit_1\n")
    monkeypatch.setenv("GLM45_LOCK_DIR", str(tmp_path / "lock"))
    ray = FakeRay(statuses={"raysubmit_1": "STOPPED", "raysubmit_2": "SUCCEEDED"})

    def answer(argv: Sequence[str]) -> tuple[int, list[str]]:
        (run / "job_id").write_text("raysubmit_2\n")  # `up` restarted while the first job's log ended
        return 0, [f"log of {argv[4]}"]

    seen: list[str] = []
    with head_lock(run.resolve()):  # `up` of this run holds the head's lock
        code = jobs.attach(jobs.find_job(run_dir=run), fake_runtime(FakeLocalRunner(answer), ray=ray), seen.append)
    assert code == 0 and seen == ["log of raysubmit_1", "log of raysubmit_2"]


def test_attach_names_its_process_out_of_the_recipes_pkill_python() -> None:
    code = ("from glm45_launch.runtime.jobs import keep_out_of_the_cleanup as k; k(); "
            "print(open('/proc/self/comm').read().strip())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "glm45-launch"  # `pkill -9 python` matches process names: not this one


def test_status_per_node_and_job_runtime(tmp_path: Path) -> None:
    ray = FakeRay([NodeInfo(HOSTS[0], True, 8, True), NodeInfo(HOSTS[1], True, 8, False),
                   NodeInfo(HOSTS[2], False, 8, False)], statuses={"raysubmit_1": "RUNNING"},
                  times={"raysubmit_1": (time.time() - 90, None)})
    remote = FakeRemoteRunner(answer=lambda host, command: (1 if host == HOSTS[1] else 0, []))
    report = status(parse_hostfile_text("\n".join(HOSTS)), "http://127.0.0.1:8265", _runtime(remote=remote, ray=ray))
    assert [(h.ray_state, h.ray_running, h.health) for h in report.hosts] == [
        ("ALIVE", True, "ok"), ("ALIVE", False, "LOST: no raylet (Ray has not noticed yet)"),
        ("DEAD", True, "LOST: DEAD in Ray's node table (a raylet runs: another cluster?)")]
    assert not report.healthy
    (job,) = report.to_json()["jobs"]
    assert job["status"] == "RUNNING" and 89 <= job["runtime_s"] < 120
    assert report.to_json()["hosts"][1]["health"].startswith("LOST")
