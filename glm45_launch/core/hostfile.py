"""MPI-style hostfile parsing: strict where the bash recipe is silent.

The bash recipe reads hosts with ``awk '{print $1}'``, so a comment line ``# x``
becomes a host named ``#``, ``slots=`` is ignored and a typo goes unnoticed. This
parser accepts the forms MPI users write and rejects everything else with
``FILE:LINE: reason``:

* ``host``, ``host slots=N``, ``host slots=N max_slots=M`` (also ``max-slots``), ``host:N``
* full-line and trailing ``#`` comments, blank lines, any whitespace
* hosts as IPv4, IPv6 (bare, or ``[addr]:N``) or DNS names
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from glm45_launch.errors import LaunchError, read_user_file
from glm45_launch.recipes.hardware import Hardware

DEFAULT_HOSTFILE = Path("/root/mpi_rack_hostfile")
DEFAULT_GPUS_PER_NODE = 8

# A DNS label: letters, digits, '-' and '_' (common on internal racks), not starting
# or ending with '-'. Anything else (quotes, ';', '$', '`', spaces...) could carry shell
# syntax into a remote command, so it is refused here rather than quoted later.
_LABEL = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")
_SAFE_TOKEN = re.compile(r"^[A-Za-z0-9_.:=\[\]%-]+$")
_KNOWN_KEYS = {"slots", "max_slots", "max-slots"}


@dataclass(frozen=True)
class Host:
    """One hostfile entry."""

    name: str
    slots: int | None = None
    max_slots: int | None = None
    line: int = 0


@dataclass(frozen=True)
class Hostfile:
    """Parsed hosts in file order, with where they came from."""

    path: str
    hosts: tuple[Host, ...] = field(default_factory=tuple)

    @property
    def names(self) -> list[str]:
        return [h.name for h in self.hosts]

    def gpus_per_node(self, override: int | None = None, hardware: Hardware | None = None) -> int:
        """GPUs per node: ``hardware``'s (``override`` and every ``slots=`` must agree), else
        ``override``, else the common ``slots``, else 8 like the recipe."""
        if hardware is not None:
            want = hardware.gpus_per_node
            if override is not None and override != want:
                raise LaunchError(f"--gpus-per-node {override} contradicts --hardware {hardware.name} "
                                  f"({want} GPUs per node)")
            odd = next((h for h in self.hosts if h.slots is not None and h.slots != want), None)
            if odd is not None:
                raise LaunchError(f"{self.path}:{odd.line}: slots={odd.slots} but --hardware {hardware.name} has "
                                  f"{want} GPUs per node")
            return want
        if override is not None:
            if override < 1:
                raise LaunchError(f"--gpus-per-node: must be >= 1, got {override}")
            return override
        values = {h.slots for h in self.hosts}
        if values == {None}:
            return DEFAULT_GPUS_PER_NODE
        if len(values) == 1:
            (only,) = values
            assert only is not None
            return only
        first = self.hosts[0]
        odd = next(h for h in self.hosts if h.slots != first.slots)
        raise LaunchError(
            f"{self.path}:{odd.line}: {_show(odd.slots)} differs from {_show(first.slots)} "
            f"on line {first.line} (GPUs per node must agree); give --gpus-per-node"
        )

    def select(self, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> Hostfile:
        """Keep only ``include`` (if given) and drop ``exclude``, like DeepSpeed's launcher."""
        include = _split_filter(include)
        exclude = _split_filter(exclude)
        if include and exclude:
            raise LaunchError("--include and --exclude are mutually exclusive")
        known = set(self.names)
        for flag, names in (("--include", include), ("--exclude", exclude)):
            for name in names:
                if name not in known:
                    raise LaunchError(f"{flag}: host {name!r} is not in {self.path}")
        hosts = self.hosts
        if include:
            hosts = tuple(h for h in hosts if h.name in include)
        if exclude:
            hosts = tuple(h for h in hosts if h.name not in exclude)
        if not hosts:
            raise LaunchError(f"{self.path}: no hosts left after --include/--exclude")
        return Hostfile(self.path, hosts)


def _show(slots: int | None) -> str:
    return "no slots=" if slots is None else f"slots={slots}"


def _split_filter(values: Iterable[str]) -> list[str]:
    out: list[str] = []
    for value in values:
        out.extend(p for p in re.split(r"[,@\s]+", value) if p)
    return out


def valid_hostname(name: str) -> bool:
    """True for an IPv4/IPv6 address or a DNS name safe to put in a command."""
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        pass
    if len(name) > 253:
        return False
    labels = name.removesuffix(".").split(".")
    # An all-numeric name is a mistyped address (10.0.0.256), not a DNS name.
    if all(label.isdigit() for label in labels):
        return False
    return all(_LABEL.match(label) for label in labels)


def numeric_ipv4(name: str) -> str | None:
    """The IPv4 address a numeric name means to the resolver (``inet_aton``: ``0x0a000001``,
    ``0x0a.0.0.1``, ``10.1``, ``012.0.0.1``), dotted; None for anything else (pure)."""
    parts = name.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    nums = []
    for part in parts:
        m = re.fullmatch(r"0[xX]([0-9a-fA-F]*)|(0[0-7]*)|([1-9][0-9]*)", part)
        if not m:
            return None
        nums.append(int(m.group(1) or "0", 16) if m.group(1) is not None else
                    int(m.group(2), 8) if m.group(2) is not None else int(m.group(3)))
    *head, last = nums
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(nums)):
        return None
    value = sum(n << (8 * (3 - i)) for i, n in enumerate(head)) + last
    return str(ipaddress.IPv4Address(value))


def host_key(name: str) -> str:
    """One spelling per host: DNS names are case-insensitive and may end in a root dot
    (NODE1, node1., node1), IPv6 has many forms (FE80:0::1, fe80::1), IPv4 has numeric ones
    (0x0a000001 is 10.0.0.1). Two spellings of one host would start Ray twice on it, or run a
    worker's cleanup on the head."""
    try:
        return ipaddress.ip_address(name.split("%")[0]).compressed
    except ValueError:
        pass
    return numeric_ipv4(name) or name.lower().removesuffix(".")


def _is_loopback(name: str) -> bool:
    key = host_key(name)
    if key in ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback") or key.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(key).is_loopback
    except ValueError:
        return False


def check_workers(hostfile: Hostfile, head: str) -> None:
    """Refuse a host that is the head written another way, or a loopback address, when it
    would join as a worker (pure; the launcher checks DNS names that resolve so on the head)."""
    head_line = next((h.line for h in hostfile.hosts if h.name == head), None)
    for host in hostfile.hosts:
        if host.name == head:
            continue
        where = f"{hostfile.path}:{host.line}"
        numeric = numeric_ipv4(host.name)
        if host_key(host.name) == host_key(head) and numeric is not None and numeric != host.name:
            # A resolver spelling (0x0a000001) hides the head; case or IPv6 spellings name it plainly.
            named = f"line {head_line}" if head_line else "--head / MLP_WORKER_0_HOST"
            raise LaunchError(f"{where}: {host.name} is the head {head} ({named}) written another way: it would "
                              f"join as a worker and its cleanup would kill the head; write it as {head}")
        if _is_loopback(host.name) and not _is_loopback(head):
            raise LaunchError(f"{where}: {host.name} is a loopback address: as a worker it would be the head "
                              f"({head}) itself; name every node by its address on the cluster network")


def cluster_workers(hostfile: Hostfile, head: str) -> tuple[str, ...]:
    """The hosts that join the head as workers, in hostfile order: every host but the head (in
    any spelling), each checked first (:func:`check_workers`)."""
    check_workers(hostfile, head)
    return tuple(h for h in hostfile.names if host_key(h) != host_key(head))


def _parse_int(where: str, key: str, value: str) -> int:
    if not re.fullmatch(r"[0-9]{1,6}", value) or int(value) < 1:
        raise LaunchError(f"{where}: malformed {key} value {value!r} (want a whole number >= 1)")
    return int(value)


def _split_host_token(where: str, token: str) -> tuple[str, int | None]:
    """``host``, ``host:N``, bare IPv6, or ``[v6]:N`` -> (host, slots)."""
    if token.startswith("["):
        m = re.fullmatch(r"\[([^\]]+)\](?::(.*))?", token)
        if not m:
            raise LaunchError(f"{where}: malformed host {token!r}")
        host, slots = m.group(1), m.group(2)
        return host, None if slots is None else _parse_int(where, "slots", slots)
    if token.count(":") == 1:
        host, slots = token.split(":")
        return host, _parse_int(where, "slots", slots)
    return token, None


def parse_hostfile_text(text: str, path: str = "<hostfile>") -> Hostfile:
    """Parse hostfile ``text``; ``path`` only names it in messages."""
    hosts: list[Host] = []
    seen: dict[str, int] = {}
    # Lines end at "\n" only (a trailing "\r" is whitespace), like awk, sed and editors:
    # str.splitlines() would also break at \f, \v, U+2028... and turn the rest of a
    # comment line into a host.
    for lineno, raw in enumerate(text.split("\n"), start=1):
        where = f"{path}:{lineno}"
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        tokens = line.split()
        for token in tokens:
            if not _SAFE_TOKEN.match(token):
                raise LaunchError(f"{where}: token {token!r} has shell metacharacters or spaces")
        name, slots = _split_host_token(where, tokens[0])
        if not valid_hostname(name):
            raise LaunchError(f"{where}: {name!r} is not an IPv4/IPv6 address or a DNS name")
        max_slots: int | None = None
        for token in tokens[1:]:
            if "=" not in token:
                raise LaunchError(f"{where}: unexpected token {token!r} (want key=value)")
            key, value = token.split("=", 1)
            if key not in _KNOWN_KEYS:
                raise LaunchError(f"{where}: unknown field {key!r} (known: slots, max_slots)")
            number = _parse_int(where, key, value)
            if key == "slots":
                if slots is not None:
                    raise LaunchError(f"{where}: slots given twice")
                slots = number
            else:
                if max_slots is not None:
                    raise LaunchError(f"{where}: max_slots given twice")
                max_slots = number
        if max_slots is not None and slots is not None and max_slots < slots:
            raise LaunchError(f"{where}: max_slots={max_slots} is less than slots={slots}")
        key = host_key(name)
        if key in seen:
            raise LaunchError(f"{where}: duplicate host {name!r} (first on line {seen[key]})")
        seen[key] = lineno
        hosts.append(Host(name, slots, max_slots, lineno))
    if not hosts:
        raise LaunchError(f"{path}: hostfile has no hosts")
    return Hostfile(path, tuple(hosts))


def load_hostfile(path: str | Path = DEFAULT_HOSTFILE) -> Hostfile:
    """Read and parse ``path``; every problem is a ``LaunchError`` naming the file."""
    p = Path(path)
    data = read_user_file(p, "hostfile", " (give --hostfile)")
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")  # an editor's BOM is not a host
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise LaunchError(f"{p}:{line}: not UTF-8 text (byte {exc.start})") from None
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise LaunchError(f"{p}:{line}: binary file (NUL byte), not a hostfile")
    return parse_hostfile_text(text, str(p))
