"""A stand-in trainer for the resilience tests: checkpoints, resumes, and hangs like NCCL.

Run as the job (``up --entry standin_trainer.py``) with the trainer's arguments. Like
Megatron under slime/miles it reads ``--load``/``--save``/``--save-interval`` and resumes
from ``latest_checkpointed_iteration.txt`` in ``--load``; it runs ``--num-rollout``
iterations, each one a Ray task pinned to every node (a collective touches every rank).
When a node is lost it does what NCCL does: it does not fail, it waits for the peer forever.

Its own options (ignored by the real trainer, given through ``--extra-args``):
``--standin-step-seconds S`` (each iteration's length, default 1) and
``--standin-fail-at N`` (exit 1 at iteration N: a crashing trainer).
Every event is appended as one JSON line to ``standin-report.jsonl`` in the cwd.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from glm45_launch.core.flags import flag_int, flag_value

REPORT = "standin-report.jsonl"
LATEST = "latest_checkpointed_iteration.txt"


def _record(event: str, **fields: object) -> None:
    with open(REPORT, "a") as fh:
        fh.write(json.dumps({"event": event, "t": time.time(), **fields}) + "\n")


def resume_point(load: str | None) -> int:
    """Iterations already done according to ``LOAD/latest_checkpointed_iteration.txt`` (0: none)."""
    if not load:
        return 0
    try:
        text = (Path(load) / LATEST).read_text().strip()
    except OSError:
        return 0
    return int(text) if text.isdigit() else 0


def save_checkpoint(save: str, iteration: int) -> None:
    """``SAVE/iter_NNNNNNN/`` then the tracker file, replaced atomically (as Megatron does)."""
    root = Path(save)
    (root / f"iter_{iteration:07d}").mkdir(parents=True, exist_ok=True)
    (root / f"iter_{iteration:07d}" / "standin.txt").write_text(f"{iteration}\n")
    tmp = root / f".{LATEST}.tmp"
    tmp.write_text(f"{iteration}\n")
    os.replace(tmp, root / LATEST)


def hang_like_nccl(iteration: int, why: str) -> None:
    print(f"standin: iteration {iteration}: {why}; waiting for the peer like an NCCL collective", flush=True)
    _record("hang", iteration=iteration, why=why)
    while True:
        time.sleep(3600)


def main() -> int:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    argv = sys.argv[1:]
    load, save = flag_value(argv, "--load"), flag_value(argv, "--save")
    interval = flag_int(argv, "--save-interval") or 1
    total = flag_int(argv, "--num-rollout") or 1
    want_nodes = flag_int(argv, "--actor-num-nodes") or 1
    step_s = float(flag_value(argv, "--standin-step-seconds") or 1.0)
    fail_at = flag_int(argv, "--standin-fail-at")

    start = resume_point(load)
    ray.init(address="auto", log_to_driver=False)
    deadline = time.monotonic() + 60
    while True:
        nodes = [n for n in ray.nodes() if n["Alive"]]
        if len(nodes) >= want_nodes or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    print(f"standin: {len(nodes)} node(s); resuming from iteration {start} of {total}", flush=True)
    _record("start", resumed_from=start, total=total, nodes=sorted(n["NodeManagerAddress"] for n in nodes))

    @ray.remote(num_cpus=0, max_retries=0)
    def work(iteration: int, seconds: float) -> str:
        time.sleep(seconds)
        return str(ray.util.get_node_ip_address())

    for done in range(start + 1, total + 1):
        if fail_at is not None and done == fail_at:
            print(f"standin: iteration {done}: crashing (--standin-fail-at)", flush=True)
            _record("crash", iteration=done)
            return 1
        refs = [work.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(done, step_s) for n in nodes]
        try:
            ips = ray.get(refs)
        except Exception as exc:  # noqa: BLE001 - a lost peer: hang, as a collective would
            hang_like_nccl(done, f"lost a peer ({type(exc).__name__})")
        print(f"standin: iteration {done}/{total} on {len(ips)} node(s)", flush=True)
        _record("iteration", iteration=done, nodes=sorted(ips))
        if save and (done % interval == 0 or done == total):
            save_checkpoint(save, done)
            print(f"standin: saved checkpoint {done}", flush=True)
    _record("done", iterations=total)
    print(f"standin: trained {total} iterations (resumed from {start})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
