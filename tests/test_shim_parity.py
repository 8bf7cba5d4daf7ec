"""THE parity tests: the bash recipe under argv-recording shims == ``glm45-launch plan``.

Every case runs ``examples/run-glm4.5-355B-A32B.sh`` under ``record_script`` (nothing real
runs: ray, ssh, pkill, sleep, python... are shims) and compares the recorded argv, word for
word, with the plan's ``invocations`` for the same environment and hostfile.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path

import pytest
from click.testing import CliRunner

from glm45_launch.cli.main import cli
from glm45_launch.sandbox.record import DEFAULT_RECORDED, Recording, canonical, record_script

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SCRIPT = EXAMPLES / "run-glm4.5-355B-A32B.sh"
GOLDEN = json.loads((ROOT / "tests/data/golden/glm45-355b-a32b-8node.json").read_text())
ENV_KEYS = ("BASE_DIR", "MLP_WORKER_0_HOST", "MLP_SOCKET_IFNAME", "FRAMEWORK_PACKAGE", "HOSTFILE")


def plan_json(args: list[str], env: Mapping[str, str]) -> dict:
    """``glm45-launch plan --format json ARGS`` in-process, with exactly ``env`` for its inputs."""
    full_env: dict[str, str | None] = {k: None for k in ENV_KEYS}
    full_env.update(env)
    result = CliRunner().invoke(
        cli, ["plan", *args, "--format", "json"], env=full_env, catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def record(
    script: Path,
    env: Mapping[str, str],
    hostfile: Path | None = None,
    commands: tuple[str, ...] = DEFAULT_RECORDED,
) -> Recording:
    rec = record_script(script, env=dict(env), hostfile=hostfile, commands=commands)
    assert rec.returncode == 0 and not rec.timed_out and rec.notes == [], (rec.notes, rec.stderr[-2000:])
    return rec


def assert_same(recorded: list[list[str]], planned: list[list[str]]) -> None:
    """Word-for-word equality, with a readable first difference."""
    got, want = canonical(recorded), canonical(planned)
    for i, (g, w) in enumerate(zip(got, want, strict=False)):  # lengths compared below
        assert g == w, f"invocation {i} differs:\n recorded {g[:12]}...\n planned  {w[:12]}..."
    assert len(got) == len(want)
    assert got == want


def hostfile_lines(hosts: list[str]) -> list[str]:
    return [f"{h} slots=8" for h in hosts]


def ips(n: int, start: int = 1) -> list[str]:
    return [f"10.0.0.{i}" for i in range(start, start + n)]


def names(n: int) -> list[str]:
    return [f"node-{i:02d}.rack.local" for i in range(1, n + 1)]


# (hostfile lines, head, base dir)
CASES = [
    pytest.param(hostfile_lines(ips(1)), "10.0.0.1", "/data/glm", id="1-host"),
    pytest.param(hostfile_lines(ips(3)), "10.0.0.1", "/data/glm", id="3-hosts-head-first"),
    pytest.param(hostfile_lines(ips(3)), "10.0.0.3", "/data/glm", id="3-hosts-head-last"),
    pytest.param(hostfile_lines(ips(3, start=2)), "10.0.0.1", "/data/glm", id="3-hosts-head-absent"),
    pytest.param(GOLDEN["hostfile"], "10.0.0.1", "/data/glm", id="8-hosts-golden"),
    pytest.param(hostfile_lines(ips(8)), "10.0.0.5", "/data/glm", id="8-hosts-head-middle"),
    pytest.param(hostfile_lines(ips(8)), "10.0.0.8", "/mnt/shared/", id="8-hosts-head-last-base-slash"),
    pytest.param(hostfile_lines(ips(16)), "10.0.0.16", "/data/glm", id="16-hosts-head-last"),
    pytest.param(hostfile_lines(ips(16, start=2)), "10.0.0.1", "/data/glm", id="16-hosts-head-absent"),
    pytest.param(hostfile_lines(names(3)), "node-01.rack.local", "/data/glm", id="3-names-head-first"),
    pytest.param(hostfile_lines(names(8)), "node-08.rack.local", "/data/glm", id="8-names-head-last"),
    pytest.param(hostfile_lines(names(3)), "login.rack.local", "/data/glm", id="3-names-head-absent"),
    pytest.param(
        [
            "10.0.0.1 slots=8",
            "10.0.0.2 slots=8 # rack A",
            "",
            "\t10.0.0.3\tslots=8",
            "   ",
            "node-4.rack.local slots=8 max_slots=8",
        ],
        "10.0.0.1",
        "/data/glm",
        id="mixed-spellings-awk-agrees",
    ),
    pytest.param(["fd00::1", "fd00::2", "fd00::3"], "fd00::1", "/data/glm", id="ipv6-no-slots"),
]


@pytest.mark.parametrize(("lines", "head", "base_dir"), CASES)
def test_reference_script_equals_plan(tmp_path: Path, lines: list[str], head: str, base_dir: str) -> None:
    hostfile = tmp_path / "hosts"
    hostfile.write_text("".join(line + "\n" for line in lines))
    env = {"BASE_DIR": base_dir, "MLP_WORKER_0_HOST": head, "MLP_SOCKET_IFNAME": "eth0"}
    rec = record(SCRIPT, env, hostfile)
    planned = plan_json(["--hostfile", str(hostfile)], env)["invocations"]
    assert_same(rec.invocations, planned)
    # the fan-out really is every listed host but the head, nothing more
    listed = [line.split()[0] for line in lines if line.strip()]
    assert sorted(a[1] for a in rec.invocations if a[0] == "ssh") == sorted(
        f"root@{h}" for h in listed if h != head
    )


def test_golden_case_also_equals_golden(tmp_path: Path) -> None:
    hostfile = tmp_path / "hosts"
    hostfile.write_text("".join(line + "\n" for line in GOLDEN["hostfile"]))
    planned = plan_json(["--hostfile", str(hostfile)], GOLDEN["environment"])["invocations"]
    assert planned == canonical(GOLDEN["invocations"])


# --- the other model and the other framework, as a user would switch them -----------------------


def air_copy(tmp_path: Path) -> Path:
    """The reference script + models dir, edited to run GLM-4.5-Air the way a user would."""
    scripts = tmp_path / "scripts"
    shutil.copytree(EXAMPLES / "models", scripts / "models")
    text = SCRIPT.read_text()
    source = 'source "${SCRIPT_DIR}/models/glm4.5-355B-A32B.sh"'
    ckpt = "${BASE_DIR}/GLM-4.5-355B-A32B"
    assert text.count(source) == 1 and text.count(ckpt) == 2
    text = text.replace(source, 'source "${SCRIPT_DIR}/models/glm4.5-106B-A12B.sh"')
    text = text.replace(ckpt, "${BASE_DIR}/GLM-4.5-Air")
    copy = scripts / "run-glm4.5-106B-A12B.sh"
    copy.write_text(text)
    return copy


@pytest.mark.parametrize("hosts", [ips(2), ips(8)], ids=["2-hosts", "8-hosts"])
def test_air_model(tmp_path: Path, hosts: list[str]) -> None:
    hostfile = tmp_path / "hosts"
    hostfile.write_text("".join(line + "\n" for line in hostfile_lines(hosts)))
    env = {"BASE_DIR": "/data/glm", "MLP_WORKER_0_HOST": hosts[0], "MLP_SOCKET_IFNAME": "eth0"}
    rec = record(air_copy(tmp_path), env, hostfile)
    planned = plan_json(["--hostfile", str(hostfile), "--model", "glm4.5-106B-A12B"], env)["invocations"]
    assert_same(rec.invocations, planned)
    (submit,) = [a for a in rec.invocations if a[:3] == ["ray", "job", "submit"]]
    assert submit[submit.index("--moe-layer-freq") + 1] == "[0]*1+[1]*45"
    assert submit[submit.index("--ref-load") + 1] == "/data/glm/GLM-4.5-Air_torch_dist/"
    # and the unedited script is not what the Air plan says
    default = plan_json(["--hostfile", str(hostfile)], env)["invocations"]
    assert canonical(default) != canonical(planned)


def test_framework_slime(tmp_path: Path) -> None:
    hostfile = tmp_path / "hosts"
    hostfile.write_text("".join(line + "\n" for line in GOLDEN["hostfile"]))
    env = dict(GOLDEN["environment"])
    rec = record(SCRIPT, {**env, "FRAMEWORK_PACKAGE": "slime"}, hostfile)
    planned = plan_json(["--hostfile", str(hostfile), "--framework", "slime"], env)["invocations"]
    assert_same(rec.invocations, planned)
    assert "slime.rollout.filter_hub.dynamic_sampling_filters.check_reward_nonzero_std" in planned[9]
    assert canonical(planned) != canonical(GOLDEN["invocations"])


# --- plan --format bash, run under the same shims -------------------------------------------------


BASH_CASES = [
    pytest.param(hostfile_lines(ips(1)), "10.0.0.1", "/data/glm", [], True, id="1-host"),
    pytest.param(GOLDEN["hostfile"], "10.0.0.1", "/data/glm", [], True, id="8-hosts-golden"),
    pytest.param(
        hostfile_lines(names(16)), "login.rack.local", "/data/glm", [], True, id="16-names-head-absent"
    ),
    pytest.param(
        hostfile_lines(ips(3)), "10.0.0.2", "/data/glm", ["--framework", "slime"], False, id="slime"
    ),
    # deviations from the recipe: the script must still run exactly the plan's argv
    pytest.param(
        hostfile_lines(ips(4)),
        "10.0.0.1",
        "/data/my glm",
        [
            "--checkpoint-dir",
            "/ckpt/it's here",
            "--save-interval",
            "5",
            "--export-env",
            "--resolve-env",
            "--dashboard-host",
            "127.0.0.1",
            "--entry",
            "smoke.py",
            "--ssh-user",
            "ubuntu",
        ],
        False,
        id="deviations-quoted",
    ),
    pytest.param(hostfile_lines(ips(3)), "10.0.0.1", "/data/glm", ["--no-cleanup"], False, id="no-cleanup"),
]


@pytest.mark.parametrize(("lines", "head", "base_dir", "extra", "reference"), BASH_CASES)
def test_bash_format_records_the_same_argv(
    tmp_path: Path, lines: list[str], head: str, base_dir: str, extra: list[str], reference: bool
) -> None:
    hostfile = tmp_path / "hosts"
    hostfile.write_text("".join(line + "\n" for line in lines))
    workdir = tmp_path / "work dir"
    workdir.mkdir()
    env = {"BASE_DIR": base_dir, "MLP_WORKER_0_HOST": head, "MLP_SOCKET_IFNAME": "eth0"}
    args = ["--hostfile", str(hostfile), "--workdir", str(workdir), *extra]
    planned = plan_json(args, env)["invocations"]

    result = CliRunner().invoke(
        cli,
        ["plan", *args, "--format", "bash"],
        env={**{k: None for k in ENV_KEYS}, **env},
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    script = tmp_path / "plan.sh"
    script.write_text(result.stdout)
    # no inputs: everything is in the script. `env` is a shim too (--export-env runs `env K=V ray ...`).
    rec = record(script, {}, commands=(*DEFAULT_RECORDED, "env"))
    assert_same(rec.invocations, planned)
    if reference:  # and the same as the bash recipe itself
        ref = record(SCRIPT, env, hostfile)
        assert canonical(rec) == canonical(ref)
