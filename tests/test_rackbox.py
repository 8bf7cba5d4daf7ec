"""The rack-in-a-box fixture itself: network, ssh, PID isolation, a real Ray cluster, teardown."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from glm45_launch.testing.rackbox import RackBox, RackBoxError, free_prefix

RAY_FLAGS = "--num-gpus 8 --disable-usage-stats --dashboard-host=0.0.0.0 --dashboard-port=8265"


def _comms(box: RackBox, host: int) -> list[str]:
    out = []
    for pid in box.pids(host):
        try:
            out.append(Path(f"/proc/{pid}/comm").read_text().strip())
        except OSError:
            pass
    return out


def _wait_for(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _netns_names() -> set[str]:
    try:
        return set(os.listdir("/run/netns"))
    except FileNotFoundError:
        return set()


# ------------------------------------------------------------------ no root needed
def test_accessors_without_starting(tmp_path: Path) -> None:
    box = RackBox(3, workdir=tmp_path, prefix="g45u")
    assert box.hosts == ["10.123.0.1", "10.123.0.2", "10.123.0.3"]
    assert box.head == "10.123.0.1" == box.host_env["MLP_WORKER_0_HOST"]
    assert box.host_env["MLP_SOCKET_IFNAME"] == "eth0"
    assert box.ip("h2") == box.ip("10.123.0.2") == box.ip(2) == box.ip("g45u-h2")
    with pytest.raises(ValueError, match="1-based"):
        box.ip(0)
    hf = box.hostfile(tmp_path / "hostfile", hosts=[1, "10.123.0.3"], slots=4)
    assert hf.read_text() == "10.123.0.1 slots=4\n10.123.0.3 slots=4\n"
    argv = box.ssh_argv(2)
    assert argv[:4] == ["ip", "netns", "exec", "g45u-br"] and argv[-1] == "root@10.123.0.2"
    assert "StrictHostKeyChecking=yes" in argv and str(box.identity) in argv
    assert box.ssh_argv(2, admin=False)[0] == "ssh"
    box.close()  # never started: a no-op


# ------------------------------------------------------------------ on the box
@pytest.mark.rackbox
def test_ssh_into_each_host(rackbox: RackBox) -> None:
    for index, ip in enumerate(rackbox.hosts, start=1):
        r = rackbox.ssh(
            index,
            'hostname -I; ip -o -4 addr show dev "$MLP_SOCKET_IFNAME"; echo "head=$MLP_WORKER_0_HOST";'
            " hostname; command -v ray python3; cat /proc/1/comm",
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0].split() == [ip]
        assert f"inet {ip}/24" in lines[1]
        assert lines[2] == f"head={rackbox.head}"
        assert lines[3] == rackbox.netns(index)  # g45-hN
        # the interpreter's own bin dir, not pyenv shims: ray/python3 work in non-interactive ssh
        assert lines[4:6] == [
            str(Path(sys.executable).parent / "ray"),
            str(Path(sys.executable).parent / "python3"),
        ]
        assert lines[6] == "rackbox-init"  # its own PID namespace


@pytest.mark.rackbox
def test_run_on_head_is_like_a_login_on_it(rackbox: RackBox) -> None:
    # What the launcher sees when run on the head: cluster env, the head's network, its /tmp,
    # the workdir at the same path, and a plain `ssh root@HOST` to the others (box's ~/.ssh).
    marker = rackbox.workdir / "visible-inside"
    marker.write_text("ok")
    r = rackbox.run_on(
        1,
        f'echo "$MLP_WORKER_0_HOST $MLP_SOCKET_IFNAME"; pwd; cat {marker}; echo;'
        f" ssh -o BatchMode=yes root@{rackbox.hosts[1]} hostname",
        cwd=rackbox.workdir,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [f"{rackbox.head} eth0", str(rackbox.workdir), "ok", rackbox.netns(2)]


@pytest.mark.rackbox
def test_pkill_inside_a_host_stays_inside(fresh_rackbox: RackBox) -> None:
    box = fresh_rackbox
    # Safety precondition before any pkill: host 2 really has its own PID namespace.
    r = box.ssh(2, "cat /proc/1/comm; ps -e --no-headers | wc -l", capture_output=True, text=True, timeout=30)
    comm, nprocs = r.stdout.split()
    assert comm == "rackbox-init" and int(nprocs) < 10, r.stdout
    # Sentinels in the machine's root namespace that a leaking pkill would hit.
    sentinels = [
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1000)"]),
        subprocess.Popen(["sleep", "1000"]),
    ]
    try:
        bg = "nohup {} </dev/null >/dev/null 2>&1 &"
        spawner = "import subprocess, time; subprocess.Popen(['sleep', '1000']); time.sleep(1000)"
        assert box.ssh(2, bg.format(f'python3 -c "{spawner}"'), timeout=30).returncode == 0
        assert box.ssh(3, bg.format("sleep 1000"), timeout=30).returncode == 0
        _wait_for(lambda: {"python3", "sleep"} <= set(_comms(box, 2)), what="python3+sleep in h2")
        _wait_for(lambda: "sleep" in _comms(box, 3), what="sleep in h3")

        assert box.ssh(2, "pkill -9 python; pkill -9 sleep; true", timeout=30).returncode == 0
        _wait_for(lambda: not {"python3", "sleep"} & set(_comms(box, 2)), what="h2 cleared")
        assert "sleep" in _comms(box, 3)
        assert all(p.poll() is None for p in sentinels)
        assert {"rackbox-init", "sshd"} <= set(_comms(box, 2))  # the host itself is still up
    finally:
        for p in sentinels:
            p.kill()
            p.wait()


@pytest.mark.rackbox
def test_host_down_and_changed_host_key(fresh_rackbox: RackBox) -> None:
    box = fresh_rackbox
    box.stop_sshd(3)
    r = box.ssh(3, "true", capture_output=True, text=True, timeout=30)
    assert r.returncode == 255 and "refused" in r.stderr
    box.start_sshd(3)
    assert box.ssh(3, "true", timeout=30).returncode == 0

    box.rotate_host_key(2)
    r = box.ssh(2, "true", capture_output=True, text=True, timeout=30)
    assert r.returncode == 255 and "Host key verification failed" in r.stderr
    box.reset()  # rewrites known_hosts with the current keys
    assert box.ssh(2, "true", timeout=30).returncode == 0


# Run on the head once the cluster is up: alive nodes, GPUs, and the dashboard's job server.
RAY_PROBE = """
import json, time, urllib.request, ray
ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
deadline = time.time() + 30
while len([n for n in ray.nodes() if n["Alive"]]) < 3 and time.time() < deadline:
    time.sleep(0.2)
nodes = [n for n in ray.nodes() if n["Alive"]]
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
version = json.load(opener.open("http://127.0.0.1:8265/api/version", timeout=10))
print(json.dumps({"ips": sorted(n["NodeManagerAddress"] for n in nodes),
                  "gpus": ray.cluster_resources().get("GPU"), "ray": version.get("ray_version")}))
"""


def _stdout(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 0, (r.stdout or "")[-2000:] + (r.stderr or "")[-3000:]
    return r.stdout


@pytest.mark.rackbox
def test_ray_cluster_on_the_box(fresh_rackbox: RackBox, capsys: pytest.CaptureFixture[str]) -> None:
    """The recipe's Ray bring-up (RECIPE.md §2 steps 3-5) on 3 hosts with fake GPUs."""
    box, head = fresh_rackbox, fresh_rackbox.head
    out = {"capture_output": True, "text": True, "timeout": 90}
    t0 = time.monotonic()
    _stdout(box.run_on(1, f"ray start --head --node-ip-address {head} {RAY_FLAGS}", **out))
    t_head = time.monotonic() - t0
    # Workers the way the recipe starts them: plain `ssh root@HOST` from the head, in parallel.
    start = "ray stop --force ; ray start --address={}:6379 --node-ip-address {} {}"
    workers = [
        box.popen_on(1, ["ssh", "-o", "BatchMode=yes", f"root@{ip}", start.format(head, ip, RAY_FLAGS)],
                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for ip in box.hosts[1:]
    ]  # fmt: skip
    for p in workers:
        log, _ = p.communicate(timeout=90)
        assert p.returncode == 0, log[-3000:]
    info = json.loads(_stdout(box.run_on(1, ["python3", "-c", RAY_PROBE], **out)).splitlines()[-1])
    t_up = time.monotonic() - t0
    assert info["ips"] == sorted(box.hosts)
    assert info["gpus"] == 24.0  # --num-gpus 8 on GPU-less nodes: Ray takes it as declared
    mem = box.memory()

    # Ray expands ${VAR} in runtime_env env_vars from each node's own environment (RECIPE §2.5),
    # so the sshd SetEnv / run_on environment must reach the raylets.
    env_json = json.dumps({"env_vars": {"IFNAME": "${MLP_SOCKET_IFNAME}", "MADDR": "${MLP_WORKER_0_HOST}"}})
    job = "import os; print('IFNAME=' + os.environ['IFNAME'], 'MADDR=' + os.environ['MADDR'])"
    submit = ["ray", "job", "submit", "--address=http://127.0.0.1:8265", f"--runtime-env-json={env_json}"]
    assert f"IFNAME=eth0 MADDR={head}" in _stdout(box.run_on(1, [*submit, "--", "python3", "-c", job], **out))
    t_job = time.monotonic() - t0 - t_up
    raylets = [pid for pid in box.pids(2) if Path(f"/proc/{pid}/comm").read_text().strip() == "raylet"]
    assert raylets and b"MLP_SOCKET_IFNAME=eth0" in Path(f"/proc/{raylets[0]}/environ").read_bytes().split(
        b"\0"
    )

    box.kill_all()
    assert box.user_pids() == []
    assert not any(c.startswith(("ray", "gcs_server")) for h in (1, 2, 3) for c in _comms(box, h))
    with capsys.disabled():
        print(
            f"\n[rackbox ray] 3 nodes x 8 fake GPUs: head {t_head:.1f}s, all up {t_up:.1f}s, "
            f"job submit {t_job:.1f}s; cluster memory {mem}"
        )


@pytest.mark.rackbox
def test_close_kills_everything_and_is_idempotent(tmp_path: Path) -> None:
    # A namespace left by a "crashed" earlier run with the same prefix is removed at start.
    subprocess.run(["ip", "netns", "add", "g45t-h9"], check=True)
    box = RackBox(2, workdir=tmp_path, prefix="g45t")
    with box:
        assert "g45t-h9" not in _netns_names()
        assert box.ssh(1, "nohup sleep 1000 </dev/null >/dev/null 2>&1 &", timeout=30).returncode == 0
        lingering = box.popen_on(2, ["sleep", "1000"])
        _wait_for(lambda: "sleep" in _comms(box, 1), what="sleep in h1")
        pids = box.pids()
        assert len(pids) >= 8
        # A second box must not wreck a live one with the same prefix.
        with pytest.raises(RackBoxError, match="live box"):
            RackBox(1, workdir=tmp_path / "other", prefix="g45t").start()
        assert free_prefix("g45t") == "g45t_2"
    assert lingering.wait(timeout=5) is not None
    assert not [p for p in pids if Path(f"/proc/{p}").exists()]
    assert not {n for n in _netns_names() if n.startswith("g45t-")}
    assert box.closed
    box.close()
    with pytest.raises(RuntimeError, match="closed"):
        box.start()
