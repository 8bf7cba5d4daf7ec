"""The one reader of train.py-style flags: how argparse sees a word list.

A flag is a word starting with ``--``; its values are the words after it up to the next
flag. ``--flag=value`` is the flag with ``value`` first. argparse keeps the *last*
occurrence of a repeated flag, so every reader here does too; editing keeps order.
"""

from __future__ import annotations

from collections.abc import Sequence

from glm45_launch.recipes.base import Argv


def split_flags(words: Sequence[str]) -> list[tuple[str, Argv]]:
    """Split a flat word list into (flag, values) items, keeping order and repeats.

    A value is any word after a flag that does not itself start with ``--``. Words before
    the first flag come out under the flag ``""``. ``--flag=value`` stays one item named
    ``--flag=value`` (editing keeps it as written; readers use :func:`last_values`).
    """
    items: list[tuple[str, list[str]]] = []
    for word in words:
        if word.startswith("--") or not items:
            items.append((word if word.startswith("--") else "", [] if word.startswith("--") else [word]))
        else:
            items[-1][1].append(word)
    return [(flag, tuple(values)) for flag, values in items]


def _named(flag: str, values: Argv) -> tuple[str, Argv]:
    """``("--x=1", ("2",))`` -> ``("--x", ("1", "2"))``."""
    if "=" in flag:
        name, value = flag.split("=", 1)
        return name, (value, *values)
    return flag, values


def last_values(words: Sequence[str]) -> dict[str, Argv]:
    """Every flag's values as argparse keeps them (the last occurrence wins)."""
    out: dict[str, Argv] = {}
    for flag, values in split_flags(words):
        if flag:
            name, vals = _named(flag, values)
            out[name] = vals
    return out


def flag_names(words: Sequence[str]) -> list[str]:
    """The flags of ``words`` in order, repeats kept (``--flag=value`` named ``--flag``)."""
    return [_named(flag, ())[0] for flag, _ in split_flags(words) if flag]


def flag_values(words: Sequence[str], flag: str) -> Argv | None:
    """The values of the last ``flag`` in ``words`` (``--flag V...`` or ``--flag=V``), else None."""
    return last_values(words).get(flag)


def flag_value(words: Sequence[str], flag: str) -> str | None:
    """The last value given to ``flag`` ("" when it has none), else None."""
    values = flag_values(words, flag)
    if values is None:
        return None
    return values[0] if values else ""


def flag_int(words: Sequence[str], flag: str) -> int | None:
    """``flag``'s last value as a whole number, None when absent or not a number."""
    value = flag_value(words, flag)
    return int(value) if value and value.isdigit() else None


def has_flag(words: Sequence[str], flag: str) -> bool:
    return flag_values(words, flag) is not None


def set_flag(words: Sequence[str], flag: str, values: Sequence[str]) -> Argv:
    """``words`` with ``flag``'s values replaced at its first occurrence (later ones
    dropped), or ``flag VALUES`` appended when absent."""
    out: list[str] = []
    done = False
    for name, vals in split_flags(words):
        if name == flag:
            if not done:
                out += [flag, *values]
                done = True
            continue
        out += [name, *vals] if name else list(vals)
    if not done:
        out += [flag, *values]
    return tuple(out)


def unset_flag(words: Sequence[str], flag: str) -> Argv:
    """``words`` without any occurrence of ``flag`` (and its values)."""
    out: list[str] = []
    for name, vals in split_flags(words):
        if name != flag:
            out += [name, *vals] if name else list(vals)
    return tuple(out)


def merge_flags(words: Sequence[str], flags: Sequence[str]) -> Argv:
    """``words`` with every item of ``flags`` set: replaced in place, or appended in order."""
    out = tuple(words)
    for flag, values in split_flags(flags):
        out = set_flag(out, flag, values)
    return out
