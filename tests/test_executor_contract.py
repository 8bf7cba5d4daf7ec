"""The executor runs exactly the plan: recorded with injected runners (no processes, no SSH)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from glm45_launch.core.hostfile import parse_hostfile_text
from glm45_launch.core.plan import LaunchSpec, build_plan
from glm45_launch.errors import LaunchError
from glm45_launch.runtime import cluster
from glm45_launch.runtime.executor import ExecOptions, Executor
from glm45_launch.runtime.local import LocalResult, LocalRunner
from glm45_launch.runtime.ssh import RemoteResult, SshOptions

HOSTS = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]


class FakeLocal(LocalRunner):
    """Records head-side argv; `ray job submit` prints a job id like the real one."""

    def __init__(self, calls: list[list[str]], fail: str | None = None) -> None:
        super().__init__()
        self.calls, self.fail = calls, fail

    def run(self, argv: Sequence[str], log_path: Path, echo: Callable[[str], None] | None = None,
            env: Any = None, cwd: str | None = None, timeout_s: float | None = None,
            on_line: Callable[[str], None] | None = None) -> LocalResult:
        self.calls.append(list(argv))
        if on_line and argv[:3] == ["ray", "job", "submit"]:
            on_line("Job 'raysubmit_abc' submitted successfully")
        code = 1 if self.fail and self.fail in " ".join(argv) else 0
        return LocalResult(argv=list(argv), exit_code=code)

    def pkill_sparing(self, argv: Sequence[str], log_path: Path, spare: set[int]) -> LocalResult:
        assert spare, "the launcher's own process and ancestors must be spared"
        self.calls.append(list(argv))
        return LocalResult(argv=list(argv), exit_code=1)  # nothing matched: no settle wait


class FakeSsh:
    """Records (host, command); one host can fail its `ray start`."""

    def __init__(self, calls: list[list[str]], user: str, fail_host: str | None = None) -> None:
        self.calls, self.user, self.fail_host = calls, user, fail_host

    def run(self, host: str, command: str, log_path: Path, echo: Any = None, timeout_s: Any = None) -> RemoteResult:
        self.calls.append(["ssh", f"{self.user}@{host}", command])
        failed = host == self.fail_host and "ray start" in command
        return RemoteResult(host=host, command=command, exit_code=1 if failed else 0)

    def close_all(self) -> None:
        pass


@pytest.fixture
def fake_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster, "is_local_address", lambda host: host == HOSTS[0])
    monkeypatch.setattr(cluster, "port_in_use", lambda host, port, timeout_s=1.0: False)
    monkeypatch.setattr(cluster, "alive_nodes", lambda url, timeout_s=5: [
        cluster.NodeInfo(ip=h, alive=True, gpus=8.0, is_head=h == HOSTS[0]) for h in HOSTS])
    monkeypatch.setattr(cluster, "job_status", lambda url, job_id: "SUCCEEDED")


def _executor(tmp_path: Path, local: list[list[str]], remote: list[list[str]], **kw: Any) -> Executor:
    spec = LaunchSpec(hostfile=parse_hostfile_text("\n".join(HOSTS)), head=HOSTS[0], base_dir="/data",
                      workdir=str(tmp_path), actor_num_nodes=4)
    plan = build_plan(spec)
    return Executor(plan, SshOptions(), ExecOptions(run_dir=tmp_path / "run", quiet=True),
                    local=FakeLocal(local, kw.get("fail")), remote=FakeSsh(remote, "root", kw.get("fail_host")))


def test_up_runs_exactly_the_plans_invocations(tmp_path: Path, fake_cluster: None) -> None:
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


def test_a_failing_worker_stops_what_was_started(tmp_path: Path, fake_cluster: None) -> None:
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


def test_a_failing_head_starts_no_job(tmp_path: Path, fake_cluster: None) -> None:
    local: list[list[str]] = []
    remote: list[list[str]] = []
    ex = _executor(tmp_path, local, remote, fail="--head")
    with pytest.raises(LaunchError, match="ray start --head failed on 10.0.0.1"):
        ex.up()
    assert not any(c[:3] == ["ray", "job", "submit"] for c in local)
    assert local[-1] == ["ray", "stop", "--force"]


def test_no_wait_is_in_the_plan_not_added_by_the_executor(tmp_path: Path, fake_cluster: None) -> None:
    spec = LaunchSpec(hostfile=parse_hostfile_text("\n".join(HOSTS)), head=HOSTS[0], base_dir="/data",
                      workdir=str(tmp_path), actor_num_nodes=4, no_wait=True)
    plan = build_plan(spec)
    assert plan.submit_argv[:4] == ["ray", "job", "submit", "--no-wait"]
    local: list[list[str]] = []
    ex = Executor(plan, SshOptions(), ExecOptions(run_dir=tmp_path / "run", quiet=True),
                  local=FakeLocal(local), remote=FakeSsh([], "root"))
    result = ex.up()
    assert result.exit_code == 0 and result.job_id == "raysubmit_abc"
    assert local[-1] == plan.submit_argv
