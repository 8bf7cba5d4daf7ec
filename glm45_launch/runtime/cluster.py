"""Questions asked of the Ray cluster: who joined, is a port taken, how did the job end.

Uses Ray's own state API and job SDK through the head's dashboard (``ray[default]``).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


def dashboard_url(port: int | str) -> str:
    """The job server as the recipe addresses it: on the head, through loopback."""
    return f"http://127.0.0.1:{port}"


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


def is_local_address(host: str) -> bool:
    """True when ``host`` is an address of this machine.

    Not a bind() test: with net.ipv4.ip_nonlocal_bind=1 (common beside keepalived) any
    address binds. The interface list is the truth.
    """
    addrs = resolve(host)
    if any(ipaddress.ip_address(a).is_loopback for a in addrs if _is_ip(a)):
        return True
    return bool(addrs & local_addresses())


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


@dataclass(frozen=True)
class NodeInfo:
    ip: str
    alive: bool
    gpus: float
    is_head: bool


def alive_nodes(dashboard: str, timeout_s: int = 5) -> list[NodeInfo]:
    """Nodes the cluster knows, from Ray's state API (raises while the dashboard starts)."""
    from ray.util.state import list_nodes

    nodes = list_nodes(address=dashboard, timeout=timeout_s, limit=10000, raise_on_missing_output=False)
    return [
        NodeInfo(ip=n.node_ip, alive=n.state == "ALIVE", gpus=float((n.resources_total or {}).get("GPU", 0)),
                 is_head=bool(n.is_head_node))
        for n in nodes
    ]


def missing_hosts(expected: Iterable[str], nodes: Iterable[NodeInfo]) -> list[str]:
    """Expected hosts with no ALIVE node (names compared with what they resolve to)."""
    alive = {n.ip for n in nodes if n.alive}
    return [h for h in expected if not (resolve(h) & alive)]


def job_status(dashboard: str, job_id: str) -> str:
    """SUCCEEDED / FAILED / STOPPED / RUNNING / PENDING, from the job SDK."""
    from ray.job_submission import JobSubmissionClient

    return str(JobSubmissionClient(dashboard).get_job_status(job_id).value)


def list_jobs(dashboard: str) -> list[tuple[str, str, str]]:
    """(submission id, status, entrypoint) of every job the cluster knows."""
    from ray.job_submission import JobSubmissionClient

    jobs = JobSubmissionClient(dashboard).list_jobs()
    return [(j.submission_id or j.job_id or "?", str(j.status.value), j.entrypoint) for j in jobs]
