"""The recipe's variants (RECIPE.md §3, §5): the per-option logic, and the pure step that applies it.

``shape_recipe`` turns a profile's recipe into the one a launch runs: MODEL filled from the
model, the profile's own job (``profiles.py``: the Python launcher's knobs, the Air recipe's
transfer mode and sizes), then the per-option variants below, then the user's overrides.

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
from dataclasses import dataclass, field, replace

from glm45_launch.core.argdiff import ArgChange, EnvChange
from glm45_launch.core.flags import flag_int, has_flag, merge_flags, set_flag, split_flags, unset_flag
from glm45_launch.core.hostfile import Hostfile
from glm45_launch.core.job_facts import TRAINER_GPUS_PER_NODE
from glm45_launch.core.overrides import (
    Overrides,
    apply_overrides,
    group_changes,
    set_env,
)
from glm45_launch.core.profiles import (
    PROFILES,
    NvlinkFact,
    air_job,
    check_knobs,
    python_engine_gpus,
    python_job,
)
from glm45_launch.errors import LaunchError
from glm45_launch.recipes import Argv, ModelSpec, Recipe
from glm45_launch.recipes.python_launcher import BLACKWELL_ATTENTION

__all__ = [
    "BLACKWELL_ATTENTION", "CPU_ADAM_FLAGS", "FP8_SUFFIX", "HARDWARE", "KV_CACHE_FP8", "MTP_FLAGS", "PROFILES",
    "R3_FLAG", "Hardware", "Shaped", "Variant", "fp8_sglang_flags", "shape_recipe",
]


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
class Variant:
    """Which row of the recipe tables to run, and the profile's knobs; the defaults are the bash recipe."""

    profile: str = "bash"
    hardware: str | None = None  # None: the hostfile's slots (else 8), no hardware-specific flags
    mtp: bool | None = None  # None: the profile's default (bash: on, python: off)
    mis: bool = False
    mis_use_rs: bool = True
    r3: bool = False
    rollout_fp8: bool = False
    kv_cache_fp8: bool = False
    files_dir: str | None = None  # where files the job reads are written; "{base_dir}/glm45-launch"
    # The Python launcher's knobs (profiles.py), named like upstream's options.
    mode: str = "normal"  # normal | debug-minimal
    task: str = "dapo-aime"  # dapo-aime | gsm8k
    dynamic_sampling: bool = False
    eval: bool = True  # --no-eval: False
    benchmark: bool = False
    cuda_core_dump: bool = False
    # The Air recipe's knobs.
    transfer_mode: str | None = None  # p2p (default) | broadcast
    bucket_size_gb: float | None = None  # None: 1.0 (BUCKET_SIZE_GB)
    skip_weight_check: bool = False  # SKIP_VALIDATION=1

    @property
    def is_default(self) -> bool:
        return self == Variant()

    def summary(self) -> str:
        parts = [f"profile {self.profile}"]
        if self.hardware:
            parts.append(self.hardware)
        if self.mtp is not None:
            parts.append("mtp" if self.mtp else "no-mtp")
        for name in ("mis", "r3", "rollout_fp8", "kv_cache_fp8", "dynamic_sampling", "benchmark", "cuda_core_dump",
                     "skip_weight_check"):
            if getattr(self, name):
                parts.append(name.replace("_", "-"))
        if self.mis and not self.mis_use_rs:
            parts.append("mis without rs")
        for name, default in (("mode", "normal"), ("task", "dapo-aime")):
            if getattr(self, name) != default:
                parts.append(f"{name} {getattr(self, name)}")
        if not self.eval:
            parts.append("no-eval")
        if self.transfer_mode:
            parts.append(f"transfer {self.transfer_mode}")
        if self.bucket_size_gb is not None:
            parts.append(f"bucket {self.bucket_size_gb:g} GiB")
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
    check_knobs(variant.profile, mode=variant.mode, task=variant.task, dynamic_sampling=variant.dynamic_sampling,
                eval_schedule=variant.eval, benchmark=variant.benchmark, cuda_core_dump=variant.cuda_core_dump,
                transfer_mode=variant.transfer_mode, bucket_size_gb=variant.bucket_size_gb,
                skip_weight_check=variant.skip_weight_check)
    return hw


def _profile_job(
    recipe: Recipe, variant: Variant, hw: Hardware | None, gpus: int, nodes: int, actor_num_nodes: int | None,
    nvlink: NvlinkFact, wandb: bool,
) -> tuple[Recipe, list[tuple[str, str]], list[str], list[str]]:
    """The profile's own job (python, air-p2p) as a recipe, with its settings, notes and warnings."""
    num_nodes = actor_num_nodes if actor_num_nodes is not None else nodes
    if variant.profile == "python":
        assert hw is not None
        job = python_job(
            recipe, mode=variant.mode, task=variant.task, dynamic_sampling=variant.dynamic_sampling,
            eval_schedule=variant.eval, benchmark=variant.benchmark, cuda_core_dump=variant.cuda_core_dump,
            hardware=hw.name, blackwell=hw.blackwell, gpus_per_node=gpus, num_nodes=num_nodes, nvlink=nvlink,
            wandb=wandb,
        )
    elif variant.profile == "air-p2p":
        job = air_job(recipe, transfer_mode=variant.transfer_mode, bucket_size_gb=variant.bucket_size_gb,
                      skip_weight_check=variant.skip_weight_check, gpus_per_node=gpus, nodes=nodes,
                      actor_num_nodes=actor_num_nodes)
    else:
        return recipe, [], [], []
    shaped = replace(recipe, groups=job.groups, env_vars=job.env, defaults={**recipe.defaults, **job.defaults})
    return shaped, job.settings, job.notes, job.warnings


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
    nvlink: NvlinkFact | None = None,
    wandb: bool = False,
) -> Shaped:
    """The recipe after MODEL, the profile's job, the variant and overrides (pure).

    ``recipe`` is the profile's (``profiles.profile_recipe``); ``nodes``: the cluster size;
    ``nvlink``: the head's NVLink (python profile); ``wandb``: a wandb key is given."""
    variant = variant or Variant()
    overrides = overrides or Overrides()
    hw = validate_variant(variant)
    gpus = resolve_gpus_per_node(hostfile, gpus_per_node, variant.hardware)
    order = tuple(recipe.group_order)
    groups: dict[str, Argv] = {g: tuple(recipe.groups.get(g, ())) for g in order}
    if "MODEL" in groups and not groups["MODEL"]:
        groups["MODEL"] = model.args
    python = variant.profile == "python"
    # The job with the profile's default knobs: variant_changes are what the options changed.
    plain = replace(Variant(profile=variant.profile, hardware=variant.hardware), mtp=None)
    base, _, _, _ = _profile_job(replace(recipe, groups=dict(groups)), plain, hw, gpus, nodes, actor_num_nodes,
                                 nvlink or NvlinkFact(), wandb)
    job, settings, notes, warnings = _profile_job(replace(recipe, groups=dict(groups)), variant, hw, gpus, nodes,
                                                  actor_num_nodes, nvlink or NvlinkFact(), wandb)
    groups = {g: tuple(job.groups.get(g, ())) for g in order}
    env = tuple(job.env_vars)
    files: list[tuple[str, str]] = []
    num_nodes = actor_num_nodes if actor_num_nodes is not None else nodes
    engine = python_engine_gpus(num_nodes, gpus)
    if not python:  # the recipe's own engine size where it names one
        engine = flag_int(groups.get("SGLANG", ()), "--rollout-num-gpus-per-engine") or engine

    if variant.rollout_fp8:
        why = "--rollout-fp8"
        ckpt = _need_group(groups, order, "CKPT", why)
        hf = next((v for f, v in split_flags(ckpt) if f == "--hf-checkpoint" and v), None)
        if hf is None:
            raise LaunchError(f"{why}: the CKPT group has no --hf-checkpoint to point at the {FP8_SUFFIX} copy")
        groups["CKPT"] = set_flag(ckpt, "--hf-checkpoint", (hf[0].rstrip("/") + FP8_SUFFIX, *hf[1:]))
        sg = _need_group(groups, order, "SGLANG", why)
        # Upstream appends its FP8 flags to its own group; into the bash group they are merged.
        groups["SGLANG"] = sg + fp8_sglang_flags(engine) if python else merge_flags(sg, fp8_sglang_flags(engine))
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

    prefix = tuple(job.train_prefix)
    if gpus != TRAINER_GPUS_PER_NODE:
        prefix, groups, added = with_num_gpus_per_node(prefix, groups, order)
        if added:
            notes.append(f"{NUM_GPUS_PER_NODE} {gpus} passed to train.py: slime/miles default it to "
                         f"{TRAINER_GPUS_PER_NODE} and place rollout engines by it (the bash recipe never "
                         "passes it; deviation)")
    shaped = replace(job, groups=groups, env_vars=env, train_prefix=prefix)
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
