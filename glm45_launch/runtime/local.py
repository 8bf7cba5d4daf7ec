"""Head-side commands, run on this machine (the launcher runs on the head, like the recipe)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from glm45_launch.errors import LaunchError


@dataclass
class LocalResult:
    argv: list[str]
    exit_code: int | None = None
    error: str | None = None
    duration_s: float = 0.0
    output_tail: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and self.exit_code == 0


def ancestors(pid: int | None = None) -> set[int]:
    """``pid`` (default: this process) and every ancestor up to init, from /proc."""
    pid = os.getpid() if pid is None else pid
    seen: set[int] = set()
    while pid > 0 and pid not in seen:
        seen.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        # The command name is in parentheses and may hold spaces: split after the last ')'.
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return seen


class LocalRunner:
    """Runs argv lists here, streaming output line by line; tracks children for Ctrl-C."""

    def __init__(self, mask: Callable[[str], str] | None = None) -> None:
        self.mask = mask or (lambda text: text)  # applied to everything logged or echoed
        self._children: set[subprocess.Popen[str]] = set()
        self._lock = threading.Lock()

    def run(
        self,
        argv: Sequence[str],
        log_path: Path,
        echo: Callable[[str], None] | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout_s: float | None = None,
        on_line: Callable[[str], None] | None = None,
    ) -> LocalResult:
        result = LocalResult(argv=list(argv))
        start = time.monotonic()
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("a") as log:
            log.write(self.mask("$ " + " ".join(argv)) + "\n")
            log.flush()
            try:
                # A session of its own: Ctrl-C reaches the launcher, which decides what to
                # stop, and a timeout can kill the command's whole process group.
                proc = subprocess.Popen(
                    list(argv), cwd=cwd, env={**os.environ, **(env or {})}, text=True,
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                    start_new_session=True, errors="replace",
                )
            except OSError as exc:
                result.error = f"cannot run {argv[0]}: {exc.strerror}"
                log.write(f"! {result.error}\n")
                return result
            with self._lock:
                self._children.add(proc)
            timer = threading.Timer(timeout_s, self._kill, (proc,)) if timeout_s else None
            if timer:
                timer.start()
            try:
                assert proc.stdout is not None
                for raw in proc.stdout:
                    line = self.mask(raw.rstrip("\n"))
                    log.write(line + "\n")
                    log.flush()
                    result.output_tail.append(line)
                    del result.output_tail[:-20]
                    if echo:
                        echo(line)
                    if on_line:
                        on_line(line)
                result.exit_code = proc.wait()
            except BaseException:
                # Ctrl-C (or any error) while streaming: the command must not outlive us.
                self._kill(proc)
                proc.wait()
                raise
            finally:
                if timer:
                    timer.cancel()
                with self._lock:
                    self._children.discard(proc)
            if timeout_s and time.monotonic() - start >= timeout_s and result.exit_code != 0:
                result.error = f"`{argv[0]}` timed out after {timeout_s:.0f}s"
            log.write(f"# exit={result.exit_code}\n")
        result.duration_s = time.monotonic() - start
        return result

    @staticmethod
    def _kill(proc: subprocess.Popen[str]) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def kill_children(self) -> list[int]:
        """Kill (by process group) every command still running; returns their PIDs."""
        with self._lock:
            children = list(self._children)
        for proc in children:
            self._kill(proc)
        return [p.pid for p in children]

    def pkill_sparing(self, argv: Sequence[str], log_path: Path, spare: set[int]) -> LocalResult:
        """``pkill``/``killall`` that never signals a PID in ``spare``.

        pgrep matches exactly as pkill does (same procps code; ``killall NAME`` is
        ``pgrep -x NAME``); the spared PIDs are removed before signalling, so the launcher
        and the shell that started it survive.
        """
        sig, queries = parse_kill(argv)
        result = LocalResult(argv=list(argv))
        start = time.monotonic()
        pids: list[int] = []
        for query in queries:
            try:
                found = subprocess.run(["pgrep", *query], capture_output=True, text=True, check=False)
            except FileNotFoundError:
                raise LaunchError("pgrep not found on the head (install procps): the cleanup needs it") from None
            pids += [int(p) for p in found.stdout.split()]
        killed, spared = [], []
        for pid in dict.fromkeys(pids):
            if pid in spare or pid == os.getpid():
                spared.append(pid)
                continue
            try:
                os.kill(pid, sig)
                killed.append(pid)
            except ProcessLookupError:
                pass
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("a") as log:
            log.write(f"$ {' '.join(argv)}  # killed {killed or 'none'}; spared {spared or 'none'}\n")
        # pkill's own convention: 0 when something matched, 1 when nothing did.
        result.exit_code = 0 if killed else 1
        result.duration_s = time.monotonic() - start
        return result


KILLERS = ("pkill", "killall")


def _signal(name: str) -> signal.Signals:
    name = name.upper()
    try:
        if name.isdigit():
            return signal.Signals(int(name))
        return signal.Signals[name if name.startswith("SIG") else f"SIG{name}"]
    except (KeyError, ValueError):
        raise LaunchError(f"cleanup: unknown signal {name!r}") from None


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


def _is_signal(name: str) -> bool:
    try:
        _signal(name)
        return True
    except LaunchError:
        return False


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
