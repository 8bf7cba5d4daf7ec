"""Train args against the cluster they run on: GPUs per node, rollout engines over the nodes,
the actor's and the rollout's GPUs when they are not colocated (pure).

slime/miles read ``--num-gpus-per-node`` (default 8) to lay the rollout engines over the
nodes (``ray/rollout/addr_allocator.py``: engines per node, nodes per engine), and without
``--colocate`` place the actor's GPUs and then ``--rollout-num-gpus`` more
(``ray/placement_group.py``). Facts carried over from miles at 04b61f31a, not code.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from glm45_launch.checks.train_args import Problem, TrainArgs
from glm45_launch.core.profiles import DISAGGREGATED

if TYPE_CHECKING:
    from glm45_launch.core.plan import Plan

NODES, GPUS = "--actor-num-nodes", "--actor-num-gpus-per-node"
NUM_GPUS = "--num-gpus-per-node"  # slime/miles: GPUs per node for the rollout (default 8)


def times(pairs: Iterable[tuple[str, int]]) -> str:
    return " × ".join(f"{flag} {value}" for flag, value in pairs)


def node_gpu_problems(args: TrainArgs, plan: Plan) -> list[Problem]:
    """train.py's GPUs per node against the nodes' (hostfile slots / --gpus-per-node / --hardware),
    and the rollout engines against the nodes they are placed on."""
    out: list[Problem] = []
    have = plan.gpus_per_node
    source = "hostfile slots / --gpus-per-node"
    gpus = args.int(GPUS, 8)
    if gpus is not None and gpus > have:
        out.append(Problem("gpus-per-node", (GPUS, "--gpus-per-node"),
                           f"{GPUS} {gpus} but the nodes have {have} GPU(s) "
                           f"({source}): the job would wait for GPUs that never come"))
    # slime/miles --num-gpus-per-node (default 8): how the rollout engines are laid over the nodes.
    trainer = args.int(NUM_GPUS, 8)
    if trainer is not None and trainer != have:
        said = f"{NUM_GPUS} {trainer}" if args.has(NUM_GPUS) else f"{NUM_GPUS} (default {trainer})"
        out.append(Problem("gpus-per-node", (NUM_GPUS, "--gpus-per-node"),
                           f"{said} but the nodes have {have} GPU(s) ({source}): the rollout engines would be "
                           "placed as if every node had that many"))
    elif trainer is not None and gpus is not None and have >= gpus > trainer:
        out.append(Problem("gpus-per-node", (GPUS, NUM_GPUS), f"{GPUS} {gpus} exceeds {NUM_GPUS} {trainer}"))
    engine = args.int("--rollout-num-gpus-per-engine", 1)
    if engine and trainer and engine >= 1 and trainer >= 1 and (
            (engine > trainer and engine % trainer) or (engine < trainer and trainer % engine)):
        how = (f"an engine spans {engine / trainer:.3g} nodes" if engine > trainer
               else f"{trainer / engine:.3g} engines per node")
        out.append(Problem("rollout-engine", ("--rollout-num-gpus-per-engine", NUM_GPUS),
                           f"--rollout-num-gpus-per-engine {engine} does not tile nodes of {trainer} GPUs "
                           f"({NUM_GPUS}): {how}"))
    return out


def disaggregation_problems(args: TrainArgs, plan: Plan) -> list[Problem]:
    """Without --colocate the actor and the rollout each take GPUs of their own: together, the cluster's.
    A disaggregated profile (the Air recipe) never colocates."""
    if args.has("--colocate") and plan.spec.variant.profile in DISAGGREGATED:
        return [Problem("disaggregation", ("--colocate",),
                        "--colocate: the GLM-4.5-Air recipe is disaggregated (the rollout runs on --rollout-num-gpus "
                        "GPUs of its own, not on the actor's); drop --colocate")]
    if args.has("--colocate") or args.has("--debug-train-only"):
        return []
    if not args.has("--rollout-num-gpus"):
        return [Problem("disaggregation", ("--colocate", "--rollout-num-gpus"),
                        "without --colocate the rollout runs on GPUs of its own: give --rollout-num-gpus "
                        "(or --colocate)")]
    nodes, gpus, rollout = args.int(NODES, 1), args.int(GPUS, 8), args.int("--rollout-num-gpus")
    if nodes is None or gpus is None or rollout is None:
        return []
    if rollout < 1:
        return [Problem("disaggregation", ("--rollout-num-gpus",), f"--rollout-num-gpus must be >= 1, got {rollout}")]
    total = plan.cluster.total_gpus
    actor = nodes * gpus
    if actor + rollout == total:
        return []
    what = "more than" if actor + rollout > total else "fewer than"
    return [Problem("disaggregation", (NODES, GPUS, "--rollout-num-gpus"),
                    f"the actor's {actor} GPUs ({times([(NODES, nodes), (GPUS, gpus)])}) + --rollout-num-gpus "
                    f"{rollout} = {actor + rollout}, {what} the cluster's {total} "
                    f"({len(plan.cluster.nodes)} node(s) x {plan.gpus_per_node} GPUs)")]
