#!/bin/bash
# GLM-4.5-Air (106B-A12B) on 8 nodes x 8 GPUs, disaggregated: 4 nodes train (TP1 PP4 CP1 EP8
# ETP1), 4 nodes roll out (engines of 8 GPUs), weights sent P2P or by broadcast.
#
# A per-node launcher: every node runs
#   bash air-p2p-8node.sh MODE NODE_RANK HEAD_IP      (MODE: p2p | broadcast; rank 0: the head)
#
# Written for glm45-launch's tests from the facts of RECIPE.md §5b (miles'
# examples/p2p_weight_transfer/run-glm4.5-air-8node-profile.sh at revision 04b61f31a): the same
# commands, arguments and waits, in this file's own words. It hard-codes /root paths and reads
# the model arguments from /root/miles/scripts/models (parity --expose puts them there). Its
# arrays expand unquoted, as upstream's do (each word split and glob-expanded).

set -ex
export PYTHONBUFFERED=16

if [ $# -lt 3 ]; then
    echo "usage: $0 MODE NODE_RANK HEAD_IP   (MODE: p2p or broadcast; NODE_RANK 0 is the head)"
    exit 1
fi
mode=$1
rank=$2
head_ip=$3

# Every node starts clean (leftovers of an earlier run in the same container).
pkill -9 sglang || true
sleep 3
ray stop --force || true
pkill -9 ray || true
pkill -9 python || true
sleep 3
pkill -9 ray || true
pkill -9 python || true
pkill -9 redis || true

nodes=8
gpus_per_node=8
train_gpus=32
rollout_gpus=32
skip_validation=${SKIP_VALIDATION:-0}
bucket_gb=${BUCKET_SIZE_GB:-1.0}
train_nodes=$(( train_gpus / gpus_per_node ))

model=GLM-4.5-Air
source /root/miles/scripts/models/glm4.5-106B-A12B.sh
export MODEL_ARGS_ROTARY_BASE=1000000

ckpt_dir=${CKPT_SAVE_DIR:-/root}
CKPT_ARGS=(--hf-checkpoint "/root/models/$model" --ref-load "$ckpt_dir/${model}_torch_dist")
ROLLOUT_ARGS=(
    --prompt-data /root/datasets/dapo-math-17k/dapo-math-17k.jsonl --input-key prompt --label-key label
    --apply-chat-template --rollout-shuffle --rm-type deepscaler
    --num-rollout 13 --rollout-batch-size 4 --n-samples-per-prompt 4 --rollout-max-response-len 100
    --rollout-temperature 0.8 --global-batch-size 16 --balance-data
)
EVAL_ARGS=(
    --eval-prompt-data aime /root/datasets/aime-2024/aime-2024.jsonl
    --n-samples-per-eval-prompt 16 --eval-max-response-len 16384 --eval-top-p 0.7
)
OPTIMIZER_ARGS=(
    --optimizer adam --lr 1e-6 --lr-decay-style constant --weight-decay 0.1 --adam-beta1 0.9 --adam-beta2 0.98
    --optimizer-cpu-offload --overlap-cpu-optimizer-d2h-h2d --use-precision-aware-optimizer
)
GRPO_ARGS=(--advantage-estimator gspo --kl-loss-coef 0.00 --kl-loss-type low_var_kl --entropy-coef 0.00 --eps-clip 4e-4)
WANDB_ARGS=()
PERF_ARGS=(
    --tensor-model-parallel-size 1 --pipeline-model-parallel-size 4 --context-parallel-size 1
    --expert-model-parallel-size 8 --expert-tensor-parallel-size 1 --decoder-last-pipeline-num-layers 10
    --recompute-granularity full --recompute-method uniform --recompute-num-layers 1
    --use-dynamic-batch-size --max-tokens-per-gpu 2048
)
SGLANG_ARGS=(
    --rollout-num-gpus-per-engine 8 --rollout-num-gpus $rollout_gpus --sglang-mem-fraction-static 0.8
    --sglang-ep-size 8 --sglang-cuda-graph-bs 1 2 4 8 16 --sglang-enable-dp-attention --sglang-enable-dp-lm-head
)
if [ "$mode" = p2p ]; then
    SGLANG_ARGS+=(--sglang-remote-instance-weight-loader-start-seed-via-transfer-engine)
    buffer=$(python3 -c "print(int(${bucket_gb} * 1024 * 1024 * 1024))")
else
    buffer=$(( 4 * 1024 * 1024 * 1024 ))
fi
if [ "$skip_validation" -eq 1 ]; then
    SGLANG_ARGS+=(--sglang-load-format dummy)
else
    SGLANG_ARGS+=(--sglang-model-loader-extra-config '{"enable_multithread_load":true,"num_threads":8}')
fi
MISC_ARGS=(
    --attention-dropout 0.0 --hidden-dropout 0.0 --accumulate-allreduce-grads-in-fp32
    --attention-softmax-in-fp32 --attention-backend flash
    --actor-num-nodes $train_nodes --actor-num-gpus-per-node $gpus_per_node
    --update-weight-buffer-size $buffer
)
if [ "$skip_validation" -eq 0 ]; then
    MISC_ARGS+=(--check-weight-update-equal)
fi
if [ "$mode" = p2p ]; then
    MISC_ARGS+=(--update-weight-transfer-mode p2p)
else
    MISC_ARGS+=(--update-weight-transfer-mode broadcast)
fi

# Workers give the head a head start, then join its Ray cluster.
if [ "$rank" -gt 0 ]; then
    sleep 20
    RAY_memory_monitor_refresh_ms=0 ray start --address="$head_ip:6379" --num-gpus $gpus_per_node --disable-usage-stats
else
    RAY_memory_monitor_refresh_ms=0 ray start --head --node-ip-address "$head_ip" --num-gpus $gpus_per_node \
        --disable-usage-stats --dashboard-host=0.0.0.0 --dashboard-port=8265
fi

runtime_env="{
  \"env_vars\": {
    \"MC_TRANSFER_TIMEOUT\": \"300\",
    \"RAY_DEBUG\": \"1\",
    \"PYTHONPATH\": \"/root/Megatron-LM/\",
    \"CUDA_DEVICE_MAX_CONNECTIONS\": \"1\",
    \"NCCL_NVLS_ENABLE\": \"0\",
    \"MODEL_ARGS_ROTARY_BASE\": \"1000000\",
    \"MILES_LOG_DIR\": \"${MILES_LOG_DIR:-}\"
  }
}"

# The head waits until every node's GPUs joined.
if [ "$rank" -eq 0 ]; then
    want=$(( nodes * gpus_per_node ))
    while true; do
        have=$(python3 -c "import ray; ray.init(address='auto', ignore_reinit_error=True); print(int(ray.cluster_resources().get('GPU', 0))); ray.shutdown()" 2>/dev/null || echo 0)
        echo "GPUs in the cluster: $have of $want"
        [ "$have" -ge "$want" ] && break
        sleep 5
    done
fi

# The head writes its job's exit status to a done file; the workers stay until it is there.
signals=${MILES_LOG_DIR:-/data/ray/signals}
mkdir -p "$signals"
done_file=$signals/job_done_$mode
rm -f "$done_file"

if [ "$rank" -eq 0 ]; then
    ray job submit --address="http://127.0.0.1:8265" --runtime-env-json="$runtime_env" -- python3 train.py \
        ${MODEL_ARGS[@]} ${CKPT_ARGS[@]} ${ROLLOUT_ARGS[@]} ${EVAL_ARGS[@]} ${OPTIMIZER_ARGS[@]} \
        ${GRPO_ARGS[@]} ${WANDB_ARGS[@]} ${PERF_ARGS[@]} ${SGLANG_ARGS[@]} ${MISC_ARGS[@]}
    echo $? > "$done_file"
else
    while [ ! -f "$done_file" ]; do
        sleep 10
    done
    echo "rank $rank: the head's job ended with status $(cat "$done_file")"
fi
echo "rank $rank: finished"
