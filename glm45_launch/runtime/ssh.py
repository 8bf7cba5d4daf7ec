"""Remote commands over SSH with Fabric: host keys checked, timeouts on both ends, retries.

Fabric's ``Connection`` accepts any host key by default (``AutoAddPolicy``). Here the
user's ``known_hosts`` (and ``--known-hosts`` files) are loaded and an unknown or changed
key is refused, unless ``accept_new`` records unknown keys (OpenSSH's ``accept-new``: a
changed key is still refused).
"""

from __future__ import annotations

import math
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from glm45_launch.core.quoting import quote
from glm45_launch.errors import LaunchError
from glm45_launch.runtime.results import MAX_LINE, CommandResult, keep_line, shown

DEFAULT_KNOWN_HOSTS = Path("~/.ssh/known_hosts")
SYSTEM_KNOWN_HOSTS = Path("/etc/ssh/ssh_known_hosts")

# Why both ends: Fabric's timeout closes our side of the channel but leaves the remote
# process running, so the remote command runs under coreutils `timeout`, which kills its
# whole process group; the local timeout is a little longer so the remote one fires first.
_REMOTE_GRACE_S = 5


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


def known_hosts_files(opts: SshOptions) -> list[Path]:
    """Files whose keys are trusted: the system's and the user's known_hosts, then the extra ones
    (rack admins usually distribute host keys in /etc/ssh/ssh_known_hosts)."""
    files = [SYSTEM_KNOWN_HOSTS, DEFAULT_KNOWN_HOSTS.expanduser()]
    files += [Path(p).expanduser() for p in opts.known_hosts]
    return list(dict.fromkeys(files))


def connect_kwargs(opts: SshOptions) -> dict[str, Any]:
    """Paramiko ``connect`` arguments (pure, like SkyPilot's ssh option builder)."""
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


class _RecordingPolicy:
    """Accept an unknown host key and append it to the writable known_hosts file."""

    _lock = threading.Lock()

    def __init__(self, path: Path) -> None:
        self.path = path

    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        with self._lock:
            client.get_host_keys().add(hostname, key.get_name(), key)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as fh:
                fh.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")


class _LineSink:
    """A file-like stream that writes each complete line to the log and to ``echo``.

    invoke reads stdout and stderr in two threads: each gets its own sink (its own partial
    line), and the sinks of one command share ``lock`` so whole lines never interleave.
    """

    def __init__(self, log: IO[str], echo: Callable[[str], None] | None, tail: list[str],
                 lock: threading.Lock) -> None:
        self.log, self.echo, self.tail, self.buf, self.lock = log, echo, tail, "", lock

    def write(self, data: str) -> int:
        self.buf += data
        while "\n" in self.buf:
            line, self.buf = self.buf.split("\n", 1)
            self._emit(line)
        if len(self.buf) > MAX_LINE:  # no newline for a long time: log it in pieces, bounded
            self._emit(self.buf[:MAX_LINE])
            self.buf = self.buf[MAX_LINE:]
        return len(data)

    def _emit(self, line: str) -> None:
        with self.lock:
            self.log.write(line + "\n")
            self.log.flush()
            keep_line(self.tail, line)
        if self.echo:
            self.echo(line)

    def flush(self) -> None:
        # invoke flushes after every chunk it reads (1000 bytes): emitting the partial line
        # here would split long lines (a probe's JSON report) in two. finish() ends the last one.
        pass

    def finish(self) -> None:
        if self.buf:
            self._emit(self.buf)
            self.buf = ""


def describe_ssh_error(exc: BaseException, host: str, opts: SshOptions) -> tuple[str, bool]:
    """(one-line reason, retryable?) for an exception from connecting or running."""
    import paramiko
    from invoke.exceptions import CommandTimedOut

    if isinstance(exc, paramiko.BadHostKeyException):
        return (f"host key of {host} CHANGED (does not match known_hosts): refusing to connect; "
                "check the host, then remove the old key with `ssh-keygen -R`"), False
    if isinstance(exc, paramiko.AuthenticationException):
        return f"authentication failed for {opts.user}@{host}", False
    if isinstance(exc, paramiko.SSHException) and "not found in known_hosts" in str(exc):
        return (f"host key of {host} is unknown: add it to known_hosts "
                "(ssh-keyscan) or pass --accept-new-host-keys"), False
    if isinstance(exc, CommandTimedOut):
        return f"command timed out after {exc.timeout:.0f}s on {host}", False
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        return f"cannot connect to {host}: connection refused", True
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve {host}: {exc.strerror}", False
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"cannot connect to {host}: timed out after {opts.connect_timeout:.0f}s", True
    if isinstance(exc, OSError):
        return f"cannot connect to {host}: {exc.strerror or exc}", True
    if isinstance(exc, paramiko.SSHException):
        return f"ssh error with {host}: {exc}", True
    return f"{type(exc).__name__} on {host}: {exc}", False


class SshRunner:
    """Runs one command string on one host through a Fabric ``Connection``."""

    def __init__(self, opts: SshOptions) -> None:
        self.opts = opts
        self._live: set[Any] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._writable_known_hosts = (
            Path(opts.known_hosts[0]).expanduser() if opts.known_hosts else DEFAULT_KNOWN_HOSTS.expanduser()
        )

    def _connection(self, host: str) -> Any:
        """An unopened Fabric ``Connection`` that refuses unknown/changed host keys."""
        import paramiko
        from fabric import Config, Connection

        # Fabric reads ~/.ssh/config; keep that (users rely on it), but never its default
        # of accepting any host key.
        conn = Connection(
            host, user=self.opts.user, port=self.opts.port, config=Config(),
            connect_timeout=int(self.opts.connect_timeout), connect_kwargs=connect_kwargs(self.opts),
        )
        client = conn.client
        for path in known_hosts_files(self.opts):
            if path.is_file():
                try:
                    client.get_host_keys().load(str(path))
                except (OSError, paramiko.SSHException) as exc:
                    raise LaunchError(f"{path}: cannot read known_hosts: {exc}") from None
        if self.opts.accept_new_host_keys:
            client.set_missing_host_key_policy(_RecordingPolicy(self._writable_known_hosts))
        else:
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
        return conn

    def _connect(self, host: str, result: CommandResult, log: IO[str]) -> Any:
        """An open connection, or None with ``result.error`` set; transient failures retried."""
        for attempt in range(1, self.opts.retries + 1):
            result.attempts = attempt
            conn = self._connection(host)
            with self._lock:
                self._live.add(conn)
            try:
                conn.open()
                result.error = None
                return conn
            except Exception as exc:  # noqa: BLE001 - one line per host, never a traceback
                self._close(conn)
                reason, retryable = describe_ssh_error(exc, host, self.opts)
                log.write(f"! attempt {attempt}: {reason}\n")
                result.error = reason
                if not retryable or attempt == self.opts.retries or self._closed:
                    return None
                time.sleep(self.opts.backoff_s * 2 ** (attempt - 1))
        return None

    def _close(self, conn: Any) -> None:
        with self._lock:
            self._live.discard(conn)
        conn.close()

    def close_all(self) -> None:
        """Ctrl-C: close every open connection so the threads using them return now."""
        self._closed = True
        with self._lock:
            live = list(self._live)
        for conn in live:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing is best effort on the way out
                pass

    def run(
        self,
        host: str,
        command: str,
        log_path: Path,
        echo: Callable[[str], None] | None = None,
        timeout_s: float | None = None,
    ) -> CommandResult:
        """Run ``command`` on ``host``; connection failures retried with backoff."""
        timeout_s = timeout_s or self.opts.command_timeout
        result = CommandResult(host=host, command=command)
        start = time.monotonic()
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("a") as log:
            log.write(f"$ {shown(command)}\n")
            conn = self._connect(host, result, log)
            if conn is not None:
                # Connected: the command runs once. Retrying after it started could run it
                # twice (two conversions into one directory, two raylets).
                lock = threading.Lock()
                out = _LineSink(log, echo, result.output_tail, lock)
                err = _LineSink(log, echo, result.output_tail, lock)
                try:
                    res = conn.run(
                        wrap_remote(command, timeout_s), hide=True, warn=True, in_stream=False,
                        out_stream=out, err_stream=err, timeout=timeout_s + 2 * _REMOTE_GRACE_S,
                    )
                    result.exit_code = res.exited
                    if res.exited == 124:
                        result.error = f"remote command timed out after {timeout_s:.0f}s on {host}"
                except Exception as exc:  # noqa: BLE001 - one line per host, never a traceback
                    result.error = describe_ssh_error(exc, host, self.opts)[0]
                finally:
                    out.finish()
                    err.finish()
                    self._close(conn)
            log.write(f"# exit={result.exit_code} error={result.error}\n")
        result.duration_s = time.monotonic() - start
        return result
