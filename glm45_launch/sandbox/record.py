"""Record the argv of the external commands a bash script runs, without running them.

Nothing the script asks for really runs except pure text tools. Three layers:

1. The sandbox (``layout.py``): bubblewrap runs the script in new user, mount, PID, network,
   IPC, UTS and cgroup namespaces, without capabilities, in a new session, as an unprivileged
   user when we are root, under resource limits (processes, memory, file size, CPU time, open
   files: ``ResourceLimits``). Its filesystem holds only bash, the text tools, their libraries, stand-ins
   for the system's other commands and read-only copies of what the script may read; what it
   writes goes to size-limited tmpfs. A script that gets past the layers below still touches
   nothing of the host.
2. ``PATH`` is the shim directory (one link to ``programs/record.bash`` per recorded command
   name: it records its argv and exits 0 silently, or answers a poll: arithmetic in ``python3
   -c``, and the cluster's GPUs when the recording has a ``cluster``) plus a directory of links
   to the allowlisted text tools (``SAFE_TOOLS``, ``rootdir.py``), so the script's word
   splitting, globbing, loops and text processing behave as in production.
3. Bash hooks (``programs/hooks.bash``, read through ``BASH_ENV`` by every bash the script
   starts) record every other command name, ``kill``, commands called by path, the tools' uses
   that write files or run commands, and skip what would write outside the sandbox; they also
   end a wait loop that can never end under the recorder (see the file).

Everything reaches the recorder as frames on one pipe (``channel.py``), read in bounded
chunks: the recorded argv, notes, answered polls, ended wait loops, the exit status. The
output is capped (``ResourceLimits.output_bytes``); a timeout kills the whole sandbox. Every skipped or
recorded-instead-of-run command leaves a note.

``sandbox=False`` (``--unsafe-no-sandbox``) runs layers 2-3 alone on the host, as before
bubblewrap: an allowlist, not isolation (a compound command's redirection, ``{ ...; } > file``,
is not seen by the DEBUG trap and writes).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from glm45_launch.errors import LaunchError
from glm45_launch.sandbox import hostprocs, layout
from glm45_launch.sandbox.channel import Frame, Limits, Outcome, pump
from glm45_launch.sandbox.recording import (
    Cluster,
    FrameLog,
    Origin,
    Poll,
    Recording,
    Wait,
    canonical,
)
from glm45_launch.sandbox.rootdir import SAFE_TOOLS, build_root, runs_itself

DEFAULT_RECORDED: tuple[str, ...] = (
    "ray", "ssh", "pkill", "killall", "sleep", "python", "python3", "torchrun", "nvidia-smi", "hf",
    "huggingface-cli", "rsync", "scp", "pip", "pip3", "git", "wandb",
)
"""Command names replaced by recording shims unless ``commands=`` says otherwise."""

HARDCODED_HOSTFILE = "/root/mpi_rack_hostfile"
"""Hostfile path the bash recipe hard-codes; the hostfile is found there too."""

_BASE_ENV_KEYS = ("HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "USER", "LOGNAME", "TERM")
_SHELL_SAFE = re.compile(r"[\w@%+=:,./-]+")
_SANDBOX = True
"""Record in the bubblewrap sandbox unless ``sandbox=False`` (tests switch the default)."""
_HOOKS = True
"""Load the bash hooks (tests turn them off to check the sandbox on its own)."""


@dataclass(frozen=True)
class ResourceLimits:
    """Per recording: processes (beyond those the sandbox's user has), memory per process,
    file size, CPU seconds beyond the timeout, open files; the grace left to leftovers."""

    processes: int = 64
    memory_bytes: int = 128 * 1024 * 1024
    file_bytes: int = 16 * 1024 * 1024
    cpu_extra_s: int = 5
    open_files: int = 1024
    tmp_bytes: int = 16 * 1024 * 1024  # /tmp (and the default working directory)
    dir_bytes: int = 4 * 1024 * 1024  # each writable directory
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
                                 "isolated; --unsafe-no-sandbox records without it, on this host")
    return path


def check_script(script: Path | str, limits: ResourceLimits = LIMITS, isolated: bool = True) -> Path:
    """``script`` as an absolute path, once it is one to record: a printable path, a regular
    file under the file size limit and (``isolated``) not where host secrets live, nor a
    symlink out of its folder (the folder it is in would not be the one it sees)."""
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
    if isolated and (where := layout.private_place(script)):
        raise LaunchError(f"{script}: the script lies {where}, where host secrets live; copy it into a "
                          f"folder of its own to record it")
    real = script.resolve()
    if isolated and real.parent != Path(os.path.realpath(script.parent)):  # run.sh -> ~/creds.txt
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
    sandbox: bool | None = None,
    expose: Sequence[Path | tuple[Path, str]] = (),
    hostfile_aliases: Sequence[str] = (),
    cluster: Cluster | None = None,
    limits: ResourceLimits = LIMITS,
) -> Recording:
    """Run ``bash SCRIPT ARGS...`` in the recording sandbox (see the module); what it invoked.

    Environment: ``env`` is the whole environment apart from a few basics taken from ours
    (HOME, LANG, LC_*, TMPDIR, USER, LOGNAME, TERM), ``PATH`` (the shim directory, then the
    allowlisted tools found on ``env["PATH"]`` or ours) and ``BASH_ENV`` (the hooks, which
    first source ``env["BASH_ENV"]`` if given; files written beside that one, when it lives in
    the temporary directory, come back). Unset variables really are unset.

    Files: the script sees its real folder (a read-only copy of its owner's files; only the
    script when the folder is a shared one such as /tmp, a home, a system or a dot-folder; a
    script where secrets live, such as ~/.ssh or /etc, is refused: ``check_script``),
    ``expose`` (paths, or (path, path inside) pairs),
    ``cwd`` (read-only; default: an empty writable directory, so globs like
    ``[0]*3+[1]*89`` stay literal) and the hostfile: ``$hostfile_var`` (empty: none) names it,
    and it is also found at ``/root/mpi_rack_hostfile`` and at each of ``hostfile_aliases``.

    Process control: stdin is /dev/null, stdout and stderr are pipes read in bounded chunks; on
    timeout or when the output passes its limit the whole sandbox is killed; processes left
    running after the script get a short grace period, then are killed too.

    ``sandbox=False`` records on the host without bubblewrap (see the module); otherwise a
    missing bubblewrap raises ``SandboxUnavailable``.
    """
    names = list(dict.fromkeys(commands))
    for name in names:
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"not a command name: {name!r}")
    isolated = _SANDBOX if sandbox is None else sandbox
    bwrap = require_bubblewrap() if isolated else None
    script = check_script(script, limits, isolated)
    bash = shutil.which("bash") or "/bin/bash"
    with tempfile.TemporaryDirectory(prefix="glm45-record-") as tmp:
        run = _Run(Path(tmp), script, env, names, bash, limits, isolated)
        run.prepare(hostfile, hostfile_var, cwd, expose, hostfile_aliases, cluster)
        command = [bash, str(run.target), *args]
        outcome = run.start_and_pump(command, bwrap, timeout)
        return run.recording(outcome, timeout)


class _Run:
    """One recording: its staging directory, sandbox and what came back."""

    def __init__(self, stage: Path, script: Path, env: dict[str, str], names: list[str], bash: str,
                 limits: ResourceLimits, isolated: bool) -> None:
        self.stage, self.script, self.env, self.names, self.bash = stage, script, env, names, bash
        self.limits, self.isolated = limits, isolated
        self.root = stage / "root"
        self.notes: list[str] = []
        self.run_env = {k: os.environ[k] for k in _BASE_ENV_KEYS if k in os.environ} | dict(env)
        self.target = script
        self.copies: list[tuple[Path, str]] = []
        self.writable: list[tuple[str, list[tuple[Path, str]]]] = []  # dir, (host file, name)
        self.budget = layout.CopyBudget()
        self.programs: list[str] = []
        self.workdir = stage / "cwd"
        self.workdir_writable = True
        self.cat = self.wc = ""
        self.left: list[str] = []
        self.killed = False  # the recorder killed the sandbox (time or output limit)

    # -- what the script sees ------------------------------------------------------------------

    def prepare(self, hostfile: Path | None, hostfile_var: str, cwd: Path | None,
                expose: Sequence[Path | tuple[Path, str]], aliases: Sequence[str], cluster: Cluster | None) -> None:
        script, text = self.script, self.script.read_bytes()
        if self.isolated:  # the script where it really is (its folder is then the real one)
            real = self.script = self.target = script.resolve()
            if layout.shared_folder(script.parent) or layout.shared_folder(real.parent):
                self.notes.append(f"the script's folder {real.parent} is a shared one: only the script is "
                                  "visible in the sandbox (expose more with --expose)")
                self._copy(real, str(real))
            else:  # the folder's files of the script's owner (not a hard link to another's secret)
                self._copy(real.parent, str(real.parent), owner=os.stat(real).st_uid, first=real.name)
            for item in expose:
                src, inside = item if isinstance(item, tuple) else (item, str(Path(item).absolute()))
                self._copy(Path(src).absolute(), inside)
        if cwd is not None:
            self.workdir, self.workdir_writable = Path(cwd).absolute(), False
            if self.isolated:
                self._copy(self.workdir, str(self.workdir))
        if hostfile is not None:
            hostfile_abs = Path(hostfile).absolute()
            if not _SHELL_SAFE.fullmatch(str(hostfile_abs)):
                self.notes.append(f"hostfile path {str(hostfile_abs)!r} has shell-special characters")
            if hostfile_var:
                self.run_env[hostfile_var] = str(hostfile_abs)
            if self.isolated:
                aliases = [os.path.join(self.workdir, a) for a in aliases]  # a relative one: from the cwd
                for inside in dict.fromkeys([str(hostfile_abs), HARDCODED_HOSTFILE, *aliases]):
                    self._copy(hostfile_abs, inside)
            elif HARDCODED_HOSTFILE.encode() in text:
                rewritten = text.replace(HARDCODED_HOSTFILE.encode(), os.fsencode(hostfile_abs))
                self.target = mirror_script(script, rewritten, self.stage / "mirror", self.notes)
        if not self.isolated or self.workdir_writable:
            self.workdir.mkdir(exist_ok=True)
        if self.budget.skipped:
            self.notes.append(f"not copied into the sandbox: {self.budget.skipped} file(s) or folder(s), e.g. "
                              f"{self.budget.example}")
        caller = self._caller_hooks()
        scripts = [s for s in dict.fromkeys([self.target, self.script]) if runs_itself(s)]
        root = build_root(self.root, names=self.names, bash=self.bash, programs_only=self.isolated, hooks=_HOOKS,
                          inherited_path=self.env.get("PATH") or os.environ.get("PATH") or layout.DEFAULT_PATH,
                          scripts=scripts, writable=[d for d, _ in self.writable], tree=str(self.workdir),
                          caller=caller, cluster=cluster)
        self.programs, self.cat, self.wc = root.programs, root.cat, root.wc
        self.run_env["PATH"] = root.search_path
        if root.bash_env:
            self.run_env["BASH_ENV"] = root.bash_env
        else:
            self.run_env.pop("BASH_ENV", None)

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

    def _caller_hooks(self) -> str:
        """The caller's BASH_ENV: its directory is writable when it is a temporary one."""
        caller = self.env.get("BASH_ENV") or ""
        if not caller:
            return ""
        hook_dir = os.path.dirname(os.path.abspath(caller))
        temp = os.path.realpath(tempfile.gettempdir())
        real = os.path.realpath(hook_dir)
        if real != temp and os.path.commonpath([real, temp]) == temp:
            files = [(Path(hook_dir) / e.name, e.name) for e in os.scandir(hook_dir)
                     if e.is_file(follow_symlinks=False) and not e.name.startswith(".")]
            self.writable.append((hook_dir, files[:16]))
            if real != hook_dir:
                self.writable.append((real, []))
        elif self.isolated:
            self._copy(Path(caller).absolute(), os.path.abspath(caller))
        return caller

    # -- running it ----------------------------------------------------------------------------

    def start_and_pump(self, command: list[str], bwrap: str | None, timeout: float) -> Outcome:
        lim = self.limits
        chan_r, chan_w = os.pipe()
        tick_r, tick_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        child_fds = [chan_w, tick_r, out_w, err_w]
        uid = os.getuid()
        host_uid = (hostprocs.sandbox_uid() if (self.isolated and os.geteuid() == 0) else None) or uid
        if self.isolated and host_uid == 0:
            self.notes.append("the sandbox runs as root's user (this system maps no other one): the process limit "
                              "does not hold (the time limit still ends a fork bomb)")
        nproc = hostprocs.processes_of(host_uid) + lim.processes + 4
        mode = "sandbox" if self.isolated else "unsafe"
        outdirs = [d for d, _ in self.writable] if self.isolated else []
        init = [self.bash, "-p", str(self.root / "init.bash"), mode, str(int(lim.grace_s * 1000)), str(chan_w),
                str(tick_r), self.cat, self.wc, str(nproc), str(lim.memory_bytes // 1024),
                str(lim.file_bytes // 1024), str(int(timeout) + lim.cpu_extra_s), str(lim.open_files),
                *outdirs, "--", *command]
        user: dict[str, object] = {}
        info_r = -1
        if self.isolated:
            assert bwrap is not None
            argv, fds = self._bwrap(bwrap, uid, init, host_uid)
            info_r, info_w = os.pipe()
            argv[1:1] = ["--info-fd", str(info_w)]
            child_fds += [*fds, info_w]
            if host_uid != uid:
                user = {"user": host_uid, "group": host_uid, "extra_groups": []}
            cwd = "/"
        else:
            argv, cwd = init, str(self.workdir)
        byte_limit = lim.output_bytes - (lim.tmp_bytes + lim.dir_bytes * len(self.writable) if self.isolated else 0)
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out_w, stderr=err_w, cwd=cwd,
                                    env=self.run_env, pass_fds=[chan_w, tick_r, *child_fds[4:]],
                                    start_new_session=True, **user)  # type: ignore[call-overload]
        except (OSError, subprocess.SubprocessError) as exc:
            for fd in (chan_r, tick_w, out_r, err_r, *child_fds, *([info_r] if self.isolated else [])):
                os.close(fd)
            raise SandboxUnavailable(f"could not start the recording: {exc}") from None
        for fd in child_fds:
            os.close(fd)
        init_fd = None
        if self.isolated:
            init_fd = hostprocs.sandbox_init(info_r, proc.pid)
            os.close(info_r)

        def kill() -> None:
            if not self.isolated:
                hostprocs.kill_group(proc.pid)
                return
            first, self.killed = not self.killed, True
            try:  # the namespace dies with its first process; bubblewrap reaps it and exits
                if first and init_fd is not None:
                    signal.pidfd_send_signal(init_fd, signal.SIGKILL)
                    return
            except OSError:
                pass
            proc.kill()  # (bubblewrap outlived its child, or said nothing of it)

        def after_exit() -> None:
            if self.isolated:
                return
            deadline = time.monotonic() + lim.grace_s
            while (left := hostprocs.group_members(proc.pid)) and time.monotonic() < deadline:
                time.sleep(0.02)
            if left:
                hostprocs.kill_group(proc.pid)
                self.left.append(f"killed {len(left)} process(es) left running by the script")

        try:
            outcome = pump(proc, out_r, err_r, chan_r, Limits(timeout, byte_limit, lim.records), kill, after_exit)
        finally:
            os.close(tick_w)
            if init_fd is not None:
                os.close(init_fd)
        if host_uid != uid and (left := hostprocs.wait_gone(host_uid)):  # the sandbox's user is its own
            self.left.append(f"{left} process(es) of the sandbox were still ending when the recording returned")
        return outcome

    def _bwrap(self, bwrap: str, uid: int, init: list[str], host_uid: int) -> tuple[list[str], list[int]]:
        """bubblewrap's command line (setup read from a file) and the fds it must inherit. The
        staging directory becomes the sandbox's user's own (no other user reads the copies)."""
        name = os.environ.get("USER") or ("root" if uid == 0 else f"user{uid}")
        passwd, group = layout.passwd_lines(uid, os.getgid(), name, os.environ.get("HOME", "/"))
        (self.stage / "passwd").write_text(passwd)
        (self.stage / "group").write_text(group)
        fds: list[int] = []
        writable = []
        for directory, files in self.writable:
            seeds = []
            for path, fname in files:
                try:
                    fds.append(os.open(path, os.O_RDONLY | os.O_NOFOLLOW))
                except OSError:
                    continue
                seeds.append((fds[-1], fname))
            writable.append((directory, seeds))
        box = layout.Sandbox(
            stage=self.stage, root=str(self.root), programs=self.programs, copies=self.copies, writable=writable,
            cwd=str(self.workdir), cwd_writable=self.workdir_writable, uid=uid, gid=os.getgid(),
            tmp_bytes=self.limits.tmp_bytes, dir_bytes=self.limits.dir_bytes, passwd=self.stage / "passwd",
            group=self.stage / "group", extra=layout.locale_data())
        try:
            setup = box.arguments()
        except layout.LayoutError as exc:
            for fd in fds:
                os.close(fd)
            raise SandboxUnavailable(f"cannot build the recording sandbox: {exc}") from None
        args_file = self.stage / "bwrap.args"
        args_file.write_bytes(b"".join(os.fsencode(a) + b"\0" for a in setup))
        fds.append(os.open(args_file, os.O_RDONLY))
        if host_uid != os.getuid():
            for top, dirs, files in os.walk(self.stage):
                for name in (top, *(os.path.join(top, n) for n in dirs + files)):
                    os.lchown(name, host_uid, host_uid)
        self.stage.chmod(0o700)
        return [bwrap, "--args", str(fds[-1]), *init], fds

    # -- what came back ------------------------------------------------------------------------

    def recording(self, outcome: Outcome, timeout: float) -> Recording:
        log = FrameLog(self._copy_back).read(outcome.frames)
        stderr = outcome.stderr.text()
        if self.isolated and not log.started and not outcome.timed_out:
            line = next((ln for ln in stderr.splitlines() if ln.strip()), "no message").strip()[:300]
            hint = " (are unprivileged user namespaces disabled here?)" if "namespace" in line.lower() else ""
            raise SandboxUnavailable(f"the recording sandbox did not start: {line}{hint}; --unsafe-no-sandbox "
                                     "records without it")
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
                         log.polls, log.waits, outcome.over_limit, log.origins, log.outside)

    def _copy_back(self, frame: Frame, notes: list[str]) -> None:
        """A file the script wrote in a writable directory, back to the host directory."""
        try:
            (path,) = json.loads(frame.payload.split(b" ", 1)[1].decode("utf-8", "surrogateescape"))
        except (ValueError, IndexError, TypeError):
            notes.append("a file frame without a readable path")
            return
        directory, name = os.path.split(path if isinstance(path, str) else "")
        if directory not in {d for d, _ in self.writable} or name in ("", ".", ".."):
            notes.append(f"ignored a file the sandbox sent for {path!r}")
            return
        try:
            with open(path, "rb") as f:
                if f.read(len(frame.data) + 1) == frame.data:
                    return  # unchanged
        except OSError:
            pass
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            notes.append(f"could not write {path} back: {exc.strerror}")
            return
        with os.fdopen(fd, "wb") as f:
            f.write(frame.data)


def mirror_script(script: Path, text: bytes, up: Path, notes: list[str]) -> Path:
    """Write ``text`` as ``up/<dir name>/<script name>`` amid symlinks to the originals: the
    script's siblings beside it, its parent's entries one level up (so paths relative to the
    script still resolve; the user's tree is not written). Problems go to ``notes``."""
    orig_dir = script.parent
    here = up / (orig_dir.name or "root")
    here.mkdir(parents=True)
    if orig_dir.parent != orig_dir:
        _link_entries(orig_dir.parent, up, orig_dir.name, notes)
    _link_entries(orig_dir, here, script.name, notes)
    copy = here / script.name
    copy.write_bytes(text)
    copy.chmod(script.stat().st_mode & 0o777)
    return copy


def _link_entries(directory: Path, dest: Path, skip: str, notes: list[str]) -> None:
    """Symlink every entry of ``directory`` except ``skip`` into ``dest``."""
    try:
        entries = list(directory.iterdir())
    except OSError as exc:
        notes.append(f"could not mirror {directory}: {exc}")
        return
    for entry in entries:
        if entry.name != skip:
            (dest / entry.name).symlink_to(entry)


__all__ = [
    "DEFAULT_RECORDED", "HARDCODED_HOSTFILE", "LIMITS", "SAFE_TOOLS", "Cluster", "Origin", "Poll", "Recording",
    "ResourceLimits", "SandboxUnavailable", "Wait", "bubblewrap", "canonical", "check_script", "mirror_script",
    "record_script", "require_bubblewrap",
]
