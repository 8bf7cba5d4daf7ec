"""One SSH connection per host for a whole run (issue 12), proven on real sshds: the hosts'
sshd logs count the connections. Also: a command is never sent twice, Ctrl-C closes every
connection at once, output is streamed and bounded, new host keys are recorded once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from glm45_launch.testing.rackbox import RackBox

pytestmark = pytest.mark.rackbox
DRIVER = Path(__file__).resolve().parent / "sshdriver.py"


def _accepted(box: RackBox, host: int) -> int:
    """SSH logins a host's sshd accepted so far (its log, LogLevel VERBOSE)."""
    return (box.host_dir(host) / "sshd.log").read_text().count("Accepted publickey for root")


def _cfg(box: RackBox, hosts: list[int], **extra: Any) -> dict[str, Any]:
    logs = box.workdir / "driver-logs"
    logs.mkdir(exist_ok=True)
    return {"identity": str(box.identity), "known_hosts": str(box.known_hosts), "log_dir": str(logs),
            "hosts": [box.ip(h) for h in hosts], **extra}


def _drive(box: RackBox, scenario: str, cfg: dict[str, Any], **env: str) -> dict[str, Any]:
    res = box.run_on(1, [sys.executable, str(DRIVER), scenario, json.dumps(cfg)], capture_output=True, text=True,
                     timeout=120, stdin=subprocess.DEVNULL, env={**box.host_environ(1), **env})
    assert res.returncode == 0 and not res.stderr, res.stderr[-3000:]
    return json.loads(res.stdout.splitlines()[-1])


def test_every_phase_reuses_one_connection_per_host(fresh_rackbox: RackBox) -> None:
    box = fresh_rackbox
    before = {h: _accepted(box, h) for h in (1, 2, 3)}
    out = _drive(box, "phases", _cfg(box, [1, 2, 3]))
    for i, phase in enumerate(("probe", "cleanup", "start", "stop")):
        assert out["phases"][i] == {box.ip(h): [0, [f"{phase} on {box.netns(h)}"]] for h in (1, 2, 3)}
    assert {h: _accepted(box, h) - before[h] for h in (1, 2, 3)} == {1: 1, 2: 1, 3: 1}


def test_new_host_keys_are_recorded_once(fresh_rackbox: RackBox) -> None:
    box = fresh_rackbox
    known = box.workdir / "known_hosts_accept_new"
    known.write_text("")
    cfg = {**_cfg(box, [1, 2, 3]), "known_hosts": str(known), "accept_new": True}
    home = box.workdir / "empty-home"  # no ~/.ssh/known_hosts: only the file above counts
    home.mkdir(exist_ok=True)
    for _ in range(2):  # a second run reads what the first recorded
        out = _drive(box, "phases", cfg, HOME=str(home))
        assert all(code == 0 for phase in out["phases"] for code, _ in phase.values())
    assert sorted(ln.split()[0] for ln in known.read_text().splitlines()) == sorted(box.hosts)
    assert sorted(known.read_text().splitlines()) == sorted(box.known_hosts.read_text().splitlines())


def test_a_command_is_never_sent_twice_and_a_dead_connection_is_replaced(fresh_rackbox: RackBox) -> None:
    box = fresh_rackbox
    box.run_on(2, "rm -f /tmp/ran-once", check=True)
    before = _accepted(box, 2)
    out = _drive(box, "lost", _cfg(box, [2]))
    assert out["first"] == [0, None]
    code, error, attempts = out["killed"]
    assert code is None and error == f"connection to {box.ip(2)} lost while the command ran" and attempts == 1
    assert out["after"] == [0, None, ["one", "two", "three"]]  # "two" ran once, though its connection died
    assert _accepted(box, 2) - before == 2  # one connection, then one more after it died


def test_ctrl_c_closes_every_connection_at_once(fresh_rackbox: RackBox) -> None:
    box = fresh_rackbox
    proc = box.popen_on(1, [sys.executable, str(DRIVER), "interrupt", json.dumps(_cfg(box, [1, 2, 3]))],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        # Every host's `echo started` has reached the driver (its command runs `sleep 60`): only
        # then Ctrl-C (waiting for sshd's sessions raced the first output line).
        said = {proc.stdout.readline().strip() for _ in box.hosts}
        assert said == {f"started {h}" for h in box.hosts}, said
        driver = [p for p in box.user_pids(1) if b"sshdriver" in Path(f"/proc/{p}/cmdline").read_bytes()
                  and Path(f"/proc/{p}/comm").read_text().startswith("python")]
        assert len(driver) == 1
        import os

        os.kill(driver[0], signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    result = json.loads(out.splitlines()[-1])
    assert result["started"] == sorted(box.hosts)
    assert result["returned_after_s"] < 1.0, result  # not one connect or command timeout per host
    deadline = time.monotonic() + 10
    while _sessions(box):  # sshd ends each session once its connection is gone
        assert time.monotonic() < deadline, "an ssh session outlived the launcher's Ctrl-C"
        time.sleep(0.1)


def _sessions(box: RackBox) -> int:
    """sshd session processes (one per live connection) in the box."""
    n = 0
    for pid in box.user_pids():
        try:
            n += Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"sshd: root@notty")
        except OSError:
            pass
    return n


def test_output_is_streamed_and_bounded(fresh_rackbox: RackBox) -> None:
    box = fresh_rackbox
    out = _drive(box, "output", {**_cfg(box, [2]), "bytes": 64 * 1024 * 1024})
    (t_first, first), (t_second, second) = out["seen"]
    assert (first, second) == ("first", "second") and t_first < 1.5 <= t_second  # as printed, not at the end
    assert out["big"] == [0, None] and out["tail_last"] == ["100000"]
    assert out["tail_chars"] <= 512 * 1024 + 256 * 1024  # results.TAIL_BYTES, plus one MAX_LINE piece
    assert out["grew_kib"] < 48 * 1024, out  # 64 MiB of output, one line: the launcher never holds it


def test_proxycommand_from_ssh_config(fresh_rackbox: RackBox) -> None:
    """~/.ssh/config's ProxyCommand is honoured (Fabric did): h3 is reached through h2."""
    box = fresh_rackbox
    home = box.workdir / "proxy-home"
    (home / ".ssh").mkdir(parents=True, exist_ok=True)
    (home / ".ssh" / "config").write_text(
        f"Host {box.ip(3)}\n    ProxyCommand ssh -F /dev/null -i {box.identity} -o BatchMode=yes "
        f"-o UserKnownHostsFile={box.known_hosts} -o StrictHostKeyChecking=yes -W %h:%p root@{box.ip(2)}\n")
    log = box.host_dir(3) / "sshd.log"
    before = log.read_text().count(f"Accepted publickey for root from {box.ip(2)}")
    out = _drive(box, "phases", _cfg(box, [2, 3]), HOME=str(home))
    assert out["phases"][3] == {box.ip(h): [0, [f"stop on {box.netns(h)}"]] for h in (2, 3)}
    assert log.read_text().count(f"Accepted publickey for root from {box.ip(2)}") - before == 1
