"""The network check before the job (pure): its settings, bandwidth maths, the pairs it tries,
and the published figures it judges against.

What runs (``runtime/programs/netcheck_driver.py``): the interfaces of the job's runtime env on
every node, an all-reduce among each node's ranks, one over every rank, and, when one of those
fails, hangs or is slow, node pairs (a ring, then recursive halving) to find the node or link
to blame. The figures are nccl-tests' (``doc/PERFORMANCE.md``): ``algbw = size / time``;
all-reduce ``busbw = algbw * 2 (n - 1) / n``, in GB/s (10^9 bytes).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from glm45_launch.errors import LaunchError

BACKENDS = ("auto", "nccl", "gloo")
DEFAULT_TIMEOUT_S = 120.0
SLOW_FACTOR = 3.0  # a node or pair at least this many times slower than the median is named
MiB = 1 << 20
GiB = 1 << 30
NCCL_SIZES = (8 * MiB, 128 * MiB, GiB)  # up to 1 GiB, as the issue asks (nccl-tests' -e 1G)
GLOO_SIZES = (256 * 1024, 4 * MiB)  # TCP through the kernel: small enough for seconds, large enough to see a slow link
# Socket-interface variables: NCCL's, Gloo's (torch), TensorPipe's (torch RPC) and the orchestrator's.
IFNAME_VARS = ("NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME", "TP_SOCKET_IFNAME", "MLP_SOCKET_IFNAME")


@dataclass(frozen=True)
class Published:
    """A published all-reduce floor: GB/s busbw at ``gpus`` GPUs per node, and where it comes from."""

    node: float | None
    cluster: float | None
    gpus: int
    source: str


# Azure HPC health checks (github.com/Azure/azurehpc-health-checks), the NCCL all-reduce each
# ND v5 VM must reach (8 GPUs, 16 GiB messages): conf/nd96isr_h100_v5.conf `check_nccl_allreduce
# 460.0` and `check_nccl_allreduce_ib_loopback 40.0` (one InfiniBand NIC's worth, through the
# network); conf/nd96isr_h200_v5.conf `check_nccl_allreduce 431.0` (no NCCL figure through IB).
# No figure is published for CPUs or Gloo: there, only the 3x-median rule judges.
PUBLISHED = {
    "H100": Published(460.0, 40.0, 8, "Azure HPC health checks, nd96isr_h100_v5.conf (check_nccl_allreduce 460, "
                                      "check_nccl_allreduce_ib_loopback 40)"),
    "H200": Published(431.0, None, 8, "Azure HPC health checks, nd96isr_h200_v5.conf (check_nccl_allreduce 431)"),
}


@dataclass(frozen=True, kw_only=True)
class NetcheckSettings:
    """How the check runs and judges. ``sizes`` None: :data:`NCCL_SIZES` or :data:`GLOO_SIZES`;
    a threshold None: the published figure for the GPUs found (none on CPU)."""

    backend: str = "auto"
    sizes: tuple[int, ...] | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    min_busbw_node: float | None = None
    min_busbw_cluster: float | None = None
    iters: int = 3
    warmup: int = 1

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise LaunchError(f"--netcheck-backend: {self.backend!r} is not one of {', '.join(BACKENDS)}")
        if self.timeout_s <= 0:
            raise LaunchError(f"--netcheck-timeout: must be > 0, got {self.timeout_s:g}")
        for name, value in (("--min-busbw-node", self.min_busbw_node), ("--min-busbw-cluster", self.min_busbw_cluster)):
            if value is not None and value < 0:
                raise LaunchError(f"{name}: must be >= 0 GB/s, got {value:g}")

    def to_json(self) -> dict[str, object]:
        return {"backend": self.backend, "sizes": list(self.sizes) if self.sizes else None,
                "timeout_s": self.timeout_s, "min_busbw_node": self.min_busbw_node,
                "min_busbw_cluster": self.min_busbw_cluster, "iters": self.iters, "warmup": self.warmup}


_SIZE = re.compile(r"(?i)^\s*(\d+(?:\.\d+)?)\s*([kmg]?)i?b?\s*$")
_UNIT = {"": 1, "k": 1024, "m": MiB, "g": GiB}


def parse_sizes(text: str) -> tuple[int, ...]:
    """``--netcheck-sizes 1M,64M,1G`` as bytes (K/M/G are powers of 1024, as in nccl-tests)."""
    out = []
    for word in text.split(","):
        m = _SIZE.match(word)
        if not m:
            raise LaunchError(f"--netcheck-sizes: {word.strip()!r} is not a size (e.g. 1M,64M,1G)")
        size = int(float(m.group(1)) * _UNIT[m.group(2).lower()])
        if not 4 <= size <= 16 * GiB:
            raise LaunchError(f"--netcheck-sizes: {word.strip()!r} is outside 4 B .. 16G")
        out.append(size - size % 4)  # whole float32 elements
    return tuple(sorted(set(out)))


def human_size(size: int) -> str:
    for unit, factor in (("G", GiB), ("M", MiB), ("K", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"


def algbw_gbps(size_bytes: int, seconds: float) -> float:
    """nccl-tests' algorithm bandwidth: bytes / time, in GB/s (10^9 bytes a second)."""
    return size_bytes / seconds / 1e9 if seconds > 0 else 0.0


def busbw_gbps(size_bytes: int, seconds: float, ranks: int) -> float:
    """nccl-tests' all-reduce bus bandwidth: ``algbw * 2 (n - 1) / n`` (0 for one rank)."""
    return algbw_gbps(size_bytes, seconds) * 2 * (ranks - 1) / ranks if ranks > 0 else 0.0


def published_for(gpu_name: str | None) -> Published | None:
    """The figure for a GPU name as the driver reports it (``NVIDIA H100 80GB HBM3``)."""
    if not gpu_name:
        return None
    return next((p for key, p in PUBLISHED.items() if key in gpu_name.upper()), None)


# -- the pairs ----------------------------------------------------------------------------------


Pair = tuple[str, str]


def ring_pairs(nodes: Sequence[str]) -> list[Pair]:
    """Each node with the next, the last with the first: every node in two pairs (n >= 3)."""
    n = len(nodes)
    if n < 2:
        return []
    if n == 2:
        return [(nodes[0], nodes[1])]
    return [(nodes[i], nodes[(i + 1) % n]) for i in range(n)]


def halving_pairs(nodes: Sequence[str], skip: Sequence[Pair] = ()) -> list[Pair]:
    """Recursive halving's partners: node ``i`` with ``i + d`` for ``d = n/2, n/4, ..., 1`` within
    each block of ``2d``; pairs in ``skip`` (the ring's, either order) are left out."""
    n = len(nodes)
    seen = {frozenset(p) for p in skip}
    out: list[Pair] = []
    d = 1
    while d * 2 < n:
        d *= 2
    while d >= 1:
        for i in range(n):
            j = i + d
            if (i // d) % 2 == 0 and j < n:
                pair = frozenset((nodes[i], nodes[j]))
                if pair not in seen:
                    seen.add(pair)
                    out.append((nodes[i], nodes[j]))
        d //= 2
    return out


def rounds(pairs: Sequence[Pair]) -> list[list[Pair]]:
    """The pairs in rounds that share no node (each round runs at once), greedily, in order."""
    left = list(pairs)
    out: list[list[Pair]] = []
    while left:
        busy: set[str] = set()
        this: list[Pair] = []
        for pair in list(left):
            if not busy & set(pair):
                this.append(pair)
                busy |= set(pair)
                left.remove(pair)
        out.append(this)
    return out


def median(values: Sequence[float]) -> float:
    s = sorted(values)
    if not s:
        return 0.0
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def slow(value: float | None, reference: float) -> bool:
    """At least :data:`SLOW_FACTOR` times slower than ``reference`` (None: it did not finish)."""
    return value is None or (reference > 0 and value * SLOW_FACTOR <= reference)


START_S = 60.0  # connecting to the cluster, starting the ranks: beyond the phases' own timeouts


def netcheck_bound(settings: NetcheckSettings, nodes: int) -> float:
    """The longest the check can take: each phase (probe, per node, cluster, every round of
    pairs) ends within the timeout, plus :data:`START_S`."""
    names = [str(i) for i in range(nodes)]
    ring = ring_pairs(names)
    phases = 3 + len(rounds(ring)) + len(rounds(halving_pairs(names, ring)))
    return round(phases * (settings.timeout_s + 10.0) + START_S, 1)
