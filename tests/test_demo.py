"""The README's first command: `glm45-launch demo`, a real launch on a rack-in-a-box."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.rackbox
def test_demo_launches_on_a_small_box(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "glm45_launch", "demo", "--hosts", "2", "--keep-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "smoke entry on the head: 2 node(s), 16 GPUs, 189 train.py arguments" in res.stderr
    assert "up exited 0" in res.stderr.splitlines()[-1]
    assert (tmp_path / "run" / "summary.json").exists()
