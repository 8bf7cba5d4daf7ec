"""User overrides of a recipe: ``--set``, ``--unset``, ``--extra-args``, ``--env``. Pure.

* ``--set GROUP.--flag=VALUE``: replace the flag's values in that group (VALUE is split like
  a shell would: ``--set "ROLLOUT.--rollout-stop-token-ids=1 2 3"``); a flag the group does
  not have is appended to it. ``GROUP.--flag`` (no ``=``) sets a switch.
* ``--unset GROUP.--flag``: remove every occurrence of the flag from the group.
* ``--extra-args "..."``: shell-split words appended after every group (group ``EXTRA``), as
  the upstream Python launchers append ``extra_args`` last.
* ``--env K=V``: the runtime env's ``K``: replaced in place, or appended.
* ``--extra-env-vars TEXT``: upstream's Python launchers' form of ``--env``: a JSON object, or
  ``K=V`` words separated by spaces.

Group names are case-insensitive and may carry the bash array suffix (``rollout_args``).
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, replace

from glm45_launch.core.argdiff import ArgChange, EnvChange, recipe_changes
from glm45_launch.core.flags import has_flag, set_flag, unset_flag
from glm45_launch.core.plan import Edit, Overrides
from glm45_launch.core.runtime_env import ENV_NAME, set_env
from glm45_launch.core.secrets import MASK, SECRET_FLAGS, is_secret_env
from glm45_launch.errors import LaunchError
from glm45_launch.recipes import Argv, Recipe

EXTRA_GROUP = "EXTRA"
_FLAG = re.compile(r"^--[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Applied:
    """A recipe after overrides, and how it differs from the one before."""

    recipe: Recipe
    changes: tuple[ArgChange | EnvChange, ...]  # train args per group, then the runtime env
    warnings: tuple[str, ...]


def _target(text: str) -> str:
    """``text`` as an error may show it: cut to 200 characters, and with whatever follows a
    secret flag or a secret variable's name masked (``--set WANDB.--wandb-key KEY`` typed with
    a space instead of ``=`` must not echo the key)."""
    for name in sorted(SECRET_FLAGS, key=len, reverse=True) + [w for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text)
                                                                 if is_secret_env(w)]:
        at = text.find(name)
        if at >= 0 and text[at + len(name):].strip(" =:"):
            text = text[: at + len(name)] + " " + MASK
            break
    return repr(text if len(text) <= 200 else text[:200] + "...")


def _split_target(text: str, option: str) -> tuple[str, str]:
    group, dot, rest = text.partition(".")
    if not dot or not group or not rest.startswith("--"):
        raise LaunchError(f"{option} {_target(text)}: want GROUP.--flag" + ("=VALUE" if option == "--set" else ""))
    return group.strip(), rest


def parse_set(text: str) -> Edit:
    """``GROUP.--flag=VALUE`` (or ``GROUP.--flag`` for a switch) -> ``Edit``."""
    group, rest = _split_target(text, "--set")
    flag, eq, value = rest.partition("=")
    if not _FLAG.match(flag):
        raise LaunchError(f"--set {_target(text)}: {_target(flag)} is not a --flag")
    try:
        values = tuple(shlex.split(value)) if eq else ()
    except ValueError as exc:
        raise LaunchError(f"--set {_target(text)}: cannot split the value: {exc}") from None
    for word in values:
        if word.startswith("--"):
            raise LaunchError(f"--set {_target(text)}: value {word[:60]!r} looks like a flag (one flag per --set)")
    return Edit(group, flag, values, f"--set {text}")


def parse_unset(text: str) -> Edit:
    """``GROUP.--flag`` -> ``Edit`` that removes it."""
    group, flag = _split_target(text, "--unset")
    if not _FLAG.match(flag):
        raise LaunchError(f"--unset {_target(text)}: {_target(flag)} is not a --flag (want GROUP.--flag)")
    return Edit(group, flag, None, f"--unset {text}")


def parse_env(text: str, option: str = "--env") -> tuple[str, str]:
    """``K=V`` -> ``(K, V)``; V may be empty and may hold ``${VAR}`` for Ray."""
    key, eq, value = text.partition("=")
    if not eq:
        raise LaunchError(f"{option} {_target(text)}: want KEY=VALUE")
    if not ENV_NAME.match(key):
        raise LaunchError(f"{option} {_target(text)}: {_target(key)} is not an environment variable name")
    return key, value


def parse_extra_args(texts: Sequence[str]) -> Argv:
    """Each ``--extra-args`` text shell-split, concatenated."""
    words: list[str] = []
    for text in texts:
        try:
            words += shlex.split(text)
        except ValueError as exc:
            raise LaunchError(f"--extra-args {text!r}: cannot split: {exc}") from None
    return tuple(words)


def parse_extra_env_vars(text: str) -> tuple[tuple[str, str], ...]:
    """Upstream's ``--extra-env-vars``: a JSON object of strings, else ``K=V`` words split on spaces."""
    try:
        data = json.loads(text)
    except ValueError:
        return tuple(parse_env(w, "--extra-env-vars") for w in text.split(" ") if w.strip())
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise LaunchError(f"--extra-env-vars {_target(text)}: want a JSON object of strings, or K=V words")
    return tuple(parse_env(f"{k}={v}", "--extra-env-vars") for k, v in data.items())


def build_overrides(sets: Sequence[str] = (), unsets: Sequence[str] = (), extra_args: Sequence[str] = (),
                    env: Sequence[str] = (), extra_env_vars: Sequence[str] = ()) -> Overrides:
    """Parse the command-line forms (``--set`` edits first, then ``--unset``; ``--env``, then
    ``--extra-env-vars``)."""
    edits = tuple(parse_set(s) for s in sets) + tuple(parse_unset(u) for u in unsets)
    extra_env = tuple(kv for text in extra_env_vars for kv in parse_extra_env_vars(text))
    return Overrides(edits, parse_extra_args(extra_args), tuple(parse_env(e) for e in env) + extra_env)


def resolve_group(name: str, order: Sequence[str], option: str) -> str:
    """The recipe's group called ``name`` (case-insensitive, ``_ARGS`` suffix allowed)."""
    wanted = name.upper().removesuffix("_ARGS")
    for group in order:
        if group.upper().removesuffix("_ARGS") == wanted:
            return group
    raise LaunchError(f"{option}: unknown group {name!r} (groups: {', '.join(order)})")


def apply_edit(groups: dict[str, Argv], order: Sequence[str], edit: Edit) -> list[str]:
    """Apply one edit to ``groups`` in place; returns warnings."""
    group = resolve_group(edit.group, order, edit.option)
    words = groups.get(group, ())
    warnings: list[str] = []
    others = [g for g in order if g != group and has_flag(groups.get(g, ()), edit.flag)]
    if edit.values is None:
        if not has_flag(words, edit.flag):
            hint = f" (it is in {', '.join(others)})" if others else ""
            raise LaunchError(f"{edit.option}: group {group} has no {edit.flag}{hint}")
        groups[group] = unset_flag(words, edit.flag)
        return warnings
    groups[group] = set_flag(words, edit.flag, edit.values)
    later = [g for g in others if order.index(g) > order.index(group)]
    if later:
        warnings.append(
            f"{edit.option}: {later[-1]} also passes {edit.flag} and comes later: the trainer keeps "
            f"{later[-1]}'s value"
        )
    return warnings


def apply_overrides(recipe: Recipe, overrides: Overrides) -> Applied:
    """``recipe`` with ``overrides`` applied, and every difference they make."""
    order = tuple(recipe.group_order)
    groups: dict[str, Argv] = {g: tuple(recipe.groups.get(g, ())) for g in order}
    warnings: list[str] = []
    for edit in overrides.edits:
        warnings += apply_edit(groups, order, edit)
    if overrides.extra_args:
        if EXTRA_GROUP not in order:
            order = (*order, EXTRA_GROUP)
        groups[EXTRA_GROUP] = groups.get(EXTRA_GROUP, ()) + overrides.extra_args
        if order[-1] != EXTRA_GROUP:
            warnings.append(f"--extra-args: recipe group {EXTRA_GROUP} is not last; the words go there anyway")
    env = tuple(recipe.env_vars)
    for key, value in overrides.env:
        env = set_env(env, key, value)
    new = replace(recipe, groups=groups, group_order=order, env_vars=env)
    return Applied(recipe=new, changes=recipe_changes(recipe, new), warnings=tuple(warnings))
