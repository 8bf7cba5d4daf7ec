"""Planning: inputs -> the ordered list of commands a launch runs. Pure: no I/O, no SSH.

The plan is the contract: ``glm45-launch plan`` prints it, the parity tests compare it
with the bash recipe, and the executor runs exactly its steps.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from glm45_launch.core.argdiff import ArgChange, EnvChange
from glm45_launch.core.hostfile import Hostfile, host_key, valid_hostname
from glm45_launch.core.overrides import Overrides
from glm45_launch.core.quoting import remote_command
from glm45_launch.core.variants import Variant, shape_recipe
from glm45_launch.errors import LaunchError
from glm45_launch.recipes import BASH_RECIPE, Argv, Recipe, fill, fill_all, get_model, split_flags

FRAMEWORKS = ("miles", "slime")
HEAD = "head"
WORKER = "worker"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_WILDCARDS = ("0.0.0.0", "::")  # --dashboard-host values that bind every interface
_LOOPBACK = ("127.0.0.1", "localhost")  # where the recipe's `ray job submit` finds the dashboard
_SSH_USER = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")


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
    model: str = "glm4.5-355B-A32B"
    resolve_env: bool = False  # put values instead of ${VAR} into the runtime env
    export_env: bool = False  # export the ${VAR}s the runtime env uses into ray start
    checkpoint_dir: str | None = None
    save_interval: int = 20
    entry: str = "train.py"
    dashboard_host: str | None = None  # None: the recipe's 0.0.0.0
    cleanup: bool = True
    no_wait: bool = False  # `ray job submit --no-wait`: return the job id instead of following it
    recipe: Recipe = BASH_RECIPE
    variant: Variant = Variant()  # profile, hardware, MTP/MIS/R3/FP8 (variants.py)
    overrides: Overrides = Overrides()  # --set/--unset/--extra-args/--env (overrides.py)


@dataclass(frozen=True)
class Step:
    """One step: where it runs, what it runs, and why."""

    kind: str  # cleanup | head-start | worker-start | join | submit
    where: str  # HEAD or WORKER
    host: str
    purpose: str
    commands: tuple[Argv, ...] = ()
    env: tuple[tuple[str, str], ...] = ()  # exported before the commands (head side)
    cwd: str | None = None
    ignore_errors: bool = False
    # `pkill -9 python` on the head would kill a Python launcher: the executor spares its
    # own process and ancestors when this is set.
    spare_launcher: bool = False
    # kind "write-file": (path, content) the executor writes on `host` before later steps.
    files: tuple[tuple[str, str], ...] = ()

    def invocations(self, ssh_user: str) -> list[list[str]]:
        """The argv the bash recipe would run for this step."""
        if self.where == WORKER:
            return [["ssh", f"{ssh_user}@{self.host}", remote_command(self.commands)]]
        return [list(c) for c in self.commands]

    def to_json(self, ssh_user: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "where": self.where,
            "host": self.host,
            "purpose": self.purpose,
            "commands": [list(c) for c in self.commands],
        }
        if self.where == WORKER:
            out["remote_command"] = remote_command(self.commands)
            out["ssh"] = f"{ssh_user}@{self.host}"
        if self.env:
            out["env"] = dict(self.env)
        if self.cwd:
            out["cwd"] = self.cwd
        out["ignore_errors"] = self.ignore_errors
        if self.spare_launcher:
            out["spare_launcher"] = True
        if self.files:
            out["files"] = [{"path": p, "content": c} for p, c in self.files]
        return out


@dataclass(frozen=True)
class Plan:
    """The ordered steps of a launch plus what a reader needs to trust them."""

    steps: tuple[Step, ...]
    spec: LaunchSpec
    settings: tuple[tuple[str, str], ...]
    train_groups: tuple[tuple[str, Argv], ...]  # the filled train.py args, by group
    env_vars: tuple[tuple[str, str], ...]  # the runtime env as submitted
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default_factory=tuple)
    overrides: tuple[ArgChange | EnvChange, ...] = ()  # --set/--unset/--extra-args/--env vs the recipe
    variant_changes: tuple[ArgChange | EnvChange, ...] = ()  # --profile/--mtp/... vs the recipe

    @property
    def head(self) -> str:
        assert self.spec.head is not None
        return self.spec.head

    @property
    def cluster_hosts(self) -> list[str]:
        """Every node of the Ray cluster: the head, then the workers in hostfile order."""
        return [self.head] + [s.host for s in self.worker_steps]

    @property
    def gpus_per_node(self) -> int:
        return int(dict(self.settings)["GPUs per node"])

    @property
    def worker_steps(self) -> list[Step]:
        return [s for s in self.steps if s.kind == "worker-start"]

    def step(self, kind: str) -> Step | None:
        return next((s for s in self.steps if s.kind == kind), None)

    @property
    def submit_argv(self) -> list[str]:
        step = self.step("submit")
        assert step is not None
        return list(step.commands[0])

    @property
    def job_address(self) -> str:
        """The job server URL the submission uses (``--address=`` of ``ray job submit``)."""
        for word in self.submit_argv:
            if word.startswith("--address="):
                return word.removeprefix("--address=")
        return "http://127.0.0.1:8265"

    @property
    def train_argv(self) -> list[str]:
        """The job's entrypoint argv (after ``--``)."""
        argv = self.submit_argv
        return argv[argv.index("--") + 1 :]

    def invocations(self) -> list[list[str]]:
        """Bash-equivalent argv: head-side commands in order, then ssh per worker by host."""
        head = [a for s in self.steps if s.where == HEAD for a in s.invocations(self.spec.ssh_user)]
        ssh = [a for s in self.worker_steps for a in s.invocations(self.spec.ssh_user)]
        return head + sorted(ssh, key=lambda a: a[1:])

    def to_json(self) -> dict[str, Any]:
        return {
            "recipe": self.spec.recipe.name,
            "settings": dict(self.settings),
            "notes": list(self.notes),
            "warnings": list(self.warnings),
            "invocations": self.invocations(),
            "steps": [s.to_json(self.spec.ssh_user) for s in self.steps],
            "train_args": {g: list(w) for g, w in self.train_groups},
            "runtime_env": {"env_vars": dict(self.env_vars)},
            "overrides": [c.to_json() for c in self.overrides],
            "variant_changes": [c.to_json() for c in self.variant_changes],
        }


def runtime_env_json(env_vars: Sequence[tuple[str, str]]) -> str:
    """The runtime env as the bash recipe writes it (its exact layout, keys in order)."""
    body = ",\n".join(f"        {json.dumps(k)}: {json.dumps(v)}" for k, v in env_vars)
    return '{\n     "env_vars": {\n' + body + "\n     }\n   }"


def env_refs(env_vars: Sequence[tuple[str, str]]) -> list[str]:
    """The ``${VAR}`` names the runtime env leaves for Ray to expand, in first-use order."""
    seen: dict[str, None] = {}
    for _, value in env_vars:
        for name in _ENV_REF.findall(value):
            seen.setdefault(name)
    return list(seen)


def flag_value(words: Sequence[str], flag: str) -> str | None:
    """The last value given to ``flag`` in ``words`` (argparse keeps the last)."""
    found = None
    for name, values in split_flags(words):
        if name == flag:
            found = values[0] if values else ""
    return found


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
    return spec.head, spec.base_dir


def _env_values(spec: LaunchSpec, head: str) -> dict[str, str]:
    """Values for the ${VAR}s of the runtime env, as the orchestrator would set them."""
    values = {"MASTER_ADDR": head, "MLP_WORKER_0_HOST": head}
    if spec.socket_ifname:
        values["MLP_SOCKET_IFNAME"] = spec.socket_ifname
    return values


def _resolve_env(env_vars: Sequence[tuple[str, str]], values: Mapping[str, str], flag: str) -> list[tuple[str, str]]:
    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in values:
            option = " (give --socket-ifname or set it)" if name == "MLP_SOCKET_IFNAME" else ""
            raise LaunchError(f"{flag}: no value for ${{{name}}}{option}")
        return values[name]

    return [(k, _ENV_REF.sub(sub, v)) for k, v in env_vars]


def build_plan(spec: LaunchSpec) -> Plan:
    """Turn ``spec`` into the ordered steps of a launch (pure)."""
    head, base_dir = _require(spec)
    model = get_model(spec.model)
    # The recipe this launch runs: MODEL filled, then the variant, then the overrides.
    shaped = shape_recipe(
        spec.recipe, model=model, variant=spec.variant, overrides=spec.overrides, hostfile=spec.hostfile,
        gpus_per_node=spec.gpus_per_node, nodes=1 + sum(host_key(h) != host_key(head) for h in spec.hostfile.names),
        actor_num_nodes=spec.actor_num_nodes,
    )
    recipe = shaped.recipe
    gpus = shaped.gpus_per_node
    values = {**recipe.defaults}
    values.update(
        base_dir=base_dir, head=head, gpus_per_node=str(gpus), framework=spec.framework,
        ckpt_name=model.checkpoint_name, entry=spec.entry,
    )
    if spec.actor_num_nodes is not None:
        values["actor_num_nodes"] = str(spec.actor_num_nodes)
    if spec.dashboard_host is not None:
        if not valid_hostname(spec.dashboard_host):
            raise LaunchError(f"--dashboard-host: {spec.dashboard_host!r} is not an address")
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
    train_groups = tuple((g, fill_all(groups.get(g, ()), values)) for g in recipe.group_order)
    train_words = [w for _, words in train_groups for w in words]
    ref_load = flag_value(train_words, "--ref-load")
    if spec.checkpoint_dir is None:
        notes.append(f"effective --load = {ref_load}; no checkpoints are saved")
    else:
        notes.append(
            f"--load/--save = {spec.checkpoint_dir} every {spec.save_interval} rollouts; "
            f"until it holds latest_checkpointed_iteration.txt the trainer loads --ref-load {ref_load}"
        )

    # Runtime env: literal ${VAR}s for Ray to expand on each node, unless resolved.
    env_vars = list(recipe.env_vars)
    refs = env_refs(env_vars)
    env_values = _env_values(spec, head)
    if spec.resolve_env:
        env_vars = _resolve_env(env_vars, env_values, "--resolve-env")
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
            + "` on every node (differs from the bash recipe)"
        )

    if any(c.isspace() for c in base_dir):
        words = len(base_dir.split())
        warnings.append(
            f"BASE_DIR {base_dir!r} contains whitespace: kept as one word here; "
            f"the bash recipe would split each path into {words} words"
        )
    dashboard = values["dashboard_host"]
    if dashboard in _WILDCARDS:
        shown = f"[{dashboard}]" if ":" in dashboard else dashboard
        warnings.append(
            f"the Ray dashboard on the head listens on {shown}:{values['dashboard_port']} (all interfaces, "
            "as in the bash recipe) and accepts job submissions without authentication from anyone who "
            "can reach it: --dashboard-host 127.0.0.1 (or the head's address) limits it"
        )

    hosts = spec.hostfile.names
    workers = [h for h in hosts if host_key(h) != host_key(head)]
    if len(workers) == len(hosts):
        notes.append(f"head {head} is not in {spec.hostfile.path}: every listed host joins as a worker")
    if spec.gpus_per_node is None and gpus != 8 and {h.slots for h in spec.hostfile.hosts} == {gpus}:
        notes.append(f"{gpus} GPUs per node from the hostfile's slots= (the bash recipe ignores slots and uses 8)")
    nodes = 1 + len(workers)
    actor_nodes = int(values["actor_num_nodes"])  # too few nodes: validate.check_plan says so

    steps: list[Step] = []
    if spec.cleanup:
        steps.append(Step(
            kind="cleanup", where=HEAD, host=head, commands=tuple(recipe.head_cleanup),
            ignore_errors=True, spare_launcher=True,
            purpose="stop leftovers of a previous run (errors ignored; "
            "`pkill -9 python` spares the launcher and its ancestors)",
        ))
    head_env = tuple((k, fill(v, values)) for k, v in recipe.head_exports)
    head_start = fill_all(recipe.head_start, values)
    if exports:
        head_start = ("env", *(f"{k}={v}" for k, v in exports), *head_start)
    steps.append(Step(
        kind="head-start", where=HEAD, host=head, commands=(head_start,), env=head_env,
        cwd=spec.workdir, purpose=f"start the Ray head in {spec.workdir} (the job's cwd)",
    ))
    for host in workers:
        host_values = {**values, "host": host}
        commands = [fill_all(c, host_values) for c in recipe.worker_commands]
        if not spec.cleanup:
            commands = [c for c in commands if c[:2] == ("ray", "start")]
        if exports:
            commands = [("env", *(f"{k}={v}" for k, v in exports), *c) if c[:2] == ("ray", "start") else c
                        for c in commands]
        # The " ; " inside the remote command ignores the cleanup's errors, as in the recipe;
        # the step's own status is `ray start`'s, and a failure stops the launch (never silent).
        steps.append(Step(
            kind="worker-start", where=WORKER, host=host, commands=tuple(commands),
            purpose=f"join {host} to the cluster at {head}",
        ))
    steps.append(Step(
        kind="join", where=HEAD, host=head,
        purpose=f"wait until {nodes} node(s) and {nodes * gpus} GPUs have joined "
        "(the bash recipe waits for the ssh commands only)",
    ))
    submit_values = {**values, "runtime_env_json": runtime_env_json(env_vars)}
    submit = (
        fill_all(recipe.submit, submit_values) + fill_all(recipe.entry, values)
        + fill_all(recipe.train_prefix, values) + tuple(train_words)
    )
    if spec.no_wait:
        cut = submit.index("submit") + 1
        submit = submit[:cut] + ("--no-wait",) + submit[cut:]
        notes.append("--no-wait: `ray job submit --no-wait` prints the job id and returns (deviation)")
    if dashboard not in _WILDCARDS + _LOOPBACK:
        # The job server listens on that address only: submit there, not to 127.0.0.1.
        url_host = f"[{dashboard}]" if ":" in dashboard else dashboard
        submit = tuple(w.replace("//127.0.0.1:", f"//{url_host}:", 1) if w.startswith("--address=") else w
                       for w in submit)
        notes.append(f"--dashboard-host {dashboard}: the job is submitted to http://{url_host}:"
                     f"{values['dashboard_port']} (the dashboard does not listen on 127.0.0.1)")
    for path, content in shaped.files:  # e.g. --mis's YAML; written on the head before the job starts
        steps.append(Step(
            kind="write-file", where=HEAD, host=head, files=((fill(path, values), content),),
            purpose=f"write {fill(path, values)} (the job reads it)",
        ))
    steps.append(Step(
        kind="submit", where=HEAD, host=head, commands=(submit,), env=head_env, cwd=spec.workdir,
        purpose=f"submit `python3 {spec.entry}` to the cluster through the head's job server",
    ))

    settings = (
        ("recipe", recipe.name),
        ("model", model.name),
        ("framework", spec.framework),
        ("hostfile", f"{spec.hostfile.path} ({len(hosts)} host(s))"),
        ("head", head + ("" if len(workers) < len(hosts) else " (not in the hostfile)")),
        ("nodes", str(nodes)),
        ("GPUs per node", str(gpus)),
        ("actor nodes", str(actor_nodes)),
        ("base dir", base_dir),
        ("workdir", spec.workdir),
        ("ssh user", spec.ssh_user),
        ("dashboard", f"{values['dashboard_host']}:{values['dashboard_port']}"),
        ("ray port", values["ray_port"]),
        ("cleanup", "yes" if spec.cleanup else "no (--no-cleanup)"),
    ) + shaped.settings
    return Plan(
        steps=tuple(steps), spec=spec, settings=settings, train_groups=train_groups,
        env_vars=tuple(env_vars), notes=tuple(notes), warnings=tuple(warnings),
        overrides=tuple(c.filled(values) for c in shaped.override_changes),
        variant_changes=tuple(c.filled(values) for c in shaped.variant_changes),
    )


def build_down_plan(hostfile: Hostfile, head: str | None = None, head_is_local: bool = False) -> list[Step]:
    """Steps that stop Ray everywhere: every hostfile host over SSH, plus the head here
    when it runs the launcher and is not in the hostfile (pure)."""
    stop = ("ray", "stop", "--force")
    steps = [Step(kind="stop", where=WORKER, host=h, commands=(stop,), purpose=f"stop Ray on {h}")
             for h in hostfile.names]
    if head and head_is_local and head not in hostfile.names:
        steps.insert(0, Step(kind="stop", where=HEAD, host=head, commands=(stop,), purpose="stop Ray on the head"))
    return steps
