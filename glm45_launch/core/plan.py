"""Planning: inputs -> the ordered steps a launch runs, with the facts they were made from.

Pure: no I/O, no SSH. The plan is the contract: ``glm45-launch plan`` prints it, the
parity tests compare it with the bash recipe, and the executor runs exactly its steps.
What the plan resolved (nodes, GPUs, ports, the job address, the train argv by group, the
runtime env) it keeps as typed facts, so nothing downstream parses text or argv again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from glm45_launch.core.argdiff import ArgChange, EnvChange
from glm45_launch.core.flags import Argv, flag_value
from glm45_launch.core.hostfile import Hostfile, check_workers, host_key, valid_hostname
from glm45_launch.core.job_facts import JobFacts
from glm45_launch.core.launch_steps import build_down_plan, hold_steps, launch_steps, stop_job, teardown_steps
from glm45_launch.core.overrides import Overrides
from glm45_launch.core.profiles import NvlinkFact, default_model, profile_recipe
from glm45_launch.core.runtime_env import env_refs, resolve_env, runtime_env_json
from glm45_launch.core.steps import (
    HEAD,
    WORKER,
    JoinStep,
    Step,
    SubmitStep,
    WorkerStartStep,
    WriteFileStep,
    canonical_order,
)
from glm45_launch.core.variants import Variant, shape_recipe
from glm45_launch.errors import LaunchError
from glm45_launch.recipes import BASH_RECIPE, ModelSpec, Recipe, fill, fill_all, get_model

__all__ = [
    "FRAMEWORKS", "HEAD", "WORKER", "ClusterFacts", "JobFacts", "LaunchSpec", "NvlinkFact", "Plan", "Step", "TrainArgs",
    "build_down_plan", "build_plan",
]

FRAMEWORKS = ("miles", "slime")
_WILDCARDS = ("0.0.0.0", "::")  # --dashboard-host values that bind every interface
_LOOPBACK = ("127.0.0.1", "localhost")  # where the recipe's `ray job submit` finds the dashboard
_SSH_USER = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
DEFAULT_RUN_ID = "default"
DEFAULT_RAY_TEMP = "/tmp/ray"  # Ray's --temp-dir when `ray start --head` gives none
_JOIN_NOTE = {  # what the profile's own launcher does instead
    "bash": "(the bash recipe waits for the ssh commands only)",
    "python": "(upstream expects them in the cluster already)",
    "air-p2p": "(the script's head polls Ray's GPU count the same way)",
}


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
    # The Python launcher's inputs (named like upstream's options) and facts.
    output_dir: str | None = None  # None: base_dir; checkpoints in OUT/RUN/checkpoints, dumps in OUT/RUN/dump_details
    run_id: str | None = None  # None: DEFAULT_RUN_ID (a plan is the same from `plan` to `up`)
    model_local_dir: str | None = None  # None: base_dir; the job reads the checkpoints from here
    wandb_key: str | None = None  # WANDB_API_KEY: the python profile passes the wandb flags
    nvlink: NvlinkFact = NvlinkFact()  # the head's NVLink (python profile: NCCL_NVLS_ENABLE)


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


def _require(spec: LaunchSpec) -> tuple[str, str]:
    if not spec.head:
        raise LaunchError("no head address: set MLP_WORKER_0_HOST or give --head")
    if not valid_hostname(spec.head):
        raise LaunchError(f"--head: {spec.head!r} is not an IPv4/IPv6 address or a DNS name")
    if not spec.base_dir:
        raise LaunchError("no base dir: set BASE_DIR or give --base-dir")
    if spec.framework not in FRAMEWORKS:
        raise LaunchError(f"--framework: {spec.framework!r} is not one of {', '.join(FRAMEWORKS)}")
    if not _SSH_USER.match(spec.ssh_user):
        raise LaunchError(f"--ssh-user: {spec.ssh_user!r} is not a valid user name")
    if spec.save_interval < 1:
        raise LaunchError(f"--save-interval: must be >= 1, got {spec.save_interval}")
    if spec.actor_num_nodes is not None and spec.actor_num_nodes < 1:
        raise LaunchError(f"--actor-num-nodes: must be >= 1, got {spec.actor_num_nodes}")
    if not spec.entry.strip() or spec.entry != spec.entry.strip():
        raise LaunchError(f"--entry: {spec.entry!r} is not a script path")
    if spec.checkpoint_dir is not None and not spec.checkpoint_dir.strip():
        raise LaunchError("--checkpoint-dir: empty path")
    if spec.socket_ifname is not None and not re.fullmatch(r"[A-Za-z0-9_.:@-]{1,15}", spec.socket_ifname):
        raise LaunchError(f"--socket-ifname: {spec.socket_ifname!r} is not an interface name")
    python = spec.variant.profile == "python"
    for name, value in (("--output-dir", spec.output_dir), ("--run-id", spec.run_id),
                        ("--model-local-dir", spec.model_local_dir)):
        if value is not None and not python:
            raise LaunchError(f"{name}: an option of --profile python (the Python launcher's), "
                              f"not of --profile {spec.variant.profile}")
        if value is not None and (not value.strip() or value != value.strip()):
            raise LaunchError(f"{name}: {value!r} is not a path")
    if spec.run_id is not None and not _RUN_ID.match(spec.run_id):
        raise LaunchError(f"--run-id: {spec.run_id!r} is not a name (letters, digits, . _ -; it names a directory)")
    return spec.head, spec.base_dir


def _env_values(spec: LaunchSpec, head: str) -> dict[str, str]:
    """Values for the ${VAR}s of the runtime env, as the orchestrator would set them."""
    values = {"MASTER_ADDR": head, "MLP_WORKER_0_HOST": head}
    if spec.socket_ifname:
        values["MLP_SOCKET_IFNAME"] = spec.socket_ifname
    return values


def _port(values: dict[str, str], key: str) -> int:
    try:
        return int(values[key])
    except (KeyError, ValueError):
        raise LaunchError(f"recipe [defaults] {key}: {values.get(key)!r} is not a port") from None


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def build_plan(spec: LaunchSpec) -> Plan:
    """Turn ``spec`` into the ordered steps of a launch (pure)."""
    head, base_dir = _require(spec)
    check_workers(spec.hostfile, head)
    profile = spec.variant.profile
    base_recipe = profile_recipe(profile, spec.recipe)
    model = get_model(spec.model or default_model(profile))
    if profile == "air-p2p" and model.name != default_model(profile):
        raise LaunchError(f"--model {model.name}: --profile air-p2p is the GLM-4.5-Air recipe "
                          f"({default_model(profile)}); its layout does not fit another model")
    hosts = spec.hostfile.names
    workers = tuple(h for h in hosts if host_key(h) != host_key(head))
    # The recipe this launch runs: MODEL filled, the profile's job, the variant, then the overrides.
    shaped = shape_recipe(
        base_recipe, model=model, variant=spec.variant, overrides=spec.overrides, hostfile=spec.hostfile,
        gpus_per_node=spec.gpus_per_node, nodes=1 + len(workers), actor_num_nodes=spec.actor_num_nodes,
        nvlink=spec.nvlink, wandb=bool(spec.wandb_key),
    )
    recipe = shaped.recipe
    gpus = shaped.gpus_per_node
    values = {**recipe.defaults}
    values.update(
        base_dir=base_dir, head=head, gpus_per_node=str(gpus), framework=spec.framework,
        ckpt_name=model.checkpoint_name, entry=spec.entry,
        model_local_dir=(spec.model_local_dir or base_dir).rstrip("/") or "/",
        output_dir=(spec.output_dir or base_dir).rstrip("/") or "/",
        run_id=spec.run_id or DEFAULT_RUN_ID, wandb_key=spec.wandb_key or "",
    )
    if spec.actor_num_nodes is not None:
        values["actor_num_nodes"] = str(spec.actor_num_nodes)
    if spec.dashboard_host is not None:
        if not valid_hostname(spec.dashboard_host):
            raise LaunchError(f"--dashboard-host: {spec.dashboard_host!r} is not an address")
        if not any("{dashboard_host}" in w for w in recipe.head_start):
            raise LaunchError(f"--dashboard-host: the {recipe.name} recipe's head start passes no --dashboard-host "
                              f"(Ray's default, {values['dashboard_host']}, is what it binds)")
        values["dashboard_host"] = spec.dashboard_host

    notes: list[str] = [fill(n, values) for n in shaped.notes]
    warnings: list[str] = list(shaped.warnings)

    # train.py arguments, by group.
    groups = dict(recipe.groups)
    if not groups.get("MODEL"):
        groups["MODEL"] = model.args
    if spec.checkpoint_dir is not None:
        groups["CKPT"] = tuple(groups.get("CKPT", ())) + (
            "--load", spec.checkpoint_dir, "--save", spec.checkpoint_dir,
            "--save-interval", str(spec.save_interval),
        )
    train = TrainArgs(
        entry=fill_all(recipe.entry, values), prefix=fill_all(recipe.train_prefix, values),
        groups=tuple((g, fill_all(groups.get(g, ()), values)) for g in recipe.group_order),
    )
    job = JobFacts.of(train.argv)
    ref_load, load, save = job.ref_load, job.load, job.save
    if spec.checkpoint_dir is not None:
        notes.append(
            f"--load/--save = {spec.checkpoint_dir} every {spec.save_interval} rollouts; "
            f"until it holds latest_checkpointed_iteration.txt the trainer loads --ref-load {ref_load}"
        )
    elif load is None and save is None:
        notes.append(f"effective --load = {ref_load}; no checkpoints are saved")
    elif load:
        notes.append(f"--load/--save = {load}: until it holds latest_checkpointed_iteration.txt the trainer "
                     f"loads --ref-load {ref_load}" + (" (--run-id names the run to resume)" if spec.run_id is None
                                                       and profile == "python" else ""))

    # Runtime env: literal ${VAR}s for Ray to expand on each node, unless resolved.
    env_vars = [(k, fill(v, values)) for k, v in recipe.env_vars]
    refs = env_refs(env_vars)
    env_values = _env_values(spec, head)
    if spec.resolve_env:
        env_vars = resolve_env(env_vars, env_values, "--resolve-env")
        notes.append("--resolve-env: the runtime env holds values, not ${VAR}s (differs from the bash recipe)")
    elif refs:
        notes.append(
            "Ray expands " + ", ".join(f"${{{r}}}" for r in refs)
            + " in the runtime env from each node's own environment"
            " (Ray 2.60 makes an unset one empty; older Ray left it literal)"
        )
    exports: tuple[tuple[str, str], ...] = ()
    if spec.export_env:
        missing = [r for r in refs if r not in env_values]
        if missing:
            raise LaunchError(f"--export-env: no value for ${{{missing[0]}}} (give --socket-ifname)")
        exports = tuple((r, env_values[r]) for r in refs)
        notes.append(
            "--export-env: ray start runs under `env " + " ".join(f"{k}={v}" for k, v in exports)
            + "` on every node (differs from the bash recipe)" if exports
            else "--export-env: the runtime env has no ${VAR}s, nothing to export"
        )

    if any(c.isspace() for c in base_dir):
        words = len(base_dir.split())
        warnings.append(
            f"BASE_DIR {base_dir!r} contains whitespace: kept as one word here; "
            f"the bash recipe would split each path into {words} words"
        )
    dashboard = values["dashboard_host"]
    dashboard_port = _port(values, "dashboard_port")
    if dashboard in _WILDCARDS and not spec.external_ray:
        warnings.append(
            f"the Ray dashboard on the head listens on {_url_host(dashboard)}:{dashboard_port} (all interfaces, "
            "as in the bash recipe) and accepts job submissions without authentication from anyone who "
            "can reach it: --dashboard-host 127.0.0.1 (or the head's address) limits it"
        )
    if len(workers) == len(hosts):
        notes.append(f"head {head} is not in {spec.hostfile.path}: every listed host joins as a worker")
    if profile == "bash" and spec.gpus_per_node is None and gpus != 8 and {h.slots for h in spec.hostfile.hosts} == {gpus}:
        notes.append(f"{gpus} GPUs per node from the hostfile's slots= (the bash recipe ignores slots and uses 8)")

    # Where the launcher reaches the job server: loopback unless the dashboard binds one address.
    job_host = "127.0.0.1" if dashboard in _WILDCARDS + _LOOPBACK else dashboard
    submit = fill_all(recipe.submit, {**values, "runtime_env_json": runtime_env_json(env_vars)})
    if spec.no_wait:
        cut = submit.index("submit") + 1
        submit = submit[:cut] + ("--no-wait",) + submit[cut:]
        notes.append("--no-wait: `ray job submit --no-wait` prints the job id and returns (deviation)")
    if job_host != "127.0.0.1":
        # The job server listens on that address only: submit there, not to 127.0.0.1.
        submit = tuple(w.replace("//127.0.0.1:", f"//{_url_host(job_host)}:", 1) if w.startswith("--address=")
                       else w for w in submit)
        notes.append(f"--dashboard-host {dashboard}: the job is submitted to http://{_url_host(job_host)}:"
                     f"{dashboard_port} (the dashboard does not listen on 127.0.0.1)")
    address = next((w.removeprefix("--address=") for w in submit if w.startswith("--address=")),
                   f"http://{_url_host(job_host)}:{dashboard_port}")
    cluster = ClusterFacts(
        head=head, workers=workers, gpus_per_node=gpus, ray_port=_port(values, "ray_port"),
        dashboard_host=dashboard, dashboard_port=dashboard_port, job_host=job_host, job_address=address,
        ssh_user=spec.ssh_user,
        ray_temp_dir=(None if spec.external_ray else flag_value(fill_all(recipe.head_start, values), "--temp-dir"))
        or DEFAULT_RAY_TEMP,
    )

    head_env = tuple((k, fill(v, values)) for k, v in recipe.head_exports)
    steps = launch_steps(spec, recipe, cluster, values, head_env, exports)
    if spec.external_ray:
        notes.append(f"--external-ray: the job goes to the Ray cluster already running at {address}: no Ray "
                     "cleanup, no ray start anywhere, nothing stopped after a failure")
    if spec.hold_workers and spec.no_wait:
        raise LaunchError("--hold-workers with --no-wait: up returns once the job is submitted, and the held "
                          "ssh sessions end with it; drop one of them")
    if spec.hold_workers and workers:
        notes.append("--hold-workers: an ssh session to every worker stays open until the job ends "
                     "(until up returns)")
    steps.append(JoinStep(
        where=HEAD, host=head, hosts=cluster.nodes, gpus=cluster.total_gpus, address=cluster.job_address,
        purpose=f"wait until {len(cluster.nodes)} node(s) and {cluster.total_gpus} GPUs have joined "
        + ("(the external cluster)" if spec.external_ray else _JOIN_NOTE.get(profile, "")),
    ))
    if spec.hold_workers:
        steps += hold_steps(workers)
    for path, content in shaped.files:  # e.g. --mis's YAML; written on the head before the job starts
        steps.append(WriteFileStep(
            where=HEAD, host=head, files=((fill(path, values), content),),
            purpose=f"write {fill(path, values)} (the job reads it)",
        ))
    submit_env = head_env + tuple((k, fill(v, values)) for k, v in recipe.submit_env)
    steps.append(SubmitStep(
        where=HEAD, host=head, commands=(submit + train.entrypoint,), options=submit, env=submit_env,
        cwd=spec.workdir, address=cluster.job_address, no_wait=spec.no_wait,
        purpose=f"submit `python3 {spec.entry}` to the cluster through the head's job server",
    ))

    # The actor's size as the trainer reads it, overrides included (too few nodes: rules.check_plan says so).
    actor_nodes = flag_value(train.argv, "--actor-num-nodes")  # as written, for display
    settings = (
        ("recipe", recipe.name),
        ("model", model.name),
        ("framework", spec.framework),
        ("hostfile", f"{spec.hostfile.path} ({len(hosts)} host(s))"),
        ("head", head + ("" if len(workers) < len(hosts) else " (not in the hostfile)")),
        ("nodes", str(len(cluster.nodes))),
        ("GPUs per node", str(gpus)),
        ("actor nodes", "not given" if actor_nodes is None else actor_nodes),
        ("base dir", base_dir),
        ("workdir", spec.workdir),
        ("ssh user", spec.ssh_user),
        ("dashboard", f"{dashboard}:{dashboard_port}"),
        ("ray port", str(cluster.ray_port)),
        ("cleanup", "yes" if spec.cleanup else "no (--no-cleanup)"),
    ) + (("ray cluster", "external (--external-ray)"),) * spec.external_ray + shaped.settings
    if profile == "python":
        settings += (("run", f"{values['output_dir']}/{values['run_id']}"),)
    return Plan(
        steps=tuple(steps), spec=spec, cluster=cluster, train=train, settings=settings,
        env_vars=tuple(env_vars), recipe_name=recipe.name, model=model,
        job=job, on_failure=() if spec.external_ray else teardown_steps(cluster),
        on_interrupt=(stop_job(cluster),), notes=tuple(notes), warnings=tuple(warnings),
        overrides=tuple(c.filled(values) for c in shaped.override_changes),
        variant_changes=tuple(c.filled(values) for c in shaped.variant_changes),
    )
