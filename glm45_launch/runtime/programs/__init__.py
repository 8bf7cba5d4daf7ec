"""Programs the runtime runs on the hosts, kept as files so linters check them."""

from __future__ import annotations

from functools import cache
from pathlib import Path

HERE = Path(__file__).resolve().parent


@cache
def diagnose_program() -> str:
    """The diagnostics program (``diagnose.py``): run as ``python3 -c PROGRAM CONFIG``."""
    return (HERE / "diagnose.py").read_text(encoding="utf-8")
