"""Per-node launchers under parity: every node runs ``script ... NODE_RANK HEAD_IP``.

The script gets its arguments (``-- ARGS``, ``{rank}``/``{head}`` filled for ``--rank N``),
its polls of the cluster hear the planned cluster, a wait for a done file ends instead of
running into the timeout, repeated commands are said once with a count, an early exit shows
the script's own last words; and the Air recipe's script (tests/data/air-p2p-8node.sh, its
facts from RECIPE.md 5b) is identical to ``--profile air-p2p`` as the head and as a worker.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from glm45_launch.cli.main import main
from glm45_launch.sandbox.parity import run_script
from glm45_launch.sandbox.record import Cluster, record_script
from glm45_launch.sandbox.report import collapse

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests/data"
AIR = DATA / "air-p2p-8node.sh"
PERNODE = DATA / "pernode.sh"
MODELS = ROOT / "examples/models"
GOLDEN_AIR = json.loads((DATA / "golden/air-p2p-8node.json").read_text())
AIR_MODELS = f"{MODELS}:/root/miles/scripts/models"  # where the script reads them


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hosts") / "hostfile"
    path.write_text("".join(f"10.0.0.{i} slots=8\n" for i in range(1, 9)))
    return path


def air_args(hosts: Path, *extra: str) -> list[str]:
    return ["parity", str(AIR), "--profile", "air-p2p", "--hostfile", str(hosts), "--head", "10.0.0.1",
            "--base-dir", "/root", "--expose", AIR_MODELS, *extra]


@pytest.mark.parametrize("rank", [0, 1, 5])
def test_air_script_is_identical_to_its_profile_per_node(rank: int, hosts: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    code = main([*air_args(hosts, "--hold-workers", "--rank", str(rank)), "--", "p2p", "{rank}", "{head}"])
    out = capsys.readouterr().out
    assert code == 0, out
    side = "as rank 0 (the head)" if rank == 0 else f"as rank {rank} (worker 10.0.0.{rank + 1})"
    assert out.startswith(f"parity: {AIR} {side} (")
    want = 11 if rank == 0 else 10  # cleanup 9, ray start, (the head) the job
    assert out.endswith(f"identical: {want} of {want} invocations match\n")
    if rank == 0:  # what made them comparable is said
        assert "the plan's join step waits for the same" in out
    else:
        line = AIR.read_text().splitlines().index("    sleep 20") + 1
        assert f"`sleep 20` at line {line}: the script's pacing" in out
        assert "the plan holds the worker the same way (--hold-workers)" in out
    assert "answered `python3 -c 'print(int(1.0 * 1024 * 1024 * 1024))'` with 1073741824 (arithmetic)" in out


def test_air_worker_without_hold_names_the_difference(hosts: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*air_args(hosts, "--as-worker"), "--", "p2p", "{rank}", "{head}"]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[-3:] == [
        "  the script keeps the node until /data/ray/signals/job_done_p2p appears (the head's done file); the plan "
        "does not hold the workers (--hold-workers does)",
        "",
        "not identical: 1 difference(s)",
    ]


@pytest.mark.parametrize(("rank", "key"), [(0, "rank0_head"), (1, "rank1_worker")])
def test_air_script_records_the_golden_commands(rank: int, key: str) -> None:
    # the fixture is faithful: what each rank runs, with the variables set on the command line
    run = run_script(AIR, env={}, args=["p2p", str(rank), "10.0.0.1"], cluster=Cluster(64, 8, 8),
                     expose=[(MODELS, "/root/miles/scripts/models")])
    rec = run.recording
    assert rec.returncode == 0 and rec.complete, rec.stderr[-2000:]
    got = [{"argv": a, **({"env": dict(w.split("=", 1) for w in o.env)} if o and o.env else {})}
           for a, o in zip(rec.invocations, rec.origins, strict=True) if a[0] not in ("mkdir", "rm")]
    assert got == GOLDEN_AIR[key]
    assert [p.answer for p in rec.polls] == (["1073741824", "64"] if rank == 0 else ["1073741824"])
    if rank:
        (wait,) = rec.waits
        assert wait.argv == ["sleep", "10"] and wait.test == ["[", "!", "-f", "/data/ray/signals/job_done_p2p", "]"]


def test_arguments_reach_the_script_and_polls_hear_the_plan(hosts: Path, capsys: pytest.CaptureFixture[str],
                                                           tmp_path: Path) -> None:
    start = time.monotonic()
    code = main(["parity", str(PERNODE), "--hostfile", str(hosts), "--head", "10.0.0.1", "--base-dir", str(tmp_path),
                 "--env", "RAY_PORT=6379", "--rank", "0", "--timeout", "20", "--format", "json", "--", "{rank}",
                 "{head}"])
    report = json.loads(capsys.readouterr().out)
    assert time.monotonic() - start < 10  # the GPU poll loop ended on its first answer
    assert code == 1 and not report["timed_out"]  # a different launcher than the bash recipe: differences
    notes = report["notes"]
    assert "answered `nvidia-smi -L` as the planned cluster would" in notes
    assert "answered `ray status` as the planned cluster would" in notes
    assert any(d.startswith("`ray start`: ") and "--num-gpus" not in d for d in report["differences"]), report
    assert "the plan waits for every node to join before it submits; the script does not poll the cluster" \
        not in report["differences"]  # it did: through ray status


def test_a_wait_for_a_done_file_ends(tmp_path: Path) -> None:
    start = time.monotonic()
    rec = record_script(PERNODE, env={"BASE_DIR": str(tmp_path), "RAY_PORT": "6379"}, args=["3", "10.0.0.1"], timeout=20,
                        cluster=Cluster(16, 8, 2))
    assert time.monotonic() - start < 8 and rec.complete and rec.returncode == 0, rec.stderr
    assert [a[:2] for a in rec.invocations] == [["pkill", "-9"], ["ray", "stop"], ["sleep", "5"], ["ray", "start"]]
    (wait,) = rec.waits
    assert wait.argv == ["sleep", "3"] and wait.count >= 3
    assert wait.test == ["[", "!", "-f", f"{tmp_path}/job.done", "]"]
    assert any(n.startswith("ended a wait loop after") for n in rec.notes)


def test_an_unanswered_poll_loop_ends_too(tmp_path: Path) -> None:
    # no cluster given: ray status answers nothing, the loop polls the same way again and again
    body = "until ray status | grep -q GPU; do sleep 1; done\nray job submit -- python3 train.py\n"
    script = tmp_path / "poll.sh"
    script.write_text("#!/bin/bash\n" + body)
    rec = record_script(script, env={}, timeout=20)
    assert rec.complete and rec.invocations[-1] == ["ray", "job", "submit", "--", "python3", "train.py"]
    assert rec.invocations[:-1] == [["ray", "status"]] * len(rec.invocations[:-1])  # the polls stay recorded
    assert rec.waits and rec.waits[0].argv == ["sleep", "1"]


def test_a_for_loop_is_never_cut_short(tmp_path: Path) -> None:
    script = tmp_path / "fan.sh"
    script.write_text("#!/bin/bash\nfor h in a b c d e f; do sleep 1; done\nfor h in a b c d e f; do ssh $h x; "
                      "sleep 1; done\n")
    rec = record_script(script, env={}, timeout=20)
    assert rec.waits == [] and rec.invocations.count(["sleep", "1"]) == 12 and len(rec.invocations) == 18


def test_repeated_commands_are_said_once_with_a_count(hosts: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    script = tmp_path / "repeat.sh"
    script.write_text("#!/bin/bash\nfor i in $(seq 1 200); do sleep 5; done\n")
    assert main(["parity", str(script), "--hostfile", str(hosts), "--head", "10.0.0.1", "--base-dir", "/d",
                 "--no-cleanup"]) == 1
    out = capsys.readouterr().out
    assert "  only in the script: `sleep 5` (x200)\n" in out
    assert collapse(["a", "a", "b", "a"]) == ["a (x2)", "b", "a"]


@pytest.mark.parametrize(("args", "env", "last"), [
    ([], {"RAY_PORT": "6379"}, "usage: {script} NODE_RANK HEAD_IP"),
    (["0", "10.0.0.1"], {}, "(stderr) {script}: line 14: RAY_PORT: RAY_PORT is not set"),
])
def test_an_early_exit_shows_the_scripts_last_words(args: list[str], env: dict[str, str], last: str, hosts: Path,
                                                     tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = tmp_path / "pernode.sh"
    shutil.copy(PERNODE, script)
    env_args = [w for k, v in env.items() for w in ("--env", f"{k}={v}")]
    assert main(["parity", str(script), "--hostfile", str(hosts), "--head", "10.0.0.1", "--base-dir", "/d",
                 *env_args, "--", *args]) == 1
    out = capsys.readouterr().out
    lines = out.splitlines()
    at = lines.index("The script ended early; its last output:")
    assert lines[at + 1] == "  | " + last.format(script=script)
    assert "script exited with status 1" in out


def test_rank_errors_are_one_line(hosts: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["parity", str(PERNODE), "--hostfile", str(hosts), "--head", "10.0.0.1", "--base-dir", "/d"]
    assert main([*base, "--rank", "8", "--", "{rank}", "{head}"]) == 2
    assert capsys.readouterr().err == ("glm45-launch: error: --rank 8: the plan has 8 node(s) (ranks 0 to 7)\n")
    assert main([*base, "--", "{rank}", "{head}"]) == 2
    assert capsys.readouterr().err == ("glm45-launch: error: the script's arguments use {rank}/{host}: give --rank N "
                                       "or --as-worker\n")
    assert main([*base, "--rank", "1", "--as-worker"]) == 2
    assert capsys.readouterr().err == "glm45-launch: error: --rank and --as-worker: give one\n"
