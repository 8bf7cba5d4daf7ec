"""The job's runtime env: its JSON as the recipe writes it, and the ``${VAR}``s Ray expands.

The runtime env's ``env_vars`` may hold ``${VAR}`` references. Ray expands them in every
worker process from that node's environment, in its own order (:func:`ray_env_order`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping, Sequence

from glm45_launch.errors import LaunchError

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
ENV_NAME = re.compile(f"^{_NAME}$")  # an environment variable's name
ENV_REF = re.compile(rf"\$\{{({_NAME})\}}")


def runtime_env_json(env_vars: Sequence[tuple[str, str]]) -> str:
    """The runtime env as the bash recipe writes it (its exact layout, keys in order)."""
    body = ",\n".join(f"        {json.dumps(k)}: {json.dumps(v)}" for k, v in env_vars)
    return '{\n     "env_vars": {\n' + body + "\n     }\n   }"


def set_env(env: Sequence[tuple[str, str]], key: str, value: str) -> tuple[tuple[str, str], ...]:
    """``env`` with ``key`` replaced in place, or appended."""
    if any(k == key for k, _ in env):
        return tuple((k, value if k == key else v) for k, v in env)
    return (*env, (key, value))


def insert_after(env: Sequence[tuple[str, str]], key: str,
                 items: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """``env`` with ``items`` right after ``key`` (at the end without it)."""
    at = next((i + 1 for i, (k, _) in enumerate(env) if k == key), len(env))
    return (*env[:at], *items, *env[at:])


def env_refs(env_vars: Sequence[tuple[str, str]]) -> list[str]:
    """The ``${VAR}`` names the runtime env leaves for Ray to expand, in first-use order."""
    seen: dict[str, None] = {}
    for _, value in env_vars:
        for name in ENV_REF.findall(value):
            seen.setdefault(name)
    return list(seen)


def resolve_env(env_vars: Sequence[tuple[str, str]], values: Mapping[str, str], flag: str) -> list[tuple[str, str]]:
    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in values:
            option = " (give --socket-ifname or set it)" if name == "MLP_SOCKET_IFNAME" else ""
            raise LaunchError(f"{flag}: no value for ${{{name}}}{option}")
        return values[name]

    return [(k, ENV_REF.sub(sub, v)) for k, v in env_vars]


SESSION, RUNTIME_ENV = "session", "runtime env"


def ray_env_order(env_vars: Sequence[tuple[str, str]]) -> list[str]:
    """The order in which Ray sets the runtime env's variables in a worker process.

    Not the JSON's order: ``RuntimeEnv.serialize`` (ray/runtime_env/runtime_env.py) is
    ``json.dumps(..., sort_keys=True)``, which sorts the nested ``env_vars`` too; the runtime
    env agent deserializes that string into ``RuntimeEnvContext(env_vars=...)`` and
    ``update_envs`` (ray/_private/utils.py) sets them in that order, expanding each value
    with ``os.path.expandvars`` against the environment as set so far. Sorted as Python
    sorts str (code points: upper case before lower case), as ``json.dumps`` does.
    """
    return sorted(dict(env_vars))


def env_ref_sources(
    env_vars: Sequence[tuple[str, str]], available: Collection[str],
) -> dict[str, dict[str, str | None]]:
    """Where each ``${X}`` of each runtime-env value comes from when Ray expands it (pure).

    ``{key: {X: source}}``: :data:`RUNTIME_ENV` when ``X`` is itself a runtime-env key that
    Ray sets before ``key`` (:func:`ray_env_order`) and ``X``'s own value resolves;
    :data:`SESSION` when ``X`` is in ``available`` (set where ``ray start`` ran); else None
    (Ray 2.60 substitutes an empty string). ``X`` set earlier from an unresolved value is
    None too, even when the session has ``X``: Ray's value replaced the session's.
    """
    values = dict(env_vars)
    rank = {k: i for i, k in enumerate(ray_env_order(env_vars))}
    resolved: dict[str, bool] = {}
    out: dict[str, dict[str, str | None]] = {}

    def sources(key: str) -> dict[str, str | None]:
        if key not in out:
            found: dict[str, str | None] = {}
            for ref in ENV_REF.findall(values[key]):
                if ref in rank and rank[ref] < rank[key]:
                    found[ref] = RUNTIME_ENV if resolves(ref) else None  # strictly earlier: terminates
                else:
                    found[ref] = SESSION if ref in available else None
            out[key] = found
        return out[key]

    def resolves(key: str) -> bool:
        if key not in resolved:
            resolved[key] = all(s is not None for s in sources(key).values())
        return resolved[key]

    for key in values:
        sources(key)
    return {k: out[k] for k in values}
