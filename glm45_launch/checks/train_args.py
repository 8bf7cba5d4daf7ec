"""train.py's argv as its argparse reads it, and the one-line ``Problem`` a check reports."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from glm45_launch.core.flags import flag_names, last_values
from glm45_launch.recipes import Argv


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config: a stable ``code``, the ``flags`` involved, one line."""

    code: str
    flags: tuple[str, ...]
    message: str

    def __str__(self) -> str:
        return self.message

    def to_json(self) -> dict[str, object]:
        return {"code": self.code, "flags": list(self.flags), "message": self.message}


# Flags read as numbers by the trainer's argparse (type=int / type=float). A value that does
# not parse would stop train.py at start-up with "invalid int value"; report it here instead.
INT_FLAGS = frozenset({
    "--actor-num-nodes", "--actor-num-gpus-per-node", "--rollout-num-gpus", "--num-gpus-per-node",
    "--rollout-num-gpus-per-engine", "--num-layers", "--hidden-size", "--ffn-hidden-size",
    "--num-attention-heads", "--num-query-groups", "--kv-channels", "--vocab-size", "--rotary-base",
    "--moe-ffn-hidden-size", "--moe-shared-expert-intermediate-size", "--moe-router-topk",
    "--num-experts", "--num-rollout", "--num-epoch", "--rollout-batch-size", "--n-samples-per-prompt",
    "--rollout-max-response-len", "--rollout-max-context-len", "--rollout-max-prompt-len",
    "--over-sampling-batch-size", "--num-steps-per-rollout", "--global-batch-size",
    "--micro-batch-size", "--eval-interval", "--n-samples-per-eval-prompt", "--eval-max-response-len",
    "--save-interval", "--tensor-model-parallel-size", "--pipeline-model-parallel-size",
    "--context-parallel-size", "--expert-model-parallel-size", "--expert-tensor-parallel-size",
    "--decoder-first-pipeline-num-layers", "--decoder-last-pipeline-num-layers",
    "--recompute-num-layers", "--max-tokens-per-gpu", "--log-probs-max-tokens-per-gpu",
    "--rollout-stop-token-ids", "--sglang-dp-size", "--sglang-data-parallel-size", "--sglang-ep-size",
    "--sglang-expert-parallel-size", "--sglang-tp-size", "--sglang-moe-dense-tp-size",
    "--sglang-speculative-num-steps", "--sglang-speculative-eagle-topk",
    "--sglang-speculative-num-draft-tokens", "--sglang-chunked-prefill-size",
    "--sglang-max-running-requests", "--sglang-cuda-graph-max-bs", "--seed",
})
FLOAT_FLAGS = frozenset({
    "--lr", "--min-lr", "--weight-decay", "--adam-beta1", "--adam-beta2", "--adam-eps", "--clip-grad",
    "--rotary-percent", "--moe-router-topk-scaling-factor", "--moe-router-bias-update-rate",
    "--moe-aux-loss-coeff", "--kl-loss-coef", "--kl-coef", "--entropy-coef", "--eps-clip",
    "--eps-clip-high", "--eps-clip-c", "--rollout-temperature", "--rollout-top-p", "--eval-top-p",
    "--eval-temperature", "--sglang-mem-fraction-static", "--attention-dropout", "--hidden-dropout",
    "--init-method-std",
})
# Aliases that set the same argparse dest (the last one given wins).
SGLANG_DP = ("--sglang-dp-size", "--sglang-data-parallel-size")
SGLANG_EP = ("--sglang-ep-size", "--sglang-expert-parallel-size")


class TrainArgs:
    """train.py's argv as its argparse reads it: the last value of a repeated flag wins.

    Numeric reads that fail are recorded in ``problems`` (once per flag) and return None,
    so the checks that need the value are skipped rather than guessing.
    """

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = list(argv)
        self.last: dict[str, Argv] = last_values(self.argv)
        self.problems: list[Problem] = []
        self._reported: set[str] = set()

    def has(self, flag: str) -> bool:
        return flag in self.last

    def values(self, flag: str) -> Argv | None:
        return self.last.get(flag)

    def text(self, flag: str) -> str | None:
        values = self.last.get(flag)
        if values is None:
            return None
        return values[0] if values else ""

    def first_of(self, flags: Sequence[str]) -> str | None:
        """The flag of ``flags`` given last on the command line (aliases of one dest)."""
        return next((name for name in reversed(flag_names(self.argv)) if name in flags), None)

    def _bad(self, flag: str, message: str) -> None:
        if flag not in self._reported:
            self._reported.add(flag)
            self.problems.append(Problem("bad-value", (flag,), message))

    def int(self, flag: str, default: int | None = None) -> int | None:
        return self._number(flag, default, int, "a whole number")

    def float(self, flag: str, default: float | None = None) -> float | None:
        return self._number(flag, default, float, "a number")

    def _number(self, flag: str, default: Any, parse: Callable[[str], Any], noun: str) -> Any:
        """The flag's last value parsed, ``default`` when absent; a bad value is a problem."""
        values = self.last.get(flag)
        if values is None:
            return default
        if not values:
            self._bad(flag, f"{flag} needs a value")
            return None
        try:
            return parse(values[0])
        except ValueError:
            self._bad(flag, f"{flag} {values[0]!r} is not {noun}")
            return None

    def check_numbers(self) -> None:
        """Every known numeric flag parses (each value of an nargs flag)."""
        for flag, values in self.last.items():
            kind = int if flag in INT_FLAGS else float if flag in FLOAT_FLAGS else None
            if kind is None:
                continue
            if not values:
                self._bad(flag, f"{flag} needs a value")
                continue
            for value in values:
                try:
                    kind(value)
                except ValueError:
                    what = "a whole number" if kind is int else "a number"
                    self._bad(flag, f"{flag} {value!r} is not {what}")
                    break
