#!/usr/bin/env python3
"""Benchmark (not a test): the seconds the network check adds to `glm45-launch up`, and their
ratio to the join phase, on rack-in-a-box hosts (root needed; CPU: Gloo, one rank per node).

For each box size, side by side on one box: `up --no-netcheck` (A), then `up` with the check
(B), each with a trivial train.py. The launcher's stderr is read line by line as it comes: the
join phase is from the start to "cluster ready", the check from there to "netcheck passed".
Prints both, their ratio, the check's own step time, and B - A.

    python3 bench/netcheck.py [--hosts 4 8] [--runs 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from glm45_launch.testing.rackbox import RackBox, free_prefix


def up(box: RackBox, args: list[str], cwd: Path) -> dict[str, float]:
    """One `up` on the head: wall time, and when "cluster ready" / "netcheck passed" came."""
    start = time.monotonic()
    proc = box.popen_on(1, [sys.executable, "-m", "glm45_launch", "up", *args], cwd=str(cwd),
                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen: dict[str, float] = {}
    last = ""
    assert proc.stderr is not None
    for line in proc.stderr:
        now = time.monotonic() - start
        last = line.strip() or last
        for key, marker in (("ready", "cluster ready"), ("checked", "netcheck passed"), ("checked", "netcheck failed")):
            if marker in line and key not in seen:
                seen[key] = now
    proc.wait()
    seen["total"] = time.monotonic() - start
    seen["ok"] = float(proc.returncode == 0)
    if proc.returncode != 0:
        print(f"  ! up exited {proc.returncode}: {last}", flush=True)
    return seen


def bench(n: int, runs: int) -> dict[str, float]:
    with RackBox(n, prefix=free_prefix("g45nc")) as box:
        checkout = box.workdir / "checkout"
        checkout.mkdir()
        (checkout / "train.py").write_text("import sys\nprint('train.py got', len(sys.argv) - 1, 'arguments')\n")
        hostfile = box.hostfile(box.workdir / "hostfile")
        common = ["--hostfile", str(hostfile), "--base-dir", str(box.workdir / "base"), "--workdir", str(checkout),
                  "--actor-num-nodes", str(n), "--force", "--skip-preflight", "--join-timeout", "300",
                  "--identity", str(box.identity), "--known-hosts", str(box.known_hosts)]
        a_runs, b_runs, steps = [], [], []
        for i in range(runs):
            a_runs.append(up(box, [*common, "--no-netcheck", "--run-dir", str(box.workdir / f"a{i}")], checkout))
            box.reset()
            b = up(box, [*common, "--run-dir", str(box.workdir / f"b{i}")], checkout)
            b_runs.append(b)
            outcomes = json.loads((box.workdir / f"b{i}" / "summary.json").read_text())["outcomes"]
            steps.append(next(o["duration_s"] for o in outcomes if o["what"] == "netcheck"))
            phases = json.loads((box.workdir / f"b{i}" / "netcheck" / "netcheck.json").read_text()).get("phases_s")
            box.reset()
    med = statistics.median
    join = med(r["ready"] for r in b_runs)
    check = med(r["checked"] - r["ready"] for r in b_runs)
    return {"hosts": n, "join_s": join, "netcheck_s": check, "ratio": check / join, "step_s": med(steps),
            "up_without_s": med(r["total"] for r in a_runs), "up_with_s": med(r["total"] for r in b_runs),
            "phases": phases, "failed": sum(1 for r in a_runs + b_runs if not r["ok"])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--runs", type=int, default=1)
    args = ap.parse_args()
    rows = [bench(n, args.runs) for n in args.hosts]
    print(f"{'hosts':>5} {'join s':>7} {'netcheck s':>10} {'ratio':>6} {'step s':>7} {'up w/o s':>8} "
          f"{'up with s':>9} {'B-A s':>6}")
    for r in rows:
        print(f"{r['hosts']:>5} {r['join_s']:>7.1f} {r['netcheck_s']:>10.1f} {r['ratio']:>6.2f} {r['step_s']:>7.1f} "
              f"{r['up_without_s']:>8.1f} {r['up_with_s']:>9.1f} {r['up_with_s'] - r['up_without_s']:>6.1f}")
    for r in rows:
        print(f"{r['hosts']} hosts, the check's phases (last run, s): {r['phases']}; failed runs: {r['failed']}")
    print("join s: up's start to 'cluster ready'; netcheck s: from there to 'netcheck passed' (what the check "
          "adds to up); step s: the check's own step; B-A: up with the check minus up without, side by side")
    return 0


if __name__ == "__main__":
    sys.exit(main())
