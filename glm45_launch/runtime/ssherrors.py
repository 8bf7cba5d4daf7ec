"""What connecting over SSH can raise, besides paramiko's and the socket's own exceptions.

Each carries what :func:`glm45_launch.runtime.ssh.describe_ssh_error` turns into one line.
"""

from __future__ import annotations


class SshRefused(Exception):
    """A connection we refuse or that cannot work, whatever a retry does (host key, auth, config).
    Its message is the one line the user sees."""


class HandshakeTimeout(Exception):
    """The TCP connection opened, but the SSH handshake did not finish in time."""

    def __init__(self, stage: str, timeout_s: float) -> None:
        super().__init__(stage)
        self.stage, self.timeout_s = stage, timeout_s


class SessionRefused(Exception):
    """The connection is fine but its sshd refused one more session (``MaxSessions``)."""


class ConnectionLost(Exception):
    """The connection died (before a command was sent: retried on a new one)."""
