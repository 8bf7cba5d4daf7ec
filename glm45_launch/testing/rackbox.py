"""Rack-in-a-box: a fake N-host cluster on one Linux machine, for launcher tests and demos.

Every host ``{prefix}-hK`` is a set of namespaces on this machine:

* net: its own network namespace, an ``eth0`` veth into a bridge that lives in a further
  namespace ``{prefix}-br`` (the "rack switch"), address ``subnet[K]``.  Nothing is connected to
  the machine's real network, so the box can never send a packet off the machine.
* pid + mount + uts: a private PID namespace (``pkill -9 python`` or ``ray stop --force`` inside
  a host only hits that host), a private ``/tmp`` (so ``/tmp/ray`` is per host, as on real
  nodes), a private ``/dev/shm`` (Ray's object store), a private ``$HOME`` (an overlay over the
  real one holding the box's client key and ``known_hosts`` in ``~/.ssh``), its own hostname.
* its own ``sshd`` on port 22 with generated host keys; the cluster environment
  (``MLP_WORKER_0_HOST``, ``MLP_SOCKET_IFNAME``, ``PATH``) comes from sshd ``SetEnv`` the way an
  orchestrator provides it.

The bridge namespace doubles as an "admin" machine (``subnet[-2]``): :meth:`RackBox.ssh_argv`
and :meth:`RackBox.run_admin` run clients there, because the host addresses only exist inside
the box.  :meth:`RackBox.run_on` runs a command *on* a host (e.g. the launcher on the head).

Each host's PID 1 is ``programs/rackbox_init.py``.  With ``stub_ray`` the hosts' ``ray`` is
``programs/ray``, a shell stub answering ``ray start/stop`` in milliseconds (for benchmarks of
the fan-out itself).  Up to :data:`MAX_HOSTS` hosts (a 200-host box starts in ~15 s on 2 cores).

Needs root, iproute2, util-linux (unshare, nsenter) and openssh-server.  This module only
imports the standard library.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import json
import os
import pwd
import re
import selectors
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "BASE_FILES",
    "HostRef",
    "MemoryUsage",
    "RackBox",
    "RackBoxError",
    "RackBoxUnavailable",
    "free_prefix",
    "live_box_pids",
    "make_base_dir",
    "remove_stale_namespaces",
    "requirements_missing",
]

HostRef = int | str
"""A host: 1-based index (1 is the head, ``h1``), IP address, or name (``h2`` / ``g45-h2``)."""

_NETNS_DIR = Path("/run/netns")
_TOOLS = ("ip", "unshare", "nsenter", "ssh", "ssh-keygen")
# sshd lives in sbin, which is not always on a non-root PATH.
_SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
_PR_SET_NAME = 15
_PR_SET_PDEATHSIG = 1
_MS_BIND = 4096
_MS_NOSUID = 2
_MS_NODEV = 4
_INIT_COMM = "rackbox-init"
_PROGRAMS = Path(__file__).resolve().parent / "programs"
MAX_HOSTS = 1020  # a Linux bridge has at most 1024 ports (BR_MAX_PORTS)


class RackBoxError(RuntimeError):
    """The box could not be built or a host operation failed."""


class RackBoxUnavailable(RackBoxError):
    """This machine lacks what the box needs (root, tools)."""


@dataclass(frozen=True)
class MemoryUsage:
    """Memory of the processes inside the box: summed RSS (double counts shared pages) and PSS."""

    rss_bytes: int
    pss_bytes: int
    processes: int

    def __str__(self) -> str:
        mib = 1024 * 1024
        return f"{self.processes} processes, RSS {self.rss_bytes / mib:.0f} MiB, PSS {self.pss_bytes / mib:.0f} MiB"


def requirements_missing() -> list[str]:
    """What this machine lacks to build a box (empty list: good to go)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (namespaces, mounts and sshd need euid 0)")
    missing += [f"`{tool}` on PATH" for tool in _TOOLS if shutil.which(tool) is None]
    if shutil.which("sshd", path=_SBIN_PATH) is None:
        missing.append("`sshd` (apt-get install openssh-server)")
    if not Path("/proc/self/ns/pid").exists():
        missing.append("kernel namespaces (/proc/self/ns)")
    return missing


@dataclass
class _Host:
    index: int
    netns: str
    ip: str
    dir: Path
    init_proc: subprocess.Popen[bytes] | None = None  # `ip netns exec ... unshare`, parent of init
    init_pid: int | None = None  # the host's PID 1, as seen from this machine
    sshd_proc: subprocess.Popen[bytes] | None = None  # nsenter, parent of the sshd listener


@dataclass
class _State:
    """Everything teardown needs; kept apart from RackBox so the finalizer holds no reference to it."""

    namespaces: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    remove_dir: Path | None = None


class RackBox:
    """A fake cluster of ``n_hosts`` hosts; use as a context manager or call start()/close().

    Hosts are addressed by 1-based index (``1`` is the head), IP or name; see :data:`HostRef`.
    Two boxes alive at the same time need different ``prefix`` values (see free_prefix()):
    start() removes namespaces left over with its prefix by a crashed run, and refuses to
    start if a live box uses it.
    """

    def __init__(
        self,
        n_hosts: int,
        workdir: Path | str | None = None,
        prefix: str = "g45",
        *,
        subnet: str | None = None,
        iface: str = "eth0",
        host_env: Mapping[str, str] | None = None,
        share: Iterable[Path | str] = (),
        private_home: bool = True,
        stub_ray: bool = False,
        ready_timeout: float = 20.0,
    ) -> None:
        """Describe the box; nothing happens until start().

        host_env: the environment every host's sessions get (sshd SetEnv). Default
            ``MLP_WORKER_0_HOST=<head ip>``, ``MLP_SOCKET_IFNAME=<iface>``; ``PATH`` is added
            when missing (this interpreter's bin dir first, then the current PATH).
        share: extra directories under /tmp to keep visible at the same path inside the hosts (the
            workdir always is); everything outside /tmp is visible anyway.
        subnet: the box's addresses; default ``10.123.0.0/24``, or ``10.123.0.0/16`` past 253 hosts
            (a Linux bridge takes at most :data:`MAX_HOSTS` ports).
        private_home: overlay the real home per host, so ``~/.ssh`` holds the box's client key
            and known_hosts (plain ``ssh root@IP`` and Fabric work from a host) and the real
            ``~/.bashrc`` (pyenv init...) is masked.
        stub_ray: put ``programs/ray`` (a stub) first on the hosts' PATH, instead of the real Ray.
        """
        if n_hosts < 1:
            raise ValueError("n_hosts must be >= 1")
        if not re.fullmatch(r"[A-Za-z0-9_.]{1,20}", prefix):
            raise ValueError(f"prefix must be 1-20 chars of [A-Za-z0-9_.], got {prefix!r}")
        if n_hosts > MAX_HOSTS:
            raise ValueError(f"at most {MAX_HOSTS} hosts (the ports of one Linux bridge)")
        subnet = subnet or ("10.123.0.0/24" if n_hosts + 3 <= 256 else "10.123.0.0/16")
        net = ipaddress.ip_network(subnet)
        if net.num_addresses < n_hosts + 3:
            raise ValueError(f"subnet {subnet} too small for {n_hosts} hosts")
        self.n_hosts = n_hosts
        self.prefix = prefix
        self.iface = iface
        self.private_home = private_home
        self.ready_timeout = ready_timeout
        self._plen = net.prefixlen
        self.admin_ip = str(net[-2])
        self._state = _State()
        if workdir is None:
            # Not a pytest tmp dir: we made it, so we remove it on close.
            workdir = Path(tempfile.mkdtemp(prefix=f"rackbox-{prefix}-"))
            self._state.remove_dir = workdir
        self.workdir = Path(workdir).resolve()
        self._share = [self.workdir, *(Path(p).resolve() for p in share)]
        # The hosts run this package (an editable install points into its checkout) and this
        # Python: if either lives under /tmp (a CI clone, a venv), the private /tmp would hide it.
        for needed in (Path(__file__).resolve().parents[2], Path(sys.prefix).resolve()):
            if needed.is_relative_to("/tmp") and not any(needed.is_relative_to(p) for p in self._share):
                self._share.append(needed)
        self._home = Path(pwd.getpwuid(os.geteuid()).pw_dir)
        self._hosts = [
            _Host(i, f"{prefix}-h{i}", str(net[i]), self.workdir / f"h{i}") for i in range(1, n_hosts + 1)
        ]
        env = (
            dict(host_env)
            if host_env is not None
            else {"MLP_WORKER_0_HOST": self._hosts[0].ip, "MLP_SOCKET_IFNAME": iface}
        )
        env.setdefault("PATH", _host_path())
        if stub_ray:
            env["PATH"] = f"{self.workdir / 'stubbin'}:{env['PATH']}"
        self.stub_ray = stub_ray
        for key, value in env.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) or re.search(r'["\\\n]', value):
                raise ValueError(f"host_env entry {key}={value!r} cannot be written as sshd SetEnv")
        self.host_env: dict[str, str] = env
        self._started = False
        self._finalizer = weakref.finalize(self, _teardown, self._state)

    # ----------------------------------------------------------------- accessors
    @property
    def hosts(self) -> list[str]:
        """Host IPs, head first."""
        return [h.ip for h in self._hosts]

    @property
    def head(self) -> str:
        """The head's IP (h1), also MLP_WORKER_0_HOST by default."""
        return self._hosts[0].ip

    @property
    def bridge_netns(self) -> str:
        """The namespace holding the bridge; it is also the admin machine's."""
        return f"{self.prefix}-br"

    @property
    def namespaces(self) -> list[str]:
        """All network namespace names of the box (hosts, then bridge)."""
        return [h.netns for h in self._hosts] + [self.bridge_netns]

    @property
    def dotssh(self) -> Path:
        """The directory mounted as ``~/.ssh`` on every host (private_home)."""
        return self.workdir / "dotssh"

    @property
    def known_hosts(self) -> Path:
        """known_hosts with every host's current key, by IP."""
        return self.dotssh / "known_hosts"

    @property
    def identity(self) -> Path:
        """The client's private key (ed25519), authorized for root on every host."""
        return self.dotssh / "id_ed25519"

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def netns(self, host: HostRef) -> str:
        """Network namespace name of a host."""
        return self._host(host).netns

    def ip(self, host: HostRef) -> str:
        return self._host(host).ip

    def host_dir(self, host: HostRef) -> Path:
        """Per-host files: sshd_config, sshd.log, host key, ``tmp/`` (the host's /tmp)."""
        return self._host(host).dir

    def host_environ(self, host: HostRef, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for run_on: ``base`` (default os.environ) plus host_env."""
        self._host(host)
        return {**(os.environ if base is None else base), **self.host_env}

    def hostfile(self, path: Path | str, hosts: Sequence[HostRef] | None = None, slots: int = 8) -> Path:
        """Write an MPI-style hostfile (``IP slots=N`` per line; all hosts by default)."""
        chosen = self._hosts if hosts is None else [self._host(h) for h in hosts]
        path = Path(path)
        path.write_text("".join(f"{h.ip} slots={slots}\n" for h in chosen))
        return path

    # ----------------------------------------------------------------- lifecycle
    def __enter__(self) -> RackBox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> RackBox:
        """Build the network, the hosts and their sshd; returns self. Cleans up if it fails."""
        if self.closed:
            raise RackBoxError("a closed RackBox cannot be restarted; make a new one")
        if self._started:
            return self
        missing = requirements_missing()
        if missing:
            raise RackBoxUnavailable("rackbox needs: " + "; ".join(missing))
        self._started = True
        try:
            remove_stale_namespaces(self.prefix)
            self._write_files()
            self._make_network()
            self._start_inits()
            self._start_sshds(self._hosts)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Kill every process in the box, delete its namespaces. Idempotent; also runs at exit."""
        self._finalizer()

    # ----------------------------------------------------------------- running things
    def run_on(
        self, host: HostRef, argv: Sequence[str] | str, **kwargs: Any
    ) -> subprocess.CompletedProcess[Any]:
        """subprocess.run ``argv`` on a host (its net, pid, mount, uts namespaces).

        A str is run with ``bash -c``. ``env`` defaults to host_environ(host); ``cwd`` is
        resolved inside the host (default: the current directory if the host can see it, else
        ``/``; under /tmp a host only sees the workdir and ``share``).
        """
        return subprocess.run(self._on_argv(host, argv, kwargs), **kwargs)

    def popen_on(self, host: HostRef, argv: Sequence[str] | str, **kwargs: Any) -> subprocess.Popen[Any]:
        """Like run_on, but returns a Popen (for a launcher that runs a while)."""
        return subprocess.Popen(self._on_argv(host, argv, kwargs), **kwargs)

    def run_admin(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        """subprocess.run ``argv`` on the admin machine (bridge namespace, rest of this machine)."""
        return subprocess.run(["ip", "netns", "exec", self.bridge_netns, *argv], **kwargs)

    def ssh_argv(self, host: HostRef, *, admin: bool = True, user: str = "root") -> list[str]:
        """``ssh -i KEY -o UserKnownHostsFile=... -o StrictHostKeyChecking=yes root@IP``; append the command.

        With ``admin`` (default) the argv is prefixed with ``ip netns exec <bridge ns>``: the host
        addresses only exist inside the box, and ssh from the root namespace would send them to
        the real default route. Use ``admin=False`` for an argv to run inside a host (run_on).
        """
        argv = [
            "ssh", "-i", str(self.identity),
            "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes",
            # -F: no user/system ssh config (it also stops ssh from creating a real ~/.ssh)
            *"-F /dev/null -o GlobalKnownHostsFile=/dev/null -o IdentitiesOnly=yes".split(),
            *"-o BatchMode=yes -o ConnectTimeout=5 -o LogLevel=ERROR".split(),
            f"{user}@{self._host(host).ip}",
        ]  # fmt: skip
        return ["ip", "netns", "exec", self.bridge_netns, *argv] if admin else argv

    def ssh(self, host: HostRef, command: str, **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        """Run a remote command string on a host over real ssh, from the admin machine."""
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.run([*self.ssh_argv(host), command], **kwargs)

    # ----------------------------------------------------------------- inspection
    def pids(self, host: HostRef | None = None) -> list[int]:
        """PIDs (as seen from this machine) of every process in the box, or in one host."""
        names = self.namespaces if host is None else [self.netns(host)]
        return sorted(p for pids in _pids_by_netns(names).values() for p in pids)

    def infra_pids(self, host: HostRef) -> set[int]:
        """The box's own processes of a host: unshare, PID 1, the sshd listener and its nsenter."""
        h = self._host(host)
        pids = {p.pid for p in (h.init_proc, h.sshd_proc) if p is not None and p.poll() is None}
        if h.init_pid is not None:
            pids.add(h.init_pid)
        if h.sshd_proc is not None and h.sshd_proc.poll() is None:
            pids.update(_children(h.sshd_proc.pid))
        return pids

    def user_pids(self, host: HostRef | None = None) -> list[int]:
        """pids() minus infra_pids(): what tests and the launcher started (all hosts + admin by default)."""
        infra = {p for h in self._hosts for p in self.infra_pids(h.index)}
        return [p for p in self.pids(host) if p not in infra]

    def memory(self, host: HostRef | None = None) -> MemoryUsage:
        """Summed RSS/PSS of the box's processes (or one host's)."""
        rss = pss = n = 0
        for pid in self.pids(host):
            try:
                lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
            except OSError:
                continue  # exited meanwhile
            fields = dict(line.split(":", 1) for line in lines if ":" in line)
            n += 1
            rss += int(fields["Rss"].split()[0]) * 1024
            pss += int(fields["Pss"].split()[0]) * 1024
        return MemoryUsage(rss, pss, n)

    # ----------------------------------------------------------------- fault injection
    def kill_all(self, host: HostRef | None = None, timeout: float = 10.0) -> None:
        """SIGKILL everything but the box's own processes (hosts stay up, sshd keeps listening)."""
        if not _kill_tiered(lambda: self.user_pids(host), timeout):
            raise RackBoxError(f"processes survive SIGKILL: {self.user_pids(host)}")

    def stop_sshd(self, host: HostRef) -> None:
        """Stop a host's sshd listener (new connections are refused; open sessions live on)."""
        h = self._host(host)
        proc = h.sshd_proc
        if proc is None or proc.poll() is not None:
            return
        for pid in _children(proc.pid):
            _kill(pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            for pid in _children(proc.pid):
                _kill(pid)
            proc.kill()
            proc.wait()

    def start_sshd(self, host: HostRef) -> None:
        """(Re)start a host's sshd and wait until it listens."""
        self._start_sshds([self._host(host)])

    def rotate_host_key(self, host: HostRef, update_known_hosts: bool = False) -> None:
        """Give a host a new host key (and restart its sshd): a reinstalled or impostor host.

        known_hosts keeps the old key unless update_known_hosts, so strict clients must fail.
        """
        h = self._host(host)
        for suffix in ("", ".pub"):
            (h.dir / f"ssh_host_ed25519_key{suffix}").unlink(missing_ok=True)
        _keygen(h.dir / "ssh_host_ed25519_key", f"root@{h.netns}")
        self.stop_sshd(h.index)
        self.start_sshd(h.index)
        if update_known_hosts:
            self._write_known_hosts()

    def set_shell_env(
        self, host: HostRef, exports: Mapping[str, str] | None = None, unset: Iterable[str] = (),
        path_prepend: Path | str | None = None,
    ) -> None:
        """Make one host's SSH sessions differ, as real nodes do: its ``~/.bashrc`` (which bash
        reads for ssh commands) exports, unsets or puts a directory first on PATH. Called with
        no arguments it restores the default (nothing beyond sshd's SetEnv)."""
        h = self._host(host)
        lines = [
            "# rackbox host: the session environment comes from sshd SetEnv (see sshd_config);",
            "# the machine's real ~/.bashrc is masked so non-interactive ssh is fast and predictable.",
        ]
        lines += [f"unset {name}" for name in unset]
        lines += [f"export {k}={shlex.quote(v)}" for k, v in (exports or {}).items()]
        if path_prepend is not None:
            lines.append(f"export PATH={shlex.quote(str(path_prepend))}:\"$PATH\"")
        (h.dir / "home/upper/.bashrc").write_text("\n".join(lines) + "\n")

    def set_link(self, host: HostRef, up: bool) -> None:
        """Take a host's eth0 down (unreachable: connections time out) or back up."""
        h = self._host(host)
        _ip("-n", h.netns, "link", "set", self.iface, "up" if up else "down")

    def reset(self) -> None:
        """Back to a fresh box: links up, sshd running, known_hosts current, user processes killed."""
        for h in self._hosts:
            self.set_link(h.index, True)
            self.set_shell_env(h.index)
        self._write_known_hosts()
        self._start_sshds([h for h in self._hosts if h.sshd_proc is None or h.sshd_proc.poll() is not None])
        self.kill_all()

    # ----------------------------------------------------------------- internals
    def _host(self, host: HostRef) -> _Host:
        if isinstance(host, bool):
            raise TypeError("host must be an int index, IP or name")
        if isinstance(host, int):
            if not 1 <= host <= self.n_hosts:
                raise ValueError(f"host index {host} not in 1..{self.n_hosts} (1-based: h1 is the head)")
            return self._hosts[host - 1]
        for h in self._hosts:
            if host in (h.ip, h.netns, f"h{h.index}"):
                return h
        raise ValueError(f"unknown host {host!r}; hosts are {self.hosts}")

    def _on_argv(self, host: HostRef, argv: Sequence[str] | str, kwargs: dict[str, Any]) -> list[str]:
        h = self._host(host)
        if isinstance(argv, str):
            argv = ["bash", "-c", argv]
        kwargs.setdefault("env", self.host_environ(h.index))
        # setns(mnt) resets the cwd, so hand it to nsenter to resolve inside the host.
        cwd = kwargs.pop("cwd", None)
        if cwd is None:
            here = Path.cwd()
            hidden = here.is_relative_to("/tmp") and not any(here.is_relative_to(p) for p in self._share)
            cwd = "/" if hidden else here
        return [*self._nsenter(h), f"--wd={cwd}", "--", *argv]

    def _ready_timeout(self, n: int) -> float:
        """ready_timeout, stretched for big boxes (hosts start in parallel, on few cores)."""
        return self.ready_timeout * max(1.0, n / 50)

    @staticmethod
    def _nsenter(h: _Host) -> list[str]:
        if h.init_pid is None:
            raise RackBoxError("the box is not started")
        return ["nsenter", f"--target={h.init_pid}", *"--net --pid --mount --uts".split()]

    def _write_files(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.private_home and (self.workdir == self._home or self._home in self.workdir.parents):
            raise RackBoxError(f"workdir {self.workdir} is inside {self._home}: overlayfs refuses that")
        for p in self._share[1:]:
            if not p.exists():
                raise RackBoxError(f"share path {p} does not exist")
        # privsep chroot dir sshd insists on; normally made by systemd's sshd.service.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self.dotssh.mkdir(mode=0o700, exist_ok=True)
        if self.stub_ray:
            (self.workdir / "stubbin").mkdir(exist_ok=True)
            shutil.copy2(_PROGRAMS / "ray", self.workdir / "stubbin" / "ray")
        if not self.identity.exists():
            _keygen(self.identity, f"rackbox-{self.prefix}")
        (self.dotssh / "authorized_keys").write_text(self.identity.with_suffix(".pub").read_text())
        names = "".join(f"{h.ip}\t{h.netns} h{h.index}\n" for h in self._hosts)
        (self.workdir / "hosts").write_text(f"127.0.0.1\tlocalhost\n::1\tlocalhost\n{names}")
        # No nameserver to ask: lookups of unknown names fail fast instead of hanging.
        (self.workdir / "resolv.conf").write_text("options timeout:1 attempts:1\n")
        keygens = []
        for h in self._hosts:
            for sub in ("tmp", "home/upper/.ssh", "home/work"):
                (h.dir / sub).mkdir(parents=True, exist_ok=True)
            # The overlay's root takes the upper dir's mode: keep the real home's (0700 for root).
            (h.dir / "home/upper").chmod(self._home.stat().st_mode & 0o7777)
            self.set_shell_env(h.index)
            key = h.dir / "ssh_host_ed25519_key"
            if not key.exists():
                keygens.append(_keygen_popen(key, f"root@{h.netns}"))
            (h.dir / "sshd_config").write_text(self._sshd_config(h))
        for proc in keygens:
            if proc.wait() != 0:
                raise RackBoxError(f"ssh-keygen failed: {proc.args}")
        self._write_known_hosts()

    def _sshd_config(self, h: _Host) -> str:
        setenv = " ".join(f'"{k}={v}"' for k, v in self.host_env.items())
        return (
            f"# rackbox {h.netns}\n"
            f"ListenAddress {h.ip}\n"
            "Port 22\n"
            f"HostKey {h.dir}/ssh_host_ed25519_key\n"
            f"PidFile {h.dir}/sshd.pid\n"
            "PermitRootLogin prohibit-password\n"
            "PubkeyAuthentication yes\n"
            f"AuthorizedKeysFile {self.dotssh}/authorized_keys\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            # workdir lives in a world-readable tmp dir; StrictModes would reject the key files.
            "StrictModes no\n"
            "UseDNS no\n"
            "PrintMotd no\n"
            "PrintLastLog no\n"
            "X11Forwarding no\n"
            # A launcher fans out to every host at once; the default 10:30:100 drops connections.
            "MaxStartups 200\n"
            "MaxSessions 64\n"
            "Subsystem sftp internal-sftp\n"
            "LogLevel VERBOSE\n"
            f"SetEnv {setenv}\n"
        )

    def _write_known_hosts(self) -> None:
        lines = []
        for h in self._hosts:
            keytype, key = (h.dir / "ssh_host_ed25519_key.pub").read_text().split()[:2]
            lines.append(f"{h.ip} {keytype} {key}\n")
        tmp = self.known_hosts.with_suffix(".tmp")
        tmp.write_text("".join(lines))
        tmp.replace(self.known_hosts)  # atomic: a host may read it concurrently

    def _make_network(self) -> None:
        br = self.bridge_netns
        self._state.namespaces.append(br)
        _ip("netns", "add", br)
        for h in self._hosts:
            self._state.namespaces.append(h.netns)
            _ip("netns", "add", h.netns)
        # One `ip -batch` per namespace instead of one `ip` per step: a 200-host box needs 200
        # processes here, not 1200. Each veth is made inside the bridge namespace with its peer
        # born in the host: no interface ever appears in the machine's root namespace.
        bridge = ["link set lo up", "link add br0 type bridge", f"addr add {self.admin_ip}/{self._plen} dev br0",
                  "link set br0 up"]
        for h in self._hosts:
            bridge += [f"link add vh{h.index} type veth peer name {self.iface} netns {h.netns}",
                       f"link set vh{h.index} master br0 up"]
        _ip_batch(br, bridge)
        for h in self._hosts:
            _ip_batch(h.netns, [f"addr add {h.ip}/{self._plen} dev {self.iface}", f"link set {self.iface} up",
                                "link set lo up"])

    def _start_inits(self) -> None:
        for h in self._hosts:
            cfg = {
                "hostname": h.netns,
                "tmp": str(h.dir / "tmp"),
                "share": [str(p) for p in self._share],
                "home": str(self._home) if self.private_home else None,
                "home_upper": str(h.dir / "home/upper"),
                "home_work": str(h.dir / "home/work"),
                "dotssh": str(self.dotssh),
                "etc_hosts": str(self.workdir / "hosts"),
                "resolv_conf": str(self.workdir / "resolv.conf"),
            }
            argv = [
                *("ip", "netns", "exec", h.netns, "unshare"),
                *"--pid --fork --mount-proc --mount --uts --propagation private".split(),
                # If unshare dies (it dies with us, see _die_with_parent) the host's PID 1 gets
                # SIGKILL, which takes the whole PID namespace with it.
                "--kill-child=SIGKILL",
                *("--", sys.executable, "-I", "-S", str(_PROGRAMS / "rackbox_init.py"), json.dumps(cfg)),
            ]
            with open(h.dir / "init.log", "wb") as log:
                h.init_proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    preexec_fn=_die_with_parent,
                )
            self._state.procs.append(h.init_proc)
        deadline = time.monotonic() + self._ready_timeout(len(self._hosts))
        for h in self._hosts:
            assert h.init_proc is not None and h.init_proc.stdout is not None
            line = _readline(h.init_proc.stdout, deadline)
            h.init_proc.stdout.close()
            if line.strip() != b"ready":
                log = (h.dir / "init.log").read_text(errors="replace")
                raise RackBoxError(f"{h.netns}: init did not come up ({line!r}):\n{log}")
            kids = _children(h.init_proc.pid)
            if len(kids) != 1:
                raise RackBoxError(f"{h.netns}: cannot find the host's PID 1 (children {kids})")
            h.init_pid = kids[0]

    def _start_sshds(self, hosts: list[_Host]) -> None:
        sshd = shutil.which("sshd", path=_SBIN_PATH)
        assert sshd is not None
        for h in hosts:
            self.stop_sshd(h.index)
            (h.dir / "sshd.pid").unlink(missing_ok=True)
            # absolute path: sshd re-executes itself for every connection
            cmd = [sshd, "-D", "-f", f"{h.dir}/sshd_config", "-E", f"{h.dir}/sshd.log"]
            h.sshd_proc = subprocess.Popen(
                [*self._nsenter(h), "--", *cmd],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                # No _die_with_parent here: nsenter must outlive sshd to reap it (see _kill_tiered);
                # if we die, the host's PID 1 dies and takes sshd along, then nsenter exits.
            )
            self._state.procs.append(h.sshd_proc)
        deadline = time.monotonic() + self._ready_timeout(len(hosts))
        for h in hosts:
            assert h.sshd_proc is not None
            # sshd writes its PidFile only after its listening socket is bound.
            while not _nonempty(h.dir / "sshd.pid") or not _children(h.sshd_proc.pid):
                if h.sshd_proc.poll() is not None or time.monotonic() > deadline:
                    log = _tail(h.dir / "sshd.log")
                    raise RackBoxError(f"{h.netns}: sshd did not start (rc {h.sshd_proc.poll()}):\n{log}")
                time.sleep(0.01)


# --------------------------------------------------------------------- module helpers
def _box_namespaces(prefix: str) -> list[str]:
    pattern = re.compile(rf"{re.escape(prefix)}-(br|h\d+)")
    try:
        return [n for n in os.listdir(_NETNS_DIR) if pattern.fullmatch(n)]
    except FileNotFoundError:
        return []


def live_box_pids(prefix: str) -> list[int]:
    """PID 1s of a running box with this prefix (empty: the prefix is free or only stale)."""
    found = _pids_by_netns(_box_namespaces(prefix)).values()
    return [pid for pids in found for pid in pids if _comm(pid) == _INIT_COMM]


def free_prefix(base: str = "g45") -> str:
    """``base`` unless a live box (another test session, say) uses it; then ``base_2``, ``base_3``..."""
    n = 1
    while live_box_pids(prefix := base if n == 1 else f"{base}_{n}"):
        n += 1
    return prefix


def remove_stale_namespaces(prefix: str) -> list[str]:
    """Kill and delete namespaces ``{prefix}-br`` / ``{prefix}-hN`` left by a crashed run.

    A box whose owner died lost its hosts' PID 1s with it (see _die_with_parent), so a
    namespace with a live PID 1 belongs to a box still in use: refuse rather than wreck it.
    """
    live = live_box_pids(prefix)
    if live:
        raise RackBoxError(f"a live box uses prefix {prefix!r} (host PID 1s {live}); pick another prefix")
    stale = _box_namespaces(prefix)
    if stale:
        _teardown(_State(namespaces=list(stale)))
    return stale


def _teardown(state: _State) -> None:
    """Kill everything in the namespaces, reap our children, delete the namespaces."""
    names = list(state.namespaces)
    _kill_tiered(lambda: [p for ps in _pids_by_netns(names).values() for p in ps], timeout=15)
    for proc in state.procs:
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
    for name in names:
        subprocess.run(["ip", "netns", "delete", name], stderr=subprocess.DEVNULL, check=False)
    state.namespaces.clear()
    state.procs.clear()
    if state.remove_dir is not None:
        shutil.rmtree(state.remove_dir, ignore_errors=True)


def _kill_tiered(list_pids: Callable[[], list[int]], timeout: float) -> bool:
    """SIGKILL the PIDs list_pids() returns until it returns none; False on timeout.

    Innermost first: hosts' PID 1s (their death takes the whole PID namespace), then other
    processes inside a host PID namespace, and only then this machine's helpers in the net
    namespaces (unshare, nsenter, admin clients). nsenter stays in the root PID namespace, so
    if it died before its child, the child would be re-parented to the machine's init; the
    host's PID 1 cannot finish dying until that init reaps it, which may be slow (or never, in
    a container). Left alive, nsenter reaps its child and exits by itself. PIDs are only ever
    signalled right after being found in the box, so a recycled PID is never hit.
    """
    deadline = time.monotonic() + timeout
    graced = False
    while pids := list_pids():
        if time.monotonic() > deadline:
            return False
        depth = {pid: _nspid(pid) for pid in pids}
        victims = [p for p, ns in depth.items() if len(ns) > 1 and ns[-1] == 1]
        victims = victims or [p for p, ns in depth.items() if len(ns) > 1]
        if not victims and not graced:
            graced = True  # give nsenters a moment to reap their (just killed) children
            time.sleep(0.1)
            continue
        for pid in victims or pids:
            _kill(pid)
        time.sleep(0.02)
    return True


def _nspid(pid: int) -> list[int]:
    """The PID in each nested PID namespace, outermost first ([] if gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return [int(x) for x in line.split()[1:]]
    except (OSError, ValueError):
        pass
    return []


def _pids_by_netns(names: Iterable[str]) -> dict[str, list[int]]:
    """Like ``ip netns pids``, for several namespaces in one /proc scan."""
    keys = {}
    for name in names:
        with contextlib.suppress(OSError):
            st = os.stat(_NETNS_DIR / name)
            keys[(st.st_dev, st.st_ino)] = name
    found: dict[str, list[int]] = {n: [] for n in keys.values()}
    if not keys:
        return found
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):  # gone, or a zombie (no namespaces any more)
                st = os.stat(f"/proc/{entry.name}/ns/net")
                name = keys.get((st.st_dev, st.st_ino))
                if name is not None:
                    found[name].append(int(entry.name))
    return found


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _kill(pid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RackBoxError(f"ip {' '.join(args)}: {proc.stderr.strip()}")


def _ip_batch(netns: str, commands: Sequence[str]) -> None:
    proc = subprocess.run(["ip", "-n", netns, "-batch", "-"], input="\n".join(commands) + "\n",
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RackBoxError(f"ip -n {netns} -batch: {proc.stderr.strip()}")


def _keygen_popen(path: Path, comment: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )


def _keygen(path: Path, comment: str) -> None:
    if _keygen_popen(path, comment).wait() != 0:
        raise RackBoxError(f"ssh-keygen failed for {path}")


def _host_path() -> str:
    """PATH for the hosts: this interpreter's bin dir first (real `ray`/`python3`, not pyenv
    shims, which need pyenv's shell init), then the current PATH and sbin dirs (sshd's default
    PATH for a non-interactive session lacks both)."""
    dirs = [str(Path(sys.executable).parent), *os.environ.get("PATH", "").split(os.pathsep)]
    dirs += ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]
    return os.pathsep.join(dict.fromkeys(d for d in dirs if d))


def _die_with_parent() -> None:
    # Runs in the child before exec: if the test process dies without cleaning up (SIGKILL,
    # crash), the kernel kills this child, and through unshare --kill-child the whole host.
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _readline(stream: Any, deadline: float) -> bytes:
    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        if not sel.select(max(0.0, deadline - time.monotonic())):
            return b"<timeout>"
    return stream.readline()


def _nonempty(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except OSError:
        return False


def _tail(path: Path, n: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return f"<no {path}>"


# The checkpoint and data files the default plan refers to, relative to --base-dir.
BASE_FILES = (
    "GLM-4.5-355B-A32B/config.json",
    "GLM-4.5-355B-A32B_torch_dist/latest_checkpointed_iteration.txt",
    "dapo-math-17k/dapo-math-17k.jsonl",
    "rl_data/aime-2024.jsonl",
)


def make_base_dir(root: Path) -> Path:
    """Create the default plan's checkpoint/data files under ``root`` (a --base-dir)."""
    for rel in BASE_FILES:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("1\n" if rel.endswith(".txt") else "{}\n")
    return root

