"""MODEL argument groups, one per model file of the framework (``scripts/models/*.sh``).

Words are kept exactly as the bash model files expand them. ``--moe-layer-freq`` is an
unquoted glob there (``[0]*3+[1]*89``) that stays literal unless a file in the working
directory matches it; it is kept literal here.
"""

from __future__ import annotations

from dataclasses import dataclass

from glm45_launch.errors import LaunchError


@dataclass(frozen=True)
class ModelSpec:
    """A model: its MODEL args and the directory names the recipe derives from it."""

    name: str
    checkpoint_name: str  # directory under BASE_DIR holding the HF checkpoint
    hf_id: str
    n_dense_layers: int
    n_moe_layers: int
    args: tuple[str, ...]


def _moe_layer_freq(n_dense: int, n_moe: int) -> str:
    return f"[0]*{n_dense}+[1]*{n_moe}"


GLM45_355B = ModelSpec(
    name="glm4.5-355B-A32B",
    checkpoint_name="GLM-4.5-355B-A32B",
    hf_id="zai-org/GLM-4.5",
    n_dense_layers=3,
    n_moe_layers=89,
    args=(
        "--disable-bias-linear", "--qk-layernorm", "--group-query-attention",
        "--num-attention-heads", "96", "--num-query-groups", "8", "--kv-channels", "128",
        "--num-layers", "92", "--hidden-size", "5120", "--ffn-hidden-size", "12288",
        "--add-qkv-bias", "--normalization", "RMSNorm", "--position-embedding-type", "rope",
        "--rotary-percent", "0.5", "--swiglu", "--untie-embeddings-and-output-weights",
        "--vocab-size", "151552", "--rotary-base", "1000000",
        "--moe-ffn-hidden-size", "1536", "--moe-shared-expert-intermediate-size", "1536",
        "--moe-router-pre-softmax", "--moe-router-score-function", "sigmoid",
        "--moe-router-enable-expert-bias", "--moe-router-bias-update-rate", "0",
        "--moe-router-load-balancing-type", "seq_aux_loss",
        "--moe-token-dispatcher-type", "alltoall", "--moe-router-topk", "8",
        "--moe-router-topk-scaling-factor", "2.5",
        "--moe-layer-freq", _moe_layer_freq(3, 89), "--num-experts", "160",
        "--moe-grouped-gemm", "--moe-router-dtype", "fp32", "--moe-permute-fusion",
        "--moe-aux-loss-coeff", "0",
    ),
)

GLM45_AIR = ModelSpec(
    name="glm4.5-106B-A12B",
    checkpoint_name="GLM-4.5-Air",
    hf_id="zai-org/GLM-4.5-Air",
    n_dense_layers=1,
    n_moe_layers=45,
    args=(
        "--disable-bias-linear", "--group-query-attention",
        "--num-attention-heads", "96", "--num-query-groups", "8", "--kv-channels", "128",
        "--num-layers", "46", "--hidden-size", "4096", "--ffn-hidden-size", "10944",
        "--add-qkv-bias", "--normalization", "RMSNorm", "--position-embedding-type", "rope",
        "--rotary-percent", "0.5", "--swiglu", "--untie-embeddings-and-output-weights",
        "--vocab-size", "151552", "--rotary-base", "1000000",
        "--moe-ffn-hidden-size", "1408", "--moe-shared-expert-intermediate-size", "1408",
        "--moe-router-pre-softmax", "--moe-router-score-function", "sigmoid",
        "--moe-router-enable-expert-bias", "--moe-router-bias-update-rate", "0",
        "--moe-router-load-balancing-type", "seq_aux_loss",
        "--moe-token-dispatcher-type", "alltoall", "--moe-router-topk", "8",
        "--moe-layer-freq", _moe_layer_freq(1, 45), "--num-experts", "128",
        "--moe-grouped-gemm", "--moe-router-dtype", "fp32", "--moe-permute-fusion",
        "--moe-aux-loss-coeff", "0",
    ),
)

MODELS: dict[str, ModelSpec] = {m.name: m for m in (GLM45_355B, GLM45_AIR)}


def get_model(name: str) -> ModelSpec:
    """The model called ``name``; a clear error listing the known ones otherwise."""
    try:
        return MODELS[name]
    except KeyError:
        raise LaunchError(f"--model: unknown model {name!r} (known: {', '.join(MODELS)})") from None
