"""`up --profile air-p2p` for real on an 8-host rack-in-a-box: one command on the head runs the
Air recipe's cleanup on every host, its head and worker `ray start`s (Ray's logical GPUs: 8 per
host, the recipe's 64), waits for the 64 GPUs, holds an ssh session per worker, and runs the
smoke entry (standing in for train.py) with exactly the plan's argv. Then `--external-ray`
submits to that cluster without stopping or starting anything."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from glm45_launch.testing.rackbox import RackBox, free_prefix

pytestmark = pytest.mark.rackbox

SMOKE = Path(__file__).resolve().parent.parent / "examples" / "smoke_entry.py"
AIR_ENV = ["MC_TRANSFER_TIMEOUT", "RAY_DEBUG", "PYTHONPATH", "CUDA_DEVICE_MAX_CONNECTIONS", "NCCL_NVLS_ENABLE",
           "MODEL_ARGS_ROTARY_BASE", "MILES_LOG_DIR"]


def _procs(box: RackBox, host: int) -> list[tuple[str, str]]:
    """(comm, environ) of the host's user processes."""
    out = []
    for pid in box.user_pids(host):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
        except OSError:
            continue
        out.append((comm, environ))
    return out


def test_up_air_p2p_on_eight_hosts(tmp_path: Path) -> None:
    with RackBox(8, workdir=tmp_path / "box", prefix=free_prefix("g45air")) as box:
        checkout = box.workdir / "miles"
        checkout.mkdir()
        shutil.copy(SMOKE, checkout / "smoke_entry.py")
        hostfile = box.hostfile(box.workdir / "hostfile")
        runs = box.workdir / "runs"
        argv = [sys.executable, "-m", "glm45_launch", "up", "--profile", "air-p2p", "--hostfile", str(hostfile),
                "--base-dir", str(box.workdir / "root"), "--workdir", str(checkout), "--entry", "smoke_entry.py",
                "--hold-workers", "--skip-preflight", "--no-netcheck", "--join-timeout", "150", "--run-dir", str(runs / "air"),
                "--identity", str(box.identity), "--known-hosts", str(box.known_hosts)]
        t0 = time.monotonic()
        up = box.run_on(1, argv, cwd=str(checkout), capture_output=True, text=True, timeout=400,
                        stdin=subprocess.DEVNULL, env=box.host_environ(1))
        took = time.monotonic() - t0
        assert up.returncode == 0, up.stderr[-4000:]
        plan = json.loads((runs / "air" / "plan.json").read_text())
        report = json.loads((checkout / "smoke-report.json").read_text())

        # The entry ran with exactly the plan's train args (the Air recipe's, word for word).
        submit = next(s for s in plan["steps"] if s["kind"] == "submit")["commands"][0]
        cut = submit.index("--")
        assert submit[cut + 1:cut + 3] == ["python3", "smoke_entry.py"]
        assert report["argv"] == submit[cut + 3:]
        assert report["argv"][report["argv"].index("--update-weight-transfer-mode") + 1] == "p2p"
        assert report["nodes"] == 8 and report["gpus"] == 64 and report["ok"] is True
        assert sorted(report["runtime_env_keys"]) == sorted(AIR_ENV)  # Ray keeps them sorted
        assert {n["env"]["MC_TRANSFER_TIMEOUT"] for n in report["per_node"]} == {"300"}

        # Every host ran the cleanup (with `pkill -9 redis`) and joined with the memory monitor off.
        head_log = (runs / "air" / "hosts" / "head.log").read_text()
        assert "pkill -9 redis" in head_log
        for ip in box.hosts[1:]:
            log = (runs / "air" / "hosts" / f"{ip}.log").read_text()
            assert "pkill -9 redis ; env RAY_memory_monitor_refresh_ms=0 ray start --address=" in log
        for host in range(1, 9):
            raylets = [env for comm, env in _procs(box, host) if comm == "raylet"]
            assert raylets and "RAY_memory_monitor_refresh_ms=0" in raylets[0].split("\0"), host

        # The held sessions were open through the job and closed after it: nothing is left holding.
        steps = [s["kind"] for s in plan["steps"]]
        assert steps.index("join") < steps.index("hold") < steps.index("submit")
        assert "holding an ssh session open on 7 worker(s)" in up.stderr
        assert "ended before the job" not in up.stderr
        time.sleep(1)
        assert all(comm != "cat" for host in range(2, 9) for comm, _ in _procs(box, host))
        print(f"up --profile air-p2p on 8 hosts: {took:.1f}s")

        # --external-ray on the cluster now running: no Ray cleanup, no ray start, straight to the join.
        raylets = {h: _raylet_pids(box, h) for h in range(1, 9)}
        again = [w if w != str(runs / "air") else str(runs / "external") for w in argv if w != "--hold-workers"]
        ext = box.run_on(1, [*again, "--external-ray", "--no-wait"], cwd=str(checkout), capture_output=True,
                         text=True, timeout=300, stdin=subprocess.DEVNULL, env=box.host_environ(1))
        assert ext.returncode == 0, ext.stderr[-4000:]
        assert ext.stdout.strip().splitlines()[-1].startswith("raysubmit_")
        kinds = [s["kind"] for s in json.loads((runs / "external" / "plan.json").read_text())["steps"]]
        assert kinds == ["cleanup", "join", "submit"]  # (the network check is netcheck's tests')
        assert {h: _raylet_pids(box, h) for h in range(1, 9)} == raylets  # the same cluster, untouched
        assert "ray stop" not in (runs / "external" / "hosts" / "head.log").read_text()


def _raylet_pids(box: RackBox, host: int) -> set[int]:
    return {pid for pid in box.user_pids(host) if Path(f"/proc/{pid}/comm").exists()
            and Path(f"/proc/{pid}/comm").read_text().strip() == "raylet"}
