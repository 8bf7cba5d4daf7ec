"""``glm45-launch plan`` in a subprocess: one clear error line per bad input, and the golden."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from glm45_launch.sandbox.record import canonical

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = json.loads((ROOT / "tests/data/golden/glm45-355b-a32b-8node.json").read_text())
RENV = "--runtime-env-json="
PREFIX = "glm45-launch: error: "


def run_cli(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, exe: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the CLI with only ``env`` (plus PATH/HOME) in its environment."""
    full = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        "PYTHONPATH": str(ROOT),
        "LC_ALL": "C.UTF-8",
        **(env or {}),
    }
    return subprocess.run(
        [*(exe or [sys.executable, "-m", "glm45_launch"]), *args],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def golden_hostfile(tmp_path: Path) -> Path:
    path = tmp_path / "hosts"
    path.write_text("".join(line + "\n" for line in GOLDEN["hostfile"]))
    return path


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a failed run."""
    assert proc.returncode != 0, proc.stdout[:500]
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(PREFIX), lines[0]
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    return lines[0][len(PREFIX) :]


BAD_HOSTFILES = [
    pytest.param(None, "{path}: no such hostfile (give --hostfile)", id="missing"),
    pytest.param("", "{path}: hostfile has no hosts", id="empty"),
    pytest.param("# nothing here\n\n", "{path}: hostfile has no hosts", id="only-comments"),
    pytest.param("10.0.0.1\n10.0.0.1\n", "{path}:2: duplicate host '10.0.0.1' (first on line 1)", id="dup"),
    pytest.param(
        "10.0.0.1 slots=1.5\n", "{path}:1: malformed slots value '1.5' (want a whole number >= 1)", id="slots"
    ),
    pytest.param("a\nb;reboot\n", "{path}:2: token 'b;reboot' has shell metacharacters or spaces", id="meta"),
    pytest.param("a $(x)\n", "{path}:1: token '$(x)' has shell metacharacters or spaces", id="subst"),
    pytest.param("a slots=8 gpus=8\n", "{path}:1: unknown field 'gpus' (known: slots, max_slots)", id="key"),
    pytest.param("a slots=8 max_slots=2\n", "{path}:1: max_slots=2 is less than slots=8", id="max"),
    pytest.param(b"a\n\xff\n", "{path}:2: not UTF-8 text (byte 2)", id="utf8"),
    pytest.param(b"a\x00\n", "{path}:1: binary file (NUL byte), not a hostfile", id="nul"),
    pytest.param(
        "a slots=8\nb slots=4\n",
        "{path}:2: slots=4 differs from slots=8 on line 1 (GPUs per node must agree); give --gpus-per-node",
        id="mixed-slots",
    ),
]


@pytest.mark.parametrize(("content", "message"), BAD_HOSTFILES)
def test_bad_hostfile(tmp_path: Path, content: str | bytes | None, message: str) -> None:
    path = tmp_path / "rack hosts"  # a space in the path is fine: it is never given to a shell
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    env = {"BASE_DIR": "/data", "MLP_WORKER_0_HOST": "a"}
    proc = run_cli(["plan", "--hostfile", str(path)], tmp_path, env)
    assert error_line(proc) == message.format(path=path)
    assert proc.returncode == 2


def test_hostfile_directory(tmp_path: Path) -> None:
    proc = run_cli(
        ["plan", "--hostfile", str(tmp_path)], tmp_path, {"BASE_DIR": "/d", "MLP_WORKER_0_HOST": "a"}
    )
    assert error_line(proc) == f"{tmp_path}: is a directory, not a hostfile"


def test_default_hostfile_path_is_named(tmp_path: Path) -> None:
    if Path("/root/mpi_rack_hostfile").exists():
        pytest.skip("this machine has a real /root/mpi_rack_hostfile")
    proc = run_cli(["plan"], tmp_path, {"BASE_DIR": "/d", "MLP_WORKER_0_HOST": "a"})
    assert error_line(proc) == "/root/mpi_rack_hostfile: no such hostfile (give --hostfile)"


GOOD_ENV = {"BASE_DIR": "/data/glm", "MLP_WORKER_0_HOST": "10.0.0.1"}

BAD_INPUTS = [
    pytest.param(
        [], {"BASE_DIR": "/d"}, "no head address: set MLP_WORKER_0_HOST or give --head", 2, id="no-head"
    ),
    pytest.param(
        [],
        {"BASE_DIR": "/d", "MLP_WORKER_0_HOST": ""},
        "no head address: set MLP_WORKER_0_HOST or give --head",
        2,
        id="empty-head",
    ),
    pytest.param(
        [],
        {"MLP_WORKER_0_HOST": "10.0.0.1"},
        "no base dir: set BASE_DIR or give --base-dir",
        2,
        id="no-base-dir",
    ),
    pytest.param(
        ["--framework", "verl"],
        GOOD_ENV,
        "Invalid value for '--framework': 'verl' is not one of 'miles', 'slime'.",
        2,
        id="framework",
    ),
    pytest.param(
        ["--ssh-user", "root;id"],
        GOOD_ENV,
        "--ssh-user: 'root;id' is not a valid user name",
        2,
        id="ssh-user",
    ),
    pytest.param(["--gpus-per-node", "0"], GOOD_ENV, "--gpus-per-node: must be >= 1, got 0", 2, id="gpus-0"),
    pytest.param(
        ["--gpus-per-node", "x"],
        GOOD_ENV,
        "Invalid value for '--gpus-per-node': 'x' is not a valid integer.",
        2,
        id="gpus-x",
    ),
    pytest.param(["--bogus"], GOOD_ENV, "No such option '--bogus'.", 2, id="unknown-option"),
    pytest.param(
        ["--model", "glm5"],
        GOOD_ENV,
        "Invalid value for '--model': 'glm5' is not one of 'glm4.5-355B-A32B', 'glm4.5-106B-A12B'.",
        2,
        id="model",
    ),
    pytest.param(
        ["--include", "10.0.0.9"],
        GOOD_ENV,
        "--include: host '10.0.0.9' is not in {hosts}",
        2,
        id="include-unknown",
    ),
    pytest.param(
        ["--include", "10.0.0.1", "--exclude", "10.0.0.2"],
        GOOD_ENV,
        "--include and --exclude are mutually exclusive",
        2,
        id="include-exclude",
    ),
    pytest.param(
        ["--exclude", "10.0.0.1,10.0.0.2@10.0.0.3", "--exclude", "10.0.0.4"],
        GOOD_ENV,
        "{hosts}: no hosts left after --include/--exclude",
        2,
        id="all-excluded",
    ),
    pytest.param(
        ["--resolve-env"],
        GOOD_ENV,
        "--resolve-env: no value for ${MLP_SOCKET_IFNAME} (give --socket-ifname or set it)",
        2,
        id="resolve-env",
    ),
    pytest.param(
        ["--head", "$(reboot)"],
        GOOD_ENV,
        "--head: '$(reboot)' is not an IPv4/IPv6 address or a DNS name",
        2,
        id="bad-head",
    ),
    pytest.param(
        ["--format", "yaml"],
        GOOD_ENV,
        "Invalid value for '--format': 'yaml' is not one of 'text', 'json', 'bash'.",
        2,
        id="format",
    ),
]


@pytest.mark.parametrize(("args", "env", "message", "code"), BAD_INPUTS)
def test_bad_input(tmp_path: Path, args: list[str], env: dict[str, str], message: str, code: int) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("10.0.0.1 slots=8\n10.0.0.2 slots=8\n10.0.0.3 slots=8\n10.0.0.4 slots=8\n")
    proc = run_cli(["plan", "--hostfile", str(hosts), *args], tmp_path, env)
    assert error_line(proc) == message.replace("{hosts}", str(hosts))
    assert proc.returncode == code


def test_option_typo_suggests_the_option(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("10.0.0.1\n")
    line = error_line(run_cli(["plan", "--hostfle", str(hosts)], tmp_path, GOOD_ENV))
    assert line.startswith("No such option '--hostfle'.") and "'--hostfile'" in line


def test_bare_command_prints_help_not_a_traceback(tmp_path: Path) -> None:
    proc = run_cli([], tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("Usage: glm45-launch") and "plan" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_cli(["plan", "--help"], tmp_path)
    assert proc.returncode == 0 and "--checkpoint-dir" in proc.stdout and proc.stderr == ""


# --- formats -----------------------------------------------------------------------------------------


def test_text_format(tmp_path: Path, golden_hostfile: Path) -> None:
    env = {**GOLDEN["environment"], "BASE_DIR": "/data/my glm"}
    proc = run_cli(["plan", "--hostfile", str(golden_hostfile), "--format", "text"], tmp_path, env)
    assert proc.returncode == 0 and proc.stderr == ""
    out = proc.stdout
    settings = {
        "recipe": "glm45-bash",
        "model": "glm4.5-355B-A32B",
        "framework": "miles",
        "hostfile": f"{golden_hostfile} (8 host(s))",
        "head": "10.0.0.1",
        "nodes": "8",
        "GPUs per node": "8",
        "actor nodes": "8",
        "base dir": "/data/my glm",
        "workdir": str(tmp_path),
        "ssh user": "root",
        "dashboard": "0.0.0.0:8265",
        "ray port": "6379",
        "cleanup": "yes",
    }
    lines = out.splitlines()
    assert lines[0] == "Launch plan"
    for key, value in settings.items():
        assert any(line.split() == key.split() + value.split() for line in lines), key
    assert (
        "  - effective --load = /data/my glm/GLM-4.5-355B-A32B_torch_dist/; no checkpoints are saved" in lines
    )
    assert (
        "  ! BASE_DIR '/data/my glm' contains whitespace: kept as one word here; "
        "the bash recipe would split each path into 2 words"
    ) in lines
    assert any(
        line.startswith("  ! the Ray dashboard")
        and "0.0.0.0:8265" in line
        and "without authentication" in line
        for line in lines
    )
    assert "Runtime env (26 env_vars, in order)" in lines
    for host in GOLDEN["hostfile"][1:]:
        assert f"[{host.split()[0]}]" in out


def test_text_format_with_checkpoint_dir(tmp_path: Path, golden_hostfile: Path) -> None:
    args = ["plan", "--hostfile", str(golden_hostfile), "--checkpoint-dir", "/ck", "--save-interval", "7"]
    proc = run_cli(args, tmp_path, GOLDEN["environment"])
    assert proc.returncode == 0, proc.stderr
    assert (
        "  - --load/--save = /ck every 7 rollouts; until it holds latest_checkpointed_iteration.txt "
        "the trainer loads --ref-load /data/glm/GLM-4.5-355B-A32B_torch_dist/"
    ) in proc.stdout.splitlines()
    assert "--load /ck --save /ck --save-interval 7" in proc.stdout
    assert "no checkpoints are saved" not in proc.stdout


def test_bash_format_is_valid_bash(tmp_path: Path, golden_hostfile: Path) -> None:
    proc = run_cli(
        ["plan", "--hostfile", str(golden_hostfile), "--format", "bash"], tmp_path, GOLDEN["environment"]
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("#!/bin/bash\n")
    script = tmp_path / "plan.sh"
    script.write_text(proc.stdout)
    check = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert f"cd {tmp_path} || exit 1" in proc.stdout.splitlines()


# --- golden -----------------------------------------------------------------------------------------


@pytest.fixture
def golden_plan(tmp_path: Path, golden_hostfile: Path) -> dict:
    proc = run_cli(
        ["plan", "--hostfile", str(golden_hostfile), "--format", "json"], tmp_path, GOLDEN["environment"]
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return json.loads(proc.stdout)


def test_golden_head_side_in_order(golden_plan: dict) -> None:
    want = [a for a in GOLDEN["invocations"] if a[0] != "ssh"]
    got = [a for a in golden_plan["invocations"] if a[0] != "ssh"]
    assert len(got) == len(want) == 10
    for g, w in zip(got, want, strict=True):
        if w[:3] == ["ray", "job", "submit"]:
            continue  # compared word by word below
        assert g == w
    sub_got, sub_want = got[-1], want[-1]
    assert len(sub_got) == len(sub_want)
    for i, (g, w) in enumerate(zip(sub_got, sub_want, strict=True)):
        if w.startswith(RENV):
            assert g.startswith(RENV)
            items_got = json.loads(g[len(RENV) :], object_pairs_hook=list)
            items_want = json.loads(w[len(RENV) :], object_pairs_hook=list)
            assert items_got == items_want  # env_vars, in order
            assert [k for k, _ in items_got[0][1]][:4] == [
                "no_proxy",
                "GLOO_SOCKET_IFNAME",
                "TP_SOCKET_IFNAME",
                "MASTER_ADDR",
            ]
        else:
            assert g == w, f"word {i}"


def test_golden_ssh_set(golden_plan: dict) -> None:
    want = sorted(a for a in GOLDEN["invocations"] if a[0] == "ssh")
    got = [a for a in golden_plan["invocations"] if a[0] == "ssh"]
    assert got == want  # the plan already lists them sorted by host
    assert len(got) == 7


def test_golden_runtime_env_byte_identical(golden_plan: dict) -> None:
    (want,) = [w for a in GOLDEN["invocations"] for w in a if w.startswith(RENV)]
    (got,) = [w for a in golden_plan["invocations"] for w in a if w.startswith(RENV)]
    assert got.encode() == want.encode()


def test_golden_whole(golden_plan: dict) -> None:
    assert canonical(golden_plan["invocations"]) == canonical(GOLDEN["invocations"])
    assert golden_plan["invocations"] == canonical(GOLDEN["invocations"])


def test_console_script_matches_module(tmp_path: Path, golden_hostfile: Path, golden_plan: dict) -> None:
    exe = shutil.which("glm45-launch")
    if exe is None:
        pytest.skip("glm45-launch console script not installed")
    proc = run_cli(
        ["plan", "--hostfile", str(golden_hostfile), "--format", "json"],
        tmp_path,
        GOLDEN["environment"],
        exe=[exe],
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["invocations"] == golden_plan["invocations"]
    bad = run_cli(["plan", "--bogus"], tmp_path, exe=[exe])
    assert error_line(bad) == "No such option '--bogus'."


def test_plan_shows_what_up_runs_with_the_same_options(golden_hostfile: Path, tmp_path: Path) -> None:
    """`plan` takes up's plan-shaping options: its text is `up --dry-run`'s, and json carries them."""
    base = ["--hostfile", str(golden_hostfile), "--head", GOLDEN["hostfile"][0].split()[0], "--base-dir", "/data",
            "--checkpoint-dir", "/ck"]
    # Watch and restarts need up to follow the job, so --no-wait goes in a plan of its own (up refuses both).
    watched = [*base, "--max-restarts", "2", "--health-interval", "5", "--no-overlap"]
    unwatched = [*base, "--no-wait", "--no-overlap"]
    for opts in (watched, unwatched):
        planned = run_cli(["plan", *opts], tmp_path)
        dry = run_cli(["up", "--dry-run", *opts], tmp_path)
        assert planned.returncode == 0 and dry.returncode == 0, planned.stderr + dry.stderr
        assert planned.stdout == dry.stdout
    planned = run_cli(["plan", *watched], tmp_path)
    assert "Restarts: up to 2" in planned.stdout and "every 5s" in planned.stdout
    data = json.loads(run_cli(["plan", *watched, "--format", "json"], tmp_path).stdout)
    assert data["operations"]["restart"]["max_restarts"] == 2
    assert data["operations"]["watch"]["interval_s"] == 5.0
    data = json.loads(run_cli(["plan", *unwatched, "--format", "json"], tmp_path).stdout)
    submit = next(s for s in data["steps"] if s["kind"] == "submit")
    assert "--no-wait" in submit["commands"][0]
