"""Processes on this machine, read from /proc: pgrep's matching, ancestors, kill commands.

The cleanup's ``pkill -9 python`` must never kill the launcher: the executor finds the
matches itself (exactly as procps ``pgrep`` selects them) and signals all but the spared
PIDs. No ``pgrep`` command runs; every command that runs is a step of the plan.
"""

from __future__ import annotations

import os
import pwd
import re
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from glm45_launch.errors import LaunchError

KILLERS = ("pkill", "killall")
COMM_LEN = 15  # the kernel's TASK_COMM_LEN - 1: what pgrep matches without -f


def ancestors(pid: int | None = None, proc: str = "/proc") -> set[int]:
    """``pid`` (default: this process) and every ancestor up to init, from /proc."""
    pid = os.getpid() if pid is None else pid
    seen: set[int] = set()
    while pid > 0 and pid not in seen:
        seen.add(pid)
        try:
            stat = Path(f"{proc}/{pid}/stat").read_text()
        except OSError:
            break
        # The command name is in parentheses and may hold spaces: split after the last ')'.
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return seen


@dataclass(frozen=True)
class Query:
    """pgrep's selection: an extended regex against the name (or, with ``full``, the command
    line), optionally whole-word (``exact``), case-insensitive, by user or parent."""

    pattern: str
    full: bool = False  # -f
    exact: bool = False  # -x
    ignore_case: bool = False  # -i
    uids: frozenset[int] = frozenset()  # -u / -U
    parents: frozenset[int] = frozenset()  # -P

    def matches(self, comm: str, cmdline: str, uid: int, ppid: int) -> bool:
        text = (cmdline or comm) if self.full else comm[:COMM_LEN]
        flags = re.IGNORECASE if self.ignore_case else 0
        hit = re.fullmatch(self.pattern, text, flags) if self.exact else re.search(self.pattern, text, flags)
        return (bool(hit) and (not self.uids or uid in self.uids)
                and (not self.parents or ppid in self.parents))


def _uid(name: str) -> int:
    if name.isdigit():
        return int(name)
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        raise LaunchError(f"cleanup: unknown user {name!r} in a kill command") from None


def parse_query(args: Sequence[str]) -> Query:
    """A pgrep argument list (``["-f", "ray::"]``) as a :class:`Query`; options the
    launcher does not implement are refused by name (never guessed)."""
    opts: dict[str, object] = {}
    pattern: str | None = None
    words = list(args)
    i = 0
    while i < len(words):
        word = words[i]
        if word in ("-f", "--full"):
            opts["full"] = True
        elif word in ("-x", "--exact"):
            opts["exact"] = True
        elif word in ("-i", "--ignore-case"):
            opts["ignore_case"] = True
        elif word in ("-u", "-U", "--euid", "--uid", "-P", "--parent") and i + 1 < len(words):
            values = frozenset(words[i + 1].split(","))
            if word in ("-P", "--parent"):
                opts["parents"] = frozenset(int(v) for v in values if v.isdigit())
            else:
                opts["uids"] = frozenset(_uid(v) for v in values)
            i += 1
        elif word.startswith("-") and pattern is None:
            raise LaunchError(f"cleanup: `pkill {' '.join(args)}`: option {word} is not supported on the head")
        elif pattern is None:
            pattern = word
        else:
            raise LaunchError(f"cleanup: `pkill {' '.join(args)}`: one pattern only")
        i += 1
    if pattern is None:
        raise LaunchError(f"cleanup: `pkill {' '.join(args)}` has no pattern")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise LaunchError(f"cleanup: pattern {pattern!r} is not a regex: {exc}") from None
    return Query(pattern=pattern, **opts)  # type: ignore[arg-type]


def find_pids(query: Query, proc: str = "/proc") -> list[int]:
    """PIDs of the processes ``query`` selects (pgrep's answer), this process excluded."""
    out = []
    me = os.getpid()
    try:
        names = os.listdir(proc)
    except OSError:
        return out
    for name in names:
        if not name.isdigit() or int(name) == me:
            continue
        base = f"{proc}/{name}"
        try:
            stat = Path(f"{base}/stat").read_text()
            cmdline = Path(f"{base}/cmdline").read_bytes()
            uid = os.stat(base).st_uid
        except OSError:  # gone meanwhile
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        args = " ".join(cmdline.decode("utf-8", "replace").split("\0")).strip()
        if query.matches(comm, args, uid, ppid):
            out.append(int(name))
    return sorted(out)


def any_running(pattern: str, proc: str = "/proc") -> bool:
    """True while a process whose name matches ``pattern`` is alive (zombies excluded)."""
    query = Query(pattern=pattern)
    for pid in find_pids(query, proc):
        try:
            state = Path(f"{proc}/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            return True
    return False


def _signal(name: str) -> signal.Signals:
    name = name.upper()
    try:
        if name.isdigit():
            return signal.Signals(int(name))
        return signal.Signals[name if name.startswith("SIG") else f"SIG{name}"]
    except (KeyError, ValueError):
        raise LaunchError(f"cleanup: unknown signal {name!r}") from None


def _is_signal(name: str) -> bool:
    try:
        _signal(name)
        return True
    except LaunchError:
        return False


def parse_kill(argv: Sequence[str]) -> tuple[signal.Signals, list[list[str]]]:
    """(signal, pgrep argument lists) for a ``pkill``/``killall`` argv.

    Signal forms: ``-9``, ``-KILL``, ``-SIGKILL``, ``--signal SIG``, ``--signal=SIG`` and
    killall's ``-s SIG``. pkill's other options pass to pgrep unchanged; killall's names
    become exact-name queries (``pgrep -x``).
    """
    args = list(argv[1:])
    sig = signal.SIGTERM
    rest: list[str] = []
    i = 0
    while i < len(args):
        word = args[i]
        # pkill's -s is a session id; killall's -s is the signal.
        if (word == "--signal" or (word == "-s" and argv[0] == "killall")) and i + 1 < len(args):
            sig = _signal(args[i + 1])
            i += 2
            continue
        if word.startswith("--signal="):
            sig = _signal(word.split("=", 1)[1])
        elif re.fullmatch(r"-(\d+|[A-Za-z]+[0-9+-]*)", word) and (word[1:].isdigit() or _is_signal(word[1:])):
            sig = _signal(word[1:])
        else:
            rest.append(word)
        i += 1
    if argv[0] == "killall":
        names = [w for w in rest if not w.startswith("-")]
        return sig, [["-x", name] for name in names]
    return sig, [rest]


def parse_sleep(args: Sequence[str]) -> float:
    """Seconds of ``sleep ARGS`` as coreutils reads them (``3``, ``0.5``, ``3s``, ``1m``; summed)."""
    units = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
    total = 0.0
    for arg in args:
        m = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)([smhd]?)", arg)
        if not m:
            raise LaunchError(f"cleanup: `sleep {arg}` is not a duration")
        total += float(m.group(1)) * units[m.group(2)]
    return total
