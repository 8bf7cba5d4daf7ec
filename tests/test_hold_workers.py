"""``--hold-workers``: an ssh session per worker from the join until the job ends (executor, with the
test doubles of glm45_launch.testing.fakes; the real sessions are test_e2e_air.py's)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from glm45_launch.core.builder import build_plan
from glm45_launch.core.hostfile import parse_hostfile_text
from glm45_launch.core.operations import WatchSettings, build_operations
from glm45_launch.core.plan import LaunchSpec, Plan
from glm45_launch.errors import LaunchError
from glm45_launch.runtime.runtime import Runtime
from glm45_launch.runtime.supervisor import RunResult, Supervisor
from glm45_launch.testing.fakes import (
    FakeHostFacts,
    FakeLocalRunner,
    FakeRay,
    FakeRemoteRunner,
    RecordingReporter,
    fake_runtime,
)

HOSTS = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]


def plan_for(tmp_path: Path, **kw: object) -> Plan:
    return build_plan(LaunchSpec(hostfile=parse_hostfile_text("\n".join(HOSTS)), head=HOSTS[0], base_dir="/data",
                                 workdir=str(tmp_path), actor_num_nodes=4, hold_workers=True, **kw))  # type: ignore[arg-type]


class Timeline:
    """What happened, in order, across the head and the workers."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.lock = threading.Lock()
        self.held = threading.Event()  # set: the held sessions may end (the test's stand-in for closing them)

    def add(self, event: str) -> None:
        with self.lock:
            self.events.append(event)


def up(tmp_path: Path, timeline: Timeline, plan: Plan, reporter: RecordingReporter) -> tuple[RunResult, Runtime]:
    """One supervised attempt (watch off) with held sessions on the fakes."""
    def local(argv: object) -> tuple[int, list[str]]:
        words = list(argv)  # type: ignore[call-overload]
        if words[:3] == ["ray", "job", "submit"]:
            # The job runs: every held session must be open by now (sent before this step began).
            deadline = time.monotonic() + 2
            while sum(e.startswith("hold") for e in timeline.events) < len(HOSTS) - 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            if timeline.held.is_set():  # sessions that end at once: the job runs long enough to see it
                while sum(e.startswith("released") for e in timeline.events) < len(HOSTS) - 1:
                    time.sleep(0.01)
                time.sleep(0.5)  # the fan-out notices its threads ended within 0.2 s
            timeline.add("submit")
            return 0, ["Job 'raysubmit_x' submitted successfully"]
        return 0, []

    def remote(host: str, command: str) -> tuple[int, list[str]]:
        if command == "cat":
            timeline.add(f"hold {host}")
            timeline.held.wait(10)
            timeline.add(f"released {host}")
        return 0, []

    rt = fake_runtime(FakeLocalRunner(local), FakeRemoteRunner("root", remote), FakeRay.alive(HOSTS), reporter=reporter,
                      here=[HOSTS[0]])
    ops = build_operations(plan, WatchSettings(watch=False, collect=False), "P")
    return Supervisor(plan, ops, rt, tmp_path / "run").run(), rt


def test_sessions_are_held_from_the_join_through_the_job(tmp_path: Path) -> None:
    timeline, reporter = Timeline(), RecordingReporter()
    result, rt = up(tmp_path, timeline, plan_for(tmp_path), reporter)
    assert result.exit_code == 0 and result.job_status == "SUCCEEDED"
    # Every worker was held before the job was submitted, and none had ended when up returned.
    assert timeline.events.index("submit") == 3
    assert sorted(timeline.events[:3]) == [f"hold {h}" for h in HOSTS[1:]]
    assert not any(e.startswith("released") for e in timeline.events)
    assert "ended before the job" not in reporter.text()
    assert "holding an ssh session open on 3 worker(s) until the job ends" in reporter.text("phase")
    assert sorted(c for c in rt.remote.calls if c[2] == "cat") == [["ssh", f"root@{h}", "cat"]  # type: ignore[attr-defined]
                                                                   for h in HOSTS[1:]]
    timeline.held.set()


def test_a_session_that_ends_early_is_reported(tmp_path: Path) -> None:
    timeline, reporter = Timeline(), RecordingReporter()
    timeline.held.set()  # the sessions end at once (a platform reaped the node, a dropped connection)
    up(tmp_path, timeline, plan_for(tmp_path), reporter)
    warned = reporter.text("warn")
    assert all(f"{h}: the held ssh session ended before the job did" in warned for h in HOSTS[1:])


def test_hold_is_refused_with_no_wait(tmp_path: Path) -> None:
    with pytest.raises(LaunchError, match="--hold-workers with --no-wait"):
        plan_for(tmp_path, no_wait=True)


class Connections:
    """SSH connections of the fakes: a held `cat` runs until its connection is closed."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.held: dict[str, int] = dict.fromkeys(HOSTS[1:], 0)  # sessions holding each worker now
        self.opened: list[FakeRemoteRunner] = []

    def connect(self) -> FakeRemoteRunner:
        closed = threading.Event()

        def answer(host: str, command: str) -> tuple[int, list[str]]:
            if command == "cat":
                with self.lock:
                    self.held[host] += 1
                closed.wait(10)
                with self.lock:
                    self.held[host] -= 1
            return 0, []

        remote = FakeRemoteRunner("root", answer)
        remote.close_all = closed.set  # type: ignore[method-assign]
        self.opened.append(remote)
        return remote


def test_a_restart_holds_each_worker_once(tmp_path: Path) -> None:
    """The held sessions of a failed attempt end with it, before the restart's cleanup: every
    attempt holds each worker exactly once, and none is left held at the end."""
    conns, at_submit, jobs = Connections(), [], ["FAILED", "SUCCEEDED"]
    ray = FakeRay.alive(HOSTS)

    def local(argv: object) -> tuple[int, list[str]]:
        words = list(argv)  # type: ignore[call-overload]
        if words[:3] == ["ray", "job", "submit"]:
            deadline = time.monotonic() + 2  # every hold of this attempt is on its way
            while sum(conns.held.values()) < len(HOSTS) - 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            with conns.lock:
                at_submit.append(dict(conns.held))
            job = f"raysubmit_{len(at_submit)}"
            ray.statuses[job] = jobs[len(at_submit) - 1]
            return 0, [f"Job '{job}' submitted successfully"]
        return 0, []

    plan = plan_for(tmp_path, checkpoint_dir=str(tmp_path / "ckpt"))
    rt = Runtime(FakeLocalRunner(local), conns.connect(), ray, FakeHostFacts(local={HOSTS[0]}),  # type: ignore[arg-type]
                 RecordingReporter(), connect=conns.connect)
    ops = build_operations(plan, WatchSettings(watch=False, max_restarts=1, host_wait_s=1, collect=False), "P")
    result = Supervisor(plan, ops, rt, tmp_path / "run").run()
    assert result.exit_code == 0 and result.job_id == "raysubmit_2"
    assert at_submit == [dict.fromkeys(HOSTS[1:], 1)] * 2  # one held session per worker, in both attempts
    deadline = time.monotonic() + 2
    while any(conns.held.values()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert conns.held == dict.fromkeys(HOSTS[1:], 0)
    assert all(not any(c[2] == "cat" for c in r.calls) for r in conns.opened[:1])  # never on the run's connections
