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
