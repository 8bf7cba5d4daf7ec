"""Following the submitted job: its driver log into ``job.log`` and on the terminal, its id.

``ray job submit`` (the plan's submit step) streams the driver log until the job ends; its
output names the job id. Ray can close that tail while the job runs (a 10 MiB line ends its
websocket): when the command ends and Ray still says RUNNING, the tail was lost, not the job.
The supervisor then re-tails once with the plan's ``ray job logs --follow``; if that ends at once
too, it stops tailing, says the local log is incomplete and polls the job's status. A RUNNING job
is never taken for an ended one.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from pathlib import Path

from glm45_launch.core.steps import JobLogsStep, SubmitStep
from glm45_launch.runtime.local import LogFile
from glm45_launch.runtime.records import RunRecords
from glm45_launch.runtime.results import CommandResult
from glm45_launch.runtime.runtime import Runtime

JOB_ID = re.compile(r"Job '([^']+)' submitted successfully")
TAILING = "Tailing logs until the job exits"  # `ray job submit`: the driver log starts after this line
CLI_LINE = re.compile(r"\b(INFO|WARNING) cli\.py:\d+ -- ")  # the job CLI's own messages, not the driver's
USEFUL_TAIL_S = 30.0  # a re-tail that lasted less than this found the same wall: poll instead


class JobFollower:
    """Runs one follow command at a time in a thread; wakes ``wake`` when it ends."""

    def __init__(self, rt: Runtime, submit: SubmitStep, logs: JobLogsStep, records: RunRecords,
                 wake: threading.Event) -> None:
        self.rt, self.submit, self.logs, self.records, self.wake = rt, submit, logs, records, wake
        self.log_path: Path = records.run_dir / "job.log"
        self.job_id: str | None = None
        self.id_seen = threading.Event()
        self.last_output = rt.clock()
        self.result: CommandResult | None = None  # the submit's
        self.tail_lost = False  # no tail any more: job.log is incomplete, the status is polled
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._tails = 0
        self._lines = 0  # driver log lines seen (a re-tail skips them)
        self._lines_at_retail = 0
        self._in_log = False  # past the submit's own messages
        self._started_at = rt.clock()

    # -- the commands ---------------------------------------------------------------------------
    def start(self) -> JobFollower:
        """``ray job submit``: returns at once; ``id_seen`` or ``ended`` tells what came first."""
        self._run(lambda: self.rt.local.run(self.submit.commands[0], self.log_path, self.rt.reporter.echo_for("job"),
                                            env=dict(self.submit.env), cwd=self.submit.cwd, on_line=self._line),
                  submit=True)
        return self

    def retail(self) -> bool:
        """The tail ended while the job runs: follow again with ``ray job logs --follow``, once, and
        only if the last tail was worth it; else stop tailing (False: the status is polled)."""
        lasted = self.rt.clock() - self._started_at
        if self.job_id is None or self._tails >= 1 and lasted < USEFUL_TAIL_S:
            self._lose_tail()
            return False
        self._tails += 1
        self._lines_at_retail = self._lines
        argv = self.logs.for_job(self.job_id, follow=True)[0]
        self.rt.reporter.warn(f"job {self.job_id}: the driver log's tail ended while the job runs; following it "
                              f"again (`{' '.join(argv[:3])} --follow`)")
        self.records.event("log-tail-lost", job_id=self.job_id, again=True)
        skip = [self._lines]  # it prints the log from its start: the lines job.log has are not repeated
        echo = self.rt.reporter.echo_for("job")
        log = LogFile(self.log_path, self.rt.reporter.warn)

        def line(text: str) -> None:
            if skip[0] == self._lines_at_retail and CLI_LINE.search(text):
                return  # its own header (the job server's address)
            if skip[0] > 0:
                skip[0] -= 1
                return
            log.write(text + "\n")
            echo(text)
            self._line(text)

        def tail() -> CommandResult:
            try:
                return self.rt.local.run(argv, Path(os.devnull), on_line=line)
            finally:
                log.close()

        self._run(tail, submit=False)
        return True

    def _lose_tail(self) -> None:
        if self.tail_lost:
            return
        self.tail_lost = True
        self.records.event("log-tail-lost", job_id=self.job_id, again=False)
        self.records.append("job.log", f"# glm45-launch: the driver log's tail was lost here (Ray closed it while "
                                       f"job {self.job_id} runs); the rest: `glm45-launch logs {self.job_id}`")
        self.rt.reporter.warn(f"job {self.job_id}: the driver log's tail was lost (Ray closed it); {self.log_path} is "
                              "incomplete; watching the job's status instead (`glm45-launch logs` shows the log)")

    def _run(self, command: Callable[[], CommandResult], submit: bool) -> None:
        self._done.clear()
        self._started_at = self.rt.clock()

        def follow() -> None:
            try:
                res = command()
                if submit:
                    self.result = res
            finally:
                self._done.set()
                self.wake.set()

        self._thread = threading.Thread(target=follow, name="job-follower", daemon=True)
        self._thread.start()

    def _line(self, line: str) -> None:
        self.last_output = self.rt.clock()
        if self._in_log:
            self._lines += 1
        elif TAILING in line:
            self._in_log = True
        if self.job_id is None:
            m = JOB_ID.search(line)
            if m:
                self.job_id = m.group(1)
                self.records.write("job_id", self.job_id + "\n")
                self.id_seen.set()
                self.wake.set()

    # -- state ----------------------------------------------------------------------------------
    @property
    def ended(self) -> bool:
        """The follow command in flight has ended (the submit, or a re-tail)."""
        return self._done.is_set()

    def wait_started(self, timeout_s: float | None = None) -> None:
        """Until the job id is known or the submit ended (Ctrl-C reaches the caller meanwhile)."""
        deadline = None if timeout_s is None else self.rt.clock() + timeout_s
        while not (self.id_seen.is_set() or self._done.is_set()):
            if deadline is not None and self.rt.clock() > deadline:
                return
            self.id_seen.wait(0.2)

    def join(self, timeout_s: float) -> None:
        """Wait (bounded) for the command in flight to end, after it was killed or the job stopped."""
        deadline = self.rt.clock() + timeout_s
        while not self._done.is_set() and self.rt.clock() < deadline:
            self._done.wait(0.2)
