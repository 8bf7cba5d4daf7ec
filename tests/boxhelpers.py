"""Helpers shared by the rack-in-a-box tests (test_e2e_up.py, test_preflight.py)."""

from __future__ import annotations

from pathlib import Path

from glm45_launch.testing.rackbox import BASE_FILES, RackBox, make_base_dir

__all__ = ["BASE_FILES", "make_base_dir", "ray_processes"]


def ray_processes(box: RackBox, host: int | None = None) -> list[str]:
    """Ray's daemons and workers in the box (or one host), by command line."""
    found = []
    for pid in box.user_pids(host):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if comm in ("raylet", "gcs_server") or comm.startswith("ray::") or "/site-packages/ray/" in cmd:
            found.append(f"{pid}:{comm}")
    return found


def ray_left(box: RackBox, host: int | None = None, within_s: float = 15.0) -> list[str]:
    """:func:`ray_processes` that outlive ``within_s``: a Ray worker forked in the instant of
    ``ray stop --force`` is missed by its scan and exits by itself once its raylet is gone."""
    import time

    deadline = time.monotonic() + within_s
    while (found := ray_processes(box, host)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return found

