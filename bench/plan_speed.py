#!/usr/bin/env python3
"""How long `glm45-launch plan` takes for the 8-node golden rack, next to a bare interpreter.

Not a test: run it by hand, e.g. ``python3 bench/plan_speed.py -n 30``. Each run is a fresh
subprocess (what a user pays at the shell): ``glm45-launch plan --hostfile HOSTS`` (the
console script if installed, else ``python3 -m glm45_launch``) and ``python3 -c pass``.
Prints the median of each, their ratio, and the plan's overhead over the interpreter.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests/data/golden/glm45-355b-a32b-8node.json"


def time_runs(argv: list[str], env: dict[str, str], runs: int, cwd: str) -> list[float]:
    """Wall seconds of ``runs`` runs of ``argv`` (after one untimed warm-up run)."""
    times = []
    for i in range(runs + 1):
        start = time.perf_counter()
        proc = subprocess.run(
            argv,
            env=env,
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            sys.exit(f"{argv[0]} failed ({proc.returncode}): {proc.stderr.decode(errors='replace').strip()}")
        if i:
            times.append(elapsed)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--runs", type=int, default=20, help="timed runs of each command")
    parser.add_argument("--format", default="text", choices=["text", "json", "bash"], help="plan --format")
    parser.add_argument(
        "--module", action="store_true", help="use `python3 -m glm45_launch` even if installed"
    )
    args = parser.parse_args()

    golden = json.loads(GOLDEN.read_text())
    exe = None if args.module else shutil.which("glm45-launch")
    launcher = [exe] if exe else [sys.executable, "-m", "glm45_launch"]
    env = {
        k: v for k, v in os.environ.items() if k not in ("BASE_DIR", "MLP_WORKER_0_HOST", "MLP_SOCKET_IFNAME")
    }
    env.update(golden["environment"])
    env["PYTHONPATH"] = str(ROOT)

    with tempfile.TemporaryDirectory(prefix="glm45-bench-") as tmp:
        hosts = Path(tmp) / "hosts"
        hosts.write_text("".join(line + "\n" for line in golden["hostfile"]))
        plan_argv = [*launcher, "plan", "--hostfile", str(hosts), "--format", args.format]
        base_argv = [sys.executable, "-c", "pass"]
        plan_t = time_runs(plan_argv, env, args.runs, tmp)
        base_t = time_runs(base_argv, env, args.runs, tmp)

    plan_med, base_med = statistics.median(plan_t), statistics.median(base_t)
    print(f"runs each         : {args.runs} (plus 1 warm-up)")
    print(f"plan command      : {' '.join(plan_argv[:2])} ... --format {args.format}")
    print(
        f"plan median       : {plan_med * 1000:7.1f} ms  (min {min(plan_t) * 1000:.1f}, max {max(plan_t) * 1000:.1f})"
    )
    print(
        f"python -c pass    : {base_med * 1000:7.1f} ms  (min {min(base_t) * 1000:.1f}, max {max(base_t) * 1000:.1f})"
    )
    print(f"ratio             : {plan_med / base_med:7.2f} x")
    print(f"overhead          : {(plan_med - base_med) * 1000:7.1f} ms")


if __name__ == "__main__":
    main()
