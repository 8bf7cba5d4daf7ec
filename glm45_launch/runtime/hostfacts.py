"""Facts about this machine: its addresses, what holds a port, which processes run.

:class:`LocalHostFacts` is the real :class:`~.interfaces.HostFacts`; the functions are
usable on their own.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import Any


def port_in_use(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def resolve(host: str) -> set[str]:
    """``host`` and the addresses it resolves to (a hostfile may name hosts, Ray reports IPs)."""
    out = {host}
    try:
        ipaddress.ip_address(host)
        return out
    except ValueError:
        pass
    try:
        out |= {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        pass
    return out


def local_addresses() -> set[str]:
    """Every address of this machine (this network namespace), from /proc: no tools needed."""
    out: set[str] = set()
    try:
        # IPv4: the kernel's local routing table marks each own address "/32 host LOCAL".
        lines = Path("/proc/net/fib_trie").read_text().splitlines()
        out |= {prev.split()[-1] for prev, line in zip(lines, lines[1:], strict=False) if "/32 host LOCAL" in line}
    except OSError:
        pass
    try:
        rows = Path("/proc/net/if_inet6").read_text().splitlines()
        out |= {str(ipaddress.IPv6Address(bytes.fromhex(row.split()[0]))) for row in rows if row.strip()}
    except OSError:
        pass
    return out


def is_local_address(host: str, local: set[str] | None = None) -> bool:
    """True when ``host`` is an address of this machine.

    Not a bind() test: with net.ipv4.ip_nonlocal_bind=1 (common beside keepalived) any
    address binds. The interface list is the truth.
    """
    addrs = resolve(host)
    if any(ipaddress.ip_address(a).is_loopback for a in addrs if _is_ip(a)):
        return True
    return bool(addrs & (local_addresses() if local is None else local))


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


class LocalHostFacts:
    """The real :class:`~.interfaces.HostFacts`: this machine, read from /proc and sockets."""

    def __init__(self) -> None:
        self._addresses: set[str] | None = None  # read once: asked for every host of a fan-out

    def is_local_address(self, host: str) -> bool:
        if self._addresses is None:
            self._addresses = local_addresses()
        return is_local_address(host, self._addresses)

    def port_in_use(self, host: str, port: int, timeout_s: float = 1.0) -> bool:
        return port_in_use(host, port, timeout_s)

    def port_holders(self, port: int) -> dict[str, Any]:
        """``portowner.port_report``: the listeners of ``port`` and the processes holding them."""
        from glm45_launch.checks.portowner import port_report

        return port_report(port)

    def resolve(self, host: str) -> set[str]:
        return resolve(host)

    def ray_processes_left(self) -> bool:
        """True while a Ray daemon or sglang process is alive here (the cleanup's settle wait)."""
        from glm45_launch.runtime.procs import any_running

        return any_running("raylet|gcs_server|sglang")


def nvlink_links(timeout_s: float = 10.0) -> list[str] | None:
    """The NVLink labels (``NV18``...) ``nvidia-smi topo -m`` shows on this machine ([]: none, so no
    NVLink), or None when there is no working ``nvidia-smi`` (upstream's probe counts ``NV<n>`` too)."""
    import shutil
    import subprocess

    from glm45_launch.checks.host_checks import nvlink_labels

    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        proc = subprocess.run([smi, "topo", "-m"], capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return nvlink_labels(proc.stdout) if proc.returncode == 0 else None
