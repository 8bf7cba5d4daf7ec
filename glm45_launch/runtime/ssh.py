"""Remote commands over SSH: one ``fabric.Connection`` per host for the run (:mod:`.sshhosts`:
ssh config, ProxyJump, host keys from the run's known_hosts index), timeouts on both ends,
retries only before a command is sent, output streamed into the host's log in bounded lines.
"""

from __future__ import annotations

import codecs
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from glm45_launch.core.quoting import quote
from glm45_launch.runtime.results import MAX_LINE, CommandResult, keep_line, shown
from glm45_launch.runtime.sshhosts import CONNECT_SLOTS, Hosts, SshOptions, describe_ssh_error

__all__ = ["CONNECT_SLOTS", "SshOptions", "SshRunner", "wrap_remote"]

# Why both ends: closing our side of the channel on a timeout leaves the remote process
# running, so the remote command runs under coreutils `timeout`, which kills its whole
# process group; the local timeout is a little longer so the remote one fires first.
_REMOTE_GRACE_S = 5
_CHUNK = 32 * 1024


def wrap_remote(command: str, timeout_s: float) -> str:
    """Run the plan's ``command`` word for word inside a remote ``timeout``."""
    return f"timeout --kill-after={_REMOTE_GRACE_S} {math.ceil(timeout_s)} sh -c {quote(command)}"


class _LineSink:
    """A file-like stream that writes each complete line to the log and to ``echo``; it holds
    at most one partial line (:data:`MAX_LINE`). Sinks of one command share ``lock`` so whole
    lines never interleave."""

    def __init__(self, log: IO[str], echo: Callable[[str], None] | None, tail: list[str],
                 lock: threading.Lock) -> None:
        self.log, self.echo, self.tail, self.buf, self.lock = log, echo, tail, "", lock

    def write(self, data: str) -> int:
        *lines, rest = (self.buf + data).split("\n")
        if "\r" in rest[:-1]:  # a line rewritten in place (rsync's progress): each state is a line
            cut = rest.rindex("\r", 0, len(rest) - 1)  # a trailing \r may be half of \r\n: kept
            lines += [st for st in rest[:cut].split("\r") if st]
            rest = rest[cut + 1:]
        for line in lines:
            self._emit(line)
        while len(rest) > MAX_LINE:  # no newline for a long time: log it in pieces, bounded
            self._emit(rest[:MAX_LINE])
            rest = rest[MAX_LINE:]
        self.buf = rest
        return len(data)

    def _emit(self, line: str) -> None:
        with self.lock:
            self.log.write(line + "\n")
            self.log.flush()
            keep_line(self.tail, line)
        if self.echo:
            self.echo(line)

    def flush(self) -> None:
        # A reader may flush after every chunk: emitting the partial line here would split long
        # lines (a probe's JSON report) in two. finish() ends the last one.
        pass

    def finish(self) -> None:
        if self.buf:
            self._emit(self.buf)
            self.buf = ""


class SshRunner:
    """Runs one command string on one host, over the run's one connection to that host.

    Built once per run (``Runtime.real``): the known_hosts index, the client keys, the ssh
    config and the connections live as long as this object. ``close_all`` (Ctrl-C, the end of
    a run) closes every connection at once.
    """

    def __init__(self, opts: SshOptions, like: SshRunner | None = None) -> None:
        """``like``: a runner of the same run whose known_hosts index, keys and ssh config this one
        shares; its connections are its own (held sessions, a teardown after Ctrl-C)."""
        self.opts = opts
        self._pool = Hosts(opts, like._pool if like is not None else None)
        self._closing = threading.Event()

    def run(
        self,
        host: str,
        command: str,
        log_path: Path,
        echo: Callable[[str], None] | None = None,
        timeout_s: float | None = None,
    ) -> CommandResult:
        """Run ``command`` on ``host``; connection failures retried with backoff, never the command."""
        timeout_s = timeout_s or self.opts.command_timeout
        result = CommandResult(host=host, command=command)
        start = time.monotonic()
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("a") as log:
            log.write(f"$ {shown(command)}\n")
            chan = self._session(host, result, log)
            if chan is None:
                result.sent = False
            else:
                self._exec(host, chan, command, timeout_s, result, log, echo)
            log.write(f"# exit={result.exit_code} error={result.error}\n")
        result.duration_s = time.monotonic() - start
        return result

    def close_all(self) -> None:
        """Close every connection now: threads waiting on one return, nothing new connects."""
        self._closing.set()
        self._pool.close_all()

    def _session(self, host: str, result: CommandResult, log: IO[str]) -> Any:
        """A session channel on the host's connection, or None with ``result.error`` set;
        connection failures retried with backoff (nothing has been sent yet)."""
        for attempt in range(1, self.opts.retries + 1):
            result.attempts = attempt
            try:
                chan = self._pool.session(host)
                result.error = None
                return chan
            except Exception as exc:  # noqa: BLE001 - one line per host, never a traceback
                reason, retryable = describe_ssh_error(exc, host, self.opts)
                if self._closing.is_set():
                    reason, retryable = f"not run on {host}: interrupted", False
                log.write(f"! attempt {attempt}: {reason}\n")
                result.error = reason
                if not retryable or attempt == self.opts.retries:
                    return None
                if self._closing.wait(self.opts.backoff_s * 2 ** (attempt - 1)):
                    result.error = f"not run on {host}: interrupted"
                    return None
        return None

    def _exec(self, host: str, chan: Any, command: str, timeout_s: float, result: CommandResult,
              log: IO[str], echo: Callable[[str], None] | None) -> None:
        """Send the command once and stream its output (stderr merged, in arrival order) into
        the log, ``echo`` and the result's bounded tail."""
        transport = chan.get_transport()
        local_timeout = timeout_s + 2 * _REMOTE_GRACE_S
        deadline = time.monotonic() + local_timeout
        sink = _LineSink(log, echo, result.output_tail, threading.Lock())
        decode = codecs.getincrementaldecoder("utf-8")("replace").decode
        try:
            chan.set_combine_stderr(True)
            # From here on the command may be running: whatever happens, it is never sent again.
            chan.exec_command(wrap_remote(command, timeout_s))
            while data := _recv(chan, deadline):
                sink.write(decode(data))
            sink.write(decode(b"", True))
            if not chan.status_event.wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError()
            if chan.exit_status == -1 and not transport.is_active():
                result.error = ("interrupted" if self._closing.is_set()
                                else f"connection to {host} lost while the command ran")
            else:
                result.exit_code = chan.exit_status
                if chan.exit_status == 124:
                    result.error = f"remote command timed out after {timeout_s:.0f}s on {host}"
        except TimeoutError:
            result.error = f"command timed out after {local_timeout:.0f}s on {host}"
        except Exception as exc:  # noqa: BLE001 - one line per host, never a traceback
            result.error = describe_ssh_error(exc, host, self.opts)[0]
        finally:
            sink.finish()
            chan.close()
            if not transport.is_active():
                self._pool.forget(host, transport)


def _recv(chan: Any, deadline: float) -> bytes:
    """The next chunk of output, b"" at its end; socket.timeout past ``deadline``."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError()
    chan.settimeout(remaining)
    return bytes(chan.recv(_CHUNK))
