"""`glm45-launch netcheck` and up's network check for real on the rack-in-a-box: real Ray, CPU
torch with Gloo, links shaped with `tc` inside a host's namespace.

One cluster serves the tests after the first: `netcheck --keep-cluster` brings it up (the healthy
rack), the others check it with `--external-ray` while one host's link is throttled or nearly cut.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from boxhelpers import ray_left, ray_processes

from glm45_launch.testing.rackbox import RackBox

pytestmark = pytest.mark.rackbox


@dataclass
class Net:
    box: RackBox
    hostfile: Path
    runs: Path
    checkout: Path

    def args(self, command: str, run: str, *extra: str) -> list[str]:
        return [command, "--hostfile", str(self.hostfile), "--base-dir", str(self.box.workdir / "base"),
                "--workdir", str(self.checkout), "--run-dir", str(self.runs / run), "--retries", "2",
                "--identity", str(self.box.identity), "--known-hosts", str(self.box.known_hosts), *extra]

    def launch(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return self.box.run_on(1, [sys.executable, "-m", "glm45_launch", *args], cwd=str(self.checkout),
                               capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def shape(self, host: int, *qdisc: str) -> None:
        """``tc qdisc replace dev eth0 root QDISC`` inside ``host``'s namespace."""
        self.box.run_on(host, ["tc", "qdisc", "replace", "dev", "eth0", "root", *qdisc], check=True)

    def unshape(self, host: int) -> None:
        self.box.run_on(host, ["tc", "qdisc", "del", "dev", "eth0", "root"], capture_output=True)


def ranks_left(box: RackBox, host: int | None = None) -> list[str]:
    """The check's actors still alive (Ray names their processes ray::Rank...)."""
    return [p for p in ray_processes(box, host) if "Rank" in p]


@pytest.fixture(scope="module")
def net(rackbox: RackBox) -> Iterator[Net]:
    rackbox.reset()
    checkout = rackbox.workdir / "checkout"
    checkout.mkdir(exist_ok=True)
    net = Net(rackbox, rackbox.hostfile(rackbox.workdir / "hostfile"), rackbox.workdir / "netruns", checkout)
    yield net
    for h in (1, 2, 3):
        net.unshape(h)
    rackbox.reset()


def test_up_with_a_missing_interface_submits_no_job(net: Net) -> None:
    """h3's ${MLP_SOCKET_IFNAME} names an interface it lacks: up names h3 and ifh3, submits
    nothing, collects diagnostics, stops Ray everywhere, exits non-zero."""
    box = net.box
    h3 = box.hosts[2]
    box.set_shell_env(3, exports={"MLP_SOCKET_IFNAME": "ifh3"})
    try:
        t0 = time.monotonic()
        up = net.launch(*net.args("up", "bad-if", "--entry", "smoke_entry.py", "--actor-num-nodes", "3", "--force",
                                  "--skip-preflight", "--join-timeout", "90"))
        took = time.monotonic() - t0
    finally:
        box.set_shell_env(3)
    assert up.returncode == 1, up.stderr[-3000:]
    error = up.stderr.strip().splitlines()[-1]
    assert error.startswith("glm45-launch: error: netcheck failed:") and h3 in error and "ifh3" in error, error
    assert not any(h in error for h in box.hosts[:2]), error  # the healthy hosts are not blamed
    run = net.runs / "bad-if"
    report = json.loads((run / "netcheck" / "netcheck.json").read_text())
    assert report["ok"] is False and {h for p in report["problems"] for h in p["hosts"]} == {h3}
    assert report["duration_s"] < 60, report["duration_s"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["job_id"] is None and summary["cause"]["kind"] == "netcheck-failed"
    assert "$ ray job submit" not in (run / "hosts" / "head.log").read_text()
    assert (run / "diagnostics" / "attempt-1").is_dir()
    assert ray_left(box) == [], "Ray was left running after the failed launch"
    assert took < 150


@pytest.fixture(scope="module")
def kept(net: Net) -> Iterator[subprocess.CompletedProcess[str]]:
    """The healthy rack's check, which brings the cluster up and keeps it for the tests below."""
    yield net.launch(*net.args("netcheck", "healthy", "--keep-cluster", "--format", "json", "--join-timeout", "90"))


def test_a_healthy_rack_passes(net: Net, kept: subprocess.CompletedProcess[str]) -> None:
    assert kept.returncode == 0, kept.stderr[-3000:]
    report = json.loads(kept.stdout)
    hosts = net.box.hosts
    assert report["ok"] is True and report["backend"] == "gloo" and report["problems"] == []
    assert [n["host"] for n in report["nodes"]] == hosts and all(n["ok"] and n["ranks"] == 1 for n in report["nodes"])
    assert report["nodes"][2]["interfaces"]["GLOO_SOCKET_IFNAME"] == "eth0"  # as Ray expanded it there
    assert report["cluster"]["ranks"] == 3 and report["cluster"]["busbw_gbps"] > 0
    assert sorted(sorted(p["hosts"]) for p in report["pairs"]) == sorted(
        sorted(p) for p in [(hosts[0], hosts[1]), (hosts[1], hosts[2]), (hosts[2], hosts[0])])  # no floor on CPU: the ring
    run = net.runs / "healthy" / "netcheck"
    assert json.loads((run / "netcheck.json").read_text())["ok"] is True
    if importlib.util.find_spec("matplotlib") is not None:  # the `plot` extra
        assert report["png"] == str(run / "pairs.png") and (run / "pairs.png").stat().st_size > 0
    assert "cluster" in kept.stderr and "██" in kept.stderr  # the table and the coloured matrix
    assert ranks_left(net.box) == []
    assert ray_processes(net.box, 3) != []  # --keep-cluster


def test_a_throttled_host_is_named(net: Net, kept: subprocess.CompletedProcess[str]) -> None:
    assert kept.returncode == 0
    h3 = net.box.hosts[2]
    net.shape(3, "tbf", "rate", "50mbit", "burst", "64kbit", "latency", "400ms")
    try:
        res = net.launch(*net.args("netcheck", "throttled", "--external-ray", "--format", "json", "--no-collect"))
    finally:
        net.unshape(3)
    assert res.returncode == 1, res.stderr[-3000:]
    report = json.loads(res.stdout)
    assert report["ok"] is False
    assert {h for p in report["problems"] for h in p["hosts"]} == {h3}, report["problems"]
    assert [n["host"] for n in report["nodes"] if not n["ok"]] in ([], [h3])
    slow = {tuple(sorted(p["hosts"])) for p in report["pairs"] if not p["ok"]}
    assert all(h3 in pair for pair in slow) and slow
    assert h3 in res.stderr.strip().splitlines()[-1]


def test_a_link_that_passes_almost_nothing_times_out(net: Net, kept: subprocess.CompletedProcess[str]) -> None:
    assert kept.returncode == 0
    h3 = net.box.hosts[2]
    net.shape(3, "tbf", "rate", "8kbit", "burst", "1600", "latency", "50ms")
    try:
        t0 = time.monotonic()
        res = net.launch(*net.args("netcheck", "cut", "--external-ray", "--format", "json", "--netcheck-timeout", "8",
                                  "--no-collect"))
        took = time.monotonic() - t0
        left = ranks_left(net.box, 1) + ranks_left(net.box, 2)
    finally:
        net.unshape(3)
    assert res.returncode == 1, res.stderr[-3000:]
    report = json.loads(res.stdout)
    assert h3 in {h for p in report["problems"] for h in p["hosts"]}, report["problems"]
    assert any("8s" in p["what"] for p in report["problems"]), report["problems"]
    assert took < 120, took  # nothing hangs
    assert left == []  # no rank left behind on the healthy hosts
