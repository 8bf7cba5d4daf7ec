"""The recording sandbox's filesystem, as a bubblewrap command line.

Inside, the script sees a read-only root holding only:
  - the text tools it may run (``record.SAFE_TOOLS`` that are programs, not scripts), bash,
    the dynamic loader and the libraries they need, each at its host path (symlinks on the way,
    like ``/bin -> usr/bin`` or ``/usr/bin/awk -> /etc/alternatives/awk``, re-created);
  - stand-ins for every other command of the system directories (``/usr/bin/rm``,
    ``/usr/bin/python3``): links to the recorder, so a program that runs one (``sort
    --compress-program``, ``find -exec``) records it instead;
  - read-only copies of what the script may read: its folder (or only itself, when that is a
    shared folder such as ``/tmp`` or a home directory), the hostfile (also at the paths the
    script hard-codes), a given working directory, paths given with ``expose``;
  - the recorder's own directory (read-only, but for a small state directory);
  - a fresh ``/proc`` (read-only) and bubblewrap's minimal ``/dev`` (null, zero, full, random,
    urandom, tty, pts; read-only), a minimal ``/etc/passwd`` and ``/etc/group``;
  - ``/tmp`` and each writable directory as size-limited tmpfs.
Copies are made by the recorder (the sandbox may run as another user than the files' owner)
and never include dot-entries (``.ssh``, ``.git``, ``.env``) or more than a size budget.
"""

from __future__ import annotations

import functools
import os
import shutil
import stat
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""The system directories whose commands get stand-ins in the sandbox."""

SHARED_FOLDERS = frozenset({
    "/", "/tmp", "/var/tmp", "/dev/shm", "/root", "/home", "/etc", "/usr", "/usr/local", "/var", "/opt",
    "/srv", "/mnt", "/media", "/run", "/proc", "/sys", "/dev", "/boot", "/bin", "/sbin", "/lib", "/lib64",
    "/usr/bin", "/usr/local/bin", "/usr/sbin",
})
"""Folders a script may sit in that are not its own: only the script itself is copied."""

_LOCALE_DIR = "/usr/lib/locale"
_LOCALTIME = "/etc/localtime"


class LayoutError(Exception):
    """The sandbox cannot be built on this system (a one-line reason)."""


@dataclass
class CopyBudget:
    """How much the recorder copies into the sandbox; what it left out."""

    files: int = 2000
    bytes: int = 64 * 1024 * 1024
    file_bytes: int = 16 * 1024 * 1024
    skipped: list[str] = field(default_factory=list)

    def take(self, path: str, size: int) -> bool:
        if self.files <= 0 or size > self.file_bytes or size > self.bytes:
            self.skipped.append(path)
            return False
        self.files -= 1
        self.bytes -= size
        return True


def copy_in(src: Path, dest: Path, budget: CopyBudget) -> None:
    """Copy ``src`` (a file or a folder, recursively) to ``dest``: readable by everyone,
    symlinks as symlinks, without dot-entries, special files or what passes the budget."""
    st = os.lstat(src)
    if stat.S_ISLNK(st.st_mode):
        dest.symlink_to(os.readlink(src))
    elif stat.S_ISREG(st.st_mode):
        if budget.take(str(src), st.st_size):
            shutil.copyfile(src, dest, follow_symlinks=False)
            dest.chmod(0o755 if st.st_mode & 0o111 else 0o644)
    elif stat.S_ISDIR(st.st_mode):
        dest.mkdir(mode=0o755)
        dest.chmod(0o755)
        try:
            entries = sorted(os.scandir(src), key=lambda e: e.name)
        except OSError:
            budget.skipped.append(str(src))
            return
        for entry in entries:
            if not entry.name.startswith("."):
                copy_in(Path(entry.path), dest / entry.name, budget)


def shared_folder(folder: Path) -> bool:
    """Whether ``folder`` is a place many things live in (``/tmp``, a home directory)."""
    text = str(folder)
    homes = {str(Path.home())}
    return text in SHARED_FOLDERS or text in homes or str(folder.parent) == "/home"


def is_program(path: str) -> bool:
    """Whether ``path`` is an ELF executable (a script would need its interpreter)."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


@functools.lru_cache(maxsize=16)
def libraries(programs: tuple[str, ...]) -> tuple[str, ...]:
    """The shared libraries and the dynamic loader ``programs`` load, as ``ldd`` finds them."""
    ldd = shutil.which("ldd", path=DEFAULT_PATH)
    if ldd is None:
        raise LayoutError("ldd is missing: cannot find the libraries of the sandbox's tools")
    try:
        out = subprocess.run([ldd, *programs], capture_output=True, text=True, timeout=60,
                             stdin=subprocess.DEVNULL, env={"PATH": DEFAULT_PATH, "LC_ALL": "C"}).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise LayoutError(f"ldd failed: {exc}") from None
    found: dict[str, None] = {}
    for line in out.splitlines():
        text = line.strip()
        path = text.split("=>", 1)[1].strip() if "=>" in text else text
        path = path.split(" (", 1)[0].strip()
        if path.startswith("/"):
            found[path] = None
    return tuple(found)


class Mounts:
    """bubblewrap's setup operations, in order, for a root that is empty but for them."""

    def __init__(self) -> None:
        self.args: list[str] = []
        self._made: dict[str, str] = {"/": "dir"}

    def made(self, path: str) -> bool:
        return path in self._made

    def dir(self, path: str) -> None:
        if path in self._made:
            return
        self.dir(os.path.dirname(path))
        self.args += ["--dir", path]
        self._made[path] = "dir"

    def symlink(self, target: str, path: str) -> None:
        if path in self._made:
            return
        self.dir(os.path.dirname(path))
        self.args += ["--symlink", target, path]
        self._made[path] = "link"

    def ro_bind(self, src: str, dest: str) -> None:
        self.dir(os.path.dirname(dest))
        self.args += ["--ro-bind", src, dest]
        self._made[dest] = "bind"

    def tmpfs(self, path: str, size: int) -> None:
        self.dir(os.path.dirname(path))
        self.args += ["--size", str(size), "--tmpfs", path]
        self._made[path] = "dir"

    def file(self, fd: int, dest: str) -> None:
        self.args += ["--file", str(fd), dest]
        self._made[dest] = "file"

    def expose(self, path: str, depth: int = 0, bind: bool = True) -> None:
        """The host's ``path`` at the same place: its symlinks re-created, the file or folder
        it names bound (``bind=False``: an empty folder made there instead)."""
        if depth > 40:
            raise LayoutError(f"{path}: too many levels of symbolic links")
        parts = Path(path).parts
        current = "/"
        for i, part in enumerate(parts[1:], start=1):
            step = os.path.join(current, part)
            try:
                st = os.lstat(step)
            except OSError:
                return
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(step)
                self.symlink(target, step)
                resolved = os.path.normpath(os.path.join(current, target))
                self.expose(os.path.join(resolved, *parts[i + 1:]), depth + 1, bind)
                return
            if i == len(parts) - 1 and bind:
                if self._made.get(step) not in ("bind", "link"):
                    self.ro_bind(step, step)
            elif self._made.get(step) == "bind":
                return
            else:
                self.dir(step)
            current = step

    def stand_ins(self, directories: Iterable[str], recorder: str) -> None:
        """A link to ``recorder`` for every command of ``directories`` not exposed already."""
        seen: set[str] = set()
        for directory in directories:
            real = os.path.realpath(directory)
            if not os.path.isdir(real):
                continue
            self.expose(directory, bind=False)
            if real in seen:
                continue
            seen.add(real)
            try:
                names = sorted(os.listdir(real))
            except OSError:
                continue
            for name in names:
                path = os.path.join(real, name)
                if name.isprintable() and not self.made(path) and os.access(path, os.X_OK):
                    self.symlink(recorder, path)


@dataclass
class Sandbox:
    """What goes into one recording's sandbox (host paths unless said otherwise)."""

    stage: Path  # the recorder's staging directory (copies live here)
    root: str  # the recorder's directory (programs, shims); same path inside
    programs: Sequence[str]  # bash, the tools, cat and wc: exposed with their libraries
    copies: Sequence[tuple[Path, str]]  # staged copy -> path inside
    writable: Sequence[tuple[str, Sequence[tuple[int, str]]]]  # tmpfs dir inside, (fd, file) seeds
    cwd: str
    cwd_writable: bool
    uid: int
    gid: int
    tmp_bytes: int
    dir_bytes: int
    passwd: Path
    group: Path
    extra: Sequence[str] = ()  # host paths exposed as they are (locale data)

    def arguments(self) -> list[str]:
        """bubblewrap's arguments before the command (for ``--args``)."""
        m = Mounts()
        head = ["--unshare-all", "--unshare-user", "--disable-userns", "--uid", str(self.uid),
                "--gid", str(self.gid), "--cap-drop", "ALL", "--new-session", "--die-with-parent",
                "--as-pid-1", "--proc", "/proc", "--dev", "/dev"]
        m.tmpfs("/tmp", self.tmp_bytes)
        for program in self.programs:
            m.expose(program)
        for lib in libraries(tuple(self.programs)):
            m.expose(lib)
        for path in self.extra:
            m.expose(path)
        m.ro_bind(str(self.passwd), "/etc/passwd")
        m.ro_bind(str(self.group), "/etc/group")
        m.ro_bind(self.root, self.root)
        m.tmpfs(os.path.join(self.root, "state"), 1024 * 1024)
        for copy, inside in sorted(self.copies, key=lambda c: len(Path(c[1]).parts)):  # parents first
            m.ro_bind(str(copy), inside)
        if self.cwd_writable:
            m.dir(self.cwd)
        for directory, seeds in self.writable:
            m.tmpfs(directory, self.dir_bytes)
            for fd, name in seeds:
                m.file(fd, os.path.join(directory, name))
        m.stand_ins(DEFAULT_PATH.split(":"), os.path.join(self.root, "record.bash"))
        tail = ["--remount-ro", "/proc", "--remount-ro", "/dev", "--remount-ro", "/", "--chdir", self.cwd]
        return head + m.args + tail


def locale_data() -> list[str]:
    """System locale files a tool may load (read-only data)."""
    return [p for p in (_LOCALE_DIR, _LOCALTIME) if os.path.exists(p)]


def passwd_lines(uid: int, gid: int, name: str, home: str) -> tuple[str, str]:
    """``/etc/passwd`` and ``/etc/group`` of the sandbox: root, nobody and the script's user."""
    users = {0: "root:x:0:0:root:/root:/bin/bash", 65534: "nobody:x:65534:65534:nobody:/nonexistent:/bin/false"}
    users.setdefault(uid, f"{name}:x:{uid}:{gid}::{home}:/bin/bash")
    groups = {0: "root:x:0:", 65534: "nogroup:x:65534:"}
    groups.setdefault(gid, f"{name}:x:{gid}:")
    return "".join(u + "\n" for u in users.values()), "".join(g + "\n" for g in groups.values())
