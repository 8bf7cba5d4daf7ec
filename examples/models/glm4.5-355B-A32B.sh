# Megatron model arguments for GLM-4.5 (355B total, 32B active), sourced by the run script.
# Layer layout: the first N_DENSE_LAYERS are dense, the remaining N_MOE_LAYERS are MoE.

N_DENSE_LAYERS=3
N_MOE_LAYERS=89

MODEL_ARGS=(
   --disable-bias-linear
   --qk-layernorm
   --group-query-attention
   --num-attention-heads 96
   --num-query-groups 8
   --kv-channels 128
   --num-layers 92
   --hidden-size 5120
   --ffn-hidden-size 12288

   --add-qkv-bias
   --normalization RMSNorm
   --position-embedding-type rope
   --rotary-percent 0.5
   --swiglu
   --untie-embeddings-and-output-weights
   --vocab-size 151552
   --rotary-base 1000000

   # MoE
   --moe-ffn-hidden-size 1536
   --moe-shared-expert-intermediate-size 1536
   --moe-router-pre-softmax
   --moe-router-score-function sigmoid
   --moe-router-enable-expert-bias
   --moe-router-bias-update-rate 0
   --moe-router-load-balancing-type seq_aux_loss
   --moe-token-dispatcher-type alltoall
   --moe-router-topk 8
   --moe-router-topk-scaling-factor 2.5
   # unquoted on purpose (as in the recipe): a glob that stays literal unless a file matches it
   --moe-layer-freq [0]*$N_DENSE_LAYERS+[1]*$N_MOE_LAYERS
   --num-experts 160
   --moe-grouped-gemm
   --moe-router-dtype fp32
   --moe-permute-fusion
   --moe-aux-loss-coeff 0
)
