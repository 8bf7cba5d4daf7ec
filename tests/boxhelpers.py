"""Helpers shared by the rack-in-a-box tests (test_e2e_up.py, test_preflight.py)."""

from __future__ import annotations

from pathlib import Path

from glm45_launch.testing.rackbox import RackBox


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


# The checkpoint and data files the default plan refers to, relative to --base-dir.
BASE_FILES = (
    "GLM-4.5-355B-A32B/config.json",
    "GLM-4.5-355B-A32B_torch_dist/latest_checkpointed_iteration.txt",
    "dapo-math-17k/dapo-math-17k.jsonl",
    "rl_data/aime-2024.jsonl",
)


def make_base_dir(root: Path) -> Path:
    """Create the default plan's checkpoint/data files under ``root`` (a --base-dir)."""
    for rel in BASE_FILES:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("1\n" if rel.endswith(".txt") else "{}\n")
    return root
