"""Preflight's results: one check, one host's report, the whole report; and its options."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from glm45_launch.core.steps import DEFAULT_PARALLEL

OK, WARN, FAIL = "ok", "warn", "fail"
_RANK = {OK: 0, WARN: 1, FAIL: 2}
VERSIONED = ("python", "ray", "torch", "sglang", "megatron-core")  # checks named after a package
# Table columns, in order; a check belongs to the column its name starts with (see Check.group).
GROUPS = ("ssh", "identity", "versions", "imports", "gpus", "nvlink", "paths", "ifname", "env", "disk", "ports",
          "cleanup", "rsync", "entry", "libs")


_PLURAL = {"path": "paths", "port": "ports"}


@lru_cache(maxsize=4096)
def group_of(name: str) -> str:
    """The table column of a check called ``name``: ``ssh``, ``versions``, or its first word
    (``path X`` -> ``paths``, ``port N`` -> ``ports``)."""
    if name in ("probe", "ssh"):
        return "ssh"
    if name in VERSIONED:
        return "versions"
    first = name.split(" ", 1)[0]
    return _PLURAL.get(first, first)


@dataclass(frozen=True)
class Check:
    """One check on one host: ``name`` (its column is :attr:`group`), ok/warn/fail, one line."""

    name: str
    status: str
    detail: str

    @property
    def group(self) -> str:
        return group_of(self.name)

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "group": self.group, "status": self.status, "detail": self.detail}


@dataclass
class HostReport:
    """Every check of one host (``via``: ssh, or local for the head probed on this machine)."""

    host: str
    role: str  # head | worker
    via: str  # ssh | local
    checks: list[Check] = field(default_factory=list)

    @property
    def status(self) -> str:
        return worst(c.status for c in self.checks)

    def group_statuses(self) -> dict[str, str]:
        """The worst status of each group that has a check (one pass over the checks)."""
        out: dict[str, str] = {}
        for c in self.checks:
            group = group_of(c.name)
            if _RANK[c.status] >= _RANK[out.get(group, OK)]:
                out[group] = c.status
        return out

    def group_status(self, group: str) -> str | None:
        return self.group_statuses().get(group)

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "role": self.role, "via": self.via, "status": self.status,
                "checks": [c.to_json() for c in self.checks]}


@dataclass
class PreflightReport:
    hosts: list[HostReport]
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return all(h.status != FAIL for h in self.hosts)

    def problems(self, status: str = FAIL) -> list[tuple[str, Check]]:
        return [(h.host, c) for h in self.hosts for c in h.checks if c.status == status]

    def summary(self, limit: int = 8) -> str:
        """One line naming each failing host and check (for the CLI's error line)."""
        fails = self.problems()
        alike: dict[tuple[str, str], list[str]] = {}  # one entry per check and detail, naming its hosts
        for host, c in fails:
            alike.setdefault((c.name, c.detail), []).append(host)
        entries = [(hosts, name, detail) for (name, detail), hosts in alike.items()]
        shown = "; ".join(f"{', '.join(hosts[:4])}{f' and {len(hosts) - 4} more' if len(hosts) > 4 else ''} "
                          f"{name}: {detail}" for hosts, name, detail in entries[:limit])
        rest = sum(len(hosts) for hosts, _, _ in entries[limit:])
        more = f"; and {rest} more" if rest else ""
        return f"{len(fails)} failed check(s): {shown}{more}"

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "duration_s": round(self.duration_s, 2), "hosts": [h.to_json() for h in self.hosts]}


def worst(statuses: Sequence[str] | Any) -> str:
    return max(statuses, key=_RANK.__getitem__, default=OK)


@dataclass(frozen=True)
class PreflightOptions:
    """Thresholds and switches (the plan says what to check)."""

    parallel: int = DEFAULT_PARALLEL
    min_free_gb: float = 5.0
    require_gpus: bool = False  # no nvidia-smi / no NVLink: a failure instead of a warning
    libs: bool = True  # megatron-core/sglang checks of validate_libs, here on the head
    timeout_s: float = 60.0  # the whole probe on one host
    tmp_dir: str = "/tmp"  # Ray's default temp dir lives under it (/tmp/ray)
    needs_rsync: bool = False  # prepare copies checkpoints with rsync: `rsync --version` on every node
    import_all: bool = False  # import torch and the framework too (else located: torch's import costs seconds)
