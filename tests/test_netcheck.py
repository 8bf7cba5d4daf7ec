"""The network check's pure parts (bandwidth maths, pairs, blame, the report), its place in the
plan, the interface check against this machine's interfaces, and its run before every attempt."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from glm45_launch.core.builder import build_plan
from glm45_launch.core.hostfile import parse_hostfile_text
from glm45_launch.core.netcheck import (
    NetcheckSettings,
    busbw_gbps,
    halving_pairs,
    netcheck_bound,
    parse_sizes,
    published_for,
    ring_pairs,
    rounds,
)
from glm45_launch.core.netcheck_judge import (
    Measure,
    judge_cluster,
    judge_nodes,
    judge_pairs,
    render_table,
    report_json,
    summary_line,
)
from glm45_launch.core.operations import WatchSettings, build_operations
from glm45_launch.core.plan import LaunchSpec
from glm45_launch.errors import LaunchError
from glm45_launch.runtime.causes import CauseKind
from glm45_launch.runtime.programs.netcheck_rank import check_interface_var
from glm45_launch.runtime.supervisor import Supervisor
from glm45_launch.testing.fakes import FakeLocalRunner, FakeRay, fake_runtime

HOSTS = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]
MB4 = 4 << 20


def _m(hosts: Sequence[str], busbw: float | None, ranks: int = 2, size: int = MB4) -> Measure:
    """A measure whose busbw at ``size`` is ``busbw`` GB/s (None: it failed)."""
    if busbw is None:
        return Measure(tuple(hosts), ranks, error="did not finish within 8s", failed=tuple(hosts[-1:]))
    algbw = busbw / (2 * (ranks - 1) / ranks)
    return Measure(tuple(hosts), ranks, {size: size / (algbw * 1e9)})


def test_busbw_is_nccl_tests_formula() -> None:
    # 1 GiB in 10 ms over 8 ranks: algbw 107.4 GB/s, busbw x 2*7/8.
    assert busbw_gbps(1 << 30, 0.01, 8) == pytest.approx((1 << 30) / 0.01 / 1e9 * 1.75)
    assert busbw_gbps(1 << 30, 0.01, 2) == pytest.approx((1 << 30) / 0.01 / 1e9)
    assert busbw_gbps(1 << 30, 0.01, 1) == 0.0
    assert _m(HOSTS[:2], 5.0).busbw() == pytest.approx(5.0)


def test_sizes_parse_like_nccl_tests() -> None:
    assert parse_sizes("1G,8M, 256K,8M") == (256 * 1024, 8 << 20, 1 << 30)
    for bad in ("1T", "fast", "0"):
        with pytest.raises(LaunchError, match="--netcheck-sizes"):
            parse_sizes(bad)


def test_ring_then_halving_pairs() -> None:
    nodes = [f"n{i}" for i in range(8)]
    ring = ring_pairs(nodes)
    assert ring[0] == ("n0", "n1") and ring[-1] == ("n7", "n0") and len(ring) == 8
    assert ring_pairs(nodes[:2]) == [("n0", "n1")] and ring_pairs(nodes[:1]) == []
    halving = halving_pairs(nodes, ring)
    assert halving[:4] == [("n0", "n4"), ("n1", "n5"), ("n2", "n6"), ("n3", "n7")]
    assert ("n0", "n2") in halving and not {frozenset(p) for p in halving} & {frozenset(p) for p in ring}
    # Each round shares no node; together they hold every pair once.
    for batch in rounds(ring + halving):
        assert len({h for p in batch for h in p}) == 2 * len(batch)
    assert sorted(p for b in rounds(ring) for p in b) == sorted(ring) and len(rounds(ring)) == 2
    assert len(rounds(ring_pairs(nodes[:5]))) == 3  # an odd ring needs a third round


def test_a_slow_node_is_named_and_its_partners_are_not() -> None:
    h1, h2, h3, h4 = HOSTS
    ring = {(h1, h2): _m((h1, h2), 0.6), (h2, h3): _m((h2, h3), 0.006), (h3, h4): _m((h3, h4), 0.007),
            (h4, h1): _m((h4, h1), 0.55)}
    verdict = judge_pairs(ring, None)
    assert verdict.nodes == [h3] and verdict.links == []
    assert [p.hosts for p in verdict.problems] == [(h3,)]
    assert [r["ok"] for r in verdict.rows] == [True, False, False, True]
    # Three nodes, one throttled (as the rack-in-a-box test): the median is a healthy pair's.
    three = {(h1, h2): _m((h1, h2), 0.59), (h2, h3): _m((h2, h3), 0.006), (h3, h1): _m((h3, h1), 0.006)}
    assert judge_pairs(three, None).nodes == [h3]


def test_a_slow_link_is_the_pair_not_its_nodes() -> None:
    h1, h2, h3, h4 = HOSTS
    pairs = {(h1, h2): _m((h1, h2), 0.6), (h2, h3): _m((h2, h3), 0.1), (h3, h4): _m((h3, h4), 0.5),
             (h4, h1): _m((h4, h1), 0.55), (h1, h3): _m((h1, h3), 0.6), (h2, h4): _m((h2, h4), 0.62)}
    verdict = judge_pairs(pairs, None)
    assert verdict.nodes == [] and verdict.links == [(h2, h3)] and verdict.unexplained
    assert verdict.problems[0].hosts == (h2, h3) and "link" in verdict.problems[0].what


def test_a_pair_that_did_not_finish_and_the_noise_that_is_no_fault() -> None:
    h1, h2, h3, _ = HOSTS
    failed = judge_pairs({(h1, h2): _m((h1, h2), 0.5), (h2, h3): _m((h2, h3), None), (h3, h1): _m((h3, h1), None)},
                         None)
    assert failed.nodes == [h3] and "failed" in failed.rows[1]["problem"]
    # 2x apart is noise on a loaded machine, not a fault (the rule is 3x).
    noisy = judge_pairs({(h1, h2): _m((h1, h2), 0.6), (h2, h3): _m((h2, h3), 0.3), (h3, h1): _m((h3, h1), 0.35)}, None)
    assert noisy.problems == []


def test_nodes_and_cluster_against_floors_and_the_median() -> None:
    measures = {h: _m((h,), b, ranks=8) for h, b in zip(HOSTS, [450.0, 470.0, 140.0, 465.0], strict=True)}
    rows, problems = judge_nodes(measures, None)
    assert [p.hosts for p in problems] == [(HOSTS[2],)] and "median" in problems[0].what
    rows, problems = judge_nodes(measures, 460.0)
    assert [p.hosts[0] for p in problems] == [HOSTS[0], HOSTS[2]] and rows[1]["ok"]
    _, problems = judge_nodes({HOSTS[0]: Measure((HOSTS[0],), 1)}, None)  # one rank, nothing run: nothing to judge
    assert problems == []
    row, problems = judge_cluster(_m(HOSTS, None, ranks=4), None)
    assert not row["ok"] and problems[0].hosts == (HOSTS[-1],) and "did not finish" in problems[0].what
    row, problems = judge_cluster(_m(HOSTS, 30.0, ranks=32), 40.0)
    assert problems[0].what == "cluster all-reduce busbw 30.0 GB/s is below 40 GB/s"


def test_published_floors_name_their_source() -> None:
    assert published_for("NVIDIA H100 80GB HBM3").node == 460.0  # type: ignore[union-attr]
    assert published_for("NVIDIA H200").node == 431.0  # type: ignore[union-attr]
    assert "Azure HPC health checks" in published_for("NVIDIA H200").source  # type: ignore[union-attr]
    assert published_for("NVIDIA H200").cluster is None  # type: ignore[union-attr]  # none published through IB
    assert published_for(None) is None and published_for("NVIDIA A10") is None


def test_the_report_reads_at_80_columns_and_in_one_line() -> None:
    h1, h2, h3, h4 = HOSTS
    nodes, node_problems = judge_nodes({h: Measure((h,), 1) for h in HOSTS}, None)
    cluster, _ = judge_cluster(_m(HOSTS, 0.02, ranks=4), None)
    verdict = judge_pairs({(h1, h2): _m((h1, h2), 0.6), (h2, h3): _m((h2, h3), 0.006),
                           (h3, h4): _m((h3, h4), 0.007), (h4, h1): _m((h4, h1), 0.55)}, None)
    report = report_json(backend="gloo", nodes=nodes, cluster=cluster, pairs=verdict.rows,
                         problems=node_problems + verdict.problems, sizes=[MB4], duration_s=3.2)
    assert report["ok"] is False and set(report) >= {"ok", "backend", "nodes", "cluster", "pairs", "problems"}
    assert set(report["nodes"][0]) >= {"host", "ranks", "busbw_gbps", "ok", "problem"}
    assert set(report["pairs"][0]) >= {"hosts", "busbw_gbps", "ok"}
    lines = render_table(report)
    assert max(map(len, lines)) <= 80 and lines[0].endswith("FAILED")
    assert any(line.startswith("problem: 10.0.0.3:") for line in lines)
    assert summary_line(report).startswith("10.0.0.3: every pair with it is slow")
    json.dumps(report)


def test_interfaces_here(tmp_path: Path) -> None:
    """Against this machine's own interfaces: lo exists, is up, has 127.0.0.1 and reaches a port here."""
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        port = server.getsockname()[1]
        assert check_interface_var("GLOO_SOCKET_IFNAME", "lo", "127.0.0.1", port) == []
        assert check_interface_var("NCCL_SOCKET_IFNAME", "l", "127.0.0.1", port) == []  # NCCL: a prefix
        assert check_interface_var("NCCL_SOCKET_IFNAME", "^docker,lo", "127.0.0.1", port) == []
    (missing,) = check_interface_var("GLOO_SOCKET_IFNAME", "ib0x", "127.0.0.1", 1)
    assert missing.startswith("GLOO_SOCKET_IFNAME=ib0x: no interface ib0x here (have lo")
    (exclusion,) = check_interface_var("GLOO_SOCKET_IFNAME", "^lo", "127.0.0.1", 1)
    assert "Gloo needs interface names" in exclusion
    (empty,) = check_interface_var("TP_SOCKET_IFNAME", "", "127.0.0.1", 1)
    assert "empty here" in empty
    (unreached,) = check_interface_var("GLOO_SOCKET_IFNAME", "lo", "127.0.0.1", 1)  # nothing listens on port 1
    assert "does not reach the head 127.0.0.1:1" in unreached


def _spec(**kw: object) -> LaunchSpec:
    return LaunchSpec(hostfile=parse_hostfile_text("\n".join(HOSTS[:3])), head=HOSTS[0], base_dir="/data",
                      actor_num_nodes=3, **kw)  # type: ignore[arg-type]


def test_the_plan_checks_after_the_join_and_before_the_submit() -> None:
    plan = build_plan(_spec(netcheck=NetcheckSettings(timeout_s=30)))
    kinds = [s.kind for s in plan.steps]
    assert kinds.index("join") + 1 == kinds.index("netcheck") < kinds.index("submit")
    step = plan.step("netcheck")
    assert step is not None and step.where == "head" and step.host == HOSTS[0]
    assert step.commands[0][:3] == ("python3", "-m", "glm45_launch.runtime.programs.netcheck_driver")
    shown = step.to_json("root")
    config = shown["config"]
    assert config["hosts"] == HOSTS[:3] and config["address"] == f"{HOSTS[0]}:6379"
    assert config["env_vars"]["GLOO_SOCKET_IFNAME"] == "${MLP_SOCKET_IFNAME}"  # the job's runtime env, for Ray
    assert config["env_vars"] == dict(plan.env_vars) and step.timeout_s == netcheck_bound(NetcheckSettings(timeout_s=30), 3)
    assert plan.invocations() == build_plan(_spec()).invocations()  # not a command of the bash recipe
    assert build_plan(_spec()).step("netcheck") is None


def _report(ok: bool) -> dict:
    problems = [] if ok else [{"hosts": [HOSTS[2]], "what": "GLOO_SOCKET_IFNAME=ifh3: no interface ifh3 here"}]
    return {"ok": ok, "backend": "gloo", "nodes": [], "cluster": None, "pairs": [], "problems": problems}


def test_the_check_runs_before_every_attempt_and_a_failure_submits_nothing(tmp_path: Path) -> None:
    """Each attempt is Executor.launch() over plan.steps: the check runs again before each submit."""
    plan = build_plan(_spec(netcheck=NetcheckSettings(), workdir=str(tmp_path), checkpoint_dir=str(tmp_path / "c")))
    verdicts = [False, True]
    seen: list[str] = []

    def local(argv: Sequence[str]) -> tuple[int, list[str]]:
        argv = list(argv)
        if "glm45_launch.runtime.programs.netcheck_driver" in argv:
            ok = verdicts.pop(0)
            seen.append("netcheck")
            Path(argv[argv.index("--out") + 1]).write_text(json.dumps(_report(ok)))
            return (0 if ok else 1), []
        if argv[:3] == ["ray", "job", "submit"]:
            seen.append("submit")
            return 0, ["Job 'raysubmit_1' submitted successfully"]
        return 0, []

    rt = fake_runtime(FakeLocalRunner(local), ray=FakeRay.alive(HOSTS[:3]), here=[HOSTS[0]])
    settings = WatchSettings(max_restarts=1, watch=False, collect=False, interval_s=0.05, host_wait_s=0.3)
    sup = Supervisor(plan, build_operations(plan, settings, "P"), rt, tmp_path / "run")
    result = sup.run()
    assert seen == ["netcheck", "netcheck", "submit"] and result.exit_code == 0
    attempts = json.loads((tmp_path / "run" / "attempts.json").read_text())
    assert attempts[0]["outcome"].startswith("netcheck failed: 10.0.0.3: GLOO_SOCKET_IFNAME=ifh3")
    # Without restarts: the failure is the run's, nothing submitted.
    verdicts[:] = [False]
    seen.clear()
    sup = Supervisor(plan, build_operations(plan, replace(settings, max_restarts=0), "P"), rt, tmp_path / "run2")
    result = sup.run()
    assert seen == ["netcheck"] and result.exit_code == 1 and result.job_id is None
    assert result.cause is not None and result.cause.kind is CauseKind.NETCHECK_FAILED
    assert result.error is not None and result.error.startswith("netcheck failed: 10.0.0.3: GLOO_SOCKET_IFNAME=ifh3")


def test_the_cli_plan_shows_the_check_and_no_netcheck_drops_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from glm45_launch.cli.main import main

    hostfile = tmp_path / "hosts"
    hostfile.write_text("".join(f"{h} slots=8\n" for h in HOSTS[:3]))
    args = ["plan", "--hostfile", str(hostfile), "--head", HOSTS[0], "--base-dir", "/data", "--format", "json"]
    assert main([*args, "--netcheck-sizes", "1M,16M", "--netcheck-timeout", "30", "--min-busbw-cluster", "5"]) == 0
    step = next(s for s in json.loads(capsys.readouterr().out)["steps"] if s["kind"] == "netcheck")
    assert step["config"]["settings"] == {"backend": "auto", "sizes": [1 << 20, 16 << 20], "timeout_s": 30.0,
                                          "min_busbw_node": None, "min_busbw_cluster": 5.0, "iters": 3, "warmup": 1}
    assert main([*args, "--no-netcheck"]) == 0
    assert "netcheck" not in [s["kind"] for s in json.loads(capsys.readouterr().out)["steps"]]
    assert main([*args, "--no-netcheck", "--netcheck-backend", "nccl"]) == 2  # a usage error
    err = capsys.readouterr().err
    assert "--netcheck-backend with --no-netcheck: the network check is off" in err
    assert main([*args, "--netcheck-sizes", "big"]) == 2
    assert "--netcheck-sizes: 'big' is not a size" in capsys.readouterr().err
