"""``record_script`` runs nothing real: destructive commands are recorded, files and processes stay.

bubblewrap holds the script and every command but the lent text tools is a recording shim,
whoever runs it and however it is named; the profile records what no shim sees (unknown names,
kill, writes the shell could not open). None of it depends on the script leaving the profile be.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from glm45_launch.sandbox import record
from glm45_launch.sandbox.record import Recording, record_script

pytestmark = pytest.mark.skipif(record.bubblewrap() is None, reason="bubblewrap is not installed")


def run(tmp_path: Path, body: str, env: dict[str, str] | None = None, **kw: object) -> Recording:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/bash\n" + body)
    script.chmod(0o755)
    return record_script(script, env=env or {}, **kw)  # type: ignore[arg-type]


@pytest.fixture
def victims(tmp_path: Path) -> Iterator[dict[str, object]]:
    """Files, a directory and two processes (one with a unique command line) to protect."""
    directory = tmp_path / "precious dir"
    directory.mkdir()
    (directory / "data").write_text("keep me")
    file = tmp_path / "precious.txt"
    file.write_text("keep me too")
    marker = f"glm45-sandbox-victim-{os.getpid()}-{time.monotonic_ns()}"
    sleeper = subprocess.Popen(["sleep", "600"], start_new_session=True)
    named = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", marker],
                             start_new_session=True)
    try:
        yield {"dir": directory, "file": file, "new": tmp_path / "created", "newdir": tmp_path / "made",
               "sleeper": sleeper, "named": named, "marker": marker}
    finally:
        for proc in (sleeper, named):
            proc.kill()
            proc.wait()


def assert_untouched(v: dict[str, object]) -> None:
    assert (v["dir"] / "data").read_text() == "keep me"  # type: ignore[operator]
    assert v["file"].read_text() == "keep me too"  # type: ignore[attr-defined]
    assert not v["new"].exists() and not v["newdir"].exists()  # type: ignore[attr-defined]
    assert v["sleeper"].poll() is None and v["named"].poll() is None  # type: ignore[attr-defined]


def test_destructive_commands_are_recorded_not_run(victims: dict[str, object],
                                                   tmp_path: Path) -> None:
    v = victims
    pid = v["sleeper"].pid  # type: ignore[attr-defined]
    env = {"DIR": str(v["dir"]), "FILE": str(v["file"]), "FILE2": str(v["new"]), "NEWDIR": str(v["newdir"])}
    body = f"""set -e
rm -rf "$DIR"
/bin/rm -f "$FILE"
mkdir -p "$NEWDIR"
kill -9 {pid}
/usr/bin/pkill -9 -f {v["marker"]}
curl http://127.0.0.1:9/
touch "$FILE2"
echo done
"""
    rec = run(tmp_path, body, env)
    assert rec.returncode == 0 and rec.stdout == "done\n", rec.stderr
    assert rec.invocations == [
        ["rm", "-rf", str(v["dir"])],
        ["/bin/rm", "-f", str(v["file"])],
        ["mkdir", "-p", str(v["newdir"])],
        ["kill", "-9", str(pid)],
        ["/usr/bin/pkill", "-9", "-f", v["marker"]],
        ["curl", "http://127.0.0.1:9/"],
        ["touch", str(v["new"])],
    ]
    assert_untouched(v)
    for note in ("recorded unknown command rm", "recorded /bin/rm (called by path", "recorded kill",
                 "recorded unknown command curl"):
        assert any(n.startswith(note) for n in rec.notes), rec.notes


def test_ways_around_the_path_are_recorded(victims: dict[str, object], tmp_path: Path) -> None:
    v = victims
    pid = v["sleeper"].pid  # type: ignore[attr-defined]
    f = str(v["file"])
    body = f"""RM=/bin/rm
"$RM" -f {f}
$(echo /bin/rm) -f {f}
command -p rm -f {f}
command kill -9 {pid}
builtin kill -9 {pid}
env FOO=1 /bin/rm -f {f}
env -i rm -f {f}
sed -i s/keep/lose/ {f}
sort -o {f} {f}
awk 'BEGIN {{ system("rm -f {f}") }}'
awk 'BEGIN {{ print "x" > "{f}" }}'
rmfile() {{ /bin/rm -f "$1"; }}
rmfile {f}
unset -f kill
kill -9 {pid}
eval "/bin/rm -f {f}"
(/bin/rm -f {f})
x=$(/bin/rm -f {f}; echo sub)
echo "$x" | /bin/rm -f {f}
export PATH=/usr/bin:/bin:$PATH
rm -f {f}
pkill -9 -f {v["marker"]}
exec /bin/rm -f {f}
echo not reached
"""
    rec = run(tmp_path, body)
    assert rec.returncode == 0 and "not reached" not in rec.stdout, rec.stderr
    assert_untouched(v)
    got = rec.invocations
    # sed -i, sort -o and awk's print > meet a read-only copy; command kill and builtin kill,
    # a PID namespace: they fail, unrecorded
    assert got[:8] == [
        ["/bin/rm", "-f", f],  # "$RM"
        ["/bin/rm", "-f", f],  # $(echo /bin/rm): the name it ran as
        ["/bin/rm", "-f", f],  # command -p: the default PATH
        ["/bin/rm", "-f", f],  # env FOO=1 /bin/rm
        ["/bin/rm", "-f", f],  # env -i rm: the default PATH
        ["/bin/sh", "-c", f"rm -f {f}"],  # awk's system()
        ["/bin/rm", "-f", f],  # in a function
        ["kill", "-9", str(pid)],  # after unset -f kill (refused)
    ]
    assert sorted(got[8:12]) == [["/bin/rm", "-f", f]] * 4  # eval, subshell, $( ), pipeline
    assert got[12:] == [["rm", "-f", f], ["pkill", "-9", "-f", v["marker"]], ["/bin/rm", "-f", f]]
    assert any("PATH finds it at /usr/bin/rm" in n for n in rec.notes), rec.notes


def test_text_tools_and_scripting_still_work(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("10.0.0.2 slots=8\n10.0.0.1 slots=8\n")
    lib = tmp_path / "lib.sh"
    lib.write_text("ARGS=(--a 1\n  --b 'x y')\n")
    body = f"""set -eux
source {lib}
first=$(sort {hosts} | head -n 1 | awk '{{print $1}}')
n=$(wc -l < {hosts} | tr -d ' ')
name=$(basename "$(dirname {lib})")
echo "$first $n $name" | sed 's/10/ten/'
printf '%s\\n' b a | sort | uniq | paste -sd, -
env -0 | tr '\\0' '\\n' | grep -c '^HOME=' || true
env FOO=bar printenv FOO
[[ $(date +%Y) -gt 2000 ]] && echo year-ok
X="a b"; for w in $X; do echo "w=$w"; done
(( n == 2 )) && echo two
trap 'echo bye' EXIT
ray start "${{ARGS[@]}}"
"""
    rec = run(tmp_path, body)
    assert rec.returncode == 0 and rec.notes == [], (rec.notes, rec.stderr)
    assert rec.stdout == "ten.0.0.1 2 " + tmp_path.name + "\na,b\n1\nbar\nyear-ok\nw=a\nw=b\ntwo\nbye\n"
    assert rec.invocations == [["ray", "start", "--a", "1", "--b", "x y"]]
    assert "__g45" not in rec.stderr  # xtrace shows the script's commands, not the profile's


def test_script_may_run_itself_and_keeps_the_sandbox(victims: dict[str, object],
                                                     tmp_path: Path) -> None:
    f = str(victims["file"])
    body = f'if [[ -z ${{CHILD-}} ]]; then CHILD=1 "$0" child; fi\nray status "${{1-parent}}"\n/bin/rm -f {f}\n'
    rec = run(tmp_path, body)
    assert rec.returncode == 0, rec.stderr
    assert rec.invocations == [["ray", "status", "child"], ["/bin/rm", "-f", f],
                               ["ray", "status", "parent"], ["/bin/rm", "-f", f]]
    assert_untouched(victims)


def test_trap_handlers_are_recorded_too(victims: dict[str, object], tmp_path: Path) -> None:
    f = str(victims["file"])
    pid = victims["sleeper"].pid  # type: ignore[attr-defined]
    body = f"""cleanup() {{ kill -9 {pid}; /bin/rm -f {f}; echo "cleanup $1"; }}
trap 'cleanup arg' EXIT
trap "/bin/rm -f {f}" ERR
builtin trap "/bin/rm -f {f}" INT
false
echo main
exit 4
"""
    rec = run(tmp_path, body)
    assert rec.returncode == 4 and rec.stdout == "main\ncleanup arg\n", rec.stderr
    assert rec.invocations == [["/bin/rm", "-f", f], ["kill", "-9", str(pid)], ["/bin/rm", "-f", f]]
    assert_untouched(victims)
    # kill -0 only probes (a wait loop on it must end), kill -l lists
    rec = run(tmp_path, "while kill -0 99999999 2>/dev/null; do :; done\nkill -l 9\n", timeout=10)
    assert not rec.timed_out and rec.stdout == "KILL\n" and rec.invocations == []
    # exec never returns and skips the EXIT trap, like the real one
    rec = run(tmp_path, f"trap '/bin/rm -f {f}' EXIT\nexec /bin/rm -f {f}\necho not reached\n")
    assert rec.returncode == 0 and rec.stdout == "" and rec.invocations == [["/bin/rm", "-f", f]]
    assert_untouched(victims)


def test_without_the_profile_a_script_is_still_recorded(victims: dict[str, object], tmp_path: Path) -> None:
    """A child that runs without the profile (/bin/sh, BASH_ENV changed) and a script that drops
    the profile's trap and functions: their commands still meet the shims."""
    f = str(victims["file"])
    pid = victims["sleeper"].pid  # type: ignore[attr-defined]
    script = tmp_path / "sh.sh"
    script.write_text(f'#!/bin/sh\nif [ -z "$CHILD" ]; then CHILD=1 "$0"; fi\n/bin/rm -f {f}\n')
    script.chmod(0o755)
    rec = record_script(script, env={})
    assert rec.invocations == [["/bin/sh", str(script)], ["/bin/rm", "-f", f]]  # /bin/sh: a shim too
    body = (f'if [[ -n ${{CHILD-}} ]]; then /bin/rm -f {f}; exit; fi\nBASH_ENV= CHILD=1 "$0"\n'
            'export BASH_ENV=/dev/null\nCHILD=1 "$0"\n')
    assert run(tmp_path, body).invocations == [["/bin/rm", "-f", f]] * 2
    body = (f"trap - DEBUG\nset +T\nshopt -u extdebug\nunset -f kill command_not_found_handle\nrm -f {f}\n"
            f"/bin/rm -f {f}\nkill -9 {pid}\n")
    rec = run(tmp_path, body)
    assert rec.invocations == [["rm", "-f", f], ["/bin/rm", "-f", f], ["kill", "-9", str(pid)]]
    assert_untouched(victims)


def test_the_filesystem_is_read_only_and_processes_hidden(victims: dict[str, object], tmp_path: Path) -> None:
    f = victims["file"]
    # a group's redirection is not part of the commands the DEBUG trap sees: the mount does it
    body = f"""{{ echo overwritten; }} > {f} || echo refused
ls /proc | grep -c '^[0-9]'
id -u
"""
    rec = run(tmp_path, body)
    assert rec.notes == [] and rec.returncode == 0, (rec.notes, rec.stderr)
    assert_untouched(victims)
    refused, processes, uid = rec.stdout.split("\n")[:3]
    assert refused == "refused" and "Read-only file system" in rec.stderr
    assert int(processes) <= 4  # bash, its command substitution, ls, grep: nothing of ours
    assert uid == str(os.getuid())  # the same user as outside


def test_redirections_out_of_the_sandbox_do_not_write(victims: dict[str, object],
                                                      tmp_path: Path) -> None:
    f = victims["file"]
    logs = tmp_path / "logs"
    body = f"""set -e
echo overwritten > {f}
echo appended >> "{f}"
cat {f} >| {f}
exec 3> {f}
ray start --head > {logs}/ray.log 2>&1
LR=1e-6; NCCL_DEBUG=INFO ray job submit -- python3 train.py --lr "$LR" --x "a b" >> {logs}/job.log
echo fine > /dev/null 2>&1 && echo fine >&2
echo local > here.log && cat here.log
cat <<END > {f}
a here-document
END
echo "done >"
"""
    rec = run(tmp_path, body)
    assert rec.returncode == 0, rec.stderr
    assert rec.stdout == "local\ndone >\n" and rec.stderr == "fine\n"
    assert_untouched(victims)
    assert not logs.exists()
    assert rec.invocations == [["ray", "start", "--head"],  # recorded all the same, its words expanded
                               ["ray", "job", "submit", "--", "python3", "train.py", "--lr", "1e-6", "--x", "a b"]]
    assert rec.origins[1] is not None and (rec.origins[1].line, rec.origins[1].env) == (8, ("NCCL_DEBUG=INFO",))
    skipped = [n for n in rec.notes if n.startswith("skipped `")]
    assert len(skipped) == 5 and all(n.endswith(f"it writes {f} (outside the sandbox)") for n in skipped)
    assert f"recorded ray without writing {logs}/ray.log (outside the sandbox)" in rec.notes


def test_without_bubblewrap_parity_refuses(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # bubblewrap's absence is not made up for: one line and exit 2, nothing recorded on the host
    script = tmp_path / "s.sh"
    script.write_text("#!/bin/bash\nray stop\nkill -9 1\n")
    hosts = tmp_path / "hosts"
    hosts.write_text("10.0.0.1 slots=8\n")
    argv = [sys.executable, "-m", "glm45_launch", "parity", str(script), "--hostfile", str(hosts), "--head",
            "10.0.0.1", "--base-dir", "/data"]
    env = {**os.environ, "PATH": str(tmp_path / "nothing-here")}
    res = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and res.stdout == "", res
    assert res.stderr.splitlines() == [
        "glm45-launch: error: parity needs bubblewrap (apt-get install bubblewrap) to run the script isolated"]
    res = subprocess.run([*argv, "--unsafe-no-sandbox"], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "No such option '--unsafe-no-sandbox'" in res.stderr, res  # no way around it
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    with pytest.raises(record.SandboxUnavailable, match="parity needs bubblewrap"):
        record_script(script, env={})
