"""The preparation before a job, as steps (pure): what the Python launcher's ``train`` runs first.

upstream's ``scripts/run_glm45_355b_a32b.py`` (seed revision 04b61f31a) prepares, in order:

1. ``mkdir -p MODEL_DIR DATA_DIR`` and the downloads: the model, the task's datasets (``hf download``);
2. with ``--rollout-fp8``: ``python tools/convert_hf_to_fp8.py`` of the model;
3. on every node at once: the torch_dist conversion (``convert_plan.py``, in the launcher's form),
   skipped when its tracker reads ``release``;
4. on every node: ``mkdir -p LOCAL/X && rsync -a --info=progress2 MODEL_DIR/X/ LOCAL/X`` for the
   torch_dist checkpoint, the HF model and, with FP8, the FP8 copy.

Upstream runs step 3 and 4 through Ray; here a phase's steps on the head run here and the others
over SSH, like every step. Each step (or phase) carries a :class:`DoneCheck`: run first on the
step's host (a phase's on the head), it tells the runner that the work is done and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from glm45_launch.core.convert_plan import ConvertForm, convert_from_plan
from glm45_launch.core.plan import Plan
from glm45_launch.core.quoting import quote, shell_join
from glm45_launch.core.steps import HEAD, WORKER, DoneCheck, PrepareStep, Step
from glm45_launch.core.variants import FP8_SUFFIX
from glm45_launch.errors import LaunchError
from glm45_launch.recipes import Argv
from glm45_launch.recipes import python_launcher as py

PREPARING = frozenset({"python"})  # the profiles whose upstream launcher prepares before it trains
PYTHON_FORM = ConvertForm(rendezvous=py.CONVERT_RENDEZVOUS, script=py.CONVERT_SCRIPT,
                          master_port=py.CONVERT_MASTER_PORT, lone_rendezvous=True, needs_release=True)
EVERY_NODE = "every node"


@dataclass(frozen=True)
class PreparePhase:
    """Steps that run one after another, or (``together``) all at once, one per node; a phase's
    ``done``, checked once on the head first, skips all of them. A failed step stops the phases
    after it, except in a ``per_node`` phase: there the other nodes, and the phases after, go on."""

    name: str  # download | fp8 | convert | copy
    purpose: str
    steps: tuple[Step, ...]
    together: bool = False
    done: DoneCheck | None = None
    per_node: bool = False  # each node's step stands alone: one node's failure stops nothing else

    def to_json(self, ssh_user: str) -> dict[str, Any]:
        return {"name": self.name, "purpose": self.purpose, "together": self.together, "per_node": self.per_node,
                "done": self.done.to_json() if self.done else None,
                "steps": [s.to_json(ssh_user) for s in self.steps]}


@dataclass(frozen=True)
class PreparePlan:
    """The preparation of one launch plan: its phases in order, and the programs each host needs."""

    phases: tuple[PreparePhase, ...]
    head: str
    ssh_user: str
    requires: tuple[tuple[str, str], ...]  # (host or EVERY_NODE, program on its PATH)
    notes: tuple[str, ...] = ()
    makes: tuple[str, ...] = ()  # the directories it fills: downloads, FP8 copy, torch_dist, each node's copies

    def made_here(self, path: str) -> bool:
        """Is ``path`` one of the directories the preparation fills, or inside one?"""
        return any(path == d or path.startswith(d.rstrip("/") + "/") for d in self.makes)

    @property
    def steps(self) -> list[Step]:
        return [s for p in self.phases for s in p.steps]

    def invocations(self) -> list[list[str]]:
        """What runs if nothing is done yet: head-side argv as they are, the others as ``ssh`` argv."""
        out: list[list[str]] = []
        for step in self.steps:
            if step.where == WORKER:
                out.append(["ssh", f"{self.ssh_user}@{step.host}", step.remote_command])
            else:
                out += [list(c) for c in step.commands]
        return out

    def to_json(self) -> dict[str, Any]:
        return {"phases": [p.to_json(self.ssh_user) for p in self.phases], "makes": list(self.makes),
                "requires": [{"host": h, "program": p} for h, p in self.requires],
                "notes": list(self.notes), "invocations": self.invocations()}


def build_prepare(plan: Plan) -> PreparePlan:
    """The preparation ``plan``'s profile runs before its job (pure)."""
    spec = plan.spec
    profile = spec.variant.profile
    if profile not in PREPARING:
        raise LaunchError(f"--prepare: --profile {profile} prepares nothing (its launcher expects the checkpoint "
                          "and data in place); `glm45-launch convert` converts the checkpoint")
    head, dirs, name = plan.head, plan.dirs, plan.model.checkpoint_name
    hf = f"{dirs.model}/{name}"
    phases = [PreparePhase("download", "the model and the task's datasets, on the head",
                           (_mkdir(head, dirs.model, dirs.data), _model_download(head, plan.model.hf_id, hf),
                            *(_dataset_download(head, repo, dirs.data) for repo in py.DATASETS[spec.variant.task])))]
    copies = [f"{name}_torch_dist", name]
    if spec.variant.rollout_fp8:
        phases.append(_fp8(head, hf, spec.workdir))
        copies.append(name + FP8_SUFFIX)
    cplan = convert_from_plan(plan, hf_checkpoint=hf, save=f"{hf}_torch_dist", form=PYTHON_FORM)
    phases.append(PreparePhase("convert", f"{hf} to Megatron torch_dist, every node's torchrun meeting at "
                               f"{head}:{cplan.master_port}", cplan.steps, together=True,
                               done=DoneCheck(cplan.check.commands, cplan.done_says)))
    phases += [_copy(plan, f"{dirs.model}/{item}", f"{dirs.model_local}/{item}") for item in copies]
    notes = ["the downloads, the FP8 conversion and the checks run on the head; the conversion and the "
             "copies on every node (over SSH; upstream runs them through Ray)"]
    if dirs.model_local == dirs.model:
        notes.append(f"--model-local-dir is --model-dir ({dirs.model}): each copy finds itself up to date")
    requires = (("head", "hf"),) + (("head", "python"),) * spec.variant.rollout_fp8 \
        + ((EVERY_NODE, "torchrun"), (EVERY_NODE, "rsync"))
    makes = [hf, *(f"{dirs.data}/{repo.split('/')[1]}" for repo in py.DATASETS[spec.variant.task]),
             *(f"{dirs.model}/{item}" for item in copies), *(f"{dirs.model_local}/{item}" for item in copies)]
    return PreparePlan(tuple(phases), head, spec.ssh_user, requires, tuple(notes), tuple(dict.fromkeys(makes)))


def _mkdir(head: str, *dirs: str) -> PrepareStep:
    named = list(dict.fromkeys(dirs))
    return PrepareStep(where=HEAD, host=head, commands=(("mkdir", "-p", *dirs),), subject=" ".join(named),
                       done=DoneCheck(tuple(("test", "-d", d) for d in named), f"{' and '.join(named)} " + ("exists" if len(named) == 1 else "exist")),
                       purpose=f"make {' and '.join(named)}")


def _model_download(head: str, repo: str, local: str) -> PrepareStep:
    return PrepareStep(
        where=HEAD, host=head, commands=(("hf", "download", repo, "--local-dir", local),), subject=repo,
        done=_holds(local, py.MODEL_FILES), purpose=f"download the model {repo} to {local}",
    )


def _dataset_download(head: str, repo: str, data_dir: str) -> PrepareStep:
    local = f"{data_dir}/{repo.split('/')[1]}"
    return PrepareStep(
        where=HEAD, host=head, commands=(("hf", "download", "--repo-type", "dataset", repo, "--local-dir", local),),
        subject=repo, done=_holds(local, py.DATASET_FILES[repo.split("/")[1]]),
        purpose=f"download the dataset {repo} to {local}",
    )


def _holds(local: str, files: tuple[str, ...]) -> DoneCheck:
    return DoneCheck(tuple(("test", "-f", f"{local}/{f}") for f in files), f"{local} holds {', '.join(files)}")


def _fp8(head: str, hf: str, workdir: str) -> PreparePhase:
    argv: Argv = tuple(w.replace("{hf}", hf) for w in py.FP8_CONVERT)
    target = hf + FP8_SUFFIX + "/"
    step = PrepareStep(where=HEAD, host=head, commands=(argv,), cwd=workdir, subject=target,
                       done=DoneCheck((("test", "-e", target),), f"{target} exists (upstream's check)"),
                       purpose=f"convert {hf} to FP8 blocks in {target} (in {workdir})")
    return PreparePhase("fp8", "the FP8 copy the rollout loads (--rollout-fp8)", (step,))


def _copy(plan: Plan, src: str, dst: str) -> PreparePhase:
    """``src`` to every node's local ``dst``, all nodes at once; a node whose copy is up to date copies nothing."""
    head = plan.head
    steps = tuple(
        PrepareStep(where=HEAD if h == head else WORKER, host=h, subject=dst,
                    commands=(("mkdir", "-p", dst), (*py.RSYNC, f"{src}/", dst)),
                    done=DoneCheck(((*py.RSYNC_DRY_RUN, f"{src}/", dst),), f"{dst} is up to date", quiet=True),
                    purpose=f"copy {src} to {dst} on {'the head' if h == head else h}")
        for h in plan.cluster.nodes)
    return PreparePhase("copy", f"{src} to each node's {dst}", steps, together=True, per_node=True)


def prepare_lines(pplan: PreparePlan) -> list[str]:
    """The preparation as ``plan`` shows it: each phase, each step with its host, argv and skip check."""
    out = ["Preparation (`up --prepare` runs it before the steps below; a step whose check passes is skipped)"]
    out += [f"  - {n}" for n in pplan.notes]
    out.append("  needs: " + ", ".join(f"{p} ({h})" for h, p in pplan.requires))
    n = 0
    for phase in pplan.phases:
        out += ["", f"  {phase.name}: {phase.purpose}" + (" (all at once, each node on its own)" if phase.per_node else " (all at once)" if phase.together
                                              else " (in turn)")]
        if phase.done:
            out.append(f"    skipped when {phase.done.says}: $ {_check(phase.done)}")
        for step in phase.steps:
            n += 1
            where = "head" if step.where == HEAD else step.host
            out.append(f"{n:>3}. [{where}] {step.purpose}")
            if step.where == WORKER:
                out.append(f"       $ ssh {pplan.ssh_user}@{step.host} {quote(step.remote_command)}")
            else:
                if step.env or step.cwd:
                    out.append("       " + " ".join([f"in {step.cwd}"] * bool(step.cwd)
                                                    + [f"{k}={quote(v)}" for k, v in step.env]))
                out += [f"       $ {shell_join(c)}" for c in step.commands]
            done = step.done if isinstance(step, PrepareStep) else None
            if done:
                out.append(f"       skipped when {done.says}: $ {_check(done)}")
            elif phase.done:
                out.append("       (skipped with its phase: the check above)")
    return out


def _check(done: DoneCheck) -> str:
    return " && ".join(shell_join(c) for c in done.commands) + (" (prints nothing)" if done.quiet else "")
