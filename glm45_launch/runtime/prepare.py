"""Run a preparation (:mod:`glm45_launch.core.prepare_plan`) phase by phase: ``glm45-launch
prepare`` and ``up --prepare``.

Each step's done-check runs first, on the step's host (a phase's, once, on the head): when it
holds, the step is skipped and the output says why. A phase in turn (the downloads, the FP8 copy)
runs its steps one after another; a phase together (the conversion, the copies) runs them all at
once through one :class:`~.steprunner.StepRunner` (the head here when it is this machine, the
others over SSH). A failed download, FP8 copy or conversion stops what follows; a failed copy
stops nothing: the other nodes finish theirs, and the failed nodes are named at the end.

Past :data:`~.fanout.LIVE_AFTER` nodes, a phase's output (rsync's progress) folds into the
reporter's one live line per phase; every line is in ``RUN/prepare/<host>.log``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from glm45_launch.checks.host_checks import plan_paths
from glm45_launch.checks.preflight_report import FAIL, WARN, Check, PreflightReport
from glm45_launch.core.plan import Plan
from glm45_launch.core.prepare_plan import PreparePhase, PreparePlan
from glm45_launch.core.steps import HEAD, DoneCheck, PrepareStep, Step
from glm45_launch.runtime.fanout import LIVE_AFTER
from glm45_launch.runtime.interfaces import Echo, Row
from glm45_launch.runtime.results import CommandResult
from glm45_launch.runtime.runtime import Runtime
from glm45_launch.runtime.steprunner import StepRunner

CHECK_TIMEOUT_S = 600.0  # a done-check (test -f, grep; rsync --dry-run stats a whole tree, on NFS too)
NAMED = 3  # hosts a summary line names; more are counted
PROGRESS_EVERY_S = 5.0  # rsync's progress lines shown per node at most this often (all are in the log)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_PROGRESS = re.compile(r"\s*[\d,]+\s+\d+%")  # a line of rsync --info=progress2
_OFFLINE = ("Connection refused", "Name or service not known", "Temporary failure in name resolution",
            "Network is unreachable", "No route to host", "timed out", "offline mode", "Local entry not found")


class Outcome(Enum):
    """What became of one step."""

    RAN = "ran"
    SKIPPED = "skipped"  # its done-check held: the work was there
    FAILED = "failed"
    NOT_RUN = "not run"  # an earlier step it depends on failed


@dataclass(frozen=True)
class StepOutcome:
    """One step on one host: what became of it and why (the check's finding, the error)."""

    phase: str
    host: str
    subject: str
    outcome: Outcome
    why: str = ""
    exit_code: int | None = None
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.outcome in (Outcome.RAN, Outcome.SKIPPED)

    def row(self) -> Row:
        """The table's row: the subject's last path part (a repo stays whole); why a step was
        skipped is in the lines above the table and in ``prepare.json``."""
        short = self.subject if self.subject.count("/") == 1 and not self.subject.startswith("/") \
            else self.subject.rstrip("/").rsplit("/", 1)[-1]
        what = f"{self.phase} {short}"
        if self.outcome is Outcome.SKIPPED:
            return Row(self.host, f"{what} (skipped)", 0, self.duration_s)
        if self.outcome is Outcome.RAN:
            return Row(self.host, what, self.exit_code, self.duration_s)
        return Row(self.host, what, self.exit_code, self.duration_s, error=f"{self.outcome.value}: {self.why}")

    def to_json(self) -> dict[str, Any]:
        return {"phase": self.phase, "host": self.host, "subject": self.subject, "outcome": self.outcome.value,
                "why": self.why, "exit_code": self.exit_code, "duration_s": round(self.duration_s, 3)}


@dataclass
class PrepareResult:
    """Every step's outcome, in plan order, and where the logs are."""

    outcomes: list[StepOutcome] = field(default_factory=list)
    log_dir: Path = Path(".")

    @property
    def failed(self) -> list[StepOutcome]:
        return [o for o in self.outcomes if o.outcome is Outcome.FAILED]

    @property
    def failed_hosts(self) -> list[str]:
        return list(dict.fromkeys(o.host for o in self.failed))

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes)

    def counts(self) -> dict[str, int]:
        return {k.value: sum(o.outcome is k for o in self.outcomes) for k in Outcome}

    @property
    def error(self) -> str | None:
        """The one line a failed preparation ends with: the step that stopped it, or each failed
        node of a copy with its first failure."""
        if not self.failed:
            return None
        not_run = self.counts()[Outcome.NOT_RUN.value]
        tail = (f"; {not_run} later step(s) not run" if not_run else "") + f" (logs in {self.log_dir})"
        if not_run:  # a download, the FP8 copy or the conversion stopped the rest
            o = self.failed[-1]
            return f"prepare failed: {o.phase} {o.subject} on {o.host}: {o.why}{tail}"
        first = {h: next(o for o in self.failed if o.host == h) for h in self.failed_hosts}
        named = "; ".join(f"{h} ({o.phase} {o.subject}: {o.why})" for h, o in first.items())
        return f"prepare failed on {len(first)} node(s): {named}{tail}"

    def rows(self, not_run: bool = True) -> list[Row]:
        """One row per step (``not_run``: the steps that never ran too)."""
        return [o.row() for o in self.outcomes if not_run or o.outcome is not Outcome.NOT_RUN]

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "counts": self.counts(), "failed_hosts": self.failed_hosts, "error": self.error,
                "log_dir": str(self.log_dir), "steps": [o.to_json() for o in self.outcomes]}


def prepare(pplan: PreparePlan, rt: Runtime, log_dir: Path, timeout_s: float | None = None) -> PrepareResult:
    """Run ``pplan`` phase by phase; never raises for a failed step: the result names it."""
    result = PrepareResult(log_dir=log_dir)
    rt.reporter.phase(f"prepare: {len(pplan.phases)} phase(s), {len(pplan.steps)} step(s); logs in {log_dir}")
    stopped: str | None = None
    for i, phase in enumerate(pplan.phases, start=1):
        if stopped is not None:
            result.outcomes += [_outcome(phase, s, Outcome.NOT_RUN, stopped) for s in phase.steps]
            continue
        rt.reporter.phase(f"prepare {i}/{len(pplan.phases)}: {phase.name}: {phase.purpose}")
        outcomes = _run_phase(phase, pplan, rt, log_dir, timeout_s)
        result.outcomes += outcomes
        failed = [o for o in outcomes if o.outcome is Outcome.FAILED]
        if failed and not phase.per_node:
            stopped = f"{phase.name} {failed[0].subject} failed on {failed[0].host}"
    if result.ok:
        c = result.counts()
        rt.reporter.ok(f"prepared: {c['ran']} step(s) ran, {c['skipped']} skipped (their work was done) "
                       f"({time.strftime('%H:%M:%S')})")
    return result


def excuse_prepared_paths(report: PreflightReport, plan: Plan, pplan: PreparePlan) -> PreflightReport:
    """``up --prepare``'s preflight runs before the preparation: a train-arg path it will make
    (the local copies, the datasets) is not there yet. Its failed path check becomes a warning
    saying so; every other check stands."""
    made = {f"path {p.flag}" for p in plan_paths(plan) if pplan.made_here(p.path)}
    for host in report.hosts:
        host.checks = [Check(c.name, WARN, f"{c.detail} (--prepare makes it)")
                       if c.status == FAIL and c.name in made else c for c in host.checks]
    return report


def _run_phase(phase: PreparePhase, pplan: PreparePlan, rt: Runtime, log_dir: Path,
               timeout_s: float | None) -> list[StepOutcome]:
    # A conversion's torchruns meet in one rendezvous: all of them in flight at once.
    meet = phase.together and not phase.per_node
    runner = rt.steps(log_dir, pplan.head, parallel=max(rt.parallel, len(phase.steps)) if meet else None)
    runner.echo_for = _PhaseEcho(rt.reporter.echo_for, quiet_head=len(phase.steps) > LIVE_AFTER)
    checker = rt.steps(log_dir, pplan.head)  # the checks say nothing: what they find is told once
    if phase.done is not None and _holds(checker, phase.done, pplan.head, HEAD):
        _tell_skipped(rt, [h.host for h in phase.steps], phase.done.says)
        return [_outcome(phase, s, Outcome.SKIPPED, phase.done.says) for s in phase.steps]
    if not phase.together:
        out: list[StepOutcome] = []
        for n, step in enumerate(phase.steps):
            done = _step_done(step)
            if done is not None and _holds(checker, done, step.host, step.where):
                rt.reporter.ok(f"  skipped {_subject(phase, step)}: {done.says}")
                out.append(_outcome(phase, step, Outcome.SKIPPED, done.says))
                continue
            o = _ran(phase, step, runner.run([step], timeout_s=timeout_s)[step.host])
            _tell_ran(rt, [o], o.subject)
            out.append(o)
            if not o.ok:
                why = f"{phase.name} {o.subject} failed"
                return out + [_outcome(phase, s, Outcome.NOT_RUN, why) for s in phase.steps[n + 1:]]
        return out
    skipped = _done_together(checker, phase.steps)
    by_says: dict[str, list[str]] = {}
    for step, says in skipped.items():
        by_says.setdefault(says, []).append(step.host)
    for says, hosts in by_says.items():
        _tell_skipped(rt, hosts, says)
    todo = [s for s in phase.steps if s not in skipped]
    results = runner.run(todo, timeout_s=timeout_s) if todo else {}
    ran = {s: _ran(phase, s, results[s.host]) for s in todo}
    _tell_ran(rt, list(ran.values()), phase.name)
    return [_outcome(phase, s, Outcome.SKIPPED, skipped[s]) if s in skipped else ran[s] for s in phase.steps]


def _step_done(step: Step) -> DoneCheck | None:
    return step.done if isinstance(step, PrepareStep) else None


def _check_step(done: DoneCheck, host: str, where: str) -> PrepareStep:
    """A done-check as a step of its own, on ``host`` (chained: it stops at the first failure)."""
    return PrepareStep(where=where, host=host, commands=done.commands, purpose=f"check: {done.says}")


def _holds(runner: StepRunner, done: DoneCheck, host: str, where: str) -> bool:
    res = runner.run([_check_step(done, host, where)], timeout_s=CHECK_TIMEOUT_S)[host]
    return _says_done(done, res)


def _says_done(done: DoneCheck, res: CommandResult) -> bool:
    return res.ok and not (done.quiet and any(line.strip() for line in res.output_tail))


def _done_together(runner: StepRunner, steps: Sequence[Step]) -> dict[Step, str]:
    """Every step's own done-check at once, each on its host: the steps whose work is done."""
    checks = {s: d for s in steps if (d := _step_done(s)) is not None}
    if not checks:
        return {}
    results = runner.run([_check_step(d, s.host, s.where) for s, d in checks.items()], timeout_s=CHECK_TIMEOUT_S)
    return {s: d.says for s, d in checks.items() if _says_done(d, results[s.host])}


def _outcome(phase: PreparePhase, step: Step, outcome: Outcome, why: str) -> StepOutcome:
    return StepOutcome(phase.name, step.host, _subject(phase, step), outcome, why, 0 if outcome is Outcome.SKIPPED
                       else None)


def _subject(phase: PreparePhase, step: Step) -> str:
    return getattr(step, "subject", "") or phase.purpose.split(",")[0]


def _ran(phase: PreparePhase, step: Step, res: CommandResult) -> StepOutcome:
    return StepOutcome(phase.name, step.host, _subject(phase, step), Outcome.RAN if res.ok else Outcome.FAILED,
                       "" if res.ok else condense(res), res.exit_code, res.duration_s)


def condense(res: CommandResult) -> str:
    """One line for a failed command: its own error line (hf's ``Error: ...``, rsync's or mkdir's
    complaint), else the last line it printed, else the exit status; a network error says so."""
    lines = [last_state(_ANSI.sub("", x)).strip() for x in res.output_tail]
    lines = [x for x in lines if x and not x.startswith("Hint:")]
    said = next((x.removeprefix("Error: ") for x in reversed(lines) if x.startswith("Error:")), None)
    said = said or next((x for x in lines if "failed:" in x or "cannot" in x or "No such" in x), None)
    said = said or (lines[-1] if lines else "")
    said = said[:200]
    reason = res.error or f"exit {res.exit_code}"
    text = f"{said} ({reason})" if said else reason
    if any(k in text for k in _OFFLINE):
        text += "; no network? (files put in place by hand: the step is skipped)"
    return text


def _names(hosts: Sequence[str]) -> str:
    shown = ", ".join(hosts[:NAMED])
    return shown if len(hosts) <= NAMED else f"{len(hosts)} nodes ({shown}, ...)"


def _tell_skipped(rt: Runtime, hosts: Sequence[str], says: str) -> None:
    rt.reporter.ok(f"  skipped on {_names(hosts)}: {says}")


def _tell_ran(rt: Runtime, outcomes: Sequence[StepOutcome], what: str) -> None:
    good = [o.host for o in outcomes if o.ok]
    if good:
        slowest = max(o.duration_s for o in outcomes if o.ok)
        rt.reporter.ok(f"  done on {_names(good)}: {what} ({slowest:.1f}s)")
    for o in outcomes:
        if not o.ok:
            rt.reporter.error(f"  failed on {o.host}: {o.subject}: {o.why}")


class _PhaseEcho:
    """``echo_for`` of a phase: a line rewritten in place (rsync's ``\\r`` progress) shows its last
    state; in a wide phase (``quiet_head``) the head's lines go to its log only and the other
    hosts' to the fan-out's live line (:class:`~.reporter.FanOutBoard`): one progress line."""

    def __init__(self, echo_for: Callable[[str], Echo], quiet_head: bool) -> None:
        self.echo_for, self.quiet_head = echo_for, quiet_head

    def __call__(self, source: str) -> Echo:
        return _LastState(self.echo_for(source), silent=self.quiet_head and source == "head")


class _LastState:
    """One source's echo: the last state of each line, rsync's progress at most every
    :data:`PROGRESS_EVERY_S` (and its last line, ``to-chk=0/``), nothing blank."""

    def __init__(self, inner: Echo, silent: bool) -> None:
        self.inner, self.silent, self.last = inner, silent, float("-inf")

    def __call__(self, text: str) -> None:
        shown = last_state(_ANSI.sub("", text))
        if self.silent or not shown.strip():
            return
        if _PROGRESS.match(shown) and "to-chk=0/" not in shown:
            now = time.monotonic()
            if now - self.last < PROGRESS_EVERY_S:
                return
            self.last = now
        self.inner(shown)

    def fan_out_board(self, total: int) -> Any:
        make = getattr(self.inner, "fan_out_board", None)
        return make(total) if make is not None else None


def last_state(line: str) -> str:
    """What a terminal shows of ``line`` after its carriage returns: its last non-empty part."""
    parts = [p for p in line.split("\r") if p.strip()]
    return parts[-1] if parts else ""
