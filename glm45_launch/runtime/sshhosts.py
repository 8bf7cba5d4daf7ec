"""The run's SSH connections: one ``fabric.Connection`` per host, made on first use, shared by
every phase (preflight, cleanup, ``ray start``, the health watch, teardown).

Fabric reads ``~/.ssh/config`` and ``/etc/ssh/ssh_config`` once per run (one ``fabric.Config``):
``HostName``, ``Port``, ``User``, ``IdentityFile``, ``ProxyCommand`` and ``ProxyJump`` as OpenSSH
does; a jump host's connection is made once and shared by every host behind it. What Fabric
leaves open, set here per connection:

- host keys: each connection's paramiko client gets only its host's entries of the run's one
  known_hosts index (:mod:`.hostkeys`); an unknown, changed or revoked key is refused in one line
  (``accept_new`` records an unknown key, never a changed one), where Fabric would accept any;
- keys: loaded once per run and offered like OpenSSH (explicit, ssh config, agent, ~/.ssh/id_*);
  an encrypted key that no agent holds is named;
- the handshake: one timeout for TCP, banner, key exchange and auth, at most ``connect_slots``
  in flight (they are what costs CPU here), AES-GCM first, keepalives, a quiet transport thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fabric
import paramiko
from paramiko.auth_strategy import AuthFailure, AuthStrategy, InMemoryPrivateKey

from glm45_launch.errors import LaunchError
from glm45_launch.runtime.hostkeys import Check, KnownHosts, Verdict

DEFAULT_KNOWN_HOSTS = Path("~/.ssh/known_hosts")
SYSTEM_KNOWN_HOSTS = Path("/etc/ssh/ssh_known_hosts")
DEFAULT_KEY_FILES = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")
# Handshakes in flight at once, whatever --parallel is: each costs ~5 ms of the launcher's CPU
# (one core: paramiko holds the GIL between its C calls), so more in flight only queue on it,
# and sshd's MaxStartups (10:30:100) never sees many from us. See bench/fanout.py.
CONNECT_SLOTS = 16
KEEPALIVE_S = 15  # an SSH keepalive after this long without traffic
FD_LIMIT = 65536  # open files: a socket per host for the run, a log file per command in flight
WINDOW_BYTES = 256 * 1024  # per channel: what paramiko may buffer for a command's output
# An idle connection's transport thread wakes this often (paramiko's default, 0.1 s, is 20,000
# wake-ups a second for 2048 idle hosts during a job); a close wakes it at once.
IDLE_POLL_S = 5.0
# AES-GCM first (OpenSSH offers it too): one C call per packet, where AES-CTR + HMAC adds an HMAC
# and a byte-by-byte MAC comparison in Python.
AEAD_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


@dataclass(frozen=True)
class SshOptions:
    """How to reach the hosts."""

    user: str | None = "root"  # None: ssh config's User, else root
    port: int | None = None  # None: ssh config's Port, else 22
    identity: tuple[str, ...] = ()
    known_hosts: tuple[str, ...] = ()  # in addition to the system's and ~/.ssh/known_hosts
    accept_new_host_keys: bool = False
    connect_timeout: float = 10.0
    command_timeout: float = 300.0
    retries: int = 3  # connection attempts, with backoff, for transient failures
    backoff_s: float = 1.0
    use_agent: bool = True
    connect_slots: int = CONNECT_SLOTS  # SSH handshakes in flight at once


class SshRefused(Exception):
    """A connection that cannot work, whatever a retry does (host key, auth); the message is the line."""


class HandshakeTimeout(Exception):
    """The TCP connection opened, but the SSH handshake did not finish in time."""


class ConnectionLost(Exception):
    """The connection died before a command was sent (retried on a new one)."""


class SessionRefused(Exception):
    """The connection is fine, but its sshd refused one more session (``MaxSessions``)."""


class JumpFailed(Exception):
    """The ProxyJump host could not be reached: (jump host, its one-line reason, retryable?)."""


def known_hosts_files(opts: SshOptions) -> list[Path]:
    """Files whose keys are trusted: the system's and the user's known_hosts, then the extra ones
    (rack admins usually distribute host keys in /etc/ssh/ssh_known_hosts)."""
    files = [SYSTEM_KNOWN_HOSTS, DEFAULT_KNOWN_HOSTS.expanduser(), *(Path(p).expanduser() for p in opts.known_hosts)]
    return list(dict.fromkeys(files))


def quiet_paramiko() -> None:
    """paramiko logs a transport's failure at ERROR with a traceback (Python's last-resort handler
    printed pages of them for a silent port): our one line per host says it instead. A level above
    CRITICAL makes every log call a cached miss. ``GLM45_DEBUG=1`` keeps paramiko's logging."""
    if os.environ.get("GLM45_DEBUG"):
        return
    log = logging.getLogger("paramiko")
    log.addHandler(logging.NullHandler())
    log.propagate = False
    log.setLevel(logging.CRITICAL + 1)


def raise_fd_limit(want: int = FD_LIMIT) -> int:
    """Lift the soft open-files limit towards ``want``: every host holds a socket for the run."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return target
    return soft


class _Transport(paramiko.Transport):
    """paramiko's transport with the run's settings; its handshake says which stage timed out."""

    def __init__(self, sock: Any, **kwargs: Any) -> None:
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        super().__init__(sock, default_window_size=WINDOW_BYTES, **kwargs)
        opts = self.get_security_options()
        opts.ciphers = [c for c in AEAD_CIPHERS if c in opts.ciphers] + [c for c in opts.ciphers
                                                                         if c not in AEAD_CIPHERS]

    def start_client(self, event: threading.Event | None = None, timeout: float | None = None) -> None:
        timeout = timeout or 10.0
        self.banner_timeout = self.handshake_timeout = timeout
        done, start = threading.Event(), time.monotonic()
        super().start_client(event=done)
        if not done.wait(timeout + 1):
            close_transport(self)
            raise HandshakeTimeout("handshake")
        if not self.is_active():
            exc = self.get_exception()
            close_transport(self)
            if isinstance(exc, EOFError) and time.monotonic() - start >= timeout:
                raise HandshakeTimeout("key exchange")  # paramiko's handshake timeout is an EOF
            raise exc if exc is not None else ConnectionLost("the SSH handshake failed")
        if hasattr(self.sock, "settimeout"):
            self.sock.settimeout(IDLE_POLL_S)  # the transport thread only polls to notice a close


class _KeyRing:
    """The private keys to offer, each file loaded once per run; an encrypted one is noted."""

    def __init__(self, identity: tuple[str, ...], look_for_keys: bool) -> None:
        self.identity, self.look_for_keys = identity, look_for_keys
        self._loaded: dict[str, paramiko.PKey | None] = {}
        self.encrypted: list[str] = []
        self.unreadable: list[str] = []
        self._lock = threading.Lock()

    def key(self, path: str) -> paramiko.PKey | None:
        with self._lock:
            if path not in self._loaded:
                self._loaded[path] = self._load(path)
            return self._loaded[path]

    def _load(self, path: str) -> paramiko.PKey | None:
        full = os.path.expanduser(path)
        if not os.path.isfile(full):
            return None
        try:
            key = paramiko.PKey.from_path(full)
            if os.path.isfile(full + "-cert.pub"):
                key.load_certificate(full + "-cert.pub")
            return key
        except paramiko.PasswordRequiredException:
            self.encrypted.append(path)
        except (TypeError, ValueError) as exc:  # cryptography: "Password was not given but ... encrypted"
            (self.encrypted if "password" in str(exc).lower() else self.unreadable).append(path)
        except (OSError, paramiko.SSHException) as exc:
            self.unreadable.append(f"{path} ({exc})")
        return None

    def explicit(self, extra: Iterable[str]) -> list[paramiko.PKey]:
        """--identity keys, then ssh config IdentityFile ones, in order."""
        return [k for p in dict.fromkeys((*self.identity, *extra)) if (k := self.key(p)) is not None]

    def defaults(self) -> list[paramiko.PKey]:
        return [k for p in DEFAULT_KEY_FILES if (k := self.key(p)) is not None] if self.look_for_keys else []


class _RunAuth(AuthStrategy):
    """Public-key auth like OpenSSH: explicit keys, the agent's, then ~/.ssh/id_*; a failure is one line."""

    def __init__(self, conn: fabric.Connection, keys: _KeyRing, use_agent: bool, name: str) -> None:
        super().__init__(ssh_config=conn.ssh_config)
        self.conn, self.keys, self.use_agent, self.name = conn, keys, use_agent, name
        self.agent: paramiko.Agent | None = None

    def get_sources(self) -> Iterator[InMemoryPrivateKey]:
        user = self.conn.user
        for key in self.keys.explicit(self.conn.ssh_config.get("identityfile", ())):
            yield InMemoryPrivateKey(user, key)
        if self.use_agent and os.environ.get("SSH_AUTH_SOCK"):
            self.agent = paramiko.Agent()  # a socket per connection: agent requests are not thread-safe
            for key in self.agent.get_keys():
                yield InMemoryPrivateKey(user, key)
        for key in self.keys.defaults():
            yield InMemoryPrivateKey(user, key)

    def authenticate(self, transport: paramiko.Transport) -> list[Any]:
        try:
            return super().authenticate(transport)
        except AuthFailure as exc:
            raise SshRefused(self._why(exc.result)) from None
        finally:
            if self.agent is not None:
                self.agent.close()

    def _why(self, results: list[Any]) -> str:
        who = f"{self.conn.user}@{self.name}"
        for res in results:
            if isinstance(res.result, paramiko.BadAuthenticationType):
                return f"{who} does not accept public keys (allowed: {', '.join(res.result.allowed_types)})"
        locked = [p for p in self.keys.encrypted if p in (*self.keys.identity, *DEFAULT_KEY_FILES,
                                                          *self.conn.ssh_config.get("identityfile", ()))]
        why = "; ".join(f"the key {p} is passphrase-protected and no agent holds it: ssh-add it" for p in locked)
        skipped = f" (unreadable: {'; '.join(self.keys.unreadable)})" if self.keys.unreadable else ""
        if not results:
            return f"{self.name}: {why}" if why else (
                f"no SSH key to offer to {self.name}: --identity KEY, ssh-agent or ~/.ssh/id_*{skipped}")
        more = f"; {why}" if why else ""
        return f"authentication failed for {who}: {len(results)} key(s) refused{more}{skipped}"


class _HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Called when the client holds no entry for the host: the run's index decides."""

    def __init__(self, hosts: Hosts, name: str) -> None:
        self.hosts, self.name = hosts, name

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        self.hosts.verify(self.name, hostname, key)


class _Retry(Exception):
    """Connect again, with the host's every entry in the client (nothing was sent)."""


class Hosts:
    """host -> its one live ``fabric.Connection``, made on first use; jump hosts shared."""

    def __init__(self, opts: SshOptions, like: Hosts | None = None) -> None:
        """``like``: another set of the run's connections whose known_hosts index, keys and ssh
        config this one shares (read once per run); its connections are its own."""
        quiet_paramiko()
        raise_fd_limit()
        self.opts = opts
        if like is not None:
            self.known, self.keys, self.config = like.known, like.keys, like.config
        else:
            writable = Path(opts.known_hosts[0] if opts.known_hosts else DEFAULT_KNOWN_HOSTS).expanduser()
            self.known = KnownHosts(known_hosts_files(opts), writable=writable)
            self.keys = _KeyRing(opts.identity, look_for_keys=not opts.identity)
            try:  # ~/.ssh/config and /etc/ssh/ssh_config, parsed once for the run
                self.config = fabric.Config(overrides={"user": "root"})
            except (OSError, ValueError, paramiko.ConfigParseError) as exc:
                raise LaunchError(f"cannot read ssh config: {exc}") from None
        self._conns: dict[str, fabric.Connection] = {}
        self._jumps: dict[str, tuple[str, str | None, int | None]] = {}  # "user@host:port" -> (host, user, port)
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self._config_lock = threading.Lock()
        self._handshakes = threading.BoundedSemaphore(max(1, opts.connect_slots))
        self.closed = False

    def _slot(self, name: str) -> threading.Lock:
        with self._lock:
            return self._locks.setdefault(name, threading.Lock())

    def session(self, host: str) -> Any:
        """A new session channel to ``host``; connects when there is no live connection. A cached
        connection found dead is replaced once (nothing was sent on it)."""
        for _ in range(2):
            conn, fresh = self.connection(host)
            transport = conn.transport
            try:
                return transport.open_session(window_size=WINDOW_BYTES, timeout=self.opts.connect_timeout)
            except Exception as exc:  # noqa: BLE001 - a dead connection: replaced below, once
                if transport.is_active():  # sshd said no (MaxSessions): keep it, its other sessions too
                    raise SessionRefused(str(exc) or type(exc).__name__) from None
                self.forget(host, transport)
                if fresh:
                    raise ConnectionLost(f"cannot open a session: {exc or type(exc).__name__}") from None
        raise ConnectionLost("the connection died twice before the command was sent")

    def connection(self, name: str) -> tuple[fabric.Connection, bool]:
        """``name``'s open connection, and whether it was just made."""
        with self._slot(name):
            if self.closed:
                raise ConnectionLost("the launcher is closing its connections")
            conn = self._conns.get(name)
            if conn is not None and conn.is_connected:
                return conn, False
            if conn is not None:
                close_transport(conn.client.get_transport())
            conn = self._conns[name] = self._new(name)
            self._open(conn, self._jumps.get(name, (name,))[0])
            return conn, True

    def _new(self, name: str) -> fabric.Connection:
        opts = self.opts
        shown, user, port = self._jumps.get(name, (name, opts.user, opts.port))  # a jump: "user@host:port"
        with self._config_lock:  # invoke's Config is not thread-safe: each connection reads its own copy
            config = self.config.clone()
        conn = fabric.Connection(shown, user=user, port=port, config=config,
                                 connect_timeout=max(1, round(opts.connect_timeout)))
        conn.connect_kwargs = {
            "auth_strategy": _RunAuth(conn, self.keys, opts.use_agent, shown),
            "banner_timeout": opts.connect_timeout, "auth_timeout": opts.connect_timeout,
            "transport_factory": _Transport,
        }
        conn.client.set_missing_host_key_policy(_HostKeyPolicy(self, shown))
        self._give_keys(conn, every=False)
        gw = conn.gateway
        if isinstance(gw, fabric.Connection):  # ProxyJump: the jump host's one connection, shared
            jump = f"{gw.user}@{gw.original_host}:{gw.port}"
            with self._lock:
                self._jumps.setdefault(jump, (gw.original_host, gw.user, gw.port))
            try:
                conn.gateway = self.connection(jump)[0]
            except Exception as exc:  # noqa: BLE001 - one line per host, naming the jump host
                raise JumpFailed(jump, *describe_ssh_error(exc, gw.original_host, self.opts)) from None
        return conn

    def _open(self, conn: fabric.Connection, name: str) -> None:
        """Handshake, host key, auth; once more with every known_hosts line of the host when the
        server's key is known only by a line the client was not given (or by another key type)."""
        with self._handshakes:
            for attempt in (1, 2):
                if self.closed:
                    raise ConnectionLost("the launcher is closing its connections")
                try:
                    conn.open()
                    if self.closed:  # close_all ran during the handshake
                        raise ConnectionLost("the launcher is closing its connections")
                    conn.transport.set_keepalive(KEEPALIVE_S)
                    return
                except paramiko.BadHostKeyException as exc:
                    close_transport(conn.client.get_transport())
                    presented = exc.key
                    with contextlib.suppress(_Retry):
                        self.verify(name, key_name(conn), presented)  # refuses, or knows it by another line
                except _Retry as exc:
                    close_transport(conn.client.get_transport())
                    presented = exc.args[0]
                except BaseException:
                    close_transport(conn.client.get_transport())
                    raise
                if attempt == 2:
                    raise SshRefused(self._refusal(name, key_name(conn), presented))
                self._give_keys(conn, every=True)

    def verify(self, name: str, filed_as: str, key: paramiko.PKey) -> None:
        """Accept ``key`` for the host, record it (accept-new), ask for a retry, or refuse in one line."""
        check = self.known.check(filed_as, key.get_name(), key.asbytes())
        if check.verdict is Verdict.UNKNOWN and self.opts.accept_new_host_keys:
            check = self.known.record(filed_as, key.get_name(), key.asbytes())
        if check.ok:
            return
        if check.verdict is Verdict.CHANGED and key.get_name() not in check.known_types:
            raise _Retry(key)  # known with another key type than the server offered: ask for that type
        raise SshRefused(refusal(name, check, key.get_name()))

    def _refusal(self, name: str, filed_as: str, key: paramiko.PKey) -> str:
        return refusal(name, self.known.check(filed_as, key.get_name(), key.asbytes()), key.get_name())

    def _give_keys(self, conn: fabric.Connection, every: bool) -> None:
        """The client's known hosts: only this host's entries of the run's index (its plain and
        pattern lines; ``every`` adds its hashed ones, one HMAC per hashed line)."""
        name = key_name(conn)
        keys = conn.client.get_host_keys()
        for e in self.known.trusted(name, every):
            with contextlib.suppress(paramiko.SSHException, ValueError):
                keys.add(name, e.keytype, paramiko.PKey.from_type_string(e.keytype, e.blob))

    def forget(self, host: str, transport: Any) -> None:
        """Drop ``host``'s connection if it is still ``transport`` (it died under a command)."""
        with self._slot(host):
            conn = self._conns.get(host)
            if conn is not None and conn.transport is transport:
                close_transport(transport)
                del self._conns[host]

    def close_all(self) -> None:
        """Close every connection at once (sockets shut down first: blocked threads return now);
        nothing new connects afterwards."""
        self.closed = True
        with self._lock:
            conns = list(self._conns.values())
        for conn in conns:
            close_transport(conn.client.get_transport())


def key_name(conn: fabric.Connection) -> str:
    """The name the host's key is filed under: its HostName, ``[h]:p`` off port 22."""
    return conn.host if int(conn.port) == 22 else f"[{conn.host}]:{conn.port}"


def refusal(host: str, check: Check, presented: str) -> str:
    """The one line for a refused host key."""
    where = ", ".join(e.where for e in check.known[:3])
    if check.verdict is Verdict.REVOKED:
        return f"host key of {host} is REVOKED ({where}): refusing to connect"
    if check.verdict is Verdict.CA_ONLY:
        return (f"host key of {host} is vouched for only by a @cert-authority line ({where}); host "
                "certificates cannot be checked here: add the host's key (ssh-keyscan) to known_hosts")
    if check.verdict is Verdict.CHANGED:
        return (f"host key of {host} CHANGED (does not match known_hosts: presented {presented}, known "
                f"{'/'.join(check.known_types)} at {where}): refusing to connect; check the host, then "
                "remove the old key with `ssh-keygen -R`")
    return f"host key of {host} is unknown: add it to known_hosts (ssh-keyscan) or pass --accept-new-host-keys"


def close_transport(transport: Any) -> None:
    """Shut the socket down first: a thread blocked reading it (ours or paramiko's) wakes now."""
    if transport is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        transport.sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(Exception):
        transport.close()


def describe_ssh_error(exc: BaseException, host: str, opts: SshOptions) -> tuple[str, bool]:
    """(one-line reason, retryable?) for an exception from connecting or running."""
    text = (str(exc).strip().splitlines() or [""])[0][:300]
    if isinstance(exc, SshRefused):
        return str(exc), False
    if isinstance(exc, JumpFailed):
        jump, reason, retryable = exc.args
        return f"cannot reach {host} through its ProxyJump host {jump}: {reason}", retryable
    if isinstance(exc, _Retry):
        return f"host key of {host} CHANGED: the server offers no key type known_hosts has", False
    if isinstance(exc, HandshakeTimeout):
        return f"cannot connect to {host}: the SSH {exc} did not finish within {opts.connect_timeout:.0f}s", True
    if isinstance(exc, ConnectionLost):
        return f"connection to {host} lost: {exc}", True
    if isinstance(exc, SessionRefused):
        return f"{host} refused one more SSH session on the connection (sshd MaxSessions?): {exc}", True
    if isinstance(exc, paramiko.AuthenticationException):
        return f"authentication failed for {opts.user or 'root'}@{host}", False
    if isinstance(exc, paramiko.SSHException) and "protocol banner" in text:
        cause = text.partition("banner")[2].strip()
        if "reset" in cause.lower():
            return f"cannot connect to {host}: connection reset by peer during the SSH handshake", True
        if cause:  # a socket error while waiting for the banner
            return f"cannot connect to {host}: no SSH banner ({cause})", True
        return (f"cannot connect to {host}: no SSH banner within {opts.connect_timeout:.0f}s (the port "
                "accepts connections but does not speak SSH)"), True
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError | ConnectionRefusedError):
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
        return f"ssh error with {host}: {text}", True
    return f"ssh error with {host}: {text or 'unexpected failure'}", False
