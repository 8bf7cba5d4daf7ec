"""Who listens on a TCP port here: ``/proc/net/tcp{,6}`` and ``/proc/PID/fd``, no tools.

Standard library only, and Python 3.6 syntax without annotations: preflight pastes this
file into its probe (``preflight.PROBE_SCRIPT``), which runs under whatever ``python3`` a
node has. The parsers are pure (text in, data out) so tests feed them sample /proc text;
:func:`port_report` does the reading, with ``proc`` as the root so a test can point it at a
fake tree.
"""

import os
import re
import socket

TCP_LISTEN = "0A"  # st column of /proc/net/tcp: include/net/tcp_states.h TCP_LISTEN = 10
_SOCKET_LINK = re.compile(r"^socket:\[(\d+)\]$")


def decode_address(hex_addr):
    """The local_address column's address: ``0100007F`` -> ``127.0.0.1``; 32 hex digits -> IPv6.

    The kernel prints the address as 32-bit words in host byte order (little-endian here)."""
    raw = bytes.fromhex(hex_addr)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    if len(raw) == 16:
        words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
        return socket.inet_ntop(socket.AF_INET6, words)
    raise ValueError(f"not an IPv4/IPv6 address: {hex_addr!r}")


def parse_listeners(text):
    """``[(address, port, inode)]`` of every LISTEN socket in /proc/net/tcp or tcp6 text."""
    out = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        # sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
        if len(fields) < 10 or fields[3] != TCP_LISTEN:
            continue
        addr, _, port = fields[1].rpartition(":")
        try:
            out.append((decode_address(addr), int(port, 16), int(fields[9])))
        except ValueError:
            continue
    return out


def socket_inode(link):
    """The inode of an fd link ``socket:[12345]``, else None (a file, a pipe, ...)."""
    m = _SOCKET_LINK.match(link)
    return int(m.group(1)) if m else None


def parse_cmdline(raw):
    """/proc/PID/cmdline bytes (NUL-separated argv) -> one line, whitespace collapsed."""
    return " ".join(raw.decode("utf-8", "replace").replace("\0", " ").split())


def pids_holding(inodes, proc="/proc"):
    """``(pids, denied)``: the processes with an fd on one of ``inodes``, and how many
    processes' fd lists could not be read (another user's, without root)."""
    pids, denied = [], 0
    try:
        entries = os.listdir(proc)
    except OSError:
        return pids, 1
    for name in entries:
        if not name.isdigit():
            continue
        fd_dir = os.path.join(proc, name, "fd")
        try:
            fds = os.listdir(fd_dir)
        except PermissionError:
            denied += 1
            continue
        except OSError:  # exited meanwhile
            continue
        for fd in fds:
            try:
                inode = socket_inode(os.readlink(os.path.join(fd_dir, fd)))
            except PermissionError:
                denied += 1
                break
            except OSError:
                continue
            if inode in inodes:
                pids.append(int(name))
                break
    return sorted(pids), denied


def describe(pid, proc="/proc"):
    """``{"pid", "comm", "cmdline"}`` of a process ("?" where unreadable)."""
    out = {"pid": pid, "comm": "?", "cmdline": "?"}
    try:
        with open(os.path.join(proc, str(pid), "comm"), "rb") as f:
            out["comm"] = f.read().decode("utf-8", "replace").strip()
        with open(os.path.join(proc, str(pid), "cmdline"), "rb") as f:
            out["cmdline"] = parse_cmdline(f.read())
    except OSError:
        pass
    return out


def port_report(port, proc="/proc"):
    """What holds TCP ``port`` in this network namespace.

    ``{"listeners": ["ADDR:PORT", ...], "holders": [describe(pid), ...], "error": str or None}``;
    ``error`` says why listeners have no holder (unreadable /proc, fds of other users)."""
    listeners, inodes, unread = [], set(), []
    for name in ("tcp", "tcp6"):
        try:
            with open(os.path.join(proc, "net", name)) as f:
                text = f.read()
        except OSError as e:
            unread.append(f"/proc/net/{name}: {e.strerror or e}")
            continue
        for addr, p, inode in parse_listeners(text):
            if p == port:
                listeners.append(f"[{addr}]:{p}" if ":" in addr else f"{addr}:{p}")
                inodes.add(inode)
    out = {"listeners": listeners, "holders": [], "error": None}
    if not listeners:
        out["error"] = ("cannot read " + "; ".join(unread)) if len(unread) == 2 else \
            "no LISTEN socket on that port in /proc/net/tcp{,6}"
        return out
    pids, denied = pids_holding(inodes, proc)
    out["holders"] = [describe(pid, proc) for pid in pids]
    if not pids:
        out["error"] = (f"the open files of {denied} process(es) are unreadable (not root?)" if denied
                        else "no process in this PID namespace has it open")
    return out
