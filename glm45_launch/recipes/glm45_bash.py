"""The bash recipe ``run-glm4.5-355B-A32B.sh``, word for word (RECIPE.md §2-§3).

This module is data only. The MODEL group comes from ``models.py``; everything else the
script runs is here, in the order the script runs it.
"""

from __future__ import annotations

from glm45_launch.recipes.base import Recipe

CKPT = (
    "--hf-checkpoint", "{base_dir}/{ckpt_name}",
    "--ref-load", "{base_dir}/{ckpt_name}_torch_dist/",
)

ROLLOUT = (
    "--prompt-data", "{base_dir}/dapo-math-17k/dapo-math-17k.jsonl",
    "--input-key", "prompt", "--label-key", "label", "--apply-chat-template",
    "--rollout-shuffle", "--rm-type", "deepscaler", "--num-rollout", "3000",
    "--rollout-batch-size", "128", "--n-samples-per-prompt", "8",
    "--rollout-max-response-len", "32768", "--rollout-temperature", "1",
    "--over-sampling-batch-size", "256",
    "--dynamic-sampling-filter-path",
    "{framework}.rollout.filter_hub.dynamic_sampling_filters.check_reward_nonzero_std",
    "--num-steps-per-rollout", "4", "--balance-data",
    "--rollout-stop-token-ids", "151329", "151336", "151338",
)

EVAL = (
    "--eval-interval", "20", "--eval-prompt-data", "aime", "{base_dir}/rl_data/aime-2024.jsonl",
    "--n-samples-per-eval-prompt", "8", "--eval-max-response-len", "32768", "--eval-top-p", "1",
)

PERF = (
    "--tensor-model-parallel-size", "8", "--sequence-parallel",
    "--pipeline-model-parallel-size", "4", "--context-parallel-size", "2",
    "--expert-model-parallel-size", "16", "--expert-tensor-parallel-size", "1",
    "--recompute-granularity", "full", "--recompute-method", "uniform",
    "--recompute-num-layers", "1", "--use-dynamic-batch-size", "--max-tokens-per-gpu", "16384",
)

# The advantage estimator is GSPO; --use-kl-loss is commented out in the script (off).
GRPO = (
    "--advantage-estimator", "gspo", "--kl-loss-coef", "0.00", "--kl-loss-type", "low_var_kl",
    "--kl-coef", "0.00", "--entropy-coef", "0.00", "--eps-clip", "1e-4",
    "--eps-clip-high", "2e-4", "--use-tis",
)

OPTIMIZER = (
    "--optimizer", "adam", "--lr", "1e-6", "--lr-decay-style", "constant",
    "--weight-decay", "0.1", "--adam-beta1", "0.9", "--adam-beta2", "0.98",
    "--optimizer-cpu-offload", "--overlap-cpu-optimizer-d2h-h2d",
    "--use-precision-aware-optimizer",
)

WANDB: tuple[str, ...] = ()  # all commented out in the script

SGLANG = (
    "--rollout-num-gpus-per-engine", "32", "--sglang-mem-fraction-static", "0.7",
    "--sglang-enable-dp-attention", "--sglang-dp-size", "4", "--sglang-ep-size", "32",
    "--sglang-enable-dp-lm-head", "--sglang-moe-dense-tp-size", "1",
    "--sglang-speculative-algorithm", "EAGLE", "--sglang-speculative-num-steps", "1",
    "--sglang-speculative-eagle-topk", "1", "--sglang-speculative-num-draft-tokens", "2",
    "--sglang-enable-draft-weights-cpu-backup",
)

# --moe-token-dispatcher-type appears in MODEL (alltoall) and here (flex); the trainer's
# argparse keeps the last one. Parity keeps both, in place.
MISC = (
    "--attention-dropout", "0.0", "--hidden-dropout", "0.0",
    "--accumulate-allreduce-grads-in-fp32", "--attention-softmax-in-fp32",
    "--attention-backend", "flash", "--moe-token-dispatcher-type", "flex", "--moe-enable-deepep",
)

GROUP_ORDER = ("MODEL", "CKPT", "ROLLOUT", "OPTIMIZER", "GRPO", "WANDB", "PERF", "EVAL", "SGLANG", "MISC")

TRAIN_PREFIX = (
    "--actor-num-nodes", "{actor_num_nodes}", "--actor-num-gpus-per-node", "{gpus_per_node}",
    "--colocate",
)

# Written inside single quotes in the script: ${...} reaches Ray literally and Ray expands
# it from each node's own environment when it starts a worker process.
ENV_VARS = (
    ("no_proxy", "localhost,127.0.0.1,0.0.0.0,${MASTER_ADDR}"),
    ("GLOO_SOCKET_IFNAME", "${MLP_SOCKET_IFNAME}"),
    ("TP_SOCKET_IFNAME", "${MLP_SOCKET_IFNAME}"),
    ("MASTER_ADDR", "${MLP_WORKER_0_HOST}"),
    ("PYTHONPATH", "/root/Megatron-LM/"),
    ("NCCL_CUMEM_ENABLE", "0"),
    ("CUDA_DEVICE_MAX_CONNECTIONS", "1"),
    ("NVTE_BWD_LAYERNORM_SM_MARGIN", "20"),
    ("NCCL_IB_TC", "160"),
    ("NCCL_PXN_DISABLE", "0"),
    ("NCCL_IB_GID_INDEX", "3"),
    ("NCCL_NET_GDR_LEVEL", "4"),
    ("NCCL_IB_RETRY_CNT", "7"),
    ("NCCL_IB_TIMEOUT", "32"),
    ("NCCL_IB_QPS_PER_CONNECTION", "8"),
    ("NCCL_P2P_LEVEL", "NVL"),
    ("TORCH_NCCL_AVOID_RECORD_STREAMS", "1"),
    ("NCCL_NVLS_ENABLE", "0"),
    ("NCCL_MIN_CTAS", "4"),
    ("OMPI_MCA_pml", "ob1"),
    ("OMPI_MCA_btl", "^openib"),
    ("OMPI_MCA_routed", "direct"),
    ("OMPI_MCA_routed_radix", "1024"),
    ("OMPI_MCA_plm_rsh_no_tree_spawn", "1"),
    ("OMPI_MCA_oob_tcp_if_include", "${MLP_SOCKET_IFNAME}"),
    ("OMPI_MCA_btl_tcp_if_include", "${MLP_SOCKET_IFNAME}"),
)

HEAD_CLEANUP = (
    ("pkill", "-9", "sglang"),
    ("sleep", "3"),
    ("ray", "stop", "--force"),
    ("pkill", "-9", "ray"),
    ("pkill", "-9", "python"),
    ("sleep", "3"),
    ("pkill", "-9", "ray"),
    ("pkill", "-9", "python"),
)

HEAD_EXPORTS = (
    ("PYTHONUNBUFFERED", "1"),
    ("MASTER_ADDR", "{head}"),
    ("no_proxy", "127.0.0.1,{head}"),
)

HEAD_START = (
    "ray", "start", "--head", "--node-ip-address", "{head}", "--num-gpus", "{gpus_per_node}",
    "--disable-usage-stats", "--dashboard-host={dashboard_host}",
    "--dashboard-port={dashboard_port}",
)

# One ssh argument in the script: these commands joined by " ; " (failures ignored).
WORKER_COMMANDS = (
    ("pkill", "-9", "sglang"),
    ("ray", "stop", "--force"),
    ("pkill", "-9", "python"),
    (
        "ray", "start", "--address={head}:{ray_port}", "--num-gpus", "{gpus_per_node}",
        "--node-ip-address", "{host}", "--disable-usage-stats",
        "--dashboard-host={dashboard_host}", "--dashboard-port={dashboard_port}",
    ),
)

SUBMIT = (
    "ray", "job", "submit", "--address=http://127.0.0.1:{dashboard_port}",
    "--runtime-env-json={runtime_env_json}", "--",
)

ENTRY = ("python3", "{entry}")

DEFAULTS = {
    "actor_num_nodes": "8",
    "ray_port": "6379",
    "dashboard_port": "8265",
    "dashboard_host": "0.0.0.0",
    "entry": "train.py",
}

RECIPE = Recipe(
    name="glm45-bash",
    description="run-glm4.5-355B-A32B.sh: GSPO, TP8/PP4/CP2/EP16, colocated, 8 x 8 GPUs",
    groups={
        "MODEL": (),  # filled from the chosen model
        "CKPT": CKPT, "ROLLOUT": ROLLOUT, "OPTIMIZER": OPTIMIZER, "GRPO": GRPO,
        "WANDB": WANDB, "PERF": PERF, "EVAL": EVAL, "SGLANG": SGLANG, "MISC": MISC,
    },
    group_order=GROUP_ORDER,
    train_prefix=TRAIN_PREFIX,
    entry=ENTRY,
    env_vars=ENV_VARS,
    head_cleanup=HEAD_CLEANUP,
    head_exports=HEAD_EXPORTS,
    head_start=HEAD_START,
    worker_commands=WORKER_COMMANDS,
    submit=SUBMIT,
    defaults=DEFAULTS,
)
