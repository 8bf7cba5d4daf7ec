"""Supervision under faults that are not job failures: a full run directory, a stop from
another shell while `up` restarts, `down` after the hostfile changed (real processes and files
where the fault is the machine's; the runtime's test doubles where it is the cluster's)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from glm45_launch.core.builder import build_plan
from glm45_launch.core.hostfile import parse_hostfile_text
from glm45_launch.core.operations import WatchSettings, build_operations
from glm45_launch.core.plan import LaunchSpec
from glm45_launch.errors import LaunchError
from glm45_launch.runtime import jobs
from glm45_launch.runtime.causes import CauseKind, RunState
from glm45_launch.runtime.local import LocalRunner
from glm45_launch.runtime.lock import head_lock
from glm45_launch.runtime.records import RunRecords, read_events
from glm45_launch.runtime.supervisor import Supervisor
from glm45_launch.runtime.usecases import down
from glm45_launch.testing.fakes import FakeLocalRunner, FakeRay, FakeRemoteRunner, fake_runtime

HOSTS = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
FAST = WatchSettings(watch=False, interval_s=0.05, probe_timeout_s=0.3, stop_grace_s=0.5, collect=False,
                     host_wait_s=5)


@pytest.fixture
def full_disk(tmp_path: Path):
    """A 2 MiB tmpfs: a run directory that fills up."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where = tmp_path / "small"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_full_run_dir_ends_the_log_not_the_command_and_the_records_still_write(full_disk: Path) -> None:
    warned: list[str] = []
    records = RunRecords(full_disk, warned.append)
    records.reserve()  # as the supervisor does when a run starts
    # A job that prints steadily, 6 MiB in all, into a directory with about 1 MiB left.
    code = "import sys\nfor i in range(6000): print(f'line {i} ' + 'x' * 1024)\nprint('done')\nsys.exit(3)"
    res = LocalRunner(warn=warned.append).run([sys.executable, "-c", code], full_disk / "job.log")
    assert res.exit_code == 3 and res.error is None and res.output_tail[-1] == "done"  # streamed to the end
    assert len(warned) == 1 and "job.log: no space left on the device: this log is incomplete" in warned[0]
    # The small records are written anyway: the reserve made room.
    assert records.write_json("summary.json", {"exit_code": 3}) and records.write_json("attempts.json", [])
    records.event("attempt-end", attempt=1)
    assert json.loads((full_disk / "summary.json").read_text()) == {"exit_code": 3}
    assert [e["event"] for e in read_events(full_disk / "events.jsonl")] == ["attempt-end"]


def _plan(tmp_path: Path):
    return build_plan(LaunchSpec(hostfile=parse_hostfile_text("\n".join(HOSTS)), head=HOSTS[0], base_dir="/data",
                                 workdir=str(tmp_path), actor_num_nodes=3, checkpoint_dir=str(tmp_path / "ckpt")))


def test_stop_and_logs_while_up_restarts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`glm45-launch stop` while `up` waits for the nodes between attempts (no job server
    answers): the stop is recorded in the run directory and up ends the run instead of
    resubmitting; `logs` meanwhile says that up is restarting."""
    monkeypatch.setenv("GLM45_LOCK_DIR", str(tmp_path / "lock"))
    monkeypatch.setattr(jobs, "keep_out_of_the_cleanup", lambda: None)
    run = tmp_path / "run"
    ray = FakeRay.alive(HOSTS)
    submitted: list[str] = []
    other_shell: dict[str, object] = {}

    def local(argv: Sequence[str]) -> tuple[int, list[str]]:
        if list(argv[:3]) == ["ray", "job", "submit"]:
            submitted.append(job := f"raysubmit_{len(submitted) + 1}")
            ray.statuses[job] = "FAILED"
            return 1, [f"Job '{job}' submitted successfully"]
        return 0, []

    def remote(host: str, command: str) -> tuple[int | None, list[str]]:
        if command == "pgrep -x raylet" and "stop" not in other_shell:  # up waits for the nodes: another shell acts
            other_shell["stop"] = True
            away = fake_runtime(ray=FakeRay())  # from that shell no job server answers (the cluster restarts)
            away.ray.job_status = _refused  # type: ignore[method-assign]
            ref = jobs.find_job(run_dir=run)
            try:
                jobs.logs(ref, away, lambda line: None)
            except LaunchError as exc:
                other_shell["logs"] = str(exc)
            other_shell["code"] = jobs.stop(ref, away)
            other_shell["said"] = away.reporter.text()  # type: ignore[attr-defined]
        return 0, []

    plan = _plan(tmp_path)
    rt = fake_runtime(FakeLocalRunner(local), FakeRemoteRunner(answer=remote), ray, here=[HOSTS[0]])
    ops = build_operations(plan, replace(FAST, max_restarts=2), "P")
    with head_lock(run):
        result = Supervisor(plan, ops, rt, run).run()
    assert submitted == ["raysubmit_1"]  # never resubmitted
    assert result.state is RunState.STOPPED and result.exit_code == 1
    assert result.cause is not None and result.cause.kind is CauseKind.STOP_REQUESTED
    assert result.error is not None and result.error.startswith("stopped: by glm45-launch stop (pid ")
    assert other_shell["code"] == 0 and "up ends the run instead of resubmitting" in str(other_shell["said"])
    assert "is restarting (attempt 1" in str(other_shell["logs"])
    assert "stop-requested" in [e["event"] for e in read_events(run / "events.jsonl")]


def _refused(address: str, job_id: str) -> str:
    raise ConnectionError("refused")


def test_down_names_the_hosts_the_last_run_started_beyond_the_hostfile(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    (runs / "last").mkdir(parents=True)
    (runs / "last" / "plan.json").write_text(json.dumps({"cluster": {"nodes": HOSTS}}))
    smaller = parse_hostfile_text("\n".join(HOSTS[:2]))  # the hostfile was edited down to 2 hosts
    remote = FakeRemoteRunner()
    rt = fake_runtime(remote=remote, here=[HOSTS[0]])
    result = down(smaller, HOSTS[0], rt, tmp_path / "d", runs=runs)
    assert result.forgotten == [HOSTS[2]] and not result.failed
    assert [c[1] for c in remote.calls] == [f"root@{HOSTS[1]}"]  # the head stopped here, the third not at all
    assert rt.local.calls == [["ray", "stop", "--force"]]  # type: ignore[attr-defined]
    assert f"the last run also started Ray on {HOSTS[2]}" in rt.reporter.text("warn")  # type: ignore[attr-defined]
    remote.calls.clear()
    result = down(smaller, HOSTS[0], rt, tmp_path / "d", runs=runs, all_started=True)
    assert sorted(c[1] for c in remote.calls) == [f"root@{h}" for h in HOSTS[1:]]
