"""Variants of the recipe (RECIPE.md §3, §5): the exact train argv of each, written from the spec."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from upstream_launchers import python_env, python_job

from glm45_launch import LaunchError, LaunchSpec, build_plan, parse_hostfile_text
from glm45_launch.cli.main import main
from glm45_launch.core.flags import last_values
from glm45_launch.core.plan import Plan, Variant

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = json.loads((ROOT / "tests/data/golden/glm45-355b-a32b-8node.json").read_text())
BASE = "/data/glm"
HEAD = "10.0.0.1"

# RECIPE.md §3, word for word.
MODEL_355B = """
--disable-bias-linear --qk-layernorm --group-query-attention --num-attention-heads 96
--num-query-groups 8 --kv-channels 128 --num-layers 92 --hidden-size 5120
--ffn-hidden-size 12288 --add-qkv-bias --normalization RMSNorm --position-embedding-type rope
--rotary-percent 0.5 --swiglu --untie-embeddings-and-output-weights --vocab-size 151552
--rotary-base 1000000 --moe-ffn-hidden-size 1536 --moe-shared-expert-intermediate-size 1536
--moe-router-pre-softmax --moe-router-score-function sigmoid --moe-router-enable-expert-bias
--moe-router-bias-update-rate 0 --moe-router-load-balancing-type seq_aux_loss
--moe-token-dispatcher-type alltoall --moe-router-topk 8 --moe-router-topk-scaling-factor 2.5
--moe-layer-freq [0]*3+[1]*89 --num-experts 160 --moe-grouped-gemm --moe-router-dtype fp32
--moe-permute-fusion --moe-aux-loss-coeff 0
""".split()
MODEL_AIR = """
--disable-bias-linear --group-query-attention --num-attention-heads 96 --num-query-groups 8
--kv-channels 128 --num-layers 46 --hidden-size 4096 --ffn-hidden-size 10944 --add-qkv-bias
--normalization RMSNorm --position-embedding-type rope --rotary-percent 0.5 --swiglu
--untie-embeddings-and-output-weights --vocab-size 151552 --rotary-base 1000000
--moe-ffn-hidden-size 1408 --moe-shared-expert-intermediate-size 1408 --moe-router-pre-softmax
--moe-router-score-function sigmoid --moe-router-enable-expert-bias --moe-router-bias-update-rate 0
--moe-router-load-balancing-type seq_aux_loss --moe-token-dispatcher-type alltoall
--moe-router-topk 8 --moe-layer-freq [0]*1+[1]*45 --num-experts 128 --moe-grouped-gemm
--moe-router-dtype fp32 --moe-permute-fusion --moe-aux-loss-coeff 0
""".split()
CKPT = f"--hf-checkpoint {BASE}/GLM-4.5-355B-A32B --ref-load {BASE}/GLM-4.5-355B-A32B_torch_dist/".split()
ROLLOUT_BASH = f"""
--prompt-data {BASE}/dapo-math-17k/dapo-math-17k.jsonl --input-key prompt
--label-key label --apply-chat-template --rollout-shuffle --rm-type deepscaler
--num-rollout 3000 --rollout-batch-size 128 --n-samples-per-prompt 8
--rollout-max-response-len 32768 --rollout-temperature 1 --over-sampling-batch-size 256
--dynamic-sampling-filter-path miles.rollout.filter_hub.dynamic_sampling_filters.check_reward_nonzero_std
--num-steps-per-rollout 4 --balance-data --rollout-stop-token-ids 151329 151336 151338
""".split()
OPTIMIZER_BASH = """--optimizer adam --lr 1e-6 --lr-decay-style constant --weight-decay 0.1
--adam-beta1 0.9 --adam-beta2 0.98 --optimizer-cpu-offload --overlap-cpu-optimizer-d2h-h2d
--use-precision-aware-optimizer""".split()
GRPO_BASH = """--advantage-estimator gspo --kl-loss-coef 0.00 --kl-loss-type low_var_kl --kl-coef 0.00
--entropy-coef 0.00 --eps-clip 1e-4 --eps-clip-high 2e-4 --use-tis""".split()
GRPO_PY = ["--advantage-estimator", "grpo", *GRPO_BASH[2:]]
EVAL = f"""--eval-interval 20 --eval-prompt-data aime {BASE}/rl_data/aime-2024.jsonl
--n-samples-per-eval-prompt 8 --eval-max-response-len 32768 --eval-top-p 1""".split()
SGLANG_BASH = """--rollout-num-gpus-per-engine 32 --sglang-mem-fraction-static 0.7
--sglang-enable-dp-attention --sglang-dp-size 4 --sglang-ep-size 32
--sglang-enable-dp-lm-head --sglang-moe-dense-tp-size 1
--sglang-speculative-algorithm EAGLE --sglang-speculative-num-steps 1
--sglang-speculative-eagle-topk 1 --sglang-speculative-num-draft-tokens 2
--sglang-enable-draft-weights-cpu-backup""".split()
MTP = SGLANG_BASH[12:]
MISC = """--attention-dropout 0.0 --hidden-dropout 0.0 --accumulate-allreduce-grads-in-fp32
--attention-softmax-in-fp32 --attention-backend flash --moe-token-dispatcher-type flex
--moe-enable-deepep""".split()
RECOMPUTE = """--recompute-granularity full --recompute-method uniform --recompute-num-layers 1
--use-dynamic-batch-size --max-tokens-per-gpu 16384""".split()
MIS_FN = "examples.train_infer_mismatch_helper.mis.compute_mis_weights_with_cp"
MIS_YAML = """use_tis: true
use_rs: {rs}
tis_level: "token"
rs_level: "token"
tis_mode: "truncate"
tis_lower_bound: 0.5
tis_upper_bound: 2.0
rs_lower_bound: null
rs_upper_bound: null
rs_veto_threshold: 1.0e-4
tis_batch_normalize: true
"""
FP8_ENV = ("SGLANG_DEEPEP_NUM_MAX_DISPATCH_TOKENS_PER_RANK", "256")
SPEC_V2_ENV = ("SGLANG_ENABLE_SPEC_V2", "1")


def perf(tp: int, pp: int, cp: int, ep: int) -> list[str]:
    return [
        "--tensor-model-parallel-size", str(tp), "--sequence-parallel", "--pipeline-model-parallel-size", str(pp),
        "--context-parallel-size", str(cp), "--expert-model-parallel-size", str(ep),
        "--expert-tensor-parallel-size", "1", *RECOMPUTE,
    ]


def sglang_py(engine: int, mem: str) -> list[str]:
    """The Python launcher's SGLang group on Blackwell (RECIPE.md §5)."""
    return [
        "--rollout-num-gpus-per-engine", str(engine), "--sglang-mem-fraction-static", mem,
        "--sglang-tp-size", str(engine), "--sglang-chunked-prefill-size", str(engine * 2048),
        "--sglang-attention-backend", "trtllm_mha",
    ]


def hostfile(nodes: int, slots: int | None = None):
    suffix = f" slots={slots}" if slots else ""
    return parse_hostfile_text("".join(f"10.0.0.{i}{suffix}\n" for i in range(1, nodes + 1)), "hosts")


def plan_for(nodes: int = 8, slots: int | None = None, model: str = "glm4.5-355B-A32B", **variant: object) -> Plan:
    spec = LaunchSpec(hostfile=hostfile(nodes, slots), head=HEAD, base_dir=BASE, workdir="/w", model=model,
                      variant=Variant(**variant))  # type: ignore[arg-type]
    return build_plan(spec)


def groups(plan: Plan) -> dict[str, list[str]]:
    return {g: list(w) for g, w in plan.train_groups}


def expected_train(prefix_nodes: int, gpus: int, **groups_: list[str]) -> list[str]:
    base = {"MODEL": MODEL_355B, "CKPT": CKPT, "ROLLOUT": ROLLOUT_BASH, "OPTIMIZER": OPTIMIZER_BASH,
            "GRPO": GRPO_BASH, "WANDB": [], "PERF": perf(8, 4, 2, 16), "EVAL": EVAL, "SGLANG": SGLANG_BASH,
            "MISC": MISC}
    base.update(groups_)
    order = ["MODEL", "CKPT", "ROLLOUT", "OPTIMIZER", "GRPO", "WANDB", "PERF", "EVAL", "SGLANG", "MISC"]
    words = ["python3", "train.py", "--actor-num-nodes", str(prefix_nodes), "--actor-num-gpus-per-node", str(gpus),
             "--colocate"]
    for g in order:
        words += base[g]
    return words


GOLDEN_TRAIN = next(a for a in GOLDEN["invocations"] if a[:3] == ["ray", "job", "submit"])
GOLDEN_TRAIN = GOLDEN_TRAIN[GOLDEN_TRAIN.index("--") + 1 :]


def test_expected_bash_train_argv_is_the_golden() -> None:
    assert expected_train(8, 8) == GOLDEN_TRAIN  # the test's own transcription of §3 is right


@pytest.mark.parametrize("variant", [{}, {"profile": "bash"}, {"hardware": "H100"}, {"mtp": True}])
def test_bash_profile_is_the_golden(variant: dict[str, object]) -> None:
    plan = plan_for(**variant)
    assert plan.train_argv == GOLDEN_TRAIN
    assert len(plan.env_vars) == 26
    assert plan.variant_changes == () and plan.overrides == ()


def py_train(nodes: int, **upstream: object) -> list[str]:
    """The Python launcher's job (issue 9: its own job, no longer the bash recipe reshaped), read from
    upstream by tests/upstream_launchers.py; this file's BASE stands for every directory option."""
    return ["python3", "train.py", *MODEL_355B, *python_job(
        nodes=nodes, local=BASE, data=BASE, out=BASE, run_id="default", **upstream)]  # type: ignore[arg-type]


def test_python_profile_8_nodes_gb300() -> None:
    plan = plan_for(8, profile="python", hardware="GB300")
    assert plan.train_argv == py_train(8, hardware="GB300")
    assert dict(plan.env_vars) == python_env(head=HEAD, nvlink=False)  # no MTP/FP8; NVLink not probed here
    assert ["ray", "start", "--head", "--node-ip-address", HEAD, "--num-gpus", "4"] == plan.invocations()[9][:7]
    assert dict(plan.settings)["GPUs per node"] == "4"


def test_python_profile_gb200_memory_fraction() -> None:
    plan = plan_for(8, profile="python", hardware="GB200")
    assert plan.train_argv == py_train(8, hardware="GB200")
    assert last_values(plan.train_argv)["--sglang-mem-fraction-static"] == ("0.7",)


@pytest.mark.parametrize(("nodes", "layout", "engine"), [
    (1, (4, 1, 1, 4), 4), (2, (4, 1, 1, 4), 8), (4, (4, 1, 1, 4), 16), (5, (4, 4, 2, 8), 20),
    (6, (4, 4, 2, 8), 24), (8, (4, 8, 2, 8), 32), (16, (4, 4, 2, 8), 32),
])
def test_python_profile_parallelism_by_node_count(nodes: int, layout: tuple[int, int, int, int], engine: int) -> None:
    plan = plan_for(nodes, profile="python", hardware="GB200")
    assert plan.train_argv == py_train(nodes)
    assert groups(plan)["PERF"] == perf(*layout)
    assert groups(plan)["SGLANG"] == sglang_py(engine, "0.7")
    debug_warning = any("debug layout" in w for w in plan.warnings)
    assert debug_warning == (nodes <= 4)


def test_python_profile_actor_num_nodes_option_drives_the_layout() -> None:
    spec = LaunchSpec(hostfile=hostfile(8), head=HEAD, base_dir=BASE, actor_num_nodes=4,
                      variant=Variant(profile="python", hardware="GB200"))
    got = groups(build_plan(spec))
    assert got["PERF"] == perf(4, 1, 1, 4) and got["SGLANG"] == sglang_py(16, "0.7")
    assert last_values(build_plan(spec).train_argv)["--actor-num-nodes"] == ("4",)  # in MISC, as upstream


def test_python_profile_mtp() -> None:
    plan = plan_for(8, profile="python", hardware="GB300", mtp=True)
    assert groups(plan)["SGLANG"] == sglang_py(32, "0.8") + MTP
    assert plan.env_vars[-1] == SPEC_V2_ENV and len(plan.env_vars) == 6


def test_python_profile_explicit_no_mtp_is_the_default() -> None:
    assert plan_for(8, profile="python", hardware="GB300", mtp=False).train_argv == \
        plan_for(8, profile="python", hardware="GB300").train_argv


def test_bash_profile_no_mtp_removes_the_five_speculative_flags() -> None:
    plan = plan_for(mtp=False)
    assert plan.train_argv == expected_train(8, 8, SGLANG=SGLANG_BASH[:12])
    assert SPEC_V2_ENV not in plan.env_vars
    removed = [c.flag for c in plan.variant_changes]
    assert removed == [MTP[0], MTP[2], MTP[4], MTP[6], MTP[8]]


def fp8(engine: int) -> list[str]:
    """RECIPE.md §5's FP8 flags with N = engine."""
    n, tp = engine, min(8, engine)
    return [
        "--sglang-ep-size", str(n), "--sglang-enable-dp-attention", "--sglang-dp-size", str(n // tp),
        "--sglang-moe-dense-tp-size", "1", "--sglang-enable-dp-lm-head", "--sglang-moe-runner-backend", "deep_gemm",
        "--sglang-moe-a2a-backend", "deepep", "--sglang-deepep-mode", "low_latency",
        "--sglang-max-running-requests", str(n * 256 // tp), "--sglang-chunked-prefill-size", str(n * 256),
        "--sglang-cuda-graph-max-bs", "256",
    ]


def test_python_profile_rollout_fp8() -> None:
    plan = plan_for(8, profile="python", hardware="GB300", rollout_fp8=True)
    got = groups(plan)
    assert got["CKPT"][:2] == ["--hf-checkpoint", f"{BASE}/GLM-4.5-355B-A32B-FP8"]
    # upstream appends its FP8 flags after its own group: argparse keeps the second chunked prefill (N*256)
    assert got["SGLANG"] == sglang_py(32, "0.8") + fp8(32)
    assert last_values(plan.train_argv)["--sglang-chunked-prefill-size"] == ("8192",)
    assert plan.train_argv == py_train(8, hardware="GB300", fp8=True)
    assert plan.env_vars[-1] == FP8_ENV
    assert any("-FP8" in n and "convert_hf_to_fp8.py" in n for n in plan.notes)


@pytest.mark.parametrize(("nodes", "engine"), [(1, 4), (2, 8), (4, 16)])
def test_fp8_flags_scale_with_the_engine(nodes: int, engine: int) -> None:
    sg = groups(plan_for(nodes, profile="python", hardware="GB200", rollout_fp8=True))["SGLANG"]
    assert last_values(sg) == last_values(sglang_py(engine, "0.7") + fp8(engine))


def test_python_profile_all_options_in_upstream_order() -> None:
    plan = plan_for(8, profile="python", hardware="GB300", rollout_fp8=True, mtp=True, kv_cache_fp8=True,
                    mis=True, r3=True)
    sg = groups(plan)["SGLANG"]
    assert sg == sglang_py(32, "0.8") + fp8(32) + MTP + ["--sglang-kv-cache-dtype", "fp8_e4m3"]
    assert plan.env_vars[-2:] == (FP8_ENV, SPEC_V2_ENV)
    assert groups(plan)["GRPO"] == GRPO_PY + ["--use-rollout-routing-replay"]
    assert groups(plan)["MISC"][-4:] == ["--custom-config-path", f"{BASE}/glm45-launch/mis.yaml",
                                         "--custom-tis-function-path", MIS_FN]


@pytest.mark.parametrize("use_rs", [True, False])
def test_mis_writes_the_yaml_before_the_job_and_passes_it(use_rs: bool) -> None:
    plan = plan_for(mis=True, mis_use_rs=use_rs)
    assert plan.train_argv == expected_train(8, 8, MISC=MISC + [
        "--custom-config-path", f"{BASE}/glm45-launch/mis.yaml", "--custom-tis-function-path", MIS_FN])
    kinds = [s.kind for s in plan.steps]
    assert kinds.index("write-file") == kinds.index("submit") - 1
    step = plan.step("write-file")
    assert step is not None and step.host == HEAD
    assert step.files == ((f"{BASE}/glm45-launch/mis.yaml", MIS_YAML.format(rs="true" if use_rs else "false")),)
    not_submit = [a for a in plan.invocations() if a[:3] != ["ray", "job", "submit"]]
    assert not_submit == [a for a in plan_for().invocations() if a[:3] != ["ray", "job", "submit"]]
    assert plan.to_json()["steps"][kinds.index("write-file")]["files"][0]["content"].startswith("use_tis: true\n")


def test_mis_files_dir() -> None:
    spec = LaunchSpec(hostfile=hostfile(8), head=HEAD, base_dir=BASE, variant=Variant(mis=True, files_dir="/runs/x/"))
    plan = build_plan(spec)
    assert groups(plan)["MISC"][-3] == "/runs/x/mis.yaml"
    assert plan.step("write-file").files[0][0] == "/runs/x/mis.yaml"  # type: ignore[union-attr]


def test_bash_profile_on_gb200_with_rollout_fp8() -> None:
    plan = plan_for(8, hardware="GB200", rollout_fp8=True)
    got = groups(plan)
    # flags the bash group has keep their place (same values for N=32); the rest are appended
    assert got["SGLANG"] == SGLANG_BASH + [
        "--sglang-moe-runner-backend", "deep_gemm", "--sglang-moe-a2a-backend", "deepep",
        "--sglang-deepep-mode", "low_latency", "--sglang-max-running-requests", "1024",
        "--sglang-chunked-prefill-size", "8192", "--sglang-cuda-graph-max-bs", "256",
    ]
    assert plan.train_argv[2:6] == ["--actor-num-nodes", "8", "--actor-num-gpus-per-node", "4"]


def test_air_model_with_python_profile() -> None:
    plan = plan_for(8, model="glm4.5-106B-A12B", profile="python", hardware="GB200")
    got = groups(plan)
    assert got["MODEL"] == MODEL_AIR
    assert got["CKPT"][:4] == [CKPT[0], f"{BASE}/GLM-4.5-Air", CKPT[2], f"{BASE}/GLM-4.5-Air_torch_dist"]


def test_hardware_sets_gpus_per_node() -> None:
    assert plan_for(8, hardware="GB200").gpus_per_node == 4
    assert plan_for(8, slots=4, hardware="GB300").gpus_per_node == 4
    assert plan_for(8, slots=8, hardware="H100").gpus_per_node == 8


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"profile": "python"}, "H100 is not yet supported in this script"),
    ({"profile": "python", "hardware": "H100"}, "Blackwell-only"),
    ({"rollout_fp8": True}, "--rollout-fp8"),
    ({"rollout_fp8": True, "hardware": "H100"}, "give --hardware GB200 or GB300"),
    ({"hardware": "GB200", "slots": 8}, "hosts:1: slots=8 but --hardware GB200 has 4 GPUs per node"),
    ({"mis_use_rs": False}, "--mis-no-rs"),
    ({"profile": "ruby"}, "unknown profile"),
    ({"hardware": "TPU"}, "unknown hardware"),
])
def test_invalid_combinations(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(LaunchError, match=message.replace("(", r"\(")):
        plan_for(**kwargs)  # type: ignore[arg-type]


def test_gpus_per_node_option_contradicting_hardware() -> None:
    spec = LaunchSpec(hostfile=hostfile(8), head=HEAD, base_dir=BASE, gpus_per_node=8,
                      variant=Variant(hardware="GB300"))
    with pytest.raises(LaunchError, match="--gpus-per-node 8 contradicts --hardware GB300"):
        build_plan(spec)


def _cli(capsys: pytest.CaptureFixture[str], tmp_path: Path, *args: str) -> tuple[int, str, str]:
    hosts = tmp_path / "hosts"
    hosts.write_text("".join(f"10.0.0.{i}\n" for i in range(1, 9)))
    code = main(["plan", "--hostfile", str(hosts), "--head", HEAD, "--base-dir", BASE, *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_variant_options(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = _cli(capsys, tmp_path, "--profile", "python", "--hardware", "GB300", "--mtp", "--mis",
                        "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert data["train_args"]["SGLANG"] == sglang_py(32, "0.8") + MTP
    assert data["settings"]["variant"] == "profile python, GB300, mtp, mis"
    # The differences from the Python launcher's own default job (no longer from the bash recipe).
    assert {"group": "SGLANG", "flag": "--sglang-speculative-algorithm", "action": "added",
            "new": ["EAGLE"]} in data["variant_changes"]
    code, out, _ = _cli(capsys, tmp_path, "--no-mtp")
    assert code == 0 and "Variant (differences from recipe glm45-bash)" in out
    assert "SGLANG --sglang-speculative-algorithm: removed (was EAGLE)" in out


def test_cli_refuses_python_profile_on_h100(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = _cli(capsys, tmp_path, "--profile", "python", "--hardware", "H100")
    assert code == 2 and out == ""
    assert err.strip() == (
        "glm45-launch: error: --profile python with --hardware H100: H100 is not yet supported in this "
        "script (upstream's train step is Blackwell-only); give --hardware GB200 or GB300"
    )
