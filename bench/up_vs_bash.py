#!/usr/bin/env python3
"""Benchmark (not a test): `glm45-launch up` against the reference bash recipe, side by side.

On one rack-in-a-box (root needed), alternating runs of
  A. glm45-launch up (preflight, cleanup, parallel SSH, join wait, job)
  A'. the same with --skip-preflight
  B. examples/run-glm4.5-355B-A32B.sh with real `ssh` as the transport
each with the smoke entry as train.py, on the head (h1) of the live cluster the previous run
left (every arm cleans up first). Prints every time, the median ratios to B, and the time
of `glm45-launch plan`.

    python3 bench/up_vs_bash.py [--hosts 3] [--runs 3] [--job smoke|trivial]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from glm45_launch.testing.rackbox import RackBox, free_prefix, make_base_dir

REPO = Path(__file__).resolve().parent.parent


def timed(box: RackBox, argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, int]:
    start = time.monotonic()
    res = box.run_on(1, argv, cwd=str(cwd), env=env, stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    took = time.monotonic() - start
    if res.returncode != 0:
        print(f"  ! {argv[:3]} exited {res.returncode}: {res.stderr.strip().splitlines()[-1:]}")
    return took, res.returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=3)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--job", choices=("smoke", "trivial"), default="smoke",
                    help="smoke: the smoke entry (a Ray driver probing every node); trivial: a train.py "
                         "that only prints its argc, so the launch overhead dominates")
    args = ap.parse_args()

    with RackBox(args.hosts, prefix=free_prefix("g45bench")) as box:
        checkout = box.workdir / "checkout"
        checkout.mkdir()
        if args.job == "smoke":
            shutil.copy(REPO / "glm45_launch" / "testing" / "smoke_entry.py", checkout / "train.py")
        else:
            (checkout / "train.py").write_text("import sys\nprint('train.py got', len(sys.argv) - 1, 'arguments')\n")
        base = make_base_dir(box.workdir / "base")
        hostfile = box.hostfile(box.workdir / "hostfile")
        # The bash recipe hard-codes --actor-num-nodes 8: a copy says how many hosts the box has,
        # so the smoke entry waits for exactly the nodes that exist, in both arms.
        scripts = box.workdir / "scripts"
        shutil.copytree(REPO / "examples", scripts)
        bash = scripts / "run-glm4.5-355B-A32B.sh"
        bash.write_text(bash.read_text().replace("--actor-num-nodes 8", f"--actor-num-nodes {args.hosts}"))
        env = {**box.host_environ(1), "BASE_DIR": str(base), "HOSTFILE": str(hostfile)}

        up = [sys.executable, "-m", "glm45_launch", "up", "--hostfile", str(hostfile), "--base-dir", str(base),
              "--workdir", str(checkout), "--actor-num-nodes", str(args.hosts), "--force"]
        # The third arm shows what the host checks cost: the same launch without preflight.
        arms = {"glm45-launch up": up, "up --skip-preflight": [*up, "--skip-preflight"],
                "bash recipe": ["bash", str(bash)]}
        times: dict[str, list[float]] = {name: [] for name in arms}
        # Warm-up (first Ray start pays for cold caches), not counted.
        timed(box, arms["bash recipe"], checkout, env)
        for i in range(args.runs):
            order = list(arms) if i % 2 == 0 else list(reversed(arms))  # alternate who goes first
            for name in order:
                took, rc = timed(box, arms[name], checkout, env)
                print(f"run {i + 1} {name:<20} {took:6.1f}s  exit {rc}", flush=True)
                if rc != 0:  # a launch that failed fast must not make its arm look quick
                    print(f"benchmark aborted: {name} failed")
                    return 1
                times[name].append(took)

        plan_argv = [sys.executable, "-m", "glm45_launch", "plan", "--hostfile", str(hostfile),
                     "--base-dir", str(base), "--head", box.head]
        plan_times = []
        for _ in range(10):
            start = time.monotonic()
            subprocess.run(plan_argv, stdout=subprocess.DEVNULL, check=True)
            plan_times.append(time.monotonic() - start)
        box.run_on(1, [sys.executable, "-m", "glm45_launch", "down", "--hostfile", str(hostfile)],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    bash_median = statistics.median(times["bash recipe"])
    print(f"\nmedian over {args.runs} alternating runs on {args.hosts} hosts, {args.job} job:")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:<20} {median:6.1f}s   ratio to bash {median / bash_median:5.2f}")
    print(f"  glm45-launch plan    {statistics.median(plan_times) * 1000:6.0f} ms (median of 10)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
