"""Upstream's recorded launch commands as a recording: ``parity --snapshot FILE``.

radixark/miles keeps what every launch script runs under ``tests/snapshots/launch_scripts/``
and regenerates it when a script changes, so a plan can be checked against any upstream
revision without running anything. Two formats:

- ``py/``: ``### N`` blocks, each one shell command line a ``scripts/run_*.py`` launcher runs
  (its `` --`` broken onto lines of their own; ``[multi_node ...]`` in front: run on every node,
  through Ray), then ``### pseudo file N`` blocks (files it generates, not compared);
- ``sh/``: ``# returncode: N``, then ``### N`` blocks of one JSON string per argv word (what a
  ``.sh`` launcher ran under upstream's shims).

A py line is read the way bash runs it, for what launchers write: ``;``, ``&&``, ``||`` (a
recorded command succeeds), ``&``, ``|``, redirections, ``export K=V``, ``K=V cmd``, and the worker
fan-out ``for V in $(awk '{print $1}' HOSTFILE); do if [ "$V" = X ]; then continue; fi; ...; done``
over the plan's hostfile. What a recording would not hold either is left out: shell builtins and
the text tools the recorder lends (awk, grep, wc...). ``<REPO_ROOT>`` becomes the plan's workdir.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Sequence
from pathlib import Path

from glm45_launch.core.plan import Plan
from glm45_launch.core.steps import SubmitStep
from glm45_launch.errors import LaunchError
from glm45_launch.sandbox.parity import ScriptRun, compare, env_differences
from glm45_launch.sandbox.record import Origin, Recording
from glm45_launch.sandbox.report import ParityReport
from glm45_launch.sandbox.rootdir import SAFE_TOOLS

_BLOCK = re.compile(r"^### (\d+|pseudo file \d+)$", re.M)
_MULTI_NODE = re.compile(r"\[multi_node [^\]]*\] ")
_ASSIGN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_OPS = re.compile(r"&&|\|\||>>|[;&|()<>]")
_BUILTINS = {"true", ":", "echo", "wait", "cd", "set", "continue", "break", "exit"}
_ENDS = {";", "&&", "||", "&", "|", "\n"}


def load_snapshot(path: Path | str, *, hosts: Sequence[str], repo_root: str) -> ScriptRun:
    """``path`` (an upstream snapshot, either format) as what a recording of its script holds,
    for a cluster of ``hosts`` (the hostfile's, in order)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LaunchError(f"{path}: {getattr(exc, 'strerror', None) or exc}") from None
    text = text.replace("<REPO_ROOT>", repo_root)
    parts = _BLOCK.split(text)  # [head, name, body, name, body...]
    if len(parts) < 3:
        raise LaunchError(f"{path}: not a launch-script snapshot (no '### 0' block)")
    head = parts[0].strip()
    status = re.fullmatch(r"# returncode: (-?\d+)", head)
    if head and not status:
        raise LaunchError(f"{path}: not a launch-script snapshot (it starts with {head.splitlines()[0][:60]!r})")
    shell = _Shell(list(hosts))
    line = text.count("\n", 0, len(parts[0])) + 1
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name.startswith("pseudo"):
            shell.notes.append(f"### {name}: a file the launcher generates (not compared)")
        elif status:  # sh/: the argv, one JSON string per line
            shell.record(_json_words(path, name, body), {}, line)
        else:
            command = re.sub(r"\n  (?=--)", " ", body.strip())
            if _MULTI_NODE.match(command):
                command = _MULTI_NODE.sub("", command, count=1)
                shell.notes.append(f"### {name} runs on every node (upstream: through Ray), compared as one command")
            shell.run(_tokens(path, name, command), {}, {}, line)
        line += body.count("\n")
    rec = Recording(shell.argvs, int(status.group(1)) if status else 0, "", "", origins=shell.origins)
    if status:  # the argv alone: what the script exported is not known
        shell.notes.append("an sh/ snapshot holds no environment: the exports are not compared")
        return ScriptRun(rec, {}, None, None, shell.notes)
    return ScriptRun(rec, {}, shell.env_at("ray", "start", "--head"), shell.env_at("ray", "job", "submit"),
                     shell.notes)


def compare_snapshot(plan: Plan, run: ScriptRun, name: str) -> ParityReport:
    """``compare`` (the script: the one the snapshot recorded), and the submit's exports."""
    report = compare(plan, run, name)
    report.source = "snapshot"
    submit = plan.step(SubmitStep.kind)
    if submit is not None and run.submit_env is not None:
        report.differences += env_differences("submit env (at `ray job submit`):", dict(submit.env), run.submit_env)
    return report


def _json_words(path: Path | str, name: str, body: str) -> list[str]:
    try:
        words = [json.loads(line) for line in body.splitlines() if line.strip()]
    except ValueError as exc:
        raise LaunchError(f"{path}: ### {name}: not one JSON string per line ({exc})") from None
    if not all(isinstance(w, str) for w in words):
        raise LaunchError(f"{path}: ### {name}: not one JSON string per line")
    return words


def _tokens(path: Path | str, name: str, command: str) -> list[str]:
    """Shell words and operators (``&&``, ``;``, ``>``...) of ``command``, quotes removed."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        words = list(lexer)
    except ValueError as exc:
        raise LaunchError(f"{path}: ### {name}: {exc}") from None
    return [op for w in words for op in (_OPS.findall(w) if w and not w.strip("();<>|&") else [w])]


class _Shell:
    """The commands a snapshot's lines run, as a recording would hold them."""

    def __init__(self, hosts: list[str]) -> None:
        self.hosts = hosts
        self.argvs: list[list[str]] = []
        self.origins: list[Origin | None] = []
        self.exports: list[dict[str, str]] = []
        self.notes: list[str] = []

    def env_at(self, *prefix: str) -> dict[str, str] | None:
        """The exports in effect at the first command starting with ``prefix``."""
        return next((e for a, e in zip(self.argvs, self.exports, strict=True) if a[: len(prefix)] == list(prefix)),
                    None)

    def record(self, argv: list[str], exports: dict[str, str], line: int, own: Sequence[str] = ()) -> None:
        if argv and argv[0] in SAFE_TOOLS:
            self.notes.append(f"`{shlex.join(argv)[:100]}`: a text tool the recorder lends (not compared)")
        elif argv:
            self.argvs.append(argv)
            self.origins.append(Origin("snapshot", line, 0, tuple(own)))
            self.exports.append(dict(exports))

    def run(self, toks: list[str], exports: dict[str, str], values: dict[str, str], line: int) -> bool:
        """Run ``toks``; False: a ``continue`` ended it."""
        i, skip = 0, False
        while i < len(toks):
            end, after = _extent(toks, i)
            words = toks[i:end]
            if not skip and words:
                if words[0] == "for" and len(words) > 3 and words[2] == "in":
                    body = words[words.index("do") + 1 : -1]
                    for value in self._items(words[3 : words.index("do")], values):
                        self.run(body, exports, {**values, words[1]: value}, line)
                elif words[0] == "if":
                    then = words.index("then")
                    cond = [_subst(w, values) for w in words[1:then] if w != ";"]
                    branch, rest = _branches(words[then + 1 : -1])
                    if not self.run(branch if self._test(cond, exports, line) else rest, exports, values, line):
                        return False
                elif words[0] == "continue":
                    return False
                else:
                    self._simple([_subst(w, values) for w in words], exports, line)
            skip = after == "||"  # what it guards succeeded: a recorded command exits 0
            i = end + 1
        return True

    def _items(self, words: list[str], values: dict[str, str]) -> list[str]:
        words = [w for w in words if w != ";"]
        if words[:3] == ["$", "(", "awk"] and "{print $1}" in words:
            return list(self.hosts)  # $(awk '{print $1}' HOSTFILE): the hostfile's hosts
        return [_subst(w, values) for w in words]

    def _test(self, cond: list[str], exports: dict[str, str], line: int) -> bool:
        if cond[:1] == ["["] and cond[-1:] == ["]"] and len(cond) == 5 and cond[2] in ("=", "==", "!="):
            return (cond[1] == cond[3]) == (cond[2] != "!=")
        if cond[:1] in (["["], ["test"]):
            return False  # a file test: nothing exists where the snapshot was made
        self._simple(cond, exports, line)
        return True

    def _simple(self, words: list[str], exports: dict[str, str], line: int) -> None:
        argv: list[str] = []
        it = iter(words)
        for word in it:
            if word in (">", ">>", "<"):
                next(it, None)  # the redirection's target
                if argv and argv[-1].isdigit():
                    argv.pop()  # its file descriptor (2>/dev/null)
            elif word not in ("(", ")"):
                argv.append(word)
        own = []
        while argv and _ASSIGN.match(argv[0]):
            own.append(argv.pop(0))
        if argv[:1] == ["export"]:
            exports.update(w.split("=", 1) for w in argv[1:] if "=" in w)  # type: ignore[arg-type]
        elif argv and argv[0] not in _BUILTINS:
            self.record(argv, {**exports, **dict(w.split("=", 1) for w in own)}, line, own)


def _extent(toks: list[str], i: int) -> tuple[int, str]:
    """Where the command at ``i`` ends (a ``for ... done`` or ``if ... fi`` whole) and the operator there."""
    depth = 0
    for j in range(i, len(toks)):
        if toks[j] in ("for", "if", "while", "until") and (j == i or toks[j - 1] in _ENDS | {"do", "then", "else"}):
            depth += 1
        elif toks[j] in ("done", "fi") and toks[j - 1] in _ENDS:
            depth -= 1
        elif toks[j] in _ENDS and depth == 0:
            return j, toks[j]
    return len(toks), ""


def _branches(words: list[str]) -> tuple[list[str], list[str]]:
    """An if's then-branch and else-branch."""
    if "else" in words:
        at = words.index("else")
        return words[:at], words[at + 1 :]
    return words, []


def _subst(word: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        word = re.sub(rf"\$(\{{{name}\}}|{name}(?![A-Za-z0-9_]))", lambda _m, v=value: v, word)
    return word
