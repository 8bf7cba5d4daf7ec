"""Record the argv of the external commands a bash script runs, without running them.

For every recorded command name a shim is put first on ``PATH``; it appends its argv as one
JSON line to a log and exits 0 silently. Text tools (awk, sed, cat, dirname, ...) stay real,
so the script's own word splitting, globbing and loops behave exactly as in production.

Limits: commands called by absolute path, shell builtins (``kill``, ``exec``, ``cd``) and
processes that leave the script's process group (``setsid``) are not intercepted.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_RECORDED: tuple[str, ...] = (
    "ray",
    "ssh",
    "pkill",
    "killall",
    "sleep",
    "python",
    "python3",
    "torchrun",
    "nvidia-smi",
    "hf",
    "huggingface-cli",
    "rsync",
    "scp",
    "pip",
    "pip3",
    "git",
    "wandb",
)
"""Command names replaced by recording shims unless ``commands=`` says otherwise."""

HARDCODED_HOSTFILE = "/root/mpi_rack_hostfile"
"""Hostfile path the bash recipe hard-codes; rewritten in a copy of the script (see below)."""

_BASE_ENV_KEYS = (
    "HOME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TMPDIR",
    "USER",
    "LOGNAME",
    "TERM",
)
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_LEFTOVER_GRACE_S = 0.5
_SHELL_SAFE = re.compile(r"[\w@%+=:,./-]+")

# Run as `python -I -S RECORDER LOG NAME ARGS...`; one write() with O_APPEND per invocation,
# so parallel shims (`ssh ... &`) never interleave their lines.
_RECORDER = """\
import json, os, sys
line = json.dumps([sys.argv[2]] + sys.argv[3:]) + "\\n"
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
try:
    os.write(fd, line.encode("ascii"))
finally:
    os.close(fd)
"""


@dataclass
class Recording:
    """What a script did under the shims."""

    invocations: list[list[str]]
    """argv of each recorded command (argv[0] is the bare command name), in recording order."""
    returncode: int
    """The script's exit status (negative: killed by that signal)."""
    stdout: str
    stderr: str
    timed_out: bool = False
    notes: list[str] = field(default_factory=list)
    """Anomalies: non-zero exit, timeout, leftover processes, unreadable log lines."""

    def canonical(self) -> list[list[str]]:
        """Head-side commands in order, then the (parallel) ssh fan-out sorted by argv[1:]."""
        return canonical(self.invocations)


def canonical(invocations: Recording | Iterable[Sequence[str]]) -> list[list[str]]:
    """Order-independent form of the ssh fan-out: non-ssh argv in order, then ssh sorted."""
    if isinstance(invocations, Recording):
        invocations = invocations.invocations
    argvs = [list(argv) for argv in invocations]
    head = [argv for argv in argvs if not argv or argv[0] != "ssh"]
    fan_out = sorted((argv for argv in argvs if argv and argv[0] == "ssh"), key=lambda a: a[1:])
    return head + fan_out


def record_script(
    script: Path,
    *,
    env: dict[str, str],
    hostfile: Path | None = None,
    hostfile_var: str = "HOSTFILE",
    cwd: Path | None = None,
    timeout: float = 30,
    commands: Iterable[str] = DEFAULT_RECORDED,
) -> Recording:
    """Run ``bash SCRIPT`` under argv-recording shims and return what it invoked.

    Environment: ``env`` is the whole environment apart from a few basics taken from ours
    (HOME, LANG, LC_*, TMPDIR, USER, LOGNAME, TERM) and ``PATH`` (shim dir first, then
    ``env["PATH"]`` or ours). Nothing else leaks in, so unset variables really are unset.

    Hostfile: when ``hostfile`` is given, ``$hostfile_var`` (empty: none) is set to it, and if
    the script text contains the literal ``/root/mpi_rack_hostfile`` a rewritten copy runs
    instead of the original. The copy lives in a temporary mirror of the script's surroundings:
    its directory holds the copy (same file name) plus symlinks to every sibling of the
    original, and the directory above it holds symlinks to the entries of the original's
    parent. So ``$(dirname "${BASH_SOURCE[0]}")/models/x.sh`` and ``$SCRIPT_DIR/../x`` still
    resolve, and the user's tree is never written to. Files the script sources are not
    rewritten. Choose a hostfile path without spaces or glob characters: the recipe expands
    it unquoted.

    Process control: stdin is /dev/null; the script runs in its own session/process group,
    with stdout/stderr sent to files (a background child keeping a pipe open cannot hang
    us). On timeout the whole group is SIGKILLed; after a normal exit, processes still in the
    group get a short grace period, then are SIGKILLed too.

    ``cwd`` defaults to a fresh empty directory (globs like ``[0]*3+[1]*89`` stay literal).
    """
    names = list(dict.fromkeys(commands))
    for name in names:
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"not a command name: {name!r}")
    script = Path(script).absolute()
    text = script.read_bytes()
    notes: list[str] = []
    bash = shutil.which("bash") or "/bin/bash"

    with tempfile.TemporaryDirectory(prefix="glm45-record-") as tmp:
        root = Path(tmp)
        log = root / "argv.jsonl"
        shim_dir = root / "bin"
        shim_dir.mkdir()
        recorder = root / "recorder.py"
        recorder.write_text(_RECORDER)
        for name in names:
            shim = shim_dir / name
            words = [sys.executable, "-I", "-S", str(recorder), str(log), name]
            shim.write_text("#!/bin/sh\nexec " + " ".join(map(shlex.quote, words)) + ' "$@"\n')
            shim.chmod(0o755)

        run_env = {k: os.environ[k] for k in _BASE_ENV_KEYS if k in os.environ}
        run_env.update(env)
        inherited_path = env.get("PATH") or os.environ.get("PATH") or _DEFAULT_PATH
        run_env["PATH"] = f"{shim_dir}{os.pathsep}{inherited_path}"

        target = script
        if hostfile is not None:
            hostfile_abs = Path(hostfile).absolute()
            if not _SHELL_SAFE.fullmatch(str(hostfile_abs)):
                notes.append(f"hostfile path {str(hostfile_abs)!r} has shell-special characters")
            if hostfile_var:
                run_env[hostfile_var] = str(hostfile_abs)
            literal = HARDCODED_HOSTFILE.encode()
            if literal in text:
                rewritten = text.replace(literal, os.fsencode(hostfile_abs))
                target = _mirror(script, rewritten, root / "mirror", notes)

        workdir = Path(cwd) if cwd is not None else root / "cwd"
        workdir.mkdir(exist_ok=True)
        out_path, err_path = root / "stdout", root / "stderr"
        timed_out = False
        with out_path.open("wb") as out_f, err_path.open("wb") as err_f:
            proc = subprocess.Popen(
                [bash, str(target)],
                cwd=workdir,
                env=run_env,
                stdin=subprocess.DEVNULL,
                stdout=out_f,
                stderr=err_f,
                start_new_session=True,
            )
            try:
                returncode = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(proc.pid)
                returncode = proc.wait()
                notes.append(f"timed out after {timeout:g} s; process group killed")
            deadline = time.monotonic() + _LEFTOVER_GRACE_S
            while (left := _group_members(proc.pid)) and time.monotonic() < deadline:
                time.sleep(0.02)
            if left:
                _kill_group(proc.pid)
                if not timed_out:
                    notes.append(f"killed {len(left)} process(es) left running by the script")
        if not timed_out and returncode != 0:
            notes.append(f"script exited with status {returncode}")

        invocations: list[list[str]] = []
        log_text = log.read_text(encoding="ascii", errors="replace") if log.exists() else ""
        for number, line in enumerate(log_text.splitlines(), 1):
            try:
                argv = json.loads(line)
            except ValueError:
                notes.append(f"argv log line {number} is not JSON: {line[:80]!r}")
                continue
            if not isinstance(argv, list) or not all(isinstance(w, str) for w in argv):
                notes.append(f"argv log line {number} is not a list of strings")
                continue
            invocations.append(argv)
        stdout = out_path.read_text(encoding="utf-8", errors="replace")
        stderr = err_path.read_text(encoding="utf-8", errors="replace")

    return Recording(invocations, returncode, stdout, stderr, timed_out, notes)


def _mirror(script: Path, text: bytes, up: Path, notes: list[str]) -> Path:
    """Write ``text`` as ``up/<dir name>/<script name>`` amid symlinks to the originals."""
    orig_dir = script.parent
    here = up / (orig_dir.name or "root")
    here.mkdir(parents=True)
    if orig_dir.parent != orig_dir:
        _link_entries(orig_dir.parent, up, orig_dir.name, notes)
    _link_entries(orig_dir, here, script.name, notes)
    copy = here / script.name
    copy.write_bytes(text)
    copy.chmod(script.stat().st_mode & 0o777)
    return copy


def _link_entries(directory: Path, dest: Path, skip: str, notes: list[str]) -> None:
    """Symlink every entry of ``directory`` except ``skip`` into ``dest``."""
    try:
        entries = list(directory.iterdir())
    except OSError as exc:
        notes.append(f"could not mirror {directory}: {exc}")
        return
    for entry in entries:
        if entry.name != skip:
            (dest / entry.name).symlink_to(entry)


def _kill_group(pgid: int, wait_s: float = 2.0) -> None:
    """SIGKILL every process of the group and wait (up to ``wait_s``) until none is alive."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + wait_s
    while _group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.01)


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, from /proc; killpg(0) elsewhere."""
    try:
        pids = [name for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    members = []
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if len(fields) > 2 and fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            members.append(int(pid))
    return members
