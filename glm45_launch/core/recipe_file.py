"""Recipes as TOML files: ``load_recipe(path)`` and ``dump_recipe(recipe)``.

A recipe file is a serialisation of :class:`~glm45_launch.recipes.Recipe`::

    name = "my-recipe"
    description = "..."
    group_order = ["MODEL", "CKPT", ...]
    train_prefix = ["--actor-num-nodes", "{actor_num_nodes}", ...]
    entry = ["python3", "{entry}"]
    head_cleanup = [["pkill", "-9", "sglang"], ...]
    head_start = ["ray", "start", "--head", ...]
    worker_commands = [["pkill", "-9", "sglang"], ...]
    submit = ["ray", "job", "submit", ..., "--"]

    [head_exports]        # ordered: exported before ray start / job submit
    PYTHONUNBUFFERED = "1"

    [head_start_env]      # optional, for one command: `ray start --head` / `ray job submit` /
    [submit_env]          # each worker's `ray start` (as `env K=V ray start ...`)
    [worker_env]

    [env_vars]            # ordered: the runtime env's env_vars
    NCCL_CUMEM_ENABLE = "0"

    [defaults]            # placeholder defaults, merged over the bash recipe's
    actor_num_nodes = "8"

    [groups]              # train.py arguments by group
    CKPT = ["--hf-checkpoint", "{base_dir}/{ckpt_name}", ...]

Every key is optional: a missing one (or a missing group of ``[groups]``, or a missing key
of ``[defaults]``) is taken from the bash recipe, so a file may hold only what it changes.
``[defaults]`` knows ``actor_num_nodes``, ``ray_port``, ``dashboard_port``,
``dashboard_host`` and ``entry``, and checks their values; ``X = []`` empties a group, and
``group_order`` decides which groups are passed. An empty ``MODEL`` group is filled from ``--model``. Words keep ``{name}``
placeholders (see ``recipes/base.py``); other braces are literal.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from glm45_launch.core.hostfile import valid_hostname
from glm45_launch.errors import LaunchError, read_user_file

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]
from glm45_launch.core.flags import split_flags
from glm45_launch.recipes import BASH_RECIPE, Argv, Recipe

_LISTS = ("group_order", "train_prefix", "entry", "head_start", "submit")
_NESTED = ("head_cleanup", "worker_commands")
_TABLES = ("head_exports", "env_vars", "defaults")
_EXTRA_DEFAULTS = ("rollout_num_gpus",)  # placeholders other recipes use (the Air recipe's)
_COMMAND_ENV = ("head_start_env", "submit_env", "worker_env")  # optional; written only when not empty
_PORTS = ("ray_port", "dashboard_port")
_KEYS = ("name", "description", *_LISTS, *_NESTED, *_TABLES, *_COMMAND_ENV, "groups")
_GROUP_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def load_recipe(path: str | Path) -> Recipe:
    """Read a recipe file; every problem is a ``LaunchError`` ``FILE: reason``."""
    p = Path(path)
    try:
        text = read_user_file(p, "recipe file").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LaunchError(f"{p}: not UTF-8 text (byte {exc.start})") from None
    return parse_recipe_text(text, str(p), default_name=p.stem)


def parse_recipe_text(text: str, source: str = "<recipe>", default_name: str = "recipe") -> Recipe:
    """Parse recipe TOML ``text``; ``source`` names it in messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise LaunchError(f"{source}: not valid TOML: {exc}") from None
    return recipe_from_dict(data, source, default_name)


def recipe_from_dict(data: Mapping[str, Any], source: str = "<recipe>", default_name: str = "recipe") -> Recipe:
    """Build a ``Recipe`` from parsed TOML, filling missing keys from the bash recipe."""
    unknown = [k for k in data if k not in _KEYS]
    if unknown:
        raise LaunchError(f"{source}: unknown key {unknown[0]!r} (known: {', '.join(_KEYS)})")
    base = BASH_RECIPE
    kw: dict[str, Any] = {}
    for key in ("name", "description"):
        kw[key] = _string(data[key], source, key) if key in data else None
    kw["name"] = kw["name"] or default_name
    kw["description"] = kw["description"] if kw["description"] is not None else f"recipe file {source}"
    for key in _LISTS:
        kw[key] = _words(data[key], source, key) if key in data else getattr(base, key)
    for key in _NESTED:
        if key in data:
            value = data[key]
            if not isinstance(value, list):
                raise LaunchError(f"{source}: {key}: expected a list of commands, got {_kind(value)}")
            kw[key] = tuple(_words(c, source, f"{key}[{i}]") for i, c in enumerate(value))
        else:
            kw[key] = getattr(base, key)
    for key in ("head_exports", "env_vars", *_COMMAND_ENV):
        kw[key] = _table(data[key], source, key) if key in data else getattr(base, key)
    kw["defaults"] = _defaults(data.get("defaults", {}), source)
    if "groups" in data:
        raw = data["groups"]
        if not isinstance(raw, dict):
            raise LaunchError(f"{source}: groups: expected a table of word lists, got {_kind(raw)}")
        groups = {g: _words(w, source, f"groups.{g}") for g, w in raw.items()}
    else:
        groups = {}
    for name in (*groups, *kw["group_order"]):
        if not _GROUP_NAME.match(name):
            raise LaunchError(f"{source}: group name {name!r} is not an identifier")
    if len(set(kw["group_order"])) != len(kw["group_order"]):
        dup = next(g for g in kw["group_order"] if kw["group_order"].count(g) > 1)
        raise LaunchError(f"{source}: group_order: {dup!r} listed twice")
    if "group_order" not in data and "groups" in data:
        # Groups the file adds go after the bash recipe's, in file order.
        kw["group_order"] = tuple(base.group_order) + tuple(g for g in groups if g not in base.group_order)
    missing = [g for g in groups if g not in kw["group_order"]]
    if missing:
        raise LaunchError(f"{source}: groups.{missing[0]} is not in group_order (it would never be passed)")
    kw["groups"] = {g: groups[g] if g in groups else tuple(base.groups.get(g, ())) for g in kw["group_order"]}
    if not kw["entry"]:
        raise LaunchError(f"{source}: entry: empty (want e.g. [\"python3\", \"{{entry}}\"])")
    if "--" not in kw["submit"]:
        raise LaunchError(f"{source}: submit: must end with '--' (the entry follows it)")
    return Recipe(**kw)


def default_problem(key: str, value: str) -> str | None:
    """Why ``value`` cannot be the ``[defaults]`` ``key`` (None: it can)."""
    if key in _PORTS:
        if not (value.isascii() and value.isdigit() and len(value) <= 5 and 1 <= int(value) <= 65535):
            return f"expected a port number 1-65535, got {value!r}"
    elif key == "actor_num_nodes":
        if not (value.isascii() and value.isdigit() and int(value) >= 1):
            return f"expected a whole number >= 1, got {value!r}"
    elif key == "rollout_num_gpus":
        if not (value.isascii() and value.isdigit()):
            return f"expected a whole number, got {value!r}"
    elif key == "dashboard_host":
        if not valid_hostname(value):
            return f"{value!r} is not an IPv4/IPv6 address or a DNS name"
    elif key == "entry":
        if not value.strip():
            return "empty (want a script path, e.g. \"train.py\")"
        if value != value.strip():
            return f"{value!r}: leading or trailing whitespace"
    return None


def _defaults(value: object, source: str) -> dict[str, str]:
    """``[defaults]`` merged over the bash recipe's, each value checked; errors are one line
    ``FILE: [defaults] key: reason``."""
    if not isinstance(value, dict):
        raise LaunchError(f"{source}: [defaults]: expected a table of strings, got {_kind(value)}")
    merged = dict(BASH_RECIPE.defaults)
    for key, raw in value.items():
        where = f"{source}: [defaults] {key}"
        if key not in (*BASH_RECIPE.defaults, *_EXTRA_DEFAULTS):
            raise LaunchError(f"{where}: unknown key (known: {', '.join(BASH_RECIPE.defaults)})")
        if isinstance(raw, int) and not isinstance(raw, bool) and key in (*_PORTS, "actor_num_nodes",
                                                                          *_EXTRA_DEFAULTS):
            raw = str(raw)  # ray_port = 6380 reads as well as "6380"
        if not isinstance(raw, str):
            raise LaunchError(f"{where}: expected a string, got {_kind(raw)} {raw!r}")
        reason = default_problem(key, raw)
        if reason:
            raise LaunchError(f"{where}: {reason}")
        merged[key] = raw
    if int(merged["ray_port"]) == int(merged["dashboard_port"]):
        key = "dashboard_port" if "dashboard_port" in value else "ray_port"
        raise LaunchError(f"{source}: [defaults] {key}: {merged[key]} is also the "
                          f"{'ray_port' if key == 'dashboard_port' else 'dashboard_port'}")
    return merged


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """The recipe as plain data, in file order."""
    out: dict[str, Any] = {}
    for f in fields(Recipe):
        value = getattr(recipe, f.name)
        if f.name == "groups":
            out["groups"] = {g: list(recipe.groups.get(g, ())) for g in recipe.group_order}
        elif f.name in (*_TABLES, *_COMMAND_ENV):
            out[f.name] = dict(value) if isinstance(value, Mapping) else {k: v for k, v in value}
        elif f.name in _NESTED:
            out[f.name] = [list(c) for c in value]
        elif f.name in _LISTS:
            out[f.name] = list(value)
        else:
            out[f.name] = value
    return out


def dump_recipe(recipe: Recipe, header: Sequence[str] = ()) -> str:
    """The recipe as TOML that ``load_recipe`` reads back to an equal ``Recipe``.

    ``header`` lines become leading ``#`` comments.
    """
    lines = [f"# {h}".rstrip() for h in header]
    if lines:
        lines.append("")
    lines.append(f"name = {_toml_str(recipe.name)}")
    lines.append(f"description = {_toml_str(recipe.description)}")
    for key in _LISTS:
        lines.append(f"{key} = {_inline(getattr(recipe, key))}")
    for key in _NESTED:
        commands = getattr(recipe, key)
        lines.append(f"{key} = [")
        lines += [f"  {_inline(c)}," for c in commands]
        lines.append("]")
    for key in (*_TABLES, *(k for k in _COMMAND_ENV if getattr(recipe, k))):
        value = getattr(recipe, key)
        items = value.items() if isinstance(value, Mapping) else value
        lines += ["", f"[{key}]"]
        lines += [f"{_toml_key(k)} = {_toml_str(v)}" for k, v in items]
    lines += ["", "[groups]"]
    for group in recipe.group_order:
        words = tuple(recipe.groups.get(group, ()))
        if not words:
            lines.append(f"{_toml_key(group)} = []")
            continue
        lines.append(f"{_toml_key(group)} = [")
        for flag, values in split_flags(words):
            item = [flag, *values] if flag else list(values)
            lines.append("  " + ", ".join(_toml_str(w) for w in item) + ",")
        lines.append("]")
    return "\n".join(lines) + "\n"


def save_recipe(recipe: Recipe, path: str | Path, header: Sequence[str] = ()) -> None:
    """Write ``recipe`` to ``path`` as TOML."""
    try:
        Path(path).write_text(dump_recipe(recipe, header), encoding="utf-8")
    except OSError as exc:
        raise LaunchError(f"{path}: cannot write recipe file: {exc.strerror}") from None


def _kind(value: object) -> str:
    return {list: "a list", dict: "a table", str: "a string", bool: "a boolean", int: "an integer",
            float: "a float"}.get(type(value), type(value).__name__)


def _string(value: object, source: str, key: str) -> str:
    if not isinstance(value, str):
        raise LaunchError(f"{source}: {key}: expected a string, got {_kind(value)}")
    return value


def _words(value: object, source: str, key: str) -> Argv:
    if not isinstance(value, list):
        raise LaunchError(f"{source}: {key}: expected a list of strings, got {_kind(value)}")
    for i, word in enumerate(value):
        if not isinstance(word, str):
            raise LaunchError(f"{source}: {key}[{i}]: expected a string, got {_kind(word)} {word!r}")
    return tuple(value)


def _table(value: object, source: str, key: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        raise LaunchError(f"{source}: {key}: expected a table of strings, got {_kind(value)}")
    for k, v in value.items():
        if not isinstance(v, str):
            raise LaunchError(f"{source}: {key}.{k}: expected a string, got {_kind(v)} {v!r}")
    return tuple(value.items())


def _toml_str(text: str) -> str:
    """A TOML basic string (JSON escapes are valid TOML; DEL must be escaped too)."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _toml_str(key)


def _inline(words: Sequence[str]) -> str:
    return "[" + ", ".join(_toml_str(w) for w in words) + "]"
