"""Programs the checks run on the hosts, kept as files so linters check them."""

from __future__ import annotations

from functools import cache
from pathlib import Path

HERE = Path(__file__).resolve().parent


@cache
def probe_program() -> str:
    """The preflight probe as one program: ``portowner.py`` (its port parsers), then ``probe.py``."""
    portowner = HERE.parent / "portowner.py"
    return portowner.read_text(encoding="utf-8") + "\n" + (HERE / "probe.py").read_text(encoding="utf-8")


@cache
def imports_program() -> str:
    """What the probe runs with the job's runtime env: ``imports.py`` (import each module, say what failed)."""
    return (HERE / "imports.py").read_text(encoding="utf-8")
