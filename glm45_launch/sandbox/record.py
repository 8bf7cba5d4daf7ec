"""Record the argv of the external commands a bash script runs, without running them.

bubblewrap holds the script (``layout.py``: new namespaces, no capabilities, an unprivileged
user when we are root, ``ResourceLimits``, a read-only root with only bash, the text tools it
lends and copies of what it may read). Every other command is a recording shim
(``programs/record.bash``): the names on its PATH (``DEFAULT_RECORDED``) and every program of
the system directories, whoever runs it. The profile (``programs/profile.bash``, through
``BASH_ENV``) records what no shim sees. Everything comes back as frames on one pipe
(``channel.py``), read in bounded chunks; the output is capped, a timeout kills the sandbox.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from glm45_launch.errors import LaunchError
from glm45_launch.sandbox import hostprocs, layout
from glm45_launch.sandbox.channel import Limits, Outcome, pump
from glm45_launch.sandbox.recording import Cluster, FrameLog, Origin, Poll, Recording, Wait, canonical
from glm45_launch.sandbox.rootdir import SAFE_TOOLS, RootDir, build_root

DEFAULT_RECORDED: tuple[str, ...] = (
    "ray", "ssh", "pkill", "killall", "sleep", "python", "python3", "torchrun", "nvidia-smi", "hf",
    "huggingface-cli", "rsync", "scp", "pip", "pip3", "git", "wandb",
)
"""Command names replaced by recording shims unless ``commands=`` says otherwise."""

HARDCODED_HOSTFILE = "/root/mpi_rack_hostfile"
"""Hostfile path the bash recipe hard-codes; the hostfile is found there too."""

_BASE_ENV_KEYS = ("HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "USER", "LOGNAME", "TERM")
_SHELL_SAFE = re.compile(r"[\w@%+=:,./-]+")
_HOOKS = True
"""Load the profile (tests turn it off to check the sandbox on its own)."""


@dataclass(frozen=True)
class ResourceLimits:
    """Per recording: processes (beyond those the sandbox's user has), memory per process,
    file size, CPU seconds beyond the timeout, open files; the grace left to leftovers."""

    processes: int = 64
    memory_bytes: int = 128 * 1024 * 1024
    file_bytes: int = 16 * 1024 * 1024
    cpu_extra_s: int = 5
    open_files: int = 1024
    tmp_bytes: int = 16 * 1024 * 1024  # /tmp
    dir_bytes: int = 4 * 1024 * 1024  # the default working directory
    output_bytes: int = 64 * 1024 * 1024  # stdout + stderr + frames + the tmpfs above
    records: int = 100_000
    grace_s: float = 0.5


LIMITS = ResourceLimits()


class SandboxUnavailable(LaunchError):
    """The sandbox cannot run here (bubblewrap missing, no user namespaces)."""


def bubblewrap() -> str | None:
    """The bubblewrap program on PATH, or None."""
    return shutil.which("bwrap")


def require_bubblewrap() -> str:
    path = bubblewrap()
    if path is None:
        raise SandboxUnavailable("parity needs bubblewrap (apt-get install bubblewrap) to run the script "
                                 "isolated")
    return path


def check_script(script: Path | str, limits: ResourceLimits = LIMITS) -> Path:
    """``script`` as an absolute path, once it is one to record: a printable path, a regular
    file under the file size limit, not where host secrets live, nor a symlink out of its
    folder (the folder it is in would not be the one it sees)."""
    script = Path(script).absolute()
    if not str(script).isprintable():
        raise LaunchError(f"{script}: the script's path holds control characters; rename it")
    try:
        st = script.stat()
    except OSError as exc:
        raise LaunchError(f"{script}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise LaunchError(f"{script}: not a regular file")
    if st.st_size > limits.file_bytes:
        raise LaunchError(f"{script}: {st.st_size} bytes, over the {limits.file_bytes}-byte limit of a script")
    if where := layout.private_place(script):
        raise LaunchError(f"{script}: the script lies {where}, where host secrets live; copy it into a "
                          f"folder of its own to record it")
    real = script.resolve()
    if real.parent != Path(os.path.realpath(script.parent)):  # run.sh -> ~/creds.txt
        raise LaunchError(f"{script}: a symlink to {real}, out of its folder; give that path to record it")
    return script


def record_script(
    script: Path,
    *,
    env: dict[str, str],
    hostfile: Path | None = None,
    hostfile_var: str = "HOSTFILE",
    cwd: Path | None = None,
    timeout: float = 30,
    commands: Iterable[str] = DEFAULT_RECORDED,
    args: Sequence[str] = (),
    expose: Sequence[Path | tuple[Path, str]] = (),
    hostfile_aliases: Sequence[str] = (),
    cluster: Cluster | None = None,
    capture_env: Sequence[Sequence[str]] = (),
    limits: ResourceLimits = LIMITS,
) -> Recording:
    """Run ``bash SCRIPT ARGS...`` in the recording sandbox (see the module); what it invoked.

    Environment: ``env`` is the whole environment apart from a few basics taken from ours
    (HOME, LANG, LC_*, TMPDIR, USER, LOGNAME, TERM), ``PATH`` (the shims, then the lent tools
    found on ``env["PATH"]`` or ours) and ``BASH_ENV`` (the profile). Unset variables really
    are unset. The records of argv that start with one of ``capture_env`` carry their whole
    environment (``Recording.environments``).

    Files: the script sees its real folder (a read-only copy of its owner's files; only the
    script when the folder is a shared one such as /tmp, a home, a system or a dot-folder; a
    script where secrets live, such as ~/.ssh or /etc, is refused: ``check_script``),
    ``expose`` (paths, or (path, path inside) pairs), ``cwd`` (read-only; default: an empty
    writable directory, so globs like ``[0]*3+[1]*89`` stay literal) and the hostfile:
    ``$hostfile_var`` (empty: none) names it, and it is also found at
    ``/root/mpi_rack_hostfile`` and at each of ``hostfile_aliases``.

    Process control: stdin is /dev/null, stdout and stderr are pipes read in bounded chunks; on
    timeout or when the output passes its limit the whole sandbox is killed; processes left
    running after the script get a short grace period, then are killed too. Without
    bubblewrap: ``SandboxUnavailable``.
    """
    names = list(dict.fromkeys(commands))
    for name in names:
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"not a command name: {name!r}")
    bwrap = require_bubblewrap()
    given = check_script(script, limits)
    script = given.resolve()
    bash = shutil.which("bash") or "/bin/bash"
    with tempfile.TemporaryDirectory(prefix="glm45-record-") as tmp:
        run = _Run(Path(tmp), script, env, limits)
        run.show(layout.shared_folder(given.parent), hostfile, hostfile_var, cwd, expose, hostfile_aliases)
        root = build_root(run.stage / "root", names=names, bash=bash, cluster=cluster, capture=capture_env,
                          tools_path=env.get("PATH") or os.environ.get("PATH") or layout.DEFAULT_PATH)
        outcome = run.start_and_pump(bwrap, root, [bash, str(script), *args], timeout)
        return run.recording(outcome, timeout)


class _Run:
    """One recording: its staging directory, sandbox and what came back."""

    def __init__(self, stage: Path, script: Path, env: dict[str, str], limits: ResourceLimits) -> None:
        self.stage, self.script, self.limits = stage, script, limits
        self.notes: list[str] = []
        self.run_env = {k: os.environ[k] for k in _BASE_ENV_KEYS if k in os.environ} | dict(env)
        self.copies: list[tuple[Path, str]] = []
        self.budget = layout.CopyBudget()
        self.workdir, self.workdir_writable = stage / "cwd", True
        self.left: list[str] = []
        self.killed = False  # the recorder killed the sandbox (time or output limit)

    def show(self, shared: bool, hostfile: Path | None, hostfile_var: str, cwd: Path | None,
             expose: Sequence[Path | tuple[Path, str]], aliases: Sequence[str]) -> None:
        """Copy what the script sees (see ``record_script``; ``shared``: its folder as given is
        a shared one)."""
        script = self.script
        if shared or layout.shared_folder(script.parent):
            self.notes.append(f"the script's folder {script.parent} is a shared one: only the script is "
                              "visible in the sandbox (expose more with --expose)")
            self._copy(script, str(script))
        else:  # the folder's files of the script's owner (not a hard link to another's secret)
            self._copy(script.parent, str(script.parent), owner=os.stat(script).st_uid, first=script.name)
        for item in expose:
            src, inside = item if isinstance(item, tuple) else (item, str(Path(item).absolute()))
            self._copy(Path(src).absolute(), inside)
        if cwd is not None:
            self.workdir, self.workdir_writable = Path(cwd).absolute(), False
            self._copy(self.workdir, str(self.workdir))
        if hostfile is not None:
            hostfile_abs = Path(hostfile).absolute()
            if not _SHELL_SAFE.fullmatch(str(hostfile_abs)):
                self.notes.append(f"hostfile path {str(hostfile_abs)!r} has shell-special characters")
            if hostfile_var:
                self.run_env[hostfile_var] = str(hostfile_abs)
            aliases = [os.path.join(self.workdir, a) for a in aliases]  # a relative one: from the cwd
            for inside in dict.fromkeys([str(hostfile_abs), HARDCODED_HOSTFILE, *aliases]):
                self._copy(hostfile_abs, inside)
        if self.budget.skipped:
            self.notes.append(f"not copied into the sandbox: {self.budget.skipped} file(s) or folder(s), e.g. "
                              f"{self.budget.example}")

    def _copy(self, src: Path, inside: str, owner: int | None = None, first: str = "") -> None:
        """A read-only copy of ``src`` (a named path: its own symlinks followed) at ``inside``
        (``owner``: only the regular files of that user; ``first``: the entry copied first)."""
        dest = self.stage / "copies" / str(len(self.copies))
        dest.parent.mkdir(exist_ok=True, mode=0o755)
        try:
            layout.copy_in(src.resolve(), dest, self.budget, owner, first=first)
        except OSError as exc:
            self.notes.append(f"could not copy {src} into the sandbox: {exc.strerror}")
            return
        self.copies.append((dest, inside))

    # -- running it ----------------------------------------------------------------------------

    def start_and_pump(self, bwrap: str, root: RootDir, command: list[str], timeout: float) -> Outcome:
        lim = self.limits
        self.run_env["PATH"] = root.search_path
        self.run_env.pop("BASH_ENV", None)
        if _HOOKS:
            self.run_env["BASH_ENV"] = str(root.path / "profile.bash")
        uid = os.getuid()
        host_uid = (hostprocs.sandbox_uid() if os.geteuid() == 0 else None) or uid
        if host_uid == 0:
            self.notes.append("the sandbox runs as root's user (this system maps no other one): the process limit "
                              "does not hold (the time limit still ends a fork bomb)")
        chan_r, chan_w = os.pipe()
        tick_r, tick_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        info_r, info_w = os.pipe()
        nproc = hostprocs.uids().get(host_uid, 0) + lim.processes + 4
        init = [command[0], "-p", str(root.path / "init.bash"), str(int(lim.grace_s * 1000)), str(chan_w),
                str(tick_r), str(nproc), str(lim.memory_bytes // 1024), str(lim.file_bytes // 1024),
                str(int(timeout) + lim.cpu_extra_s), str(lim.open_files), "--", *command]
        try:
            args_fd = self._bwrap_args(root, uid, host_uid)
        except layout.LayoutError as exc:
            for fd in (chan_r, chan_w, tick_r, tick_w, out_r, out_w, err_r, err_w, info_r, info_w):
                os.close(fd)
            raise SandboxUnavailable(f"cannot build the recording sandbox: {exc}") from None
        child_fds = [chan_w, tick_r, out_w, err_w, info_w, args_fd]
        user = {"user": host_uid, "group": host_uid, "extra_groups": []} if host_uid != uid else {}
        try:
            proc = subprocess.Popen([bwrap, "--args", str(args_fd), "--info-fd", str(info_w), *init],
                                    stdin=subprocess.DEVNULL, stdout=out_w, stderr=err_w, cwd="/", env=self.run_env,
                                    pass_fds=[chan_w, tick_r, info_w, args_fd], start_new_session=True,
                                    **user)  # type: ignore[call-overload]
        except (OSError, subprocess.SubprocessError) as exc:
            for fd in (chan_r, tick_w, out_r, err_r, info_r, *child_fds):
                os.close(fd)
            raise SandboxUnavailable(f"could not start the recording: {exc}") from None
        for fd in child_fds:
            os.close(fd)
        init_fd = hostprocs.sandbox_init(info_r, proc.pid)
        os.close(info_r)

        def kill() -> None:
            first, self.killed = not self.killed, True
            try:  # the namespace dies with its first process; bubblewrap reaps it and exits
                if first and init_fd is not None:
                    signal.pidfd_send_signal(init_fd, signal.SIGKILL)
                    return
            except OSError:
                pass
            proc.kill()  # (bubblewrap outlived its child, or said nothing of it)

        byte_limit = lim.output_bytes - lim.tmp_bytes - lim.dir_bytes
        try:
            outcome = pump(proc, out_r, err_r, chan_r, Limits(timeout, byte_limit, lim.records), kill)
        finally:
            os.close(tick_w)
            if init_fd is not None:
                os.close(init_fd)
        if host_uid != uid and (left := hostprocs.wait_gone(host_uid)):  # the sandbox's user is its own
            self.left.append(f"{left} process(es) of the sandbox were still ending when the recording returned")
        return outcome

    def _bwrap_args(self, root: RootDir, uid: int, host_uid: int) -> int:
        """bubblewrap's setup, in a file, open for ``--args``. The staging directory becomes the
        sandbox's user's own (no other user reads the copies)."""
        name = os.environ.get("USER") or ("root" if uid == 0 else f"user{uid}")
        passwd, group = layout.passwd_lines(uid, os.getgid(), name, os.environ.get("HOME", "/"))
        (self.stage / "passwd").write_text(passwd)
        (self.stage / "group").write_text(group)
        box = layout.Sandbox(
            root=str(root.path), programs=root.programs, copies=self.copies, cwd=str(self.workdir),
            cwd_writable=self.workdir_writable, uid=uid, gid=os.getgid(), tmp_bytes=self.limits.tmp_bytes,
            dir_bytes=self.limits.dir_bytes, passwd=self.stage / "passwd", group=self.stage / "group",
            extra=layout.locale_data())
        args_file = self.stage / "bwrap.args"
        args_file.write_bytes(b"".join(os.fsencode(a) + b"\0" for a in box.arguments()))
        if host_uid != os.getuid():
            for top, dirs, files in os.walk(self.stage):
                for entry in (top, *(os.path.join(top, n) for n in dirs + files)):
                    os.lchown(entry, host_uid, host_uid)
        self.stage.chmod(0o700)
        return os.open(args_file, os.O_RDONLY)

    # -- what came back ------------------------------------------------------------------------

    def recording(self, outcome: Outcome, timeout: float) -> Recording:
        log = FrameLog().read(outcome.frames)
        stderr = outcome.stderr.text()
        if not log.started and not outcome.timed_out:
            line = next((ln for ln in stderr.splitlines() if ln.strip()), "no message").strip()[:300]
            hint = " (are unprivileged user namespaces disabled here?)" if "namespace" in line.lower() else ""
            raise SandboxUnavailable(f"the recording sandbox did not start: {line}{hint}")
        notes = self.notes + log.notes
        if outcome.timed_out:
            notes.append(f"timed out after {timeout:g} s; the recording was stopped")
        if outcome.over_limit:
            notes.append(f"stopped the script: {outcome.over_limit}")
        notes += self.left
        returncode = log.status if log.status is not None and not outcome.timed_out else outcome.returncode
        if self.killed and returncode == 128 + signal.SIGKILL:  # bubblewrap's word for a killed first process
            returncode = -signal.SIGKILL
        if not outcome.timed_out and not outcome.over_limit and returncode != 0:
            notes.append(f"script exited with status {returncode}")
        if outcome.garbled:
            notes.append(f"{outcome.garbled} unreadable line(s) on the recording's channel (the script wrote to it?)")
        return Recording(log.invocations, returncode, outcome.stdout.text(), stderr, outcome.timed_out, notes,
                         log.polls, log.waits, outcome.over_limit, log.origins, log.outside, log.environments)


__all__ = [
    "DEFAULT_RECORDED", "HARDCODED_HOSTFILE", "LIMITS", "SAFE_TOOLS", "Cluster", "Origin", "Poll", "Recording",
    "ResourceLimits", "SandboxUnavailable", "Wait", "bubblewrap", "canonical", "check_script", "record_script",
    "require_bubblewrap",
]
