"""What train.py reads from its argv, resolved once when the plan is built (pure).

The trainer's argparse keeps the last value of a repeated flag, so these are the values after
the profile, the variants and the user's overrides: what the job will really do. Readers (the
checks, preflight, ``convert``, the restarts) take them from ``Plan.job`` instead of reading
the argv again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from glm45_launch.core.flags import flag_int, flag_value

TRAINER_GPUS_PER_NODE = 8  # slime/miles' default --num-gpus-per-node (and the bash recipe's assumption)


@dataclass(frozen=True)
class JobFacts:
    """The job's sizes and checkpoint paths as train.py reads them."""

    actor_nodes: int | None  # --actor-num-nodes (None: not given, or not a number)
    actor_gpus_per_node: int | None  # --actor-num-gpus-per-node
    num_gpus_per_node: int | None  # --num-gpus-per-node: how slime/miles lay the rollout engines over nodes
    hf_checkpoint: str | None
    ref_load: str | None
    load: str | None  # where the trainer resumes from ("" when the flag has no value)
    save: str | None

    @property
    def trainer_gpus_per_node(self) -> int:
        """The GPUs per node the trainer places rollout engines by (its default when not given)."""
        return self.num_gpus_per_node or TRAINER_GPUS_PER_NODE

    @classmethod
    def of(cls, argv: Sequence[str]) -> JobFacts:
        return cls(
            actor_nodes=flag_int(argv, "--actor-num-nodes"),
            actor_gpus_per_node=flag_int(argv, "--actor-num-gpus-per-node"),
            num_gpus_per_node=flag_int(argv, "--num-gpus-per-node"),
            hf_checkpoint=flag_value(argv, "--hf-checkpoint"), ref_load=flag_value(argv, "--ref-load"),
            load=flag_value(argv, "--load"), save=flag_value(argv, "--save"),
        )
