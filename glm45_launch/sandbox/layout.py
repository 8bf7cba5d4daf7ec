"""The recording sandbox's filesystem, as a bubblewrap command line.

Inside, the script sees a read-only root holding only:
  - bash and the text tools it may run (``rootdir.SAFE_TOOLS`` that are programs, not scripts),
    the dynamic loader and the libraries they need, each at its host path (symlinks on the way,
    like ``/bin -> usr/bin`` or ``/usr/bin/awk -> /etc/alternatives/awk``, re-created);
  - a recording shim in place of every other command of the system directories
    (``/usr/bin/rm``, ``/usr/bin/python3``), so whatever runs one records it instead;
  - read-only copies of what the script may read: its folder (or only itself, when that is a
    shared folder such as ``/tmp``, a home directory, a system tree or a dot-folder: see
    ``shared_folder``), the hostfile (also at the paths the script hard-codes), a given working
    directory, paths given with ``expose``;
  - the recorder's own directory (read-only, but for a small state directory);
  - a fresh ``/proc`` and bubblewrap's minimal ``/dev`` (null, zero, full, random, urandom, tty,
    pts), both read-only, a minimal ``/etc/passwd`` and ``/etc/group``;
  - ``/tmp`` and the default working directory as size-limited tmpfs.
Copies are made by the recorder (the sandbox may run as another user than the files' owner)
and never include dot-entries (``.ssh``, ``.git``, ``.env``), another user's files (a hard link
to a host secret) or more than a budget (entries, bytes, depth).
"""

from __future__ import annotations

import functools
import itertools
import os
import pwd
import shutil
import stat
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""The system directories whose commands get stand-ins in the sandbox."""

SHARED_FOLDERS = frozenset({
    "/", "/tmp", "/var/tmp", "/dev/shm", "/root", "/home", "/etc", "/usr", "/usr/local", "/var", "/opt",
    "/srv", "/mnt", "/media", "/run", "/proc", "/sys", "/dev", "/boot", "/bin", "/sbin", "/lib", "/lib64",
    "/usr/bin", "/usr/local/bin", "/usr/sbin", "/usr/local/sbin", "/usr/lib", "/usr/lib64", "/usr/libexec",
    "/usr/share", "/usr/src", "/usr/include", "/usr/local/lib", "/usr/local/share",
})
"""Folders a script may sit in that are not its own: only the script itself is copied."""

SYSTEM_TREES = ("/etc", "/proc", "/sys", "/dev", "/run", "/boot", "/var", "/snap")
"""The system's own trees: a folder anywhere under one is not the script's own either (under
/usr, only the folders above are shared: an installed package's examples are theirs)."""

PRIVATE_TREES = ("/etc", "/proc", "/sys", "/dev", "/run", "/boot", "/var/lib")
"""Where host secrets live (host keys, /run/secrets): a script found there is not recorded."""

_LOCALE_DIR = "/usr/lib/locale"
_LOCALTIME = "/etc/localtime"


class LayoutError(Exception):
    """The sandbox cannot be built on this system (a one-line reason)."""


@dataclass
class CopyBudget:
    """How much the recorder copies into the sandbox (entries: files, folders and links; bytes;
    folder depth); how many entries it left out, and the first."""

    files: int = 2000
    bytes: int = 64 * 1024 * 1024
    file_bytes: int = 16 * 1024 * 1024
    depth: int = 32
    skipped: int = 0
    example: str = ""

    def skip(self, path: Path, why: str) -> bool:
        self.skipped += 1
        self.example = self.example or f"{str(path)[:200]} ({why})"
        return False

    def take(self, path: Path, st: os.stat_result, depth: int, owner: int | None) -> bool:
        """Whether ``path`` (``st``: its lstat) is copied; counts it."""
        if self.files <= 0:
            return self.skip(path, "over the budget of entries")
        if depth > self.depth:
            return self.skip(path, f"deeper than {self.depth} folders")
        if stat.S_ISREG(st.st_mode):
            if st.st_size > self.file_bytes or st.st_size > self.bytes:
                return self.skip(path, "over the size budget")
            if owner is not None and st.st_uid != owner:
                return self.skip(path, f"a file of user {st.st_uid}, not of the script's owner: a hard link?")
            self.bytes -= st.st_size
        elif not (stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode)):
            return False  # a device, a FIFO, a socket: never copied
        self.files -= 1
        return True


def copy_in(src: Path, dest: Path, budget: CopyBudget, owner: int | None = None, depth: int = 0,
            first: str = "") -> None:
    """Copy ``src`` (a file or a folder, recursively) to ``dest``: readable by everyone,
    symlinks as symlinks, without dot-entries, special files, regular files not of ``owner``
    (None: anyone's) or what passes the budget; the folder's entry ``first`` before the others."""
    try:
        st = os.lstat(src)
        if not budget.take(src, st, depth, owner):
            return
        if stat.S_ISLNK(st.st_mode):
            dest.symlink_to(os.readlink(src))
        elif stat.S_ISREG(st.st_mode):
            shutil.copyfile(src, dest, follow_symlinks=False)
            dest.chmod(0o755 if st.st_mode & 0o111 else 0o644)
    except OSError as exc:
        if depth == 0:
            raise
        budget.skip(src, exc.strerror or "unreadable")
        return
    if stat.S_ISDIR(st.st_mode):
        dest.mkdir(mode=0o755)
        dest.chmod(0o755)
        try:  # a folder of a million entries is not read whole
            with os.scandir(src) as it:
                visible = (e for e in it if not e.name.startswith("."))
                entries = sorted(itertools.islice(visible, budget.files + 1), key=lambda e: e.name)
        except OSError:
            budget.skip(src, "unreadable")
            return
        if first:
            copy_in(src / first, dest / first, budget, owner, depth + 1)
        for entry in entries:
            if entry.name != first:
                copy_in(Path(entry.path), dest / entry.name, budget, owner, depth + 1)


def _under(path: str, trees: Iterable[str]) -> str | None:
    """The first of ``trees`` that ``path`` is or lies under."""
    return next((t for t in trees if path == t or path.startswith(t.rstrip("/") + "/")), None)


@functools.lru_cache(maxsize=1)
def _user_homes() -> frozenset[str]:
    """The home directories of the password database (real paths)."""
    try:
        homes = {p.pw_dir for p in pwd.getpwall()}
    except OSError:
        homes = set()
    return frozenset(os.path.realpath(h) for h in homes if h.startswith("/") and h != "/")


def _homes() -> set[str]:
    """Every user's home directory, ours (``$HOME``) included."""
    ours = os.path.realpath(Path.home())
    return set(_user_homes()) | ({ours} if ours != "/" else set())


def _places(path: Path) -> set[str]:
    """``path`` as written (``..`` and ``//`` taken out) and as it really is (links followed)."""
    return {os.path.normpath(os.path.abspath(path)), os.path.realpath(path)}


def private_place(path: Path) -> str | None:
    """Why ``path`` lies where host secrets live (in a dot-folder such as ``~/.ssh``, under
    /etc, /proc, /run...); None: it does not."""
    for text in _places(path):
        if tree := _under(text, PRIVATE_TREES):
            return f"under {tree}"
        if any(part.startswith(".") for part in Path(text).parts[1:-1]):
            return "in a dot-folder"
    return None


def shared_folder(folder: Path) -> bool:
    """Whether ``folder`` is not a script's own: a place many things live in (``/tmp``, a home
    directory or a folder that holds one, a system tree, a dot-folder such as ``~/.ssh``),
    by its path as written or as it really is."""
    for text in _places(folder):
        if text in SHARED_FOLDERS or _under(text, SYSTEM_TREES) or os.path.dirname(text) == "/home":
            return True
        if any(_under(home, [text]) for home in _homes()):
            return True
        if any(part.startswith(".") for part in Path(text).parts[1:]):
            return True
    return False


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


def inside(path: str) -> str:
    """``path`` as one place of the sandbox: absolute, without ``..``, ``.`` or ``//``."""
    return "/" + os.path.normpath("/" + path).lstrip("/")


class Mounts:
    """bubblewrap's setup operations, in order, for a root that is empty but for them."""

    def __init__(self) -> None:
        self.args: list[str] = []
        self._made: dict[str, str] = {"/": "dir"}

    def made(self, path: str) -> bool:
        return path in self._made

    def dir(self, path: str) -> None:
        path = inside(path)
        if path in self._made:
            return
        self.dir(os.path.dirname(path))
        self.args += ["--dir", path]
        self._made[path] = "dir"

    def symlink(self, target: str, path: str) -> None:
        path = inside(path)
        if path in self._made:
            return
        self.dir(os.path.dirname(path))
        self.args += ["--symlink", target, path]
        self._made[path] = "link"

    def ro_bind(self, src: str, dest: str) -> None:
        dest = inside(dest)
        self.dir(os.path.dirname(dest))
        self.args += ["--ro-bind", src, dest]
        self._made[dest] = "bind"

    def tmpfs(self, path: str, size: int) -> None:
        path = inside(path)
        self.dir(os.path.dirname(path))
        self.args += ["--size", str(size), "--tmpfs", path]
        self._made[path] = "dir"

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

    root: str  # the recorder's directory (programs, shims); same path inside
    programs: Sequence[str]  # bash and the tools: exposed with their libraries
    copies: Sequence[tuple[Path, str]]  # staged copy -> path inside
    cwd: str
    cwd_writable: bool  # a tmpfs of ``dir_bytes`` (else a given folder, copied)
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
        if self.cwd_writable:
            m.tmpfs(self.cwd, self.dir_bytes)
        for copy, inside in sorted(self.copies, key=lambda c: len(Path(c[1]).parts)):  # parents first
            m.ro_bind(str(copy), inside)
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
