"""A per-node script against the plan: what one node runs, the head's side or one worker's.

Some launchers are per node: every node runs ``script MODE NODE_RANK HEAD_IP``, and the
nodes meet through polls and files instead of one launcher's ssh fan-out. Rank 0 is compared
with the plan's head-side steps, another rank with ONE worker step's commands. What makes the
two comparable, each said in a note rather than counted as a difference:
  - a poll of the cluster the recording answered (a GPU count, ``ray status``) is the
    plan's join step (the head waits for every node before it submits);
  - a wait loop the recorder ended on a file (the head's done file) is the plan's hold of
    the worker (``--hold-workers``); ``mkdir -p`` of its folder and ``rm -f`` of it, and the
    head's write of it, are the script's bookkeeping of that file;
  - a ``sleep`` only the script has is pacing (a blind wait: the plan waits for what it
    needs instead), not a command;
  - ``VAR=value cmd`` in the script and ``env VAR=value cmd`` in the plan are the same
    command, compared with its variables.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Sequence

from glm45_launch.core.plan import Plan
from glm45_launch.core.quoting import shell_join
from glm45_launch.core.steps import HEAD, Step
from glm45_launch.errors import LaunchError
from glm45_launch.sandbox.record import Origin, Recording

_ASSIGN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_FILE_TESTS = ("-f", "-e", "-s", "-r")
_PLACEHOLDERS = ("{rank}", "{host}", "{head}")


def node_args(plan: Plan, args: Sequence[str], rank: int | None) -> list[str]:
    """The script's arguments with ``{rank}``, ``{host}`` (that node's address) and ``{head}``."""
    if rank is None:
        if any(p in a for a in args for p in _PLACEHOLDERS):
            raise LaunchError("the script's arguments use {rank}/{host}: give --rank N or --as-worker")
        return list(args)
    nodes = plan.cluster.nodes
    if rank >= len(nodes):
        raise LaunchError(f"--rank {rank}: the plan has {len(nodes)} node(s) (ranks 0 to {len(nodes) - 1})")
    values = {"{rank}": str(rank), "{host}": nodes[rank], "{head}": plan.cluster.head}
    out = []
    for arg in args:
        for key, value in values.items():
            arg = arg.replace(key, value)
        out.append(arg)
    return out


def split_env(argv: Sequence[str]) -> tuple[tuple[str, ...], list[str]]:
    """``env K=V... CMD ARGS`` as (("K=V", ...), [CMD, ARGS...]); other argv unchanged."""
    if not argv or argv[0] != "env":
        return (), list(argv)
    i = 1
    while i < len(argv) and _ASSIGN.match(argv[i]):
        i += 1
    return tuple(argv[1:i]), list(argv[i:])


def waited_files(rec: Recording) -> list[str]:
    """Files the script's ended wait loops tested for (``[ ! -f FILE ]``)."""
    files = []
    for wait in rec.waits:
        for i, word in enumerate(wait.test[:-1]):
            if word in _FILE_TESTS:
                files.append(wait.test[i + 1])
    return files


def _bookkeeping(argv: Sequence[str], files: set[str]) -> bool:
    """``mkdir -p`` of a sync file's folder, ``rm -f`` of a sync file."""
    operands = [a for a in argv[1:] if not a.startswith("-")]
    if not operands or not files:
        return False
    folders = {os.path.dirname(f) for f in files}
    if argv[0] == "rm":
        return all(o in files for o in operands)
    if argv[0] == "mkdir":
        return all(any(d == o or d.startswith(o.rstrip("/") + "/") for d in folders) for o in operands)
    return False


class NodeView:
    """One rank's recording and plan side, made comparable (see the module)."""

    def __init__(self, plan: Plan, rec: Recording, rank: int) -> None:
        self.plan, self.rec, self.rank = plan, rec, rank
        self.notes: list[str] = []
        self.differences: list[str] = []
        self.host = plan.cluster.nodes[min(rank, len(plan.cluster.nodes) - 1)]
        if rank == 0:
            self.steps: list[Step] = [s for s in plan.steps if s.where == HEAD]
        else:
            workers = [s for s in plan.steps if s.where != HEAD and s.kind == "worker-start"]
            if not workers:
                raise LaunchError(f"--rank {rank}: the plan starts no worker (a one-node hostfile?)")
            step = next((s for s in workers if s.host == self.host), workers[0])
            self.host = step.host
            self.steps = [step] + [s for s in plan.steps if s.kind == "hold" and s.host == step.host]

    def want(self) -> list[tuple[list[str], tuple[str, ...], Step]]:
        """The plan's commands on this side: (argv, its ``env`` words, the step)."""
        out = []
        for step in self.steps:
            if step.kind == "hold":
                continue
            for command in step.commands:
                env, argv = split_env(command)
                out.append((argv, env, step))
        return out

    def got(self) -> list[tuple[list[str], Origin | None]]:
        """The script's commands, without its sync-file bookkeeping (noted)."""
        files = set(self.rec.outside_writes) | set(waited_files(self.rec))
        out = []
        for i, argv in enumerate(self.rec.invocations):
            if _bookkeeping(argv, files):
                self.notes.append(f"`{shell_join(argv)}`: the script's bookkeeping of the file the nodes "
                                  "signal each other with (not a command of the plan)")
                continue
            out.append((argv, self.rec.origin(i)))
        return out

    def meet(self) -> None:
        """Polls vs the join, wait loops vs the hold, writes of sync files."""
        kinds = {s.kind for s in self.steps}
        polls = [shell_join(p.argv)[:100] for p in self.rec.polls if p.kind == "cluster"]
        if self.rank == 0 and "join" in kinds:
            if polls:
                self.notes.append(f"the script polls the cluster (`{polls[0]}`), answered as the plan's cluster "
                                  "would: the plan's join step waits for the same")
            else:
                self.differences.append("the plan waits for every node to join before it submits; the script "
                                        "does not poll the cluster")
        elif polls:
            self.differences.append(f"the script polls the cluster (`{polls[0]}`); the plan does not wait here")
        waited = waited_files(self.rec)
        if self.rank:
            if "hold" in kinds and waited:
                self.notes.append(f"the script keeps the node until {waited[0]} appears (the head's done file): "
                                  "the plan holds the worker the same way (--hold-workers)")
            elif "hold" in kinds:
                self.differences.append("the plan holds the worker until the job ends (--hold-workers); the "
                                        "script exits")
            elif waited:
                self.differences.append(f"the script keeps the node until {waited[0]} appears (the head's done "
                                        "file); the plan does not hold the workers (--hold-workers does)")


def command_pairs(want: list[tuple[list[str], tuple[str, ...], Step]],
                  got: list[tuple[list[str], Origin | None]]):  # type: ignore[no-untyped-def]
    """difflib's opcodes over the two command lists (argv only)."""
    matcher = difflib.SequenceMatcher(a=[tuple(w[0]) for w in want], b=[tuple(g[0]) for g in got],
                                      autojunk=False)
    return matcher.get_opcodes()


def env_difference(argv: Sequence[str], want_env: tuple[str, ...], step: Step, origin: Origin | None) -> str | None:
    """How the command's own variables differ (the head-start's exports are compared elsewhere)."""
    exported = {k for k, _ in step.env}
    got_env = tuple(w for w in (origin.env if origin else ()) if w.split("=", 1)[0] not in exported)
    if set(got_env) == set(want_env):
        return None
    return (f"`{shell_join(argv[:2])}`: its variables: plan `{' '.join(want_env) or '(none)'}`, "
            f"script `{' '.join(got_env) or '(none)'}`")
