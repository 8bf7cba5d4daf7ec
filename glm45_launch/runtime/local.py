"""Head-side commands, run on this machine (the launcher runs on the head, like the recipe)."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

from glm45_launch.core.quoting import shell_join
from glm45_launch.runtime.procs import find_pids, parse_kill, parse_query
from glm45_launch.runtime.results import MAX_LINE, CommandResult, shown


class LogFile:
    """A command's log file that never stops the command: the first failed write (a full disk)
    is said once through ``warn`` and the log ends there; the output still streams."""

    def __init__(self, path: Path, warn: Callable[[str], None] | None) -> None:
        self.path, self.warn = path, warn
        self.fh: IO[str] | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.fh = path.open("a")
        except OSError as exc:
            self._failed(exc)

    def write(self, text: str) -> None:
        if self.fh is None:
            return
        try:
            self.fh.write(text)
            self.fh.flush()
        except OSError as exc:
            self._failed(exc)

    def _failed(self, exc: OSError) -> None:
        if self.fh is not None:
            with contextlib.suppress(OSError):
                self.fh.close()
        self.fh = None
        if self.warn is not None:
            why = "no space left on the device" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else exc.strerror
            self.warn(f"{self.path}: {why}: this log is incomplete from here (the command goes on)")

    def close(self) -> None:
        if self.fh is not None:
            with contextlib.suppress(OSError):
                self.fh.close()
            self.fh = None


class LocalRunner:
    """Runs argv lists here, streaming output line by line; tracks children for Ctrl-C."""

    def __init__(self, mask: Callable[[str], str] | None = None, warn: Callable[[str], None] | None = None) -> None:
        self.mask = mask or (lambda text: text)  # applied to everything logged or echoed
        self.warn = warn  # a log that cannot be written (a full disk) is said here, once per log
        self._children: set[subprocess.Popen[str]] = set()
        self._lock = threading.Lock()

    def run(
        self,
        argv: Sequence[str],
        log_path: Path,
        echo: Callable[[str], None] | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout_s: float | None = None,
        on_line: Callable[[str], None] | None = None,
    ) -> CommandResult:
        """Run ``argv`` (in ``cwd``, with ``env`` added), logging every line; never raises
        for the command's own failure: the result says it."""
        result = CommandResult(command=shell_join(argv), argv=list(argv))
        start = time.monotonic()
        log = LogFile(log_path, self.warn)
        try:
            log.write(self.mask("$ " + shown(" ".join(argv))) + "\n")
            try:
                # A session of its own: Ctrl-C reaches the launcher, which decides what to
                # stop, and a timeout can kill the command's whole process group.
                proc = subprocess.Popen(
                    list(argv), cwd=cwd, env={**os.environ, **(env or {})}, text=True,
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                    start_new_session=True, errors="replace",
                )
            except OSError as exc:
                result.error = f"cannot run {argv[0]}: {exc.strerror}"
                log.write(f"! {result.error}\n")
                return result
            self._stream(proc, log, result, echo, on_line, timeout_s)
            if timeout_s and time.monotonic() - start >= timeout_s and result.exit_code != 0:
                result.error = f"`{argv[0]}` timed out after {timeout_s:.0f}s"
            log.write(f"# exit={result.exit_code}\n")
        finally:
            log.close()
        result.duration_s = time.monotonic() - start
        return result

    def _stream(self, proc: subprocess.Popen[str], log: LogFile, result: CommandResult, echo: Callable[[str], None] | None,
                on_line: Callable[[str], None] | None, timeout_s: float | None) -> None:
        """Every output line to the log, ``echo`` and ``on_line``, then the exit code."""
        with self._lock:
            self._children.add(proc)
        timer = threading.Timer(timeout_s, self._kill, (proc,)) if timeout_s else None
        if timer:
            timer.start()
        try:
            assert proc.stdout is not None
            while raw := proc.stdout.readline(MAX_LINE):
                line = self.mask(raw.rstrip("\n"))
                log.write(line + "\n")
                result.keep(line)
                if echo:
                    echo(line)
                if on_line:
                    on_line(line)
            result.exit_code = proc.wait()
        except BaseException:
            # Ctrl-C (or any error) while streaming: the command must not outlive us.
            self._kill(proc)
            proc.wait()
            raise
        finally:
            if timer:
                timer.cancel()
            with self._lock:
                self._children.discard(proc)

    @staticmethod
    def _kill(proc: subprocess.Popen[str]) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def kill_children(self) -> list[int]:
        """Kill (by process group) every command still running; returns their PIDs."""
        with self._lock:
            children = list(self._children)
        for proc in children:
            self._kill(proc)
        return [p.pid for p in children]

    def pkill_sparing(self, argv: Sequence[str], log_path: Path, spare: set[int]) -> CommandResult:
        """``pkill``/``killall`` that never signals a PID in ``spare``.

        The processes are selected as procps ``pgrep`` selects them (:mod:`procs`, read from
        /proc: ``killall NAME`` is ``pgrep -x NAME``); the spared PIDs are left out before
        signalling, so the launcher and the shell that started it survive.
        """
        sig, queries = parse_kill(argv)
        result = CommandResult(command=shell_join(argv), argv=list(argv))
        start = time.monotonic()
        pids: list[int] = []
        for args in queries:
            pids += find_pids(parse_query(args))
        killed, spared, denied = [], [], []
        for pid in dict.fromkeys(pids):
            if pid in spare or pid == os.getpid():
                spared.append(pid)
                continue
            try:
                os.kill(pid, sig)
                killed.append(pid)
            except ProcessLookupError:
                pass
            except PermissionError:  # pkill reports it and goes on; so does the log
                denied.append(pid)
        log = LogFile(log_path, self.warn)
        log.write(f"$ {' '.join(argv)}  # killed {killed or 'none'}; spared {spared or 'none'}"
                  + (f"; not permitted {denied}" if denied else "") + "\n")
        log.close()
        # pkill's own convention: 0 when something matched, 1 when nothing did.
        result.exit_code = 0 if killed else 1
        result.duration_s = time.monotonic() - start
        return result
