"""Test oracles: what miles' two other launchers run, restated from their source at 04b61f31a.

``python_job`` follows ``scripts/run_glm45_355b_a32b.py``'s ``_execute_train`` and
``command_utils.execute_train``: the train args are one string built piece by piece (then
split into words the way the shell does), the runtime env one dict. ``python_prepare`` follows
its ``_prepare_download``, ``_prepare_megatron_ckpt`` and ``_prepare_cp`` with
``command_utils.convert_checkpoint``/``rsync_simple``/``hf_download_dataset``. ``air_rank0`` follows
``examples/p2p_weight_transfer/run-glm4.5-air-8node-profile.sh`` for rank 0. These are
written independently of ``glm45_launch`` (strings, not its data), so a test comparing the
two compares two readings of upstream.
"""

from __future__ import annotations

import shlex

GB = 1024 ** 3


def python_job(
    *, nodes: int, gpus: int = 4, hardware: str = "GB200", mode: str = "normal", task: str = "dapo_aime",
    dynamic_sampling: bool = False, eval_: bool = True, benchmark: bool = False, fp8: bool = False,
    kv_fp8: bool = False, mtp: bool = False, mis_path: str | None = None, wandb_key: str | None = None,
    run_id: str = "RUNID", local: str = "/data", data: str = "/data", out: str = "/data/out",
    name: str = "GLM-4.5-355B-A32B", extra_args: str = "",
) -> list[str]:
    """train.py's arguments after MODEL_ARGS, word for word."""
    debug = mode == "debug_minimal"
    every = 2 if debug else 10
    ckpt = (f"--hf-checkpoint {local}/{name}{'-FP8' if fp8 else ''} --ref-load {local}/{name}_torch_dist "
            f"--load {out}/{run_id}/checkpoints --save {out}/{run_id}/checkpoints "
            f"--save-interval {every} --save-retain-interval {every} ")
    rollout = ("--label-key label --apply-chat-template --rollout-shuffle --rm-type math --num-rollout 3000 "
               "--rollout-batch-size 32 --n-samples-per-prompt 8 --rollout-temperature 1 "
               "--num-steps-per-rollout 1 --balance-data --rollout-stop-token-ids 151329 151336 151338 ")
    if dynamic_sampling and not debug:
        rollout += ("--over-sampling-batch-size 256 --dynamic-sampling-filter-path "
                    "miles.rollout.filter_hub.dynamic_sampling_filters.check_reward_nonzero_std ")
    evals = "--eval-interval 20 --eval-top-p 1 " if eval_ and not debug else ""
    if task == "dapo_aime":
        rollout += (f"--prompt-data {data}/dapo-math-17k/dapo-math-17k.jsonl --input-key prompt "
                    f"--rollout-max-response-len {100 if debug else 8192} ")
        evals += (f"--eval-prompt-data aime {data}/aime-2024/aime-2024.jsonl --n-samples-per-eval-prompt 8 "
                  "--eval-max-response-len 8192 ")
    else:
        rollout += f"--prompt-data {data}/gsm8k/train.parquet --input-key messages --rollout-max-response-len 256 "
        evals += (f"--eval-prompt-data gsm8k {data}/gsm8k/test.parquet --n-samples-per-eval-prompt 1 "
                  "--eval-max-response-len 256 ")
    if nodes <= 4:
        tp, pp, cp, ep = 4, 1, 1, 4
    else:
        tp, pp, cp, ep = 4, 8 if nodes == 8 else 4, 2, 8
    perf = (f"--tensor-model-parallel-size {tp} --sequence-parallel --pipeline-model-parallel-size {pp} "
            f"--context-parallel-size {cp} --expert-model-parallel-size {ep} --expert-tensor-parallel-size 1 "
            "--recompute-granularity full --recompute-method uniform --recompute-num-layers 1 "
            "--use-dynamic-batch-size --max-tokens-per-gpu 16384 ")
    grpo = ("--advantage-estimator grpo --kl-loss-coef 0.00 --kl-loss-type low_var_kl --kl-coef 0.00 "
            "--entropy-coef 0.00 --eps-clip 1e-4 --eps-clip-high 2e-4 --use-tis ")
    optimizer = "--optimizer adam --lr 1e-6 --lr-decay-style constant --weight-decay 0.1 --adam-beta1 0.9 --adam-beta2 0.98 "
    n = min(32, gpus * nodes)
    sglang = (f"--rollout-num-gpus-per-engine {n} --sglang-mem-fraction-static {0.8 if hardware == 'GB300' else 0.7} "
              f"--sglang-tp-size {n} --sglang-chunked-prefill-size {n * 2048} ")
    if hardware in ("GB200", "GB300"):
        sglang += "--sglang-attention-backend trtllm_mha "
    if fp8:
        attn_tp = min(8, n)
        sglang += (f"--sglang-ep-size {n} --sglang-enable-dp-attention --sglang-dp-size {n // attn_tp} "
                   "--sglang-moe-dense-tp-size 1 --sglang-enable-dp-lm-head --sglang-moe-runner-backend deep_gemm "
                   "--sglang-moe-a2a-backend deepep --sglang-deepep-mode low_latency "
                   f"--sglang-max-running-requests {n * 256 // attn_tp} --sglang-chunked-prefill-size {n * 256} "
                   "--sglang-cuda-graph-max-bs 256 ")
    if mtp:
        sglang += ("--sglang-speculative-algorithm EAGLE --sglang-speculative-num-steps 1 "
                   "--sglang-speculative-eagle-topk 1 --sglang-speculative-num-draft-tokens 2 "
                   "--sglang-enable-draft-weights-cpu-backup ")
    misc = ("--attention-dropout 0.0 --hidden-dropout 0.0 --accumulate-allreduce-grads-in-fp32 "
            "--attention-softmax-in-fp32 --attention-backend flash --update-weight-buffer-size 2147483648 "
            f"--actor-num-nodes {nodes} --actor-num-gpus-per-node {gpus} --num-gpus-per-node {gpus} --colocate "
            f"--use-fault-tolerance --dump-details {out}/{run_id}/dump_details --disable-weights-backuper "
            "--router-health-success-threshold 1 --router-health-check-interval-secs 15 ")
    if benchmark:
        misc += ("--custom-generate-function-path miles.rollout.generate_hub.benchmarkers.generate_with_random_osl "
                 "--rollout-batch-size 128 --n-samples-per-prompt 8 --use-distributed-post "
                 "--router-policy round_robin --sglang-server-concurrency 10000 "
                 f"--sglang-mem-fraction-static {0.8 if hardware == 'GB300' else 0.75} ")
    if kv_fp8:
        sglang += "--sglang-kv-cache-dtype fp8_e4m3 "
    if mis_path:
        misc += (f"--custom-config-path {mis_path} --custom-tis-function-path "
                 "examples.train_infer_mismatch_helper.mis.compute_mis_weights_with_cp ")
    wandb = ""
    if wandb_key:
        wandb = (f"--use-wandb --wandb-project miles-run_glm45_355b_a32b --wandb-group {run_id} "
                 f"--wandb-key '{wandb_key}' --disable-wandb-random-suffix ")
    text = f"{ckpt} {rollout} {optimizer} {grpo} {wandb} {perf} {evals} {sglang} {misc} {extra_args} "
    return shlex.split(text)


def python_env(*, head: str = "10.0.0.1", nvlink: bool = True, core_dump_dir: str | None = None, fp8: bool = False,
               mtp: bool = False, extra: dict[str, str] | None = None, megatron: str = "/root/Megatron-LM",
               shell: dict[str, str] | None = None) -> dict[str, str]:
    """The runtime env's env_vars, in order; ``shell``: the launching shell's environment."""
    shell = shell or {}
    env = {"PYTHONPATH": megatron, "CUDA_DEVICE_MAX_CONNECTIONS": "1", "NCCL_NVLS_ENABLE": str(int(nvlink)),
           **{k: shell[k] for k in ("NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME") if k in shell},
           "no_proxy": f"127.0.0.1,{head}", "MASTER_ADDR": head}
    if core_dump_dir is not None:
        env |= {"CUDA_ENABLE_COREDUMP_ON_EXCEPTION": "1", "CUDA_COREDUMP_SHOW_PROGRESS": "1",
                "CUDA_COREDUMP_GENERATION_FLAGS": "skip_nonrelocated_elf_images,skip_global_memory,"
                "skip_shared_memory,skip_local_memory,skip_constbank_memory",
                "CUDA_COREDUMP_FILE": f"{core_dump_dir}/cuda_coredump_%h.%p.%t"}
    if fp8:
        env["SGLANG_DEEPEP_NUM_MAX_DISPATCH_TOKENS_PER_RANK"] = "256"
    if mtp:
        env["SGLANG_ENABLE_SPEC_V2"] = "1"
    return env | (extra or {})


def python_cleanup(external_ray: bool = False) -> list[list[str]]:
    """execute_train's cleanup, one command per `;` (the trailing `true` is the shell's, not a command)."""
    ray = not external_ray
    text = ("pkill -9 sglang; sleep 3; " + ("ray stop --force; pkill -9 ray; " if ray else "")
            + "pkill -9 miles; sleep 3; " + ("pkill -9 ray; " if ray else "") + "pkill -9 miles; pkill -9 redis")
    return [c.split() for c in text.split("; ")]


def air_rank0(*, mode: str = "p2p", bucket_gb: str = "1.0", skip_validation: bool = False,
              root: str = "/root") -> list[str]:
    """Rank 0's train args after MODEL_ARGS (8 nodes x 8 GPUs)."""
    sglang = ("--rollout-num-gpus-per-engine 8 --rollout-num-gpus 32 --sglang-mem-fraction-static 0.8 "
              "--sglang-ep-size 8 --sglang-cuda-graph-bs 1 2 4 8 16 --sglang-enable-dp-attention "
              "--sglang-enable-dp-lm-head ")
    if mode == "p2p":
        sglang += "--sglang-remote-instance-weight-loader-start-seed-via-transfer-engine "
    sglang += ("--sglang-load-format dummy " if skip_validation else
               """--sglang-model-loader-extra-config '{"enable_multithread_load":true,"num_threads":8}' """)
    buffer = int(float(bucket_gb) * 1024 * 1024 * 1024) if mode == "p2p" else 4 * GB
    misc = ("--attention-dropout 0.0 --hidden-dropout 0.0 --accumulate-allreduce-grads-in-fp32 "
            "--attention-softmax-in-fp32 --attention-backend flash --actor-num-nodes 4 --actor-num-gpus-per-node 8 "
            f"--update-weight-buffer-size {buffer} ")
    if not skip_validation:
        misc += "--check-weight-update-equal "
    misc += f"--update-weight-transfer-mode {mode} "
    text = (
        f"--hf-checkpoint {root}/models/GLM-4.5-Air --ref-load {root}/GLM-4.5-Air_torch_dist "
        f"--prompt-data {root}/datasets/dapo-math-17k/dapo-math-17k.jsonl --input-key prompt --label-key label "
        "--apply-chat-template --rollout-shuffle --rm-type deepscaler --num-rollout 13 --rollout-batch-size 4 "
        "--n-samples-per-prompt 4 --rollout-max-response-len 100 --rollout-temperature 0.8 --global-batch-size 16 "
        f"--balance-data --eval-prompt-data aime {root}/datasets/aime-2024/aime-2024.jsonl "
        "--n-samples-per-eval-prompt 16 --eval-max-response-len 16384 --eval-top-p 0.7 "
        "--optimizer adam --lr 1e-6 --lr-decay-style constant --weight-decay 0.1 --adam-beta1 0.9 --adam-beta2 0.98 "
        "--optimizer-cpu-offload --overlap-cpu-optimizer-d2h-h2d --use-precision-aware-optimizer "
        "--advantage-estimator gspo --kl-loss-coef 0.00 --kl-loss-type low_var_kl --entropy-coef 0.00 --eps-clip 4e-4 "
        "--tensor-model-parallel-size 1 --pipeline-model-parallel-size 4 --context-parallel-size 1 "
        "--expert-model-parallel-size 8 --expert-tensor-parallel-size 1 --decoder-last-pipeline-num-layers 10 "
        "--recompute-granularity full --recompute-method uniform --recompute-num-layers 1 --use-dynamic-batch-size "
        f"--max-tokens-per-gpu 2048 {sglang}{misc}"
    )
    return shlex.split(text)


def python_prepare(
    *, gpus: int = 4, model_dir: str = "/data", data_dir: str = "/data", local: str = "/data",
    name: str = "GLM-4.5-355B-A32B", org: str = "zai-org", task: str = "dapo_aime", fp8: bool = False,
    megatron: str = "/root/Megatron-LM", repo: str = "<REPO>", model_repo: str | None = None,
) -> list[tuple[str, str]]:
    """(where, command) of what ``train`` runs before the job, in order: ``head`` for
    ``exec_command`` (the launching machine), ``all`` for ``exec_command_all_ray_node`` (every
    node, with its ``{{node_rank}}``, ``{{nnodes}}``, ``{{master_addr}}`` placeholders)."""
    out = [("head", f"mkdir -p {model_dir} {data_dir}"),
           ("head", f"hf download {model_repo or f'{org}/{name}'} --local-dir {model_dir}/{name}")]
    datasets = {"dapo_aime": ["zhuzilin/dapo-math-17k", "zhuzilin/aime-2024", "zhuzilin/aime-2025"],
                "gsm8k": ["zhuzilin/gsm8k"]}[task]
    out += [("head", f"hf download --repo-type dataset {d} --local-dir {data_dir}/{d.split('/')[1]}") for d in datasets]
    if fp8:
        out.append(("head", "python tools/convert_hf_to_fp8.py " + f"--model-dir {model_dir}/{name} "
                    + f"--save-dir {model_dir}/{name}-FP8/ " + "--strategy block --block-size 128 128 --max-workers 4"))
    multinode = "--master-addr {{master_addr}} --master-port 23456 --nnodes={{nnodes}} --node-rank {{node_rank}} "
    out.append(("all", f"source {repo}/scripts/models/glm4.5-355B-A32B.sh && PYTHONPATH={megatron} torchrun "
                + f"--nproc-per-node {gpus} " + multinode + f"{repo}/tools/convert_hf_to_torch_dist.py "
                + "${MODEL_ARGS[@]} " + f"--hf-checkpoint {model_dir}/{name} --save {model_dir}/{name}_torch_dist "))
    items = [f"{name}_torch_dist", name] + [f"{name}-FP8"] * fp8
    out += [("all", f"mkdir -p {local}/{x} && rsync -a --info=progress2 {model_dir}/{x}/ {local}/{x}") for x in items]
    return out
