"""Run a bash launcher under argv-recording shims and compare what it ran with a plan.

``run_script`` records the script (``record.record_script``: nothing real runs, no stdin, a
time limit) with the environment the script exports at ``ray start --head`` and ``ray job
submit`` (those records carry it). ``compare`` turns the recording and a plan into
a ``ParityReport``: per invocation, per train argument (added / removed / changed / moved,
with its group), the runtime env key by key, and the head's exported env.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glm45_launch.core.argdiff import diff_args, diff_env
from glm45_launch.core.flags import split_flags
from glm45_launch.core.plan import Plan
from glm45_launch.core.quoting import REMOTE_SEPARATOR, printable, shell_join
from glm45_launch.core.steps import HEAD, SubmitStep
from glm45_launch.core.variants import CPU_ADAM_FLAGS, KV_CACHE_FP8, MTP_FLAGS, R3_FLAG, fp8_sglang_flags
from glm45_launch.recipes import BASH_RECIPE, MODELS, Recipe
from glm45_launch.recipes.python_launcher import BLACKWELL_ATTENTION
from glm45_launch.sandbox.pernode import NodeView, command_pairs, env_difference
from glm45_launch.sandbox.record import (
    HARDCODED_HOSTFILE,
    Cluster,
    Origin,
    Recording,
    check_script,
    record_script,
)
from glm45_launch.sandbox.report import ParityReport, output_tail

RENV = "--runtime-env-json="
PREFIX_GROUP = "PREFIX"  # the train args before the groups (--actor-num-nodes ...)

# Keys bash or the harness sets by itself: never a difference.
_ENV_NOISE = {"PWD", "OLDPWD", "SHLVL", "_", "PATH", "BASH_ENV"}
_HEAD_START, _SUBMIT = ("ray", "start", "--head"), ("ray", "job", "submit")
_INHERITED = ("HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "USER", "LOGNAME", "TERM")
_STDERR_TROUBLE = re.compile(
    r"(No such file|cannot open|can't open|command not found|unbound variable|Permission denied|syntax error)"
)


@dataclass
class ScriptRun:
    """A recorded script and the environment it exported."""

    recording: Recording
    env: dict[str, str]  # the environment it was given (besides HOME, PATH, ...)
    head_env: dict[str, str] | None  # exported at `ray start --head`, beyond ``env``; None: not seen
    submit_env: dict[str, str] | None
    notes: list[str] = field(default_factory=list)

    @property
    def invocations(self) -> list[list[str]]:
        return self.recording.canonical()

    def origins(self) -> list[Origin | None]:
        """Where each of ``invocations`` comes from (the same canonical order)."""
        argvs = self.recording.invocations
        order = [i for i, a in enumerate(argvs) if a[:1] != ["ssh"]]
        order += sorted((i for i, a in enumerate(argvs) if a[:1] == ["ssh"]), key=lambda i: argvs[i][1:])
        return [self.recording.origin(i) for i in order]


def _exported(rec: Recording, prefix: Sequence[str], given: Mapping[str, str]) -> dict[str, str] | None:
    """The environment of the first record of ``prefix``, beyond what the script was given
    (None: no such record)."""
    env = next((e for argv, e in rec.environments if argv[: len(prefix)] == list(prefix)), None)
    if env is None:
        return None
    return {k: v for k, v in env.items() if k not in _ENV_NOISE and not k.startswith("BASH_FUNC_")
            and given.get(k) != v}


def run_script(script: str | Path, *, env: Mapping[str, str], hostfile: str | Path | None = None,
               timeout: float = 30.0, cwd: str | Path | None = None, script_hostfile: str | None = None,
               args: Sequence[str] = (), expose: Sequence[Path | tuple[Path, str]] = (),
               cluster: Cluster | None = None) -> ScriptRun:
    """Record ``bash SCRIPT ARGS...`` with ``env`` (and the hostfile redirected) in the sandbox.

    ``script_hostfile``: a hostfile path the script hard-codes other than
    ``/root/mpi_rack_hostfile`` (which, like ``$HOSTFILE``, is always redirected); ``cluster``
    answers the script's polls of the cluster (see ``record.record_script``).
    """
    from glm45_launch.errors import LaunchError

    script = Path(script).absolute()
    if not script.is_file():
        raise LaunchError(f"{script}: no such script")
    script = check_script(script)
    aliases: list[str] = []
    if script_hostfile and script_hostfile != HARDCODED_HOSTFILE:
        if hostfile is None:
            raise LaunchError("--script-hostfile: give --hostfile to redirect it to")
        if script_hostfile.encode() not in script.read_bytes():
            raise LaunchError(f"{script}: does not contain {script_hostfile} (--script-hostfile)")
        aliases.append(script_hostfile)
    rec = record_script(script, env=dict(env), hostfile=Path(hostfile) if hostfile else None, timeout=timeout,
                        cwd=Path(cwd) if cwd else None, args=args, expose=expose, hostfile_aliases=aliases,
                        cluster=cluster, capture_env=(_HEAD_START, _SUBMIT))
    # what record_script passes on from our environment (HOME, LANG, ...) is no export either
    given = {k: os.environ[k] for k in _INHERITED if k in os.environ} | dict(env)
    if hostfile is not None:
        given["HOSTFILE"] = str(Path(hostfile).absolute())
    notes = list(rec.notes)
    for line in rec.stderr.splitlines():
        if _STDERR_TROUBLE.search(line) and not line.startswith("+"):
            hint = ""
            if line.startswith("awk:") and "open" in line:
                hint = " (a hostfile path the script hard-codes? --script-hostfile PATH redirects it)"
            elif "No such file" in line:
                hint = " (the sandbox shows only the script's folder: --expose PATH shows more)"
            notes.append(f"script stderr: {line.strip()[:200]}{hint}")
    head_env = _exported(rec, _HEAD_START, given)
    if head_env is None and any(a[:3] == list(_HEAD_START) for a in rec.invocations):
        notes.append("the exported environment at `ray start --head` could not be captured")
    return ScriptRun(rec, dict(env), head_env, _exported(rec, _SUBMIT, given), [printable(n) for n in notes])


# -- comparison -------------------------------------------------------------------------------

def _flags(words: Sequence[str]) -> set[str]:
    return {f for f, _ in split_flags(words) if f}


def known_flags(recipe: Recipe = BASH_RECIPE) -> dict[str, set[str]]:
    """Flags each group of the default recipe (and its variants) passes, PREFIX first."""
    groups = {PREFIX_GROUP: _flags(recipe.train_prefix)}
    for group in recipe.group_order:
        groups[group] = _flags(recipe.groups.get(group, ()))
    groups.setdefault("MODEL", set()).update(*(_flags(m.args) for m in MODELS.values()))
    extra = {
        "CKPT": {"--load", "--save", "--save-interval", "--save-retain-interval"},
        "OPTIMIZER": set(CPU_ADAM_FLAGS),
        "GRPO": {R3_FLAG, "--use-kl-loss"},
        "SGLANG": _flags(MTP_FLAGS + KV_CACHE_FP8 + BLACKWELL_ATTENTION + fp8_sglang_flags(8))
        | {"--sglang-tp-size", "--sglang-chunked-prefill-size"},
        "MISC": {"--custom-config-path", "--custom-tis-function-path"},
        "WANDB": {"--use-wandb", "--wandb-project", "--wandb-group", "--wandb-key", "--wandb-host",
                  "--disable-wandb-random-suffix"},
    }
    for group, flags in extra.items():
        if group in groups:
            groups[group] |= flags
    return groups


def _parse_renv(word: str) -> Any:
    try:
        return json.loads(word[len(RENV):])
    except ValueError:
        return None


def normalize(argv: Sequence[str]) -> tuple[str, ...]:
    """argv with the runtime env compared by meaning (JSON layout does not matter)."""
    out = []
    for word in argv:
        if word.startswith(RENV):
            parsed = _parse_renv(word)
            if parsed is not None:
                word = RENV + json.dumps(parsed, sort_keys=False)
        out.append(word)
    return tuple(out)


def _kind(argv: Sequence[str]) -> str:
    if not argv:
        return "(empty)"
    if argv[0] == "ray" and len(argv) > 1:
        return "ray " + (" ".join(argv[1:3]) if argv[1] == "job" else argv[1])
    return argv[0]


def _short(argv: Sequence[str], limit: int = 160) -> str:
    text = shell_join(argv)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _submit_differences(plan: Plan, got: Sequence[str]) -> list[str]:
    submit = plan.step(SubmitStep.kind)
    if not isinstance(submit, SubmitStep):
        return ["the plan submits no job"]
    want = [w for w in submit.options if w != "--"]  # the plan's `ray job submit` options
    out: list[str] = []
    if "--" not in got:
        return [f"ray job submit: the script passes no '--' before the entry point: {_short(got)}"]
    g_cut = got.index("--")
    w_head = [w for w in want if not w.startswith(RENV)]
    g_head = [w for w in got[:g_cut] if not w.startswith(RENV)]
    if w_head != g_head:
        out.append(f"ray job submit options: plan `{shell_join(w_head)}`, script `{shell_join(g_head)}`")
    w_env = [w for w in want if w.startswith(RENV)]
    g_env = [w for w in got[:g_cut] if w.startswith(RENV)]
    if bool(w_env) != bool(g_env):
        out.append("runtime env: " + ("missing from the script" if w_env else "only in the script"))
    elif w_env:
        w_json, g_json = _parse_renv(w_env[0]), _parse_renv(g_env[0])
        if g_json is None:
            out.append(f"runtime env: the script's --runtime-env-json is not JSON: {g_env[0][len(RENV):][:120]!r}")
        elif w_json != g_json:
            w_vars, g_vars = w_json.get("env_vars", {}), g_json.get("env_vars", {}) if isinstance(g_json, dict) else {}
            for change in diff_env(list(w_vars.items()), list(g_vars.items()) if isinstance(g_vars, dict) else []):
                out.append(f"runtime {change}")
            extra = {k for k in (g_json if isinstance(g_json, dict) else {}) if k != "env_vars"} | {
                k for k in w_json if k != "env_vars"}
            for key in sorted(extra):
                if w_json.get(key) != g_json.get(key):
                    out.append(f"runtime env key {key!r}: plan {w_json.get(key)!r}, script {g_json.get(key)!r}")
    entry = len(plan.train.entry)  # the script's entry point: as many words as the plan's
    w_entry, g_entry = list(plan.train.entry), got[g_cut + 1 : g_cut + 1 + entry]
    if w_entry != g_entry:
        out.append(f"entry point: plan `{shell_join(w_entry)}`, script `{shell_join(g_entry)}`")
    groups = [(PREFIX_GROUP, plan.train.prefix), *plan.train.groups]
    for change in diff_args(groups, got[g_cut + 1 + entry :], hints=known_flags()):
        out.append(f"train arg {change}")
    return out


def _split_eq(words: Sequence[str]) -> list[str]:
    """``--flag=value`` as two words, for a flag-by-flag comparison."""
    out: list[str] = []
    for word in words:
        flag, eq, value = word.partition("=")
        out += [flag, value] if word.startswith("--") and eq else [word]
    return out


def _command_difference(want: Sequence[str], got: Sequence[str]) -> str:
    """One line saying how two argv of the same command differ (flag by flag if possible)."""
    ww, gw = _split_eq(want), _split_eq(got)
    changes = diff_args([("", ww[2:])], gw[2:]) if ww[:2] == gw[:2] else []
    if changes:
        return f"`{shell_join(want[:2])}`: " + "; ".join(str(c) for c in changes)
    return f"`{shell_join(want)}` -> `{shell_join(got)}`"


def _remote_differences(want: str, got: str) -> list[str]:
    w_cmds, g_cmds = want.split(REMOTE_SEPARATOR), got.split(REMOTE_SEPARATOR)
    out: list[str] = []
    matcher = difflib.SequenceMatcher(a=w_cmds, b=g_cmds, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            continue
        pairs = list(zip(w_cmds[i1:i2], g_cmds[j1:j2], strict=False))
        for w, g in pairs:
            try:
                ww, gw = shlex.split(w), shlex.split(g)
            except ValueError:
                out.append(f"`{w}` -> `{g}`")
                continue
            out.append(_command_difference(ww, gw))
        for w in w_cmds[i1 + len(pairs) : i2]:
            out.append(f"missing from the script: `{w}`")
        for g in g_cmds[j1 + len(pairs) : j2]:
            out.append(f"only in the script: `{g}`")
    return out


def _ssh_differences(want: list[list[str]], got: list[list[str]]) -> list[str]:
    """Worker commands compared host by host; the same difference on many hosts said once."""
    by_host_w = {a[1]: a for a in want}
    by_host_g: dict[str, list[str]] = {}
    out: list[str] = []
    for a in got:
        if len(a) < 2:
            out.append(f"ssh without a host: {_short(a)}")
            continue
        if a[1] in by_host_g:
            out.append(f"ssh {a[1]}: called more than once by the script")
        by_host_g[a[1]] = a
    grouped: dict[str, list[str]] = {}
    for host in sorted(set(by_host_w) | set(by_host_g)):
        w, g = by_host_w.get(host), by_host_g.get(host)
        if w == g:
            continue
        bare = host.split("@", 1)[-1]
        if g is None:
            texts = ["in the plan, not run by the script"]
        elif w is None:
            texts = [f"run by the script, not in the plan: {_short(g)}"]
        elif len(w) != 3 or len(g) != 3:
            texts = [f"argv {_short(g)} (plan: {_short(w)})"]
        else:
            texts = _remote_differences(w[2], g[2])
        for text in texts:
            grouped.setdefault(re.sub(rf"(?<![\w.-]){re.escape(bare)}(?![\w-]|\.\w)", "{host}", text), []).append(host)
    for text, hosts in grouped.items():
        where = hosts[0] if len(hosts) == 1 else f"{len(hosts)} workers ({', '.join(hosts)})"
        out.append(f"ssh {where}: {text}")
    return out


def env_differences(label: str, want: Mapping[str, str], got: Mapping[str, str]) -> list[str]:
    out = []
    for key in list(want) + [k for k in got if k not in want]:
        if key not in got:
            out.append(f"{label} {key}: missing from the script (plan: {want[key]})")
        elif key not in want:
            out.append(f"{label} {key}: only in the script (= {got[key]})")
        elif want[key] != got[key]:
            out.append(f"{label} {key}: plan {want[key]}, script {got[key]}")
    return out


def _pair_differences(plan: Plan, ws: list[list[str]], gs: list[list[str]],
                      lines: Sequence[str] = ()) -> tuple[list[str], list[int]]:
    """Differences of two unequal runs of commands, paired by kind; and the script's
    commands left unpaired (their indexes in ``gs``, reported by the caller)."""
    diffs: list[str] = []
    used: set[int] = set()
    for w in ws:
        match = next((k for k, g in enumerate(gs) if k not in used and _kind(g) == _kind(w)), None)
        if match is None:
            diffs.append(f"missing from the script: `{_short(w)}`")
            continue
        used.add(match)
        g = gs[match]
        diffs += _submit_differences(plan, g) if _kind(w) == "ray job submit" else [_command_difference(w, g)]
    return diffs, [k for k in range(len(gs)) if k not in used]


def _only_in_script(g: Sequence[str], where: str = "") -> str:
    what = "only in the script"
    if g[:1] in (["python"], ["python3"]) and "-c" in g[1:2]:
        what += " (inline Python, not interpreted)"
    return f"{what}: `{_short(g)}`" + (f" ({where})" if where else "")


def compare(plan: Plan, run: ScriptRun, script: str = "script", rank: int | None = None) -> ParityReport:
    """How what ``run`` recorded differs from ``plan`` (nothing: identical). ``rank``: the
    script is per node and this is what node ``rank`` ran (see ``pernode``)."""
    if rank is not None:
        report = _compare_node(plan, run, script, rank)
    else:
        report = _compare_cluster(plan, run, script)
    if run.recording.timed_out:
        report.notes.append("the script timed out: invocations after that point are missing")
    if run.recording.stopped:
        report.differences.append(f"the recording was stopped ({run.recording.stopped}): it is incomplete")
    report.output_tail = output_tail(run.recording)
    return report


def _compare_cluster(plan: Plan, run: ScriptRun, script: str) -> ParityReport:
    want = plan.invocations()
    got = run.invocations
    report = ParityReport(script, len(want), len(got), notes=list(run.notes), timed_out=run.recording.timed_out)
    diffs = report.differences
    w_head = [a for a in want if a[:1] != ["ssh"]]
    g_head = [a for a in got if a[:1] != ["ssh"]]
    matcher = difflib.SequenceMatcher(a=[normalize(a) for a in w_head], b=[normalize(a) for a in g_head],
                                      autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op != "equal":
            gs = g_head[j1:j2]
            found, extra = _pair_differences(plan, w_head[i1:i2], gs)
            diffs += found + [_only_in_script(gs[k]) for k in extra]
    diffs += _ssh_differences([a for a in want if a[:1] == ["ssh"]], [a for a in got if a[:1] == ["ssh"]])
    diffs += _head_env_differences(plan, run)
    return report


def _head_env_differences(plan: Plan, run: ScriptRun) -> list[str]:
    head_step = next((s for s in plan.steps if s.kind == "head-start" and s.where == HEAD), None)
    if head_step is None or run.head_env is None:
        return []
    return env_differences("head env (at `ray start --head`):", dict(head_step.env), run.head_env)


def _compare_node(plan: Plan, run: ScriptRun, script: str, rank: int) -> ParityReport:

    view = NodeView(plan, run.recording, rank)
    want, got = view.want(), view.got()
    side = "as rank 0 (the head)" if rank == 0 else f"as rank {rank} (worker {view.host})"
    report = ParityReport(script, len(want), len(got), notes=list(run.notes), timed_out=run.recording.timed_out,
                          side=side)
    diffs = report.differences
    for op, i1, i2, j1, j2 in command_pairs(want, got):
        if op == "equal":
            for (argv, env, step), (_, origin) in zip(want[i1:i2], got[j1:j2], strict=True):
                if (text := env_difference(argv, env, step, origin)) is not None:
                    diffs.append(text)
            continue
        gs = [g[0] for g in got[j1:j2]]
        found, extra = _pair_differences(plan, [w[0] for w in want[i1:i2]], gs)
        diffs += found
        for k in extra:
            origin = got[j1 + k][1]
            where = f"line {origin.line}" if origin else ""
            if gs[k][:1] == ["sleep"]:
                report.notes.append(f"`{_short(gs[k])}`{' at ' + where if where else ''}: the script's pacing "
                                    "(a blind wait; the plan waits for what it needs instead)")
            else:
                diffs.append(_only_in_script(gs[k], where))
    view.meet()
    diffs += view.differences
    report.notes += view.notes
    if rank == 0:
        diffs += _head_env_differences(plan, run)
    return report


def secrets_of(plan: Plan | None, run: ScriptRun) -> list[str]:
    """Secret values the plan or the recording holds (masked in what parity/import print)."""
    from glm45_launch.core.plan_secrets import plan_secrets
    from glm45_launch.core.secrets import argv_secrets, is_secret_env

    found = plan_secrets(plan) if plan is not None else []
    found += [s for argv in run.invocations for s in argv_secrets(argv)]
    for env in (run.head_env or {}, run.submit_env or {}, run.env):
        found += [v for k, v in env.items() if v and is_secret_env(k)]
    return found
