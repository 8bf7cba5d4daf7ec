"""The recipe's variants (RECIPE.md §3, §5): the per-option flags, applied to a profile's job (pure).

The second stage of a plan (``builder.build_plan``): ``apply_variant`` takes the job the profile
assembled (``profiles.py``) and adds what the options below ask for; the user's overrides
(``overrides.py``) come after.

Where each variant puts its flags:

* ``--rollout-fp8``: CKPT ``--hf-checkpoint`` gets the ``-FP8`` suffix; the FP8 SGLang flags
  go to SGLANG: appended in upstream's order in the python profile (after the Blackwell
  attention backend, as upstream concatenates them; its second ``--sglang-chunked-prefill-size``
  is the value argparse keeps), merged into the bash group (a flag the group has is replaced in
  place); env ``SGLANG_DEEPEP_NUM_MAX_DISPATCH_TOKENS_PER_RANK=256`` appended to the runtime env.
* ``--mtp``/``--no-mtp``: the five speculative flags at the end of SGLANG (python profile,
  plus env ``SGLANG_ENABLE_SPEC_V2=1``); the bash profile has them already and ``--no-mtp``
  removes them.
* ``--kv-cache-fp8``: ``--sglang-kv-cache-dtype fp8_e4m3`` at the end of SGLANG.
* ``--mis``: ``--custom-config-path FILES_DIR/mis.yaml --custom-tis-function-path ...`` at the
  end of MISC (upstream adds them to ``misc_args``); the plan writes the YAML first.
* ``--r3``: ``--use-rollout-routing-replay`` at the end of GRPO (the algorithm group, where
  upstream launchers that enable it put it).
* GPUs per node other than 8: ``--num-gpus-per-node G`` right after ``--actor-num-gpus-per-node``
  (slime/miles default it to 8 and place rollout engines by it), unless the args have it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from glm45_launch.core.flags import has_flag, merge_flags, set_flag, split_flags, unset_flag
from glm45_launch.core.job_facts import TRAINER_GPUS_PER_NODE
from glm45_launch.core.plan import Variant
from glm45_launch.core.runtime_env import set_env
from glm45_launch.errors import LaunchError
from glm45_launch.recipes import Argv, Recipe
from glm45_launch.recipes.hardware import Hardware

# The bash recipe's CPU Adam (upstream's Python launcher comments these out).
CPU_ADAM_FLAGS = ("--optimizer-cpu-offload", "--overlap-cpu-optimizer-d2h-h2d", "--use-precision-aware-optimizer")

MTP_FLAGS: Argv = (
    "--sglang-speculative-algorithm", "EAGLE", "--sglang-speculative-num-steps", "1",
    "--sglang-speculative-eagle-topk", "1", "--sglang-speculative-num-draft-tokens", "2",
    "--sglang-enable-draft-weights-cpu-backup",
)
MTP_ENV = (("SGLANG_ENABLE_SPEC_V2", "1"),)

FP8_DECODE_MAX_BS = 256
FP8_ENV = (("SGLANG_DEEPEP_NUM_MAX_DISPATCH_TOKENS_PER_RANK", str(FP8_DECODE_MAX_BS)),)
FP8_SUFFIX = "-FP8"
KV_CACHE_FP8: Argv = ("--sglang-kv-cache-dtype", "fp8_e4m3")

R3_FLAG = "--use-rollout-routing-replay"

MIS_FILE = "mis.yaml"
MIS_FUNCTION = "examples.train_infer_mismatch_helper.mis.compute_mis_weights_with_cp"
MIS_YAML = """\
use_tis: true
use_rs: {use_rs}
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
DEFAULT_FILES_DIR = "{base_dir}/glm45-launch"
NUM_GPUS_PER_NODE = "--num-gpus-per-node"


@dataclass(frozen=True)
class Varied:
    """A job with its variant applied, the files the job reads, and what a reader should know."""

    recipe: Recipe
    files: tuple[tuple[str, str], ...] = ()  # (path with placeholders, content) to write first
    notes: tuple[str, ...] = ()


def fp8_sglang_flags(engine_gpus: int) -> Argv:
    """The FP8 rollout's SGLang flags for an engine of ``engine_gpus`` GPUs."""
    n = engine_gpus
    attn_tp = min(8, n)
    return (
        "--sglang-ep-size", str(n), "--sglang-enable-dp-attention", "--sglang-dp-size", str(n // attn_tp),
        "--sglang-moe-dense-tp-size", "1", "--sglang-enable-dp-lm-head",
        "--sglang-moe-runner-backend", "deep_gemm", "--sglang-moe-a2a-backend", "deepep",
        "--sglang-deepep-mode", "low_latency",
        "--sglang-max-running-requests", str(n * FP8_DECODE_MAX_BS // attn_tp),
        "--sglang-chunked-prefill-size", str(n * FP8_DECODE_MAX_BS),
        "--sglang-cuda-graph-max-bs", str(FP8_DECODE_MAX_BS),
    )


def mis_yaml(use_rs: bool) -> str:
    return MIS_YAML.format(use_rs="true" if use_rs else "false")


def _need_group(groups: dict[str, Argv], order: Sequence[str], group: str, why: str) -> Argv:
    if group not in order:
        raise LaunchError(f"{why}: the recipe has no {group} group")
    return groups.get(group, ())


def with_num_gpus_per_node(
    prefix: Argv, groups: dict[str, Argv], order: Sequence[str],
) -> tuple[Argv, dict[str, Argv], bool]:
    """``--num-gpus-per-node {gpus_per_node}`` right after ``--actor-num-gpus-per-node`` (in the prefix
    or the first group with it; else at the end of the prefix), unless the args already have it.
    Returns the new prefix and groups, and whether it was added."""
    where = [("", prefix)] + [(g, groups.get(g, ())) for g in order]
    if any(has_flag(words, NUM_GPUS_PER_NODE) for _, words in where):
        return prefix, groups, False
    add = (NUM_GPUS_PER_NODE, "{gpus_per_node}")
    for name, words in where:
        if has_flag(words, "--actor-num-gpus-per-node"):
            out: list[str] = []
            for flag, values in split_flags(words):
                out += [flag, *values] if flag else list(values)
                if flag == "--actor-num-gpus-per-node" and add[0] not in out:
                    out += add
            if not name:
                return tuple(out), groups, True
            return prefix, {**groups, name: tuple(out)}, True
    return prefix + add, groups, True


def check_variant(variant: Variant, hw: Hardware | None) -> None:
    """Refuse the combinations upstream refuses (or that RECIPE.md does not define)."""
    if variant.rollout_fp8 and (hw is None or not hw.blackwell):
        raise LaunchError(
            "--rollout-fp8: the FP8 rollout (DeepGEMM MoE runner, DeepEP low-latency) is the "
            "Blackwell setting of RECIPE.md §5; give --hardware GB200 or GB300"
        )
    if not variant.mis_use_rs and not variant.mis:
        raise LaunchError("--mis-no-rs: only means something with --mis")


def apply_variant(recipe: Recipe, variant: Variant, hw: Hardware | None, gpus_per_node: int,
                  engine_gpus: int) -> Varied:
    """``recipe`` (a profile's job) with the variant's flags; ``engine_gpus`` sizes the FP8 flags (pure)."""
    check_variant(variant, hw)
    order = tuple(recipe.group_order)
    groups: dict[str, Argv] = {g: tuple(recipe.groups.get(g, ())) for g in order}
    env = tuple(recipe.env_vars)
    files: list[tuple[str, str]] = []
    notes: list[str] = []
    python = variant.profile == "python"
    if variant.rollout_fp8:
        why = "--rollout-fp8"
        ckpt = _need_group(groups, order, "CKPT", why)
        hf = next((v for f, v in split_flags(ckpt) if f == "--hf-checkpoint" and v), None)
        if hf is None:
            raise LaunchError(f"{why}: the CKPT group has no --hf-checkpoint to point at the {FP8_SUFFIX} copy")
        groups["CKPT"] = set_flag(ckpt, "--hf-checkpoint", (hf[0].rstrip("/") + FP8_SUFFIX, *hf[1:]))
        sg = _need_group(groups, order, "SGLANG", why)
        # Upstream appends its FP8 flags to its own group; into the bash group they are merged.
        groups["SGLANG"] = sg + fp8_sglang_flags(engine_gpus) if python else merge_flags(sg, fp8_sglang_flags(engine_gpus))
        for key, value in FP8_ENV:
            env = set_env(env, key, value)
        notes.append(
            f"--rollout-fp8: SGLang loads {hf[0].rstrip('/')}{FP8_SUFFIX}, made beforehand by the framework's "
            "`python tools/convert_hf_to_fp8.py --model-dir HF --save-dir HF-FP8 --strategy block "
            "--block-size 128 128`"
        )

    mtp = variant.mtp if variant.mtp is not None else variant.profile == "bash"
    if variant.mtp is not None or python:
        sg = _need_group(groups, order, "SGLANG", "--mtp" if mtp else "--no-mtp")
        if mtp:
            groups["SGLANG"] = merge_flags(sg, MTP_FLAGS)
            if python:
                for key, value in MTP_ENV:
                    env = set_env(env, key, value)
        else:
            for flag, _ in split_flags(MTP_FLAGS):
                sg = unset_flag(sg, flag)
            groups["SGLANG"] = sg

    if variant.kv_cache_fp8:
        groups["SGLANG"] = merge_flags(_need_group(groups, order, "SGLANG", "--kv-cache-fp8"), KV_CACHE_FP8)

    if variant.mis:
        files_dir = (variant.files_dir or DEFAULT_FILES_DIR).rstrip("/")
        path = f"{files_dir}/{MIS_FILE}"
        files.append((path, mis_yaml(variant.mis_use_rs)))
        groups["MISC"] = merge_flags(_need_group(groups, order, "MISC", "--mis"), (
            "--custom-config-path", path, "--custom-tis-function-path", MIS_FUNCTION))

    if variant.r3:
        grpo = _need_group(groups, order, "GRPO", "--r3")
        if not has_flag(grpo, R3_FLAG):
            groups["GRPO"] = grpo + (R3_FLAG,)

    prefix = tuple(recipe.train_prefix)
    if gpus_per_node != TRAINER_GPUS_PER_NODE:
        prefix, groups, added = with_num_gpus_per_node(prefix, groups, order)
        if added:
            notes.append(f"{NUM_GPUS_PER_NODE} {gpus_per_node} passed to train.py: slime/miles default it to "
                         f"{TRAINER_GPUS_PER_NODE} and place rollout engines by it (the bash recipe never "
                         "passes it; deviation)")
    return Varied(recipe=replace(recipe, groups=groups, env_vars=env, train_prefix=prefix), files=tuple(files),
                  notes=tuple(notes))
