"""`glm45-launch up/down/status` for real on the rack-in-a-box: real sshd, real Ray, a real job.

The launcher runs on the head (h1), as the recipe's does; workers are reached over SSH with
the box's key and known_hosts. The job is the smoke entry (a Ray driver) standing in for
train.py with exactly the plan's arguments.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from boxhelpers import make_base_dir, ray_processes

from glm45_launch.testing.rackbox import RackBox

pytestmark = pytest.mark.rackbox

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "examples" / "smoke_entry.py"  # the shipped stand-in for train.py


@dataclass
class Rack:
    box: RackBox
    checkout: Path
    hostfile: Path
    runs: Path

    def ssh_args(self) -> list[str]:
        return ["--identity", str(self.box.identity), "--known-hosts", str(self.box.known_hosts)]

    def up_args(self, run: str, *extra: str) -> list[str]:
        return [
            "up", "--hostfile", str(self.hostfile), "--base-dir", str(self.box.workdir / "base"),
            "--workdir", str(self.checkout),
            "--entry", "smoke_entry.py", "--actor-num-nodes", "3", "--force", "--join-timeout", "90",
            "--run-dir", str(self.runs / run), "--retries", "2", *self.ssh_args(),
            "--force",  # the recipe's TP8xPP4xCP2 needs 64 GPUs; the box has 24: run anyway
            *extra,
        ]

    def launch(self, *args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
        """Run glm45-launch on the head, like a user logged in there."""
        return self.box.run_on(1, [sys.executable, "-m", "glm45_launch", *args], cwd=str(self.checkout),
                               capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                               env={**self.box.host_environ(1), **env})

    def report(self) -> dict:
        return json.loads((self.checkout / "smoke-report.json").read_text())

    def plan_json(self, run: str) -> dict:
        return json.loads((self.runs / run / "plan.json").read_text())


@pytest.fixture
def rack(rackbox: RackBox) -> Rack:
    rackbox.reset()
    checkout = rackbox.workdir / "checkout"
    checkout.mkdir(exist_ok=True)
    shutil.copy(SMOKE, checkout / "smoke_entry.py")
    (checkout / "smoke-report.json").unlink(missing_ok=True)
    runs = rackbox.workdir / "runs"
    make_base_dir(rackbox.workdir / "base")  # what up's preflight checks the plan's paths against
    hostfile = rackbox.hostfile(rackbox.workdir / "hostfile")
    yield Rack(rackbox, checkout, hostfile, runs)
    rackbox.reset()


def _env_of(report: dict, ip: str) -> dict:
    return next(n["env"] for n in report["per_node"] if n["node_ip"] == ip)


def test_lifecycle_up_status_rerun_down(rack: Rack) -> None:
    box = rack.box
    h1, h2, h3 = box.hosts
    # Nodes differ as on a real rack: h3 names another interface, h2 lacks the MLP_* vars.
    box.set_shell_env(3, exports={"MLP_SOCKET_IFNAME": "ifh3"})
    box.set_shell_env(2, unset=["MLP_SOCKET_IFNAME", "MLP_WORKER_0_HOST"])

    t0 = time.monotonic()
    # --skip-preflight, --no-netcheck: both would refuse h3's missing interface; this run shows what Ray does.
    up = rack.launch(*rack.up_args("first", "--skip-preflight", "--no-netcheck"))
    took = time.monotonic() - t0
    assert up.returncode == 0, up.stderr[-3000:]
    assert "SUCCEEDED" in up.stderr
    report = rack.report()
    plan = rack.plan_json("first")
    submit = next(s for s in plan["steps"] if s["kind"] == "submit")["commands"][0]
    # The job ran with the plan's argv, word for word (after `python3 smoke_entry.py`).
    assert submit[submit.index("--") + 1 : submit.index("--") + 3] == ["python3", "smoke_entry.py"]
    assert report["argv"] == submit[submit.index("--") + 3 :]
    assert report["cwd"] == str(rack.checkout)
    assert report["nodes"] == 3 and report["gpus"] == 24
    assert report["ok"] is True
    # Ray expands ${VAR} from each node's own environment: per-node values prove it.
    assert _env_of(report, h1)["GLOO_SOCKET_IFNAME"] == "eth0"
    assert _env_of(report, h3)["GLOO_SOCKET_IFNAME"] == "ifh3"
    assert _env_of(report, h3)["MASTER_ADDR"] == h1
    # Ray applies the env vars in sorted key order: MASTER_ADDR (from ${MLP_WORKER_0_HOST}) is
    # set before no_proxy expands ${MASTER_ADDR}, even where the session has no MASTER_ADDR.
    for host in (h1, h3):
        assert _env_of(report, host)["no_proxy"] == f"localhost,127.0.0.1,0.0.0.0,{h1}"
    # Unset on h2: Ray 2.60 substitutes "" (older releases left the ${VAR} literal).
    assert _env_of(report, h2)["GLOO_SOCKET_IFNAME"] in ("", "${MLP_SOCKET_IFNAME}")
    assert _env_of(report, h2)["MASTER_ADDR"] in ("", "${MLP_WORKER_0_HOST}")
    for node in report["per_node"]:
        assert node["env"]["PYTHONPATH"] == "/root/Megatron-LM/" and node["env"]["NCCL_IB_TC"] == "160"
    # The recipe's `pkill -9 python` ran on the head and the Python launcher survived it.
    head_log = (rack.runs / "first" / "hosts" / "head.log").read_text()
    assert "pkill -9 python" in head_log and "spared" in head_log
    summary = json.loads((rack.runs / "first" / "summary.json").read_text())
    assert summary["exit_code"] == 0 and summary["job_status"] == "SUCCEEDED"
    assert {"10.123.0.2", "10.123.0.3"} <= {o["host"] for o in summary["outcomes"]}
    print(f"up on 3 hosts: {took:.1f}s")

    status = rack.launch("status", "--hostfile", str(rack.hostfile), "--json", *rack.ssh_args())
    assert status.returncode == 0, status.stderr
    state = json.loads(status.stdout)
    assert [(r["host"], r["reachable"], r["ray_running"], r["alive_in_cluster"], r["gpus"]) for r in state["hosts"]] \
        == [(h, True, True, True, 8) for h in box.hosts]
    assert [j["status"] for j in state["jobs"]] == ["SUCCEEDED"]

    # A rerun on the live cluster works (cleanup first), here with --export-env for h2 and
    # --no-wait (returns the job id at once).
    (rack.checkout / "smoke-report.json").unlink()
    again = rack.launch(*rack.up_args("second", "--export-env", "--socket-ifname", "eth0", "--no-wait"))
    assert again.returncode == 0, again.stderr[-3000:]
    job_id = again.stdout.strip().splitlines()[-1]
    # up's preflight ran and passed on the live cluster: the held Ray port is only a warning.
    pre = json.loads((rack.runs / "second" / "preflight.json").read_text())
    assert pre["ok"] is True
    head_checks = {c["name"]: c["status"] for c in pre["hosts"][0]["checks"]}
    assert head_checks["port 6379"] == "warn" and head_checks["ifname"] == "ok" and head_checks["env"] == "ok"
    assert job_id.startswith("raysubmit_")
    deadline = time.monotonic() + 120
    while not (rack.checkout / "smoke-report.json").exists():
        assert time.monotonic() < deadline, "the --no-wait job never wrote its report"
        time.sleep(1)
    time.sleep(0.5)
    report = rack.report()
    assert _env_of(report, h2)["GLOO_SOCKET_IFNAME"] == "eth0"
    assert {_env_of(report, h)["MASTER_ADDR"] for h in box.hosts} == {h1}
    worker_cmd = next(s for s in rack.plan_json("second")["steps"] if s["host"] == h2)["remote_command"]
    assert f"env MASTER_ADDR={h1} MLP_SOCKET_IFNAME=eth0 MLP_WORKER_0_HOST={h1} ray start" in worker_cmd

    down = rack.launch("down", "--hostfile", str(rack.hostfile), *rack.ssh_args())
    assert down.returncode == 0, down.stderr
    time.sleep(1)
    assert ray_processes(box) == []
    status = rack.launch("status", "--hostfile", str(rack.hostfile), "--json", *rack.ssh_args())
    assert status.returncode == 1
    state = json.loads(status.stdout)
    assert [(r["reachable"], r["ray_running"], r["alive_in_cluster"]) for r in state["hosts"]] == [(True, False, False)] * 3


def _assert_failed_cleanly(rack: Rack, res: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert res.returncode == 1, res.stderr[-3000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("glm45-launch: error:"), last
    for needle in needles:
        assert needle in last, last
    assert "Traceback" not in res.stderr
    time.sleep(1)
    assert ray_processes(rack.box) == [], "a failed up left Ray running"


def test_up_stops_when_a_host_is_down_or_its_key_changed(rack: Rack) -> None:
    """One launch, two faults: h2's host key changed (refused), h3's sshd down (refused): both
    named, and the head's Ray stopped again."""
    rack.box.rotate_host_key(2)
    rack.box.stop_sshd(3)
    # --skip-preflight here and below: the executor's own handling (preflight's is test_preflight.py's).
    res = rack.launch(*rack.up_args("unreachable", "--skip-preflight"))
    _assert_failed_cleanly(rack, res, "10.123.0.2", "10.123.0.3")
    assert "CHANGED" in res.stderr and "connection refused" in res.stderr


def test_up_stops_when_ray_start_fails(rack: Rack) -> None:
    fake = rack.box.workdir / "fakebin"
    fake.mkdir(exist_ok=True)
    real = shutil.which("ray")
    (fake / "ray").write_text(
        "#!/bin/sh\n"
        'if [ "$1" = start ]; then echo "fake: cannot start raylet" >&2; exit 3; fi\n'
        f'exec {real} "$@"\n'
    )
    (fake / "ray").chmod(0o755)
    rack.box.set_shell_env(2, path_prepend=fake)
    res = rack.launch(*rack.up_args("ray-fails"))
    _assert_failed_cleanly(rack, res, "10.123.0.2")
    assert "fake: cannot start raylet" in res.stderr


def test_up_refuses_a_held_ray_port(rack: Rack) -> None:
    # A foreign service on the head's Ray port; renamed so the recipe's pkill does not match it.
    holder = rack.box.popen_on(1, [sys.executable, "-c", (
        "import socket, time\n"
        "open('/proc/self/comm', 'w').write('portholder')\n"
        "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        "s.bind(('10.123.0.1', 6379)); s.listen(); print('ready', flush=True); time.sleep(600)\n"
    )], stdout=subprocess.PIPE, text=True)
    # A plain python on the head: the recipe's cleanup (`pkill -9 python`) would kill it.
    canary = rack.box.popen_on(1, [sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        # Past preflight (which names the holder, see test_preflight.py): the executor itself
        # refuses, before its cleanup touches anything.
        res = rack.launch(*rack.up_args("held-port", "--skip-preflight"))
        _assert_failed_cleanly(rack, res, "10.123.0.1:6379", "already in use", "before the cleanup")
        assert canary.poll() is None, "the cleanup ran although the port was held by a foreign service"
    finally:
        for proc in (holder, canary):
            proc.kill()
            proc.wait()


def test_status_and_host_keys(rack: Rack) -> None:
    """An unknown key is refused; --accept-new-host-keys records it (a changed one never)."""
    known = rack.box.workdir / "known_hosts_partial"
    lines = [ln for ln in rack.box.known_hosts.read_text().splitlines() if "10.123.0.2" not in ln.split()[0]]
    known.write_text("\n".join(lines) + "\n")
    base = ["status", "--hostfile", str(rack.hostfile), "--json", "--identity", str(rack.box.identity),
            "--known-hosts", str(known), "--retries", "1"]
    home = rack.box.workdir / "empty-home"  # no ~/.ssh/known_hosts: only --known-hosts counts
    home.mkdir(exist_ok=True)
    res = rack.launch(*base, HOME=str(home))
    rows = {r["host"]: r for r in json.loads(res.stdout)["hosts"]}
    assert rows["10.123.0.2"]["reachable"] is False and "unknown" in rows["10.123.0.2"]["error"]
    assert rows["10.123.0.1"]["reachable"] is True
    res = rack.launch(*base, "--accept-new-host-keys", HOME=str(home))
    rows = {r["host"]: r for r in json.loads(res.stdout)["hosts"]}
    assert all(r["reachable"] for r in rows.values()), rows
    assert "10.123.0.2" in known.read_text()


def test_ctrl_c_stops_the_job(rack: Rack) -> None:
    (rack.checkout / "sleeper.py").write_text(
        "import time, pathlib\npathlib.Path('sleeper.started').write_text('x')\ntime.sleep(600)\n"
    )
    (rack.checkout / "sleeper.started").unlink(missing_ok=True)
    args = rack.up_args("ctrl-c")
    args[args.index("smoke_entry.py")] = "sleeper.py"
    proc = rack.box.popen_on(1, [sys.executable, "-m", "glm45_launch", *args], cwd=str(rack.checkout),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 150
        while not (rack.checkout / "sleeper.started").exists():
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.5)
        launcher = [p for p in rack.box.user_pids(1)
                    if b"glm45_launch" in Path(f"/proc/{p}/cmdline").read_bytes()
                    and Path(f"/proc/{p}/comm").read_text().strip().startswith("python")]
        assert len(launcher) == 1, launcher
        pid = launcher[0]
        # Of any of its threads (the job's follower starts `ray job submit`).
        children = [c for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]
        assert children, "ray job submit should be a child of the launcher"
        import os

        os.kill(pid, signal.SIGINT)
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-3000:]
    assert "stopping job raysubmit_" in err
    assert "still running" in err
    for child in children:
        assert not Path(f"/proc/{child}").exists(), "a launcher child survived Ctrl-C"
    status = rack.launch("status", "--hostfile", str(rack.hostfile), "--json", *rack.ssh_args())
    jobs = json.loads(status.stdout)["jobs"]
    assert [j["status"] for j in jobs] == ["STOPPED"]


def test_a_head_that_refuses_ssh_from_itself(rack: Rack) -> None:
    """The head runs here when it is this machine, in every command: with the head's sshd down,
    up, status, collect and down still reach it (and only the workers over SSH)."""
    rack.box.stop_sshd(1)
    up = rack.launch(*rack.up_args("no-self-ssh"))
    assert up.returncode == 0, up.stderr[-3000:]
    status = rack.launch("status", "--hostfile", str(rack.hostfile), "--json", *rack.ssh_args())
    assert status.returncode == 0, status.stderr[-2000:]
    assert [r["reachable"] for r in json.loads(status.stdout)["hosts"]] == [True] * 3
    collect = rack.launch("collect", "--hostfile", str(rack.hostfile), "--base-dir", str(rack.box.workdir / "base"),
                          "--runs", str(rack.runs), *rack.ssh_args())
    assert collect.returncode == 0, collect.stderr[-2000:]
    assert "no evidence" not in collect.stderr
    down = rack.launch("down", "--hostfile", str(rack.hostfile), *rack.ssh_args())
    assert down.returncode == 0, down.stderr[-2000:]
    assert "ray stop --force (here)" in down.stderr
    time.sleep(1)
    assert ray_processes(rack.box) == []


def test_a_broken_worker_environment_is_named_within_120s(rack: Rack) -> None:
    """A runtime-env PYTHONPATH that shadows `ray` with a failing module: Ray's workers cannot
    start (the job would stay PENDING for minutes); up stops it and names the import error."""
    shadow = rack.checkout / "shadow" / "ray"
    shadow.mkdir(parents=True, exist_ok=True)
    (shadow / "__init__.py").write_text('raise ImportError("shadowed ray: a broken module on PYTHONPATH")\n')
    t0 = time.monotonic()
    res = rack.launch(*rack.up_args("broken-env", "--skip-preflight", "--env", f"PYTHONPATH={shadow.parent}"))
    took = time.monotonic() - t0
    last = res.stderr.strip().splitlines()[-1]
    assert res.returncode == 1 and took < 120, (took, res.stderr[-3000:])
    assert last.startswith("glm45-launch: error: workers cannot start: 10.123.0.1: a Ray worker process cannot "
                           "start (raylet.err: ImportError: shadowed ray: a broken module on PYTHONPATH)"), last
    summary = (rack.runs / "broken-env" / "diagnostics" / "attempt-1" / "summary.txt").read_text()
    assert "first root error: raylet.err: ImportError: shadowed ray" in summary, summary
    rack.launch("down", "--hostfile", str(rack.hostfile), *rack.ssh_args())


def test_one_long_output_line_does_not_end_supervision(rack: Rack) -> None:
    """A job that prints one 10 MiB line and then keeps working: Ray may close its log tail; up
    keeps following the job (re-tail, then its status) and ends with the job's own outcome."""
    (rack.checkout / "longline.py").write_text(
        "import sys, time\n"
        "print('x' * (10 * 1024 * 1024), flush=True)\n"
        "for i in range(6):\n"
        "    time.sleep(1)\n"
        "    print(f'still working {i}', flush=True)\n"
        "print('finished', flush=True)\n"
    )
    args = rack.up_args("long-line", "--skip-preflight")
    args[args.index("smoke_entry.py")] = "longline.py"
    res = rack.launch(*args)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "finished: SUCCEEDED" in res.stderr
    summary = json.loads((rack.runs / "long-line" / "summary.json").read_text())
    assert summary["state"] == "succeeded" and summary["job_status"] == "SUCCEEDED"
    lost = "the driver log's tail was lost" in res.stderr
    assert lost == ("tail was lost" in (rack.runs / "long-line" / "job.log").read_text())
    assert "still working" in res.stderr or lost  # what Ray did with the tail is said, either way
    rack.launch("down", "--hostfile", str(rack.hostfile), *rack.ssh_args())
