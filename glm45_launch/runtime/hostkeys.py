"""Known host keys: every known_hosts file read once per run into one index, checked per host.

OpenSSH's format (sshd(8) "SSH_KNOWN_HOSTS FILE FORMAT"): ``[marker] hostnames keytype base64
[comment]``, where hostnames is a comma-separated list of names, ``[name]:port`` forms,
``*``/``?`` patterns and ``!`` negations, or one hashed ``|1|salt|hmac-sha1`` name. Markers:
``@revoked`` (the key must never be accepted, for any host) and ``@cert-authority`` (host
certificates signed by that CA: paramiko cannot verify host certificates, so a host known only
that way is refused with a clear reason).

Cost: loading is linear in the files' length, once per run. :meth:`KnownHosts.trusted` gives a
connection's client its host's plain and pattern lines (dict lookups); a host named only by
hashed lines reaches :meth:`KnownHosts.check`: a dict lookup by the presented key's blob, then
a match of the few lines holding that key. Only a key not known for the host (unknown or
changed) scans every hashed line (one HMAC-SHA1 each, ~2 us: ~2 ms per host for 1024 hashed
lines), cached per host. :meth:`KnownHosts.record` (``--accept-new-host-keys``) appends under
one lock, never twice for a name and key, and a changed key is never recorded.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from hashlib import sha1
from pathlib import Path

from glm45_launch.errors import LaunchError

REVOKED_MARKER = "@revoked"
CA_MARKER = "@cert-authority"
MAX_KNOWN_HOSTS_BYTES = 64 * 1024 * 1024  # a known_hosts larger than this is not one


class Verdict(Enum):
    OK = "ok"
    UNKNOWN = "unknown"  # no line for this host: record it (accept-new) or refuse
    CHANGED = "changed"  # the host is known with other keys: always refused
    REVOKED = "revoked"  # an @revoked line holds this key: always refused
    CA_ONLY = "ca-only"  # only @cert-authority lines name the host: cannot verify, refused


@dataclass(frozen=True)
class Entry:
    """One key of one known_hosts line."""

    marker: str | None
    names: str  # the hostnames field, as written (lowercased unless hashed)
    keytype: str
    blob: bytes
    where: str  # "FILE:LINE", for messages
    hashed: tuple[bytes, bytes, bytes] | None = None  # a |1| name: HMAC-SHA1 (ipad, opad) and digest

    def matches(self, name: str) -> bool:
        """Does the hostnames field match ``name`` (lowercase, ``[h]:p`` off port 22)?"""
        if self.hashed is not None:
            ipad, opad, digest = self.hashed
            return hmac.compare_digest(sha1(opad + sha1(ipad + name.encode()).digest()).digest(), digest)
        if self.names.startswith("|1|"):
            return False  # a hashed name that did not decode
        hit = False
        for pattern in self.names.split(","):
            negated = pattern.startswith("!")
            if _pattern_match(pattern[1:] if negated else pattern, name):
                if negated:
                    return False  # a matching negation excludes the host, whatever else matches
                hit = True
        return hit


@dataclass(frozen=True)
class Check:
    """The outcome of checking a host's key: the verdict and, for a refusal, what was known."""

    verdict: Verdict
    known: tuple[Entry, ...] = ()

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.OK

    @property
    def known_types(self) -> list[str]:
        return list(dict.fromkeys(e.keytype for e in self.known))


def _hmac_pads(field: str) -> tuple[bytes, bytes, bytes] | None:
    """A ``|1|salt|digest`` name, ready to test: HMAC-SHA1's inner and outer pads of the salt
    (precomputed: a test is then two SHA-1s, ~2 us, not an HMAC set-up, ~4 us) and the digest."""
    try:
        _, _, salt, digest = field.split("|", 3)
        key, want = base64.b64decode(salt), base64.b64decode(digest)
    except (ValueError, binascii.Error):
        return None
    if len(key) > 64 or len(want) != 20:
        return None
    key = int.from_bytes(key.ljust(64, b"\0"), "big")
    return (key ^ _IPAD).to_bytes(64, "big"), (key ^ _OPAD).to_bytes(64, "big"), want


_IPAD = int.from_bytes(b"\x36" * 64, "big")
_OPAD = int.from_bytes(b"\x5c" * 64, "big")
_PATTERN_CACHE: dict[str, re.Pattern[str] | None] = {}


def _pattern_match(pattern: str, name: str) -> bool:
    if "*" not in pattern and "?" not in pattern:
        return pattern == name
    rx = _PATTERN_CACHE.get(pattern)
    if rx is None:
        rx = re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern))
        _PATTERN_CACHE[pattern] = rx
    return rx.fullmatch(name) is not None


def _is_pattern(names: str) -> bool:
    return any(c in names for c in "*?!")


class KnownHosts:
    """Every trusted host key of a run, indexed; thread-safe lookups and recording."""

    def __init__(self, files: Iterable[Path] = (), writable: Path | None = None) -> None:
        self.writable = writable
        self.skipped: list[str] = []  # "FILE:LINE: why" for lines that are not keys
        self._plain: dict[str, list[Entry]] = {}  # one literal name -> its lines
        self._hashed: list[Entry] = []
        self._patterns: list[Entry] = []
        self._by_blob: dict[bytes, list[Entry]] = {}
        self._revoked: dict[bytes, Entry] = {}
        self._for_host: dict[str, tuple[Entry, ...]] = {}  # cache of the slow path
        self._lock = threading.Lock()
        for path in files:
            self.load(path)

    # -- loading ---------------------------------------------------------------------------
    def load(self, path: Path) -> None:
        """Add one file's keys; a missing file is no keys, an unreadable one an error."""
        try:
            with path.open("rb") as fh:
                data = fh.read(MAX_KNOWN_HOSTS_BYTES + 1)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise LaunchError(f"{path}: cannot read known_hosts: {exc.strerror}") from None
        if len(data) > MAX_KNOWN_HOSTS_BYTES:
            raise LaunchError(f"{path}: known_hosts larger than {MAX_KNOWN_HOSTS_BYTES >> 20} MiB")
        for number, raw in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
            self._add_line(raw, f"{path}:{number}")

    def _add_line(self, raw: str, where: str) -> None:
        fields = raw.split()
        if not fields or fields[0].startswith("#"):
            return
        marker = None
        if fields[0].startswith("@"):
            marker, fields = fields[0], fields[1:]
            if marker not in (REVOKED_MARKER, CA_MARKER):
                self.skipped.append(f"{where}: unknown marker {marker[:40]}")
                return
        if len(fields) < 3:
            self.skipped.append(f"{where}: not 'hostnames keytype key'")
            return
        try:
            blob = base64.b64decode(fields[2], validate=True)
        except (binascii.Error, ValueError):
            self.skipped.append(f"{where}: key is not base64")
            return
        if fields[0].startswith("|1|"):  # base64: case matters
            self._add(Entry(marker, fields[0], fields[1], blob, where, _hmac_pads(fields[0])))
        else:
            self._add(Entry(marker, fields[0].lower(), fields[1], blob, where))

    def _add(self, entry: Entry) -> None:
        if entry.marker == REVOKED_MARKER:
            self._revoked.setdefault(entry.blob, entry)
            return
        self._by_blob.setdefault(entry.blob, []).append(entry)
        if entry.names.startswith("|1|"):
            self._hashed.append(entry)
        elif _is_pattern(entry.names):
            self._patterns.append(entry)
        else:
            for name in entry.names.split(","):
                self._plain.setdefault(name, []).append(entry)

    # -- checking ---------------------------------------------------------------------------
    def trusted(self, name: str, every: bool = False) -> list[Entry]:
        """The keys that vouch for ``name``: its plain and pattern lines (cheap), with ``every`` its
        hashed ones too; never a revoked key or a @cert-authority line."""
        name = name.lower()
        entries = self.entries_for(name) if every else (
            *self._plain.get(name, ()), *(e for e in self._patterns if e.matches(name)))
        return [e for e in entries if e.marker is None and e.blob not in self._revoked]

    def check(self, name: str, keytype: str, blob: bytes) -> Check:
        """Is ``blob`` (the key the server presented) this host's key?"""
        name = name.lower()
        if blob in self._revoked:
            return Check(Verdict.REVOKED, (self._revoked[blob],))
        for entry in self._by_blob.get(blob, ()):
            if entry.marker is None and entry.matches(name):
                return Check(Verdict.OK, (entry,))
        known = self.entries_for(name)
        keys = tuple(e for e in known if e.marker is None)
        if keys:
            return Check(Verdict.CHANGED, keys)
        if known:
            return Check(Verdict.CA_ONLY, known)
        return Check(Verdict.UNKNOWN)

    def entries_for(self, name: str) -> tuple[Entry, ...]:
        """Every line naming ``name`` (the slow path: one HMAC per hashed line; cached)."""
        name = name.lower()
        found = self._for_host.get(name)
        if found is None:
            found = (*self._plain.get(name, ()), *(e for e in self._hashed if e.matches(name)),
                     *(e for e in self._patterns if e.matches(name)))
            self._for_host[name] = found
        return found

    # -- recording ---------------------------------------------------------------------------
    def record(self, name: str, keytype: str, blob: bytes) -> Check:
        """Accept-new: append an unknown host's key to the writable file. Returns the check made
        under the lock: OK when recorded (or recorded meanwhile by another thread), otherwise
        the refusal (a host that became known with another key is CHANGED, never recorded)."""
        if self.writable is None:
            raise LaunchError("no writable known_hosts file to record new host keys in")
        name = name.lower()
        with self._lock:
            check = self.check(name, keytype, blob)
            if check.verdict is not Verdict.UNKNOWN:
                return check
            line = f"{name} {keytype} {base64.b64encode(blob).decode()}\n"
            self._append(line)
            entry = Entry(None, name, keytype, blob, f"{self.writable}:new")
            self._add(entry)
            self._for_host.pop(name, None)
            return Check(Verdict.OK, (entry,))

    def _append(self, line: str) -> None:
        """One ``write`` of one whole line with O_APPEND (other processes may append too), after
        a newline if the file does not end with one."""
        path = self.writable
        assert path is not None
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise LaunchError(f"{path}: cannot record a new host key: {exc.strerror}") from None
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = "\n" + line
            os.write(fd, line.encode())
        finally:
            os.close(fd)
