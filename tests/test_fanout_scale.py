"""The fan-out at rack-row scale (issue 12): the width default, one progress line instead of a
line per host, compact outcome tables, and `down` on a 64-host rack-in-a-box with a 2048-line
known_hosts (one connection per host, every host done)."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from glm45_launch.cli.options import PARALLEL
from glm45_launch.core.steps import DEFAULT_PARALLEL
from glm45_launch.runtime.fanout import LIVE_AFTER, run_on_hosts
from glm45_launch.runtime.interfaces import Echo, Row
from glm45_launch.runtime.reporter import TABLE_ROWS, RichReporter
from glm45_launch.runtime.results import CommandResult
from glm45_launch.testing.fakes import FakeRemoteRunner
from glm45_launch.testing.rackbox import RackBox, free_prefix


def test_the_cli_default_width_is_the_fanouts() -> None:
    assert PARALLEL.kwargs["default"] == DEFAULT_PARALLEL >= 256


class EchoingRemote(FakeRemoteRunner):
    """A fake remote that prints its answer's lines through ``echo``, like the real one."""

    def run(self, host: str, command: str, log_path: Path, echo: Echo | None = None,
            timeout_s: float | None = None) -> CommandResult:
        res = super().run(host, command, log_path, echo, timeout_s)
        for line in res.output_tail:
            if echo:
                echo(line)
        return res


def _reporter() -> tuple[RichReporter, io.StringIO]:
    rep = RichReporter()
    out = io.StringIO()
    rep.rich = Console(file=out, width=200, force_terminal=False, highlight=False)
    return rep, out


@pytest.mark.parametrize("n", [LIVE_AFTER, 40])
def test_past_the_threshold_one_progress_line_replaces_host_lines(n: int, tmp_path: Path) -> None:
    rep, out = _reporter()
    remote = EchoingRemote(answer=lambda h, c: (1 if h == "h7" else 0, [f"stopped ray on {h}"]))
    res = run_on_hosts(remote, [(f"h{i}", "ray stop") for i in range(n)], 8, lambda h: tmp_path / f"{h}.log",
                       rep.echo_for)
    text = out.getvalue()
    assert list(res) == [f"h{i}" for i in range(n)] and list(res.failed) == ["h7"]
    if n <= LIVE_AFTER:
        assert text.count("stopped ray on") == n and "[h7] stopped ray on h7" in text
    else:
        assert "stopped ray on" not in text.replace(f"{n} output line(s)", "")  # no line per host
        last = text.strip().splitlines()[-1]
        assert f"{n}/{n}" in last and "1 failed" in last and f"{n} output line(s) in the host logs" in last


def test_a_long_outcome_table_shows_its_failures() -> None:
    rep, out = _reporter()
    rows = [Row(f"10.0.0.{i}", "ray stop --force", 0 if i != 17 else 3, 0.2, None if i != 17 else "exit 3")
            for i in range(TABLE_ROWS + 50)]
    rep.table("down", rows)
    text = out.getvalue()
    assert "10.0.0.17" in text and "10.0.0.16 " not in text and f"{len(rows) - 1} more" in text
    rep.table("down", rows[:3])
    assert "10.0.0.2 " in out.getvalue()


# -- on a rack-in-a-box ---------------------------------------------------------------------
def _known_hosts(box: RackBox, path: Path, lines: int = 2048) -> None:
    """The box's keys among filler lines, half of them hashed (Debian's HashKnownHosts)."""
    import paramiko

    filler = []
    for i in range(lines - box.n_hosts):
        name = f"10.200.{i // 256}.{i % 256}"
        key = base64.b64encode(b"\0\0\0\x0bssh-ed25519\0\0\0 " + os.urandom(32)).decode()
        filler.append(f"{paramiko.HostKeys.hash_host(name) if i % 2 else name} ssh-ed25519 {key}")
    real = box.known_hosts.read_text().splitlines()
    path.write_text("\n".join(filler[: len(filler) // 2] + real + filler[len(filler) // 2:]) + "\n")


@pytest.mark.rackbox
def test_down_on_64_hosts_one_connection_each(tmp_path: Path) -> None:
    with RackBox(64, workdir=tmp_path / "box", prefix=free_prefix("g45scale"), stub_ray=True) as box:
        known = box.workdir / "known_hosts_2048"
        _known_hosts(box, known)
        home = box.workdir / "home"  # this machine's ~/.ssh stays out of it
        home.mkdir()
        hostfile = box.hostfile(box.workdir / "hostfile")
        res = box.run_admin([sys.executable, "-m", "glm45_launch", "down", "--hostfile", str(hostfile),
                             "--identity", str(box.identity), "--known-hosts", str(known),
                             "--run-dir", str(box.workdir / "runs")],
                            capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
                            env={**os.environ, "HOME": str(home), "COLUMNS": "200"})
        assert res.returncode == 0, res.stderr[-3000:]
        assert "Traceback" not in res.stderr
        assert "64/64" in res.stderr and "[10.123.0.5]" not in res.stderr  # one progress line, no host lines
        assert "64 more" in res.stderr  # the outcome table: no failures, one row for all
        accepted = [(box.host_dir(k) / "sshd.log").read_text().count("Accepted publickey") for k in range(1, 65)]
        assert accepted == [1] * 64
        logs = sorted(p.name for p in (box.workdir / "runs" / "down").iterdir())
        assert len(logs) == 64 and all("Stopped only 0" in (box.workdir / "runs" / "down" / name).read_text()
                                       for name in logs)


def test_a_box_past_253_hosts_takes_a_wider_subnet(tmp_path: Path) -> None:
    """Nothing starts here: the addresses a 300-host box would use, and the bridge's limit."""
    box = RackBox(300, workdir=tmp_path, prefix="g45sub")
    assert box.hosts[0] == "10.123.0.1" and box.hosts[-1] == "10.123.1.44" and box.admin_ip == "10.123.255.254"
    assert RackBox(3, workdir=tmp_path, prefix="g45sub").hosts == ["10.123.0.1", "10.123.0.2", "10.123.0.3"]
    with pytest.raises(ValueError, match="at most 1020 hosts"):
        RackBox(1021, workdir=tmp_path, prefix="g45sub")
