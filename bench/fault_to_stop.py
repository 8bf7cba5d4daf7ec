#!/usr/bin/env python3
"""Benchmark (not a test): from a fault to the job being stopped, under `glm45-launch up`'s health watch.

On one rack-in-a-box (root needed), each run launches `up` on the head (h1) with the stand-in
trainer (glm45_launch/testing/standin_trainer.py: it hangs, like NCCL, when a node is lost),
waits for two iterations, injects the fault on the last host, and reads the run's
events.jsonl: when the watch saw the fault (`fault-detected`) and when the job was over
(`job-stopped`). Prints every run and the medians.

    python3 bench/fault_to_stop.py [--hosts 3] [--runs 5] [--fault raylet|host-down|network-cut]
                                   [--health-interval 10] [--health-timeout 10]

Faults: `raylet` SIGKILLs the host's raylet by PID; `host-down` stops its sshd and kills every
process on it (a crashed host: SSH refused, Ray's node table marks it DEAD later);
`network-cut` takes its link down (packets dropped: checks time out).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from glm45_launch.testing import standin_trainer
from glm45_launch.testing.rackbox import RackBox, free_prefix, make_base_dir


def _iterations(report: Path) -> int:
    try:
        return sum('"iteration"' in line for line in report.read_text().splitlines())
    except OSError:
        return 0


def _inject(box: RackBox, host: int, fault: str) -> None:
    if fault == "host-down":
        box.stop_sshd(host)
        box.kill_all(host)
        return
    if fault == "network-cut":
        box.set_link(host, False)
        return
    for pid in box.user_pids(host):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "raylet":
                os.kill(pid, signal.SIGKILL)
                return
        except OSError:
            continue
    raise RuntimeError(f"no raylet on h{host}")


def one_run(box: RackBox, args: argparse.Namespace, n: int, up: list[str], checkout: Path) -> tuple[float, float]:
    """(seconds to detection, seconds to the job stopped) after the fault, for run ``n``."""
    report = checkout / standin_trainer.REPORT
    report.unlink(missing_ok=True)
    run_dir = box.workdir / "runs" / f"run-{n}"
    err = box.workdir / f"run-{n}.stderr"
    with err.open("w") as fh:
        proc = box.popen_on(1, [*up, "--run-dir", str(run_dir)], cwd=str(checkout), stdout=subprocess.DEVNULL,
                            stderr=fh, stdin=subprocess.DEVNULL, env=box.host_environ(1))
    try:
        deadline = time.monotonic() + 180
        while _iterations(report) < 2:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"run {n}: the job never ran two iterations:\n{err.read_text()[-2000:]}")
            time.sleep(0.2)
        _inject(box, box.n_hosts, args.fault)
        fault_at = time.time()
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    detected = next(e["t"] for e in events if e["event"] == "fault-detected")
    stopped = next(e["t"] for e in events if e["event"] == "job-stopped")
    return detected - fault_at, stopped - fault_at


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=3)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--fault", choices=("raylet", "host-down", "network-cut"), default="raylet")
    ap.add_argument("--health-interval", type=float, default=10.0, help="up's --health-interval (its default: 10)")
    ap.add_argument("--health-timeout", type=float, default=10.0, help="up's --health-timeout (its default: 10)")
    args = ap.parse_args()

    detect, stop = [], []
    with RackBox(args.hosts, prefix=free_prefix("g45fault")) as box:
        checkout = box.workdir / "checkout"
        checkout.mkdir()
        shutil.copy(standin_trainer.__file__, checkout / "standin_trainer.py")
        base = make_base_dir(box.workdir / "base")
        hostfile = box.hostfile(box.workdir / "hostfile")
        up = [sys.executable, "-m", "glm45_launch", "up", "--hostfile", str(hostfile), "--base-dir", str(base),
              "--workdir", str(checkout), "--entry", "standin_trainer.py", "--actor-num-nodes", str(args.hosts),
              "--force", "--skip-preflight", "--no-collect", "--identity", str(box.identity),
              "--known-hosts", str(box.known_hosts), "--retries", "2",
              "--checkpoint-dir", str(box.workdir / "ckpt"), "--set", "ROLLOUT.--num-rollout=100000",
              "--extra-args", "--standin-step-seconds 1",
              "--health-interval", str(args.health_interval), "--health-timeout", str(args.health_timeout)]
        for n in range(1, args.runs + 1):
            if args.fault == "host-down":
                box.start_sshd(box.n_hosts)
            box.set_link(box.n_hosts, True)
            shutil.rmtree(box.workdir / "ckpt", ignore_errors=True)
            d, s = one_run(box, args, n, up, checkout)
            detect.append(d)
            stop.append(s)
            print(f"run {n}: fault seen after {d:5.1f}s, job stopped after {s:5.1f}s", flush=True)
        box.run_on(1, [sys.executable, "-m", "glm45_launch", "down", "--hostfile", str(hostfile),
                       "--identity", str(box.identity), "--known-hosts", str(box.known_hosts)],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(f"\n{args.fault} fault on 1 of {args.hosts} hosts, --health-interval {args.health_interval:g} "
          f"--health-timeout {args.health_timeout:g}, {args.runs} runs:")
    print(f"  fault -> detected      median {statistics.median(detect):5.1f}s  (min {min(detect):.1f}, "
          f"max {max(detect):.1f})")
    print(f"  fault -> job stopped   median {statistics.median(stop):5.1f}s  (min {min(stop):.1f}, max {max(stop):.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
