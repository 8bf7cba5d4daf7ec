"""A smoke entry that stands in for train.py: a real Ray driver, no GPUs needed.

Run by ``glm45-launch up --entry examples/smoke_entry.py`` (or copied as ``train.py`` by
``glm45-launch demo``) with exactly the trainer's arguments. It records its argv and cwd, waits until the cluster has the nodes and GPUs
the arguments ask for (``--actor-num-nodes`` x ``--actor-num-gpus-per-node``), runs one
task pinned to every node that reports that node's runtime-env variables, and writes
``smoke-report.json`` into its working directory (the launcher's ``--workdir``).
Exit 0 when every check holds.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time

from glm45_launch.core.flags import flag_int

REPORT = "smoke-report.json"


def main() -> int:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    argv = sys.argv[1:]
    want_nodes = flag_int(argv, "--actor-num-nodes") or 1
    gpus_per_node = flag_int(argv, "--actor-num-gpus-per-node") or 0
    report: dict[str, object] = {"argv": argv, "cwd": os.getcwd(), "driver_host": socket.gethostname()}

    ray.init(address="auto", log_to_driver=False)
    runtime_env = ray.get_runtime_context().runtime_env or {}
    keys = list((runtime_env.get("env_vars") or {}).keys())

    deadline = time.monotonic() + 60
    while True:
        nodes = [n for n in ray.nodes() if n["Alive"]]
        gpus = ray.cluster_resources().get("GPU", 0)
        if (len(nodes) >= want_nodes and gpus >= want_nodes * gpus_per_node) or time.monotonic() > deadline:
            break
        time.sleep(0.5)

    @ray.remote(num_cpus=0)
    def probe(keys: list[str]) -> dict[str, object]:
        return {
            "node_ip": ray.util.get_node_ip_address(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "env": {k: os.environ.get(k) for k in keys},
        }

    refs = [
        probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(keys)
        for n in nodes
    ]
    per_node = ray.get(refs, timeout=120)
    report.update(
        nodes=len(nodes),
        gpus=gpus,
        want_nodes=want_nodes,
        want_gpus=want_nodes * gpus_per_node,
        runtime_env_keys=keys,
        per_node=sorted(per_node, key=lambda r: str(r["node_ip"])),
    )
    ok = len(nodes) >= want_nodes and gpus >= want_nodes * gpus_per_node and len(per_node) == len(nodes)
    report["ok"] = ok
    with open(REPORT, "w") as fh:
        json.dump(report, fh, indent=2)
    print(f"smoke entry: {len(nodes)} node(s), {gpus:.0f} GPUs, probed {len(per_node)} node(s): "
          + ("OK" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
