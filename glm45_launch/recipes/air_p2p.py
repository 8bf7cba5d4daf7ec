"""The Air recipe ``examples/p2p_weight_transfer/run-glm4.5-air-8node-profile.sh`` (RECIPE.md §5b).

Data only, read from miles at revision 04b61f31a (facts carried over, not code). Upstream it
is a per-node script (``script MODE NODE_RANK HEAD_IP`` on each of 8 nodes); here one command
on the head runs what rank 0 runs, and the fan-out runs what the other ranks run. GLM-4.5-Air
disaggregated: the actor takes half the nodes (4 of 8, no ``--colocate``), rollout the other
GPUs in engines of 8; layout TP1 PP4 CP1 EP8 ETP1 with the last stage 10 of the 46 layers.

``{base_dir}`` stands for ``/root`` of the script: ``--base-dir /root`` gives its paths
(``CKPT_SAVE_DIR`` defaults to ``/root`` there too).
"""

from __future__ import annotations

from dataclasses import dataclass

from glm45_launch.recipes.base import Argv, Recipe

MODEL = "glm4.5-106B-A12B"  # the recipe's model (MODEL_TYPE)

CKPT = (
    "--hf-checkpoint", "{base_dir}/models/{ckpt_name}",
    "--ref-load", "{base_dir}/{ckpt_name}_torch_dist",
)

ROLLOUT = (
    "--prompt-data", "{base_dir}/datasets/dapo-math-17k/dapo-math-17k.jsonl", "--input-key", "prompt",
    "--label-key", "label", "--apply-chat-template", "--rollout-shuffle", "--rm-type", "deepscaler",
    "--num-rollout", "13", "--rollout-batch-size", "4", "--n-samples-per-prompt", "4",
    "--rollout-max-response-len", "100", "--rollout-temperature", "0.8", "--global-batch-size", "16",
    "--balance-data",
)

EVAL = (
    "--eval-prompt-data", "aime", "{base_dir}/datasets/aime-2024/aime-2024.jsonl",
    "--n-samples-per-eval-prompt", "16", "--eval-max-response-len", "16384", "--eval-top-p", "0.7",
)

OPTIMIZER = (
    "--optimizer", "adam", "--lr", "1e-6", "--lr-decay-style", "constant", "--weight-decay", "0.1",
    "--adam-beta1", "0.9", "--adam-beta2", "0.98", "--optimizer-cpu-offload",
    "--overlap-cpu-optimizer-d2h-h2d", "--use-precision-aware-optimizer",
)

GRPO = (
    "--advantage-estimator", "gspo", "--kl-loss-coef", "0.00", "--kl-loss-type", "low_var_kl",
    "--entropy-coef", "0.00", "--eps-clip", "4e-4",
)

PERF = (
    "--tensor-model-parallel-size", "1", "--pipeline-model-parallel-size", "4",
    "--context-parallel-size", "1", "--expert-model-parallel-size", "8",
    "--expert-tensor-parallel-size", "1", "--decoder-last-pipeline-num-layers", "10",
    "--recompute-granularity", "full", "--recompute-method", "uniform", "--recompute-num-layers", "1",
    "--use-dynamic-batch-size", "--max-tokens-per-gpu", "2048",
)

# Engines of 8 GPUs over the rollout's GPUs (32 on the 8 x 8 rack: NUM_ROLLOUT_GPUS).
SGLANG = (
    "--rollout-num-gpus-per-engine", "8", "--rollout-num-gpus", "{rollout_num_gpus}",
    "--sglang-mem-fraction-static", "0.8", "--sglang-ep-size", "8",
    "--sglang-cuda-graph-bs", "1", "2", "4", "8", "16",
    "--sglang-enable-dp-attention", "--sglang-enable-dp-lm-head",
)

MISC = (
    "--attention-dropout", "0.0", "--hidden-dropout", "0.0", "--accumulate-allreduce-grads-in-fp32",
    "--attention-softmax-in-fp32", "--attention-backend", "flash",
    "--actor-num-nodes", "{actor_num_nodes}", "--actor-num-gpus-per-node", "{gpus_per_node}",
)  # then --update-weight-buffer-size, the weight check, the transfer mode


@dataclass(frozen=True)
class Transfer:
    """What a weight-transfer ``MODE`` adds: to SGLANG, and to MISC after the buffer size."""

    sglang: Argv
    misc: Argv
    buffer_bytes: int | None  # fixed buffer; None: --bucket-size-gb x 2^30


GIB = 1024 * 1024 * 1024
DEFAULT_BUCKET_GB = 1.0  # BUCKET_SIZE_GB
TRANSFERS: dict[str, Transfer] = {
    "p2p": Transfer(
        sglang=("--sglang-remote-instance-weight-loader-start-seed-via-transfer-engine",),
        misc=("--update-weight-transfer-mode", "p2p"), buffer_bytes=None,
    ),
    "broadcast": Transfer(sglang=(), misc=("--update-weight-transfer-mode", "broadcast"), buffer_bytes=4 * GIB),
}


@dataclass(frozen=True)
class WeightLoad:
    """SKIP_VALIDATION=0 (check) or 1 (skip): SGLang's load flags, and the MISC check."""

    sglang: Argv
    misc: Argv


WEIGHT_LOAD = {
    "check": WeightLoad(
        sglang=("--sglang-model-loader-extra-config", '{"enable_multithread_load":true,"num_threads":8}'),
        misc=("--check-weight-update-equal",),
    ),
    "skip": WeightLoad(sglang=("--sglang-load-format", "dummy"), misc=()),
}

GROUP_ORDER = ("MODEL", "CKPT", "ROLLOUT", "EVAL", "OPTIMIZER", "GRPO", "WANDB", "PERF", "SGLANG", "MISC")

# The JSON is double-quoted in the script: bash expands MILES_LOG_DIR (empty unless set) there.
ENV_VARS = (
    ("MC_TRANSFER_TIMEOUT", "300"),
    ("RAY_DEBUG", "1"),
    ("PYTHONPATH", "/root/Megatron-LM/"),
    ("CUDA_DEVICE_MAX_CONNECTIONS", "1"),
    ("NCCL_NVLS_ENABLE", "0"),  # ENABLE_NCCL_NVLS=0
    ("MODEL_ARGS_ROTARY_BASE", "1000000"),
    ("MILES_LOG_DIR", ""),
)

# Every node, each command `|| true`.
CLEANUP = (
    ("pkill", "-9", "sglang"),
    ("sleep", "3"),
    ("ray", "stop", "--force"),
    ("pkill", "-9", "ray"),
    ("pkill", "-9", "python"),
    ("sleep", "3"),
    ("pkill", "-9", "ray"),
    ("pkill", "-9", "python"),
    ("pkill", "-9", "redis"),
)

HEAD_EXPORTS = (("PYTHONBUFFERED", "16"), ("MODEL_ARGS_ROTARY_BASE", "1000000"))  # exported at the top
RAY_ENV = (("RAY_memory_monitor_refresh_ms", "0"),)  # `RAY_memory_monitor_refresh_ms=0 ray start ...`

HEAD_START = (
    "ray", "start", "--head", "--node-ip-address", "{head}", "--num-gpus", "{gpus_per_node}",
    "--disable-usage-stats", "--dashboard-host={dashboard_host}", "--dashboard-port={dashboard_port}",
)

# Ranks 1..7: the cleanup, then (instead of the blind `sleep 20`: the fan-out waits for the
# head's GCS) the join; the script then waits for the head's done file (see --hold-workers).
WORKER_COMMANDS = (
    *CLEANUP,
    ("ray", "start", "--address={head}:{ray_port}", "--num-gpus", "{gpus_per_node}", "--disable-usage-stats"),
)

SUBMIT = (
    "ray", "job", "submit", "--address=http://127.0.0.1:{dashboard_port}",
    "--runtime-env-json={runtime_env_json}", "--",
)

DEFAULTS = {
    "actor_num_nodes": "4",  # half the nodes (NUM_TRAIN_GPUS / GPUS_PER_NODE), set by the plan
    "ray_port": "6379",
    "dashboard_port": "8265",
    "dashboard_host": "0.0.0.0",
    "entry": "train.py",
    "rollout_num_gpus": "32",  # the GPUs the actor leaves, set by the plan
}

RECIPE = Recipe(
    name="glm45-air-p2p",
    description="run-glm4.5-air-8node-profile.sh: GLM-4.5-Air, 4 actor + 4 rollout nodes, P2P/broadcast weights",
    groups={
        "MODEL": (), "CKPT": CKPT, "ROLLOUT": ROLLOUT, "EVAL": EVAL, "OPTIMIZER": OPTIMIZER, "GRPO": GRPO,
        "WANDB": (), "PERF": PERF, "SGLANG": SGLANG, "MISC": MISC,
    },  # the transfer mode's and the weight check's flags are added by core/profiles.py
    group_order=GROUP_ORDER,
    train_prefix=(),
    entry=("python3", "{entry}"),
    env_vars=ENV_VARS,
    head_cleanup=CLEANUP,
    head_exports=HEAD_EXPORTS,
    head_start=HEAD_START,
    worker_commands=WORKER_COMMANDS,
    submit=SUBMIT,
    defaults=DEFAULTS,
    head_start_env=RAY_ENV,
    worker_env=RAY_ENV,
)
