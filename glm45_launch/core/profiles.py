"""Profiles: which launcher's job a plan runs, and that job assembled from its knobs (pure).

The first stage of a plan (``builder.build_plan``): the profile picks the recipe and the model,
checks its own options, and assembles its job for the cluster; the variant (``variants.py``) and
the overrides (``overrides.py``) come after.

* ``bash``: ``run-glm4.5-355B-A32B.sh`` (``recipes/glm45_bash.py``, or a ``--recipe`` file).
* ``python``: the job of miles' Python launcher ``scripts/run_glm45_355b_a32b.py``
  (``recipes/python_launcher.py``): :func:`python_job` concatenates its pieces the way
  upstream's ``_execute_train`` does, word for word, for ``--mode``, ``--task``,
  ``--dynamic-sampling``, ``--no-eval``, ``--benchmark``, ``--cuda-core-dump``, wandb (when a key
  is given), the node-count layout and the SGLang engine; the per-option variants (FP8, MTP,
  KV-FP8, MIS, R3) are then ``variants.py``'s.
* ``python-8node``: miles' ``scripts/run_glm45_355b_a32b_8node.py``, the bash recipe's Python
  successor (``recipes/python_8node.py``): :func:`python_8node_job` adds ``--save``, wandb and
  upstream's runtime env (the launcher's NCCL_SOCKET_IFNAME... when set, the rack's tuning, the
  socket keys when MLP_SOCKET_IFNAME is set, PYTHONPATH last).
* ``air-p2p``: the disaggregated GLM-4.5-Air recipe (``recipes/air_p2p.py``): :func:`air_job`
  adds ``--transfer-mode``, ``--bucket-size-gb`` and ``--skip-weight-check``, and sizes the actor
  (half the nodes) and the rollout (the GPUs left).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from glm45_launch.core.flags import flag_int
from glm45_launch.core.plan import LaunchSpec, NvlinkFact, Variant
from glm45_launch.core.runtime_env import insert_after, set_env
from glm45_launch.errors import LaunchError
from glm45_launch.recipes import BASH_RECIPE, Argv, ModelSpec, Recipe, get_model
from glm45_launch.recipes import air_p2p as air
from glm45_launch.recipes import python_8node as py8
from glm45_launch.recipes import python_launcher as py
from glm45_launch.recipes.hardware import Hardware

PROFILES = ("bash", "python", "python-8node", "air-p2p")
PROFILE_RECIPES: dict[str, Recipe] = {"python": py.RECIPE, "python-8node": py8.RECIPE, "air-p2p": air.RECIPE}
PYTHON_PROFILES = frozenset({"python", "python-8node"})  # upstream's Python launchers: their options
OWN_DIRS = frozenset({"python-8node"})  # its paths are its own options (--model-dir...), not BASE_DIR
# What the CLI reads from the launcher's environment for the python profiles to forward.
LAUNCHER_ENV = tuple(dict.fromkeys((*py.FORWARDED_ENV, *py8.FORWARDED_ENV, py8.PYTHONPATH_ENV)))
DISAGGREGATED = frozenset({"air-p2p"})  # the actor and the rollout on GPUs of their own: never --colocate
MODES = tuple(py.SAVE_INTERVAL)
TASKS = tuple(py.TASKS)
TRANSFER_MODES = tuple(air.TRANSFERS)
DEFAULT_MODEL = "glm4.5-355B-A32B"
# Upstream's train step asserts `hardware != "H100"` with this message.
PYTHON_PROFILE_H100 = "H100 is not yet supported in this script"
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class ProfileJob:
    """The job a profile runs on one cluster, before the variant: its recipe (MODEL filled, the
    knobs applied), the same job with the profile's default knobs (what a plan's
    ``variant_changes`` start from), and what a reader should know of it."""

    recipe: Recipe
    plain: Recipe
    model: ModelSpec
    engine_gpus: int  # the SGLang engine the variants size their flags for
    settings: tuple[tuple[str, str], ...] = ()
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


def profile_job(spec: LaunchSpec, hw: Hardware | None, gpus_per_node: int, nodes: int) -> ProfileJob:
    """The job of ``spec``'s profile on ``nodes`` nodes of ``gpus_per_node`` GPUs (pure)."""
    variant = spec.variant
    recipe = profile_recipe(variant.profile, spec.recipe)
    check_knobs(spec, hw)
    model = profile_model(variant.profile, spec.model)
    groups = {g: tuple(recipe.groups.get(g, ())) for g in recipe.group_order}
    if "MODEL" in groups and not groups["MODEL"]:
        groups["MODEL"] = model.args
    recipe = replace(recipe, groups=groups)
    num_nodes = spec.actor_num_nodes if spec.actor_num_nodes is not None else nodes

    def job(knobs: Variant) -> Job:
        if knobs.profile == "python":
            assert hw is not None
            return python_job(
                recipe, mode=knobs.mode, task=knobs.task, dynamic_sampling=knobs.dynamic_sampling,
                eval_schedule=knobs.eval, benchmark=knobs.benchmark, cuda_core_dump=knobs.cuda_core_dump,
                hardware=hw.name, blackwell=hw.blackwell, gpus_per_node=gpus_per_node, num_nodes=num_nodes,
                nvlink=spec.nvlink, wandb=bool(spec.wandb_key), forwarded=forwarded(spec, py.FORWARDED_ENV),
            )
        if knobs.profile == "python-8node":
            return python_8node_job(recipe, spec, cuda_core_dump=knobs.cuda_core_dump)
        if knobs.profile == "air-p2p":
            return air_job(recipe, transfer_mode=knobs.transfer_mode, bucket_size_gb=knobs.bucket_size_gb,
                           skip_weight_check=knobs.skip_weight_check, gpus_per_node=gpus_per_node, nodes=nodes,
                           actor_num_nodes=spec.actor_num_nodes)
        return Job(groups=dict(recipe.groups), env=tuple(recipe.env_vars), defaults={})

    own = job(variant)
    shaped = own.recipe(recipe)
    engine = python_engine_gpus(num_nodes, gpus_per_node)
    if variant.profile != "python":  # the recipe's own engine size where it names one
        engine = flag_int(shaped.groups.get("SGLANG", ()), "--rollout-num-gpus-per-engine") or engine
    return ProfileJob(
        recipe=shaped, plain=job(Variant(profile=variant.profile, hardware=variant.hardware)).recipe(recipe),
        model=model, engine_gpus=engine, settings=tuple(own.settings), notes=tuple(own.notes),
        warnings=tuple(own.warnings),
    )


@dataclass
class Job:
    """A profile's job before the per-option variants: groups, env, placeholder defaults and
    what a reader should know."""

    groups: dict[str, Argv]
    env: tuple[tuple[str, str], ...]
    defaults: dict[str, str]
    settings: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def recipe(self, base: Recipe) -> Recipe:
        """``base`` running this job."""
        return replace(base, groups=self.groups, env_vars=self.env, defaults={**base.defaults, **self.defaults})


def profile_recipe(profile: str, recipe: Recipe) -> Recipe:
    """The recipe ``profile`` runs: ``recipe`` for bash (the bash recipe or a recipe file), the
    launcher's own for the others."""
    if profile == "bash":
        return recipe
    if profile not in PROFILE_RECIPES:
        raise LaunchError(f"--profile: unknown profile {profile!r} (known: {', '.join(PROFILES)})")
    if recipe is not BASH_RECIPE:
        raise LaunchError(f"--recipe with --profile {profile}: a recipe file replaces the bash recipe; "
                          f"the {profile} profile runs its own launcher's job (give one or the other)")
    return PROFILE_RECIPES[profile]


def default_model(profile: str) -> str:
    """The model a profile runs when ``--model`` is not given."""
    return air.MODEL if profile == "air-p2p" else DEFAULT_MODEL


def profile_model(profile: str, name: str | None) -> ModelSpec:
    """The model ``--model`` names, else the profile's; the Air recipe runs its own model only."""
    model = get_model(name or default_model(profile))
    if profile == "air-p2p" and model.name != default_model(profile):
        raise LaunchError(f"--model {model.name}: --profile air-p2p is the GLM-4.5-Air recipe "
                          f"({default_model(profile)}); its layout does not fit another model")
    return model


def python_parallelism(num_nodes: int) -> tuple[int, int, int, int, int]:
    """(TP, PP, CP, EP, ETP) of the Python launcher for ``num_nodes`` nodes."""
    row = py.PERF_TABLE[0] if num_nodes <= 4 else py.PERF_TABLE[1] if num_nodes == 8 else py.PERF_TABLE[2]
    _, tp, pp, cp, ep = row
    return tp, pp, cp, ep, py.PERF_ETP


def python_engine_gpus(num_nodes: int, gpus_per_node: int) -> int:
    """The SGLang engine size: min(32, all the GPUs)."""
    return min(py.SGLANG_MAX_ENGINE_GPUS, num_nodes * gpus_per_node)


def python_job(
    recipe: Recipe, *, mode: str, task: str, dynamic_sampling: bool, eval_schedule: bool, benchmark: bool,
    cuda_core_dump: bool, hardware: str, blackwell: bool, gpus_per_node: int, num_nodes: int,
    nvlink: NvlinkFact, wandb: bool, forwarded: tuple[tuple[str, str], ...] = (),
) -> Job:
    """The Python launcher's train args and runtime env, in upstream's order (before the variants);
    ``forwarded``: the launcher's NCCL_SOCKET_IFNAME and GLOO_SOCKET_IFNAME, when set."""
    debug = mode == "debug-minimal"
    spec = py.TASKS[task]
    groups = dict(recipe.groups)
    interval = py.SAVE_INTERVAL[mode]
    groups["CKPT"] = tuple(recipe.groups["CKPT"]) + ("--save-interval", interval, "--save-retain-interval", interval)
    rollout = tuple(recipe.groups["ROLLOUT"])
    if dynamic_sampling and not debug:
        rollout += py.DYNAMIC_SAMPLING
    groups["ROLLOUT"] = rollout + spec.prompt + ("--rollout-max-response-len", spec.response_len[mode])
    groups["WANDB"] = py.WANDB if wandb else ()
    tp, pp, cp, ep, etp = python_parallelism(num_nodes)
    groups["PERF"] = (
        "--tensor-model-parallel-size", str(tp), "--sequence-parallel", "--pipeline-model-parallel-size", str(pp),
        "--context-parallel-size", str(cp), "--expert-model-parallel-size", str(ep),
        "--expert-tensor-parallel-size", str(etp), *py.PERF_TAIL,
    )
    groups["EVAL"] = (py.EVAL_SCHEDULE if eval_schedule and not debug else ()) + spec.eval
    engine = python_engine_gpus(num_nodes, gpus_per_node)
    sglang: Argv = (
        "--rollout-num-gpus-per-engine", str(engine),
        "--sglang-mem-fraction-static", py.SGLANG_MEM_FRACTION.get(hardware, py.SGLANG_MEM_FRACTION_DEFAULT),
        "--sglang-tp-size", str(engine), "--sglang-chunked-prefill-size", str(engine * py.SGLANG_CHUNK_PER_GPU),
    )
    groups["SGLANG"] = sglang + (py.BLACKWELL_ATTENTION if blackwell else ())
    misc = tuple(recipe.groups["MISC"])
    if benchmark:
        misc += py.BENCHMARK + ("--sglang-mem-fraction-static",
                                py.BENCHMARK_MEM_FRACTION.get(hardware, py.BENCHMARK_MEM_FRACTION_DEFAULT))
    groups["MISC"] = misc

    env = set_env(recipe.env_vars, py.NVLS_ENV, "1" if nvlink.present else "0")
    env = insert_after(env, py.FORWARDED_AFTER, forwarded)
    if cuda_core_dump:
        env += py.CUDA_COREDUMP_ENV
    job = Job(groups=groups, env=env, defaults={"actor_num_nodes": str(num_nodes)})
    job.settings += [
        ("parallelism", f"TP{tp}/PP{pp}/CP{cp}/EP{ep}/ETP{etp} for {num_nodes} node(s)"),
        ("rollout engine", f"{engine} GPUs (min({py.SGLANG_MAX_ENGINE_GPUS}, {num_nodes} x {gpus_per_node}))"),
        ("NVLink (head)", f"{nvlink.describe()}: {py.NVLS_ENV}={'1' if nvlink.present else '0'}"),
    ]
    if num_nodes <= 4:
        job.warnings.append(
            f"--profile python on {num_nodes} node(s): TP4/PP1/CP1/EP4 is the upstream debug layout "
            "(not really runnable for training; useful with --debug-rollout-only)"
        )
    if nvlink.present is None:
        job.notes.append(f"NVLink on the head is unknown ({nvlink.how}): {py.NVLS_ENV}=0, as upstream's probe "
                         "gives without nvidia-smi; --nvlink yes|no states it")
    if not wandb:
        job.notes.append("no wandb flags: WANDB_API_KEY is not set (upstream skips wandb the same way)")
    return job


def forwarded(spec: LaunchSpec, names: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """The launcher's environment values of ``names`` that are set, in that order."""
    env = dict(spec.launcher_env)
    return tuple((n, env[n]) for n in names if n in env)


def python_8node_job(recipe: Recipe, spec: LaunchSpec, *, cuda_core_dump: bool) -> Job:
    """``run_glm45_355b_a32b_8node.py``'s train args and runtime env, in upstream's order."""
    groups = dict(recipe.groups)
    if spec.save:
        groups["CKPT"] = tuple(groups["CKPT"]) + py8.SAVE
    groups["WANDB"] = py8.WANDB if spec.wandb_key else ()
    env = insert_after(recipe.env_vars, py8.FORWARDED_AFTER, forwarded(spec, py8.FORWARDED_ENV))
    if cuda_core_dump:
        env += py8.CUDA_COREDUMP_ENV
    for key, value in py8.CLUSTER_ENV:
        env = set_env(env, key, value)
    for key in py8.SOCKET_IFNAME_ENV if spec.socket_ifname else ():
        env = set_env(env, key, spec.socket_ifname or "")
    shell = dict(spec.launcher_env).get(py8.PYTHONPATH_ENV)
    entries = [spec.workdir, spec.megatron_path, *(shell.split(":") if shell else ())]
    env = set_env(env, py8.PYTHONPATH_ENV, ":".join(dict.fromkeys(entries)))
    job = Job(groups=groups, env=env, defaults={})
    job.settings.append(("checkpoints", "{output_dir}/checkpoints every 20 rollouts (--save)" if spec.save
                         else "not saved (as upstream without --save)"))
    if not spec.socket_ifname:
        job.notes.append("MLP_SOCKET_IFNAME is not set: no GLOO/TP/OMPI socket interface keys in the runtime env "
                         "(as upstream)")
    if shell:
        job.notes.append(f"{py8.PYTHONPATH_ENV} in the runtime env ends with this shell's ({shell}), as upstream "
                         "adds the launching shell's")
    if not spec.wandb_key:
        job.notes.append("no wandb flags: WANDB_API_KEY is not set (upstream skips wandb the same way)")
    return job


def air_job(
    recipe: Recipe, *, transfer_mode: str | None, bucket_size_gb: float | None, skip_weight_check: bool,
    gpus_per_node: int, nodes: int, actor_num_nodes: int | None,
) -> Job:
    """The Air recipe's train args for ``transfer_mode`` (default p2p), sized to the cluster."""
    mode = transfer_mode or "p2p"
    transfer = air.TRANSFERS[mode]
    load = air.WEIGHT_LOAD["skip" if skip_weight_check else "check"]
    bucket = air.DEFAULT_BUCKET_GB if bucket_size_gb is None else bucket_size_gb
    # The script's `python3 -c "print(int(${BUCKET_SIZE_GB} * 1024 * 1024 * 1024))"`.
    buffer = transfer.buffer_bytes or int(bucket * 1024 * 1024 * 1024)
    groups = dict(recipe.groups)
    groups["SGLANG"] = tuple(recipe.groups["SGLANG"]) + transfer.sglang + load.sglang
    groups["MISC"] = tuple(recipe.groups["MISC"]) + ("--update-weight-buffer-size", str(buffer)) + load.misc \
        + transfer.misc
    actor = actor_num_nodes if actor_num_nodes is not None else max(1, nodes // 2)
    rollout = (nodes - actor) * gpus_per_node
    job = Job(groups=groups, env=tuple(recipe.env_vars),
              defaults={"actor_num_nodes": str(actor), "rollout_num_gpus": str(rollout)})
    job.settings += [
        ("disaggregated", f"actor {actor} node(s) x {gpus_per_node} GPUs, rollout {rollout} GPUs "
                          f"({nodes - actor} node(s)) in engines of {air.SGLANG[1]}"),
        ("weight transfer", f"{mode}, buffer {buffer} bytes"
                            + (f" ({bucket:g} GiB bucket)" if transfer.buffer_bytes is None else " (4 GiB)")
                            + (", weights not checked (SKIP_VALIDATION=1)" if skip_weight_check else "")),
    ]
    job.notes.append("workers join as soon as the head's GCS answers (the script's workers sleep 20 s blindly)")
    return job


def _options_given(spec: LaunchSpec) -> list[tuple[str, frozenset[str], bool]]:
    """(option as written, the profiles that have it, whether it is given) of every profile's own option."""
    v = spec.variant
    python, both, py8, air_ = frozenset({"python"}), PYTHON_PROFILES, frozenset({"python-8node"}), frozenset({"air-p2p"})
    return [
        ("--output-dir", both, spec.output_dir is not None), ("--run-id", both, spec.run_id is not None),
        ("--model-dir", both, spec.model_dir is not None), ("--data-dir", both, spec.data_dir is not None),
        ("--model-local-dir", python, spec.model_local_dir is not None),
        ("--mode debug-minimal", python, v.mode != "normal"), (f"--task {v.task}", python, v.task != "dapo-aime"),
        ("--dynamic-sampling", python, v.dynamic_sampling), ("--no-eval", python, not v.eval),
        ("--benchmark", python, v.benchmark), ("--cuda-core-dump", both, v.cuda_core_dump),
        ("--save", py8, spec.save), ("--num-rollout", py8, spec.num_rollout is not None),
        (f"--transfer-mode {v.transfer_mode}", air_, v.transfer_mode is not None),
        ("--bucket-size-gb", air_, v.bucket_size_gb is not None), ("--skip-weight-check", air_, v.skip_weight_check),
    ]


_WHOSE = {"python": "the Python launcher's", "python-8node": "the 8-node Python launcher's",
          "air-p2p": "the Air recipe's"}
_KNOBS = ("--mode", "--task", "--dynamic-sampling", "--no-eval", "--benchmark")  # named "knob" in messages


def check_knobs(spec: LaunchSpec, hw: Hardware | None) -> None:
    """Refuse an option the profile does not have, a value it does not know, or hardware it does
    not run on (one line naming it)."""
    v, profile = spec.variant, spec.variant.profile
    if v.mode not in MODES:
        raise LaunchError(f"--mode: unknown mode {v.mode!r} (known: {', '.join(MODES)})")
    if v.task not in TASKS:
        raise LaunchError(f"--task: unknown task {v.task!r} (known: {', '.join(TASKS)})")
    if v.transfer_mode is not None and v.transfer_mode not in TRANSFER_MODES:
        raise LaunchError(f"--transfer-mode: unknown mode {v.transfer_mode!r} (known: {', '.join(TRANSFER_MODES)})")
    for name, profiles, given in _options_given(spec):
        if given and profile not in profiles:
            owners = [p for p in PROFILES if p in profiles]
            whose = _WHOSE[owners[0]] if len(owners) == 1 else "the Python launchers'"
            whose += " knob" if name.startswith(_KNOBS) else ""
            raise LaunchError(f"{name}: an option of --profile {' and '.join(owners)} ({whose}), "
                              f"not of --profile {profile}")
    for name, value in (("--output-dir", spec.output_dir), ("--run-id", spec.run_id),
                        ("--model-local-dir", spec.model_local_dir), ("--model-dir", spec.model_dir),
                        ("--data-dir", spec.data_dir), ("--megatron-path", spec.megatron_path)):
        if value is not None and (not value.strip() or value != value.strip()):
            raise LaunchError(f"{name}: {value!r} is not a path")
    if spec.run_id is not None and not _RUN_ID.match(spec.run_id):
        raise LaunchError(f"--run-id: {spec.run_id!r} is not a name (letters, digits, . _ -; it names a directory)")
    if spec.num_rollout is not None and spec.num_rollout < 1:
        raise LaunchError(f"--num-rollout: must be >= 1, got {spec.num_rollout}")
    if spec.save and spec.checkpoint_dir is not None:
        raise LaunchError("--save with --checkpoint-dir: both set --save (OUT/checkpoints, or DIR with --load); "
                          "drop one of them")
    if v.bucket_size_gb is not None:
        if (v.transfer_mode or "p2p") != "p2p":
            raise LaunchError(f"--bucket-size-gb: only --transfer-mode p2p uses it (broadcast sends "
                              f"{air.TRANSFERS['broadcast'].buffer_bytes} bytes at a time)")
        if not (math.isfinite(v.bucket_size_gb) and v.bucket_size_gb > 0) or int(v.bucket_size_gb * 1024 ** 3) < 1:
            raise LaunchError(f"--bucket-size-gb: must be > 0, got {v.bucket_size_gb:g}")
    if profile == "python" and (hw is None or not hw.blackwell):
        shown = hw.name if hw else "H100 (the default)"
        raise LaunchError(
            f"--profile python with --hardware {shown}: {PYTHON_PROFILE_H100} (upstream's train step "
            "is Blackwell-only); give --hardware GB200 or GB300"
        )
