"""One authenticated SSH connection per host for a whole run, shared by every phase.

``ssh -o ControlMaster`` for paramiko: the first command to a host connects (TCP, SSH handshake,
host key checked against the run's :class:`~.hostkeys.KnownHosts`, public-key auth), and every
later command (preflight, cleanup, ``ray start``, the health watch, teardown) opens a channel on
that connection. A connection is made again only when it has died, and only before a command was
sent. At most ``connect_slots`` handshakes are in flight at once, whatever the fan-out width:
they are what costs CPU on the launcher. Keepalives every :data:`KEEPALIVE_S` detect a dead peer
and keep idle connections through NAT and firewall timeouts.

Read once per run, not per connection: the known_hosts files (:mod:`.hostkeys`), the client keys
(:mod:`.sshauth`), ``~/.ssh/config`` (:mod:`.sshconfig`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from glm45_launch.runtime.hostkeys import Check, KnownHosts, Verdict, key_algorithms
from glm45_launch.runtime.sshauth import ClientKeys, authenticate
from glm45_launch.runtime.sshconfig import SshConfig, Target
from glm45_launch.runtime.ssherrors import ConnectionLost, HandshakeTimeout, SessionRefused, SshRefused

if TYPE_CHECKING:
    from glm45_launch.runtime.ssh import SshOptions

KEEPALIVE_S = 15  # an SSH keepalive after this long without traffic
FD_LIMIT = 65536  # open files: a socket per host for the run, a log file per command in flight
WINDOW_BYTES = 256 * 1024  # per channel: what paramiko may buffer for a command's output
# An idle connection's thread wakes this often (paramiko's default, 0.1 s, is 20,000 wake-ups a
# second for 2048 idle hosts during a job). It only checks for a close (we shut sockets down,
# which wakes it at once) and whether a keepalive is due.
IDLE_POLL_S = 5.0
# AES-GCM first (OpenSSH offers it too): an AEAD cipher is one C call per packet, where
# paramiko's default AES-CTR + HMAC adds an HMAC and a byte-by-byte MAC comparison in Python.
AEAD_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


def quiet_paramiko() -> None:
    """Keep paramiko's logging off stderr and out of the hot path.

    paramiko logs a transport's failure at ERROR with a traceback; with no handler configured,
    Python's last-resort handler prints it (a silent port gave pages of "Error reading SSH
    protocol banner" tracebacks). Our one line per host says it instead. A level above
    CRITICAL makes every paramiko log call a cached ``isEnabledFor`` miss: no record, no
    handler lock. ``GLM45_DEBUG=1`` keeps paramiko's logging as configured.
    """
    if os.environ.get("GLM45_DEBUG"):
        return
    log = logging.getLogger("paramiko")
    if not any(isinstance(h, logging.NullHandler) for h in log.handlers):
        log.addHandler(logging.NullHandler())
    log.propagate = False
    log.setLevel(logging.CRITICAL + 1)


def raise_fd_limit(want: int = FD_LIMIT) -> int:
    """Lift this process's soft open-files limit towards ``want`` (never above the hard limit):
    every host holds a socket for the whole run, and a 1024 default stops at ~1000 hosts."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return target
    return soft


class _Link:
    """One host's connection slot: the live transport, and a lock so one thread connects."""

    __slots__ = ("lock", "transport")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.transport: Any = None


class SshPool:
    """host -> one live, authenticated ``paramiko.Transport``, made on first use."""

    def __init__(self, opts: SshOptions, known: KnownHosts, keys: ClientKeys, config: SshConfig,
                 connect_slots: int) -> None:
        quiet_paramiko()
        raise_fd_limit()
        self.opts, self.known, self.keys, self.config = opts, known, keys, config
        self._links: dict[str, _Link] = {}
        self._links_lock = threading.Lock()
        self._handshakes = threading.BoundedSemaphore(max(1, connect_slots))
        self.closed = False

    def _link(self, host: str) -> _Link:
        link = self._links.get(host)
        if link is None:
            with self._links_lock:
                link = self._links.setdefault(host, _Link())
        return link

    def session(self, host: str) -> Any:
        """A new session channel to ``host``; connects when there is no live connection. A
        cached connection found dead (the channel cannot open) is replaced once: nothing was
        sent on it yet. Raises what connecting raised."""
        link = self._link(host)
        for _ in range(2):
            with link.lock:
                if self.closed:
                    raise ConnectionLost("the launcher is closing its connections")
                transport = link.transport
                fresh = transport is None or not transport.is_active()
                if fresh:
                    self._drop(link)
                    transport = link.transport = self._connect(host)
            try:
                return transport.open_session(window_size=WINDOW_BYTES, timeout=self.opts.connect_timeout)
            except Exception as exc:  # noqa: BLE001 - a dead connection: replaced below, once
                if transport.is_active():  # a live connection whose sshd said no (MaxSessions): keep it,
                    raise SessionRefused(str(exc) or type(exc).__name__) from None  # its other sessions too
                with link.lock:
                    if link.transport is transport:
                        self._drop(link)
                if fresh:
                    raise ConnectionLost(f"cannot open a session: {exc or type(exc).__name__}") from None
        raise ConnectionLost("the connection died twice before the command was sent")

    def forget(self, host: str, transport: Any) -> None:
        """Drop ``host``'s connection if it is still ``transport`` (it died under a command)."""
        link = self._link(host)
        with link.lock:
            if link.transport is transport:
                self._drop(link)

    def _connect(self, host: str) -> Any:
        """TCP, handshake, host key, auth: an authenticated transport, or an exception."""
        target = self.config.target(host, self.opts.user, self.opts.port)
        with self._handshakes:
            if self.closed:
                raise ConnectionLost("the launcher is closing its connections")
            preferred = self.known.preferred_types(target.key_name)
            transport = self._handshake(target, key_algorithms(preferred))
            try:
                check = self._check_key(target, transport)
                if (check.verdict is Verdict.CHANGED and not preferred
                        and transport.get_remote_server_key().get_name() not in check.known_types):
                    # Known only through hashed lines, with another key type than the server
                    # offered first: ask for a type we know (nothing was sent yet), like ssh's
                    # HostKeyAlgorithms ordering.
                    _close_transport(transport)
                    transport = self._handshake(target, key_algorithms(check.known_types))
                    check = self._check_key(target, transport)
                if not check.ok:
                    raise SshRefused(refusal(host, check, transport.get_remote_server_key().get_name()))
                authenticate(transport, target, self.keys, time.monotonic() + self.opts.connect_timeout)
            except BaseException:
                _close_transport(transport)
                raise
        transport.set_keepalive(KEEPALIVE_S)
        return transport

    def _handshake(self, target: Target, key_types: list[str]) -> Any:
        import paramiko

        timeout = self.opts.connect_timeout
        if target.proxy_command:
            sock: Any = paramiko.ProxyCommand(target.proxy_command)  # %h, %p, %r: expanded by SSHConfig
        else:
            sock = socket.create_connection((target.hostname, target.port), timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        try:
            transport = paramiko.Transport(sock, default_window_size=WINDOW_BYTES)
        except BaseException:
            sock.close()
            raise
        transport.banner_timeout = transport.handshake_timeout = transport.auth_timeout = timeout
        opts = transport.get_security_options()
        opts.ciphers = _first(opts.ciphers, AEAD_CIPHERS)
        if key_types:
            opts.key_types = _first(opts.key_types, key_types)
        done = threading.Event()
        start = time.monotonic()
        transport.start_client(event=done)
        if not done.wait(timeout + 1):
            _close_transport(transport)
            raise HandshakeTimeout("handshake", timeout)
        if not transport.is_active():
            exc = transport.get_exception()
            _close_transport(transport)
            if isinstance(exc, EOFError) and time.monotonic() - start >= timeout:
                raise HandshakeTimeout("key exchange", timeout)  # paramiko's handshake timeout is an EOF
            raise exc if exc is not None else ConnectionLost("the SSH handshake failed")
        if hasattr(sock, "settimeout"):
            sock.settimeout(IDLE_POLL_S)  # the transport thread only polls to notice a close
        return transport

    def _check_key(self, target: Target, transport: Any) -> Check:
        """The server's key against known_hosts; an unknown one recorded when accepting new keys."""
        key = transport.get_remote_server_key()
        name, keytype, blob = target.key_name, key.get_name(), key.asbytes()
        check = self.known.check(name, keytype, blob)
        if check.verdict is Verdict.UNKNOWN and self.opts.accept_new_host_keys:
            check = self.known.record(name, keytype, blob)
        return check

    def close_all(self) -> None:
        """Close every connection at once: sockets shut down first, so every thread blocked on
        one returns now; nothing new connects afterwards."""
        self.closed = True
        with self._links_lock:
            links = list(self._links.values())
        for link in links:
            transport = link.transport
            link.transport = None
            if transport is not None:
                _close_transport(transport)

    def _drop(self, link: _Link) -> None:
        if link.transport is not None:
            _close_transport(link.transport)
            link.transport = None


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
    return (f"host key of {host} is unknown: add it to known_hosts "
            "(ssh-keyscan) or pass --accept-new-host-keys")


def _first(supported: tuple[str, ...], preferred: Iterable[str]) -> list[str]:
    """``supported``, with those of ``preferred`` it has moved first (in that order)."""
    first = [p for p in preferred if p in supported]
    return first + [s for s in supported if s not in first]


def _close_transport(transport: Any) -> None:
    """Shut the socket down first: a thread blocked reading it (ours or paramiko's) wakes now."""
    sock = getattr(transport, "sock", None)
    with contextlib.suppress(OSError, AttributeError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(Exception):
        transport.close()
