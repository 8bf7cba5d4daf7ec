"""Diagnostics of one node after a failure: ``python3 -c PROGRAM CONFIG`` (standard library only).

Prints, in sections and within ``max_bytes`` in all: the tails of Ray's logs (raylet, GCS,
the newest worker error files), of ``dmesg`` (with the NVIDIA Xid lines counted) and
``nvidia-smi``'s GPU table; then one line ``MARKER {json summary}``. The summary's ``root_error``
is the first root error found: the last line of the first Python traceback (a worker that
cannot ``import ray`` writes one to ``raylet.err``), not the last log line. Every command has a
timeout and nothing it runs changes the node.

With ``"mode": "startup"`` it only looks for Ray worker processes that failed at start-up (a
traceback through Ray's ``default_worker.py``/``setup_worker.py``) and prints the summary line:
the health watch runs it while a job starts.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import socket
import subprocess
import sys

RAY_LOGS = ("raylet.out", "raylet.err", "gcs_server.out", "gcs_server.err", "monitor.log", "dashboard.err")
ERROR = re.compile(r"(^\[[^\]]* [EF] \d+ \d+\])|Check failed|Traceback|RAY_LOG\(FATAL\)|\bERROR\b|\bError\b")
XID = re.compile(r"NVRM: Xid")
STARTUP_FRAMES = ("default_worker.py", "setup_worker.py")  # where a Ray worker process starts
TRACEBACK = "Traceback (most recent call last):"
GPU_QUERY = "index,name,temperature.gpu,utilization.gpu,memory.used,memory.total,ecc.errors.uncorrected.volatile.total"


class Report:
    """Sections written to stdout until the byte budget is spent."""

    def __init__(self, max_bytes: int) -> None:
        self.left = max_bytes
        self.truncated = False

    def section(self, title: str, lines: list[str]) -> None:
        self.emit(f"== {title} ==")
        for line in lines:
            if not self.emit(line):
                break

    def emit(self, line: str) -> bool:
        line = line[:2000]
        if self.left - len(line) - 1 < 0:
            if not self.truncated:
                print("... (report truncated: size cap)")
                self.truncated = True
            return False
        print(line)
        self.left -= len(line) + 1
        return True


def tail(path: str, lines: int, max_read: int = 256 * 1024) -> list[str]:
    """The last ``lines`` lines of ``path``, reading at most ``max_read`` bytes of it."""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - max_read))
        data = fh.read()
    return data.decode(errors="replace").splitlines()[-lines:]


def run(argv: list[str], timeout: int) -> tuple[int | None, list[str]]:
    """(exit code or None when it could not run or timed out, output lines)."""
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, errors="replace",
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, [f"{argv[0]}: {type(exc).__name__}: {exc}"]
    return res.returncode, (res.stdout + res.stderr).splitlines()


def tracebacks(lines: list[str]) -> list[tuple[list[str], str]]:
    """(frames, root error line) of every Python traceback in ``lines``: the root error is the
    first line after the frames that is not indented (``ImportError: ...``)."""
    out = []
    i = 0
    while i < len(lines):
        if lines[i].strip() != TRACEBACK:
            i += 1
            continue
        frames = []
        i += 1
        while i < len(lines) and (lines[i].startswith((" ", "\t")) or not lines[i].strip()):
            frames.append(lines[i])
            i += 1
        if i < len(lines):
            out.append((frames, lines[i].strip()))
        i += 1
    return out


def root_errors(files: list[str], startup_only: bool, lines: int) -> list[str]:
    """``FILE: ERROR`` for the tracebacks of ``files`` (oldest file first): with ``startup_only``
    only those of a worker process that failed at start-up."""
    found = []
    for path in sorted((p for p in files if os.path.isfile(p)), key=os.path.getmtime):
        try:
            text = tail(path, lines)
        except OSError:
            continue
        for frames, error in tracebacks(text):
            if startup_only and not any(f in frame for frame in frames for f in STARTUP_FRAMES):
                continue
            found.append(f"{os.path.basename(path)}: {error}")
    return found


def startup(cfg: dict) -> dict:
    """The start-up scan: the first worker process that could not start, if any."""
    root = cfg["ray_logs"]
    files = [os.path.join(root, "raylet.err"), *glob.glob(os.path.join(root, "worker-*.err"))]
    errors = root_errors(files, True, cfg["lines"])
    return {"hostname": socket.gethostname(), "startup_error": errors[0][:300] if errors else None,
            "startup_errors": len(errors)}


def raylet_running() -> bool:
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/comm") as fh:
                    if fh.read().strip() == "raylet":
                        return True
            except OSError:
                continue
    return False


def ray_logs(cfg: dict, report: Report, summary: dict) -> None:
    root = cfg["ray_logs"]
    if not os.path.isdir(root):
        summary["ray_logs"] = f"no {root}"
        report.section("ray logs", [f"no directory {root}"])
        return
    files = [os.path.join(root, n) for n in RAY_LOGS]
    workers = [p for p in glob.glob(os.path.join(root, "worker-*.err")) if os.path.getsize(p) > 0]
    workers.sort(key=os.path.getmtime, reverse=True)
    files += workers[: cfg["worker_files"]]
    errors: list[str] = []
    found = 0
    for path in files:
        if not os.path.isfile(path):
            continue
        found += 1
        try:
            lines = tail(path, cfg["lines"])
        except OSError as exc:
            lines = [f"cannot read: {exc.strerror}"]
        errors += [f"{os.path.basename(path)}: {ln.strip()}" for ln in lines if ERROR.search(ln)]
        report.section(f"ray log {path} (last {len(lines)} lines)", lines)
    roots = root_errors(files, False, cfg["lines"])
    summary.update(ray_logs=found, errors=len(errors), last_error=errors[-1][:200] if errors else None,
                   root_error=roots[0][:200] if roots else None)


def dmesg(cfg: dict, report: Report, summary: dict) -> None:
    code, lines = run(["dmesg", "-T"], cfg["cmd_timeout"])
    if code != 0:
        code, lines = run(["dmesg"], cfg["cmd_timeout"])
    if code != 0:
        summary["dmesg"] = (lines[-1] if lines else f"exit {code}")[:120]
        report.section("dmesg (unavailable)", lines[-5:])
        return
    xids = [ln for ln in lines if XID.search(ln)]
    summary.update(dmesg="ok", xid=len(xids), last_xid=xids[-1][:200] if xids else None)
    if xids:
        report.section(f"dmesg: NVIDIA Xid lines ({len(xids)}, last 50)", xids[-50:])
    report.section(f"dmesg (last {cfg['dmesg_lines']} lines)", lines[-cfg["dmesg_lines"]:])


def gpus(cfg: dict, report: Report, summary: dict) -> None:
    if shutil.which("nvidia-smi") is None:
        summary["gpus"] = "no nvidia-smi"
        report.section("nvidia-smi", ["not installed"])
        return
    code, lines = run(["nvidia-smi", f"--query-gpu={GPU_QUERY}", "--format=csv"], cfg["cmd_timeout"])
    summary["gpus"] = max(0, len(lines) - 1) if code == 0 else f"nvidia-smi failed: {(lines or ['?'])[-1][:120]}"
    report.section("nvidia-smi --query-gpu", lines)
    code, lines = run(["nvidia-smi"], cfg["cmd_timeout"])
    report.section("nvidia-smi", lines)


def main() -> int:
    cfg = json.loads(sys.argv[1])
    if cfg.get("mode") == "startup":
        print(cfg["marker"] + json.dumps(startup(cfg)), flush=True)
        return 0
    report = Report(cfg["max_bytes"])
    summary: dict = {"hostname": socket.gethostname(), "raylet": raylet_running()}
    for part in (ray_logs, dmesg, gpus):
        try:
            part(cfg, report, summary)
        except Exception as exc:  # noqa: BLE001 - one part failing must not lose the others
            summary[part.__name__] = f"{type(exc).__name__}: {exc}"[:200]
    sys.stdout.flush()
    print(cfg["marker"] + json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
