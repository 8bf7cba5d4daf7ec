"""Judging the network check's measurements (pure): which node or link to name, the report's
JSON, its table at 80 columns and its one-line summary.

A node's figure is its all-reduce's busbw; a pair's, the busbw of the two nodes' ranks together.
A node is to blame when even its best pair is :data:`~.netcheck.SLOW_FACTOR` times slower than
the median node's best pair (or every pair of it failed); a slow pair of two nodes that are not
to blame is their link.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from glm45_launch.core.netcheck import SLOW_FACTOR, Pair, algbw_gbps, busbw_gbps, human_size, median, slow


@dataclass
class Measure:
    """One all-reduce group's result: the slowest rank's seconds per all-reduce, by size; or why not."""

    hosts: tuple[str, ...]
    ranks: int
    seconds: dict[int, float] = field(default_factory=dict)
    error: str | None = None  # one line: what failed (a rank's exception, a timeout)
    failed: tuple[str, ...] = ()  # the hosts whose ranks failed or did not finish

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.seconds)

    @property
    def size(self) -> int | None:
        return max(self.seconds) if self.seconds else None

    def busbw(self) -> float | None:
        """The busbw at the largest size (None: it did not finish)."""
        if not self.ok or self.size is None:
            return None
        return busbw_gbps(self.size, self.seconds[self.size], self.ranks)

    def algbw(self) -> float | None:
        if not self.ok or self.size is None:
            return None
        return algbw_gbps(self.size, self.seconds[self.size])


@dataclass
class Problem:
    hosts: tuple[str, ...]
    what: str

    def line(self) -> str:
        return f"{', '.join(self.hosts)}: {self.what}" if self.hosts else self.what

    def to_json(self) -> dict[str, Any]:
        return {"hosts": list(self.hosts), "what": self.what}


def _gb(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _failed_what(m: Measure, what: str) -> str:
    return f"{what} failed: {m.error}"


def judge_interfaces(probes: Mapping[str, Mapping[str, Any]]) -> list[Problem]:
    """Each node's probe (``{"problems": [...]}``, from the program): one problem per line it found."""
    return [Problem((host,), line) for host, probe in probes.items() for line in probe.get("problems", [])]


def judge_nodes(measures: Mapping[str, Measure], floor: float | None) -> tuple[list[dict[str, Any]], list[Problem]]:
    """Per node: its all-reduce failed, is below ``floor`` or is 3x slower than the median node."""
    values = [b for m in measures.values() if m.ranks > 1 and (b := m.busbw()) is not None]
    ref = median(values)
    rows, problems = [], []
    for host, m in measures.items():
        busbw = m.busbw()
        problem = None
        if m.error is not None:
            problem = _failed_what(m, f"the all-reduce among its {m.ranks} rank(s)")
        elif m.ranks > 1:
            if floor is not None and busbw is not None and busbw < floor:
                problem = f"all-reduce busbw {busbw:.1f} GB/s is below {floor:g} GB/s"
            elif len(values) > 1 and slow(busbw, ref):
                problem = f"all-reduce busbw {busbw:.3g} GB/s, {SLOW_FACTOR:g}x or more below the median node's {ref:.3g}"
        if problem:
            problems.append(Problem((host,), problem))
        rows.append({"host": host, "ranks": m.ranks, "busbw_gbps": _gb(busbw), "algbw_gbps": _gb(m.algbw()),
                     "ok": problem is None, "problem": problem})
    return rows, problems


def judge_cluster(m: Measure, floor: float | None) -> tuple[dict[str, Any], list[Problem]]:
    """The all-reduce over every rank: failed (naming the nodes that did not finish) or below ``floor``."""
    busbw = m.busbw()
    problems = []
    if not m.ok:
        problems.append(Problem(m.failed or m.hosts, _failed_what(m, f"the cluster all-reduce over {m.ranks} ranks")))
    elif floor is not None and busbw is not None and busbw < floor:
        problems.append(Problem((), f"cluster all-reduce busbw {busbw:.1f} GB/s is below {floor:g} GB/s"))
    row = {"ranks": m.ranks, "hosts": len(m.hosts), "busbw_gbps": _gb(busbw), "algbw_gbps": _gb(m.algbw()),
           "ok": not problems, "size": m.size}
    return row, problems


@dataclass
class PairVerdict:
    rows: list[dict[str, Any]]
    nodes: list[str]  # to blame
    links: list[Pair]  # to blame (neither end is)
    problems: list[Problem]
    slow: list[Pair] = field(default_factory=list)  # finished but slow: worth measuring again, alone

    @property
    def unexplained(self) -> bool:
        """A bad pair whose ends are not to blame: more partners would tell a node from a link."""
        return bool(self.links)


def judge_pairs(measures: Mapping[Pair, Measure], floor: float | None) -> PairVerdict:
    """Blame from pairwise results (module docstring): nodes whose best pair is slow, then links."""
    best: dict[str, float] = {}
    for (a, b), m in measures.items():
        value = m.busbw() or 0.0
        for host in (a, b):
            best[host] = max(best.get(host, 0.0), value)
    ref = median(list(best.values()))
    bad: dict[Pair, str] = {}
    for pair, m in measures.items():
        busbw = m.busbw()
        if not m.ok:
            bad[pair] = _failed_what(m, "the pair's all-reduce")
        elif slow(busbw, ref):
            bad[pair] = f"busbw {busbw:.3g} GB/s, {SLOW_FACTOR:g}x or more below the median node's best pair {ref:.3g}"
        elif floor is not None and busbw is not None and busbw < floor:
            bad[pair] = f"busbw {busbw:.1f} GB/s is below {floor:g} GB/s"
    nodes = [h for h, v in best.items() if len(best) > 2 and (v <= 0 or slow(v, ref))]
    problems = []
    for host in nodes:
        with_it = [p for p in measures if host in p]
        seen = ", ".join(f"{_other(p, host)} {_fmt(measures[p].busbw())}" for p in with_it)
        problems.append(Problem((host,), f"every pair with it is slow or failed (busbw GB/s with {seen}; the median "
                                         f"node's best pair: {ref:.3g})"))
    links = [p for p in bad if not set(p) & set(nodes)]
    if links and len(links) == len(measures) and len(measures) > 1:  # all alike: no node or link stands out
        problems.append(Problem(tuple(sorted({h for p in links for h in p})), "every pair is bad: "
                                + bad[links[0]]))
        links = []
    for pair in links:
        problems.append(Problem(pair, f"the link between them: {bad[pair]}"))
    rows = [{"hosts": list(p), "ranks": m.ranks, "busbw_gbps": _gb(m.busbw()), "ok": p not in bad,
             "problem": bad.get(p)} for p, m in measures.items()]
    return PairVerdict(rows, nodes, links, problems, [p for p in bad if measures[p].ok])


def _other(pair: Pair, host: str) -> str:
    return pair[1] if pair[0] == host else pair[0]


def _fmt(value: float | None) -> str:
    return "failed" if value is None else f"{value:.3g}"


# -- the report ---------------------------------------------------------------------------------


def report_json(*, backend: str, nodes: list[dict[str, Any]], cluster: dict[str, Any] | None,
                pairs: list[dict[str, Any]], problems: Sequence[Problem], **extra: Any) -> dict[str, Any]:
    """The report as the issue gives it (``ok`` exactly when there is no problem), plus ``extra``."""
    return {"ok": not problems, "backend": backend, "nodes": nodes, "cluster": cluster, "pairs": pairs,
            "problems": [p.to_json() for p in problems], **extra}


def summary_line(report: Mapping[str, Any], limit: int = 3) -> str:
    """The failure in one line: the first problems, each naming its nodes or link."""
    by_hosts: dict[tuple[str, ...], list[str]] = {}
    for p in report.get("problems", []):
        by_hosts.setdefault(tuple(p["hosts"]), []).append(p["what"])
    if not by_hosts:
        return "the network check passed"
    problems = [Problem(hosts, "; ".join(whats)) for hosts, whats in by_hosts.items()]
    text = "; ".join(p.line() for p in problems[:limit])
    return text + (f" (and {len(problems) - limit} more)" if len(problems) > limit else "")


def blamed_hosts(report: Mapping[str, Any]) -> list[str]:
    return list(dict.fromkeys(h for p in report.get("problems", []) for h in p["hosts"]))


def _cell(value: Any) -> str:
    return "-" if value is None else f"{value:.3g}"


def render_table(report: Mapping[str, Any], width: int = 80) -> list[str]:
    """Per node, the cluster, the pairs tried, the problems: lines of at most ``width`` columns."""
    host_w = max([len(n["host"]) for n in report.get("nodes", [])] + [7])
    host_w = min(host_w, 24)
    sizes = ",".join(human_size(s) for s in report.get("sizes", []))
    lines = [f"netcheck ({report.get('backend')}, {len(report.get('nodes', []))} node(s), sizes {sizes or '-'}, "
             f"{report.get('duration_s', 0):.1f}s): {'ok' if report.get('ok') else 'FAILED'}"]

    def row(name: str, ranks: Any, busbw: Any, algbw: Any, result: str) -> str:
        text = f"{name[:host_w]:<{host_w}} {ranks!s:>5} {busbw:>10} {algbw:>10}  {result}"
        return text if len(text) <= width else text[: width - 3] + "..."

    lines.append(row("node", "ranks", "busbw GB/s", "algbw GB/s", "result"))
    for n in report.get("nodes", []):
        lines.append(row(n["host"], n["ranks"], _cell(n.get("busbw_gbps")), _cell(n.get("algbw_gbps")),
                         n.get("problem") or "ok"))
    cluster = report.get("cluster")
    if cluster:
        lines.append(row("cluster", cluster["ranks"], _cell(cluster.get("busbw_gbps")),
                         _cell(cluster.get("algbw_gbps")), "ok" if cluster["ok"] else "FAILED"))
    if report.get("pairs"):
        lines.append(f"{'pair':<{min(2 * host_w + 1, 40)}} {'busbw GB/s':>10}  result")
        for p in report["pairs"]:
            name = "-".join(p["hosts"])[:40]
            result = "ok" if p.get("ok") else "failed" if p.get("busbw_gbps") is None else "slow"
            lines.append(f"{name:<{min(2 * host_w + 1, 40)}} {_cell(p.get('busbw_gbps')):>10}  {result}")
    for p in report.get("problems", []):  # in full, wrapped: the table's cells are cut
        text = f"problem: {', '.join(p['hosts']) + ': ' if p['hosts'] else ''}{p['what']}"
        lines += textwrap.wrap(text, width, subsequent_indent="    ", break_on_hyphens=False)
    return lines


def pair_matrix(report: Mapping[str, Any]) -> tuple[list[str], list[list[float | None | bool]]]:
    """The hosts, and for each pair of them the pair's busbw (None: not tried; False: failed)."""
    hosts = [n["host"] for n in report.get("nodes", [])]
    index = {h: i for i, h in enumerate(hosts)}
    grid: list[list[float | None | bool]] = [[None] * len(hosts) for _ in hosts]
    for p in report.get("pairs", []):
        a, b = (index.get(h) for h in p["hosts"])
        if a is None or b is None:
            continue
        value: float | bool = p["busbw_gbps"] if p.get("busbw_gbps") is not None else False
        grid[a][b] = grid[b][a] = value
    return hosts, grid
