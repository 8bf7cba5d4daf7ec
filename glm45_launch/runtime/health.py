"""The health watch: while the job runs, is every node still there?

Each round (the supervisor's loop calls :meth:`HealthWatch.check` every ``interval_s``) reads
Ray's node table and runs each node's health check (the plan's ``pgrep -x raylet``: the head here
when it is this machine, the others over SSH, each in its own thread so a hung host never delays
the others). A node is lost when:

* its check finds no raylet (exit 1), or Ray's node table has it DEAD or not at all: at once;
* it cannot be reached or does not answer within ``probe_timeout_s``, ``unreachable_after``
  times in a row (one SSH hiccup is not a lost node).

A check that fails wakes the loop at once (``wake``); the loop decides what to stop.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from glm45_launch.core.marked import last_marked_json
from glm45_launch.core.operations import DIAG_MARKER, Operations
from glm45_launch.core.steps import HealthCheckStep
from glm45_launch.runtime.causes import Cause, CauseKind, exc_line
from glm45_launch.runtime.records import RunRecords
from glm45_launch.runtime.results import CommandResult
from glm45_launch.runtime.runtime import Runtime

NODE_TABLE_WARN_AFTER = 3  # failed reads of Ray's node table in a row before a warning
SLACK = 0.02  # of a probe timeout: a check that late counts as one timeout late


class _Probe:
    """One node's health check state: the check in flight, and unreachable strikes."""

    def __init__(self, step: HealthCheckStep) -> None:
        self.step = step
        self.since: float | None = None  # when the check in flight started
        self.result: CommandResult | None = None  # the last finished check, not yet judged
        self.strikes = 0
        self.struck = 0  # strikes the check in flight already counted (one per timeout it is late)
        self.last_problem = ""
        self.outcome = ""  # the last outcome written to health.log
        self.warned = False


class HealthWatch:
    """The health checks of one attempt's job; :meth:`check` is called from the supervisor's loop."""

    def __init__(self, ops: Operations, rt: Runtime, records: RunRecords, wake: threading.Event) -> None:
        self.ops, self.s, self.rt, self.records, self.wake = ops, ops.settings, rt, records, wake
        self.report = rt.reporter
        self.runner = rt.steps(Path(os.devnull), ops.health[0].host if ops.health else None)
        self._lock = threading.Lock()
        self._probes = {s.host: _Probe(s) for s in ops.health}
        self._table_failures = 0

    def announce(self, stall_timeout_s: float | None) -> None:
        stall = f"; stalled after {stall_timeout_s:g}s without driver output" if stall_timeout_s else ""
        self.report.phase(f"watching {len(self._probes)} node(s) every {self.s.interval_s:g}s (pgrep -x raylet, "
                          f"Ray's node table){stall}")

    def check(self, new_round: bool = True) -> Cause | None:
        """Finished health checks, and (a new round) the node table and new checks: the first
        lost node found, else None."""
        cause = self._judge_checks(new_round)
        if cause is None and new_round:
            cause = self._read_node_table()
        return cause

    def _judge_checks(self, new_round: bool) -> Cause | None:
        now = self.rt.clock()
        for probe in self._probes.values():
            with self._lock:
                res, since = probe.result, probe.since
                probe.result = None
            if res is not None:
                cause = self._judge(probe, res)
                if cause is not None:
                    return cause
            elif since is not None and new_round:
                # One strike per timeout in flight; rounds and launches share one clock, so a check
                # launched one round ago is compared with a little slack for the round's own jitter.
                due = int((now - since) / self.s.probe_timeout_s + SLACK)
                if due > probe.struck:
                    probe.strikes += due - probe.struck
                    probe.struck = due
                    self._strike(probe, f"no answer to the health check within {self.s.probe_timeout_s:g}s")
            if probe.strikes >= self.s.unreachable_after:
                return Cause(CauseKind.NODE_LOST, f"unreachable: {probe.last_problem} ({probe.strikes} checks in a "
                                                  "row)", probe.step.host)
            if since is None and new_round:
                self._launch(probe)
        return None

    def _judge(self, probe: _Probe, res: CommandResult) -> Cause | None:
        host = probe.step.host
        if res.exit_code == 0:
            if probe.strikes:
                self.report.warn(f"{host}: health check answers again")
            probe.strikes = 0
            self._note(probe, "ok")
        elif res.exit_code == 1:
            self._note(probe, "no raylet")
            return Cause(CauseKind.NODE_LOST, "raylet not running (pgrep -x raylet found none)", host)
        elif res.exit_code is None or res.exit_code in (124, 137, 255):  # no connection, timed out
            probe.strikes += 0 if probe.struck else 1
            self._strike(probe, res.error or f"exit {res.exit_code}")
        elif not probe.warned:  # e.g. 127: no pgrep there; the node table still watches it
            probe.warned = True
            self._note(probe, f"cannot check: {res.reason}")
            self.report.warn(f"health check on {host} cannot run ({res.reason}): relying on Ray's node table")
        return None

    def _strike(self, probe: _Probe, problem: str) -> None:
        """A check that failed to reach its node: said once per streak, logged."""
        probe.last_problem = problem
        self._note(probe, f"unreachable: {problem}")
        if probe.strikes == 1 and self.s.unreachable_after > 1:
            self.report.warn(f"{probe.step.host}: health check failed ({problem}); lost after "
                             f"{self.s.unreachable_after} in a row")

    def _note(self, probe: _Probe, outcome: str) -> None:
        """``health.log``: one line per change of a node's check outcome (a week of checks stays small)."""
        if outcome == probe.outcome:
            return
        probe.outcome = outcome
        self.records.append("health.log", f"{time.strftime('%Y-%m-%d %H:%M:%S')} {probe.step.host} {outcome}")

    def _launch(self, probe: _Probe) -> None:
        probe.since, probe.struck = self.rt.clock(), 0
        threading.Thread(target=self._run_check, args=(probe,), name="health-check", daemon=True).start()

    def _run_check(self, probe: _Probe) -> None:
        step = probe.step
        log = Path(os.devnull)  # every check would be a line: health.log keeps the changes instead
        timeout = self.s.probe_timeout_s
        try:
            if self.runner.runs_here(step):
                res = self.rt.local.run(step.commands[0], log, timeout_s=timeout)
            else:
                res = self.rt.remote.run(step.host, step.remote_command, log, timeout_s=timeout)
        except Exception as exc:  # noqa: BLE001 - a broken check is an unreachable node, not a crash
            res = CommandResult(host=step.host, error=exc_line(exc))
        with self._lock:
            probe.result, probe.since = res, None
        if not res.ok:
            self.wake.set()

    def _read_node_table(self) -> Cause | None:
        try:
            nodes = self.rt.ray.nodes(self.ops.node_table)
        except Exception as exc:  # noqa: BLE001 - the dashboard may be busy; the checks still run
            self._table_failures += 1
            if self._table_failures == NODE_TABLE_WARN_AFTER:
                self.report.warn(f"cannot read Ray's node table at {self.ops.node_table}: {exc_line(exc, 160)}")
            return None
        self._table_failures = 0
        for host in self._probes:
            mine = self.rt.nodes_of(host, nodes)
            if not any(n.alive for n in mine):
                seen = "DEAD in Ray's node table" if mine else "not in Ray's node table"
                return Cause(CauseKind.NODE_LOST, seen, host)
        return None


class StartupScan:
    """While the job starts: every round (in the background, one scan at a time) each node's
    Ray logs are searched for worker processes that failed at start-up (``Operations.startup``);
    the first one found is the cause, named by host and error, within a round of it."""

    def __init__(self, ops: Operations, rt: Runtime, records: RunRecords, wake: threading.Event) -> None:
        self.ops, self.rt, self.wake = ops, rt, wake
        self.runner = rt.steps(records.run_dir / "startup", ops.health[0].host if ops.health else None)
        self.started = rt.clock()
        self._thread: threading.Thread | None = None
        self._found: Cause | None = None

    def check(self, new_round: bool) -> Cause | None:
        if self._found is not None:
            return self._found
        busy = self._thread is not None and self._thread.is_alive()
        if new_round and not busy and self.rt.clock() - self.started <= self.ops.settings.startup_scan_s:
            self._thread = threading.Thread(target=self._scan, name="startup-scan", daemon=True)
            self._thread.start()
        return None

    def _scan(self) -> None:
        results = self.runner.run(list(self.ops.startup), timeout_s=self.ops.settings.probe_timeout_s * 3)
        for step in self.ops.startup:
            res = results.get(step.host)
            summary = last_marked_json(res.output_tail, DIAG_MARKER) if res is not None else None
            error = summary.get("startup_error") if isinstance(summary, dict) else None
            if error:
                self._found = Cause(CauseKind.WORKER_START, f"a Ray worker process cannot start ({error}): its "
                                                            "environment is broken (PYTHONPATH, packages)", step.host)
                self.wake.set()
                return
