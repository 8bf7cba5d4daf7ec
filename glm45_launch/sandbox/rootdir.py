"""The recorder's own directory: its programs, the shims, the tool links, the hooks' settings.

    ROOT/hooks.bash, record.bash, init.bash   the package's programs (programs/)
    ROOT/bin/NAME -> ../record.bash           one shim per recorded command name
    ROOT/safe/NAME -> /usr/bin/NAME           the allowlisted tools the script may run
    ROOT/guarded/NAME -> ...                  tools the hooks' functions check first (awk, sed...)
    ROOT/lists/*, ROOT/settings               what the hooks read (NUL-separated words)
    ROOT/state/window                         the wait-loop watch (the one writable place)
    ROOT/cluster                              TOTAL_GPUS GPUS_PER_NODE NODES: polls get answers

The same directory serves the sandbox (bound read-only at the same path) and an unsafe
recording on the host.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from glm45_launch.sandbox import layout
from glm45_launch.sandbox.recording import Cluster

SAFE_TOOLS: tuple[str, ...] = (
    "awk", "sed", "grep", "egrep", "fgrep", "cut", "tr", "cat", "head", "tail", "sort", "uniq",
    "wc", "tac", "paste", "comm", "join", "rev", "fold", "nl", "od", "column", "dirname",
    "basename", "readlink", "realpath", "ls", "stat", "printf", "echo", "seq", "expr", "test",
    "[", "true", "false", "date", "env", "printenv", "pwd", "which", "hostname", "id", "whoami",
    "uname", "nproc", "getconf", "jq", "md5sum", "sha1sum", "sha256sum", "cksum",
)
"""The only real commands on the script's PATH (those installed here): they read and print.
``tee``, ``mktemp``, ``find``, ``xargs``, shells and interpreters are deliberately absent."""

# Allowlisted tools that can also write files or run commands: bash functions check their
# arguments first (programs/hooks.bash); the real programs live off PATH, in "guarded".
GUARDED = ("awk", "sed", "sort", "uniq", "date", "env", "hostname")
FUNCTIONS = ("egrep", "fgrep", "which")  # bash functions in the hooks (scripts elsewhere)
_BASH_SHEBANG = re.compile(rb"#![ \t]*(/usr)?/bin/bash([ \t]+-[a-oq-zA-Z]+)?[ \t]*\r?\n")
"""A script may run itself by path when the kernel then starts bash (which reads the hooks
again): not through ``env bash`` (no bash on the sandbox PATH), not with -p (no BASH_ENV)."""


@dataclass(frozen=True)
class RootDir:
    """A built recorder directory and what the recording needs from it."""

    path: Path
    programs: list[str]  # host paths: bash, the tools, cat and wc (the sandbox exposes them)
    cat: str  # init's own, to send the writable directories back
    wc: str
    search_path: str  # the script's PATH
    bash_env: str | None  # the hooks (None: a recording without them)


def runs_itself(script: Path) -> bool:
    """Whether ``script`` starts bash when run by path (its bash then reads the hooks again)."""
    return bool(_BASH_SHEBANG.match(script.read_bytes()[:200]))


def build_root(root: Path, *, names: Sequence[str], inherited_path: str, bash: str, programs_only: bool,
               scripts: Iterable[Path], writable: Sequence[str], tree: str, caller: str, cluster: Cluster | None,
               hooks: bool) -> RootDir:
    """Write ROOT for a recording of ``names`` (see the module). ``inherited_path`` finds the tools
    (``programs_only``: ELF ones, for a sandbox without /bin/sh); ``scripts`` may run themselves;
    ``writable``: folders the script may write files in; ``tree``: the default working directory."""
    for d in ("bin", "safe", "guarded", "lists", "state"):
        (root / d).mkdir(parents=True, mode=0o755)
    root.chmod(0o755)
    for name in ("hooks.bash", "record.bash", "init.bash"):
        (root / name).write_text(_program(name))
        (root / name).chmod(0o755)
    ok = []
    for name in names:
        (root / "bin" / name).symlink_to("../record.bash")
        ok.append(str(root / "bin" / name))
    programs = [bash]
    guards, sed_opts = [], ""
    for name, real in _tools(inherited_path, programs_only):
        if name in names:
            continue
        programs.append(real)
        if name in GUARDED:
            guards.append(name)
            (root / "guarded" / name).symlink_to(real)
            ok.append(str(root / "guarded" / name))
            sed_opts = "--sandbox" if name == "sed" and _sed_sandbox(real) else sed_opts
        else:
            (root / "safe" / name).symlink_to(real)
            ok += [str(root / "safe" / name), real]
    cat = shutil.which("cat", path=layout.DEFAULT_PATH) or "/bin/cat"
    wc = shutil.which("wc", path=layout.DEFAULT_PATH) or "/bin/wc"
    unguard = [g for g in GUARDED if g not in guards] + [f for f in FUNCTIONS if f in names]
    _write_list(root / "lists" / "ok", dict.fromkeys(ok))
    _write_list(root / "lists" / "scripts", map(str, scripts))
    _write_list(root / "lists" / "builtins", _bash_builtins(bash))
    _write_list(root / "lists" / "writable", dict.fromkeys(writable))
    _write_list(root / "lists" / "unguard", unguard)
    _write_list(root / "settings", ["tree", tree, "caller", caller, "sed", sed_opts])
    (root / "state" / "window").touch()
    if cluster is not None:
        (root / "cluster").write_text(f"{cluster.total_gpus} {cluster.gpus_per_node} {cluster.nodes}\n")
    path = [root / "bin", root / "safe"]
    if not hooks:  # the tools themselves, unguarded: only the sandbox holds them
        path.append(root / "guarded")
    return RootDir(root, [*programs, cat, wc], cat, wc, os.pathsep.join(map(str, path)),
                   str(root / "hooks.bash") if hooks else None)


@functools.lru_cache(maxsize=8)
def _bash_builtins(bash: str) -> tuple[str, ...]:
    """Builtins and reserved words of ``bash``."""
    try:
        out = subprocess.run([bash, "-c", _program("builtins.bash")], capture_output=True, text=True,
                             timeout=10, stdin=subprocess.DEVNULL, env={"PATH": layout.DEFAULT_PATH}).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    return tuple(sorted(set(out.split()) | {"kill", "exec", "command", "builtin", "eval", "source", "."}))


@functools.lru_cache(maxsize=8)
def _sed_sandbox(sed: str) -> bool:
    """Whether ``sed`` has ``--sandbox`` (GNU sed: no e/r/w commands)."""
    try:
        return subprocess.run([sed, "--sandbox", "-n", "p"], input="", capture_output=True, timeout=10,
                              text=True).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@functools.lru_cache(maxsize=8)
def _tools(path: str, programs_only: bool) -> tuple[tuple[str, str], ...]:
    """(name, path) of the ``SAFE_TOOLS`` that ``path`` finds (``programs_only``: ELF ones)."""
    found = ((name, shutil.which(name, path=path)) for name in SAFE_TOOLS if name not in FUNCTIONS)
    return tuple((name, real) for name, real in found
                 if real and (not programs_only or layout.is_program(os.path.realpath(real))))


def _write_list(path: Path, words: Iterable[str]) -> None:
    path.write_bytes(b"".join(os.fsencode(w) + b"\0" for w in words))


def _program(name: str) -> str:
    return resources.files("glm45_launch.sandbox").joinpath("programs", name).read_text(encoding="utf-8")
