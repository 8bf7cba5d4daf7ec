"""The recipe's variants (RECIPE.md §3, §5) as data, and the pure step that applies them.

``shape_recipe`` turns the base recipe into the one a launch runs: MODEL filled from the
model, then the variant (profile, hardware, MTP, MIS, R3, FP8), then the user's overrides.

Where each variant puts its flags (upstream ``scripts/run_glm45_355b_a32b.py`` order where it
has one):

* ``--profile python``: ROLLOUT ``--rm-type math``, ``--rollout-batch-size 32``,
  ``--num-steps-per-rollout 1`` and GRPO ``--advantage-estimator grpo`` replaced in place;
  OPTIMIZER loses the three CPU-Adam flags; PERF's TP/PP/CP/EP/ETP and max tokens replaced in
  place by the node-count table; SGLANG replaced by the Python launcher's group:
  engine size, memory fraction, ``--sglang-tp-size``, chunked prefill, then (Blackwell) the
  attention backend, then FP8 rollout, then MTP, then the FP8 KV cache (upstream's order).
  ``--actor-num-nodes`` defaults to the cluster's node count (upstream passes its
  ``num_nodes``); the train prefix stays first, as in the bash recipe.
* ``--rollout-fp8``: CKPT ``--hf-checkpoint`` gets the ``-FP8`` suffix; the FP8 SGLang flags
  are merged into SGLANG (a flag the group already has is replaced in place, others appended
  in upstream order; upstream appends a second ``--sglang-chunked-prefill-size``, which
  argparse resolves to the same last value); env
  ``SGLANG_DEEPEP_NUM_MAX_DISPATCH_TOKENS_PER_RANK=256`` appended to the runtime env.
* ``--mtp``/``--no-mtp``: the five speculative flags at the end of SGLANG (python profile,
  plus env ``SGLANG_ENABLE_SPEC_V2=1``); the bash profile has them already and ``--no-mtp``
  removes them.
* ``--kv-cache-fp8``: ``--sglang-kv-cache-dtype fp8_e4m3`` at the end of SGLANG.
* ``--mis``: ``--custom-config-path FILES_DIR/mis.yaml --custom-tis-function-path ...`` at the
  end of MISC (upstream adds them to ``misc_args``); the plan writes the YAML first.
* ``--r3``: ``--use-rollout-routing-replay`` at the end of GRPO (the algorithm group, where
  upstream launchers that enable it put it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from glm45_launch.core.argdiff import ArgChange, EnvChange
from glm45_launch.core.flags import flag_int, has_flag, merge_flags, set_flag, split_flags, unset_flag
from glm45_launch.core.hostfile import Hostfile
from glm45_launch.core.overrides import (
    Overrides,
    apply_overrides,
    group_changes,
    set_env,
)
from glm45_launch.errors import LaunchError
from glm45_launch.recipes import Argv, ModelSpec, Recipe

PROFILES = ("bash", "python")


@dataclass(frozen=True)
class Hardware:
    name: str
    gpus_per_node: int
    generation: str  # "Hopper" | "Blackwell"

    @property
    def blackwell(self) -> bool:
        return self.generation == "Blackwell"


HARDWARE: dict[str, Hardware] = {
    h.name: h for h in (Hardware("H100", 8, "Hopper"), Hardware("GB200", 4, "Blackwell"),
                        Hardware("GB300", 4, "Blackwell"))
}

# Upstream's train step asserts `hardware != "H100"` with this message.
PYTHON_PROFILE_H100 = "H100 is not yet supported in this script"

CPU_ADAM_FLAGS = ("--optimizer-cpu-offload", "--overlap-cpu-optimizer-d2h-h2d", "--use-precision-aware-optimizer")

PYTHON_PROFILE_SETS: tuple[tuple[str, str, Argv], ...] = (
    ("ROLLOUT", "--rm-type", ("math",)),
    ("ROLLOUT", "--rollout-batch-size", ("32",)),
    ("ROLLOUT", "--num-steps-per-rollout", ("1",)),
    ("GRPO", "--advantage-estimator", ("grpo",)),
)

# (node counts it applies to, TP, PP, CP, EP), first match wins (RECIPE.md §5)
PYTHON_PERF_TABLE: tuple[tuple[str, int, int, int, int], ...] = (
    ("<=4", 4, 1, 1, 4),
    ("==8", 4, 8, 2, 8),
    ("other", 4, 4, 2, 8),
)
PYTHON_ETP = 1
PYTHON_MAX_TOKENS_PER_GPU = 16384
SGLANG_MAX_ENGINE_GPUS = 32
SGLANG_CHUNK_PER_GPU = 2048
BLACKWELL_ATTENTION = ("--sglang-attention-backend", "trtllm_mha")

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


@dataclass(frozen=True)
class Variant:
    """Which row of the recipe tables to run; the defaults are the bash recipe."""

    profile: str = "bash"
    hardware: str | None = None  # None: the hostfile's slots (else 8), no hardware-specific flags
    mtp: bool | None = None  # None: the profile's default (bash: on, python: off)
    mis: bool = False
    mis_use_rs: bool = True
    r3: bool = False
    rollout_fp8: bool = False
    kv_cache_fp8: bool = False
    files_dir: str | None = None  # where files the job reads are written; "{base_dir}/glm45-launch"

    @property
    def is_default(self) -> bool:
        return self == Variant()

    def summary(self) -> str:
        parts = [f"profile {self.profile}"]
        if self.hardware:
            parts.append(self.hardware)
        if self.mtp is not None:
            parts.append("mtp" if self.mtp else "no-mtp")
        for name in ("mis", "r3", "rollout_fp8", "kv_cache_fp8"):
            if getattr(self, name):
                parts.append(name.replace("_", "-"))
        if self.mis and not self.mis_use_rs:
            parts.append("mis without rs")
        return ", ".join(parts)


@dataclass(frozen=True)
class Shaped:
    """The recipe a launch runs, and what a reader needs to know about how it was made."""

    recipe: Recipe
    gpus_per_node: int
    files: tuple[tuple[str, str], ...] = ()  # (path with placeholders, content) to write first
    variant_changes: tuple[ArgChange | EnvChange, ...] = ()
    override_changes: tuple[ArgChange | EnvChange, ...] = ()
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    settings: tuple[tuple[str, str], ...] = field(default_factory=tuple)


def hardware(name: str) -> Hardware:
    try:
        return HARDWARE[name]
    except KeyError:
        raise LaunchError(f"--hardware: unknown hardware {name!r} (known: {', '.join(HARDWARE)})") from None


def resolve_gpus_per_node(hostfile: Hostfile, gpus_per_node: int | None, hardware_name: str | None) -> int:
    """GPUs per node from ``--hardware`` (checked against the hostfile and the option), else
    the option, else the hostfile's slots, else 8."""
    if hardware_name is None:
        return hostfile.gpus_per_node(gpus_per_node)
    hw = hardware(hardware_name)
    want = hw.gpus_per_node
    if gpus_per_node is not None and gpus_per_node != want:
        raise LaunchError(f"--gpus-per-node {gpus_per_node} contradicts --hardware {hw.name} ({want} GPUs per node)")
    for host in hostfile.hosts:
        if host.slots is not None and host.slots != want:
            raise LaunchError(
                f"{hostfile.path}:{host.line}: slots={host.slots} but --hardware {hw.name} has "
                f"{want} GPUs per node"
            )
    return want


def python_parallelism(num_nodes: int) -> tuple[int, int, int, int, int]:
    """(TP, PP, CP, EP, ETP) of the Python launcher for ``num_nodes`` nodes."""
    if num_nodes <= 4:
        _, tp, pp, cp, ep = PYTHON_PERF_TABLE[0]
    elif num_nodes == 8:
        _, tp, pp, cp, ep = PYTHON_PERF_TABLE[1]
    else:
        _, tp, pp, cp, ep = PYTHON_PERF_TABLE[2]
    return tp, pp, cp, ep, PYTHON_ETP


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


def validate_variant(variant: Variant) -> Hardware | None:
    """Refuse the combinations upstream refuses (or that RECIPE.md does not define)."""
    if variant.profile not in PROFILES:
        raise LaunchError(f"--profile: unknown profile {variant.profile!r} (known: {', '.join(PROFILES)})")
    hw = hardware(variant.hardware) if variant.hardware is not None else None
    if variant.profile == "python" and (hw is None or not hw.blackwell):
        shown = hw.name if hw else "H100 (the default)"
        raise LaunchError(
            f"--profile python with --hardware {shown}: {PYTHON_PROFILE_H100} (upstream's train step "
            "is Blackwell-only); give --hardware GB200 or GB300"
        )
    if variant.rollout_fp8 and (hw is None or not hw.blackwell):
        raise LaunchError(
            "--rollout-fp8: the FP8 rollout (DeepGEMM MoE runner, DeepEP low-latency) is the "
            "Blackwell setting of RECIPE.md §5; give --hardware GB200 or GB300"
        )
    if not variant.mis_use_rs and not variant.mis:
        raise LaunchError("--mis-no-rs: only means something with --mis")
    return hw


def shape_recipe(
    recipe: Recipe,
    *,
    model: ModelSpec,
    variant: Variant | None = None,
    overrides: Overrides | None = None,
    hostfile: Hostfile,
    gpus_per_node: int | None = None,
    nodes: int,
    actor_num_nodes: int | None = None,
) -> Shaped:
    """The recipe after MODEL, variant and overrides (pure). ``nodes``: the cluster size."""
    variant = variant or Variant()
    overrides = overrides or Overrides()
    hw = validate_variant(variant)
    gpus = resolve_gpus_per_node(hostfile, gpus_per_node, variant.hardware)
    order = tuple(recipe.group_order)
    groups: dict[str, Argv] = {g: tuple(recipe.groups.get(g, ())) for g in order}
    if "MODEL" in groups and not groups["MODEL"]:
        groups["MODEL"] = model.args
    base = replace(recipe, groups=dict(groups))
    env = tuple(recipe.env_vars)
    defaults = dict(recipe.defaults)
    notes: list[str] = []
    warnings: list[str] = []
    files: list[tuple[str, str]] = []
    settings: list[tuple[str, str]] = []
    python = variant.profile == "python"
    num_nodes = actor_num_nodes if actor_num_nodes is not None else nodes

    if python:
        why = "--profile python"
        for group, flag, values in PYTHON_PROFILE_SETS:
            groups[group] = set_flag(_need_group(groups, order, group, why), flag, values)
        optimizer = _need_group(groups, order, "OPTIMIZER", why)
        for flag in CPU_ADAM_FLAGS:
            optimizer = unset_flag(optimizer, flag)
        groups["OPTIMIZER"] = optimizer
        tp, pp, cp, ep, etp = python_parallelism(num_nodes)
        groups["PERF"] = merge_flags(_need_group(groups, order, "PERF", why), (
            "--tensor-model-parallel-size", str(tp), "--pipeline-model-parallel-size", str(pp),
            "--context-parallel-size", str(cp), "--expert-model-parallel-size", str(ep),
            "--expert-tensor-parallel-size", str(etp), "--max-tokens-per-gpu", str(PYTHON_MAX_TOKENS_PER_GPU),
        ))
        if actor_num_nodes is None:
            defaults["actor_num_nodes"] = str(nodes)
        engine = min(SGLANG_MAX_ENGINE_GPUS, num_nodes * gpus)
        assert hw is not None
        mem = "0.8" if hw.name == "GB300" else "0.7"
        _need_group(groups, order, "SGLANG", why)
        sglang: Argv = (
            "--rollout-num-gpus-per-engine", str(engine), "--sglang-mem-fraction-static", mem,
            "--sglang-tp-size", str(engine), "--sglang-chunked-prefill-size", str(engine * SGLANG_CHUNK_PER_GPU),
        )
        if hw.blackwell:
            sglang += BLACKWELL_ATTENTION
        groups["SGLANG"] = sglang
        settings.append(("parallelism", f"TP{tp}/PP{pp}/CP{cp}/EP{ep}/ETP{etp} for {num_nodes} node(s)"))
        settings.append(("rollout engine", f"{engine} GPUs (min({SGLANG_MAX_ENGINE_GPUS}, {num_nodes} x {gpus}))"))
        if num_nodes <= 4:
            warnings.append(
                f"--profile python on {num_nodes} node(s): TP4/PP1/CP1/EP4 is the upstream debug "
                "layout (not really runnable for training; useful with --debug-rollout-only)"
            )
    else:
        engine = flag_int(groups.get("SGLANG", ()), "--rollout-num-gpus-per-engine") or min(
            SGLANG_MAX_ENGINE_GPUS, num_nodes * gpus)

    if variant.rollout_fp8:
        why = "--rollout-fp8"
        ckpt = _need_group(groups, order, "CKPT", why)
        hf = next((v for f, v in split_flags(ckpt) if f == "--hf-checkpoint" and v), None)
        if hf is None:
            raise LaunchError(f"{why}: the CKPT group has no --hf-checkpoint to point at the {FP8_SUFFIX} copy")
        groups["CKPT"] = set_flag(ckpt, "--hf-checkpoint", (hf[0].rstrip("/") + FP8_SUFFIX, *hf[1:]))
        groups["SGLANG"] = merge_flags(_need_group(groups, order, "SGLANG", why), fp8_sglang_flags(engine))
        for key, value in FP8_ENV:
            env = set_env(env, key, value)
        notes.append(
            f"--rollout-fp8: SGLang loads {hf[0].rstrip('/')}{FP8_SUFFIX}, made beforehand by the framework's "
            "`python tools/convert_hf_to_fp8.py --model-dir HF --save-dir HF-FP8 --strategy block "
            "--block-size 128 128`"
        )

    mtp = variant.mtp if variant.mtp is not None else not python
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

    shaped = replace(base, groups=groups, env_vars=env, defaults=defaults,
                     name=f"{recipe.name.removesuffix('-bash')}-python" if python else recipe.name)
    arg_changes, env_changes = group_changes(base, shaped) if not variant.is_default else ([], [])
    applied = apply_overrides(shaped, overrides)
    warnings += applied.warnings
    if not variant.is_default:
        settings.insert(0, ("variant", variant.summary()))
    return Shaped(
        recipe=applied.recipe,
        gpus_per_node=gpus,
        files=tuple(files),
        variant_changes=tuple(arg_changes) + tuple(env_changes),
        override_changes=applied.changes + applied.env_changes,
        notes=tuple(notes),
        warnings=tuple(warnings),
        settings=tuple(settings),
    )
