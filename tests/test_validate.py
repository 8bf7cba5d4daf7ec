"""Config validation: the pure rules (validate.py) and the library checks (validate_libs.py)."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from glm45_launch.checks.rules import (
    Problem,
    TrainArgs,
    check_args,
    check_plan,
    parse_layer_pattern,
    pipeline_split,
    require_valid,
)
from glm45_launch.cli.main import main
from glm45_launch.core.builder import build_plan
from glm45_launch.core.hostfile import parse_hostfile_text
from glm45_launch.core.plan import LaunchSpec, Plan, Variant
from glm45_launch.errors import LaunchError
from glm45_launch.recipes import BASH_RECIPE, MODELS, Recipe

HEAD = "10.0.0.1"
HOSTS8 = [f"10.0.0.{i}" for i in range(1, 9)]
DEFAULT_MODEL = "glm4.5-355B-A32B"
AIR = "glm4.5-106B-A12B"
IN_CI = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def hostfile(names: list[str], slots: int | None = 8) -> Any:
    suffix = "" if slots is None else f" slots={slots}"
    return parse_hostfile_text("".join(f"{n}{suffix}\n" for n in names), "hosts")


def edit_groups(recipe: Recipe, model: str, changes: dict[str, Any]) -> Recipe:
    """``recipe`` with flags changed wherever they stand: None drops a flag and its values,
    a str/tuple sets its values (a flag not there yet is appended to MISC). A repeated flag
    (--moe-token-dispatcher-type) has every occurrence changed."""
    groups = {g: list(w) for g, w in recipe.train_args()}
    groups["MODEL"] = groups["MODEL"] or list(MODELS[model].args)
    for flag, value in changes.items():
        new = [] if value is None else [flag, *((value,) if isinstance(value, str) else value)]
        found = False
        for name, words in groups.items():
            out: list[str] = []
            i = 0
            while i < len(words):
                if words[i] == flag:
                    found = True
                    out += new
                    i += 1
                    while i < len(words) and not words[i].startswith("--"):
                        i += 1
                else:
                    out.append(words[i])
                    i += 1
            groups[name] = out
        if not found and value is not None:
            groups["MISC"] += new
    return recipe.with_groups({g: tuple(w) for g, w in groups.items()})


def plan_with(changes: dict[str, Any] | None = None, hosts: list[str] | None = None, model: str = DEFAULT_MODEL,
              slots: int | None = 8, recipe: Recipe = BASH_RECIPE, **kw: Any) -> Plan:
    """The default plan (golden 8-node hostfile) with train.py flags changed."""
    return build_plan(LaunchSpec(
        hostfile=hostfile(HOSTS8 if hosts is None else hosts, slots), head=HEAD, base_dir="/data/glm",
        workdir="/w", model=model, recipe=edit_groups(recipe, model, changes or {}), **kw,
    ))


def messages(plan: Plan) -> list[str]:
    return [p.message for p in check_plan(plan)]


TP, PP, CP = "--tensor-model-parallel-size", "--pipeline-model-parallel-size", "--context-parallel-size"
EP, ETP = "--expert-model-parallel-size", "--expert-tensor-parallel-size"

# (id, flag changes, expected message substring). Each is the default recipe with one mistake.
BROKEN: list[tuple[str, dict[str, Any], str]] = [
    ("dp-fraction", {TP: "3", "--num-attention-heads": "96"},
     "= 24 does not divide the world size 64 (--actor-num-nodes 8 × --actor-num-gpus-per-node 8)"),
    ("dp-zero", {PP: "8"}, "= 128 GPUs per model replica exceeds the world size 64"),
    ("expert-layout", {EP: "32"}, "--expert-tensor-parallel-size 1 × --expert-model-parallel-size 32 × "
                                  "--pipeline-model-parallel-size 4 = 128 does not divide the world size 64"),
    ("experts-vs-ep", {"--num-experts": "100"}, "--num-experts 100 is not divisible by --expert-model-parallel-size 16"),
    ("ep-without-experts", {"--num-experts": None, "--moe-layer-freq": None},
     "--expert-model-parallel-size 16 needs --num-experts"),
    ("pp-split", {PP: "8", CP: "1", EP: "8"},
     "--num-layers 92 / --pipeline-model-parallel-size 8: 92 layers do not split evenly over 8 pipeline stages"),
    ("pp-uneven", {"--decoder-last-pipeline-num-layers": "21"},
     "92 layers minus --decoder-last-pipeline-num-layers 21 do not split evenly over the 3 other stage(s)"),
    ("heads-vs-tp", {"--num-attention-heads": "100"},
     "--num-attention-heads 100 is not divisible by --tensor-model-parallel-size 8"),
    ("groups-vs-tp", {"--num-query-groups": "6"},
     "--num-query-groups 6 is neither a multiple nor a divisor of --tensor-model-parallel-size 8"),
    ("sp-without-tp", {TP: "1"}, "--sequence-parallel needs --tensor-model-parallel-size > 1, got 1"),
    ("moe-tp-without-sp", {"--sequence-parallel": None},
     "a MoE model (--num-experts 160) with --tensor-model-parallel-size 8 needs --sequence-parallel"),
    ("moe-layer-freq-length", {"--moe-layer-freq": "[0]*3+[1]*88"},
     "--moe-layer-freq [0]*3+[1]*88 has 91 entries but --num-layers is 92"),
    ("moe-layer-freq-code", {"--moe-layer-freq": "[0]*3+[__import__('os').getpid()]*89"},
     "list items must be whole numbers"),
    ("moe-layer-freq-huge", {"--moe-layer-freq": "[0]*1000000000"}, "the list would have 1000000000 entries"),
    ("recompute-over-stage", {"--recompute-num-layers": "24"},
     "--recompute-num-layers 24 exceeds the 23 layers of a pipeline stage"),
    ("rollout-engine", {"--rollout-num-gpus-per-engine": "24"},
     "the 64 colocated GPUs (--actor-num-nodes 8 × --actor-num-gpus-per-node 8) are not divisible by "
     "--rollout-num-gpus-per-engine 24"),
    ("sglang-dp-divides", {"--sglang-dp-size": "3"},
     "--sglang-dp-size 3 does not divide the engine size --rollout-num-gpus-per-engine 32"),
    ("sglang-dp-attention", {"--sglang-enable-dp-attention": None},
     "--sglang-dp-size 4 needs --sglang-enable-dp-attention"),
    ("sglang-ep", {"--sglang-ep-size": "64"},
     "--sglang-ep-size 64 must be between 1 and the engine size --rollout-num-gpus-per-engine 32"),
    ("global-batch", {"--num-steps-per-rollout": "3"},
     "--rollout-batch-size 128 × --n-samples-per-prompt 8 = 1024 samples do not split into "
     "--num-steps-per-rollout 3 equal global batches"),
    ("global-batch-given", {"--global-batch-size": "100"}, "--global-batch-size 100 != 1024 samples"),
    ("over-sampling", {"--over-sampling-batch-size": "64"},
     "--over-sampling-batch-size 64 is smaller than --rollout-batch-size 128"),
    ("temperature", {"--rollout-temperature": "0"}, "--rollout-temperature must be > 0"),
    ("kl-loss-needs-ref", {"--use-kl-loss": (), "--ref-load": None}, "--use-kl-loss needs --ref-load"),
    ("kl-coef-needs-ref", {"--kl-coef": "0.1", "--ref-load": None}, "--kl-coef 0.1 needs --ref-load"),
    ("kl-both", {"--kl-coef": "0.1", "--kl-loss-coef": "0.1"}, "only one of --kl-coef 0.1 and --kl-loss-coef 0.1"),
    ("save-interval", {"--save-interval": "10"}, "--save-interval needs --save"),
    ("eval-needs-data", {"--eval-prompt-data": None}, "--eval-interval needs --eval-prompt-data NAME PATH"),
    ("eval-pairs", {"--eval-prompt-data": ("aime", "/d/aime.jsonl", "math")},
     "--eval-prompt-data takes NAME PATH pairs, got 3 words"),
    ("eval-one-word", {"--eval-prompt-data": "/d/aime.jsonl"},
     "--eval-prompt-data takes NAME PATH pairs, got 1 word: /d/aime.jsonl"),
    ("bad-float", {"--lr": "abc"}, "--lr 'abc' is not a number"),
    ("bad-int", {"--num-layers": "ninety-two"}, "--num-layers 'ninety-two' is not a whole number"),
    ("missing-value", {"--rollout-batch-size": ()}, "--rollout-batch-size needs a value"),
    ("num-rollout", {"--num-rollout": None}, "give --num-rollout or --num-epoch"),
    ("dynamic-batch", {"--max-tokens-per-gpu": None}, "--use-dynamic-batch-size needs --max-tokens-per-gpu"),
    ("deepep-dispatcher", {"--moe-token-dispatcher-type": "alltoall"},
     "--moe-enable-deepep needs --moe-token-dispatcher-type flex"),
]


def test_default_recipe_on_the_golden_hostfile_is_valid() -> None:
    assert check_plan(plan_with()) == []
    assert require_valid(plan_with()) == []


@pytest.mark.parametrize(("changes", "expected"), [c[1:] for c in BROKEN], ids=[c[0] for c in BROKEN])
def test_broken_config_is_rejected(changes: dict[str, Any], expected: str) -> None:
    problems = check_plan(plan_with(changes))
    found = [p.message for p in problems]
    assert any(expected in m for m in found), found
    for p in problems:
        assert "\n" not in p.message and p.flags
        assert all(flag in p.message for flag in p.flags), p


def test_the_table_is_large_enough_and_distinct() -> None:
    assert len(BROKEN) >= 20
    assert len({c[0] for c in BROKEN}) == len(BROKEN)
    assert len({c[2] for c in BROKEN}) == len(BROKEN)


def test_too_few_nodes() -> None:
    plan = plan_with(hosts=HOSTS8[:3])
    assert messages(plan) == [
        "--actor-num-nodes 8 but the cluster has 3 node(s): the job would wait for GPUs that never come"
    ]
    # the rule moved out of plan.py: one place says it
    assert not any("--actor-num-nodes" in w for w in plan.warnings)
    assert check_plan(plan_with(hosts=HOSTS8[:3], actor_num_nodes=3)) == [
        Problem("data-parallel", (TP, PP, CP, "--actor-num-nodes", "--actor-num-gpus-per-node"),
                "--tensor-model-parallel-size 8 × --pipeline-model-parallel-size 4 × --context-parallel-size 2 "
                "= 64 GPUs per model replica exceeds the world size 24 (--actor-num-nodes 3 × "
                "--actor-num-gpus-per-node 8): data-parallel size would be 0"),
        Problem("expert-layout", (ETP, EP, PP, "--actor-num-nodes", "--actor-num-gpus-per-node"),
                "--expert-tensor-parallel-size 1 × --expert-model-parallel-size 16 × "
                "--pipeline-model-parallel-size 4 = 64 does not divide the world size 24 (--actor-num-nodes 3 × "
                "--actor-num-gpus-per-node 8) (Megatron lays experts out as ETP × EP × PP × expert-DP)"),
        Problem("rollout-engine", ("--rollout-num-gpus-per-engine", "--actor-num-nodes"),
                "the 24 colocated GPUs (--actor-num-nodes 3 × --actor-num-gpus-per-node 8) are not divisible by "
                "--rollout-num-gpus-per-engine 32"),
    ]


def test_gpus_per_node_mismatch() -> None:
    recipe = replace(BASH_RECIPE, train_prefix=("--actor-num-nodes", "{actor_num_nodes}",
                                                "--actor-num-gpus-per-node", "8", "--colocate"))
    found = messages(plan_with(slots=4, recipe=recipe))
    assert ("--actor-num-gpus-per-node 8 but the nodes have 4 GPU(s) (hostfile slots / --gpus-per-node): "
            "the job would wait for GPUs that never come") in found


def test_runtime_env_names() -> None:
    recipe = replace(BASH_RECIPE, env_vars=BASH_RECIPE.env_vars + (("NCCL_IB_TC", "1"), ("BAD-NAME", "x")))
    assert messages(plan_with(recipe=recipe)) == [
        "runtime env: NCCL_IB_TC is given twice", "runtime env: 'BAD-NAME' is not an environment variable name",
    ]


@pytest.mark.parametrize(("head", "kind"), [
    ("127.0.0.1", "a loopback"), ("127.0.1.1", "a loopback"), ("::1", "a loopback"), ("localhost", "a loopback"),
    ("LocalHost.", "a loopback"), ("::ffff:127.0.0.1", "a loopback"), ("0.0.0.0", "an unspecified"),
    ("::", "an unspecified"),
])
def test_loopback_head_with_workers(head: str, kind: str) -> None:
    plan = build_plan(LaunchSpec(hostfile=hostfile(HOSTS8), head=head, base_dir="/data/glm", workdir="/w"))
    problems = [p for p in check_plan(plan) if p.code == "head-address"]
    assert problems == [Problem("head-address", ("--head",), (
        f"--head {head} is {kind} address but 8 worker(s) join the cluster: workers would run ray start "
        f"--address={head}:6379 and join themselves (give the head's address on the cluster network: --head or "
        "MLP_WORKER_0_HOST)"))]
    # Alone, the head may be anything: nobody has to reach it.
    alone = build_plan(LaunchSpec(hostfile=hostfile([head]), head=head, base_dir="/data/glm", workdir="/w",
                                  actor_num_nodes=1))
    assert "head-address" not in [p.code for p in check_plan(alone)]


def test_routable_heads_are_not_loopback() -> None:
    from glm45_launch.checks.rules import local_only_address

    for host in ("10.0.0.1", "node-1", "localhost-1", "my.localhost.example", "::ffff:10.0.0.1", "2001:db8::1"):
        assert local_only_address(host) is None, host


# --- the shipped variants ----------------------------------------------------------------------

HW_GPUS = {None: 8, "H100": 8, "GB200": 4, "GB300": 4}


def variant_cases() -> list[tuple[str, str, str | None, int]]:
    """model × profile × hardware × nodes (1, 2, 4, 8) where the variant takes that many nodes:
    the python profile runs on Blackwell only (the H100 default is refused), at any count
    (RECIPE.md §5 table); the bash recipe is an 8-node recipe (--actor-num-nodes 8)."""
    cases = []
    for model in (DEFAULT_MODEL, AIR):
        for hardware in HW_GPUS:
            cases += [(model, "bash", hardware, 8)]
            if hardware in ("GB200", "GB300"):
                cases += [(model, "python", hardware, n) for n in (1, 2, 4, 8)]
    return cases


def known_problems(model: str, profile: str, hardware: str | None, nodes: int) -> list[str]:
    """The problem codes each shipped variant is known to have (in check_plan's order)."""
    codes = []
    if profile == "bash":
        if HW_GPUS[hardware] == 4:
            # TP8 × PP4 × CP2 = 64 GPUs per replica and ETP1 × EP16 × PP4 = 64, on 8 × 4 GPUs.
            codes += ["data-parallel", "expert-layout"]
        if model == AIR:
            codes += ["pipeline-split"]  # GLM-4.5-Air's 46 layers over PP 4
    elif nodes == 8:
        # RECIPE.md §5: TP4 × PP8 × CP2 = 64 GPUs (and EP8 × PP8 = 64) on 8 × 4 GPUs; and
        # PP 8 splits neither 92 nor 46 layers evenly.
        codes += ["data-parallel", "expert-layout", "pipeline-split"]
    return codes


@pytest.mark.parametrize(("model", "profile", "hardware", "nodes"), variant_cases(),
                         ids=[f"{m.split('-')[1]}-{p}-{h or 'default'}-{n}n" for m, p, h, n in variant_cases()])
def test_shipped_variants_validate_or_have_only_their_known_problems(
    model: str, profile: str, hardware: str | None, nodes: int,
) -> None:
    hosts = [f"10.0.0.{i}" for i in range(1, nodes + 1)]
    plan = build_plan(LaunchSpec(
        hostfile=hostfile(hosts, HW_GPUS[hardware]), head=HEAD, base_dir="/data/glm", workdir="/w", model=model,
        variant=Variant(profile=profile, hardware=hardware),
    ))
    problems = check_plan(plan)
    assert [p.code for p in problems] == known_problems(model, profile, hardware, nodes), problems
    settings = dict(plan.settings)
    assert settings["recipe"] == ("glm45-python" if profile == "python" else "glm45-bash")
    assert int(settings["nodes"]) == nodes and int(settings["GPUs per node"]) == HW_GPUS[hardware]


def test_the_variant_matrix_is_complete() -> None:
    cases = variant_cases()
    assert len(cases) == 2 * 4 + 2 * 2 * 4 and len(set(cases)) == len(cases)
    # the python profile on the H100 default is refused, not validated
    with pytest.raises(LaunchError, match="Blackwell-only"):
        build_plan(LaunchSpec(hostfile=hostfile(HOSTS8), head=HEAD, base_dir="/b", variant=Variant(profile="python")))


def test_validate_names_the_profile(golden_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    four = golden_env.parent / "gb200"
    four.write_text("".join(f"{h} slots=4\n" for h in HOSTS8[:4]))
    assert main(["validate", "--hostfile", str(four), "--profile", "python", "--hardware", "GB200", "--no-libs"]) == 0
    assert capsys.readouterr().out == \
        "OK: glm45-python / glm4.5-355B-A32B: 4 actor node(s) x 4 GPUs, 4 node(s) in the cluster\n"


def test_air_on_8_nodes_needs_an_uneven_pipeline() -> None:
    """GLM-4.5-Air has 46 layers: the 355B recipe's PP 4 cannot split them evenly (its real problem)."""
    assert messages(plan_with(model=AIR)) == [
        "--num-layers 46 / --pipeline-model-parallel-size 4: 46 layers do not split evenly over 4 pipeline "
        "stages (give --decoder-first/last-pipeline-num-layers)"
    ]
    # Megatron's uneven split: 11 layers on the first stage, 35 over the other three... not even;
    # 10 first + 12 × 3 is.
    assert check_plan(plan_with({"--decoder-first-pipeline-num-layers": "10"}, model=AIR)) == []
    assert check_plan(plan_with({PP: "2", CP: "4", EP: "8"}, model=AIR)) == []


def test_last_value_wins_like_argparse() -> None:
    # MODEL says alltoall, MISC says flex: the trainer keeps flex, so deepep is fine.
    args = TrainArgs(["--moe-token-dispatcher-type", "alltoall", "--moe-enable-deepep",
                      "--moe-token-dispatcher-type", "flex"])
    assert args.text("--moe-token-dispatcher-type") == "flex"
    assert TrainArgs(["--tensor-model-parallel-size=4"]).int("--tensor-model-parallel-size") == 4
    args = TrainArgs(["--sglang-dp-size", "2", "--sglang-data-parallel-size", "4"])
    assert args.first_of(("--sglang-dp-size", "--sglang-data-parallel-size")) == "--sglang-data-parallel-size"


def test_check_args_alone_for_preflight() -> None:
    """check_args needs no plan: preflight can run it on any argv."""
    argv = ["--actor-num-nodes", "1", "--actor-num-gpus-per-node", "8", "--tensor-model-parallel-size", "2",
            "--num-attention-heads", "4", "--num-rollout", "1", "--rollout-batch-size", "8"]
    assert check_args(TrainArgs(argv)) == []
    assert [p.code for p in check_args(TrainArgs(argv + ["--rollout-temperature", "-1"]))] == ["temperature"]


def test_layer_pattern_parser_is_safe_and_exact() -> None:
    assert parse_layer_pattern("[0]*3+[1]*89") == [0] * 3 + [1] * 89
    assert parse_layer_pattern("[0]+2*[1]") == [0, 1, 1]
    assert parse_layer_pattern("[1,0,1]") == [1, 0, 1]
    assert parse_layer_pattern("2") == 2
    for bad in ("3*[1]+[0]", "[0]*3+", "[0]*-1", "[0]*3.5", "[x]*2", "[0]*(10**9)", "[[0]]", "[0]*3+[1]*89; import os",
                "[0]*3 if 1 else 2", "().__class__", "[0]*1000001", "[" * 500):
        with pytest.raises(ValueError):
            parse_layer_pattern(bad)


def test_pipeline_split() -> None:
    assert pipeline_split(92, 4, None, None) == [23] * 4
    assert pipeline_split(46, 4, 10, None) == [10, 12, 12, 12]
    assert pipeline_split(46, 4, None, 10) == [12, 12, 12, 10]
    assert pipeline_split(46, 2, 20, 26) == [20, 26]
    assert isinstance(pipeline_split(46, 2, 20, 20), str)
    assert isinstance(pipeline_split(46, 1, 20, None), str)


def test_require_valid_names_the_first_problem_and_the_count() -> None:
    plan = plan_with({"--rollout-temperature": "0", "--lr": "x"})
    with pytest.raises(LaunchError) as err:
        require_valid(plan)
    assert str(err.value) == (
        "invalid config: --lr 'x' is not a number (+1 more); `glm45-launch validate` lists them all, "
        "--force runs anyway"
    )
    assert [p.code for p in require_valid(plan, force=True)] == ["bad-value", "temperature"]


# --- the CLI -----------------------------------------------------------------------------------


@pytest.fixture
def golden_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    hosts = tmp_path / "hosts"
    hosts.write_text("".join(f"{h} slots=8\n" for h in HOSTS8))
    monkeypatch.setenv("BASE_DIR", "/data/glm")
    monkeypatch.setenv("MLP_WORKER_0_HOST", HEAD)
    monkeypatch.chdir(tmp_path)
    return hosts


def test_validate_command_ok(golden_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--hostfile", str(golden_env), "--no-libs"]) == 0
    out, err = capsys.readouterr()
    assert out == "OK: glm45-bash / glm4.5-355B-A32B: 8 actor node(s) x 8 GPUs, 8 node(s) in the cluster\n"
    assert err == ""


def test_validate_command_rejects(golden_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--hostfile", str(golden_env), "--no-libs", "--exclude", "10.0.0.8",
                 "--format", "json"]) == 1
    out, err = capsys.readouterr()
    data = json.loads(out)
    assert data["ok"] is False and [p["code"] for p in data["problems"]] == ["nodes"]
    assert err == "glm45-launch: error: invalid config: 1 problem(s), listed above\n"


def test_plan_lists_problems_as_warnings(golden_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--hostfile", str(golden_env), "--model", AIR, "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["warnings"][-1].startswith("invalid config: --num-layers 46 / --pipeline-model-parallel-size 4")
    assert main(["plan", "--hostfile", str(golden_env), "--model", AIR]) == 0
    assert "  ! invalid config: --num-layers 46 /" in capsys.readouterr().out
    # the default recipe: only the dashboard exposure warning
    assert main(["plan", "--hostfile", str(golden_env), "--format", "json"]) == 0
    assert [w for w in json.loads(capsys.readouterr().out)["warnings"] if "invalid" in w] == []


HEAVY = ("rich", "ray", "fabric", "paramiko", "invoke", "torch", "megatron", "sglang", "glm45_launch.checks.libs")


def test_plan_stays_light(golden_env: Path) -> None:
    """`plan` imports nothing heavy (rich, Ray, Fabric/Paramiko, torch, the validation
    libraries): its speed is `bench/plan_speed.py`'s to measure (a benchmark, not a timed test)."""
    import subprocess
    import sys

    code = ("import json, sys; from glm45_launch.cli import main; "
            f"rc = main(['plan', '--hostfile', {str(golden_env)!r}]); "
            f"heavy = [m for m in {HEAVY!r} if m in sys.modules]; "
            "print(json.dumps([rc, heavy]), file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert json.loads(proc.stderr.strip().splitlines()[-1]) == [0, []], proc.stderr


# --- with the real libraries -----------------------------------------------------------------


def need(module: str) -> None:
    """Skip without the library; under CI=true fail instead (CI must run these for real)."""
    import importlib.util

    if importlib.util.find_spec(module) is not None:
        return
    reason = f"{module} not installed (pip install 'glm45-launch[validate]'; pip install --no-deps sglang)"
    if IN_CI:
        pytest.fail(reason + " (CI=true: these checks must run)", pytrace=False)
    pytest.skip(reason)


def test_megatron_accepts_the_default_and_shows_the_layout() -> None:
    need("megatron.core")
    from glm45_launch.checks.libs import check_libraries

    report = check_libraries(plan_with(), show_layout=True)
    assert report.problems == []
    assert any(n.startswith("megatron-core 0.16.1: TransformerConfig accepted; 92 layers over 4 pipeline stage(s): "
                            "0-22/23-45/46-68/69-91") for n in report.notes), report.notes
    layout = "\n".join(report.layout)
    assert "world 64 = TP 8 × CP 2 × DP 1 × PP 4 = ETP 1 × EP 16 × expert-DP 1 × PP 4" in layout
    assert "PP stage 0: layers 0-22 (3 dense + 20 MoE)" in layout
    assert "PP stage 3: layers 69-91 (0 dense + 23 MoE)" in layout
    assert "TP         8 group(s) of 8 (within a node): [0-7], [8-15], [16-23], .., [56-63]" in layout
    assert "EP         4 group(s) of 16 (spans 2 nodes): [0-15]" in layout
    assert "PP         16 group(s) of 4 (spans 4 nodes): [0,16,32,48]" in layout


@pytest.mark.parametrize(("changes", "model", "code", "expected"), [
    ({"--num-attention-heads": "100"}, DEFAULT_MODEL, "megatron-config",
     "TransformerConfig rejects the model/parallel args (--num-attention-heads, --tensor-model-parallel-size): "
     "num_attention_heads (100) must be a multiple of tensor_model_parallel_size (8)."),
    ({"--moe-layer-freq": "[0]*3+[1]*88"}, DEFAULT_MODEL, "megatron-layers", "Invalid length of moe_layer_pattern: 91"),
    ({}, AIR, "megatron-layers", "num_layers should be divisible by pipeline_model_parallel_size"),
    ({"--recompute-method": "sometimes"}, DEFAULT_MODEL, "megatron-config", 'must be "block" or "uniform"'),
])
def test_megatron_rejects(changes: dict[str, Any], model: str, code: str, expected: str) -> None:
    need("megatron.core")
    from glm45_launch.checks.libs import check_libraries

    problems = check_libraries(plan_with(changes, model=model)).problems
    assert [p.code for p in problems] == [code], problems
    assert expected in problems[0].message and "\n" not in problems[0].message


def test_megatron_uneven_air_split() -> None:
    need("megatron.core")
    from glm45_launch.checks.libs import check_libraries

    report = check_libraries(plan_with({"--decoder-first-pipeline-num-layers": "10"}, model=AIR), show_layout=True)
    assert report.problems == []
    assert "  PP stage 0: layers 0-9 (1 dense + 9 MoE)" in report.layout
    assert "  PP stage 3: layers 34-45 (0 dense + 12 MoE)" in report.layout


def test_sglang_options_match_the_installed_server_args() -> None:
    need("sglang")
    from glm45_launch.checks.libs import check_libraries, load_sglang_options

    found = load_sglang_options()
    assert not isinstance(found, str), found
    # options that every sglang version of this era has, aliases included
    assert {"--mem-fraction-static", "--tp-size", "--tensor-parallel-size", "--dp-size", "--ep-size",
            "--enable-dp-attention", "--speculative-algorithm"} <= found.options
    report = check_libraries(plan_with({"--sglang-mem-fraction-statc": "0.7", "--sglang-ep-szie": "8"}))
    assert [p.message for p in report.problems] == [
        f"--sglang-mem-fraction-statc is not an option of sglang {found.version} "
        "(no ServerArgs option --mem-fraction-statc); did you mean --sglang-mem-fraction-static?",
        f"--sglang-ep-szie is not an option of sglang {found.version} (no ServerArgs option --ep-szie); "
        "did you mean --sglang-ep-size?",
    ]
    assert check_libraries(plan_with({"--sglang-router-ip": "10.0.0.1"})).problems == []


def test_missing_libraries_are_skipped_not_crashed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing library is one 'skipped:' note (this simulates its absence: find_spec says None)."""
    import importlib.util

    from glm45_launch.checks import libs as validate_libs

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.split(".")[0] in ("megatron", "sglang") else real(name, *a))
    report = validate_libs.check_libraries(plan_with(), show_layout=True)
    assert report.problems == []
    assert report.notes == [
        "skipped: megatron-core not installed (pip install 'glm45-launch[validate]')",
        "skipped: sglang not installed (pip install --no-deps sglang: its source is read, not imported)",
    ]


def test_validate_command_with_libraries(golden_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    need("megatron.core")
    need("sglang")
    assert main(["validate", "--hostfile", str(golden_env), "--show-layout"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK: glm45-bash / glm4.5-355B-A32B")
    assert "TransformerConfig accepted" in out and "11 of 11 --sglang-* option(s) known" in out
    assert "Rank layout (megatron-core RankGenerator" in out


# --- exposure: the Ray dashboard -------------------------------------------------------------

EXPOSED = ("the Ray dashboard on the head listens on {bind}:8265 (all interfaces, as in the bash recipe) and "
           "accepts job submissions without authentication from anyone who can reach it: "
           "--dashboard-host 127.0.0.1 (or the head's address) limits it")


def submit_address(plan: Plan) -> str:
    return next(w for w in plan.submit_argv if w.startswith("--address="))


@pytest.mark.parametrize(("host", "warned", "address"), [
    (None, "0.0.0.0", "--address=http://127.0.0.1:8265"),  # the bash recipe
    ("::", "[::]", "--address=http://127.0.0.1:8265"),
    ("127.0.0.1", None, "--address=http://127.0.0.1:8265"),
    ("localhost", None, "--address=http://127.0.0.1:8265"),
    # bound to one address only, the job server is not on 127.0.0.1: submit there
    (HEAD, None, f"--address=http://{HEAD}:8265"),
    ("::1", None, "--address=http://[::1]:8265"),
])
def test_dashboard_exposure(host: str | None, warned: str | None, address: str) -> None:
    plan = plan_with(dashboard_host=host)
    exposure = [w for w in plan.warnings if "without authentication" in w]
    assert exposure == ([EXPOSED.format(bind=warned)] if warned else [])
    assert submit_address(plan) == address
    bind = f"--dashboard-host={host or '0.0.0.0'}"
    assert bind in plan.step("head-start").commands[0]
    assert all(bind in s.commands[-1] for s in plan.worker_steps)
    redirected = [n for n in plan.notes if n.startswith("--dashboard-host ")]
    assert redirected == ([] if address.endswith("//127.0.0.1:8265") else
                          [f"--dashboard-host {host}: the job is submitted to {address.removeprefix('--address=')} "
                           "(the dashboard does not listen on 127.0.0.1)"])


def test_dashboard_warning_in_plan_output(golden_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--hostfile", str(golden_env)]) == 0
    assert f"  ! {EXPOSED.format(bind='0.0.0.0')}\n" in capsys.readouterr().out
    assert main(["plan", "--hostfile", str(golden_env), "--dashboard-host", "127.0.0.1", "--format", "json"]) == 0
    assert not [w for w in json.loads(capsys.readouterr().out)["warnings"] if "dashboard" in w]


# --- disaggregation (the Air recipe: the actor and the rollout on GPUs of their own) -------------


def air(nodes: int = 8, sets: tuple[str, ...] = (), unsets: tuple[str, ...] = (), extra: tuple[str, ...] = (),
        **variant: Any) -> Plan:
    from glm45_launch.core.overrides import build_overrides

    return build_plan(LaunchSpec(
        hostfile=hostfile(HOSTS8[:nodes] if nodes <= 8 else [f"10.0.1.{i}" for i in range(1, nodes + 1)]),
        head=HEAD if nodes <= 8 else "10.0.1.1", base_dir="/root", variant=Variant(profile="air-p2p", **variant),
        overrides=build_overrides(sets=sets, unsets=unsets, extra_args=extra)))


@pytest.mark.parametrize("variant", [{}, {"transfer_mode": "broadcast"}, {"skip_weight_check": True}])
def test_the_air_recipe_validates(variant: dict[str, Any]) -> None:
    assert check_plan(air(**variant)) == []


def test_disaggregated_gpus_must_add_up_to_the_cluster() -> None:
    few = [p.message for p in check_plan(air(sets=("SGLANG.--rollout-num-gpus=24",)))]
    assert "the actor's 32 GPUs (--actor-num-nodes 4 × --actor-num-gpus-per-node 8) + --rollout-num-gpus 24 = 56, " \
           "fewer than the cluster's 64 (8 node(s) x 8 GPUs)" in few
    many = [p.message for p in check_plan(air(sets=("MISC.--actor-num-nodes=5",)))]
    assert any("= 72, more than the cluster's 64" in m for m in many)


def test_disaggregated_rollout_needs_its_gpus() -> None:
    problems = check_plan(air(unsets=("SGLANG.--rollout-num-gpus",)))
    assert [p.code for p in problems] == ["disaggregation"]
    assert problems[0].message.startswith("without --colocate the rollout runs on GPUs of its own")


def test_p2p_weight_transfer_refuses_colocate() -> None:
    problems = check_plan(air(extra=("--colocate",)))
    assert any(p.flags == ("--update-weight-transfer-mode", "--colocate") for p in problems)
    assert not any("--colocate" in p.flags for p in check_plan(air(transfer_mode="broadcast", extra=("--colocate",)))
                   if p.code == "disaggregation" and "p2p" in p.message)


def test_decoder_last_pipeline_layers_in_the_split() -> None:
    assert check_plan(air()) == []  # 46 layers: 12/12/12 + the last stage's 10
    bad = [p for p in check_plan(air(sets=("PERF.--decoder-last-pipeline-num-layers=9",))) if p.code == "pipeline-split"]
    assert bad and "--decoder-last-pipeline-num-layers 9 do not split evenly over the 3 other stage(s)" in bad[0].message
    assert "--decoder-last-pipeline-num-layers" in bad[0].flags


def test_air_on_16_nodes_doubles_both_sides() -> None:
    plan = air(16)
    assert plan.cluster.total_gpus == 128 and check_plan(plan) == []


@pytest.mark.parametrize("shape", [
    {"extra": ("--colocate",)}, {"transfer_mode": "broadcast", "extra": ("--colocate",)},
    {"transfer_mode": "broadcast", "sets": ("MISC.--colocate=",)},
])
def test_the_air_profile_refuses_colocate(shape: dict[str, Any]) -> None:
    """Issue 9: the Air recipe is disaggregated whatever its transfer mode; --colocate is refused, by name."""
    problems = [p for p in check_plan(air(**shape)) if p.flags == ("--colocate",)]
    assert [p.message for p in problems] == [
        "--colocate: the GLM-4.5-Air recipe is disaggregated (the rollout runs on --rollout-num-gpus GPUs of its own, "
        "not on the actor's); drop --colocate"]
    assert not [p for p in check_plan(plan_with()) if "--colocate" in p.flags]  # the bash recipe colocates


@pytest.mark.parametrize(("args", "header"), [
    ((), "8 actor node(s) x 8 GPUs, 8 node(s)"),
    (("--set", "MISC.--actor-num-nodes=4"), "4 actor node(s) x 8 GPUs, 8 node(s)"),
    (("--extra-args", "--actor-num-gpus-per-node=4"), "8 actor node(s) x 4 GPUs, 8 node(s)"),
    (("--extra-args", "--actor-num-nodes x"), "? actor node(s) x 8 GPUs, 8 node(s)"),
])
def test_validate_names_the_layout_the_trainer_reads(golden_env: Path, capsys: pytest.CaptureFixture[str],
                                                     args: tuple[str, ...], header: str) -> None:
    """The header comes from the plan's typed facts: an override of the actor's size shows, never the recipe's."""
    code = main(["validate", "--hostfile", str(golden_env), "--no-libs", "--format", "json", *args])
    report = json.loads(capsys.readouterr().out)
    assert report["config"] == f"glm45-bash / glm4.5-355B-A32B: {header} in the cluster"
    assert code == (0 if not args else 1) and report["ok"] is (not args)


def test_plan_carries_its_recipe_model_and_actor_as_facts() -> None:
    plan = air()
    assert (plan.recipe_name, plan.model.name, plan.job.actor_nodes, plan.job.actor_gpus_per_node) == \
        ("glm45-air-p2p", AIR, 4, 8)
    moved = air(sets=("MISC.--actor-num-nodes=5",))
    assert moved.job.actor_nodes == 5 and dict(moved.settings)["actor nodes"] == "5"


@pytest.mark.parametrize(("prefix", "actor_gpus", "flag"), [
    (["--actor-num-nodes", "{actor_num_nodes}", "--actor-num-gpus-per-node", "{gpus_per_node}",
      "--num-gpus-per-node", "8", "--colocate"], 4, "--num-gpus-per-node 8 but the nodes have 4 GPU(s)"),
    (["--actor-num-nodes", "{actor_num_nodes}", "--actor-num-gpus-per-node", "8", "--colocate"], 8,
     "--actor-num-gpus-per-node 8 but the nodes have 4 GPU(s)"),
])
def test_validate_checks_a_recipe_file_against_the_hostfile(
        golden_env: Path, capsys: pytest.CaptureFixture[str], prefix: list[str], actor_gpus: int, flag: str) -> None:
    """Issue 9's GPU rules hold for --recipe FILE too: one line naming the flag, exit 1."""
    four = golden_env.parent / "four"
    four.write_text("".join(f"{h} slots=4\n" for h in HOSTS8))
    recipe = golden_env.parent / "r.toml"
    recipe.write_text(f'name = "mine"\ntrain_prefix = {json.dumps(prefix)}\n')
    assert main(["validate", "--hostfile", str(four), "--recipe", str(recipe), "--no-libs"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith(f"problem(s) with mine / glm4.5-355B-A32B: 8 actor node(s) x {actor_gpus} GPUs, "
                           "8 node(s) in the cluster:"), out
    assert [line for line in out if line.startswith(f"  - {flag} (hostfile slots / --gpus-per-node): ")], out


def test_an_alias_given_last_is_the_one_read() -> None:
    """--sglang-dp-size and --sglang-data-parallel-size set one dest: the last given wins, `=` form too."""
    aliases = ("--sglang-dp-size", "--sglang-data-parallel-size")
    args = TrainArgs(["--sglang-dp-size", "2", "--x", "--sglang-data-parallel-size=4", "--y", "a=b"])
    assert args.first_of(aliases) == "--sglang-data-parallel-size" and args.int("--sglang-data-parallel-size") == 4
    assert TrainArgs(["--sglang-data-parallel-size=4", "--sglang-dp-size", "2"]).first_of(aliases) == "--sglang-dp-size"
    assert TrainArgs(["--x", "--sglang-dp-size=z"]).first_of(aliases[1:]) is None


@pytest.mark.parametrize("value", ["0", "-8"])
def test_disaggregated_rollout_gpus_must_be_positive(value: str) -> None:
    problems = [p for p in check_plan(air(sets=(f"SGLANG.--rollout-num-gpus={value}",))) if p.code == "disaggregation"]
    assert [p.message for p in problems] == [f"--rollout-num-gpus must be >= 1, got {value}"]
