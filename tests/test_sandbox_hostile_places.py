"""Hostile scripts and hostile places under ``parity``'s recorder, beyond the escapes of
``test_sandbox_escapes.py``: what the script's folder lets it see, what of our environment and
file descriptors it inherits, writes that would outlive the run, folders that would exhaust the
copy, and control characters on their way to the terminal.

Each canary lives outside the sandbox: a secret whose content must never reach the recording
or the report, files that must keep their content, a listing that must stay as it is.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from glm45_launch.cli.main import main
from glm45_launch.errors import LaunchError
from glm45_launch.sandbox import hostprocs, layout, record
from glm45_launch.sandbox.parity import run_script
from glm45_launch.sandbox.record import Recording, check_script, record_script

pytestmark = pytest.mark.skipif(record.bubblewrap() is None, reason="bubblewrap is not installed")
LOOK = 'ls -la "$(dirname "$0")"; cat "$(dirname "$0")"/* "$(dirname "$0")"/*/* 2>&1; echo "dir: $0"\n'


@pytest.fixture(params=[True, False], ids=["hooks+sandbox", "sandbox-alone"])
def hooks(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    monkeypatch.setattr(record, "_HOOKS", request.param)
    return bool(request.param)


def canary(path: Path, what: str) -> str:
    """A file at ``path`` holding a unique secret; the secret."""
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = f"glm45-canary-{what}-{os.getpid()}-{time.monotonic_ns()}"
    path.write_text(secret + "\n")
    return secret


def report_text(rec: Recording) -> str:
    return json.dumps([rec.invocations, rec.stdout, rec.stderr, rec.notes])


def write(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)
    return path


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Our HOME (a temporary one): a non-dot file and ~/.ssh/id_ed25519 in it."""
    home = tmp_path / "users" / "alice"
    monkeypatch.setenv("HOME", str(home))
    return home


def test_a_home_folder_shows_only_the_script_however_it_is_written(hooks: bool, home: Path, tmp_path: Path) -> None:
    """A script in HOME: the folder is HOME whether written plainly, with ``..``, ``//`` or through
    a symlink, and a folder that holds homes (``/home``) is no script's own either."""
    secrets = [canary(home / "creds.txt", "home-file"), canary(home / "docs" / "notes.txt", "home-doc"),
               canary(home / ".ssh" / "id_ed25519", "ssh-key")]
    write(home / "run.sh", LOOK)
    write(home.parent / "run.sh", LOOK)  # /home itself
    (tmp_path / "alias").symlink_to(home)
    paths = [home / "run.sh", Path(f"{home}/../alice/run.sh"), Path(f"/{home}/run.sh"), tmp_path / "alias" / "run.sh",
             home.parent / "run.sh"]
    for path in paths:
        rec = record_script(path, env={}, timeout=10)
        assert any("is a shared one: only the script is visible" in n for n in rec.notes), (path, rec.notes)
        for secret in secrets:
            assert secret not in report_text(rec), path
        assert "run.sh" in rec.stdout  # the script itself is there
    assert sorted(p.name for p in home.iterdir()) == [".ssh", "creds.txt", "docs", "run.sh"]


def test_a_script_where_secrets_live_is_refused_in_one_line(home: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """In a dot-folder (``~/.ssh``, ``~/.aws``) or under /etc, /proc, /run: refused, nothing recorded;
    also when the script is a symlink that leads there."""
    secret = canary(home / ".ssh" / "id_ed25519", "ssh-key")
    inside = write(home / ".ssh" / "run.sh", "cat id_ed25519\n")
    link = tmp_path / "proj" / "run.sh"
    link.parent.mkdir()
    link.symlink_to(home / ".ssh" / "id_ed25519")
    hosts = tmp_path / "hosts"
    hosts.write_text("10.0.0.1 slots=8\n")
    for script, where in [(inside, "in a dot-folder"), (link, "in a dot-folder"), (Path("/etc/hostname"), "under /etc")]:
        if not script.exists():
            continue
        with pytest.raises(LaunchError, match=where):
            record_script(script, env={}, timeout=10)
        code = main(["parity", str(script), "--hostfile", str(hosts), "--head", "10.0.0.1", "--base-dir", "/x"])
        out, err = capsys.readouterr()
        assert code == 2 and out == "" and len(err.splitlines()) == 1 and where in err, err
        assert secret not in out + err
    with pytest.raises(LaunchError, match="not a regular file"):  # a FIFO would hang the reader
        fifo = tmp_path / "fifo.sh"
        os.mkfifo(fifo)
        check_script(fifo)
    big = tmp_path / "big.sh"
    with big.open("wb") as f:
        f.truncate(record.LIMITS.file_bytes + 1)
    with pytest.raises(LaunchError, match="over the"):
        check_script(big)


@pytest.mark.skipif(os.geteuid() != 0, reason="makes a file of another user (root only)")
def test_a_hard_link_to_another_users_secret_is_not_copied(hooks: bool, tmp_path: Path) -> None:
    """The script's folder holds a hard link to a file of another user (its secret): the copy
    takes only the files of the script's owner."""
    secret = canary(tmp_path / "other" / "secret", "hardlink")
    os.chown(tmp_path / "other" / "secret", 4242, 4242)
    folder = tmp_path / "proj"
    script = write(folder / "run.sh", LOOK)
    os.link(tmp_path / "other" / "secret", folder / "linked")
    (folder / "mine.txt").write_text("mine\n")
    rec = record_script(script, env={}, timeout=10)
    assert secret not in report_text(rec)
    assert "mine" in rec.stdout.splitlines()  # the owner's own files are there
    assert any("not copied into the sandbox" in n and "a hard link?" in n for n in rec.notes), rec.notes


def test_a_deep_or_huge_folder_is_cut_to_the_budget(hooks: bool, tmp_path: Path) -> None:
    """1100 nested folders (deeper than Python's recursion) and 3000 files: the copy stops at
    its budget with a note, no traceback; the host folder stays as it was."""
    folder = tmp_path / "proj"
    script = write(folder / "run.sh", 'n=0; for f in "$(dirname "$0")"/many/*; do n=$((n+1)); done; echo "files: $n"\n')
    deep = folder / "deep"
    deep.mkdir()
    nest(deep, 1100)
    (folder / "many").mkdir()
    for i in range(3000):
        (folder / "many" / f"f{i:05d}").touch()
    start = time.monotonic()
    rec = record_script(script, env={}, timeout=20)
    assert time.monotonic() - start < 20
    files = int(rec.stdout.split("files: ")[1].split()[0])
    assert 0 < files <= layout.CopyBudget().files
    assert any(n.startswith("not copied into the sandbox:") for n in rec.notes), rec.notes
    assert len(list((folder / "many").iterdir())) == 3000
    nest(deep, -1100)  # (pytest's clean-up would recurse too deep)


def nest(top: Path, levels: int) -> None:
    """Make ``levels`` folders ``a/a/...`` in ``top``; remove them (``levels`` < 0)."""
    here = os.getcwd()
    os.chdir(top)
    try:
        for _ in range(abs(levels)):
            if levels > 0:
                os.mkdir("a")
            os.chdir("a")
        for _ in range(abs(levels) if levels < 0 else 0):
            os.chdir("..")
            os.rmdir("a")
    finally:
        os.chdir(here)


def test_nothing_of_our_environment_reaches_the_script(hooks: bool, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """API keys, an SSH agent, cloud credentials in the caller's environment: the script (and so
    the report) sees only the basics and what the recording sets."""
    leaks = {"WANDB_API_KEY": "wandb-canary-key", "SSH_AUTH_SOCK": "/tmp/agent-canary.sock",
             "AWS_SECRET_ACCESS_KEY": "aws-canary-secret", "HF_TOKEN": "hf-canary-token",
             "GITHUB_TOKEN": "gh-canary-token", "LD_PRELOAD": "/tmp/preload-canary.so"}
    for key, value in leaks.items():
        monkeypatch.setenv(key, value)
    script = write(tmp_path / "proj" / "run.sh", "env\nprintenv\ndeclare -p\nset\n")
    for rec in (record_script(script, env={"BASE_DIR": "/b"}, timeout=10),
                run_script(script, env={"BASE_DIR": "/b"}, timeout=10).recording):
        text = report_text(rec)
        for key, value in leaks.items():
            assert key not in text and value not in text
        assert "BASE_DIR=/b" in rec.stdout


def test_only_the_recording_channel_is_inherited(hooks: bool, tmp_path: Path) -> None:
    """An fd of ours open on a secret (inheritable) is not in the sandbox; no controlling
    terminal (no TIOCSTI through /dev/tty)."""
    secret = canary(tmp_path / "secret", "fd")
    fd = os.open(tmp_path / "secret", os.O_RDONLY)
    os.set_inheritable(fd, True)
    body = """for f in /proc/$$/fd/*; do echo "fd ${f##*/}"; done
for n in 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 "$GIVEN"; do cat <&"$n" 2>/dev/null; done
read -r st < /proc/$$/stat; set -- ${st##*) }; echo "tty_nr: $5"
exec 3</dev/tty && echo tty-opened
"""
    try:
        rec = record_script(write(tmp_path / "proj" / "run.sh", body), env={"GIVEN": str(fd)}, timeout=10)
    finally:
        os.close(fd)
    assert secret not in report_text(rec)
    fds = {line[3:] for line in rec.stdout.splitlines() if line.startswith("fd ")}
    assert fds <= {"0", "1", "2", "3", "255", "1000"}, fds  # (3: the $(...) that lists them)
    assert "tty_nr: 0" in rec.stdout and "tty-opened" not in rec.stdout


def test_writes_to_the_hostfile_and_the_script_folder_do_not_outlive_the_run(hooks: bool, tmp_path: Path) -> None:
    folder = tmp_path / "proj"
    hostfile = tmp_path / "hosts"
    hostfile.write_text("10.0.0.1 slots=8\n")
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "keep").write_text("keep me\n")
    body = """d=$(dirname "$0")
echo pwned > "$HOSTFILE"; echo pwned >> /root/mpi_rack_hostfile; { echo pwned; } > "$HOSTFILE"
echo pwned > "$d/data/keep"; { echo pwned; } > "$d/new"; rm -rf "$d/data"; mkdir "$d/made"
exec 4>"$d/run.sh"; echo pwned >&4
"""
    script = write(folder / "run.sh", body)
    before = script.read_text()
    rec = record_script(script, env={}, hostfile=hostfile, timeout=10)
    assert hostfile.read_text() == "10.0.0.1 slots=8\n"
    assert (folder / "data" / "keep").read_text() == "keep me\n"
    assert sorted(p.name for p in folder.iterdir()) == ["data", "run.sh"]
    assert script.read_text() == before
    assert "pwned" not in rec.stdout


ESC = "\x1b]52;c;ZXZpbA==\x07\x1b[2J\r"  # OSC 52 writes the clipboard; CSI 2J clears the screen


def test_control_characters_never_reach_the_terminal_raw(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The script's output, its argv, its stderr and its name, in parity's text and JSON report
    and in import's lines: every control character is written escaped."""
    hosts = tmp_path / "hosts"
    hosts.write_text("10.0.0.1 slots=8\n10.0.0.2 slots=8\n")
    esc = ESC.encode("unicode_escape").decode()
    body = (f"ray start --head --node-ip-address 10.0.0.1 --x=$'{esc}'\n"
            f"ray job submit --address=http://127.0.0.1:8265 -- python3 train.py --y=$'{esc}'\n"
            "printf '\\e]0;title\\a\\e[31mred\\n'; printf '\\e[2J: No such file\\n' >&2; exit 3\n")
    script = write(tmp_path / "proj" / "run.sh", body)
    args = ["--hostfile", str(hosts), "--head", "10.0.0.1", "--base-dir", "/x"]
    for command in (["parity", str(script), *args], ["parity", str(script), *args, "--format", "json"],
                    ["import", str(script), "-o", str(tmp_path / "r.toml"), *args]):
        code = main(command)
        out, err = capsys.readouterr()
        assert code == 1, (command, out, err)
        assert "\\x1b" in out or "\\u001b" in out  # the script's text is there, escaped
        for char in "\x1b\x07\r":
            assert char not in out + err, (command, out)
    named = write(tmp_path / "proj" / f"a{ESC}b.sh", "exit 0\n")
    assert main(["parity", str(named), *args]) == 2
    out, err = capsys.readouterr()
    assert "control characters" in err and len(err.splitlines()) == 1
    assert not any(c in out + err for c in "\x1b\x07\r")


def test_odd_paths_inside_the_sandbox_are_places_not_a_crash(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A relative --script-hostfile (from the script's working directory) and an --expose
    INSIDE written with ``//``: each is one place in the sandbox (they recursed without end)."""
    hosts = tmp_path / "hosts"
    hosts.write_text("10.0.0.1 slots=8\n10.0.0.2 slots=8\n")
    data = tmp_path / "data"
    data.write_text("exposed-data\n")
    script = write(tmp_path / "proj" / "run.sh", "cat rack/hosts; cat //x/y/data\n")
    args = ["--hostfile", str(hosts), "--head", "10.0.0.1", "--base-dir", "/x", "--script-hostfile", "rack/hosts",
            "--expose", f"{data}://x/y/data"]
    assert main(["parity", str(script), *args]) == 1
    out, err = capsys.readouterr()
    assert "  | 10.0.0.2 slots=8\n" in out and "  | exposed-data\n" in out, out + err
    assert [layout.inside(p) for p in ("//x/y", "rel/h", "/a/../b", "/")] == ["/x/y", "/rel/h", "/b", "/"]


def test_system_trees_homes_and_dot_folders_are_no_scripts_own(home: Path) -> None:
    for folder in ("/", "/etc/ssh", "/var/lib/docker", "/usr/local/bin", "/home/bob", str(home), str(home.parent),
                   f"{home}/.aws", f"{home}/.config/gcloud", f"{home}/../{home.name}", f"/{home}"):
        assert layout.shared_folder(Path(folder)), folder
    assert not layout.shared_folder(home / "project")
    assert layout.private_place(Path("/run/secrets/run.sh")) == "under /run"
    assert layout.private_place(home / "project" / ".run.sh") is None


@pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox has a user of its own only under a root recorder")
@pytest.mark.parametrize("body", ["while :; do :; done\n", "cat /dev/zero\n", "sleep() { while :; do :; done; }\n"
                                  "sleep & sleep & wait\n"], ids=["busy", "flood", "children"])
def test_a_killed_recording_leaves_no_process_and_no_zombie(body: str, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopped by its time limit or its output limit: the sandbox's first process is killed
    (bubblewrap reaps it), so not even a zombie of the sandbox's user is left to init."""
    taken: list[int | None] = []

    def spy() -> int | None:
        taken.append(real())
        return taken[-1]

    real = hostprocs.sandbox_uid
    monkeypatch.setattr(hostprocs, "sandbox_uid", spy)
    rec = record_script(write(tmp_path / "proj" / "run.sh", body), env={}, timeout=1)
    assert rec.timed_out or rec.stopped
    assert taken and taken[0] is not None
    assert hostprocs.uids().get(taken[0], 0) == 0  # zombies counted too


def test_a_script_that_links_out_of_its_folder_is_refused(home: Path, tmp_path: Path) -> None:
    """``proj/run.sh -> ~/creds.txt``: recording it would run the secret as the script (its
    lines in bash's errors); refused in one line. A link within the folder is fine."""
    secret = canary(home / "creds.txt", "linked-script")
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "run.sh").symlink_to(home / "creds.txt")
    with pytest.raises(LaunchError, match="a symlink to .* out of its folder") as caught:
        record_script(proj / "run.sh", env={}, timeout=10)
    assert secret not in str(caught.value)
    write(proj / "real.sh", "echo ran-real\n")
    (proj / "alias.sh").symlink_to("real.sh")
    assert record_script(proj / "alias.sh", env={}, timeout=10).stdout == "ran-real\n"


def test_notes_forged_on_the_channel_are_bounded(hooks: bool, tmp_path: Path) -> None:
    """The recording's channel (fd 1000) is the script's to write too: 1000 forged notes, each
    with a terminal escape, come back as at most 200 (and a count), escaped in parity's."""
    body = ("for i in $(seq 1 1000); do printf '\\036G45 N 7 E forged %s \\033]0;x\\007\\n' \"$i\" >&1000; done\n"
            "echo done\n")
    script = write(tmp_path / "proj" / "run.sh", body)
    rec = record_script(script, env={}, timeout=20)
    assert rec.stdout == "done\n"
    forged = [n for n in rec.notes if n.startswith("forged ")]
    assert len(forged) == 200 and "800 more note(s) from the sandbox left out" in rec.notes
    notes = run_script(script, env={}, timeout=20).notes
    assert len(notes) < 210 and not any("\x1b" in n or "\x07" in n for n in notes)
    assert "forged 1 \\x1b]0;x\\x07" in notes
