"""``/etc/ssh/ssh_config`` and ``~/.ssh/config``, read once per run: where a host name leads.

Honoured, as Fabric did: ``HostName``, ``Port``, ``IdentityFile``, ``ProxyCommand`` (paramiko
expands ``%h %p %r``). ``ProxyJump`` is refused in one line (write it as a ProxyCommand).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glm45_launch.errors import LaunchError
from glm45_launch.runtime.hostkeys import host_key_name
from glm45_launch.runtime.ssherrors import SshRefused

USER_SSH_CONFIG = "~/.ssh/config"
SYSTEM_SSH_CONFIG = "/etc/ssh/ssh_config"
# The ssh config keywords this launcher uses; a config without them is never looked up.
USED_SSH_CONFIG = ("hostname", "port", "identityfile", "proxycommand", "proxyjump")


@dataclass(frozen=True)
class Target:
    """Where a host name leads, after ``~/.ssh/config``."""

    host: str  # as the hostfile names it
    hostname: str  # what to connect to (ssh config HostName)
    port: int
    user: str
    key_files: tuple[str, ...] = ()  # ssh config IdentityFile
    proxy_command: str | None = None

    @property
    def key_name(self) -> str:
        return host_key_name(self.hostname, self.port)


class SshConfig:
    """``/etc/ssh/ssh_config`` and ``~/.ssh/config``, read once; looked up per host (cached)."""

    def __init__(self, paths: tuple[str, ...] = (USER_SSH_CONFIG, SYSTEM_SSH_CONFIG)) -> None:
        import paramiko

        self._configs = []
        for raw in paths:
            path = Path(raw).expanduser()
            if path.is_file():
                try:
                    config = paramiko.SSHConfig.from_path(str(path))
                except (OSError, ValueError, paramiko.ConfigParseError) as exc:
                    raise LaunchError(f"{path}: cannot read ssh config: {exc}") from None
                # Debian's /etc/ssh/ssh_config sets only SendEnv, HashKnownHosts, GSSAPI...: a
                # lookup (paramiko expands tokens, asks getpwuid) per host for nothing.
                entries = getattr(config, "_config", None)  # paramiko's parsed sections (no public view)
                if entries is None or any(k in e.get("config", {}) for e in entries for k in USED_SSH_CONFIG):
                    self._configs.append(config)
        self._cache: dict[str, dict[str, Any]] = {}

    def lookup(self, host: str) -> dict[str, Any]:
        found = self._cache.get(host)
        if found is None:
            found = {}
            for config in self._configs:  # the user's file first: the first value wins, as in ssh
                for key, value in config.lookup(host).items():
                    found.setdefault(key, value)
            self._cache[host] = found
        return found

    def target(self, host: str, user: str, port: int | None) -> Target:
        cfg = self.lookup(host)
        if "proxyjump" in cfg and cfg["proxyjump"].lower() != "none":
            raise SshRefused(f"{host}: ProxyJump in ssh config is not supported; use "
                             "`ProxyCommand ssh -W %h:%p JUMPHOST` for this host")
        proxy = cfg.get("proxycommand")
        return Target(host, cfg.get("hostname", host), port or int(cfg.get("port", 22)), user,
                      tuple(cfg.get("identityfile", ())), None if proxy in (None, "none") else proxy)
