"""GPUs per node reach the trainer (issue 9): slime/miles default ``--num-gpus-per-node`` to 8 and
lay the rollout engines out by it, so a plan on nodes of another size passes it; ``validate``
refuses train args that contradict the nodes, and preflight compares the real GPU count."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from glm45_launch.checks.host_checks import evaluate, gpu_checks, nvlink_labels
from glm45_launch.checks.preflight_report import FAIL, OK, WARN, PreflightOptions
from glm45_launch.checks.rules import check_plan
from glm45_launch.cli.main import main
from glm45_launch.core.builder import build_plan
from glm45_launch.core.flags import last_values
from glm45_launch.core.hostfile import load_hostfile, parse_hostfile_text
from glm45_launch.core.overrides import build_overrides
from glm45_launch.core.plan import LaunchSpec, Plan, Variant

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = json.loads((ROOT / "tests/data/golden/glm45-355b-a32b-8node.json").read_text())
HEAD = "10.0.0.1"
GB = ROOT / "hostfiles" / "gb200-8x4.hostfile"


def plan_on(slots: int | None, nodes: int = 8, **kw: Any) -> Plan:
    suffix = f" slots={slots}" if slots else ""
    hosts = parse_hostfile_text("".join(f"10.0.0.{i}{suffix}\n" for i in range(1, nodes + 1)), "hosts")
    return build_plan(LaunchSpec(hostfile=hosts, head=HEAD, base_dir="/data/glm", workdir="/w", **kw))


def test_8x8_stays_word_for_word() -> None:
    golden_submit = next(a for a in GOLDEN["invocations"] if a[:3] == ["ray", "job", "submit"])
    for slots in (None, 8):
        plan = plan_on(slots)
        assert "--num-gpus-per-node" not in plan.train.argv
        assert plan.train_argv == golden_submit[golden_submit.index("--") + 1:]


def test_an_8x4_hostfile_gives_num_gpus_per_node_4() -> None:
    spec = LaunchSpec(hostfile=load_hostfile(GB), head="gb-01", base_dir="/data", workdir="/w")
    plan = build_plan(spec)
    assert plan.train.prefix == ("--actor-num-nodes", "8", "--actor-num-gpus-per-node", "4",
                                 "--num-gpus-per-node", "4", "--colocate")
    assert any("--num-gpus-per-node 4 passed to train.py" in n and "deviation" in n for n in plan.notes)
    assert plan.invocations()[8][:7] == ["ray", "start", "--head", "--node-ip-address", "gb-01", "--num-gpus", "4"]
    # The bash recipe's layout needs 64 GPUs (its known problems on 32), but nothing about GPUs per node.
    assert {p.code for p in check_plan(plan)} == {"data-parallel", "expert-layout"}


@pytest.mark.parametrize("how", [{"gpus_per_node": 4}, {"variant": Variant(hardware="GB200")},
                                 {"variant": Variant(hardware="GB300")}])
def test_every_way_of_saying_4_gpus_passes_it(how: dict[str, Any]) -> None:
    plan = plan_on(None, **how)
    assert last_values(plan.train.argv)["--num-gpus-per-node"] == ("4",)
    assert plan.train.argv.count("--num-gpus-per-node") == 1


def test_python_and_air_recipes_carry_it_themselves() -> None:
    python = plan_on(4, 4, variant=Variant(profile="python", hardware="GB200"))
    assert python.train.argv.count("--num-gpus-per-node") == 1  # upstream's own MISC flag, always
    assert not any("passed to train.py" in n for n in python.notes)
    air = plan_on(4, variant=Variant(profile="air-p2p"))
    misc = dict(air.train.groups)["MISC"]
    i = misc.index("--actor-num-gpus-per-node")
    assert misc[i:i + 4] == ("--actor-num-gpus-per-node", "4", "--num-gpus-per-node", "4")
    assert "--num-gpus-per-node" not in plan_on(8, variant=Variant(profile="air-p2p")).train.argv


def test_cli_plan_on_the_example_hostfile(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--hostfile", str(GB), "--head", "gb-01", "--base-dir", "/d", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["train"]["prefix"][4:6] == ["--num-gpus-per-node", "4"]
    assert data["cluster"]["gpus_per_node"] == 4 and data["cluster"]["total_gpus"] == 32


# --- validate ------------------------------------------------------------------------------------


def messages(plan: Plan) -> list[str]:
    return [p.message for p in check_plan(plan)]


def test_validate_refuses_num_gpus_per_node_contradicting_the_nodes() -> None:
    plan = plan_on(4, overrides=build_overrides(sets=("MISC.--num-gpus-per-node=8",)))
    assert "--num-gpus-per-node 8 but the nodes have 4 GPU(s) (hostfile slots / --gpus-per-node): the rollout " \
           "engines would be placed as if every node had that many" in messages(plan)
    # Left to the trainer's default on 4-GPU nodes (a recipe file without it): named too.
    python = plan_on(4, 4, variant=Variant(profile="python", hardware="GB200"),
                     overrides=build_overrides(unsets=("MISC.--num-gpus-per-node",)))
    assert any(m.startswith("--num-gpus-per-node (default 8) but the nodes have 4 GPU(s)") for m in messages(python))


def test_validate_refuses_actor_gpus_beyond_the_nodes() -> None:
    plan = plan_on(4, overrides=build_overrides(sets=("MISC.--actor-num-gpus-per-node=8",)))
    assert any(m.startswith("--actor-num-gpus-per-node 8 but the nodes have 4 GPU(s)") for m in messages(plan))


@pytest.mark.parametrize(("slots", "engine", "tiles"), [
    (8, "32", True), (8, "8", True), (8, "4", True), (8, "3", False), (8, "12", False),
    (4, "32", True), (4, "2", True), (4, "6", False),
])
def test_rollout_engines_must_tile_the_nodes(slots: int, engine: str, tiles: bool) -> None:
    plan = plan_on(slots, overrides=build_overrides(sets=(f"SGLANG.--rollout-num-gpus-per-engine={engine}",
                                                          f"SGLANG.--sglang-ep-size={engine}",
                                                          "SGLANG.--sglang-dp-size=1")))
    tiled = [m for m in messages(plan) if "does not tile nodes" in m]
    assert (not tiled) == tiles, tiled
    if not tiles:
        assert tiled[0].startswith(f"--rollout-num-gpus-per-engine {engine} does not tile nodes of {slots} GPUs "
                                   "(--num-gpus-per-node)")


# --- preflight -----------------------------------------------------------------------------------


def smi(count: int, nvlink: bool = True) -> dict[str, Any]:
    listing = "".join(f"GPU {i}: NVIDIA GB200 (UUID: GPU-{i})\n" for i in range(count))
    topo = "\tGPU0\tGPU1\nGPU0\t X \t" + ("NV18" if nvlink else "SYS") + "\n"
    return {"nvidia_smi": "/usr/bin/nvidia-smi", "smi_list": [0, listing], "smi_topo": [0, topo]}


def test_preflight_compares_the_gpus_with_the_trainers_num_gpus_per_node() -> None:
    assert gpu_checks(smi(4), 4, False, trainer=4)[0].status == OK
    bad = gpu_checks(smi(4), 4, False, trainer=8)[0]
    assert bad.status == FAIL and "train.py's --num-gpus-per-node is 8" in bad.detail
    assert gpu_checks(smi(8), 4, False, trainer=4)[0].detail == "8 GPUs, expected 4 per node"


@pytest.mark.parametrize(("sets", "status"), [((), OK), (("MISC.--num-gpus-per-node=8",), FAIL)])
def test_preflight_reads_the_plans_num_gpus_per_node(sets: tuple[str, ...], status: str) -> None:
    plan = plan_on(4, overrides=build_overrides(sets=sets))
    checks = {c.name: c for c in evaluate(plan, "10.0.0.2", smi(4), False, "ssh", PreflightOptions(), None, None)}
    assert checks["gpus"].status == status


def test_preflight_nvlink_names_what_the_runtime_env_expects() -> None:
    nvls = gpu_checks(smi(4, nvlink=False), 4, False, trainer=4, nvls=True)[1]
    assert nvls.status == WARN and "NCCL_NVLS_ENABLE=1" in nvls.detail
    assert "NCCL_P2P_LEVEL=NVL" in gpu_checks(smi(4, nvlink=False), 4, False)[1].detail
    assert nvlink_labels("GPU0\t X \tNV18\tNV4\nNV#  = bonded NVLinks\n") == ["NV18", "NV4"]
    assert nvlink_labels("GPU0\t X \tPIX\n") == []
