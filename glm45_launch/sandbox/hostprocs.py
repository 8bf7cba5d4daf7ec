"""The host's view of a recording's processes: the user it runs as and the sandbox's first
process (killed first, so that bubblewrap reaps it: no zombie is left to init).

A root recorder runs the sandbox as an unprivileged user no process has (so the process
limit holds: the kernel does not count root's processes against it).
"""

from __future__ import annotations

import json
import os
import select
import time
from pathlib import Path

UID_BASE = 2_045_000_000  # the unprivileged users a root recorder runs the sandbox as


def sandbox_uid() -> int | None:
    """An unprivileged user (its group: the same number) that this user namespace maps and no
    process has now, so that a root recorder's process limit holds; None: there is none."""
    used = uids()
    uid_ranges, gid_ranges = _mapped("uid"), _mapped("gid")
    start = os.getpid() % 100_000
    candidates = [UID_BASE + (start + i) % 100_000 for i in range(1000)]
    for first, count in uid_ranges:  # a container that maps fewer users: the top of its ranges
        if count > 1:
            candidates += [first + count - 1 - (start + i) % min(count - 1, 1000) for i in range(1000)]
    return next((c for c in candidates if c != 0 and c not in used and _in(c, uid_ranges) and _in(c, gid_ranges)),
                None)


def _mapped(kind: str) -> list[tuple[int, int]]:
    """The (first, count) id ranges this process's user namespace maps."""
    try:
        lines = Path(f"/proc/self/{kind}_map").read_text().splitlines()
    except OSError:
        return [(0, 2**32 - 1)]
    return [(int(f[0]), int(f[2])) for f in (line.split() for line in lines) if len(f) == 3]


def _in(n: int, ranges: list[tuple[int, int]]) -> bool:
    return any(first <= n < first + count for first, count in ranges)


def uids(live: bool = False) -> dict[int, int]:
    """Real uid -> number of processes (``live``: zombies left out), from /proc."""
    counts: dict[int, int] = {}
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return counts
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status", "rb") as f:
                for line in f:
                    if live and line.startswith(b"State:") and line.split()[1] in (b"Z", b"X"):
                        break
                    if line.startswith(b"Uid:"):
                        uid = int(line.split()[1])
                        counts[uid] = counts.get(uid, 0) + 1
                        break
        except (OSError, ValueError):
            continue
    return counts


def wait_gone(uid: int, wait_s: float = 2.0) -> int:
    """Wait (up to ``wait_s``) until ``uid`` has no live process left (a killed sandbox's PID
    namespace is torn down after its first process is gone); how many are left."""
    deadline = time.monotonic() + wait_s
    while (left := uids(live=True).get(uid, 0)) and time.monotonic() < deadline:
        time.sleep(0.01)
    return left


def sandbox_init(info_fd: int, monitor: int, wait_s: float = 5.0) -> int | None:
    """A pidfd of the sandbox's first process, from bubblewrap's ``--info-fd`` (``monitor``:
    bubblewrap's pid, its parent); None: bubblewrap said nothing (it failed) or it is gone."""
    data = b""
    deadline = time.monotonic() + wait_s
    while b"}" not in data and (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([info_fd], [], [], left)
        chunk = os.read(info_fd, 4096) if ready else b""
        if not chunk:
            break
        data += chunk
    try:
        pid = int(json.loads(data)["child-pid"])
        pidfd = os.pidfd_open(pid)
    except (ValueError, KeyError, TypeError, OSError):
        return None
    try:  # the pidfd holds the process: it is the one bubblewrap started while its parent is
        parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        parent = -1
    if parent != monitor:
        os.close(pidfd)
        return None
    return pidfd
