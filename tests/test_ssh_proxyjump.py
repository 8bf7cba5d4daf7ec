"""ProxyJump from ``~/.ssh/config`` (Fabric reads it as OpenSSH does), on the rack-in-a-box: h3's
sshd accepts root only from h2 (``AllowUsers root@<h2>``), the launcher's ``~/.ssh/config`` on h1
says ``ProxyJump`` h2 for h3, and ``up``, ``status`` and ``down`` reach h3 through h2."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from boxhelpers import make_base_dir, ray_processes

from glm45_launch.testing.rackbox import RackBox

pytestmark = pytest.mark.rackbox
SMOKE = Path(__file__).resolve().parent.parent / "examples" / "smoke_entry.py"


@pytest.fixture
def jump_box(fresh_rackbox: RackBox) -> Iterator[RackBox]:
    box = fresh_rackbox
    sshd_config = box.host_dir(3) / "sshd_config"
    original = sshd_config.read_text()
    config = box.dotssh / "config"  # the hosts' ~/.ssh: the launcher on h1 runs as root there
    sshd_config.write_text(original + f"AllowUsers root@{box.ip(2)}\n")
    box.stop_sshd(3)
    box.start_sshd(3)
    try:
        yield box
    finally:
        config.unlink(missing_ok=True)
        sshd_config.write_text(original)
        box.stop_sshd(3)
        box.start_sshd(3)


def _launch(box: RackBox, *args: str) -> subprocess.CompletedProcess[str]:
    checkout = box.workdir / "checkout"
    return box.run_on(1, [sys.executable, "-m", "glm45_launch", *args, "--identity", str(box.identity),
                          "--known-hosts", str(box.known_hosts)], cwd=str(checkout), capture_output=True, text=True,
                      timeout=240, stdin=subprocess.DEVNULL, env={**box.host_environ(1), "COLUMNS": "200"})


def _accepted_from(box: RackBox, host: int, ip: str) -> int:
    return (box.host_dir(host) / "sshd.log").read_text().count(f"Accepted publickey for root from {ip} ")


def test_up_status_down_reach_a_host_behind_a_jump_host(jump_box: RackBox) -> None:
    box = jump_box
    h1, h2, h3 = box.hosts
    hostfile = str(box.hostfile(box.workdir / "hostfile"))
    checkout = box.workdir / "checkout"
    checkout.mkdir(exist_ok=True)
    shutil.copy(SMOKE, checkout / "smoke_entry.py")
    make_base_dir(box.workdir / "base")

    # Without the jump, h3 refuses the launcher: the sshd rule holds.
    direct = _launch(box, "status", "--hostfile", hostfile, "--json", "--retries", "1")
    assert direct.returncode == 1
    assert [r["reachable"] for r in json.loads(direct.stdout)["hosts"]] == [True, True, False], direct.stdout

    (box.dotssh / "config").write_text(f"Host {h3}\n    ProxyJump root@{h2}\n")
    via_h2, from_h1 = _accepted_from(box, 3, h2), _accepted_from(box, 3, h1)  # the log is the session's
    up = _launch(box, "up", "--hostfile", hostfile, "--base-dir", str(box.workdir / "base"), "--workdir",
                 str(checkout), "--entry", "smoke_entry.py", "--actor-num-nodes", "3", "--force", "--join-timeout",
                 "90", "--run-dir", str(box.workdir / "runs" / "jump"), "--no-wait")
    assert up.returncode == 0, up.stderr[-3000:]

    status = _launch(box, "status", "--hostfile", hostfile, "--json")
    assert status.returncode == 0, status.stderr[-3000:]
    assert [(r["host"], r["reachable"], r["ray_running"], r["alive_in_cluster"])
            for r in json.loads(status.stdout)["hosts"]] == [(h, True, True, True) for h in (h1, h2, h3)]

    down = _launch(box, "down", "--hostfile", hostfile, "--run-dir", str(box.workdir / "runs" / "jump-down"))
    assert down.returncode == 0, down.stderr[-3000:]
    assert ray_processes(box, 3) == []
    # Each launcher process reached h3 once, and only through h2.
    assert _accepted_from(box, 3, h2) - via_h2 == 3
    assert _accepted_from(box, 3, h1) == from_h1

    # The jump host down: h3's line names it.
    box.stop_sshd(2)
    lost = _launch(box, "status", "--hostfile", hostfile, "--retries", "1", "--connect-timeout", "1")
    assert lost.returncode == 1
    assert f"cannot reach {h3} through its ProxyJump host root@{h2}:22: cannot connect to {h2}: connection " \
           "refused" in " ".join((lost.stdout + lost.stderr).split()), lost.stderr[-2000:]
