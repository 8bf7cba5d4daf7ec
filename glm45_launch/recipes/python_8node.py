"""miles' ``scripts/run_glm45_355b_a32b_8node.py``: the bash recipe's Python successor (data only).

Read from upstream HEAD (radixark/miles 31f1ca961; the script as commit 2b2ef6f8b made it, with its
``execute_train`` and ``ssh_start_ray_workers`` from ``miles/utils/external_utils/command_utils.py``):
facts carried over, not code. The job is the bash recipe's (GSPO, TP8/PP4/CP2/EP16, MTP, DeepEP);
what it runs differs from the ``.sh``: the cleanup kills ``miles`` and ``redis`` instead of
``python``, ``ray start`` has no dashboard flags, the runtime env is upstream's ``execute_train``
env with the rack's tuning merged in, and ``--num-gpus-per-node`` is passed. ``core/profiles.py``
assembles the job from these pieces; ``{model_dir}``, ``{data_dir}``, ``{output_dir}``,
``{run_id}`` and ``{num_rollout}`` are upstream's options of the same names.
"""

from __future__ import annotations

from glm45_launch.recipes import glm45_bash as sh
from glm45_launch.recipes import python_launcher as py
from glm45_launch.recipes.base import Recipe

CKPT = (
    "--hf-checkpoint", "{model_dir}/{ckpt_name}",
    "--ref-load", "{model_dir}/{ckpt_name}_torch_dist",
)
SAVE = ("--save", "{output_dir}/checkpoints", "--save-interval", "20")  # --save: the .sh never saved

ROLLOUT = (
    "--prompt-data", "{data_dir}/dapo-math-17k/dapo-math-17k.jsonl",
    "--input-key", "prompt", "--label-key", "label", "--apply-chat-template",
    "--rollout-shuffle", "--rm-type", "deepscaler", "--num-rollout", "{num_rollout}",
    "--rollout-batch-size", "128", "--n-samples-per-prompt", "8",
    "--rollout-max-response-len", "32768", "--rollout-temperature", "1",
    "--over-sampling-batch-size", "256",
    "--dynamic-sampling-filter-path", "miles.rollout.filter_hub.dynamic_sampling_filters.check_reward_nonzero_std",
    "--num-steps-per-rollout", "4", "--balance-data",
    "--rollout-stop-token-ids", "151329", "151336", "151338",
)

# The .sh's, word for word.
OPTIMIZER, GRPO = sh.OPTIMIZER, sh.GRPO  # upstream's optimizer_args, gspo_args

# Only when WANDB_API_KEY is set; the project is "miles-" + the script's file name.
WANDB = (
    "--use-wandb", "--wandb-project", "miles-run_glm45_355b_a32b_8node", "--wandb-group", "{run_id}",
    "--wandb-key", "{wandb_key}", "--disable-wandb-random-suffix",
)

PERF, SGLANG = sh.PERF, sh.SGLANG

EVAL = (
    "--eval-interval", "20", "--eval-prompt-data", "aime", "{data_dir}/aime-2024/aime-2024.jsonl",
    "--n-samples-per-eval-prompt", "8", "--eval-max-response-len", "32768", "--eval-top-p", "1",
)

MISC = sh.MISC + (
    "--actor-num-nodes", "{actor_num_nodes}", "--actor-num-gpus-per-node", "{gpus_per_node}",
    "--num-gpus-per-node", "{gpus_per_node}", "--colocate",
)

GROUP_ORDER = sh.GROUP_ORDER

# --- the runtime env: execute_train's keys first, in its order.

# The NVLink probe's value is replaced by the rack's NCCL_NVLS_ENABLE=0 (CLUSTER_ENV) in place.
EXECUTE_TRAIN_ENV = (
    ("PYTHONUNBUFFERED", "1"),
    ("CUDA_DEVICE_MAX_CONNECTIONS", "1"),
    ("NCCL_NVLS_ENABLE", "0"),
    ("no_proxy", "127.0.0.1,{head}"),
    ("MASTER_ADDR", "{head}"),
)
# Copied from the launcher's environment when set, right after NCCL_NVLS_ENABLE.
FORWARDED_ENV = ("NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME", "NCCL_DEBUG", "NCCL_DEBUG_FILE")
FORWARDED_AFTER = "NCCL_NVLS_ENABLE"
CUDA_COREDUMP_ENV = py.CUDA_COREDUMP_ENV  # --cuda-core-dump, after MASTER_ADDR
# The rack's tuning (_cluster_env_vars): the .sh's values but its ${...} keys (the socket ones are
# SOCKET_IFNAME_ENV below), PYTHONPATH and CUDA_DEVICE_MAX_CONNECTIONS (execute_train sets those);
# a key already set keeps its place.
CLUSTER_ENV = (("no_proxy", "localhost,127.0.0.1,0.0.0.0,{head}"),) + tuple(
    (k, v) for k, v in sh.ENV_VARS if "${" not in v and k not in ("PYTHONPATH", "CUDA_DEVICE_MAX_CONNECTIONS"))
# Set to MLP_SOCKET_IFNAME when it is set; left out when it is not (an empty interface name pins
# every socket to nothing).
SOCKET_IFNAME_ENV = ("GLOO_SOCKET_IFNAME", "TP_SOCKET_IFNAME", "OMPI_MCA_oob_tcp_if_include",
                     "OMPI_MCA_btl_tcp_if_include")
# Last: the checkout, Megatron, then the launcher's own PYTHONPATH, each entry once.
PYTHONPATH_ENV = "PYTHONPATH"

# --- the commands around the job (execute_train's, ssh_start_ray_workers')

CLEANUP = (*py.CLEANUP, ("true",))
HEAD_START = py.HEAD_START
HEAD_START_ENV = (("PYTHONUNBUFFERED", "1"),)

# ssh root@WORKER "...": one ssh argument, these commands joined by " ; ".
WORKER_COMMANDS = (
    ("pkill", "-9", "sglang"),
    ("ray", "stop", "--force"),
    ("pkill", "-9", "miles"),
    (
        "ray", "start", "--address={head}:{ray_port}", "--num-gpus", "{gpus_per_node}",
        "--node-ip-address", "{host}", "--disable-usage-stats",
    ),
)

SUBMIT = py.SUBMIT
SUBMIT_ENV = (("no_proxy", "127.0.0.1"), ("PYTHONUNBUFFERED", "1"))

# train.py by its absolute path in the checkout, as upstream runs it.
ENTRY = ("python3", "{entry_path}")

DEFAULTS = {  # upstream's defaults
    "actor_num_nodes": "8",
    "ray_port": "6379",
    "dashboard_port": "8265",
    "dashboard_host": "127.0.0.1",  # Ray's default: the head start passes no --dashboard-host
    "entry": "train.py",
    "model_dir": "/root/models",
    "data_dir": "/root/datasets",
    "output_dir": "/root/shared_data",
    "num_rollout": "3000",
}

RECIPE = Recipe(
    name="glm45-python-8node",
    description="miles scripts/run_glm45_355b_a32b_8node.py: the bash recipe's job, upstream's launcher env",
    groups={
        "MODEL": (),  # filled from the chosen model
        "CKPT": CKPT, "ROLLOUT": ROLLOUT, "OPTIMIZER": OPTIMIZER, "GRPO": GRPO, "WANDB": (),
        "PERF": PERF, "EVAL": EVAL, "SGLANG": SGLANG, "MISC": MISC,
    },  # --save and wandb are added by core/profiles.py
    group_order=GROUP_ORDER,
    train_prefix=(),  # --actor-num-nodes ... are in MISC
    entry=ENTRY,
    env_vars=EXECUTE_TRAIN_ENV,  # the rest is added by core/profiles.py
    head_cleanup=CLEANUP,
    head_exports=(),
    head_start=HEAD_START,
    worker_commands=WORKER_COMMANDS,
    submit=SUBMIT,
    defaults=DEFAULTS,
    head_start_env=HEAD_START_ENV,
    submit_env=SUBMIT_ENV,
)
