"""The job of miles' Python launcher ``scripts/run_glm45_355b_a32b.py`` (RECIPE.md §5, §5a).

Data only, read from upstream at revision 04b61f31a (facts carried over, not code): the
base groups of its ``train`` step in the order it concatenates them, the pieces its knobs
add, its runtime env, cleanup and head command. ``core/profiles.py`` assembles the job from
these pieces the way upstream's ``_execute_train`` does, and ``core/prepare_plan.py`` its
preparation (``_prepare_download``, ``_convert_hf_to_fp8``, ``_prepare_megatron_ckpt``,
``_prepare_cp``). ``{model_dir}``, ``{data_dir}``, ``{model_local_dir}``, ``{output_dir}``,
``{run_id}`` and ``{megatron_path}`` are its options of the same names.
"""

from __future__ import annotations

from dataclasses import dataclass

from glm45_launch.recipes.base import Argv, Recipe

# --- train.py arguments, by group (upstream's ckpt/rollout/optimizer/grpo/wandb/perf/eval/sglang/misc)

CKPT = (
    "--hf-checkpoint", "{model_local_dir}/{ckpt_name}",
    "--ref-load", "{model_local_dir}/{ckpt_name}_torch_dist",
    "--load", "{output_dir}/{run_id}/checkpoints", "--save", "{output_dir}/{run_id}/checkpoints",
)
# --save-interval and --save-retain-interval, by --mode.
SAVE_INTERVAL = {"normal": "10", "debug-minimal": "2"}

ROLLOUT = (
    "--label-key", "label", "--apply-chat-template", "--rollout-shuffle", "--rm-type", "math",
    "--num-rollout", "3000", "--rollout-batch-size", "32", "--n-samples-per-prompt", "8",
    "--rollout-temperature", "1", "--num-steps-per-rollout", "1", "--balance-data",
    "--rollout-stop-token-ids", "151329", "151336", "151338",
)
# --dynamic-sampling (not in debug-minimal mode): the bash recipe's two flags.
DYNAMIC_SAMPLING = (
    "--over-sampling-batch-size", "256",
    "--dynamic-sampling-filter-path",
    "{framework}.rollout.filter_hub.dynamic_sampling_filters.check_reward_nonzero_std",
)

OPTIMIZER = (
    "--optimizer", "adam", "--lr", "1e-6", "--lr-decay-style", "constant", "--weight-decay", "0.1",
    "--adam-beta1", "0.9", "--adam-beta2", "0.98",
)  # the three CPU-Adam flags are commented out upstream

GRPO = (
    "--advantage-estimator", "grpo", "--kl-loss-coef", "0.00", "--kl-loss-type", "low_var_kl",
    "--kl-coef", "0.00", "--entropy-coef", "0.00", "--eps-clip", "1e-4", "--eps-clip-high", "2e-4",
    "--use-tis",
)

# Only when WANDB_API_KEY is set; the project is "miles-" + the script's file name.
WANDB = (
    "--use-wandb", "--wandb-project", "miles-run_glm45_355b_a32b", "--wandb-group", "{run_id}",
    "--wandb-key", "{wandb_key}", "--disable-wandb-random-suffix",
)

# (first node count it applies to, TP, PP, CP, EP): <= 4 nodes is upstream's debug layout
# ("not really runnable, useful for --debug-rollout-only"), 8 nodes PP 8, any other count PP 4.
PERF_TABLE: tuple[tuple[str, int, int, int, int], ...] = (
    ("<=4", 4, 1, 1, 4),
    ("==8", 4, 8, 2, 8),
    ("other", 4, 4, 2, 8),
)
PERF_ETP = 1
PERF_TAIL = (
    "--recompute-granularity", "full", "--recompute-method", "uniform", "--recompute-num-layers", "1",
    "--use-dynamic-batch-size", "--max-tokens-per-gpu", "16384",
)

# The eval schedule, dropped by --no-eval and --mode debug-minimal (the eval data stays).
EVAL_SCHEDULE = ("--eval-interval", "20", "--eval-top-p", "1")


@dataclass(frozen=True)
class Task:
    """What ``--task`` adds to ROLLOUT and EVAL."""

    prompt: Argv  # --prompt-data ... --input-key ...
    response_len: dict[str, str]  # --rollout-max-response-len by --mode
    eval: Argv


TASKS: dict[str, Task] = {
    "dapo-aime": Task(
        prompt=("--prompt-data", "{data_dir}/dapo-math-17k/dapo-math-17k.jsonl", "--input-key", "prompt"),
        response_len={"normal": "8192", "debug-minimal": "100"},
        eval=("--eval-prompt-data", "aime", "{data_dir}/aime-2024/aime-2024.jsonl",
              "--n-samples-per-eval-prompt", "8", "--eval-max-response-len", "8192"),
    ),
    "gsm8k": Task(  # deliberately short responses for this easy task
        prompt=("--prompt-data", "{data_dir}/gsm8k/train.parquet", "--input-key", "messages"),
        response_len={"normal": "256", "debug-minimal": "256"},
        eval=("--eval-prompt-data", "gsm8k", "{data_dir}/gsm8k/test.parquet",
              "--n-samples-per-eval-prompt", "1", "--eval-max-response-len", "256"),
    ),
}

# SGLang: one engine of min(32, GPUs) GPUs, TP = engine, chunked prefill = engine x 2048.
SGLANG_MAX_ENGINE_GPUS = 32
SGLANG_CHUNK_PER_GPU = 2048
SGLANG_MEM_FRACTION = {"GB300": "0.8"}  # any other hardware: the default
SGLANG_MEM_FRACTION_DEFAULT = "0.7"
BLACKWELL_ATTENTION = ("--sglang-attention-backend", "trtllm_mha")

MISC = (
    "--attention-dropout", "0.0", "--hidden-dropout", "0.0", "--accumulate-allreduce-grads-in-fp32",
    "--attention-softmax-in-fp32", "--attention-backend", "flash",
    "--update-weight-buffer-size", "2147483648",  # 2 GiB ("4GB will lead to oom")
    "--actor-num-nodes", "{actor_num_nodes}", "--actor-num-gpus-per-node", "{gpus_per_node}",
    "--num-gpus-per-node", "{gpus_per_node}", "--colocate", "--use-fault-tolerance",
    "--dump-details", "{output_dir}/{run_id}/dump_details", "--disable-weights-backuper",
    "--router-health-success-threshold", "1", "--router-health-check-interval-secs", "15",
)
# --benchmark, appended to MISC (argparse keeps these last values); the memory fraction by hardware.
BENCHMARK = (
    "--custom-generate-function-path", "{framework}.rollout.generate_hub.benchmarkers.generate_with_random_osl",
    "--rollout-batch-size", "128", "--n-samples-per-prompt", "8", "--use-distributed-post",
    "--router-policy", "round_robin", "--sglang-server-concurrency", "10000",
)
BENCHMARK_MEM_FRACTION = {"GB300": "0.8"}
BENCHMARK_MEM_FRACTION_DEFAULT = "0.75"

GROUP_ORDER = ("MODEL", "CKPT", "ROLLOUT", "OPTIMIZER", "GRPO", "WANDB", "PERF", "EVAL", "SGLANG", "MISC")

# --- runtime env, in upstream's order; NCCL_NVLS_ENABLE follows the head's NVLink probe.

ENV_VARS = (
    ("PYTHONPATH", "{megatron_path}"),
    ("CUDA_DEVICE_MAX_CONNECTIONS", "1"),
    ("NCCL_NVLS_ENABLE", "0"),
    ("no_proxy", "127.0.0.1,{head}"),
    ("MASTER_ADDR", "{head}"),
)
NVLS_ENV = "NCCL_NVLS_ENABLE"
# Copied from the launcher's environment when set, right after NCCL_NVLS_ENABLE.
FORWARDED_ENV = ("NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME")
FORWARDED_AFTER = NVLS_ENV
# --cuda-core-dump, right after MASTER_ADDR (before the SGLang variants' env).
CUDA_COREDUMP_ENV = (
    ("CUDA_ENABLE_COREDUMP_ON_EXCEPTION", "1"),
    ("CUDA_COREDUMP_SHOW_PROGRESS", "1"),
    ("CUDA_COREDUMP_GENERATION_FLAGS", "skip_nonrelocated_elf_images,skip_global_memory,skip_shared_memory,"
     "skip_local_memory,skip_constbank_memory"),
    ("CUDA_COREDUMP_FILE", "{output_dir}/cuda_coredump_%h.%p.%t"),
)

# --- the commands around the job

# `pkill -9 python` is commented out upstream ("o/w kill the parent script"): it kills miles.
CLEANUP = (
    ("pkill", "-9", "sglang"),
    ("sleep", "3"),
    ("ray", "stop", "--force"),
    ("pkill", "-9", "ray"),
    ("pkill", "-9", "miles"),
    ("sleep", "3"),
    ("pkill", "-9", "ray"),
    ("pkill", "-9", "miles"),
    ("pkill", "-9", "redis"),
)

# Exported before `ray start --head` and `ray job submit` (upstream's spelling: "will prevent
# ray from buffering stdout/stderr"); the submit also exports no_proxy=127.0.0.1.
HEAD_EXPORTS = (("PYTHONBUFFERED", "16"),)
SUBMIT_ENV = (("no_proxy", "127.0.0.1"),)

# No dashboard flags: Ray's default dashboard (127.0.0.1:8265), where the submit goes.
HEAD_START = (
    "ray", "start", "--head", "--node-ip-address", "{head}", "--num-gpus", "{gpus_per_node}",
    "--disable-usage-stats",
)

# Upstream starts no workers (it expects them in the cluster); glm45-launch's fan-out runs this
# on each one: the cleanup's kills (no blind sleeps), then the head's `ray start` joined.
WORKER_COMMANDS = (
    ("pkill", "-9", "sglang"),
    ("ray", "stop", "--force"),
    ("pkill", "-9", "ray"),
    ("pkill", "-9", "miles"),
    ("pkill", "-9", "redis"),
    (
        "ray", "start", "--address={head}:{ray_port}", "--num-gpus", "{gpus_per_node}",
        "--node-ip-address", "{host}", "--disable-usage-stats",
    ),
)

SUBMIT = (
    "ray", "job", "submit", "--address=http://127.0.0.1:{dashboard_port}",
    "--runtime-env-json={runtime_env_json}", "--",
)

DEFAULTS = {
    "actor_num_nodes": "1",  # the cluster's node count (upstream's --num-nodes), set by the plan
    "ray_port": "6379",
    "dashboard_port": "8265",
    "dashboard_host": "127.0.0.1",  # Ray's default: the head start passes no --dashboard-host
    "entry": "train.py",
}

RECIPE = Recipe(
    name="glm45-python",
    description="miles scripts/run_glm45_355b_a32b.py: GRPO, parallelism by node count, colocated, Blackwell",
    groups={
        "MODEL": (),  # filled from the chosen model
        "CKPT": CKPT, "ROLLOUT": ROLLOUT, "OPTIMIZER": OPTIMIZER, "GRPO": GRPO, "WANDB": (),
        "PERF": PERF_TAIL, "EVAL": (), "SGLANG": (), "MISC": MISC,
    },  # the knob-dependent parts are added by core/profiles.py
    group_order=GROUP_ORDER,
    train_prefix=(),  # --actor-num-nodes ... are in MISC
    entry=("python3", "{entry}"),
    env_vars=ENV_VARS,
    head_cleanup=CLEANUP,
    head_exports=HEAD_EXPORTS,
    head_start=HEAD_START,
    worker_commands=WORKER_COMMANDS,
    submit=SUBMIT,
    defaults=DEFAULTS,
    submit_env=SUBMIT_ENV,
)

# --- the preparation its `train` command runs first (_prepare_download, _convert_hf_to_fp8,
# _prepare_megatron_ckpt, _prepare_cp); core/prepare_plan.py lays it out host by host.

# hf download --repo-type dataset REPO --local-dir DATA_DIR/NAME, by --task.
DATASETS = {
    "dapo-aime": ("zhuzilin/dapo-math-17k", "zhuzilin/aime-2024", "zhuzilin/aime-2025"),
    "gsm8k": ("zhuzilin/gsm8k",),
}
# A download is done when its directory holds what the job reads (or, for aime-2025, keeps).
DATASET_FILES = {
    "dapo-math-17k": ("dapo-math-17k.jsonl",), "aime-2024": ("aime-2024.jsonl",),
    "aime-2025": ("aime-2025.jsonl",), "gsm8k": ("train.parquet", "test.parquet"),
}
MODEL_FILES = ("config.json", "model.safetensors.index.json")
# Run in the checkout, on the head; upstream skips it when SAVE_DIR exists.
FP8_CONVERT = ("python", "tools/convert_hf_to_fp8.py", "--model-dir", "{hf}", "--save-dir", "{hf}-FP8/",
               "--strategy", "block", "--block-size", "128", "128", "--max-workers", "4")
# convert_checkpoint(multinode=True): every node, even one, with these rendezvous flags.
CONVERT_RENDEZVOUS = ("--master-addr", "{master}", "--master-port", "{port}", "--nnodes={nnodes}", "--node-rank",
                      "{rank}")
CONVERT_SCRIPT = "{workdir}/tools/convert_hf_to_torch_dist.py"
CONVERT_MASTER_PORT = 23456
# rsync_simple, on every node: mkdir -p DST && rsync -a --info=progress2 SRC/ DST.
RSYNC = ("rsync", "-a", "--info=progress2")
RSYNC_DRY_RUN = ("rsync", "-a", "--dry-run", "--itemize-changes")  # prints nothing when DST is up to date
