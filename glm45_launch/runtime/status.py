"""``status``: per host, reachable / a raylet running / its state in Ray's node table / GPUs /
health; the cluster's jobs with their state and runtime."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glm45_launch.core.hostfile import Hostfile
from glm45_launch.core.operations import RAYLET_CHECK
from glm45_launch.core.steps import HEAD, WORKER, ProbeStep
from glm45_launch.runtime.causes import exc_line
from glm45_launch.runtime.runtime import Runtime


@dataclass
class HostState:
    host: str
    reachable: bool
    ray_running: bool  # a raylet process is there (pgrep -x raylet)
    alive_in_cluster: bool  # ALIVE in Ray's node table
    gpus: float
    error: str | None
    ray_state: str = "unknown"  # ALIVE, DEAD, absent (not in the node table), unknown (no cluster answer)

    @property
    def health(self) -> str:
        """One word or phrase: ok, or what is wrong with this node."""
        if not self.reachable:
            return "unreachable"
        if self.alive_in_cluster:
            return "ok" if self.ray_running else "LOST: no raylet (Ray has not noticed yet)"
        if self.ray_state == "DEAD":
            return "LOST: DEAD in Ray's node table" + ("" if not self.ray_running else " (a raylet runs: another cluster?)")
        return "raylet running, not in this cluster" if self.ray_running else "no Ray"

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "health": self.health}


@dataclass
class StatusReport:
    address: str
    hosts: list[HostState]
    jobs: list[dict[str, Any]]
    alive_nodes: int
    alive_gpus: float
    cluster_error: str | None

    @property
    def healthy(self) -> bool:
        return all(h.reachable and h.ray_running and h.alive_in_cluster for h in self.hosts)

    def to_json(self) -> dict[str, Any]:
        return {"hosts": [h.to_json() for h in self.hosts], "jobs": self.jobs, "cluster_error": self.cluster_error,
                "alive_nodes": self.alive_nodes, "alive_gpus": self.alive_gpus, "address": self.address}


def status(hostfile: Hostfile, address: str, rt: Runtime, head: str | None = None,
           log_dir: Path | None = None) -> StatusReport:
    """Per host: reachable, a raylet running (``pgrep -x raylet``: the head here when it is this
    machine, the others over SSH), its state in Ray's node table, GPUs; and the cluster's jobs at
    ``address`` with their state and runtime."""
    head = rt.head_of(hostfile.names, head)
    steps = [ProbeStep(where=HEAD if h == head else WORKER, host=h, commands=(RAYLET_CHECK,),
                       purpose=f"is a raylet running on {h}") for h in hostfile.names]
    with tempfile.TemporaryDirectory(prefix="glm45-status-") as tmp:
        results = rt.steps(log_dir or Path(tmp), head).run(steps)
    cluster_error = None
    try:
        nodes = rt.ray.nodes(address)
    except Exception as exc:  # noqa: BLE001 - no cluster is a state to report, not a crash
        nodes, cluster_error = [], exc_line(exc)
    rows = []
    for step in steps:
        r = results[step.host]
        mine = rt.nodes_of(step.host, nodes)
        node = next((n for n in mine if n.alive), None)
        state = "unknown" if cluster_error else "ALIVE" if node else "DEAD" if mine else "absent"
        rows.append(HostState(step.host, r.error is None or r.exit_code is not None, r.exit_code == 0,
                              node is not None, node.gpus if node else 0, r.error if r.exit_code is None else None,
                              state))
    jobs: list[dict[str, Any]] = []
    if cluster_error is None:
        now = time.time()
        try:
            jobs = [{"id": j.job_id, "status": j.status, "entrypoint": j.entrypoint, "start_time": j.start_time,
                     "end_time": j.end_time, "runtime_s": j.runtime_s(now)} for j in rt.ray.jobs(address)]
        except Exception as exc:  # noqa: BLE001
            cluster_error = "jobs: " + exc_line(exc)
    return StatusReport(address, rows, jobs, sum(n.alive for n in nodes), sum(n.gpus for n in nodes if n.alive),
                        cluster_error)
