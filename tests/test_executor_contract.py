"""The executor runs exactly the plan: recorded with injected runners (no processes, no SSH)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from glm45_launch.core.builder import build_plan
from glm45_launch.core.hostfile import parse_hostfile_text
from glm45_launch.core.operations import WatchSettings, build_operations
from glm45_launch.core.plan import LaunchSpec, Plan
from glm45_launch.runtime.supervisor import RunResult, Supervisor
from glm45_launch.testing.fakes import FakeLocalRunner, FakeRay, FakeRemoteRunner, fake_runtime

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


FORCED = "pkill -9 -f 'ray [s]tart' ; ray stop --force"  # the one forced stop, on a worker


def _up(tmp_path: Path, local: list[list[str]], remote: list[list[str]], plan: Plan | None = None,
        **kw: Any) -> tuple[RunResult, Plan]:
    """The supervisor over the plan (watch off): what the library's ``up`` runs after preflight."""
    if plan is None:
        spec = LaunchSpec(hostfile=parse_hostfile_text("\n".join(HOSTS)), head=HOSTS[0], base_dir="/data",
                          workdir=str(tmp_path), actor_num_nodes=4)
        plan = build_plan(spec)
    rt = fake_runtime(FakeLocal(local, kw.get("fail")), FakeSsh(remote, "root", kw.get("fail_host")),
                      FakeRay.alive(HOSTS), here=[HOSTS[0]])
    ops = build_operations(plan, WatchSettings(watch=False, collect=False), "P")
    return Supervisor(plan, ops, rt, tmp_path / "run").run(), plan


def test_up_runs_exactly_the_plans_invocations(tmp_path: Path) -> None:
    local: list[list[str]] = []
    remote: list[list[str]] = []
    result, plan = _up(tmp_path, local, remote)
    assert (result.exit_code, result.job_id, result.job_status) == (0, "raysubmit_abc", "SUCCEEDED")
    want = plan.invocations()
    # The recipe's blind `sleep 3`s become "wait until the killed processes are gone".
    head_want = [a for a in want if a[0] != "ssh" and a[0] != "sleep"]
    assert local == head_want
    assert sorted(remote) == [a for a in want if a[0] == "ssh"]


def test_a_failing_worker_stops_what_was_started(tmp_path: Path) -> None:
    local: list[list[str]] = []
    remote: list[list[str]] = []
    result, _ = _up(tmp_path, local, remote, fail_host=HOSTS[2])
    assert result.exit_code == 1 and result.error == "1 worker(s) failed to start: 10.0.0.3"
    stops = [c for c in remote if c[2] == FORCED]
    # Every worker whose command was sent is stopped, the failed one included; the head here.
    assert sorted(c[1] for c in stops) == [f"root@{h}" for h in HOSTS[1:]]
    assert local[-1] == ["ray", "stop", "--force"]
    assert not any(c[:3] == ["ray", "job", "submit"] for c in local)


def test_a_failing_head_starts_no_job(tmp_path: Path) -> None:
    local: list[list[str]] = []
    remote: list[list[str]] = []
    result, _ = _up(tmp_path, local, remote, fail="--head")
    assert result.exit_code == 1 and result.error == "ray start --head failed on 10.0.0.1: exit 1"
    assert not any(c[:3] == ["ray", "job", "submit"] for c in local)
    assert local[-1] == ["ray", "stop", "--force"]


def test_no_wait_is_in_the_plan_not_added_by_the_executor(tmp_path: Path) -> None:
    spec = LaunchSpec(hostfile=parse_hostfile_text("\n".join(HOSTS)), head=HOSTS[0], base_dir="/data",
                      workdir=str(tmp_path), actor_num_nodes=4, no_wait=True)
    plan = build_plan(spec)
    assert plan.submit_argv[:4] == ["ray", "job", "submit", "--no-wait"]
    local: list[list[str]] = []
    result, _ = _up(tmp_path, local, [], plan)
    assert result.exit_code == 0 and result.job_id == "raysubmit_abc" and result.state.value == "submitted"
    assert local[-1] == plan.submit_argv


def test_a_failed_commands_one_line_is_its_tracebacks_cause() -> None:
    from glm45_launch.runtime.results import CommandResult

    tail = ["Traceback (most recent call last):", '  File "ray", line 8, in <module>',
            "PermissionError: [Errno 13] Permission denied: '/venv/ray/core/src/ray/gcs/gcs_server'", "bye"]
    res = CommandResult(host="h", exit_code=1, output_tail=tail)
    assert res.root_error == "PermissionError: [Errno 13] Permission denied: '/venv/ray/core/src/ray/gcs/gcs_server'"
    assert CommandResult(exit_code=1, output_tail=["no error here"]).root_error == ""


def test_a_head_that_is_this_machine_is_any_of_its_addresses_in_rays_node_table() -> None:
    """Ray registers a head started with --node-ip-address 127.0.0.1 under the machine's own
    address: the join, the watch and status still find it; another host is only its own address."""
    from glm45_launch.runtime.interfaces import NodeInfo
    from glm45_launch.testing.fakes import fake_runtime

    rt = fake_runtime(here=["127.0.0.1", "192.0.2.2"])
    nodes = [NodeInfo("192.0.2.2", True, 8, True), NodeInfo("10.0.0.9", False, 8, False)]
    assert [n.ip for n in rt.nodes_of("127.0.0.1", nodes)] == ["192.0.2.2"]
    assert rt.missing(["127.0.0.1", "10.0.0.9", "10.0.0.8"], nodes) == ["10.0.0.9", "10.0.0.8"]
