"""Diagnostics after a failure (and ``glm45-launch collect``): every node's evidence and the
job's driver log, collected at once into one directory, bounded in time and size.

Every node runs the plan's diagnose step (Ray log tails, ``dmesg``, ``nvidia-smi``: the
program caps its own output) with a timeout, the head here, the others over SSH; the driver
log (``ray job logs``) is kept to its last :data:`DRIVER_LOG_BYTES`. One summary line per node.
"""

from __future__ import annotations

import json
import os
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glm45_launch.core.marked import last_marked_json
from glm45_launch.core.operations import DIAG_MARKER, Operations
from glm45_launch.runtime.interfaces import CommandRunner
from glm45_launch.runtime.results import CommandResult
from glm45_launch.runtime.runtime import Runtime

DRIVER_LOG_BYTES = 4 * 1024 * 1024


@dataclass
class NodeEvidence:
    """What one node gave: its summary (the program's last line) or why there is none."""

    host: str
    path: Path
    summary: dict[str, Any] | None = None
    error: str | None = None

    def line(self) -> str:
        """One line for the user: the node and what stands out."""
        if self.summary is None:
            return f"{self.host}: no evidence ({self.error or 'no summary line'})"
        s = self.summary
        parts = [f"raylet {'running' if s.get('raylet') else 'NOT running'}"]
        logs = s.get("ray_logs")
        parts.append(f"ray logs: {logs} file(s), {s.get('errors', 0)} error line(s)" if isinstance(logs, int)
                     else f"ray logs: {logs}")
        if s.get("root_error"):  # a traceback's last line says more than the last log line
            parts.append(f"first root error: {str(s['root_error'])[:100]}")
        elif s.get("last_error"):
            parts.append(f"last: {str(s['last_error'])[:100]}")
        parts.append(f"dmesg: {s.get('xid', 0)} Xid" if s.get("dmesg") == "ok" else f"dmesg: {s.get('dmesg')}")
        gpus = s.get("gpus")
        parts.append(f"GPUs: {gpus}" if gpus is not None else "GPUs: ?")
        return f"{self.host}: " + "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "file": str(self.path), "summary": self.summary, "error": self.error}


@dataclass
class Diagnostics:
    """Where the evidence went, per node, and the driver log."""

    directory: Path
    nodes: list[NodeEvidence] = field(default_factory=list)
    driver_log: Path | None = None
    driver_error: str | None = None

    def lines(self) -> list[str]:
        out = [n.line() for n in self.nodes]
        if self.driver_log is not None:
            out.append(f"driver log: {self.driver_log}")
        elif self.driver_error:
            out.append(f"driver log: none ({self.driver_error})")
        return out


def parse_summary(lines: list[str]) -> dict[str, Any] | None:
    """The program's JSON summary from its output (the last marker line)."""
    return last_marked_json(lines, DIAG_MARKER)


def collect(ops: Operations, out_dir: Path, job_id: str | None, rt: Runtime, head: str | None = None) -> Diagnostics:
    """Every node's evidence and the driver log into ``out_dir``, at once; one line per node (the
    head's here when it is this machine)."""
    reporter = rt.reporter
    out_dir.mkdir(parents=True, exist_ok=True)
    timeout = ops.settings.collect_timeout_s
    reporter.phase(f"collecting diagnostics from {len(ops.diagnose)} node(s) into {out_dir} (at most {timeout:.0f}s)")
    diag = Diagnostics(out_dir)
    driver = threading.Thread(target=_driver_log, args=(ops, out_dir, job_id, rt.local, diag), daemon=True)
    driver.start()
    runner = rt.steps(out_dir, head, suffix=".txt")
    path = runner.log_path
    results = runner.run(list(ops.diagnose), timeout_s=timeout)
    for step in ops.diagnose:
        res = results.get(step.host) or CommandResult(host=step.host, error="not run")
        summary = parse_summary(res.output_tail)
        error = None if summary else (res.error or f"exit {res.exit_code}")
        diag.nodes.append(NodeEvidence(step.host, path(step.host), summary, error))
    while driver.is_alive():
        driver.join(0.2)
    lines = diag.lines()
    (out_dir / "summary.txt").write_text("\n".join(lines) + "\n")
    (out_dir / "summary.json").write_text(json.dumps(
        {"nodes": [n.to_json() for n in diag.nodes], "job_id": job_id,
         "driver_log": str(diag.driver_log) if diag.driver_log else None, "driver_error": diag.driver_error},
        indent=2))
    for line in lines:
        reporter.line("diagnostics", line)
    return diag


def _driver_log(ops: Operations, out_dir: Path, job_id: str | None, local: CommandRunner, diag: Diagnostics) -> None:
    """``ray job logs JOB`` into ``driver.log``, its last :data:`DRIVER_LOG_BYTES` only."""
    if not job_id:
        diag.driver_error = "no job was submitted"
        return
    kept: deque[str] = deque()
    size = [0]

    def keep(line: str) -> None:
        kept.append(line)
        size[0] += len(line) + 1
        while size[0] > DRIVER_LOG_BYTES and len(kept) > 1:
            size[0] -= len(kept.popleft()) + 1

    argv = ops.job_logs.for_job(job_id)[0]
    res = local.run(argv, Path(os.devnull), on_line=keep, timeout_s=ops.settings.collect_timeout_s)
    if not kept and not res.ok:
        diag.driver_error = res.reason
        return
    target = out_dir / "driver.log"
    target.write_text("\n".join(kept) + "\n")
    diag.driver_log = target
