"""``glm45-launch convert``: the HF -> torch_dist conversion of RECIPE.md §6, planned per node."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from test_variants import MODEL_355B, MODEL_AIR

from glm45_launch import LaunchError, LaunchSpec, parse_hostfile_text
from glm45_launch.cli.main import main
from glm45_launch.core.convert_plan import plan_convert
from glm45_launch.core.overrides import build_overrides
from glm45_launch.core.plan import Variant
from glm45_launch.testing.rackbox import RackBox

BASE = "/data/glm"
HEAD = "10.0.0.1"
HF = f"{BASE}/GLM-4.5-355B-A32B"
SAVE = f"{BASE}/GLM-4.5-355B-A32B_torch_dist"


def spec(lines: list[str], **kw: object) -> LaunchSpec:
    hostfile = parse_hostfile_text("".join(line + "\n" for line in lines), "hosts")
    return LaunchSpec(hostfile=hostfile, head=kw.pop("head", HEAD), base_dir=BASE, workdir="/root/miles",
                      **kw)  # type: ignore[arg-type]


EIGHT = [f"10.0.0.{i} slots=8" for i in range(1, 9)]


def torchrun(rank: int, nnodes: int = 8, nproc: int = 8, model: list[str] = MODEL_355B, hf: str = HF,
             save: str = SAVE, port: int = 12345) -> list[str]:
    """RECIPE.md §6's command with the multi-node flags."""
    multi = ["--nnodes", str(nnodes), "--node-rank", str(rank), "--master-addr", HEAD,
             "--master-port", str(port)] if nnodes > 1 else []
    return ["torchrun", "--nproc-per-node", str(nproc), *multi, "tools/convert_hf_to_torch_dist.py", *model,
            "--hf-checkpoint", hf, "--save", save]


def test_one_torchrun_per_node_in_rank_order() -> None:
    cplan = plan_convert(spec(EIGHT))
    assert [s.host for s in cplan.steps] == [f"10.0.0.{i}" for i in range(1, 9)]
    for rank, step in enumerate(cplan.steps):
        assert list(step.commands[0]) == torchrun(rank)
        assert step.env == (("PYTHONPATH", "/root/Megatron-LM"),)
        assert step.cwd == "/root/miles"
        assert step.kind == "convert" and step.where == ("head" if rank == 0 else "worker")
    assert cplan.hf_checkpoint == HF and cplan.save == SAVE


def test_skip_check_and_invocations() -> None:
    cplan = plan_convert(spec(EIGHT))
    assert cplan.check.commands == (("test", "-f", f"{SAVE}/latest_checkpointed_iteration.txt"),)
    assert cplan.check.host == HEAD
    assert cplan.skip_message.startswith(f"{SAVE} already holds latest_checkpointed_iteration.txt")
    inv = cplan.invocations()
    assert inv[0] == torchrun(0)
    assert inv[5][:2] == ["ssh", "root@10.0.0.6"]
    remote = shlex.split(inv[5][2])
    assert remote == ["cd", "/root/miles", "&&", "env", "PYTHONPATH=/root/Megatron-LM", *torchrun(5)]


def test_single_node_is_recipe_md_one_node_form() -> None:
    cplan = plan_convert(spec(["10.0.0.1"]))
    assert [list(s.commands[0]) for s in cplan.steps] == [torchrun(0, nnodes=1)]
    assert not any("rendezvous" in n for n in cplan.notes)


def test_head_not_in_hostfile_is_rank_zero() -> None:
    cplan = plan_convert(spec(["10.0.0.2", "10.0.0.3"]))
    assert [s.host for s in cplan.steps] == [HEAD, "10.0.0.2", "10.0.0.3"]
    assert list(cplan.steps[2].commands[0]) == torchrun(2, nnodes=3)


def test_hardware_model_port_and_megatron_path() -> None:
    cplan = plan_convert(spec([f"10.0.0.{i}" for i in range(1, 3)], model="glm4.5-106B-A12B",
                              variant=Variant(hardware="GB200")), master_port=23456, megatron_path="/opt/mlm")
    assert list(cplan.steps[1].commands[0]) == torchrun(
        1, nnodes=2, nproc=4, model=MODEL_AIR, hf=f"{BASE}/GLM-4.5-Air", save=f"{BASE}/GLM-4.5-Air_torch_dist",
        port=23456)
    assert cplan.steps[0].env == (("PYTHONPATH", "/opt/mlm"),)


def test_targets_follow_the_recipe() -> None:
    cplan = plan_convert(spec(EIGHT, overrides=build_overrides(sets=["CKPT.--ref-load=/ckpt/dist/"])))
    assert cplan.save == "/ckpt/dist"
    fp8 = plan_convert(spec([f"10.0.0.{i}" for i in range(1, 9)], variant=Variant(hardware="GB300", rollout_fp8=True)))
    assert fp8.hf_checkpoint == HF  # the BF16 original, not the -FP8 copy rollout uses
    explicit = plan_convert(spec(EIGHT), hf_checkpoint="/hf", save="/out")
    assert list(explicit.steps[0].commands[0])[-4:] == ["--hf-checkpoint", "/hf", "--save", "/out"]


def test_bad_master_port() -> None:
    with pytest.raises(LaunchError, match="--master-port: 70000 is not a TCP port"):
        plan_convert(spec(EIGHT), master_port=70000)


def run_cli(capsys: pytest.CaptureFixture[str], tmp_path: Path, lines: list[str], *args: str,
            head: str = HEAD, base: str = BASE) -> tuple[int, str, str]:
    hosts = tmp_path / "hosts"
    hosts.write_text("".join(line + "\n" for line in lines))
    code = main(["convert", "--hostfile", str(hosts), "--head", head, "--base-dir", base, "--workdir", "/root/miles",
                 *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_dry_run_text_and_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run_cli(capsys, tmp_path, EIGHT, "--dry-run")
    assert code == 0
    assert f"  save           {SAVE}\n" in out and "  nodes          8 x 8 GPUs\n" in out
    assert f"      $ test -f {SAVE}/latest_checkpointed_iteration.txt\n" in out
    assert "      $ cd /root/miles && env PYTHONPATH=/root/Megatron-LM " + shlex.join(torchrun(0)) + "\n" in out
    code, out, _ = run_cli(capsys, tmp_path, EIGHT, "--dry-run", "--format", "json")
    data = json.loads(out)
    assert code == 0 and data["nodes"] == 8 and data["invocations"][0] == torchrun(0)
    assert data["steps"][7]["shell_command"] == "cd /root/miles && env PYTHONPATH=/root/Megatron-LM " + shlex.join(
        torchrun(7))


def test_cli_skips_when_the_target_is_converted(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    base = tmp_path / "base"
    target = base / "GLM-4.5-355B-A32B_torch_dist"
    target.mkdir(parents=True)
    (target / "latest_checkpointed_iteration.txt").write_text("release\n")
    code, out, err = run_cli(capsys, tmp_path, ["127.0.0.1"], "--run-dir", str(tmp_path / "run"),
                             head="127.0.0.1", base=str(base))
    assert code == 0
    assert f"{target} already holds latest_checkpointed_iteration.txt: conversion skipped" in err
    assert (tmp_path / "run/convert/head.log").read_text().startswith(
        f"$ test -f {target}/latest_checkpointed_iteration.txt\n")


FAKE_CONVERTER = '''\
import json, os, sys
args = sys.argv[1:]
save = args[args.index("--save") + 1]
os.makedirs(save, exist_ok=True)
rank = int(os.environ["RANK"])
with open(os.path.join(save, f"rank-{rank}.json"), "w") as f:
    json.dump({"args": args, "cwd": os.getcwd(), "pythonpath": os.environ.get("PYTHONPATH"),
               "world": int(os.environ["WORLD_SIZE"]), "node_rank": int(os.environ["GROUP_RANK"])}, f)
if rank == 0:
    with open(os.path.join(save, "latest_checkpointed_iteration.txt"), "w") as f:
        f.write("release\\n")
'''


@pytest.mark.rackbox
def test_convert_runs_on_every_node_then_skips(fresh_rackbox: RackBox) -> None:
    """Real torchrun over real SSH on the rack-in-a-box, a stand-in converter script."""
    box = fresh_rackbox
    checkout = box.workdir / "convert-checkout"
    (checkout / "tools").mkdir(parents=True, exist_ok=True)
    (checkout / "tools/convert_hf_to_torch_dist.py").write_text(FAKE_CONVERTER)
    base = box.workdir / "convert-base"
    hostfile = box.hostfile(box.workdir / "convert-hosts", slots=2)
    args = ["convert", "--hostfile", str(hostfile), "--base-dir", str(base), "--workdir", str(checkout),
            "--identity", str(box.identity), "--known-hosts", str(box.known_hosts), "--master-port", "29533",
            "--timeout", "240", "--run-dir", str(box.workdir / "convert-runs")]

    def launch() -> subprocess.CompletedProcess[str]:
        return box.run_on(1, [sys.executable, "-m", "glm45_launch", *args], cwd=str(checkout), capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL, env=box.host_environ(1))

    first = launch()
    assert first.returncode == 0, first.stderr[-3000:]
    save = base / "GLM-4.5-355B-A32B_torch_dist"
    ranks = sorted(save.glob("rank-*.json"))
    assert len(ranks) == 6  # 3 nodes x 2 GPUs, one rendezvous
    reports = [json.loads(p.read_text()) for p in ranks]
    assert {r["world"] for r in reports} == {6} and sorted(r["node_rank"] for r in reports) == [0, 0, 1, 1, 2, 2]
    assert all(r["cwd"] == str(checkout) and r["pythonpath"] == "/root/Megatron-LM" for r in reports)
    assert reports[0]["args"] == [*MODEL_355B, "--hf-checkpoint", f"{base}/GLM-4.5-355B-A32B", "--save", str(save)]
    assert "converted:" in first.stderr
    (save / "rank-0.json").unlink()
    second = launch()
    assert second.returncode == 0, second.stderr[-3000:]
    assert "already holds latest_checkpointed_iteration.txt: conversion skipped" in second.stderr
    assert not (save / "rank-0.json").exists()
