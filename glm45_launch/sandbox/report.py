"""What parity says: the differences between a recorded script and a plan, and notes.

Runs of the same line are said once with their count (``sleep 5`` 3000 times in a loop);
a script that ended early (a usage text, ``X is not set``) shows its own last lines. What
the script chose (its output, argv, paths) reaches the terminal only as printable text: a
control character is shown escaped, never acted on (``printable``). The text is one line per
item (for grep), or wrapped at a terminal's width, each item's lines further in than its first.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from glm45_launch.core.quoting import printable
from glm45_launch.sandbox.recording import Recording


@dataclass
class ParityReport:
    """The differences between a recorded script and a plan (empty: identical)."""

    script: str
    plan_invocations: int
    script_invocations: int
    differences: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    timed_out: bool = False
    side: str = ""  # per-node: "as rank 0 (the head)"...; "": the whole cluster
    output_tail: list[str] = field(default_factory=list)  # the script's last lines when it ended early
    source: str = "recording"  # or "snapshot": upstream's recorded commands of the script

    @property
    def identical(self) -> bool:
        return not self.differences and not self.timed_out

    def render(self, width: int | None = None) -> str:
        """The report as text; ``width``: wrapped at that many columns."""
        side = f" {self.side}" if self.side else ""
        how = "in the snapshot" if self.source == "snapshot" else "recorded"
        out = [f"parity: {self.script}{side} ({self.script_invocations} invocations {how}) vs the plan "
               f"({self.plan_invocations} invocations)"]
        if self.notes:
            out += ["", "Could not interpret / notes"] + [f"  ? {n}" for n in collapse(self.notes)]
        if self.output_tail:
            out += ["", "The script ended early; its last output:"] + [f"  | {line}" for line in self.output_tail]
        if self.differences:
            out += ["", "Differences (what the script does unlike the plan: added = only in the script, "
                    "removed = only in the plan)"] + [f"  {d}" for d in collapse(self.differences)]
            out += ["", f"not identical: {len(self.differences)} difference(s)"]
        elif self.timed_out:
            out += ["", "not identical: the script timed out, the recording may be incomplete"]
        else:
            out += ["", f"identical: {self.plan_invocations} of {self.plan_invocations} invocations match"]
        return "".join(_wrap(printable(line), width) + "\n" for line in out)

    def to_json(self) -> dict[str, Any]:
        out = {"script": self.script, "identical": self.identical, "differences": self.differences,
               "notes": self.notes, "plan_invocations": self.plan_invocations,
               "script_invocations": self.script_invocations, "timed_out": self.timed_out}
        if self.side:
            out["side"] = self.side
        if self.source != "recording":
            out["source"] = self.source
        if self.output_tail:
            out["output_tail"] = self.output_tail
        return out


def _wrap(line: str, width: int | None) -> str:
    """``line`` in lines of ``width`` (None: as it is), continued 4 columns further in (a word
    longer than a line, such as a runtime env, keeps a line of its own)."""
    if width is None or len(line) <= width:
        return line
    indent = " " * (len(line) - len(line.lstrip()) + 4)
    return textwrap.fill(line, width, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False)


def collapse(lines: Sequence[str]) -> list[str]:
    """Runs of the same line as one, with its count: ``only in the script: `sleep 5` (x3000)``."""
    out: list[str] = []
    count = 0
    for i, line in enumerate(lines):
        count += 1
        if i + 1 == len(lines) or lines[i + 1] != line:
            out.append(printable(line if count == 1 else f"{line} (x{count})"))
            count = 0
    return out


def output_tail(rec: Recording, lines: int = 12) -> list[str]:
    """The script's last lines (stdout, then stderr) when it ended early: a non-zero exit or
    nothing recorded (a usage text, ``X is not set``)."""
    if not rec.complete or (rec.returncode == 0 and rec.invocations):
        return []
    out = [ln for ln in rec.stdout.splitlines() if ln.strip()][-lines:]
    out += [f"(stderr) {ln}" for ln in rec.stderr.splitlines() if ln.strip() and not ln.startswith("+")][-lines:]
    return [printable(ln[:200]) for ln in out]


