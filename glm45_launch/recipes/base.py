"""The shape of a recipe: every word the bash launcher runs, as data with placeholders.

Words may hold ``{name}`` placeholders for the run's inputs (``{base_dir}``, ``{head}``,
``{host}``, ``{gpus_per_node}``, ``{actor_num_nodes}``, ``{framework}``,
``{ckpt_name}``, ``{ray_port}``, ``{dashboard_port}``, ``{dashboard_host}``, ``{entry}``;
the Python launchers' ``{model_dir}``, ``{data_dir}``, ``{model_local_dir}``, ``{output_dir}``,
``{run_id}``, ``{wandb_key}``, ``{megatron_path}``, ``{num_rollout}`` and ``{entry_path}`` (the
entry by its path in the checkout);
the Air recipe's ``{rollout_num_gpus}``).
Only these lower-case names are placeholders: ``${MASTER_ADDR}`` in the runtime env is
literal text for Ray to expand on each node.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

Argv = tuple[str, ...]  # one command line, or a run of train.py arguments

PLACEHOLDERS = (
    "base_dir", "head", "host", "gpus_per_node", "actor_num_nodes", "framework",
    "ckpt_name", "ray_port", "dashboard_port", "dashboard_host", "entry", "runtime_env_json",
    "model_local_dir", "output_dir", "run_id", "wandb_key", "rollout_num_gpus",
    "model_dir", "data_dir", "megatron_path", "num_rollout", "entry_path",
)
_PLACEHOLDER = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")


def fill(word: str, values: Mapping[str, str]) -> str:
    """Substitute the known placeholders of ``word`` (single pass, values not re-scanned)."""
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)] if m.group(1) in values else m.group(0), word)


def fill_all(words: Sequence[str], values: Mapping[str, str]) -> Argv:
    return tuple(fill(w, values) for w in words)


@dataclass(frozen=True)
class Recipe:
    """Everything a launch runs, before the run's inputs are filled in."""

    name: str
    description: str
    # train.py arguments: group name -> words, and the order groups are expanded in.
    groups: Mapping[str, Argv]
    group_order: Argv
    train_prefix: Argv  # words before the groups (--actor-num-nodes ...)
    entry: Argv  # the job's entrypoint, "{entry}" is the script (train.py)
    env_vars: tuple[tuple[str, str], ...]  # runtime-env env_vars, in order
    head_cleanup: tuple[Argv, ...]
    head_exports: tuple[tuple[str, str], ...]
    head_start: Argv
    worker_commands: tuple[Argv, ...]  # joined with " ; " into one ssh command
    submit: Argv  # up to and including "--"; "{runtime_env_json}" is filled by the plan
    defaults: Mapping[str, str] = field(default_factory=dict)  # placeholder defaults
    # Env for one command only (after head_exports), as `K=V command` in a script:
    head_start_env: tuple[tuple[str, str], ...] = ()  # `ray start --head`
    submit_env: tuple[tuple[str, str], ...] = ()  # `ray job submit`
    worker_env: tuple[tuple[str, str], ...] = ()  # each worker's `ray start` (as `env K=V ray start`)

    def with_groups(self, groups: Mapping[str, Argv]) -> Recipe:
        return replace(self, groups=dict(groups))

    def train_args(self) -> list[tuple[str, Argv]]:
        """(group, words) in expansion order, empty groups included."""
        return [(g, tuple(self.groups.get(g, ()))) for g in self.group_order]

