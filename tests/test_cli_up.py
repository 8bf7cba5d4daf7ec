"""`up` refuses to run anywhere but on the head, before it contacts any host."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from glm45_launch.runtime import hostfacts as cluster


def test_local_addresses_are_this_machines() -> None:
    addrs = cluster.local_addresses()
    assert "127.0.0.1" in addrs
    assert cluster.is_local_address("127.0.0.1") and cluster.is_local_address("localhost")
    # A documentation address (RFC 5737) is never ours; nothing is sent to find out.
    assert not cluster.is_local_address("192.0.2.10")


needs_unshare = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare")


def _up_in_empty_netns(tmp_path: Path, hosts: str, head: str) -> subprocess.CompletedProcess[str]:
    """`up` in an empty network namespace: even a regression could not reach any host."""
    hostfile = tmp_path / "hosts"
    hostfile.write_text(hosts)
    return subprocess.run(
        ["unshare", "--net", sys.executable, "-m", "glm45_launch", "up", "--hostfile", str(hostfile),
         "--head", head, "--base-dir", "/data", "--actor-num-nodes", "2", "--force",
         "--run-dir", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )


@needs_unshare
def test_up_off_the_head_fails_before_preflight(tmp_path: Path) -> None:
    res = _up_in_empty_netns(tmp_path, "192.0.2.10 slots=8\n192.0.2.11 slots=8\n", "192.0.2.10")
    assert res.returncode == 2, res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last == ("glm45-launch: error: --head 192.0.2.10 is not an address of this machine: run "
                    "glm45-launch on the head (the recipe's head-side commands run where the launcher runs)")
    assert "preflight" not in res.stderr
    assert not (tmp_path / "run").exists()


@needs_unshare
def test_up_refuses_the_head_listed_under_another_name(tmp_path: Path) -> None:
    # Only loopback is local in the empty namespace: 127.0.0.1 is the head, and "localhost"
    # in the hostfile is the same machine, which must not get a worker's cleanup.
    hostfile = tmp_path / "hosts"
    res = _up_in_empty_netns(tmp_path, "127.0.0.1\nlocalhost\n", "127.0.0.1")
    assert res.returncode == 2, res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith(f"glm45-launch: error: {hostfile}:2: localhost is this machine (the head")
    assert not (tmp_path / "run").exists()


def test_one_spelling_per_host() -> None:
    from glm45_launch.core.builder import build_plan
    from glm45_launch.core.hostfile import host_key, parse_hostfile_text
    from glm45_launch.core.plan import LaunchSpec

    assert host_key("FE80:0::1") == host_key("fe80::1") and host_key("NODE1.") == host_key("node1")
    plan = build_plan(LaunchSpec(hostfile=parse_hostfile_text("Node-1\nnode-2\n"), head="node-1", base_dir="/d"))
    assert [s.host for s in plan.worker_steps] == ["node-2"]
