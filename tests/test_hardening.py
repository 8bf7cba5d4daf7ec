"""Hostile inputs (issue 10.3, 10.4): nothing injects, hangs, leaks or crashes; one up per head."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from glm45_launch.core.builder import build_plan
from glm45_launch.core.hostfile import numeric_ipv4, parse_hostfile_text
from glm45_launch.core.plan import LaunchSpec
from glm45_launch.core.render import render
from glm45_launch.errors import LaunchError
from glm45_launch.runtime.lock import head_lock

CLI = [sys.executable, "-m", "glm45_launch"]
HOSTS8 = "".join(f"10.0.0.{i} slots=8\n" for i in range(1, 9))


def cli(args: list[str], tmp: Path, env: dict[str, str] | None = None, timeout: float = 60,
        prefix: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("BASE_DIR", "MLP_WORKER_0_HOST", "MLP_SOCKET_IFNAME")}
    return subprocess.run([*(prefix or []), *CLI, *args], cwd=tmp, env={**base, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def one_error(res: subprocess.CompletedProcess[str]) -> str:
    """The one error line (``up`` may print the plan's notes and warnings before it)."""
    lines = [ln for ln in res.stderr.strip().splitlines() if not ln.startswith(("glm45-launch: note:",
                                                                                 "glm45-launch: warning:"))]
    assert res.returncode in (1, 2), res
    assert len(lines) == 1 and lines[0].startswith("glm45-launch: error: "), res.stderr
    assert "Traceback" not in res.stderr and "internal error" not in res.stderr
    return lines[0]


# --- plan --format bash: a newline in a value never becomes a command ----------------------------

def test_bash_plan_keeps_newlines_inside_quotes_and_comments(tmp_path: Path) -> None:
    """Run the generated script with every command it calls replaced by a recorder: the
    injected `touch` must never run, and no canary appears."""
    canary = tmp_path / "PWNED"
    hostfile = tmp_path / "hosts"
    hostfile.write_text(HOSTS8)
    evil = f"\ntouch {canary} #"
    res = cli(["plan", "--hostfile", str(hostfile), "--head", "10.0.0.1", "--base-dir", "/data", "--format", "bash",
               "--workdir", f"/w{evil}", "--checkpoint-dir", f"/ck{evil}", "--mis", "--job-files-dir", f"/j{evil}",
               "--entry", f"train.py{evil}"], tmp_path)
    assert res.returncode == 0, res.stderr
    script = res.stdout
    for line in script.splitlines():
        if line.startswith("#"):
            assert "\n" not in line and ("touch" not in line or "\\ntouch" in line)
    shims = tmp_path / "shims"
    shims.mkdir()
    log = tmp_path / "calls"
    for name in ("ray", "ssh", "pkill", "sleep", "touch", "mkdir", "cat", "wait", "python3"):
        shim = shims / name
        shim.write_text(f'#!/bin/sh\nprintf "%s\\0" "{name} $*" >> {log}\n')  # NUL-separated: args hold newlines
        shim.chmod(0o755)
    run = subprocess.run(["/bin/bash", "-c", 'cd() { :; }; source "$0"', "/dev/stdin"], input=script, text=True,
                         capture_output=True, env={"PATH": str(shims)}, timeout=30)
    assert not canary.exists(), run
    calls = log.read_text().split("\0")
    assert not any(c.startswith("touch") for c in calls), calls
    assert any(c.startswith("ray job submit") for c in calls)


def test_bash_plan_releases_held_sessions_when_the_job_ends(tmp_path: Path) -> None:
    """--hold-workers in the bash plan: each held session reads a FIFO until the script closes
    its only writer after the job; run with `ssh` standing in as `cat` (what the held command
    runs), the script must end and leave no session behind."""
    hostfile = tmp_path / "hosts"
    hostfile.write_text(HOSTS8)
    res = cli(["plan", "--hostfile", str(hostfile), "--head", "10.0.0.1", "--profile", "air-p2p", "--model",
               "glm4.5-106B-A12B", "--base-dir", "/root", "--hold-workers", "--format", "bash"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("< \"$hold_fifo\" 9>&- &") == 7
    shims = tmp_path / "shims"
    shims.mkdir()
    pids = tmp_path / "held"
    for name in ("ray", "pkill", "sleep", "mkdir", "env"):
        (shims / name).write_text("#!/bin/sh\nexit 0\n")
    # `ssh HOST cat` is a held session: it reads its stdin until the end; other ssh commands just return.
    (shims / "ssh").write_text(f'#!/bin/sh\n[ "$2" = cat ] || exit 0\necho $$ >> {pids}\nexec /bin/cat > /dev/null\n')
    for shim in shims.iterdir():
        shim.chmod(0o755)
    run = subprocess.run(["/bin/bash", "-c", 'wait() { :; }; source "$0"', "/dev/stdin"], input=res.stdout,
                         text=True, capture_output=True, env={"PATH": f"{shims}:/usr/bin:/bin"}, timeout=30)
    assert run.returncode == 0, run.stderr
    held = [int(p) for p in pids.read_text().split()]
    assert len(held) == 7
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{p}").exists() and "Z" not in Path(f"/proc/{p}/stat").read_text().split()[2]
              for p in held):
        assert time.monotonic() < deadline, "a held session outlived the script"
        time.sleep(0.1)


# --- hostfiles: regular files, bounded reads, short errors -------------------------------------

@pytest.mark.parametrize("kind", ["fifo", "device", "too-big", "directory"])
def test_hostfile_must_be_a_small_regular_file(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "hosts"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        path = Path("/dev/zero")
    elif kind == "too-big":
        path.write_bytes(b"10.0.0.1\n" * (5 * 1024 * 1024 // 9 + 1))
    else:
        path.mkdir()
    start = time.monotonic()
    res = cli(["plan", "--hostfile", str(path), "--head", "10.0.0.1", "--base-dir", "/d"], tmp_path, timeout=20)
    assert time.monotonic() - start < 15
    line = one_error(res)
    assert str(path) in line
    assert {"fifo": "is a FIFO", "device": "is a device", "too-big": "too big", "directory": "is a directory"}[kind] in line


def test_a_huge_hostfile_line_gives_a_short_error(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text("10.0.0.1\n" + "a" * 3_000_000 + "\n")
    line = one_error(cli(["plan", "--hostfile", str(path), "--head", "10.0.0.1", "--base-dir", "/d"], tmp_path))
    assert len(line) < 1200 and f"{path}:2:" in line


# --- the head as a worker ------------------------------------------------------------------------

@pytest.mark.parametrize(("worker", "why"), [
    ("localhost", "is a loopback address"),
    ("127.0.0.1", "is a loopback address"),
    ("127.1.2.3", "is a loopback address"),
    ("::1", "is a loopback address"),
    ("0x0a000001", "is the head 10.0.0.1 (--head / MLP_WORKER_0_HOST) written another way"),
    ("0x0a.0.0.1", "is the head 10.0.0.1 (--head / MLP_WORKER_0_HOST) written another way"),
])
def test_a_worker_that_is_the_head_or_loopback_is_refused(worker: str, why: str) -> None:
    hosts = parse_hostfile_text(f"10.0.0.2\n{worker}\n", "hosts")
    with pytest.raises(LaunchError, match=r"^hosts:2: " + worker.replace(".", r"\.") + " " + why.replace("(", r"\(")
                       .replace(")", r"\)").replace(".", r"\.")):
        build_plan(LaunchSpec(hostfile=hosts, head="10.0.0.1", base_dir="/d"))


def test_the_head_written_twice_names_both_lines() -> None:
    with pytest.raises(LaunchError, match=r"^hosts:2: duplicate host '0x0a000001' \(first on line 1\)"):
        parse_hostfile_text("10.0.0.1\n0x0a000001\n", "hosts")


def test_numeric_ipv4_forms_are_read_like_the_resolver() -> None:
    assert [numeric_ipv4(x) for x in ("0x0a000001", "10.1", "012.0.0.1", "167772161", "node1", "256.1.1.1")] == [
        "10.0.0.1", "10.0.0.1", "10.0.0.1", "10.0.0.1", None, None]


# --- errors never echo a secret ------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["--set", "WANDB.--wandb-key hunter2hunter2"],
    ["--set", "WANDB.--wandb-key:hunter2hunter2"],
    ["--env", "WANDB_API_KEY hunter2hunter2"],
    ["--env", "HF_TOKEN:hunter2hunter2"],
])
def test_a_mistyped_secret_is_not_echoed(tmp_path: Path, args: list[str]) -> None:
    hostfile = tmp_path / "hosts"
    hostfile.write_text(HOSTS8)
    res = cli(["plan", "--hostfile", str(hostfile), "--head", "10.0.0.1", "--base-dir", "/d", *args], tmp_path)
    line = one_error(res)
    assert "hunter2" not in res.stderr + res.stdout and "***" in line


def test_secrets_stay_masked_in_every_plan_format() -> None:
    hosts = parse_hostfile_text(HOSTS8, "hosts")
    from glm45_launch.core.overrides import build_overrides

    plan = build_plan(LaunchSpec(hostfile=hosts, head="10.0.0.1", base_dir="/d",
                                 overrides=build_overrides(sets=["WANDB.--wandb-key=hunter2hunter2"])))
    for fmt in ("text", "json", "bash"):
        assert "hunter2" not in render(plan, fmt)


# --- --run-dir problems name the directory, exit 1 or 2, never 70 ---------------------------------

def _up_args(tmp: Path) -> list[str]:
    hostfile = tmp / "hosts1"
    hostfile.write_text("127.0.0.1 slots=8\n")
    return ["up", "--hostfile", str(hostfile), "--head", "127.0.0.1", "--base-dir", str(tmp), "--force",
            "--skip-preflight", "--no-cleanup"]


def test_run_dir_not_writable(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("x")
    line = one_error(cli([*_up_args(tmp_path), "--run-dir", str(blocked / "run")], tmp_path))
    assert str(blocked / "run") in line and "--run-dir" in line


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root for a private tmpfs")
def test_run_dir_on_a_full_disk(tmp_path: Path) -> None:
    """A 64 KiB tmpfs, filled, in a private mount namespace: the launcher says the disk is full."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    script = (f"mount -t tmpfs -o size=64k none {mnt} && head -c 1M /dev/zero > {mnt}/fill 2>/dev/null; "
              f"exec {' '.join(CLI)} {' '.join(_up_args(tmp_path))} --run-dir {mnt}/run")
    res = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], capture_output=True,
                         text=True, timeout=60, env={k: v for k, v in os.environ.items() if k != "MLP_WORKER_0_HOST"})
    line = one_error(res)
    assert res.returncode == 1 and f"--run-dir {mnt}/run: not writable: no space left on the device" in line


# --- one up per head -----------------------------------------------------------------------------

def test_a_second_up_is_refused_naming_the_first(tmp_path: Path) -> None:
    lock_dir = tmp_path / "lock"
    with head_lock(tmp_path / "first-run", lock_dir / "up.lock"):
        res = cli([*_up_args(tmp_path), "--run-dir", str(tmp_path / "second")], tmp_path,
                  env={"GLM45_LOCK_DIR": str(lock_dir)})
        line = one_error(res)
        assert res.returncode == 1
        assert f"another `glm45-launch up` is running on this head: pid {os.getpid()}, started " in line
        assert f"run {tmp_path / 'first-run'}" in line
    # Released with its holder: the next one may take it.
    with head_lock(None, lock_dir / "up.lock"):
        pass


def test_the_lock_goes_with_a_killed_holder(tmp_path: Path) -> None:
    lock = tmp_path / "up.lock"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from glm45_launch.runtime.lock import head_lock\n"
                               f"with head_lock(None, __import__('pathlib').Path({str(lock)!r})):\n"
                               "    print('held', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(LaunchError, match=rf"pid {holder.pid}"), head_lock(None, lock):
            pass
    finally:
        holder.kill()
        holder.wait()
    with head_lock(None, lock):
        assert stat.S_ISREG(lock.stat().st_mode)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root for a PID namespace")
def test_down_and_status_take_no_lock(tmp_path: Path) -> None:
    """With the lock held, down and status still run. The head 127.0.0.1 is this machine, so
    down's ``ray stop --force`` runs here: in a PID namespace of its own, where it sees no
    other test's Ray."""
    hostfile = tmp_path / "hosts"
    hostfile.write_text("127.0.0.1\n")
    with head_lock(None, tmp_path / "up.lock"):
        for cmd in ("down", "status"):
            res = cli([cmd, "--hostfile", str(hostfile),
                       *(["--run-dir", str(tmp_path / "d")] if cmd == "down" else [])],
                      tmp_path, env={"GLM45_LOCK_DIR": str(tmp_path)}, timeout=90,
                      prefix=["unshare", "--pid", "--fork", "--mount-proc"])
            assert "another `glm45-launch up`" not in res.stderr, res.stderr
            assert "127.0.0.1" in res.stderr + res.stdout
            assert "Traceback" not in res.stderr
            assert res.returncode == (0 if cmd == "down" else 1), res
