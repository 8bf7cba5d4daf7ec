"""Public-key authentication: the client's keys loaded once per run, offered like ``SSHClient``."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from glm45_launch.runtime.sshconfig import Target
from glm45_launch.runtime.ssherrors import HandshakeTimeout, SshRefused

DEFAULT_KEY_FILES = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")


class ClientKeys:
    """The private keys to offer, loaded once per run (an encrypted key is skipped)."""

    def __init__(self, identity: tuple[str, ...], look_for_keys: bool, use_agent: bool) -> None:
        self.identity, self.look_for_keys, self.use_agent = identity, look_for_keys, use_agent
        self._loaded: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.skipped: list[str] = []

    def _key(self, path: str) -> Any:
        import paramiko

        with self._lock:
            if path not in self._loaded:
                key = None
                full = os.path.expanduser(path)
                if os.path.isfile(full):
                    try:
                        key = paramiko.PKey.from_path(full)
                        if os.path.isfile(full + "-cert.pub"):
                            key.load_certificate(full + "-cert.pub")
                    except paramiko.PasswordRequiredException:
                        self.skipped.append(f"{path}: encrypted (use ssh-agent)")
                    except (OSError, ValueError, paramiko.SSHException) as exc:
                        self.skipped.append(f"{path}: {exc}")
                self._loaded[path] = key
            return self._loaded[path]

    def files(self, extra: tuple[str, ...] = ()) -> list[Any]:
        """Explicit keys (--identity, ssh config IdentityFile), in order."""
        return [k for p in dict.fromkeys((*self.identity, *extra)) if (k := self._key(p)) is not None]

    def defaults(self) -> list[Any]:
        return [k for p in DEFAULT_KEY_FILES if (k := self._key(p)) is not None] if self.look_for_keys else []


def authenticate(transport: Any, target: Target, keys: ClientKeys, deadline: float) -> None:
    """Public-key auth like ``SSHClient``: explicit keys, then the agent's, then ~/.ssh/id_*."""
    import paramiko

    tried = 0

    def attempt(key: Any) -> bool:
        nonlocal tried
        if time.monotonic() > deadline:
            raise HandshakeTimeout("authentication", 0)
        tried += 1
        try:
            transport.auth_publickey(target.user, key)
            return True
        except paramiko.BadAuthenticationType as exc:
            raise SshRefused(f"{target.user}@{target.host} does not accept public keys "
                             f"(allowed: {', '.join(exc.allowed_types)})") from None
        except paramiko.AuthenticationException:
            return False

    for key in keys.files(target.key_files):
        if attempt(key):
            return
    if keys.use_agent and os.environ.get("SSH_AUTH_SOCK"):
        agent = paramiko.Agent()  # its own socket per connection: agent requests are not thread-safe
        try:
            for key in agent.get_keys():
                if attempt(key):
                    return
        finally:
            agent.close()
    for key in keys.defaults():
        if attempt(key):
            return
    skipped = f" (skipped {'; '.join(keys.skipped)})" if keys.skipped else ""
    if not tried:
        raise SshRefused(f"no SSH key to offer to {target.host}: --identity KEY, ssh-agent or ~/.ssh/id_*{skipped}")
    raise SshRefused(f"authentication failed for {target.user}@{target.host}: {tried} key(s) refused{skipped}")
