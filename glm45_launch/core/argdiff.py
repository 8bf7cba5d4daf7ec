"""Compare argument lists flag by flag: added, removed, changed, moved.

Words are cut into ``(flag, values)`` items (``split_flags``); an item is known by its flag
and its occurrence (the second ``--moe-token-dispatcher-type`` is a different item from the
first). Used for the plan's "Overrides" section and by ``parity``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from glm45_launch.core.flags import split_flags
from glm45_launch.core.quoting import shell_join
from glm45_launch.recipes import Argv, Recipe, fill_all

ADDED, REMOVED, CHANGED, MOVED = "added", "removed", "changed", "moved"


@dataclass(frozen=True)
class ArgChange:
    """One difference between an expected and an actual argument list.

    ``old`` is the expected item's values, ``new`` the actual one's (``None`` where the
    item is absent). ``after`` names the flag a moved item now follows.
    """

    group: str
    flag: str
    action: str
    old: Argv | None = None
    new: Argv | None = None
    after: str | None = None
    now_in: str | None = None  # a moved item's group at its new place, when that differs

    def __str__(self) -> str:
        where = f"{self.group} " if self.group else ""
        head = f"{where}{self.flag or '(words before the first flag)'}"
        if self.action == CHANGED:
            return f"{head}: {show_values(self.old)} -> {show_values(self.new)}"
        if self.action == ADDED:
            return f"{head}: added" + (f" ({show_values(self.new)})" if self.new else "")
        if self.action == REMOVED:
            return f"{head}: removed" + (f" (was {show_values(self.old)})" if self.old else "")
        place = f"now in {self.now_in}, " if self.now_in and self.now_in != self.group else "now "
        return f"{head}: moved" + (f" ({place}after {self.after})" if self.after else f" ({place}first)")

    def filled(self, values: Mapping[str, str]) -> ArgChange:
        """The change with the recipe's ``{placeholders}`` filled in."""
        return replace(self, old=None if self.old is None else fill_all(self.old, values),
                       new=None if self.new is None else fill_all(self.new, values))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"group": self.group, "flag": self.flag, "action": self.action}
        if self.old is not None:
            out["old"] = list(self.old)
        if self.new is not None:
            out["new"] = list(self.new)
        if self.after is not None:
            out["after"] = self.after
        if self.now_in is not None:
            out["now_in"] = self.now_in
        return out


@dataclass(frozen=True)
class EnvChange:
    """One difference between two ordered env mappings."""

    key: str
    action: str
    old: str | None = None
    new: str | None = None
    after: str | None = None

    def __str__(self) -> str:
        if self.action == CHANGED:
            return f"env {self.key}: {self.old} -> {self.new}"
        if self.action == ADDED:
            return f"env {self.key}: added = {self.new}"
        if self.action == REMOVED:
            return f"env {self.key}: removed (was {self.old})"
        return f"env {self.key}: moved" + (f" (now after {self.after})" if self.after else " (now first)")

    def filled(self, values: Mapping[str, str]) -> EnvChange:
        return self  # the runtime env holds no placeholders

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"env": self.key, "action": self.action}
        for name in ("old", "new", "after"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out


def show_values(values: Argv | None) -> str:
    if values is None:
        return "(absent)"
    return shell_join(values) if values else "(no value)"


Key = tuple[str, int]


def keyed_items(words: Sequence[str]) -> list[tuple[Key, Argv]]:
    """``((flag, occurrence), values)`` for every item of ``words``, in order."""
    seen: dict[str, int] = {}
    out = []
    for flag, values in split_flags(words):
        n = seen.get(flag, 0)
        seen[flag] = n + 1
        out.append(((flag, n), values))
    return out


def _lcs_keys(a: Sequence[Key], b: Sequence[Key]) -> set[Key]:
    """Keys on a longest common subsequence of ``a`` and ``b`` (both hold unique keys)."""
    n, m = len(a), len(b)
    table = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            table[i][j] = table[i + 1][j + 1] + 1 if a[i] == b[j] else max(table[i + 1][j], table[i][j + 1])
    keep: set[Key] = set()
    i = j = 0
    while i < n and j < m:
        if a[i] == b[j]:
            keep.add(a[i])
            i += 1
            j += 1
        elif table[i + 1][j] >= table[i][j + 1]:
            i += 1
        else:
            j += 1
    return keep


def diff_args(expected: Sequence[tuple[str, Sequence[str]]], actual: Sequence[str],
              hints: Mapping[str, set[str]] | None = None) -> list[ArgChange]:
    """Differences of ``actual`` words from ``expected`` ``(group, words)`` pairs.

    The expected items carry their group. An item only in ``actual`` goes to a group that
    ``hints`` (group -> flags it usually passes) gives for its flag, if that group lies
    between its neighbours' groups; else to the group of the closest expected item before it.
    """
    exp: list[tuple[Key, Argv, str]] = []
    flat: list[str] = []
    group_of_word: list[str] = []
    for group, words in expected:
        flat.extend(words)
        group_of_word.extend([group] * len(words))
    position = 0
    for key, values in keyed_items(flat):
        # the group of an item is the group of its first word
        exp.append((key, values, group_of_word[position] if position < len(group_of_word) else ""))
        position += (1 if key[0] else 0) + len(values)
    act = keyed_items(actual)
    exp_map = {k: (v, g) for k, v, g in exp}
    act_map = dict(act)
    common_exp = [k for k, _, _ in exp if k in act_map]
    common_act = [k for k, _ in act if k in exp_map]
    in_order = _lcs_keys(common_exp, common_act)
    first_group = expected[0][0] if expected else ""

    changes: list[ArgChange] = []
    for key, values, group in exp:
        if key not in act_map:
            changes.append(ArgChange(group, key[0], REMOVED, old=values))
    rank = {g: i for i, (g, _) in enumerate(expected)}
    following: list[str | None] = []
    nxt: str | None = None
    for key, _ in reversed(act):
        following.append(nxt)
        if key in exp_map and key in in_order:
            nxt = exp_map[key][1]
    following.reverse()
    current = first_group
    previous: str | None = None
    for index, (key, values) in enumerate(act):
        if key in exp_map:
            old, group = exp_map[key]
            if old != values:
                changes.append(ArgChange(group, key[0], CHANGED, old=old, new=values))
            if key not in in_order:
                changes.append(ArgChange(group, key[0], MOVED, after=previous, now_in=current))
            else:
                current = group
        else:
            group = current
            upper = rank.get(following[index] or "", len(rank))
            for g, flags in (hints or {}).items():
                if key[0] in flags and rank.get(current, 0) <= rank.get(g, -1) <= upper:
                    group = g
                    break
            changes.append(ArgChange(group, key[0], ADDED, new=values))
            if group != current and rank.get(group, -1) >= 0:
                current = group
        previous = key[0] or None
    # list by group (expected order), construction order within a group
    return sorted(changes, key=lambda c: rank.get(c.group, len(rank)))


def diff_groups(before: Mapping[str, Sequence[str]], after: Mapping[str, Sequence[str]],
                order: Sequence[str]) -> list[ArgChange]:
    """Per-group differences (a flag is attributed to the group it is in on both sides)."""
    changes: list[ArgChange] = []
    for group in order:
        changes += diff_args([(group, tuple(before.get(group, ())))], tuple(after.get(group, ())))
    return changes


def diff_env(expected: Sequence[tuple[str, str]], actual: Sequence[tuple[str, str]]) -> list[EnvChange]:
    """Key-by-key differences of ``actual`` from ``expected`` (order counts: moved)."""
    exp, act = dict(expected), dict(actual)
    changes: list[EnvChange] = []
    for key, value in exp.items():
        if key not in act:
            changes.append(EnvChange(key, REMOVED, old=value))
        elif act[key] != value:
            changes.append(EnvChange(key, CHANGED, old=value, new=act[key]))
    for key, value in act.items():
        if key not in exp:
            changes.append(EnvChange(key, ADDED, new=value))
    common_exp = [(k, 0) for k in exp if k in act]
    common_act = [(k, 0) for k in act if k in exp]
    in_order = _lcs_keys(common_exp, common_act)
    previous = None
    for key in act:
        if key in exp and (key, 0) not in in_order:
            changes.append(EnvChange(key, MOVED, after=previous))
        previous = key
    return changes


def recipe_changes(before: Recipe, after: Recipe) -> tuple[ArgChange | EnvChange, ...]:
    """How ``after`` differs from ``before``: train args per group, then the runtime env."""
    order = list(after.group_order) + [g for g in before.group_order if g not in after.group_order]
    return (*diff_groups(before.groups, after.groups, order), *diff_env(before.env_vars, after.env_vars))
