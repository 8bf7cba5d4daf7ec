"""Secrets in what the launcher shows: what a secret is, and the one place that masks it.

A secret is a ``WANDB_API_KEY`` (or another ``*_API_KEY``/``*_TOKEN``/``*_SECRET``/``*_PASSWORD``)
in an env, or the value of ``--wandb-key`` (and the like) among train.py's arguments. Everything
printed or logged goes through ``mask_argv``/``mask_env``/``mask_text``, which put ``***`` in
their place; ``plan_secrets.py`` applies them to a whole plan.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable, Sequence

MASK = "***"
SECRET_FLAGS = frozenset({"--wandb-key", "--wandb-api-key", "--hf-token"})
_SECRET_ENV = re.compile(r"^(?:WANDB_API_KEY|HF_TOKEN|HUGGING_FACE_HUB_TOKEN|[A-Z0-9_]*_(?:API_KEY|TOKEN|SECRET|PASSWORD))$")
RUNTIME_ENV_FLAG = "--runtime-env-json="
# Free text (notes, log lines) is masked by value; shorter values would mask innocent words
# ("1", "eth0"), so they are masked only where they stand in an argv or an env.
MIN_TEXT_SECRET = 4


def is_secret_env(name: str) -> bool:
    """True for environment variable names whose values are credentials."""
    return bool(_SECRET_ENV.match(name.upper()))


def _json_secrets(text: str) -> list[str]:
    try:
        data = json.loads(text)
    except ValueError:
        return []
    env = data.get("env_vars") if isinstance(data, dict) else None
    if not isinstance(env, dict):
        return []
    return [v for k, v in env.items() if isinstance(v, str) and v and is_secret_env(str(k))]


def argv_secrets(argv: Sequence[str]) -> list[str]:
    """The secret values an argv carries, wherever they stand."""
    out: list[str] = []
    for i, word in enumerate(argv):
        name, eq, value = word.partition("=")
        if word in SECRET_FLAGS and i + 1 < len(argv):
            out.append(argv[i + 1])
        elif eq and value and (name in SECRET_FLAGS or is_secret_env(name)):
            out.append(value)
        elif word.startswith(RUNTIME_ENV_FLAG):
            out += _json_secrets(word[len(RUNTIME_ENV_FLAG):])
    return [s for s in out if s]


def mask_text(text: str, secrets: Iterable[str]) -> str:
    """``text`` with each secret (as written, shell-quoted or JSON-escaped) replaced by ``***``."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) < MIN_TEXT_SECRET:
            continue
        for form in {secret, shlex.quote(secret), json.dumps(secret)[1:-1]}:
            text = text.replace(form, MASK)
    return text


def _mask_json_env(text: str) -> str:
    """The runtime-env JSON with secret ``env_vars`` values masked, layout kept."""
    for value in _json_secrets(text):
        for key in re.findall(r'"((?:[^"\\]|\\.)*)"\s*:\s*' + re.escape(json.dumps(value)), text):
            if is_secret_env(key):
                text = re.sub(r'("' + re.escape(key) + r'"\s*:\s*)' + re.escape(json.dumps(value)),
                              lambda m: m.group(1) + json.dumps(MASK), text)
    return text


def mask_argv(argv: Sequence[str], secrets: Iterable[str] = ()) -> list[str]:
    """``argv`` with secret values masked: after a secret flag, in ``NAME=value`` words with
    a secret NAME, inside ``--runtime-env-json=``, and any of ``secrets`` within a word."""
    known = set(secrets) | set(argv_secrets(argv))
    out: list[str] = []
    for i, word in enumerate(argv):
        name, eq, value = word.partition("=")
        if i and argv[i - 1] in SECRET_FLAGS:
            out.append(MASK)
        elif eq and value and (name in SECRET_FLAGS or is_secret_env(name)):
            out.append(f"{name}={MASK}")
        elif word.startswith(RUNTIME_ENV_FLAG):
            out.append(RUNTIME_ENV_FLAG + mask_text(_mask_json_env(word[len(RUNTIME_ENV_FLAG):]), known))
        else:
            out.append(mask_text(word, known))
    return out


def mask_env(env: Iterable[tuple[str, str]], secrets: Iterable[str] = ()) -> tuple[tuple[str, str], ...]:
    known = list(secrets)
    return tuple((k, MASK if v and is_secret_env(k) else mask_text(v, known)) for k, v in env)
