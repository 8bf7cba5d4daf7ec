"""Hostile scripts under ``parity``'s recorder: every escape attempt is harmless, proven outside.

Each attempt runs twice: with the profile (the recorder as ``parity`` uses it) and without it
(``record._HOOKS = False``: nothing records unknown names or kill, nothing skips a write: the
script meets only the kernel's walls and the shims). The canaries live outside the sandbox: files in
a temporary folder that must stay as they are (or absent), a unix socket and a TCP port
listening on the host that must see no connection, the host's domain name, secrets whose
content must never reach the report, a process of ours that must survive.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from glm45_launch.sandbox import hostprocs, record
from glm45_launch.sandbox.record import LIMITS, Recording, record_script

pytestmark = pytest.mark.skipif(record.bubblewrap() is None, reason="bubblewrap is not installed")
SHADOW = Path("/etc/shadow")
MIB = 1024 * 1024


@pytest.fixture(params=[True, False], ids=["hooks+sandbox", "sandbox-alone"])
def hooks(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    monkeypatch.setattr(record, "_HOOKS", request.param)
    return bool(request.param)


@dataclass
class Canaries:
    """What the script must not reach, outside its sandbox."""

    folder: Path  # a host folder the script knows the path of
    file: Path  # exists: must keep its content
    new: Path  # must not be created
    secret: Path  # its content must never be in the report
    home: Path  # a HOME with .ssh/id_ed25519
    unix: socket.socket
    unix_path: Path
    tcp: socket.socket
    tcp_port: int
    victim: subprocess.Popen[bytes]

    def secrets(self) -> list[str]:
        found = [self.secret.read_text().strip(), (self.home / ".ssh/id_ed25519").read_text().strip()]
        if SHADOW.exists() and os.access(SHADOW, os.R_OK):
            found += [line for line in SHADOW.read_text().splitlines() if line.startswith("root:")]
        ssh = Path("/root/.ssh")
        if ssh.is_dir() and os.access(ssh, os.R_OK):
            found += [p.read_text().strip() for p in ssh.glob("id_*") if p.is_file()]
        return [s for s in found if s]

    def assert_untouched(self, rec: Recording | None = None) -> None:
        assert self.file.read_text() == "keep me\n"
        assert not self.new.exists()
        assert sorted(p.name for p in self.folder.iterdir()) == ["file", "secret", "sock"]
        for listener in (self.unix, self.tcp):
            with pytest.raises(BlockingIOError):
                listener.accept()  # nobody connected
        assert self.victim.poll() is None
        if rec is not None:
            text = json.dumps([rec.invocations, rec.stdout, rec.stderr, rec.notes, [p.answer for p in rec.polls]])
            for secret in self.secrets():
                assert secret not in text


@pytest.fixture
def canaries(tmp_path: Path) -> Iterator[Canaries]:
    folder = tmp_path / "host"
    folder.mkdir()
    (folder / "file").write_text("keep me\n")
    secret = folder / "secret"
    secret.write_text(f"glm45-canary-secret-{os.getpid()}-{time.monotonic_ns()}\n")
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh/id_ed25519").write_text(f"-----BEGIN OPENSSH PRIVATE KEY----- canary {time.monotonic_ns()}\n")
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(str(folder / "sock"))
    unix.listen(8)
    unix.setblocking(False)
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(8)
    tcp.setblocking(False)
    victim = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        yield Canaries(folder, folder / "file", tmp_path / "created", secret, home, unix, folder / "sock", tcp,
                       tcp.getsockname()[1], victim)
    finally:
        victim.kill()
        victim.wait()
        unix.close()
        tcp.close()


def hostile(tmp_path: Path, c: Canaries, body: str, timeout: float = 10, **kw: object) -> Recording:
    """Record ``body`` (a script in its own folder, away from the canaries)."""
    folder = tmp_path / "script"
    folder.mkdir(exist_ok=True)
    script = folder / "hostile.sh"
    script.write_text("#!/bin/bash\n" + body)
    script.chmod(0o755)
    env = {"C_FILE": str(c.file), "C_NEW": str(c.new), "C_SECRET": str(c.secret), "C_SOCK": str(c.unix_path),
           "C_PORT": str(c.tcp_port), "C_PID": str(c.victim.pid), "HOME": str(c.home)}
    start = time.monotonic()
    rec = record_script(script, env=env, timeout=timeout, **kw)  # type: ignore[arg-type]
    assert time.monotonic() - start < timeout + 5
    return rec


ESCAPES = {
    "sort-compress-program-by-path": 'for i in $(seq 1 20000); do echo "open(\'$C_NEW\', \'w\')"; done | sort -S 64K -T /tmp --compress-program=/usr/bin/python3\n',
    "sort-compress-program-relative": 'for i in $(seq 1 20000); do echo "open(\'$C_NEW\', \'w\')"; done'
    ' | sort -S 64K -T /tmp --compress-program=python3\n',
    "builtin-exec-python": 'builtin exec /usr/bin/python3 -c "open(\'$C_NEW\', \'w\')"\n',
    "awk-system": 'awk \'BEGIN { system("touch " ENVIRON["C_NEW"]); system("rm -f " ENVIRON["C_FILE"]) }\'\n'
    'awk \'BEGIN { print "x" > ENVIRON["C_FILE"] }\'\n',
    "sed-e-command": 'echo x | sed "e touch $C_NEW"\necho x | sed "1e rm -f $C_FILE"\n',
    "sed-s-e-flag": 'echo "touch $C_NEW" | sed "s/^//e"\necho x | sed "s|x|rm -f $C_FILE|e"\n',
    "find-exec": 'find / -maxdepth 1 -exec touch "$C_NEW" \\;\n/usr/bin/find / -maxdepth 1 -exec touch "$C_NEW" \\;\n',
    "xargs": 'echo "$C_NEW" | xargs touch\necho "$C_NEW" | /usr/bin/xargs touch\n',
    "env-prog": 'env touch "$C_NEW"\n/usr/bin/env touch "$C_NEW"\nenv -i /usr/bin/touch "$C_NEW"\n',
    "command-prog": 'command touch "$C_NEW"\ncommand -p touch "$C_NEW"\ncommand /usr/bin/rm -f "$C_FILE"\n',
    "exec-prog": 'exec /usr/bin/touch "$C_NEW"\n',
    "writes-to-files": 'echo pwned > "$C_FILE"\n{ echo pwned; } > "$C_NEW"\nprintf x >> "$C_FILE"\n'
    'cat "$C_FILE" > "$C_NEW"\ncp "$C_FILE" "$C_NEW"\nexec 3>"$C_NEW"\n',
    "kill-host-process": 'kill -9 "$C_PID"\nbuiltin kill -9 "$C_PID"\nbuiltin kill -9 -1\n/usr/bin/kill -9 -1\n',
}


# Without the profile, the program each attempt got to start: its shim recorded it.
STARTED = {
    "sort-compress-program-by-path": "/usr/bin/python3", "sort-compress-program-relative": "python3",
    "builtin-exec-python": "/usr/bin/python3", "awk-system": "/bin/sh", "sed-e-command": "/bin/sh",
    "sed-s-e-flag": "/bin/sh", "find-exec": "/usr/bin/find", "xargs": "/usr/bin/xargs", "env-prog": "/usr/bin/touch",
    "command-prog": "/usr/bin/rm", "exec-prog": "/usr/bin/touch", "kill-host-process": "/usr/bin/kill",
}


@pytest.mark.parametrize("name", list(ESCAPES), ids=list(ESCAPES))
def test_escape_attempt_is_harmless(name: str, hooks: bool, canaries: Canaries, tmp_path: Path) -> None:
    rec = hostile(tmp_path, canaries, ESCAPES[name])
    canaries.assert_untouched(rec)
    if hooks:  # the shims and the profile record or skip what the kernel would stop anyway
        assert rec.invocations or any(n.startswith(("skipped", "recorded")) for n in rec.notes), rec
    elif name in STARTED:
        assert [STARTED[name]] in [a[:1] for a in rec.invocations], rec


def test_proc_and_dev_are_minimal_and_read_only(hooks: bool, canaries: Canaries, tmp_path: Path) -> None:
    before = Path("/proc/sys/kernel/domainname").read_text()
    body = """echo evil > /proc/sys/kernel/domainname || echo refused-domainname
echo evil > /proc/sys/kernel/hostname || echo refused-hostname
echo 1 > /proc/sys/vm/drop_caches || echo refused-drop-caches
echo c > /proc/sysrq-trigger || echo refused-sysrq
echo -1000 > /proc/self/oom_score_adj || echo refused-oom
echo x > /dev/kmsg || echo refused-kmsg
echo x > /dev/shm/x || echo refused-shm
for d in /dev/*; do echo "dev: ${d#/dev/}"; done
for p in /proc/[0-9]*; do echo "pid: ${p#/proc/}"; done
echo x > /dev/null && echo devnull-writable
"""
    rec = hostile(tmp_path, canaries, body)
    canaries.assert_untouched(rec)
    assert Path("/proc/sys/kernel/domainname").read_text() == before
    out = rec.stdout.splitlines()
    targets = {"domainname": "/proc/sys/kernel/domainname", "hostname": "/proc/sys/kernel/hostname",
               "drop-caches": "/proc/sys/vm/drop_caches", "sysrq": "/proc/sysrq-trigger",
               "oom": "/proc/self/oom_score_adj", "kmsg": "/dev/kmsg", "shm": "/dev/shm/x"}
    for what, target in targets.items():  # refused by the kernel, or skipped by the profile first
        skipped = any(n.startswith("skipped") and n.endswith(f"it writes {target} (outside the sandbox)")
                      for n in rec.notes)
        assert f"refused-{what}" in out or (hooks and skipped), (what, rec.stdout, rec.notes)
    devices = {line[5:] for line in out if line.startswith("dev: ")}
    assert devices <= {"console", "core", "fd", "full", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin",
                       "stdout", "tty", "urandom", "zero"}, devices
    assert {"null", "zero", "random", "urandom", "tty"} <= devices
    assert not any(d.startswith(("loop", "kmsg", "sd", "nvme", "mem")) for d in devices)
    pids = [int(line[5:]) for line in out if line.startswith("pid: ")]
    assert len(pids) <= 3 and max(pids) < 100  # the sandbox's own processes, not the host's
    assert "devnull-writable" in out


def test_the_host_filesystem_is_not_there(hooks: bool, canaries: Canaries, tmp_path: Path) -> None:
    (tmp_path / "script").mkdir()
    (tmp_path / "script" / "shadow-link").symlink_to(SHADOW)
    (tmp_path / "script" / "secret-link").symlink_to(canaries.secret)
    body = """cat /root/.ssh/id_* "$HOME/.ssh/id_ed25519" /etc/shadow "$C_SECRET" "$C_FILE"
cat "$(dirname "$0")/shadow-link" "$(dirname "$0")/secret-link"
while read -r line; do echo "read: $line"; done < "$C_SECRET"
mapfile -t lines < /etc/shadow; echo "${lines[@]}"
echo "secret: $(< "$C_SECRET")"
for d in /root/.ssh /home /etc/ssh /etc/hosts /run /var /usr/lib/python3 /usr/local/lib "$HOME" "$(dirname "$C_FILE")"; do
  [[ -e $d ]] && echo "exists: $d"
done
ls / /etc /usr/bin/bash /usr/local/bin 2>&1
head -c 300 /usr/bin/python3
"""
    rec = hostile(tmp_path, canaries, body)
    canaries.assert_untouched(rec)
    assert [line for line in rec.stdout.splitlines() if line.startswith("exists: ")] == []
    assert "glm45-launch record: the recording shim" in rec.stdout  # /usr/bin/python3: a shim
    assert sorted(rec.stdout.split("/:\n", 1)[1].split("\n\n", 1)[0].split()) == [
        "bin", "dev", "etc", "lib", "lib64", "proc", "sbin", "tmp", "usr"]


def test_the_host_network_is_not_there(hooks: bool, canaries: Canaries, tmp_path: Path) -> None:
    body = """exec 3<>"/dev/tcp/127.0.0.1/$C_PORT" && echo connected-tcp
exec 4<>"$C_SOCK" && echo connected-unix
(echo x > "/dev/tcp/127.0.0.1/$C_PORT") && echo sent-tcp
(echo x > "/dev/udp/127.0.0.1/$C_PORT") && echo sent-udp
for f in /proc/net/unix /proc/net/tcp; do while read -r line; do echo "net: $line"; done < "$f"; done
"""
    rec = hostile(tmp_path, canaries, body)
    canaries.assert_untouched(rec)
    if hooks:  # skipped before the kernel refuses them (no such place to write)
        assert sum(n.startswith("skipped") and ("/dev/tcp/" in n or "/dev/udp/" in n) for n in rec.notes) == 3, rec.notes
    else:
        # (a UDP datagram to 127.0.0.1 leaves: into the sandbox's own network, where nothing listens)
        assert "connected-" not in rec.stdout and "sent-tcp" not in rec.stdout
    assert str(canaries.unix_path) not in rec.stdout  # the host's sockets are not even listed
    assert f":{canaries.tcp_port:04X}" not in rec.stdout


def _sandbox_processes(uids: list[int | None]) -> int:
    """Processes (zombies too) of this recording's sandbox user (other recordings on this
    machine, another session's tests, have users of their own)."""
    return sum(hostprocs.uids().get(uid, 0) for uid in uids if uid is not None)


@pytest.mark.skipif(os.geteuid() != 0, reason="counts the sandbox user's processes (root recorder)")
def test_fork_bomb_is_bounded_and_stopped(hooks: bool, canaries: Canaries, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    peak = [0]
    done = threading.Event()
    taken: list[int | None] = []
    pick = hostprocs.sandbox_uid
    monkeypatch.setattr(hostprocs, "sandbox_uid", lambda: taken.append(pick()) or taken[-1])

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _sandbox_processes(taken))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        start = time.monotonic()
        rec = hostile(tmp_path, canaries, "bomb() { bomb | bomb & }\nbomb\nwait\n", timeout=3)
        elapsed = time.monotonic() - start
    finally:
        done.set()
        watcher.join()
    canaries.assert_untouched(rec)
    assert elapsed < 5  # ended by the time limit, or by its main shell once forks failed
    assert rec.timed_out or any(n.startswith("killed") and n.endswith("left running by the script") for n in rec.notes)
    assert "Resource temporarily unavailable" in rec.stderr  # the process limit was hit
    assert 0 < peak[0] <= LIMITS.processes + 8, peak[0]
    assert taken and taken[0] is not None
    assert _sandbox_processes(taken) == 0  # nothing survives the recording


_RSS = """
import json, resource, sys, time
from pathlib import Path
from glm45_launch.sandbox import hostprocs, record
record._HOOKS = sys.argv[2] == "1"
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.monotonic()
rec = record.record_script(Path(sys.argv[1]), env={}, timeout=float(sys.argv[3]))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps([base, peak, time.monotonic() - start, len(rec.stdout), len(rec.stderr), rec.stopped,
                  rec.timed_out]))
"""


@pytest.mark.parametrize("body", ["cat /dev/zero\n", "cat /dev/zero >&2\n", "/usr/bin/yes\nyes\n"
                                  "while :; do echo yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy; done\n",
                                  "while :; do ray status; done\n"],
                         ids=["stdout-flood", "stderr-flood", "yes", "record-flood"])
def test_endless_output_keeps_the_recorder_small(body: str, hooks: bool, tmp_path: Path) -> None:
    script = tmp_path / "flood.sh"
    script.write_text("#!/bin/bash\n" + body)
    res = subprocess.run([sys.executable, "-c", _RSS, str(script), "1" if hooks else "0", "4"], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    base, peak, seconds, out, err, stopped, timed_out = json.loads(res.stdout)
    grown = (peak - base) * 1024
    assert grown < 200 * MIB, f"the recorder grew by {grown // MIB} MiB"
    assert out + err < 12 * MIB  # kept: a head and a tail of each stream
    assert stopped or timed_out
    assert seconds < 6
