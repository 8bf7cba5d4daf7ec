"""The recorder's own directory, bound read-only at the same path in the sandbox.

    ROOT/profile.bash, record.bash, init.bash   the package's programs (programs/)
    ROOT/bin/NAME -> ../record.bash             one shim per recorded command name
    ROOT/safe/NAME -> /usr/bin/NAME             the text tools the sandbox lends
    ROOT/cluster                                TOTAL_GPUS GPUS_PER_NODE NODES: polls get answers
    ROOT/capture                                argv prefixes whose records carry the environment
    ROOT/state/window                           what was recorded since the last sleep (a tmpfs)
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Sequence
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
"""The only real commands on the script's PATH (those installed here as programs, not scripts):
they read and print. ``tee``, ``mktemp``, ``find``, ``xargs``, shells and interpreters are
deliberately absent; what a lent tool starts (``sort --compress-program``, awk's ``system``)
meets the shims."""

PROGRAMS = ("profile.bash", "record.bash", "init.bash")


@dataclass(frozen=True)
class RootDir:
    """A built recorder directory and what the sandbox needs from it."""

    path: Path
    programs: list[str]  # host paths: bash and the tools (the sandbox exposes them)
    search_path: str  # the script's PATH


def build_root(root: Path, *, names: Sequence[str], bash: str, tools_path: str, cluster: Cluster | None,
               capture: Sequence[Sequence[str]]) -> RootDir:
    """Write ROOT for a recording of ``names`` (see the module); ``tools_path`` finds the tools."""
    for sub in ("bin", "safe", "state"):
        (root / sub).mkdir(parents=True, mode=0o755)
    root.chmod(0o755)
    for name in PROGRAMS:
        text = resources.files("glm45_launch.sandbox").joinpath("programs", name).read_text(encoding="utf-8")
        (root / name).write_text(text)
        (root / name).chmod(0o755)
    for name in names:
        (root / "bin" / name).symlink_to("../record.bash")
    programs = [bash]
    for name, real in _tools(tools_path):
        if name not in names:
            (root / "safe" / name).symlink_to(real)
            programs.append(real)
    (root / "state" / "window").touch()
    if cluster is not None:
        (root / "cluster").write_text(f"{cluster.total_gpus} {cluster.gpus_per_node} {cluster.nodes}\n")
    (root / "capture").write_text("".join(" ".join(words) + "\n" for words in capture))
    return RootDir(root, programs, f"{root / 'bin'}{os.pathsep}{root / 'safe'}")


@functools.lru_cache(maxsize=8)
def _tools(path: str) -> tuple[tuple[str, str], ...]:
    """(name, path) of the ``SAFE_TOOLS`` that ``path`` finds, programs only (no /bin/sh inside)."""
    found = ((name, shutil.which(name, path=path)) for name in SAFE_TOOLS)
    return tuple((name, real) for name, real in found if real and layout.is_program(os.path.realpath(real)))
