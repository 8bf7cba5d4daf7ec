"""Remote commands over SSH: host keys checked, one connection per host per run, timeouts on
both ends, retries only before a command is sent.

Fabric's ``Connection`` accepts any host key by default (``AutoAddPolicy``), reads known_hosts for
every connection and connects again for every command. Here the system's and the user's
known_hosts (and ``--known-hosts`` files) are read once per run into one index
(:mod:`.hostkeys`); an unknown or changed key is refused, unless ``accept_new`` records unknown
keys (OpenSSH's ``accept-new``: a changed key is still refused). Every command of the run to a
host goes over one connection (:mod:`.sshpool`).
"""

from __future__ import annotations

import codecs
import math
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from glm45_launch.core.quoting import quote
from glm45_launch.runtime.hostkeys import KnownHosts
from glm45_launch.runtime.results import MAX_LINE, CommandResult, keep_line, shown
from glm45_launch.runtime.sshauth import ClientKeys
from glm45_launch.runtime.sshconfig import SshConfig
from glm45_launch.runtime.ssherrors import ConnectionLost, HandshakeTimeout, SessionRefused, SshRefused
from glm45_launch.runtime.sshpool import SshPool

DEFAULT_KNOWN_HOSTS = Path("~/.ssh/known_hosts")
SYSTEM_KNOWN_HOSTS = Path("/etc/ssh/ssh_known_hosts")

# Why both ends: closing our side of the channel on a timeout leaves the remote process
# running, so the remote command runs under coreutils `timeout`, which kills its whole
# process group; the local timeout is a little longer so the remote one fires first.
_REMOTE_GRACE_S = 5
# Handshakes in flight at once, whatever --parallel is: each costs ~5 ms of the launcher's CPU
# (one core: paramiko holds the GIL between its C calls), so more in flight only queue on it,
# and sshd's MaxStartups (10:30:100) never sees many from us. See bench/fanout.py.
CONNECT_SLOTS = 16
_CHUNK = 32 * 1024


@dataclass(frozen=True)
class SshOptions:
    """How to reach the hosts."""

    user: str = "root"
    port: int | None = None
    identity: tuple[str, ...] = ()
    known_hosts: tuple[str, ...] = ()  # in addition to ~/.ssh/known_hosts
    accept_new_host_keys: bool = False
    connect_timeout: float = 10.0
    command_timeout: float = 300.0
    retries: int = 3  # connection attempts, with backoff, for transient failures
    backoff_s: float = 1.0
    use_agent: bool = True
    connect_slots: int = CONNECT_SLOTS  # SSH handshakes in flight at once


def known_hosts_files(opts: SshOptions) -> list[Path]:
    """Files whose keys are trusted: the system's and the user's known_hosts, then the extra ones
    (rack admins usually distribute host keys in /etc/ssh/ssh_known_hosts)."""
    files = [SYSTEM_KNOWN_HOSTS, DEFAULT_KNOWN_HOSTS.expanduser()]
    files += [Path(p).expanduser() for p in opts.known_hosts]
    return list(dict.fromkeys(files))


def connect_kwargs(opts: SshOptions) -> dict[str, Any]:
    """Paramiko ``connect`` arguments (pure, like SkyPilot's ssh option builder): the timeouts
    and which keys to offer."""
    kwargs: dict[str, Any] = {
        # Without banner/auth timeouts a half-open sshd can hang the connect forever.
        "banner_timeout": opts.connect_timeout,
        "auth_timeout": opts.connect_timeout,
        "allow_agent": opts.use_agent,
        "look_for_keys": not opts.identity,
    }
    if opts.identity:
        kwargs["key_filename"] = list(opts.identity)
    return kwargs


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


def describe_ssh_error(exc: BaseException, host: str, opts: SshOptions) -> tuple[str, bool]:
    """(one-line reason, retryable?) for an exception from connecting or running."""
    import paramiko

    if isinstance(exc, SshRefused):
        return str(exc), False
    if isinstance(exc, HandshakeTimeout):
        return (f"cannot connect to {host}: the SSH {exc.stage} did not finish within "
                f"{opts.connect_timeout:.0f}s"), True
    if isinstance(exc, ConnectionLost):
        return f"connection to {host} lost: {exc}", True
    if isinstance(exc, SessionRefused):
        return f"{host} refused one more SSH session on the connection (sshd MaxSessions?): {exc}", True
    if isinstance(exc, paramiko.BadHostKeyException):
        return (f"host key of {host} CHANGED (does not match known_hosts): refusing to connect; "
                "check the host, then remove the old key with `ssh-keygen -R`"), False
    if isinstance(exc, paramiko.AuthenticationException):
        return f"authentication failed for {opts.user}@{host}", False
    if isinstance(exc, paramiko.SSHException) and "protocol banner" in str(exc):
        cause = str(exc).partition("banner")[2].strip()
        if "reset" in cause.lower():
            return f"cannot connect to {host}: connection reset by peer during the SSH handshake", True
        if cause:  # a socket error while waiting for the banner
            return f"cannot connect to {host}: no SSH banner ({_first_line(cause)})", True
        return (f"cannot connect to {host}: no SSH banner within {opts.connect_timeout:.0f}s (the port "
                "accepts connections but does not speak SSH)"), True
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        return f"cannot connect to {host}: connection refused", True
    if isinstance(exc, ConnectionRefusedError):
        return f"cannot connect to {host}: connection refused", True
    if isinstance(exc, ConnectionResetError):
        return f"cannot connect to {host}: connection reset by peer during the SSH handshake", True
    if isinstance(exc, EOFError):
        return f"cannot connect to {host}: connection closed by the host during the SSH handshake", True
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve {host}: {exc.strerror}", False
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"cannot connect to {host}: timed out after {opts.connect_timeout:.0f}s", True
    if isinstance(exc, OSError):
        return f"cannot connect to {host}: {exc.strerror or exc}", True
    if isinstance(exc, paramiko.SSHException):
        return f"ssh error with {host}: {_first_line(str(exc))}", True
    return f"{type(exc).__name__} on {host}: {_first_line(str(exc))}", False


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0][:300]


class SshRunner:
    """Runs one command string on one host, over the run's one connection to that host.

    Built once per run (``Runtime.real``): the known_hosts index, the client keys, the ssh
    config and the connections live as long as this object. ``close_all`` (Ctrl-C, the end of
    a run) closes every connection at once.
    """

    def __init__(self, opts: SshOptions) -> None:
        self.opts = opts
        writable = Path(opts.known_hosts[0]).expanduser() if opts.known_hosts else DEFAULT_KNOWN_HOSTS.expanduser()
        known = KnownHosts(known_hosts_files(opts), writable=writable)
        auth = connect_kwargs(opts)
        keys = ClientKeys(tuple(auth.get("key_filename", ())), auth["look_for_keys"], auth["allow_agent"])
        self._pool = SshPool(opts, known, keys, SshConfig(), opts.connect_slots)
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
