"""``parity --snapshot FILE``: a plan against upstream's recorded commands of a launch script.

The files in tests/data/snapshots/ are radixark/miles's own, copied as they are:
  - run_glm45_355b_a32b_8node.py.execute.txt: tests/snapshots/launch_scripts/py/scripts/
    run_glm45_355b_a32b_8node.py/execute.txt at 31f1ca961 (last changed in 2b2ef6f8b, which
    replaced the .sh launchers with .py ones);
  - run-glm4.5-355B-A32B.sh.txt: tests/snapshots/launch_scripts/sh/scripts/
    run-glm4.5-355B-A32B.sh.txt at 6a6843f1d (the bash recipe's last revision).
Nothing runs: no sandbox, no shims.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from glm45_launch import LaunchSpec, build_plan, load_hostfile
from glm45_launch.cli.main import main
from glm45_launch.core.steps import WORKER
from glm45_launch.sandbox.snapshot import compare_snapshot, load_snapshot

DATA = Path(__file__).resolve().parent / "data" / "snapshots"
PY_8NODE = DATA / "run_glm45_355b_a32b_8node.py.execute.txt"
SH_RECIPE = DATA / "run-glm4.5-355B-A32B.sh.txt"
HEAD = "127.0.0.1"  # upstream records with MASTER_ADDR=127.0.0.1
WORKERS = ", ".join(f"root@10.0.0.{i}" for i in range(2, 9))


@pytest.fixture(scope="module")
def hostfile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hosts") / "hostfile"
    path.write_text(f"{HEAD} slots=8\n" + "".join(f"10.0.0.{i} slots=8\n" for i in range(2, 9)))
    return path


def parity(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["parity", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_upstream_8node_snapshot_vs_the_bash_profile_names_each_difference(
        hostfile: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--snapshot", str(PY_8NODE), "--hostfile", str(hostfile), "--head", HEAD, "--base-dir", "/root",
            "--workdir", str(tmp_path)]
    code, out, _ = parity(capsys, *args, "--format", "json")
    report = json.loads(out)
    assert code == 1 and report["source"] == "snapshot" and not report["identical"]
    diffs = report["differences"]
    # what upstream's Python successor of the bash recipe runs otherwise (issue 20, item 2)
    for want in [
        "`pkill -9`: (words before the first flag): python -> miles",  # cleanup kills miles...
        "only in the script: `pkill -9 redis`",  # ...and redis
        "`ray start`: --dashboard-host: removed (was 0.0.0.0); --dashboard-port: removed (was 8265)",
        f"ssh 7 workers ({WORKERS}): `ray start`: --dashboard-host: removed (was 0.0.0.0); --dashboard-port: "
        "removed (was 8265)",
        f"ssh 7 workers ({WORKERS}): `pkill -9`: (words before the first flag): python -> miles",
        "submit env (at `ray job submit`): no_proxy: plan 127.0.0.1,127.0.0.1, script 127.0.0.1",
        "runtime env PYTHONUNBUFFERED: added = 1",
        f"runtime env PYTHONPATH: /root/Megatron-LM/ -> {tmp_path}:/root/Megatron-LM:/frozen/pythonpath",
        "runtime env GLOO_SOCKET_IFNAME: removed (was ${MLP_SOCKET_IFNAME})",
        "train arg MISC --num-gpus-per-node: added (8)",
        "only in the script: `nvidia-smi topo -m`",  # its NVLink probe
    ]:
        assert want in diffs, (want, diffs)
    assert diffs.count("`pkill -9`: (words before the first flag): python -> miles") == 2
    assert "train arg WANDB --wandb-key: added (***)" in diffs  # upstream's frozen key, masked
    code, text, _ = parity(capsys, *args)  # in a pipe: one line per difference
    assert code == 1 and text.startswith(f"parity: {PY_8NODE} (19 invocations in the snapshot) vs the plan (17 ")
    assert f"not identical: {len(diffs)} difference(s)" in text
    assert "  `pkill -9`: (words before the first flag): python -> miles (x2)\n" in text
    run = load_snapshot(PY_8NODE, hosts=load_hostfile(hostfile).names, repo_root=str(tmp_path))
    plan = build_plan(LaunchSpec(hostfile=load_hostfile(hostfile), head=HEAD, base_dir="/root", workdir=str(tmp_path)))
    wrapped = compare_snapshot(plan, run, str(PY_8NODE)).render(80)  # at a terminal of 80 columns
    assert all(len(line) <= 80 or " " not in line.strip() for line in wrapped.splitlines()), wrapped
    assert " ".join(wrapped.split()).replace("frozen-wandb-api-key", "***") == " ".join(text.split())


def test_the_bash_recipe_snapshot_differs_only_by_its_recording_inputs(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Upstream recorded its .sh recipe with BASE_DIR and MLP_WORKER_0_HOST unset, no worker in
    the hostfile, and a helper printing the model's args; the rest is the plan's, word for word."""
    hosts = tmp_path / "hosts"
    hosts.write_text(f"{HEAD} slots=8\n")
    code, out, _ = parity(capsys, "--snapshot", str(SH_RECIPE), "--hostfile", str(hosts), "--head", HEAD,
                          "--base-dir", "/data", "--workdir", str(tmp_path), "--format", "json")
    report = json.loads(out)
    assert code == 1 and report["differences"] == [
        "`ray start`: --node-ip-address: 127.0.0.1 -> (no value)",
        "train arg CKPT --hf-checkpoint: /data/GLM-4.5-355B-A32B -> /GLM-4.5-355B-A32B",
        "train arg CKPT --ref-load: /data/GLM-4.5-355B-A32B_torch_dist/ -> /GLM-4.5-355B-A32B_torch_dist/",
        "train arg ROLLOUT --prompt-data: /data/dapo-math-17k/dapo-math-17k.jsonl -> /dapo-math-17k/dapo-math-17k.jsonl",
        "train arg EVAL --eval-prompt-data: aime /data/rl_data/aime-2024.jsonl -> aime /rl_data/aime-2024.jsonl",
        f"only in the script: `python3 {tmp_path}/scripts/../miles/utils/external_utils/model_args_utils.py "
        "glm4.5-355B-A32B`",
    ]
    assert report["notes"] == ["`awk '{print $1}' /root/mpi_rack_hostfile`: a text tool the recorder lends (not "
                               "compared)", "an sh/ snapshot holds no environment: the exports are not compared"]


def as_upstream_snapshot(hostfile: Path, workdir: Path) -> str:
    """The default plan's commands written the way upstream's py launchers issue and snapshot
    them: one line per phase, exports in front, the workers started by a loop over the hostfile."""
    plan = build_plan(LaunchSpec(hostfile=load_hostfile(hostfile), head=HEAD, base_dir="/root", workdir=str(workdir)))
    lines = []
    for step in plan.steps:
        exports = "".join(f"export {k}={shlex.quote(v)} && " for k, v in step.env)
        if step.where == WORKER:
            if step.host == "10.0.0.2":
                remote = step.remote_command.replace(step.host, "$worker_ip")
                lines.append(f"for worker_ip in $(awk '{{print $1}}' /root/mpi_rack_hostfile); do if [ \"$worker_ip\" "
                             f"= {HEAD} ]; then continue; fi; echo \"Starting Ray worker on $worker_ip\"; ssh "
                             f"root@\"$worker_ip\" \"{remote}\" & done; wait")
        elif step.commands:
            lines.append(exports + "; ".join(shlex.join(c) for c in step.commands) + ("; true; " if len(step.commands) > 1
                                                                                      else ""))
    blocks = [f"### {i}\n{re.sub(r' (?=--)', chr(10) + '  ', line)}\n" for i, line in enumerate(lines)]
    return "\n".join([*blocks, "### pseudo file 1\nuse_tis: true\n"])


def test_a_snapshot_of_the_plans_own_commands_is_identical(hostfile: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    snapshot = tmp_path / "execute.txt"
    snapshot.write_text(as_upstream_snapshot(hostfile, tmp_path))
    code, out, _ = parity(capsys, "--snapshot", str(snapshot), "--hostfile", str(hostfile), "--head", HEAD,
                          "--base-dir", "/root", "--workdir", str(tmp_path))
    assert code == 0, out
    assert "? ### pseudo file 1: a file the launcher generates (not compared)" in out
    assert out.endswith("identical: 17 of 17 invocations match\n")


@pytest.mark.parametrize(("args", "error"), [
    ([], "parity: give a SCRIPT to record, or --snapshot FILE"),
    (["run.sh", "--snapshot", str(PY_8NODE)], "parity: give a SCRIPT to record, or --snapshot FILE"),
    (["--snapshot", str(PY_8NODE), "--rank", "1"], "--snapshot: nothing runs (no -- ARGS, --expose, "
     "--script-hostfile, --rank or --as-worker)"),
    (["--snapshot", "{tmp}/none.txt"], "{tmp}/none.txt: No such file or directory"),
    (["--snapshot", "{tmp}/plan.sh"], "{tmp}/plan.sh: not a launch-script snapshot (no '### 0' block)"),
    (["--snapshot", "{tmp}/bad.txt"], "{tmp}/bad.txt: ### 0: not one JSON string per line (Expecting value: line 1 "
     "column 1 (char 0))"),
])
def test_snapshot_errors_are_one_line(args: list[str], error: str, hostfile: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "plan.sh").write_text("#!/bin/bash\nray start --head\n")
    (tmp_path / "bad.txt").write_text("# returncode: 0\n\n### 0\nray start\n")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code, out, err = parity(capsys, *args, "--hostfile", str(hostfile), "--head", HEAD, "--base-dir", "/root")
    assert (code, out) == (2, "") and err == f"glm45-launch: error: {error.replace('{tmp}', str(tmp_path))}\n"
