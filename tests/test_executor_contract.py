"""The executor runs exactly the plan: recorded with injected runners (no processes, no SSH)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from glm45_launch.core.builder import build_plan
from glm45_launch.core.hostfile import parse_hostfile_text
from glm45_launch.core.plan import LaunchSpec
from glm45_launch.errors import LaunchError
from glm45_launch.runtime.executor import ExecOptions, Executor
from glm45_launch.testing.fakes import (
    FakeHostFacts,
    FakeLocalRunner,
    FakeRay,
    FakeRemoteRunner,
    RecordingReporter,
)

HOSTS = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]


class FakeLocal(FakeLocalRunner):
    """Records head-side argv; `ray job submit` prints a job id like the real one."""

    def __init__(self, calls: list[list[str]], fail: str | None = None) -> None:
        def answer(argv: Sequence[str]) -> tuple[int, list[str]]:
            lines = ["Job 'raysubmit_abc' submitted successfully"] if list(argv[:3]) == ["ray", "job", "submit"] else []
            return (1 if fail and fail in " ".join(argv) else 0), lines

        super().__init__(answer)
        self.calls = calls


class FakeSsh(FakeRemoteRunner):
    """Records (host, command); one host can fail its `ray start`."""

    def __init__(self, calls: list[list[str]], user: str, fail_host: str | None = None) -> None:
        super().__init__(user, lambda host, command: (1 if host == fail_host and "ray start" in command else 0, []))
        self.calls = calls


def _executor(tmp_path: Path, local: list[list[str]], remote: list[list[str]], **kw: Any) -> Executor:
    spec = LaunchSpec(hostfile=parse_hostfile_text("\n".join(HOSTS)), head=HOSTS[0], base_dir="/data",
                      workdir=str(tmp_path), actor_num_nodes=4)
    plan = build_plan(spec)
    return Executor(plan, ExecOptions(run_dir=tmp_path / "run", quiet=True),
                    local=FakeLocal(local, kw.get("fail")), remote=FakeSsh(remote, "root", kw.get("fail_host")),
                    ray=FakeRay.alive(HOSTS), host=FakeHostFacts(local={HOSTS[0]}), reporter=RecordingReporter())


def test_up_runs_exactly_the_plans_invocations(tmp_path: Path) -> None:
    local: list[list[str]] = []
    remote: list[list[str]] = []
    ex = _executor(tmp_path, local, remote)
    result = ex.up()
    assert (result.exit_code, result.job_id, result.job_status) == (0, "raysubmit_abc", "SUCCEEDED")
    want = ex.plan.invocations()
    # The recipe's blind `sleep 3`s become "wait until the killed processes are gone".
    head_want = [a for a in want if a[0] != "ssh" and a[0] != "sleep"]
    assert local == head_want
    assert sorted(remote) == [a for a in want if a[0] == "ssh"]


def test_a_failing_worker_stops_what_was_started(tmp_path: Path) -> None:
    local: list[list[str]] = []
    remote: list[list[str]] = []
    ex = _executor(tmp_path, local, remote, fail_host=HOSTS[2])
    with pytest.raises(LaunchError, match=r"1 worker\(s\) failed to start: 10\.0\.0\.3"):
        ex.up()
    stops = [c for c in remote if c[2] == "ray stop --force"]
    # Every worker whose command was sent is stopped, the failed one included; the head here.
    assert sorted(c[1] for c in stops) == [f"root@{h}" for h in HOSTS[1:]]
    assert local[-1] == ["ray", "stop", "--force"]
    assert not any(c[:3] == ["ray", "job", "submit"] for c in local)


def test_a_failing_head_starts_no_job(tmp_path: Path) -> None:
    local: list[list[str]] = []
    remote: list[list[str]] = []
    ex = _executor(tmp_path, local, remote, fail="--head")
    with pytest.raises(LaunchError, match="ray start --head failed on 10.0.0.1"):
        ex.up()
    assert not any(c[:3] == ["ray", "job", "submit"] for c in local)
    assert local[-1] == ["ray", "stop", "--force"]


def test_no_wait_is_in_the_plan_not_added_by_the_executor(tmp_path: Path) -> None:
    spec = LaunchSpec(hostfile=parse_hostfile_text("\n".join(HOSTS)), head=HOSTS[0], base_dir="/data",
                      workdir=str(tmp_path), actor_num_nodes=4, no_wait=True)
    plan = build_plan(spec)
    assert plan.submit_argv[:4] == ["ray", "job", "submit", "--no-wait"]
    local: list[list[str]] = []
    ex = Executor(plan, ExecOptions(run_dir=tmp_path / "run", quiet=True), local=FakeLocal(local),
                  remote=FakeSsh([], "root"), ray=FakeRay.alive(HOSTS), host=FakeHostFacts(local={HOSTS[0]}),
                  reporter=RecordingReporter())
    result = ex.up()
    assert result.exit_code == 0 and result.job_id == "raysubmit_abc"
    assert local[-1] == plan.submit_argv
