"""Turn a recorded bash launcher back into a recipe (``glm45-launch import``).

The recording (``parity.run_script``) is cut the way the bash recipe is built: cleanup
commands before ``ray start --head``, the head's ``ray start``, the ssh fan-out (one remote
command of ``" ; "``-joined commands), then ``ray job submit ... -- ENTRY TRAIN_ARGS``. Train
arguments are attributed to the default recipe's groups by flag, in their original order
(an unknown flag stays where it was: it joins the group of the flag before it). Values
that came from ``$BASE_DIR``, the head address, a worker's address, the GPUs per node, the
node count and the Ray ports become placeholders again, so the recipe runs on another
rack. ``verify`` plans the recipe with the same inputs and compares it with the recording,
strictly: a recording the recipe would not reproduce in full (inline code, a command the
recorder does not know, a flag that lost its value, a skipped write, a poll, an early exit)
is never identical, and the CLI then writes no recipe.
"""

from __future__ import annotations

import functools
import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from glm45_launch.core.builder import build_plan
from glm45_launch.core.flags import split_flags
from glm45_launch.core.hostfile import Hostfile
from glm45_launch.core.plan import LaunchSpec
from glm45_launch.core.quoting import REMOTE_SEPARATOR, printable, shell_join
from glm45_launch.errors import LaunchError
from glm45_launch.recipes import BASH_RECIPE, MODELS, Argv, Recipe
from glm45_launch.recipes.base import PLACEHOLDERS
from glm45_launch.sandbox.parity import PREFIX_GROUP as PREFIX
from glm45_launch.sandbox.parity import RENV, ParityReport, ScriptRun, compare, known_flags
from glm45_launch.sandbox.record import DEFAULT_RECORDED, Origin

_INLINE = {"python": "-c", "python3": "-c", "bash": "-c", "sh": "-c", "perl": "-e", "node": "-e", "ruby": "-e"}


def inline_code(argv: Sequence[str]) -> bool:
    """``python3 -c CODE`` and the like: code the recorder does not run."""
    return len(argv) > 2 and argv[0] in _INLINE and _INLINE[argv[0]] in argv[1:3]


def _at(origin: Origin | None) -> str:
    return f"line {origin.line}: " if origin else ""


@functools.cache
def valued_flags() -> frozenset[str]:
    """Train flags that take a value in some recipe: the recipes' argument tuples and groups."""
    from glm45_launch.recipes import air_p2p, glm45_bash, python_launcher

    groups: list[Sequence[str]] = [m.args for m in MODELS.values()]
    for module in (glm45_bash, air_p2p, python_launcher):
        for value in vars(module).values():
            if isinstance(value, tuple) and value and all(isinstance(w, str) for w in value):
                groups.append(value)
            elif isinstance(value, Recipe):
                groups += list(value.groups.values())
    return frozenset(f for words in groups for f, values in split_flags(words) if f and values)


_PLACEHOLDER = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")


def attribute(words: Sequence[str], groups: Mapping[str, set[str]]) -> dict[str, Argv]:
    """Cut ``words`` into consecutive groups (in ``groups`` order), matching as many flags
    to a group that passes them as possible; ties keep a flag with the one before it."""
    names = list(groups)
    items = split_flags(words)
    n, m = len(items), len(names)
    score = [[1 if flag and flag in groups[g] else 0 for g in names] for flag, _ in items]
    # best[i][g]: most matches for items i.. when item i-1 sits in group g (later ones >= g)
    best = [[0] * m for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        run = -1
        for g in range(m - 1, -1, -1):
            run = max(run, score[i][g] + best[i + 1][g])
            best[i][g] = run
    out: dict[str, list[str]] = {g: [] for g in names}
    cur = 0
    for i, (flag, values) in enumerate(items):
        target = best[i][cur]
        fits = [h for h in range(cur, m) if score[i][h] + best[i + 1][h] == target]
        h = next((h for h in fits if score[i][h]), fits[0])  # a flag in its own group first
        out[names[h]] += ([flag] if flag else []) + list(values)
        cur = h
    return {g: tuple(w) for g, w in out.items()}


def _sub(value: str, placeholder: str) -> tuple[re.Pattern[str], str]:
    # not in the middle of a longer name/address/path: 10.0.0.1 is not in 10.0.0.10
    return re.compile(rf"(?<![\w.-]){re.escape(value)}(?![\w-]|\.\w)"), placeholder


@dataclass
class _Templater:
    """Words -> words with placeholders; defaults collected for the placeholders set."""

    subs: list[tuple[re.Pattern[str], str]]
    gpus: str
    defaults: dict[str, str] = field(default_factory=dict)

    def word(self, word: str) -> str:
        if _PLACEHOLDER.search(word):
            return word  # it would be filled by the plan: left as is, and `verify` reports it
        for pattern, placeholder in self.subs:
            word = pattern.sub(lambda _m, p=placeholder: p, word)
        return word

    def words(self, words: Sequence[str]) -> Argv:
        return tuple(self.word(w) for w in words)

    def _default(self, name: str, value: str) -> bool:
        """Use ``{name}`` for ``value`` if that is the value it already stands for (or the first)."""
        return self.defaults.setdefault(name, value) == value

    def ray(self, words: Sequence[str]) -> Argv:
        """A ``ray start``/``ray job submit`` argv with its ports, host and GPU count templated."""
        out: list[str] = []
        for i, word in enumerate(self.words(words)):
            prev = out[-1] if out else ""
            if prev == "--num-gpus" and word == self.gpus and i > 0:
                word = "{gpus_per_node}"
            elif (m := re.fullmatch(r"--dashboard-host=(.+)", word)) and "{" not in m.group(1) \
                    and self._default("dashboard_host", m.group(1)):
                word = "--dashboard-host={dashboard_host}"
            elif (m := re.fullmatch(r"--dashboard-port=(\d+)", word)) and self._default("dashboard_port", m.group(1)):
                word = "--dashboard-port={dashboard_port}"
            elif (m := re.fullmatch(r"--address=\{head\}:(\d+)", word)) and self._default("ray_port", m.group(1)):
                word = "--address={head}:{ray_port}"
            elif (m := re.fullmatch(r"--address=http://127\.0\.0\.1:(\d+)", word)) \
                    and self._default("dashboard_port", m.group(1)):
                word = "--address=http://127.0.0.1:{dashboard_port}"
            out.append(word)
        return tuple(out)


@dataclass
class Imported:
    """An imported recipe and what could not be carried over."""

    recipe: Recipe
    ssh_user: str
    warnings: list[str] = field(default_factory=list)
    unrepresentable: list[str] = field(default_factory=list)


def import_run(run: ScriptRun, *, head: str, base_dir: str, hostfile: Hostfile, name: str = "imported",
               description: str = "") -> Imported:
    """The recipe that plans back to what ``run`` recorded (see ``verify``)."""
    if not head:
        raise LaunchError("import: no head address (set MLP_WORKER_0_HOST, --env or --head)")
    if not base_dir or base_dir.strip("/") == "":
        raise LaunchError(f"import: BASE_DIR {base_dir!r} is too short to be recognised in paths")
    invocations = run.invocations
    warnings: list[str] = []
    lost: list[str] = []
    gpus = str(hostfile.gpus_per_node())
    tpl = _Templater([_sub(base_dir.rstrip("/") or base_dir, "{base_dir}"), _sub(head, "{head}")], gpus)
    starts = [i for i, a in enumerate(invocations) if a[:3] == ["ray", "start", "--head"]]
    submits = [i for i, a in enumerate(invocations) if a[:3] == ["ray", "job", "submit"]]
    if not starts:
        raise LaunchError("import: the script never ran `ray start --head`: not a launcher this recipe shape describes")
    if len(submits) != 1:
        raise LaunchError(f"import: the script ran `ray job submit` {len(submits)} times (want exactly once)")
    start, submit_at = starts[0], submits[0]
    if submit_at < start:
        raise LaunchError("import: `ray job submit` ran before `ray start --head`")
    cleanup: list[Argv] = []
    workers: list[list[str]] = []
    origins = run.origins()
    for i, argv in enumerate(invocations):
        if i == start or i == submit_at:
            continue
        origin = origins[i]
        if origin is not None and origin.subshell and inline_code(argv):
            lost.append(f"{_at(origin)}a value computed by inline code `{shell_join(argv)[:160]}` (the recorder "
                        "does not run it: what the script did with its output is unknown)")
        elif argv[:1] == ["ssh"]:
            workers.append(argv)
        elif i < start and inline_code(argv):
            lost.append(f"{_at(origin)}`{shell_join(argv)[:160]}` (inline code in the cleanup: not interpreted)")
        elif i < start and argv[0] not in DEFAULT_RECORDED:
            lost.append(f"{_at(origin)}`{shell_join(argv)[:160]}` (a command the recorder does not know: "
                        "recorded, not run; import does not vouch for it)")
        elif i < start:
            cleanup.append(tpl.words(argv))
        else:
            lost.append(f"`{shell_join(argv)}` (after `ray start --head`; a recipe has no place for it)")
    for extra in starts[1:]:
        lost.append(f"`{shell_join(invocations[extra])}` (a second `ray start --head`)")

    head_start = tpl.ray(invocations[start])
    ssh_user, worker_commands = _workers(workers, tpl, warnings, lost)

    submit_argv = invocations[submit_at]
    if "--" not in submit_argv:
        raise LaunchError(f"import: `ray job submit` has no '--' before the entry point: {shell_join(submit_argv)[:200]}")
    cut = submit_argv.index("--")
    submit_words: list[str] = []
    env_vars: tuple[tuple[str, str], ...] = ()
    for word in submit_argv[: cut + 1]:
        if word.startswith(RENV):
            env_vars = _runtime_env(word[len(RENV):], lost)
            word = RENV + "{runtime_env_json}"
        submit_words.append(word)
    submit = tpl.ray(submit_words)
    rest = list(submit_argv[cut + 1 :])
    entry_len = next((i for i, w in enumerate(rest) if w.startswith("--")), len(rest))
    entry = tuple("{entry}" if w == "train.py" and i == 1 else tpl.word(w) for i, w in enumerate(rest[:entry_len]))
    for flag, values in split_flags(rest[entry_len:]):
        if flag in valued_flags() and not values:
            lost.append(f"{_at(origins[submit_at])}`{flag}` of `ray job submit` lost its value (an empty variable, "
                        "or one computed by code the recorder does not run)")
    groups = attribute(rest[entry_len:], known_flags())
    prefix = list(groups.pop(PREFIX))
    templated_prefix: list[str] = []
    for flag, values in split_flags(prefix):
        vals = list(tpl.words(values))
        if flag == "--actor-num-nodes" and len(vals) == 1 and vals[0].isdigit():
            tpl.defaults["actor_num_nodes"] = vals[0]
            vals = ["{actor_num_nodes}"]
        elif flag == "--actor-num-gpus-per-node" and vals == [gpus]:
            vals = ["{gpus_per_node}"]
        templated_prefix += ([flag] if flag else []) + vals
    order = tuple(g for g in BASH_RECIPE.group_order)
    head_exports = _head_exports(run.head_env, tpl, warnings)
    for key, value in env_vars:
        if head in value or base_dir in value:
            warnings.append(f"runtime env {key}={value} holds this rack's head address or BASE_DIR literally "
                            "(the runtime env takes no placeholders; ${VAR}s are expanded by Ray)")
    recipe = Recipe(
        name=name,
        description=description or "imported from a bash launcher",
        groups={g: tpl.words(groups.get(g, ())) for g in order},
        group_order=order,
        train_prefix=tuple(templated_prefix),
        entry=entry,
        env_vars=env_vars,
        head_cleanup=tuple(cleanup),
        head_exports=head_exports,
        head_start=head_start,
        worker_commands=worker_commands,
        submit=submit,
        defaults={**BASH_RECIPE.defaults, **tpl.defaults},
    )
    return Imported(recipe, ssh_user, [printable(w) for w in warnings], lost)


def _workers(workers: list[list[str]], tpl: _Templater, warnings: list[str],
             lost: list[str]) -> tuple[str, tuple[Argv, ...]]:
    if not workers:
        warnings.append("no worker was started (one-host hostfile?): the worker commands are the bash recipe's")
        return "root", BASH_RECIPE.worker_commands
    templates: dict[tuple[Argv, ...], list[str]] = {}
    users = set()
    for argv in workers:
        if len(argv) != 3 or "@" not in argv[1]:
            lost.append(f"`{shell_join(argv)[:200]}` (want `ssh USER@HOST COMMAND`; ssh options have no place)")
            continue
        user, host = argv[1].split("@", 1)
        users.add(user)
        host_tpl = _Templater([_sub(host, "{host}"), *tpl.subs], tpl.gpus, tpl.defaults)
        try:
            commands = tuple(host_tpl.ray(shlex.split(part)) for part in argv[2].split(REMOTE_SEPARATOR))
        except ValueError as exc:
            lost.append(f"ssh {argv[1]}: remote command not splittable ({exc})")
            continue
        templates.setdefault(commands, []).append(host)
    if len(users) > 1:
        warnings.append(f"ssh users differ ({', '.join(sorted(users))}); using {sorted(users)[0]}")
    if not templates:
        return "root", BASH_RECIPE.worker_commands
    if len(templates) > 1:
        first = next(iter(templates))
        others = [h for t, hosts in templates.items() if t != first for h in hosts]
        lost.append(f"workers run different commands ({', '.join(others)} differ from the first); "
                    "the first one's are used")
    return sorted(users)[0] if users else "root", next(iter(templates))


def _runtime_env(text: str, lost: list[str]) -> tuple[tuple[str, str], ...]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise LaunchError(f"import: --runtime-env-json is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise LaunchError("import: --runtime-env-json is not a JSON object")
    for key in data:
        if key != "env_vars":
            lost.append(f"runtime env key {key!r} (a recipe holds env_vars only)")
    env = data.get("env_vars", {})
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise LaunchError("import: runtime env_vars must map names to strings")
    return tuple(env.items())


def _head_exports(head_env: Mapping[str, str] | None, tpl: _Templater,
                  warnings: list[str]) -> tuple[tuple[str, str], ...]:
    if head_env is None:
        warnings.append("the head's exported env could not be captured: the bash recipe's exports are used")
        return BASH_RECIPE.head_exports
    known = [k for k, _ in BASH_RECIPE.head_exports]
    keys = [k for k in known if k in head_env] + sorted(k for k in head_env if k not in known)
    return tuple((k, tpl.word(head_env[k])) for k in keys)


def verify(imported: Imported, run: ScriptRun, *, head: str, base_dir: str, hostfile: Hostfile,
           socket_ifname: str | None = None, script: str = "script") -> ParityReport:
    """Plan ``imported`` with the recording's inputs and compare it with the recording, strictly:
    what the recipe would not reproduce (see the module) is a difference too."""
    spec = LaunchSpec(hostfile=hostfile, head=head, base_dir=base_dir, socket_ifname=socket_ifname,
                      ssh_user=imported.ssh_user, recipe=imported.recipe)
    report = compare(build_plan(spec), run, script)
    rec = run.recording
    strict = [f"not imported: {u}" for u in imported.unrepresentable]
    if rec.returncode != 0 and rec.complete:
        strict.append(f"the script exited with status {rec.returncode}")
    strict += [f"the script writes {path} (skipped in the recording): the recipe would not" for path in rec.outside_writes]
    for poll in rec.polls:
        if poll.kind == "computed":
            strict.append(f"not imported: {_at(poll.origin)}a value computed by inline code "
                          f"`{shell_join(poll.argv)[:120]}` (the recorder answered {poll.answer}; a recipe has no "
                          "place for the computation)")
        else:
            strict.append(f"{_at(poll.origin)}the script polls `{shell_join(poll.argv)[:100]}`: the recipe would not")
    strict += [f"the script waits (`{shell_join(w.test)[:100]}`): the recipe would not" for w in rec.waits]
    strict += [f"{n}: the recipe would not run it" for n in rec.notes if n.startswith("skipped `")]
    report.differences += [d for d in strict if d not in report.differences]
    return report
