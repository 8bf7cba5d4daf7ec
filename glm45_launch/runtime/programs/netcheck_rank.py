"""One rank of the network check: a Ray actor pinned to its node (one per GPU with NCCL, one per
node with Gloo), in the job's runtime env. Only the standard library and torch: the driver ships
this module to the nodes by value, so they need no glm45_launch.

``probe``: the node's GPUs and its socket-interface variables as Ray expanded them here (each
names an interface that exists, is up, has an address and reaches the head). ``allreduce``: one
process group (its own store prefix), timed all-reduces at each size, the group torn down.
"""

from __future__ import annotations

import datetime
import fcntl
import os
import socket
import struct
import time
from pathlib import Path
from typing import Any

_SIOCGIFADDR = 0x8915
_IFF_UP = 0x1
_NEEDS_NAME = ("GLOO_SOCKET_IFNAME", "TP_SOCKET_IFNAME", "MLP_SOCKET_IFNAME")  # exact names, no ^/= syntax


def _ipv4(name: str) -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            packed = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, struct.pack("256s", name[:15].encode()))
        except OSError:
            return None
    return socket.inet_ntoa(packed[20:24])


def _is_up(name: str) -> bool:
    try:
        return bool(int((Path("/sys/class/net") / name / "flags").read_text(), 16) & _IFF_UP)
    except (OSError, ValueError):
        return False


def _reaches(addr: str, head: str, port: int, timeout_s: float) -> str | None:
    """None when a TCP connection from ``addr`` reaches the head's check port, else why not."""
    try:
        with socket.create_connection((head, port), timeout=timeout_s, source_address=(addr, 0)):
            return None
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def _gpus() -> tuple[int, str | None]:
    """The node's NVIDIA GPUs (the driver's /proc entries: Ray's CUDA_VISIBLE_DEVICES aside)."""
    root = Path("/proc/driver/nvidia/gpus")
    try:
        found = sorted(root.iterdir())
    except OSError:
        return 0, None
    name = None
    try:
        info = (found[0] / "information").read_text(errors="replace").splitlines() if found else []
    except OSError:
        info = []
    for line in info:
        if line.startswith("Model:"):
            name = line.split(":", 1)[1].strip()
    return len(found), name


def check_interface_var(var: str, value: str, head: str, port: int, timeout_s: float = 5.0) -> list[str]:
    """What is wrong with one socket-interface variable here (nothing: [])."""
    if value == "":
        return [f"{var} is empty here (the ${{VAR}} it names is unset on this node)"]
    names = [n.strip() for n in value.split(",") if n.strip()]
    if var in _NEEDS_NAME and any(n[0] in "^=" for n in names):
        return [f"{var}={value}: '{names[0][0]}' is NCCL's syntax; {var.split('_')[0].title()} needs interface names"]
    have = [n for _, n in socket.if_nameindex()]
    if names and names[0].startswith("^"):  # NCCL: use any interface but these
        return []
    problems = []
    for name in names:
        exact = name.startswith("=") or var in _NEEDS_NAME
        name = name.lstrip("=")
        matches = [n for n in have if n == name or (not exact and n.startswith(name))]
        if not matches:
            problems.append(f"{var}={value}: no interface {name} here (have {', '.join(have)})")
            continue
        for iface in matches[:1] if not exact else matches:
            addr = _ipv4(iface)
            if not _is_up(iface):
                problems.append(f"{var}={value}: interface {iface} is down")
            elif addr is None:
                problems.append(f"{var}={value}: interface {iface} has no IPv4 address")
            elif (why := _reaches(addr, head, port, timeout_s)) is not None:
                problems.append(f"{var}={value}: {iface} ({addr}) does not reach the head {head}:{port}: {why}")
    return problems


class Rank:
    """One rank (a Ray actor): ``host`` is the plan's name of its node."""

    def __init__(self, host: str) -> None:
        self.host = host

    def probe(self, variables: list[str], head: str, port: int) -> dict[str, Any]:
        gpus, name = _gpus()
        values = {v: os.environ.get(v) for v in variables}
        problems = [p for v, value in values.items() if value is not None
                    for p in check_interface_var(v, value, head, port)]
        return {"host": self.host, "gpus": gpus, "gpu_name": name, "ifnames": values, "problems": problems,
                "pid": os.getpid()}

    def allreduce(self, group: str, rank: int, size: int, store: tuple[str, int], backend: str,
                  sizes: list[int], iters: int, warmup: int, timeout_s: float) -> dict[str, Any]:
        """Timed all-reduces of float32 ones at each size; seconds per all-reduce, by size.
        Raises (one line) when the result is wrong or a collective fails."""
        import torch
        import torch.distributed as dist

        timeout = datetime.timedelta(seconds=timeout_s)
        client = dist.TCPStore(store[0], store[1], is_master=False, timeout=timeout)
        prefixed = dist.PrefixStore(f"{group}/", client)
        if backend == "nccl":
            torch.cuda.set_device(0)  # Ray gave this actor one GPU: CUDA_VISIBLE_DEVICES holds it
            opts = dist.ProcessGroupNCCL.Options()
            opts._timeout = timeout
            pg: Any = dist.ProcessGroupNCCL(prefixed, rank, size, opts)
            device = torch.device("cuda", 0)
            sync = torch.cuda.synchronize
        else:
            pg = dist.ProcessGroupGloo(prefixed, rank, size, timeout)
            device = torch.device("cpu")

            def sync() -> None:
                return None
        times: dict[int, float] = {}
        try:
            for nbytes in sizes:
                t = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
                pg.allreduce([t]).wait()
                sync()
                if float(t[0].item()) != float(size) or float(t[-1].item()) != float(size):
                    raise RuntimeError(f"wrong all-reduce result: {t[0].item()} where {size} was due")
                for _ in range(max(0, warmup - 1)):
                    pg.allreduce([t]).wait()
                sync()
                start = time.perf_counter()
                for _ in range(iters):
                    pg.allreduce([t]).wait()
                sync()
                times[nbytes] = (time.perf_counter() - start) / max(1, iters)
                del t
        finally:
            try:
                if backend == "nccl":
                    pg.shutdown()
            except Exception:  # noqa: BLE001 - tearing down after a failure: the failure is the news
                pass
            del pg
        return {"host": self.host, "rank": rank, "times": times}
