# Megatron model arguments for GLM-4.5-Air (106B total, 12B active), sourced by a run script.
# HF id: zai-org/GLM-4.5-Air. No --qk-layernorm and no --moe-router-topk-scaling-factor.

N_DENSE_LAYERS=1
N_MOE_LAYERS=45

MODEL_ARGS=(
   --disable-bias-linear
   --group-query-attention
   --num-attention-heads 96
   --num-query-groups 8
   --kv-channels 128
   --num-layers 46
   --hidden-size 4096
   --ffn-hidden-size 10944

   --add-qkv-bias
   --normalization RMSNorm
   --position-embedding-type rope
   --rotary-percent 0.5
   --swiglu
   --untie-embeddings-and-output-weights
   --vocab-size 151552
   --rotary-base 1000000

   # MoE
   --moe-ffn-hidden-size 1408
   --moe-shared-expert-intermediate-size 1408
   --moe-router-pre-softmax
   --moe-router-score-function sigmoid
   --moe-router-enable-expert-bias
   --moe-router-bias-update-rate 0
   --moe-router-load-balancing-type seq_aux_loss
   --moe-token-dispatcher-type alltoall
   --moe-router-topk 8
   # unquoted on purpose (as in the recipe): a glob that stays literal unless a file matches it
   --moe-layer-freq [0]*$N_DENSE_LAYERS+[1]*$N_MOE_LAYERS
   --num-experts 128
   --moe-grouped-gemm
   --moe-router-dtype fp32
   --moe-permute-fusion
   --moe-aux-loss-coeff 0
)
