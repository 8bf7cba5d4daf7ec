"""TCP listeners that misbehave like broken SSH servers, for the one-line-failure tests.

Modes (what happens to every accepted connection):

* ``silent``: accepted, never a byte (a hung sshd, or a port held by something else);
* ``reset``: accepted, then reset (RST) at once;
* ``garbage``: a line that is no SSH banner, then silence (an HTTP server on port 22);
* ``banner-stall``: a valid SSH banner, then silence (the key exchange never comes);
* ``banner-reset``: a valid SSH banner, then reset once the client's key exchange arrives.

Imported by tests (a thread on loopback) and run as a script inside a rack-in-a-box host
(``python3 badsshd.py MODE ADDR PORT``: prints ``ready`` once listening).
"""

from __future__ import annotations

import socket
import struct
import sys
import threading
import time

MODES = ("silent", "reset", "garbage", "banner-stall", "banner-reset")


def _reset(conn: socket.socket) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def _serve(conn: socket.socket, mode: str, held: list[socket.socket]) -> None:
    if mode == "reset":
        _reset(conn)
        return
    if mode == "garbage":
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\n")
    elif mode.startswith("banner"):
        conn.sendall(b"SSH-2.0-OpenSSH_9.2p1 stalled\r\n")
        if mode == "banner-reset":
            conn.settimeout(30)
            try:
                conn.recv(4096)  # the client's banner and KEXINIT
                time.sleep(0.2)
            except OSError:
                pass
            _reset(conn)
            return
    held.append(conn)  # keep it open (and silent) until the listener goes


def listen(mode: str, addr: str = "127.0.0.1", port: int = 0) -> tuple[socket.socket, int]:
    """A listener in a daemon thread; returns (socket, port). Close the socket to stop it."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, port))
    srv.listen(64)
    held: list[socket.socket] = []

    def loop() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                for c in held:
                    c.close()
                return
            threading.Thread(target=_serve, args=(conn, mode, held), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    return srv, srv.getsockname()[1]


def listen_ssh(host_key: object) -> tuple[socket.socket, int]:
    """A real SSH server (paramiko) on loopback that completes the key exchange and accepts no
    login; returns (socket, port). Close the socket to stop it."""
    import paramiko

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    transports: list[paramiko.Transport] = []

    def loop() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                for t in transports:
                    t.close()
                return
            t = paramiko.Transport(conn)
            t.add_server_key(host_key)  # type: ignore[arg-type]
            # every auth method refused; with an event it returns at once (a refused client ends it)
            t.start_server(event=threading.Event(), server=paramiko.ServerInterface())
            transports.append(t)

    threading.Thread(target=loop, daemon=True).start()
    return srv, srv.getsockname()[1]


if __name__ == "__main__":
    _, port = listen(sys.argv[1], sys.argv[2], int(sys.argv[3]))
    print("ready", port, flush=True)
    while True:
        time.sleep(3600)
