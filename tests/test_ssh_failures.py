"""SSH failures are one line each (issue 10, item 5): a port that never speaks, one that speaks no
SSH (no banner in time), a reset, a stalled or reset key exchange, a refused port. Real sockets:
listeners on loopback for the runner, and in the rack-in-a-box for `up`, `preflight`, `status`
and `down` (the listener takes a host's port 22 in its own network namespace)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import badsshd
import pytest
from boxhelpers import make_base_dir

from glm45_launch.runtime.ssh import SshOptions, SshRunner
from glm45_launch.testing.rackbox import RackBox

HERE = Path(__file__).resolve().parent
NOISE = ("Traceback", "No existing session", "paramiko", "Exception (client)", "Socket exception")
# A reset reaches the client as ECONNRESET or, when the RST races the client's own reads, as
# an end of stream: either line is the truth.
RESET = ("connection reset by peer during the SSH handshake", "connection closed by the host during the SSH handshake")
CAUSES = {
    "silent": ("no SSH banner within 1s (the port accepts connections but does not speak SSH)",),
    # Text that is not SSH: whichever of paramiko's banner wait and the handshake's limit ends first.
    "garbage": ("the SSH handshake did not finish within 1s",
                "no SSH banner within 1s (the port accepts connections but does not speak SSH)"),
    "reset": RESET,
    "banner-stall": ("the SSH key exchange did not finish within 1s",),
    "banner-reset": RESET,
    "refused": ("connection refused",),
}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("mode", list(CAUSES))
def test_runner_gives_one_line_per_failure(mode: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    srv, port = badsshd.listen(mode) if mode != "refused" else (None, _free_port())
    try:
        runner = SshRunner(SshOptions(port=port, connect_timeout=1, retries=2, backoff_s=0.1,
                                      known_hosts=(str(tmp_path / "known_hosts"),)))
        start = time.monotonic()
        res = runner.run("127.0.0.1", "true", tmp_path / "host.log")
        took = time.monotonic() - start
    finally:
        if srv is not None:
            srv.close()
    assert res.exit_code is None and res.error in [f"cannot connect to 127.0.0.1: {c}" for c in CAUSES[mode]]
    assert res.attempts == 2  # transient: retried (before anything was sent), then given up
    assert took < 2 * (1 + 2) + 1, "a connection attempt outlived its timeouts"
    log = (tmp_path / "host.log").read_text().splitlines()
    assert log[0] == "$ true" and log[-1] == f"# exit=None error={res.error}"
    assert [ln.split(": ", 1)[0] for ln in log[1:-1]] == ["! attempt 1", "! attempt 2"]
    time.sleep(0.3)  # paramiko's transport threads log their failure as they exit
    out, err = capfd.readouterr()
    assert (out, err) == ("", ""), "paramiko printed on its own"


# -- the commands, in the rack-in-a-box ------------------------------------------------------
BAD = "10.123.0.3"


class BadHost:
    """h3's sshd replaced by a misbehaving listener on 10.123.0.3:22."""

    def __init__(self, box: RackBox, mode: str) -> None:
        self.box = box
        box.stop_sshd(3)
        self.proc = box.popen_on(3, [sys.executable, str(HERE / "badsshd.py"), mode, BAD, "22"],
                                 stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().startswith("ready")

    def close(self) -> None:
        self.box.kill_all(3)  # the listener runs under nsenter, in h3's PID namespace
        self.proc.wait()


@pytest.fixture
def box(fresh_rackbox: RackBox) -> Iterator[RackBox]:
    checkout = fresh_rackbox.workdir / "checkout"
    checkout.mkdir(exist_ok=True)
    shutil.copy(HERE.parent / "glm45_launch" / "testing" / "smoke_entry.py", checkout / "smoke_entry.py")
    for k in range(1, fresh_rackbox.n_hosts + 1):
        make_base_dir(fresh_rackbox.host_dir(k) / "tmp" / "base")
    yield fresh_rackbox


def _launch(box: RackBox, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """glm45-launch on the head (h1); a wide terminal, so a table row is one line."""
    hostfile = box.hostfile(box.workdir / "hostfile")
    ssh = ["--hostfile", str(hostfile), "--identity", str(box.identity), "--known-hosts", str(box.known_hosts),
           "--connect-timeout", "1", "--retries", "1"]
    plan = ["--base-dir", "/tmp/base", "--workdir", str(box.workdir / "checkout"), "--entry", "smoke_entry.py",
            "--actor-num-nodes", "3"]
    force = ["--force"] if args[0] == "up" else []  # the recipe's layout needs 64 GPUs; the box has 24
    argv = [args[0], *ssh, *(plan if args[0] in ("up", "preflight") else ()), *force, *args[1:]]
    return box.run_on(1, [sys.executable, "-m", "glm45_launch", *argv], cwd=str(box.workdir / "checkout"),
                      capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                      env={**box.host_environ(1), "COLUMNS": "400"})


def _assert_one_line(res: subprocess.CompletedProcess[str], causes: tuple[str, ...]) -> None:
    text = res.stdout + res.stderr
    for noise in NOISE:
        assert noise not in text, text[-3000:]
    lines = [ln for ln in text.splitlines() if any(c in ln for c in causes)]
    assert lines, text[-3000:]
    assert all(BAD in ln for ln in lines), lines  # every line stating the cause names the host


RACK_CAUSES = {  # the three of the issue: no banner in time, a reset, a port that never speaks
    "garbage": CAUSES["garbage"],
    "reset": RESET,
    "silent": CAUSES["silent"],
}


@pytest.mark.rackbox
@pytest.mark.parametrize("mode", list(RACK_CAUSES))
def test_status_down_preflight_up_say_it_in_one_line(box: RackBox, mode: str) -> None:
    bad = BadHost(box, mode)
    try:
        status = _launch(box, "status")
        assert status.returncode == 1
        _assert_one_line(status, RACK_CAUSES[mode])

        down = _launch(box, "down")
        assert down.returncode == 1 and down.stderr.strip().splitlines()[-1] == f"could not stop Ray on: {BAD}"
        _assert_one_line(down, RACK_CAUSES[mode])

        pre = _launch(box, "preflight", "--no-libs")
        assert pre.returncode == 1
        _assert_one_line(pre, RACK_CAUSES[mode])
        assert pre.stderr.strip().splitlines()[-1].startswith("glm45-launch: error: preflight failed: 1 failed")

        up = _launch(box, "up")  # preflight is up's first phase: it stops there, nothing started
        assert up.returncode == 1
        _assert_one_line(up, RACK_CAUSES[mode])
        assert "nothing was started" in up.stderr.strip().splitlines()[-1]
    finally:
        bad.close()


@pytest.mark.rackbox
def test_up_without_preflight_names_the_silent_host(box: RackBox) -> None:
    """The executor's own path: the head starts, h3 never speaks, the launch stops in one line."""
    bad = BadHost(box, "silent")
    try:
        up = _launch(box, "up", "--skip-preflight", "--run-dir", str(box.workdir / "runs" / "silent"))
    finally:
        bad.close()
    assert up.returncode == 1
    _assert_one_line(up, RACK_CAUSES["silent"])
    assert up.stderr.strip().splitlines()[-1] == f"glm45-launch: error: 1 worker(s) failed to start: {BAD}"


def test_a_passphrase_key_without_an_agent_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capfd: pytest.CaptureFixture[str]) -> None:
    """An encrypted key and no agent: one plain line naming the key (no Python class name)."""
    import paramiko

    key = tmp_path / "id_locked"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "sesame", "-f", str(key)], check=True)
    host_key = paramiko.ECDSAKey.generate()  # the server's
    srv, port = badsshd.listen_ssh(host_key)
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {host_key.get_name()} {host_key.get_base64()}\n")
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    try:
        res = SshRunner(SshOptions(port=port, identity=(str(key),), known_hosts=(str(known),), connect_timeout=5,
                                   retries=3)).run("127.0.0.1", "true", tmp_path / "host.log")
    finally:
        srv.close()
    assert res.error == (f"127.0.0.1: the key {key} is passphrase-protected and no agent holds it: ssh-add it")
    assert res.attempts == 1 and capfd.readouterr() == ("", "")


@pytest.mark.parametrize("known", ["plain", "hashed", "none", "changed", "revoked", "accept-new"])
def test_host_keys_through_fabric(known: str, tmp_path: Path) -> None:
    """Fabric's connection, with the run's known_hosts index deciding: a known key (plain or hashed
    line) gets as far as auth; unknown, changed and revoked keys are refused in one line."""
    import base64
    import hmac

    import paramiko

    host_key, other = paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate()
    srv, port = badsshd.listen_ssh(host_key)
    name = f"[127.0.0.1]:{port}"
    salt = b"s" * 20
    hashed = f"|1|{base64.b64encode(salt).decode()}|" \
             f"{base64.b64encode(hmac.digest(salt, name.encode(), 'sha1')).decode()}"
    line = {"plain": f"{name} {host_key.get_name()} {host_key.get_base64()}",
            "hashed": f"{hashed} {host_key.get_name()} {host_key.get_base64()}",
            "changed": f"{name} {other.get_name()} {other.get_base64()}",
            "revoked": f"@revoked * {host_key.get_name()} {host_key.get_base64()}\n"
                       f"{name} {host_key.get_name()} {host_key.get_base64()}"}.get(known, "")
    kh = tmp_path / "known_hosts"
    kh.write_text(line + "\n" if line else "")
    ident = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ident)], check=True)
    try:
        runner = SshRunner(SshOptions(port=port, identity=(str(ident),), known_hosts=(str(kh),), connect_timeout=5,
                                      retries=2, use_agent=False, accept_new_host_keys=known == "accept-new"))
        res = runner.run("127.0.0.1", "true", tmp_path / "host.log")
    finally:
        srv.close()
    want = {
        "none": "host key of 127.0.0.1 is unknown: add it to known_hosts (ssh-keyscan) or pass --accept-new-host-keys",
        "changed": f"host key of 127.0.0.1 CHANGED (does not match known_hosts: presented {host_key.get_name()}, "
                   f"known {other.get_name()} at {kh}:1): refusing to connect; check the host, then remove the "
                   "old key with `ssh-keygen -R`",
        "revoked": f"host key of 127.0.0.1 is REVOKED ({kh}:1): refusing to connect",
    }.get(known, "root@127.0.0.1 does not accept public keys (allowed: password)")  # past the host key
    assert res.error == want and res.attempts == 1
    if known == "accept-new":
        assert kh.read_text() == f"{name} {host_key.get_name()} {host_key.get_base64()}\n"


def test_ssh_config_hostname_port_and_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """~/.ssh/config as OpenSSH reads it (through Fabric): an alias leads to its HostName and Port,
    with its User; the key is filed under the HostName."""
    import paramiko

    host_key = paramiko.ECDSAKey.generate()
    srv, port = badsshd.listen_ssh(host_key)
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "config").write_text(f"Host rack-*\n    HostName 127.0.0.1\n    Port {port}\n    User ops\n")
    (tmp_path / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key.get_name()} {host_key.get_base64()}\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    ident = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ident)], check=True)
    try:
        res = SshRunner(SshOptions(user=None, identity=(str(ident),), use_agent=False, retries=1)).run(
            "rack-7", "true", tmp_path / "host.log")
    finally:
        srv.close()
    assert res.error == "ops@rack-7 does not accept public keys (allowed: password)"  # reached, as ops
