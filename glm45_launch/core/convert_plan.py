"""Plan the HF -> Megatron torch_dist conversion the bash recipe leaves to the user
(RECIPE.md §6). Pure: ``plan_convert`` returns steps; the command (or the executor) runs them.

One ``torchrun`` per node of the cluster, all at once (they rendezvous at the head)::

    cd WORKDIR && PYTHONPATH=/root/Megatron-LM torchrun --nproc-per-node G --nnodes N \\
        --node-rank I --master-addr HEAD --master-port P tools/convert_hf_to_torch_dist.py \\
        MODEL_ARGS --hf-checkpoint HF --save HF_torch_dist

The head is rank 0, the workers follow in hostfile order (the launch plan's cluster order).
A single node runs RECIPE.md's one-node form (no ``--nnodes/--node-rank/--master-*``).
Before anything runs, the ``check`` step (``test -f SAVE/latest_checkpointed_iteration.txt``
on the head, which sees the shared BASE_DIR) decides: exit 0 means already converted, skip.
The MODEL args, checkpoint paths, hosts and GPUs come from the launch plan, so the
conversion writes exactly the ``--ref-load`` directory the training run loads.

That is RECIPE.md's form (:data:`RECIPE_FORM`); the Python launcher writes its own
(``prepare_plan.py``: rendezvous flags in its order, the script by path, skipped only when the
tracker reads ``release``), the same steps otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from glm45_launch.core.builder import build_plan
from glm45_launch.core.plan import LaunchSpec, Plan
from glm45_launch.core.quoting import quote, shell_join
from glm45_launch.core.steps import HEAD, WORKER, ConvertCheckStep, ConvertStep
from glm45_launch.core.variants import FP8_SUFFIX
from glm45_launch.errors import LaunchError
from glm45_launch.recipes import Argv

CONVERT_SCRIPT = "tools/convert_hf_to_torch_dist.py"
TRACKER = "latest_checkpointed_iteration.txt"
RELEASE = "release"  # what the converter writes into the tracker
DEFAULT_MASTER_PORT = 12345  # the framework's GLM-4.5 example


@dataclass(frozen=True)
class ConvertForm:
    """How a launcher writes each node's torchrun: its rendezvous flags (``{master}``, ``{port}``,
    ``{nnodes}``, ``{rank}``), the script (``{workdir}``: the checkout), whether a lone node gets
    the flags too, and whether the target counts as converted only when the tracker reads
    ``release`` (else: when it exists)."""

    rendezvous: Argv
    script: str
    master_port: int
    lone_rendezvous: bool = False
    needs_release: bool = False


RECIPE_FORM = ConvertForm(
    rendezvous=("--nnodes", "{nnodes}", "--node-rank", "{rank}", "--master-addr", "{master}", "--master-port", "{port}"),
    script=CONVERT_SCRIPT, master_port=DEFAULT_MASTER_PORT,
)


@dataclass(frozen=True)
class ConvertPlan:
    """The conversion for one cluster: a skip check, then one step per node."""

    check: ConvertCheckStep  # run on the head first: exit 0 -> the target is converted already
    steps: tuple[ConvertStep, ...]  # kind "convert", rank order; run all at once, wait for all
    hf_checkpoint: str
    save: str
    master_addr: str
    master_port: int
    gpus_per_node: int
    ssh_user: str
    done_says: str  # what the check finds when the target is converted already
    notes: tuple[str, ...] = ()

    @property
    def tracker(self) -> str:
        return f"{self.save}/{TRACKER}"

    @property
    def skip_message(self) -> str:
        return f"{self.done_says}: conversion skipped (--force converts again)"

    def invocations(self) -> list[list[str]]:
        """What runs: the head's argv as is, each worker's as one ``ssh`` argv."""
        out: list[list[str]] = []
        for step in self.steps:
            if step.where == WORKER:
                out.append(["ssh", f"{self.ssh_user}@{step.host}", step_shell_command(step)])
            else:
                out.append(list(step.commands[0]))
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "hf_checkpoint": self.hf_checkpoint,
            "save": self.save,
            "tracker": self.tracker,
            "master": f"{self.master_addr}:{self.master_port}",
            "nodes": len(self.steps),
            "gpus_per_node": self.gpus_per_node,
            "notes": list(self.notes),
            "check": self.check.to_json(self.ssh_user),
            "steps": [
                {**s.to_json(self.ssh_user), "shell_command": step_shell_command(s)} for s in self.steps
            ],
            "invocations": self.invocations(),
        }


def step_shell_command(step: ConvertStep) -> str:
    """One shell string for ``step``: ``cd CWD && env K=V argv`` (what ssh runs remotely)."""
    return step.remote_command


def plan_convert(
    spec: LaunchSpec,
    *,
    master_port: int = DEFAULT_MASTER_PORT,
    megatron_path: str | None = None,
    hf_checkpoint: str | None = None,
    save: str | None = None,
) -> ConvertPlan:
    """The conversion the launch ``spec`` needs (pure); ``megatron_path``: the spec's unless given."""
    if not 1 <= master_port <= 65535:
        raise LaunchError(f"--master-port: {master_port} is not a TCP port")
    plan = build_plan(spec)
    return convert_from_plan(plan, master_port=master_port, megatron_path=megatron_path,
                             hf_checkpoint=hf_checkpoint, save=save)


def convert_from_plan(
    plan: Plan,
    *,
    master_port: int | None = None,
    megatron_path: str | None = None,
    hf_checkpoint: str | None = None,
    save: str | None = None,
    form: ConvertForm = RECIPE_FORM,
) -> ConvertPlan:
    """The conversion for an already built launch plan (pure); ``master_port``: the form's unless given."""
    spec = plan.spec
    megatron_path = megatron_path or spec.megatron_path
    master_port = master_port or form.master_port
    notes: list[str] = []
    if hf_checkpoint is None:
        hf_checkpoint = plan.job.hf_checkpoint
        if hf_checkpoint and spec.variant.rollout_fp8 and hf_checkpoint.endswith(FP8_SUFFIX):
            hf_checkpoint = hf_checkpoint[: -len(FP8_SUFFIX)]  # convert the BF16 original
    if not hf_checkpoint:
        raise LaunchError("convert: the recipe has no --hf-checkpoint (give --hf-checkpoint)")
    if save is None:
        ref_load = plan.job.ref_load
        if not ref_load:
            raise LaunchError("convert: the recipe has no --ref-load (give --save)")
        save = ref_load.rstrip("/") or "/"
        notes.append(f"--save is the recipe's --ref-load ({ref_load}), the directory training loads")
    model_args = dict(plan.train_groups).get("MODEL", ())
    if not model_args:
        raise LaunchError("convert: the recipe's MODEL group is empty")
    hosts = plan.cluster_hosts
    gpus = plan.gpus_per_node
    nnodes = len(hosts)
    env = (("PYTHONPATH", megatron_path),)
    script = form.script.replace("{workdir}", spec.workdir.rstrip("/") or "/")
    steps = []
    for rank, host in enumerate(hosts):
        argv: tuple[str, ...] = ("torchrun", "--nproc-per-node", str(gpus))
        if nnodes > 1 or form.lone_rendezvous:
            values = {"master": plan.head, "port": str(master_port), "nnodes": str(nnodes), "rank": str(rank)}
            argv += tuple(w.format_map(values) for w in form.rendezvous)
        argv += (script, *model_args, "--hf-checkpoint", hf_checkpoint, "--save", save)
        steps.append(ConvertStep(
            where=HEAD if rank == 0 else WORKER, host=host, commands=(argv,), env=env,
            cwd=spec.workdir, purpose=f"convert on {host} (rank {rank} of {nnodes})",
        ))
    tracker = f"{save}/{TRACKER}"
    done = f"{tracker} reads {RELEASE}" if form.needs_release else f"{save} already holds {TRACKER}"
    check = ConvertCheckStep(
        where=HEAD, host=plan.head,
        commands=(("grep", "-qxF", RELEASE, tracker) if form.needs_release else ("test", "-f", tracker),),
        ignore_errors=True,
        purpose=f"skip the conversion if {tracker} " + (f"reads {RELEASE}" if form.needs_release else "exists")
        + " (exit 0)",
    )
    if nnodes > 1:
        notes.append(f"run all {nnodes} torchrun commands at once: they rendezvous at {plan.head}:{master_port}")
    return ConvertPlan(check=check, steps=tuple(steps), hf_checkpoint=hf_checkpoint, save=save,
                       master_addr=plan.head, master_port=master_port, gpus_per_node=gpus,
                       ssh_user=spec.ssh_user, done_says=done, notes=tuple(notes))


def render_convert(cplan: ConvertPlan) -> str:
    """Readable text of the conversion plan."""
    out = [
        "Conversion plan (HF -> Megatron torch_dist)", "",
        f"  hf checkpoint  {cplan.hf_checkpoint}",
        f"  save           {cplan.save}",
        f"  nodes          {len(cplan.steps)} x {cplan.gpus_per_node} GPUs",
    ]
    if len(cplan.steps) > 1:
        out.append(f"  master         {cplan.master_addr}:{cplan.master_port}")
    if cplan.notes:
        out += ["", "Notes"] + [f"  - {n}" for n in cplan.notes]
    out += ["", "Steps", f" 0. [head] {cplan.check.purpose}", f"      $ {shell_join(cplan.check.commands[0])}"]
    for n, step in enumerate(cplan.steps, start=1):
        where = "head" if step.where == HEAD else step.host
        out.append(f"{n:>2}. [{where}] {step.purpose}")
        if step.where == WORKER:
            out.append(f"      $ ssh {cplan.ssh_user}@{step.host} {quote(step_shell_command(step))}")
        else:
            out.append(f"      $ {step_shell_command(step)}")
    return "\n".join(out) + "\n"
