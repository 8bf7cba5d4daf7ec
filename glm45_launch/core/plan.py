"""The plan's types: what a launch is asked (``LaunchSpec`` and its parts) and what its plan holds.

Pure data, the vocabulary of ``core/``: ``builder.build_plan`` turns a ``LaunchSpec`` into a
``Plan``; the helpers that make its parts (profiles, variants, overrides, launch steps) and
everything that reads a plan import these types from here, never from the builder. The plan is
the contract: ``glm45-launch plan`` prints it, the parity tests compare it with the bash recipe,
and the executor runs exactly its steps. What the plan resolved (nodes, GPUs, ports, the job
address, the train argv by group, the runtime env) it keeps as typed facts, so nothing
downstream parses text or argv again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from glm45_launch.core.argdiff import ArgChange, EnvChange
from glm45_launch.core.hostfile import Hostfile
from glm45_launch.core.job_facts import JobFacts
from glm45_launch.core.netcheck import NetcheckSettings
from glm45_launch.core.steps import Step, SubmitStep, WorkerStartStep, canonical_order
from glm45_launch.errors import LaunchError
from glm45_launch.recipes import BASH_RECIPE, Argv, ModelSpec, Recipe

FRAMEWORKS = ("miles", "slime")
DEFAULT_RUN_ID = "default"
DEFAULT_RAY_TEMP = "/tmp/ray"  # Ray's --temp-dir when `ray start --head` gives none
DEFAULT_MEGATRON_PATH = "/root/Megatron-LM"


@dataclass(frozen=True)
class NvlinkFact:
    """Whether the head's GPUs are linked by NVLink (``nvidia-smi topo -m`` shows ``NV<n>``), and
    how that is known. The CLI probes the machine it runs on (the head) unless ``--nvlink``."""

    present: bool | None = None  # None: unknown
    how: str = "not probed"

    def describe(self) -> str:
        said = {True: "yes", False: "no", None: "unknown"}[self.present]
        return f"{said} ({self.how})"


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
class Edit:
    """One ``--set`` (``values`` is a tuple) or ``--unset`` (``values`` is None)."""

    group: str
    flag: str
    values: Argv | None
    source: str = ""  # the option as given, for messages

    @property
    def option(self) -> str:
        return self.source or ("--unset" if self.values is None else "--set")


@dataclass(frozen=True)
class Overrides:
    """Everything the user changes on top of the recipe, in the order given."""

    edits: tuple[Edit, ...] = ()
    extra_args: Argv = ()
    env: tuple[tuple[str, str], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.edits or self.extra_args or self.env)


@dataclass(frozen=True)
class LaunchSpec:
    """What a launch needs to know; every field has the bash recipe's meaning."""

    hostfile: Hostfile
    head: str | None  # MLP_WORKER_0_HOST
    base_dir: str | None  # BASE_DIR
    socket_ifname: str | None = None  # MLP_SOCKET_IFNAME; only used with resolve/export
    ssh_user: str = "root"
    workdir: str = "."  # framework checkout holding train.py; the head starts here
    gpus_per_node: int | None = None  # None: hostfile slots, else 8
    actor_num_nodes: int | None = None  # None: the recipe's value (8)
    framework: str = "miles"
    model: str | None = None  # None: the profile's (GLM-4.5-355B-A32B; GLM-4.5-Air for air-p2p)
    resolve_env: bool = False  # put values instead of ${VAR} into the runtime env
    export_env: bool = False  # export the ${VAR}s the runtime env uses into ray start
    checkpoint_dir: str | None = None
    save_interval: int = 20
    entry: str = "train.py"
    dashboard_host: str | None = None  # None: the recipe's 0.0.0.0
    cleanup: bool = True
    no_wait: bool = False  # `ray job submit --no-wait`: return the job id instead of following it
    overlap: bool = True  # workers start once the head's GCS answers (False: after `ray start --head`)
    recipe: Recipe = BASH_RECIPE
    variant: Variant = Variant()  # profile, hardware, MTP/MIS/R3/FP8 (variants.py)
    overrides: Overrides = Overrides()  # --set/--unset/--extra-args/--env (overrides.py)
    external_ray: bool = False  # submit to a running cluster: no Ray cleanup, no ray start anywhere
    hold_workers: bool = False  # keep an ssh session to every worker open until the job ends
    # The Python launchers' inputs (named like upstream's options) and facts.
    output_dir: str | None = None  # None: the profile's (python: base_dir; python-8node: /root/shared_data)
    run_id: str | None = None  # None: DEFAULT_RUN_ID (a plan is the same from `plan` to `up`)
    model_local_dir: str | None = None  # None: base_dir; the job reads the checkpoints from here
    model_dir: str | None = None  # None: the profile's (python: base_dir; python-8node: /root/models)
    data_dir: str | None = None  # None: the profile's (python: base_dir; python-8node: /root/datasets)
    megatron_path: str = DEFAULT_MEGATRON_PATH  # the conversion's PYTHONPATH (python profiles: the job's too)
    save: bool = False  # python-8node: --save OUT/checkpoints every 20 rollouts
    num_rollout: int | None = None  # python-8node: None: 3000
    wandb_key: str | None = None  # WANDB_API_KEY: the python profiles pass the wandb flags
    nvlink: NvlinkFact = NvlinkFact()  # the head's NVLink (python profile: NCCL_NVLS_ENABLE)
    # The launcher's own environment, as read where it runs (profiles.LAUNCHER_ENV: what the python
    # profiles copy into the runtime env when set, as upstream does).
    launcher_env: tuple[tuple[str, str], ...] = ()
    # The network check after the join, before the submit (core/netcheck.py); None: none. The
    # CLI's `plan`, `up` and `netcheck` give one unless --no-netcheck.
    netcheck: NetcheckSettings | None = None


@dataclass(frozen=True)
class ClusterFacts:
    """The Ray cluster a plan brings up, as resolved from the spec and the recipe."""

    head: str
    workers: tuple[str, ...]  # hostfile order, the head excluded
    gpus_per_node: int
    ray_port: int
    dashboard_host: str  # what the dashboard binds
    dashboard_port: int
    job_host: str  # where the launcher reaches the job server (127.0.0.1 unless bound elsewhere)
    job_address: str  # the job server URL `ray job submit` uses
    ssh_user: str
    ray_temp_dir: str = DEFAULT_RAY_TEMP  # --temp-dir of the head's `ray start` (every node's session logs)

    @property
    def nodes(self) -> tuple[str, ...]:
        """Every node: the head, then the workers."""
        return (self.head, *self.workers)

    @property
    def total_gpus(self) -> int:
        return len(self.nodes) * self.gpus_per_node

    @property
    def head_ports(self) -> tuple[tuple[str, int, str], ...]:
        """(host, port, what) the head's Ray needs: the GCS and the job server."""
        return ((self.head, self.ray_port, "Ray GCS"), (self.job_host, self.dashboard_port, "dashboard"))


@dataclass(frozen=True)
class Dirs:
    """Where a launch's files are, as resolved: the shared model and data directories, each node's
    local copy of the model, and the run's output (the python profiles' options, else BASE_DIR)."""

    model: str
    data: str
    model_local: str
    output: str


@dataclass(frozen=True)
class TrainArgs:
    """The job's entrypoint: ``entry`` (``python3 train.py``), then ``prefix`` and the groups."""

    entry: Argv
    prefix: Argv  # --actor-num-nodes ... before the groups
    groups: tuple[tuple[str, Argv], ...]

    @property
    def argv(self) -> Argv:
        """train.py's arguments: the prefix, then every group in order."""
        return self.prefix + tuple(w for _, words in self.groups for w in words)

    @property
    def entrypoint(self) -> Argv:
        return self.entry + self.argv


@dataclass(frozen=True)
class Plan:
    """The ordered steps of a launch plus what a reader needs to trust them."""

    steps: tuple[Step, ...]
    spec: LaunchSpec
    cluster: ClusterFacts
    train: TrainArgs
    settings: tuple[tuple[str, str], ...]  # for display only: read the typed facts instead
    env_vars: tuple[tuple[str, str], ...]  # the runtime env as submitted
    recipe_name: str  # the recipe the plan runs: the profile's (``spec.recipe`` is the bash recipe or a file)
    model: ModelSpec
    job: JobFacts  # the sizes and checkpoint paths train.py reads from ``train``
    dirs: Dirs
    on_failure: tuple[Step, ...] = ()  # teardown of what a failed launch started
    on_interrupt: tuple[Step, ...] = ()  # Ctrl-C while the job runs
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default_factory=tuple)
    overrides: tuple[ArgChange | EnvChange, ...] = ()  # --set/--unset/--extra-args/--env vs the recipe
    variant_changes: tuple[ArgChange | EnvChange, ...] = ()  # --profile/--mtp/... vs the recipe

    @property
    def head(self) -> str:
        return self.cluster.head

    @property
    def cluster_hosts(self) -> list[str]:
        """Every node of the Ray cluster: the head, then the workers in hostfile order."""
        return list(self.cluster.nodes)

    @property
    def gpus_per_node(self) -> int:
        return self.cluster.gpus_per_node

    @property
    def job_address(self) -> str:
        """The job server URL the submission uses (``--address=`` of ``ray job submit``)."""
        return self.cluster.job_address

    @property
    def train_groups(self) -> tuple[tuple[str, Argv], ...]:
        """The filled train.py args, by group."""
        return self.train.groups

    @property
    def worker_steps(self) -> list[Step]:
        return [s for s in self.steps if s.kind == WorkerStartStep.kind]

    def step(self, kind: str) -> Step | None:
        return next((s for s in self.steps if s.kind == kind), None)

    @property
    def submit_argv(self) -> list[str]:
        step = self.step(SubmitStep.kind)
        if step is None:
            raise LaunchError("the plan submits no job")
        return list(step.commands[0])

    @property
    def train_argv(self) -> list[str]:
        """The job's entrypoint argv (after ``--``)."""
        return list(self.train.entrypoint)

    def invocations(self) -> list[list[str]]:
        """Bash-equivalent argv: head-side commands in order, then ssh per worker by host."""
        user = self.cluster.ssh_user
        return canonical_order(a for s in self.steps for a in s.invocations(user))

    def to_json(self) -> dict[str, Any]:
        user = self.cluster.ssh_user
        return {
            "recipe": self.recipe_name,
            "settings": dict(self.settings),
            "notes": list(self.notes),
            "warnings": list(self.warnings),
            "invocations": self.invocations(),
            "steps": [s.to_json(user) for s in self.steps],
            "train_args": {g: list(w) for g, w in self.train_groups},
            "runtime_env": {"env_vars": dict(self.env_vars)},
            "overrides": [c.to_json() for c in self.overrides],
            "variant_changes": [c.to_json() for c in self.variant_changes],
            "cluster": {
                "head": self.cluster.head, "nodes": list(self.cluster.nodes),
                "gpus_per_node": self.cluster.gpus_per_node, "total_gpus": self.cluster.total_gpus,
                "ray_port": self.cluster.ray_port, "dashboard_port": self.cluster.dashboard_port,
                "job_address": self.cluster.job_address,
            },
            "train": {"entry": list(self.train.entry), "prefix": list(self.train.prefix)},
            "on_failure": [s.to_json(user) for s in self.on_failure],
            "on_interrupt": [s.to_json(user) for s in self.on_interrupt],
        }


