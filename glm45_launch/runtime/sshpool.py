"""One authenticated SSH connection per host for a whole run, shared by every phase.

``ssh -o ControlMaster`` for paramiko: the first command to a host connects (TCP, SSH handshake,
host key checked against the run's :class:`~.hostkeys.KnownHosts`, public-key auth), and every
later command (preflight, cleanup, ``ray start``, the health watch, teardown) opens a channel on
that connection. A connection is made again only when it has died, and only before a command was
sent. At most ``connect_slots`` handshakes are in flight at once, whatever the fan-out width:
they are what costs CPU on the launcher. Keepalives every :data:`KEEPALIVE_S` detect a dead peer
and keep idle connections through NAT and firewall timeouts.

Read once per run, not per connection: the known_hosts files, the client keys, ``~/.ssh/config``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from glm45_launch.errors import LaunchError
from glm45_launch.runtime.hostkeys import Check, KnownHosts, Verdict, host_key_name, key_algorithms

if TYPE_CHECKING:
    from glm45_launch.runtime.ssh import SshOptions

KEEPALIVE_S = 15  # an SSH keepalive after this long without traffic
FD_LIMIT = 65536  # open files: a socket per host for the run, a log file per command in flight
WINDOW_BYTES = 256 * 1024  # per channel: what paramiko may buffer for a command's output
# An idle connection's thread wakes this often (paramiko's default, 0.1 s, is 20,000 wake-ups a
# second for 2048 idle hosts during a job). It only checks for a close (we shut sockets down,
# which wakes it at once) and whether a keepalive is due.
IDLE_POLL_S = 5.0
DEFAULT_KEY_FILES = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")
USER_SSH_CONFIG = "~/.ssh/config"
SYSTEM_SSH_CONFIG = "/etc/ssh/ssh_config"
# AES-GCM first (OpenSSH offers it too): an AEAD cipher is one C call per packet, where
# paramiko's default AES-CTR + HMAC adds an HMAC and a byte-by-byte MAC comparison in Python.
AEAD_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
# The ssh config keywords this launcher uses; a config without them is never looked up.
USED_SSH_CONFIG = ("hostname", "port", "identityfile", "proxycommand", "proxyjump")


class SshRefused(Exception):
    """A connection we refuse or that cannot work, whatever a retry does (host key, auth, config).
    Its message is the one line the user sees."""


class HandshakeTimeout(Exception):
    """The TCP connection opened, but the SSH handshake did not finish in time."""

    def __init__(self, stage: str, timeout_s: float) -> None:
        super().__init__(stage)
        self.stage, self.timeout_s = stage, timeout_s


class SessionRefused(Exception):
    """The connection is fine but its sshd refused one more session (``MaxSessions``)."""


class ConnectionLost(Exception):
    """The connection died (before a command was sent: retried on a new one)."""


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


@dataclass(frozen=True)
class Target:
    """Where a host name leads, after ``~/.ssh/config``."""

    host: str  # as the hostfile names it
    hostname: str  # what to connect to (ssh config HostName)
    port: int
    user: str
    key_files: tuple[str, ...] = ()  # ssh config IdentityFile
    proxy_command: str | None = None

    @property
    def key_name(self) -> str:
        return host_key_name(self.hostname, self.port)


class SshConfig:
    """``/etc/ssh/ssh_config`` and ``~/.ssh/config``, read once; looked up per host (cached)."""

    def __init__(self, paths: tuple[str, ...] = (USER_SSH_CONFIG, SYSTEM_SSH_CONFIG)) -> None:
        import paramiko

        self._configs = []
        for raw in paths:
            path = Path(raw).expanduser()
            if path.is_file():
                try:
                    config = paramiko.SSHConfig.from_path(str(path))
                except (OSError, ValueError, paramiko.ConfigParseError) as exc:
                    raise LaunchError(f"{path}: cannot read ssh config: {exc}") from None
                # Debian's /etc/ssh/ssh_config sets only SendEnv, HashKnownHosts, GSSAPI...: a
                # lookup (paramiko expands tokens, asks getpwuid) per host for nothing.
                entries = getattr(config, "_config", None)  # paramiko's parsed sections (no public view)
                if entries is None or any(k in e.get("config", {}) for e in entries for k in USED_SSH_CONFIG):
                    self._configs.append(config)
        self._cache: dict[str, dict[str, Any]] = {}

    def lookup(self, host: str) -> dict[str, Any]:
        found = self._cache.get(host)
        if found is None:
            found = {}
            for config in self._configs:  # the user's file first: the first value wins, as in ssh
                for key, value in config.lookup(host).items():
                    found.setdefault(key, value)
            self._cache[host] = found
        return found

    def target(self, host: str, user: str, port: int | None) -> Target:
        cfg = self.lookup(host)
        if "proxyjump" in cfg and cfg["proxyjump"].lower() != "none":
            raise SshRefused(f"{host}: ProxyJump in ssh config is not supported; use "
                             "`ProxyCommand ssh -W %h:%p JUMPHOST` for this host")
        proxy = cfg.get("proxycommand")
        return Target(host, cfg.get("hostname", host), port or int(cfg.get("port", 22)), user,
                      tuple(cfg.get("identityfile", ())), None if proxy in (None, "none") else proxy)


class ClientKeys:
    """The private keys to offer, loaded once per run (an encrypted key is skipped)."""

    def __init__(self, identity: tuple[str, ...], look_for_keys: bool, use_agent: bool) -> None:
        self.identity, self.look_for_keys, self.use_agent = identity, look_for_keys, use_agent
        self._loaded: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.skipped: list[str] = []

    def _key(self, path: str) -> Any:
        import paramiko

        with self._lock:
            if path not in self._loaded:
                key = None
                full = os.path.expanduser(path)
                if os.path.isfile(full):
                    try:
                        key = paramiko.PKey.from_path(full)
                        if os.path.isfile(full + "-cert.pub"):
                            key.load_certificate(full + "-cert.pub")
                    except paramiko.PasswordRequiredException:
                        self.skipped.append(f"{path}: encrypted (use ssh-agent)")
                    except (OSError, ValueError, paramiko.SSHException) as exc:
                        self.skipped.append(f"{path}: {exc}")
                self._loaded[path] = key
            return self._loaded[path]

    def files(self, extra: tuple[str, ...] = ()) -> list[Any]:
        """Explicit keys (--identity, ssh config IdentityFile), in order."""
        return [k for p in dict.fromkeys((*self.identity, *extra)) if (k := self._key(p)) is not None]

    def defaults(self) -> list[Any]:
        return [k for p in DEFAULT_KEY_FILES if (k := self._key(p)) is not None] if self.look_for_keys else []


def authenticate(transport: Any, target: Target, keys: ClientKeys, deadline: float) -> None:
    """Public-key auth like ``SSHClient``: explicit keys, then the agent's, then ~/.ssh/id_*."""
    import paramiko

    tried = 0

    def attempt(key: Any) -> bool:
        nonlocal tried
        if time.monotonic() > deadline:
            raise HandshakeTimeout("authentication", 0)
        tried += 1
        try:
            transport.auth_publickey(target.user, key)
            return True
        except paramiko.BadAuthenticationType as exc:
            raise SshRefused(f"{target.user}@{target.host} does not accept public keys "
                             f"(allowed: {', '.join(exc.allowed_types)})") from None
        except paramiko.AuthenticationException:
            return False

    for key in keys.files(target.key_files):
        if attempt(key):
            return
    if keys.use_agent and os.environ.get("SSH_AUTH_SOCK"):
        agent = paramiko.Agent()  # its own socket per connection: agent requests are not thread-safe
        try:
            for key in agent.get_keys():
                if attempt(key):
                    return
        finally:
            agent.close()
    for key in keys.defaults():
        if attempt(key):
            return
    skipped = f" (skipped {'; '.join(keys.skipped)})" if keys.skipped else ""
    if not tried:
        raise SshRefused(f"no SSH key to offer to {target.host}: --identity KEY, ssh-agent or ~/.ssh/id_*{skipped}")
    raise SshRefused(f"authentication failed for {target.user}@{target.host}: {tried} key(s) refused{skipped}")


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
