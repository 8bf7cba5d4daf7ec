#!/usr/bin/env python3
"""Benchmark (not a test): the launcher's SSH fan-out against the bash way and parallel-ssh.

For each N, an N-host rack-in-a-box (sshd per host, a stub `ray`; `ray stop`, down's remote command,
takes --ray-stop-s, 0.3 s by default, as a real one on an idle node) and
a known_hosts of realistic size: the N hosts' keys plus filler up to --known-hosts-lines lines
(by default half of it hashed, as Debian's HashKnownHosts writes it). From the box's admin
machine, alternating runs of each arm for each phase:

  launcher  `glm45-launch down`, `glm45-launch preflight`, the worker-start phase of `up`
            (bench/fanout_phase.py: plan.worker_steps through one Runtime), and preflight then
            start over the same connections (what `up` does);
  bash      the same remote commands, `ssh -o KexAlgorithms=curve25519-sha256 ... &` per host,
            then `wait` (bench/fanout_bash.sh);
  pssh      parallel-ssh 2.16 (libssh2; no host key check), when importable (--pssh-python).

Per arm: wall time, the launcher side's CPU (user+sys of the arm's process tree, from wait4:
for bash that is bash plus every ssh client), peak memory of that tree (sampled RSS sum) and
the largest single process (ru_maxrss). Medians over --runs; the launcher's CPU is also fitted
as fixed + per-host cost over the Ns, to extrapolate.

    python3 bench/fanout.py [--hosts 32,128,200] [--runs 3] [--phases down,preflight,start,pf+start]
                            [--arms launcher,bash,pssh] [--pssh-python PATH] [--ray-stop-s 0.3] [--json OUT]

The launcher runs with its bytecode cached in the bench's folder (written by the warm-up run), as
an installed package has it, whatever PYTHONDONTWRITEBYTECODE says.

Root, 2+ cores, ~1 GB of memory per 100 hosts. Run it under the team's heavy-test lock.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from glm45_launch.checks.preflight import preflight_steps
from glm45_launch.checks.preflight_report import PreflightOptions
from glm45_launch.core.builder import build_plan
from glm45_launch.core.hostfile import load_hostfile
from glm45_launch.core.launch_steps import build_down_plan
from glm45_launch.core.plan import LaunchSpec
from glm45_launch.testing.rackbox import RackBox, free_prefix, make_base_dir

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PAGE = os.sysconf("SC_PAGE_SIZE")
STUB_RAY = REPO / "glm45_launch" / "testing" / "programs" / "ray"
PHASES = ("down", "preflight", "start", "pf+start")


@dataclass
class Sample:
    n: int
    phase: str
    arm: str
    wall_s: float
    cpu_s: float
    tree_peak_mib: float
    max_proc_mib: float
    ok: bool


def tree_rss(pid: int) -> int:
    """RSS bytes of ``pid`` and all its descendants (/proc)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * PAGE
            for task in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in Path(f"/proc/{p}/task/{task}/children").read_text().split()]
        except (OSError, ValueError, IndexError):
            continue
    return total


def measure(argv: list[str], env: dict[str, str], log: Path) -> tuple[float, float, float, float, int]:
    """(wall s, cpu s, peak tree RSS MiB, largest process MiB, exit code) of one child tree."""
    peak = [0]
    with log.open("ab") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out, cwd=REPO)
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.1):
                peak[0] = max(peak[0], tree_rss(proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        done.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
    return (wall, usage.ru_utime + usage.ru_stime, peak[0] / 2**20, usage.ru_maxrss / 1024, proc.returncode)


def fake_key(rng: bytes) -> str:
    """An ed25519 public key blob (random: a filler line's key is never checked)."""
    name = b"ssh-ed25519"
    blob = len(name).to_bytes(4, "big") + name + (32).to_bytes(4, "big") + hashlib.sha256(rng).digest()
    return base64.b64encode(blob).decode()


def hashed(name: str, salt: bytes) -> str:
    digest = hmac.digest(salt, name.encode(), "sha1")
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


def write_known_hosts(box: RackBox, path: Path, lines: int, style: str) -> None:
    """The box's N real keys plus filler up to ``lines``: 'mixed' hashes half the filler,
    'hashed' every line (real ones too), 'plain' none."""
    real = box.known_hosts.read_text().splitlines()
    if style == "hashed":
        real = [f"{hashed(ln.split()[0], os.urandom(20))} {' '.join(ln.split()[1:])}" for ln in real]
    filler = []
    for i in range(max(0, lines - len(real))):
        name = f"10.{200 + i // 65536 % 50}.{i // 256 % 256}.{i % 256}"
        if style == "hashed" or (style == "mixed" and i % 2):
            name = hashed(name, os.urandom(20))
        filler.append(f"{name} ssh-ed25519 {fake_key(i.to_bytes(4, 'big'))}")
    # Real keys sit among the filler, not first: a linear scan pays for the lines before them.
    half = len(filler) // 2
    path.write_text("\n".join(filler[:half] + real + filler[half:]) + "\n")


class Rack:
    """One N-host box prepared for every arm: hostfile, known_hosts, per-phase command dirs."""

    def __init__(self, box: RackBox, args: argparse.Namespace) -> None:
        self.box, self.n = box, box.n_hosts
        self.dir = box.workdir / "bench"
        self.dir.mkdir()
        self.home = self.dir / "home"  # no ~/.ssh of this machine: only the bench's known_hosts
        self.home.mkdir()
        self.hostfile = box.hostfile(self.dir / "hostfile")
        self.hosts_file = self.dir / "hosts"
        self.hosts_file.write_text("\n".join(box.hosts) + "\n")
        self.known = self.dir / "known_hosts"
        write_known_hosts(box, self.known, args.known_hosts_lines, args.known_hosts_style)
        self.base = make_base_dir(self.dir / "base")
        self.workdir = self.dir / "checkout"
        self.workdir.mkdir()
        (self.workdir / "train.py").write_text("print('stub')\n")
        self.args = args
        self.cmds = self._commands()

    def _commands(self) -> dict[str, dict[str, str]]:
        """phase -> host -> the remote command the launcher sends (what bash and pssh send)."""
        hostfile = load_hostfile(str(self.hostfile))
        plan = build_plan(LaunchSpec(hostfile=hostfile, head=self.box.head, base_dir=str(self.base),
                                     workdir=str(self.workdir)))
        probe = preflight_steps(plan, PreflightOptions(libs=False), head_is_local=False)
        phases = {
            "down": {s.host: s.remote_command for s in build_down_plan(hostfile, None)},
            "preflight": {s.host: s.remote_command for s in probe},
            "start": {s.host: s.remote_command for s in plan.worker_steps},
        }
        for phase, cmds in phases.items():
            d = self.dir / "cmd" / phase
            d.mkdir(parents=True)
            for host, cmd in cmds.items():
                (d / host).write_text(cmd)
            (self.dir / f"hosts.{phase}").write_text("\n".join(cmds) + "\n")
        return phases

    def slow_stop(self, seconds: float) -> Path:
        """A directory whose ``ray`` makes ``ray stop`` take ``seconds`` (what a real one takes on an
        idle node), then runs the stub: the remote command of ``down`` is not instant."""
        d = self.dir / "slow-stop"
        d.mkdir()
        (d / "ray").write_text(f'#!/bin/sh\n[ "$1" = stop ] && sleep {seconds:g}\nexec {STUB_RAY} "$@"\n')
        (d / "ray").chmod(0o755)
        return d

    def env(self) -> dict[str, str]:
        """No ~/.ssh of this machine; bytecode cached (as an installed package has it) in the bench's
        own folder, written by the warm-up run, even where PYTHONDONTWRITEBYTECODE is set."""
        env = {**os.environ, "HOME": str(self.home), "COLUMNS": "200", "PYTHONPYCACHEPREFIX": str(self.dir / "pyc")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        return env

    def argv(self, phase: str, arm: str, run: str) -> list[str] | None:
        logs = self.dir / "logs" / run
        logs.mkdir(parents=True, exist_ok=True)
        ssh = ["--identity", str(self.box.identity), "--known-hosts", str(self.known)]
        knobs = dict(kv.split("=") for kv in arm.split(":")[1:])  # launcher:p=32:s=8 (a variant)
        parallel, slots = knobs.get("p", ""), knobs.get("s", "")
        par = ["--parallel", parallel] if parallel else []
        if arm.startswith("launcher"):
            if slots and phase in ("down", "preflight"):
                return None  # the CLI has no knob for handshakes in flight
            py = [sys.executable]
            if phase == "down":
                argv = [*py, "-m", "glm45_launch", "down", "--hostfile", str(self.hostfile), *ssh, *par,
                        "--run-dir", str(logs)]
            elif phase == "preflight":
                argv = [*py, "-m", "glm45_launch", "preflight", "--hostfile", str(self.hostfile), "--head",
                        self.box.head, "--base-dir", str(self.base), "--workdir", str(self.workdir), "--no-libs",
                        *ssh, *par, "--run-dir", str(logs)]
            else:
                argv = [*py, str(BENCH / "fanout_phase.py"), "start" if phase == "start" else "preflight+start",
                        str(self.hostfile), self.box.head, str(self.base), str(self.box.identity), str(self.known),
                        str(logs), parallel or "0", slots or "0"]
        elif arm == "bash":
            phases = ("preflight", "start") if phase == "pf+start" else (phase,)
            loops = [f"{BENCH / 'fanout_bash.sh'} {self.dir / f'hosts.{p}'} {self.dir / 'cmd' / p} {self.known} "
                     f"{self.box.identity} {logs}" for p in phases]
            argv = ["bash", "-c", " && ".join(loops)]
        else:
            if not self.args.pssh_python or phase == "pf+start":
                return None
            argv = [self.args.pssh_python, str(BENCH / "fanout_pssh.py"), str(self.dir / f"hosts.{phase}"),
                    str(self.dir / "cmd" / phase), str(self.box.identity), str(max(self.n, 1))]
        return ["ip", "netns", "exec", self.box.bridge_netns, *argv]


def bench_n(n: int, args: argparse.Namespace) -> list[Sample]:
    samples: list[Sample] = []
    with RackBox(n, prefix=free_prefix("g45fan"), stub_ray=True) as box:
        rack = Rack(box, args)
        stop = rack.slow_stop(args.ray_stop_s)
        for k in range(1, n + 1):
            box.set_shell_env(k, exports={"RAY_STUB_START_S": str(args.ray_start_s)}, path_prepend=stop)
        print(f"== {n} hosts, known_hosts {args.known_hosts_lines} lines ({args.known_hosts_style}), "
              f"box {box.memory()}", flush=True)
        for phase in args.phases:
            arms = [a for a in args.arms if rack.argv(phase, a, "probe") is not None]
            for run in range(args.runs + 1):  # run 0 warms caches (page cache, sshd binaries): not kept
                order = arms[run % len(arms):] + arms[:run % len(arms)]  # alternate who goes first
                for arm in order:
                    argv = rack.argv(phase, arm, f"{phase}-{arm}-{run}")
                    assert argv is not None
                    wall, cpu, peak, biggest, code = measure(argv, rack.env(), rack.dir / f"{phase}-{arm}.out")
                    # preflight exits 1 on failed checks (no GPUs here); reaching every host is what counts
                    ok = code == 0 or (phase == "preflight" and arm.startswith("launcher") and code == 1
                                       and "ssh: " not in (rack.dir / f"{phase}-{arm}.out").read_text())
                    if run:
                        samples.append(Sample(n, phase, arm, wall, cpu, peak, biggest, ok))
                    print(f"  {phase:9} {arm:18} run {run}: {wall:6.2f} s  cpu {cpu:6.2f} s  "
                          f"peak {peak:6.0f} MiB{'' if ok else f'  FAILED ({code})'}", flush=True)
                    time.sleep(args.pause)
    return samples


def report(samples: list[Sample], args: argparse.Namespace) -> None:
    groups: dict[tuple[int, str, str], list[Sample]] = {}
    for s in samples:
        groups.setdefault((s.n, s.phase, s.arm), []).append(s)
    med = {k: Sample(k[0], k[1], k[2], statistics.median(x.wall_s for x in v), statistics.median(x.cpu_s for x in v),
                     statistics.median(x.tree_peak_mib for x in v), statistics.median(x.max_proc_mib for x in v),
                     all(x.ok for x in v)) for k, v in groups.items()}
    print(f"\nmedians of {args.runs} runs; known_hosts {args.known_hosts_lines} lines ({args.known_hosts_style}); "
          f"stub `ray start` {args.ray_start_s:g} s, `ray stop` {args.ray_stop_s:g} s")
    print(f"{'N':>4} {'phase':10} {'arm':18} {'wall s':>7} {'vs bash':>7} {'CPU s':>6} {'ms/host':>8} "
          f"{'tree MiB':>9} {'max proc MiB':>12}  ok")
    for (n, phase, arm), m in sorted(med.items(), key=lambda kv: (PHASES.index(kv[0][1]), kv[0][0], kv[0][2])):
        bash = med.get((n, phase, "bash"))
        ratio = f"{m.wall_s / bash.wall_s:6.2f}x" if bash else "-"
        print(f"{n:>4} {phase:10} {arm:18} {m.wall_s:7.2f} {ratio:>7} {m.cpu_s:6.2f} {1000 * m.cpu_s / n:8.1f} "
              f"{m.tree_peak_mib:9.0f} {m.max_proc_mib:12.0f}  {'yes' if m.ok else 'NO'}")
    print("\nlauncher CPU = fixed + per-host x N (least squares over the Ns; the extrapolation):")
    for phase in args.phases:
        for arm in args.arms:
            pts = sorted((n, m.cpu_s) for (n, p, a), m in med.items() if p == phase and a == arm)
            if len(pts) < 2:
                continue
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            slope, fixed = statistics.linear_regression(xs, ys)
            print(f"  {phase:10} {arm:18} fixed {fixed:5.2f} s + {1000 * slope:5.1f} ms/host  ->  2048 hosts: "
                  f"{fixed + slope * 2048:6.1f} s of CPU")
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(s) for s in samples], indent=1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", default="32,128,200", help="comma-separated N values")
    ap.add_argument("--runs", type=int, default=3, help="kept runs per arm (after one warm-up run)")
    ap.add_argument("--phases", default="down,preflight,start,pf+start")
    ap.add_argument("--arms", default="launcher,bash,pssh",
                    help="launcher, bash, pssh; launcher:p=N:s=M is the launcher with --parallel N and M SSH "
                         "handshakes in flight (s only for start, pf+start)")
    ap.add_argument("--ray-start-s", type=float, default=0.0,
                    help="how long the stub `ray start` takes on every host (a real one: seconds)")
    ap.add_argument("--ray-stop-s", type=float, default=0.3,
                    help="how long `ray stop` takes on every host (the remote command of down)")
    ap.add_argument("--known-hosts-lines", type=int, default=2048)
    ap.add_argument("--known-hosts-style", choices=("mixed", "hashed", "plain"), default="mixed")
    ap.add_argument("--pssh-python", default=shutil.which("python3") if _has_pssh() else None,
                    help="a Python with parallel-ssh installed (default: this one, if it has it)")
    ap.add_argument("--pause", type=float, default=1.0, help="seconds between runs (sshd's children exit)")
    ap.add_argument("--json", help="write every sample here")
    args = ap.parse_args()
    args.phases = [p for p in args.phases.split(",") if p]
    args.arms = [a for a in args.arms.split(",") if a and (a != "pssh" or args.pssh_python)]
    if bad := set(args.phases) - set(PHASES):
        ap.error(f"unknown phases {bad}")
    print("parallel-ssh: " + (args.pssh_python or "not installed (pip install parallel-ssh; --pssh-python)"))
    samples = [s for n in (int(x) for x in args.hosts.split(",")) for s in bench_n(n, args)]
    report(samples, args)
    return 0


def _has_pssh() -> bool:
    try:
        import pssh  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
