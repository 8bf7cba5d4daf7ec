"""The executor's parts without a rack: local runner, launcher-sparing pkill, ssh options."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from glm45_launch.runtime.interfaces import Row as Outcome
from glm45_launch.runtime.local import LocalRunner
from glm45_launch.runtime.procs import ancestors
from glm45_launch.runtime.results import CommandResult as LocalResult
from glm45_launch.runtime.ssh import SshOptions, wrap_remote
from glm45_launch.runtime.sshhosts import known_hosts_files


def test_ancestors_reach_init() -> None:
    mine = ancestors()
    assert os.getpid() in mine and os.getppid() in mine and 1 in mine


def test_local_runner_streams_logs_and_exit_code(tmp_path: Path) -> None:
    seen: list[str] = []
    res = LocalRunner().run([sys.executable, "-c", "print('a'); print('b'); raise SystemExit(3)"],
                            tmp_path / "log", seen.append, env={"X": "1"})
    assert (res.exit_code, seen) == (3, ["a", "b"])
    log = (tmp_path / "log").read_text()
    assert "a\nb\n" in log and "# exit=3" in log


def test_local_runner_timeout_kills_the_process_group(tmp_path: Path) -> None:
    marker = tmp_path / "child.pid"
    script = f"import subprocess, pathlib; p = subprocess.Popen(['sleep', '300']); " \
             f"pathlib.Path({str(marker)!r}).write_text(str(p.pid)); p.wait()"
    start = time.monotonic()
    res = LocalRunner().run([sys.executable, "-c", script], tmp_path / "log", timeout_s=2)
    assert time.monotonic() - start < 20
    assert res.error and "timed out" in res.error
    child = int(marker.read_text())
    time.sleep(0.2)
    # The grandchild went with its group: a zombie at most, never still sleeping.
    state = Path(f"/proc/{child}/stat").read_text().split()[2] if Path(f"/proc/{child}").exists() else "gone"
    assert state in ("gone", "Z")


def test_local_runner_masks_secrets(tmp_path: Path) -> None:
    seen: list[str] = []
    runner = LocalRunner(mask=lambda text: text.replace("hunter22", "***"))
    runner.run(["echo", "key=hunter22"], tmp_path / "log", seen.append)
    assert seen == ["key=***"]
    assert "hunter22" not in (tmp_path / "log").read_text()


def test_pkill_sparing_spares_what_it_is_told(tmp_path: Path) -> None:
    # Two processes of ours with a unique name: only the one not spared is killed.
    name = f"g45t{uuid.uuid4().hex[:8]}"
    code = f"open('/proc/self/comm', 'w').write({name!r}); import time; time.sleep(120)"
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(2)]
    try:
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{p.pid}/comm").read_text().strip() != name for p in procs):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        res = LocalRunner().pkill_sparing(["pkill", "-9", name], tmp_path / "log", spare={procs[0].pid})
        assert res.exit_code == 0
        assert procs[1].wait(timeout=10) == -9
        assert procs[0].poll() is None
        assert f"spared [{procs[0].pid}]" in (tmp_path / "log").read_text()
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_remote_wrapper_keeps_the_command_word_for_word() -> None:
    command = "pkill -9 sglang ; ray stop --force ; ray start --address=10.0.0.1:6379 --num-gpus 8"
    wrapped = wrap_remote(command, 300)
    argv = shlex.split(wrapped)
    assert argv[:4] == ["timeout", "--kill-after=5", "300", "sh"] and argv[4:] == ["-c", command]


def test_ssh_options_are_pure() -> None:
    opts = SshOptions(identity=("/k",), connect_timeout=7, known_hosts=("/extra",))
    files = known_hosts_files(opts)
    assert files[:2] == [Path("/etc/ssh/ssh_known_hosts"), Path("~/.ssh/known_hosts").expanduser()]
    assert files[-1] == Path("/extra")


@pytest.mark.parametrize(("res", "error"), [
    (LocalResult(argv=["x"], exit_code=0), None),
    (LocalResult(argv=["x"], exit_code=2), "exit 2"),
    (LocalResult(argv=["x"], error="cannot run x"), "cannot run x"),
])
def test_outcome_rows(res: LocalResult, error: str | None) -> None:
    row = Outcome.of("h", "what", res)
    assert row.error == error and row.ok is (error is None)


@pytest.mark.parametrize(("argv", "sig", "queries"), [
    (["pkill", "-9", "python"], 9, [["python"]]),
    (["pkill", "-KILL", "-f", "x"], 9, [["-f", "x"]]),
    (["pkill", "--signal", "SIGKILL", "ray"], 9, [["ray"]]),
    (["pkill", "--signal=TERM", "ray"], 15, [["ray"]]),
    (["pkill", "-s", "42", "ray"], 15, [["-s", "42", "ray"]]),  # pkill -s is a session id
    (["killall", "-s", "KILL", "python", "ray"], 9, [["-x", "python"], ["-x", "ray"]]),
    (["killall", "-9", "sglang"], 9, [["-x", "sglang"]]),
    (["pkill", "python"], 15, [["python"]]),
])
def test_kill_commands_parse_like_procps(argv: list[str], sig: int, queries: list[list[str]]) -> None:
    from glm45_launch.runtime.procs import parse_kill

    got_sig, got = parse_kill(argv)
    assert (int(got_sig), got) == (sig, queries)


def test_sleep_durations_and_bad_input() -> None:
    from glm45_launch.errors import LaunchError
    from glm45_launch.runtime.procs import parse_kill, parse_sleep

    assert parse_sleep(["3"]) == 3 and parse_sleep(["3s", "1m"]) == 63 and parse_sleep([".5"]) == 0.5
    with pytest.raises(LaunchError, match="not a duration"):
        parse_sleep(["soon"])
    with pytest.raises(LaunchError, match="unknown signal"):
        parse_kill(["pkill", "--signal", "NOPE", "x"])


def test_ssh_runner_lifts_the_open_files_limit(tmp_path: Path) -> None:
    """A socket per host for the whole run: a 1024 soft limit would stop a fan-out at ~1000 hosts."""
    import resource

    from glm45_launch.runtime.ssh import SshRunner

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip(f"hard open-files limit {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        SshRunner(SshOptions(known_hosts=(str(tmp_path / "none"),)))
        lifted = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        assert lifted == (65536 if hard == resource.RLIM_INFINITY else min(65536, hard))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
