"""The network check's Ray driver, run on the head as its own process (the plan's netcheck step):
``python3 -m glm45_launch.runtime.programs.netcheck_driver --config FILE --out FILE``.

It connects to the running cluster in the job's runtime env, pins one rank per GPU (NCCL) or per
node (Gloo) to its node, and runs: the interface probe, per-node all-reduces, the cluster
all-reduce, then node pairs when one of those fails, hangs or cannot be judged otherwise (a
ring, then halving). Every phase ends within ``timeout_s``: a rank that has not answered by then
is named and its actor killed (a new one takes its place). The report (the issue's JSON) goes to
``--out``, the pair matrix to ``pairs.png`` beside it (with matplotlib); exit 0 exactly when ok.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from glm45_launch.core.netcheck import (
    GLOO_SIZES,
    NCCL_SIZES,
    NetcheckSettings,
    Pair,
    halving_pairs,
    published_for,
    ring_pairs,
    rounds,
)
from glm45_launch.core.netcheck_judge import (
    Measure,
    Problem,
    judge_cluster,
    judge_interfaces,
    judge_nodes,
    judge_pairs,
    pair_matrix,
    report_json,
    summary_line,
)
from glm45_launch.runtime.programs import netcheck_rank

ERROR_GRACE_S = 10.0  # after one rank of a group failed, how long the others get to fail too
RETRIES = 2  # a slow pair is measured again alone at most this often before it is blamed


def _line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:300]


class Ranks:
    """The actors, per host; replaces one that is stuck."""

    def __init__(self, ray: Any, node_ids: dict[str, str], backend: str, per_node: dict[str, int]) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self.ray, self.node_ids, self.backend, self.per_node = ray, node_ids, backend, per_node
        self._strategy = NodeAffinitySchedulingStrategy
        self._cls = ray.remote(netcheck_rank.Rank)
        self.actors: dict[str, list[Any]] = {h: [self._new(h) for _ in range(n)] for h, n in per_node.items()}

    def _new(self, host: str) -> Any:
        return self._cls.options(
            scheduling_strategy=self._strategy(self.node_ids[host], soft=False), num_cpus=0,
            num_gpus=1 if self.backend == "nccl" else 0, max_restarts=0, max_concurrency=2,
        ).remote(host)

    def replace(self, host: str) -> None:
        for actor in self.actors[host]:
            self.ray.kill(actor, no_restart=True)
        self.actors[host] = [self._new(host) for _ in self.actors[host]]

    def kill_all(self) -> None:
        for actors in self.actors.values():
            for actor in actors:
                self.ray.kill(actor, no_restart=True)
        self.actors = {}


class Check:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.settings = NetcheckSettings(**{k: tuple(v) if k == "sizes" and v else v
                                            for k, v in cfg["settings"].items()})
        self.hosts: list[str] = cfg["hosts"]
        self.head: str = cfg["head"]
        self.timeout = self.settings.timeout_s
        self.seq = 0
        self.phases: dict[str, float] = {}  # seconds each phase took
        self._mark = time.monotonic()

    def lap(self, phase: str) -> None:
        now = time.monotonic()
        self.phases[phase] = round(now - self._mark, 2)
        self._mark = now

    # -- waiting for Ray ------------------------------------------------------------------------
    def wait(self, calls: dict[Any, tuple[str, str]], ranks: Ranks | None) -> tuple[dict[str, list[Any]], dict[str, str],
                                                                                   dict[str, list[str]]]:
        """Wait for ``calls`` (ref -> (group, host)) until all ended, the deadline, or a group's error
        plus :data:`ERROR_GRACE_S`: per group its results, its first error, and the hosts that did not finish."""
        ray = self.ray
        deadline = time.monotonic() + self.timeout
        pending = list(calls)
        results: dict[str, list[Any]] = {}
        errors: dict[str, str] = {}
        erred_at: dict[str, float] = {}
        while pending:
            done, pending = ray.wait(pending, num_returns=len(pending), timeout=0.25)
            for ref in done:
                group, host = calls[ref]
                try:
                    results.setdefault(group, []).append(ray.get(ref))
                except Exception as exc:  # noqa: BLE001 - a rank's failure is a finding
                    errors.setdefault(group, f"{host}: {_line(exc)}")
                    erred_at.setdefault(group, time.monotonic())
            now = time.monotonic()
            if now >= deadline or all(now - erred_at.get(calls[r][0], now + 1) > ERROR_GRACE_S for r in pending):
                break
        unfinished: dict[str, list[str]] = {}
        for ref in pending:
            group, host = calls[ref]
            unfinished.setdefault(group, [])
            if host not in unfinished[group]:
                unfinished[group].append(host)
        stuck = sorted({h for hosts in unfinished.values() for h in hosts})
        if ranks is not None:
            for host in stuck:
                ranks.replace(host)
        return results, errors, unfinished

    # -- the phases -----------------------------------------------------------------------------
    def probe(self, node_ids: dict[str, str], variables: list[str], port: int) -> tuple[Ranks, dict[str, dict[str, Any]]]:
        ranks = Ranks(self.ray, node_ids, "gloo", {h: 1 for h in self.hosts})
        calls = {ranks.actors[h][0].probe.remote(variables, self.head, port): ("probe", h) for h in self.hosts}
        results, errors, unfinished = self.wait(calls, ranks)
        probes = {r["host"]: r for r in results.get("probe", [])}
        for h in self.hosts:
            if h in probes:
                continue
            if h in unfinished.get("probe", []):
                why = f"no answer within {self.timeout:g}s (the check's actor did not start or finish there)"
            else:
                why = f"the probe failed: {errors.get('probe', '?')}"
            probes[h] = {"host": h, "gpus": 0, "gpu_name": None, "ifnames": {}, "problems": [why]}
        return ranks, probes

    def collective(self, ranks: Ranks, groups: dict[str, list[str]], sizes: Sequence[int] = ()) -> dict[str, Measure]:
        """One all-reduce group per entry (hosts: all their ranks), all at once; a Measure each."""
        sizes = list(sizes or self.sizes)
        calls: dict[Any, tuple[str, str]] = {}
        members: dict[str, list[tuple[str, Any]]] = {}
        for name, hosts in groups.items():
            self.seq += 1
            tag = f"{name}-{self.seq}"
            members[name] = [(h, a) for h in hosts for a in ranks.actors[h]]
            for i, (h, actor) in enumerate(members[name]):
                ref = actor.allreduce.remote(tag, i, len(members[name]), self.store_addr, ranks.backend, sizes,
                                             self.settings.iters, self.settings.warmup, self.timeout)
                calls[ref] = (name, h)
        results, errors, unfinished = self.wait(calls, ranks)
        out = {}
        for name, hosts in groups.items():
            got = results.get(name, [])
            m = Measure(tuple(hosts), len(members[name]))
            if name in errors or name in unfinished:
                late = unfinished.get(name, [])
                m.error = errors.get(name) or f"did not finish within {self.timeout:g}s: {', '.join(late)}"
                if name in errors and late:
                    m.error += f" ({', '.join(late)} did not finish)"
                failed_host = errors[name].split(":", 1)[0] if name in errors else None
                m.failed = tuple(dict.fromkeys([*late, *([failed_host] if failed_host else [])]))
            else:
                m.seconds = {s: max(float(r["times"][s] if s in r["times"] else r["times"][str(s)]) for r in got)
                             for s in sizes}
            out[name] = m
        return out

    # -- the whole check ------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        import ray
        import torch.distributed as dist

        self.ray = ray
        ray.cloudpickle.register_pickle_by_value(netcheck_rank)  # the nodes need no glm45_launch
        ray.init(address=self.cfg["address"], runtime_env={"env_vars": self.cfg["env_vars"]},
                 namespace=f"glm45-netcheck-{os.getpid()}", log_to_driver=False, logging_level="ERROR")
        self.lap("connect")
        problems: list[Problem] = []
        node_ids = self._node_ids(problems)
        if problems:
            return self._report("gloo", {}, [], None, [], problems)
        listener = _Listener()
        store = dist.TCPStore("0.0.0.0", 0, is_master=True, wait_for_workers=False,
                              timeout=__import__("datetime").timedelta(seconds=self.timeout))
        self.store_addr = (self.head, store.port)
        variables = sorted(k for k in self.cfg["env_vars"] if k.endswith("_SOCKET_IFNAME"))
        ranks, probes = self.probe(node_ids, variables, listener.port)
        self.lap("probe")
        problems += judge_interfaces(probes)
        backend = self._backend(probes, problems)
        self.sizes = self.settings.sizes or (NCCL_SIZES if backend == "nccl" else GLOO_SIZES)
        if problems:
            ranks.kill_all()
            return self._report(backend, probes, [], None, [], problems)
        if backend == "nccl":
            ranks.kill_all()
            per_node = {h: min(probes[h]["gpus"], self.cfg["gpus_per_node"] or probes[h]["gpus"]) for h in self.hosts}
            ranks = Ranks(ray, node_ids, "nccl", per_node)
        try:
            return self._collectives(ranks, backend, probes, problems)
        finally:
            ranks.kill_all()
            listener.close()

    def _collectives(self, ranks: Ranks, backend: str, probes: dict[str, dict[str, Any]],
                     problems: list[Problem]) -> dict[str, Any]:
        published = published_for(probes[self.hosts[0]].get("gpu_name")) if backend == "nccl" else None
        node_floor = self.settings.min_busbw_node
        if node_floor is None and published and all(len(ranks.actors[h]) == published.gpus for h in self.hosts):
            node_floor = published.node
        cluster_floor = self.settings.min_busbw_cluster
        if cluster_floor is None and published and len(self.hosts) > 1:
            cluster_floor = published.cluster
        self.floors = {"node": node_floor, "cluster": cluster_floor, "source": published.source if published else None}
        # NCCL: one GPU is a node too (its communicator and kernels run); Gloo: one rank is nothing to test.
        multi = [h for h in self.hosts if len(ranks.actors[h]) > 1 or (backend == "nccl" and ranks.actors[h])]
        node_measures = self.collective(ranks, {h: [h] for h in multi}) if multi else {}
        measures = {h: node_measures.get(h, Measure((h,), len(ranks.actors[h]))) for h in self.hosts}
        node_rows, node_problems = judge_nodes(measures, node_floor)
        self.lap("nodes")
        problems += node_problems
        cluster_row = None
        cluster_bad = False
        if len(self.hosts) > 1 or multi:
            cm = measures[self.hosts[0]] if len(self.hosts) == 1 else self.collective(ranks, {"cluster": self.hosts})["cluster"]
            cluster_row, cluster_problems = judge_cluster(cm, cluster_floor)
            problems += cluster_problems
            cluster_bad = bool(cluster_problems)
        self.lap("cluster")
        pair_rows: list[dict[str, Any]] = []
        if len(self.hosts) >= 3 and (cluster_bad or node_problems or cluster_floor is None):
            pair_rows = self._pairs(ranks, cluster_floor, problems)
            self.lap("pairs")
        return self._report(backend, probes, node_rows, cluster_row, pair_rows, problems)

    def _pairs(self, ranks: Ranks, floor: float | None, problems: list[Problem]) -> list[dict[str, Any]]:
        ring = ring_pairs(self.hosts)
        measures: dict[Pair, Measure] = {}
        for batch in rounds(ring):
            got = self.collective(ranks, {f"pair{i}": list(p) for i, p in enumerate(batch)})
            measures.update({p: got[f"pair{i}"] for i, p in enumerate(batch)})
        verdict = judge_pairs(measures, floor)
        if verdict.unexplained and len(self.hosts) >= 4:
            for batch in rounds(halving_pairs(self.hosts, ring)):
                got = self.collective(ranks, {f"pair{i}": list(p) for i, p in enumerate(batch)})
                measures.update({p: got[f"pair{i}"] for i, p in enumerate(batch)})
            verdict = judge_pairs(measures, floor)
        # A slow pair is measured again alone, at the largest size, up to RETRIES times, before it is
        # blamed (rounds share the machine and the switch: a busy moment is no slow link); the best counts.
        for _ in range(RETRIES):
            if not verdict.slow:
                break
            for pair in verdict.slow:
                again = self.collective(ranks, {"again": list(pair)}, sizes=self.sizes[-1:])["again"]
                if again.ok and (again.busbw() or 0.0) > (measures[pair].busbw() or 0.0):
                    measures[pair] = again
            verdict = judge_pairs(measures, floor)
        problems += verdict.problems
        return verdict.rows

    def _node_ids(self, problems: list[Problem]) -> dict[str, str]:
        alive = {n["NodeManagerAddress"]: n["NodeID"] for n in self.ray.nodes() if n.get("Alive")}
        out = {}
        for host in self.hosts:
            try:
                addr = socket.gethostbyname(host)
            except OSError:
                addr = host
            if addr in alive or host in alive:
                out[host] = alive.get(addr) or alive[host]
            elif host == self.head and self.ray.get_runtime_context().get_node_id() in alive.values():
                # This driver runs on the head: its own node is the head, under whatever address Ray
                # registered (a head started as 127.0.0.1 is listed under the machine's address).
                out[host] = self.ray.get_runtime_context().get_node_id()
            else:
                problems.append(Problem((host,), "not an alive node of the Ray cluster"))
        return out

    def _backend(self, probes: dict[str, dict[str, Any]], problems: list[Problem]) -> str:
        wanted = self.settings.backend
        no_gpu = [h for h in self.hosts if not probes[h].get("gpus")]
        if wanted == "auto":
            return "gloo" if no_gpu else "nccl"
        if wanted == "nccl" and no_gpu:
            problems.append(Problem(tuple(no_gpu), "no NVIDIA GPU here (--netcheck-backend nccl)"))
        return wanted

    def _report(self, backend: str, probes: dict[str, dict[str, Any]], nodes: list[dict[str, Any]],
                cluster: dict[str, Any] | None, pairs: list[dict[str, Any]], problems: list[Problem]) -> dict[str, Any]:
        bad = {p.hosts[0]: p.what for p in problems if len(p.hosts) == 1}
        if not nodes:
            nodes = [{"host": h, "ranks": 0, "busbw_gbps": None, "algbw_gbps": None, "ok": h not in bad,
                      "problem": bad.get(h)} for h in self.hosts]
        for row in nodes:
            probe = probes.get(row["host"], {})
            row["gpu"] = probe.get("gpu_name")
            row["interfaces"] = probe.get("ifnames", {})
            if row["ok"] and row["host"] in bad:
                row["ok"], row["problem"] = False, bad[row["host"]]
        sizes = list(getattr(self, "sizes", ()) or ())
        return report_json(backend=backend, nodes=nodes, cluster=cluster, pairs=pairs, problems=problems,
                           sizes=sizes, timeout_s=self.timeout, thresholds=getattr(self, "floors", None),
                           phases_s=self.phases)


class _Listener:
    """The head's check port: accepts and closes (the probe's 'reaches the head')."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("0.0.0.0", 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.close()

    def close(self) -> None:
        self.sock.close()


def write_png(report: dict[str, Any], path: Path) -> bool:
    """The pair matrix as a picture (matplotlib, the ``plot`` extra); False without it or pairs."""
    if not report.get("pairs"):
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    hosts, grid = pair_matrix(report)
    values = [[float("nan") if v is None else (0.0 if v is False else float(v)) for v in row] for row in grid]
    fig, ax = plt.subplots(figsize=(2 + 0.5 * len(hosts), 1.5 + 0.5 * len(hosts)))
    image = ax.imshow(values, cmap="RdYlGn")
    ax.set_xticks(range(len(hosts)), hosts, rotation=90, fontsize=7)
    ax.set_yticks(range(len(hosts)), hosts, fontsize=7)
    fig.colorbar(image, label="pair all-reduce busbw (GB/s)")
    ax.set_title(f"netcheck pairs ({report.get('backend')}): {'ok' if report.get('ok') else 'FAILED'}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="netcheck_driver")
    parser.add_argument("--config", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    cfg = json.loads(Path(args.config).read_text())
    start = time.monotonic()
    check = Check(cfg)
    try:
        report = check.run()
    except Exception as exc:  # noqa: BLE001 - the check itself broke: a report that says so
        report = report_json(backend=check.settings.backend, nodes=[], cluster=None, pairs=[],
                             problems=[Problem((), f"the check could not run: {type(exc).__name__}: {_line(exc)}")])
    report["duration_s"] = round(time.monotonic() - start, 2)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        report["png"] = str(out.with_name("pairs.png")) if write_png(report, out.with_name("pairs.png")) else None
    except Exception as exc:  # noqa: BLE001 - a picture never fails the check
        report["png"] = None
        print(f"netcheck: no picture: {_line(exc)}", file=sys.stderr)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"netcheck: {summary_line(report)}", file=sys.stderr)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
