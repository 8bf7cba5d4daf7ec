"""A program's result line: a marker, then one JSON object (pure).

The programs the launcher runs on a host (the preflight probe, the diagnostics) print their
result as one line that starts with their marker, among whatever the shell and the login print.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any


def last_marked_json(lines: Sequence[str], marker: str) -> dict[str, Any] | None:
    """The JSON object of the last line starting with ``marker``; None when there is none, or
    when that line is not a JSON object (an earlier marked line is never used instead)."""
    for line in reversed(lines):
        if line.startswith(marker):
            try:
                found = json.loads(line[len(marker):])
            except ValueError:
                return None
            return found if isinstance(found, dict) else None
    return None
