"""``parity`` and ``import`` over edited copies of the reference script.

Each edited copy is recorded once under the shims; parity against the default plan must name
exactly the edit, and the imported recipe (written to TOML and read back) must plan back to
exactly the recorded argv.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from glm45_launch import BASH_RECIPE, LaunchSpec, build_plan, load_hostfile
from glm45_launch.cli.main import main
from glm45_launch.core.plan import Variant
from glm45_launch.core.recipe_file import dump_recipe, load_recipe
from glm45_launch.recipes import fill_all
from glm45_launch.sandbox.importer import attribute, import_run, known_flags, verify
from glm45_launch.sandbox.parity import ScriptRun, compare, normalize, run_script

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SCRIPT = EXAMPLES / "run-glm4.5-355B-A32B.sh"
GOLDEN = json.loads((ROOT / "tests/data/golden/glm45-355b-a32b-8node.json").read_text())
ENV = GOLDEN["environment"]
HEAD, BASE = ENV["MLP_WORKER_0_HOST"], ENV["BASE_DIR"]
WORKERS = ", ".join(f"root@10.0.0.{i}" for i in range(2, 9))
HEAD_ENV = "head env (at `ray start --head`):"


@dataclass
class Case:
    """An edit of the reference script and what parity must say about it."""

    name: str
    edits: list[tuple[str, str]]
    differences: list[str]
    env: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # substrings of parity's notes
    script_hostfile: str | None = None


CASES = [
    Case("temperature", [("--rollout-temperature 1\n", "--rollout-temperature 0.8\n")],
         ["train arg ROLLOUT --rollout-temperature: 1 -> 0.8"]),
    Case("removed-flag", [("   --balance-data\n", "")], ["train arg ROLLOUT --balance-data: removed"]),
    Case("added-flag", [("   # --use-kl-loss\n", "   --use-kl-loss\n")], ["train arg GRPO --use-kl-loss: added"]),
    Case("model-file", [("models/glm4.5-355B-A32B.sh", "models/glm4.5-106B-A12B.sh")], [
        "train arg MODEL --qk-layernorm: removed",
        "train arg MODEL --moe-router-topk-scaling-factor: removed (was 2.5)",
        "train arg MODEL --num-layers: 92 -> 46",
        "train arg MODEL --hidden-size: 5120 -> 4096",
        "train arg MODEL --ffn-hidden-size: 12288 -> 10944",
        "train arg MODEL --moe-ffn-hidden-size: 1536 -> 1408",
        "train arg MODEL --moe-shared-expert-intermediate-size: 1536 -> 1408",
        "train arg MODEL --moe-layer-freq: '[0]*3+[1]*89' -> '[0]*1+[1]*45'",
        "train arg MODEL --num-experts: 160 -> 128",
    ]),
    Case("debug-rollout-data", [("   --balance-data\n",
                                 "   --balance-data\n   --save-debug-rollout-data ${BASE_DIR}/debug/{rollout_id}.pt\n")],
         [f"train arg ROLLOUT --save-debug-rollout-data: added ('{BASE}/debug/{{rollout_id}}.pt')"]),
    Case("runtime-env", [('"NCCL_IB_TC": "160",', '"NCCL_IB_TC": "106",\n        "NCCL_DEBUG": "INFO",')],
         ["runtime env NCCL_IB_TC: 160 -> 106", "runtime env NCCL_DEBUG: added = INFO"]),
    Case("hostfile-default", [("${HOSTFILE:-/root/mpi_rack_hostfile}", "${HOSTFILE:-/etc/rack/hosts}")], []),
    Case("hostfile-hardcoded", [('"${HOSTFILE}"', "/etc/rack/hosts")], [], script_hostfile="/etc/rack/hosts"),
    Case("pythonbuffered", [("export PYTHONUNBUFFERED=1", "export PYTHONBUFFERED=1")], [
        f"{HEAD_ENV} PYTHONUNBUFFERED: missing from the script (plan: 1)",
        f"{HEAD_ENV} PYTHONBUFFERED: only in the script (= 1)",
    ]),
    Case("actor-num-nodes-var", [
        ("# Ray head on this node\n", "ACTOR_NUM_NODES=${ACTOR_NUM_NODES:-4}\n# Ray head on this node\n"),
        ("   --actor-num-nodes 8 \\", "   --actor-num-nodes ${ACTOR_NUM_NODES} \\"),
    ], ["train arg PREFIX --actor-num-nodes: 8 -> 4"]),
    Case("worker-gpus", [("--num-gpus 8 --node-ip-address ${WORKER_IP}", "--num-gpus 4 --node-ip-address ${WORKER_IP}")],
         [f"ssh 7 workers ({WORKERS}): `ray start`: --num-gpus: 8 -> 4"]),
    Case("moved-flag", [("\n   --use-tis\n", "\n"), ("   --eval-top-p 1\n", "   --eval-top-p 1\n   --use-tis\n")],
         ["train arg GRPO --use-tis: moved (now in EVAL, after --eval-top-p)"]),
    Case("dashboard-port", [("8265", "8266")], [
        "`ray start`: --dashboard-port: 8265 -> 8266",
        "ray job submit options: plan `ray job submit --address=http://127.0.0.1:8265`, "
        "script `ray job submit --address=http://127.0.0.1:8266`",
        f"ssh 7 workers ({WORKERS}): `ray start`: --dashboard-port: 8265 -> 8266",
    ]),
    Case("extra-cleanup-command", [("pkill -9 sglang\nsleep 3\n", "nvidia-smi\npkill -9 sglang\nsleep 3\n")],
         ["only in the script: `nvidia-smi`"]),
    Case("framework-env", [], [
        "train arg ROLLOUT --dynamic-sampling-filter-path: "
        "miles.rollout.filter_hub.dynamic_sampling_filters.check_reward_nonzero_std -> "
        "slime.rollout.filter_hub.dynamic_sampling_filters.check_reward_nonzero_std",
    ], env={"FRAMEWORK_PACKAGE": "slime"}),
    Case("wandb", [("   # --use-wandb\n", "   --use-wandb\n   --wandb-project glm45\n")], [
        "train arg WANDB --use-wandb: added", "train arg WANDB --wandb-project: added (glm45)"]),
    Case("reads-stdin", [("set -ex\n", "set -ex\nread -r ANSWER || true\n")], []),
]


@pytest.fixture(scope="module")
def hostfile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hosts") / "hostfile"
    path.write_text("".join(line + "\n" for line in GOLDEN["hostfile"]))
    return path


def edited_copy(tmp_path: Path, edits: list[tuple[str, str]]) -> Path:
    """A copy of the reference script (beside a copy of its model files) with ``edits`` made."""
    scripts = tmp_path / "scripts"
    shutil.copytree(EXAMPLES / "models", scripts / "models")
    text = SCRIPT.read_text()
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new)
    path = scripts / "run.sh"
    path.write_text(text)
    return path


def default_plan(hostfile: Path, **kw: object):
    return build_plan(LaunchSpec(hostfile=load_hostfile(hostfile), head=HEAD, base_dir=BASE, **kw))  # type: ignore[arg-type]


def round_trip(run: ScriptRun, hostfile: Path, tmp_path: Path) -> tuple[Path, object]:
    """import -> TOML file -> load -> plan; returns the file and the plan."""
    hosts = load_hostfile(hostfile)
    imported = import_run(run, head=HEAD, base_dir=BASE, hostfile=hosts, name="imported")
    assert imported.unrepresentable == []
    path = tmp_path / "imported.toml"
    path.write_text(dump_recipe(imported.recipe))
    plan = build_plan(LaunchSpec(hostfile=hosts, head=HEAD, base_dir=BASE, recipe=load_recipe(path),
                                 ssh_user=imported.ssh_user))
    return path, plan


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_parity_names_the_edit_and_import_round_trips(case: Case, hostfile: Path, tmp_path: Path) -> None:
    script = edited_copy(tmp_path, case.edits)
    run = run_script(script, env={**ENV, **case.env}, hostfile=hostfile, script_hostfile=case.script_hostfile)
    assert not run.recording.timed_out and run.recording.returncode == 0, run.recording.stderr[-2000:]
    report = compare(default_plan(hostfile), run, str(script))
    assert report.differences == case.differences
    assert report.identical == (not case.differences)
    for note in case.notes:
        assert any(note in n for n in report.notes), report.notes
    _, plan = round_trip(run, hostfile, tmp_path)
    assert [list(normalize(a)) for a in plan.invocations()] == [list(normalize(a)) for a in run.invocations]
    assert compare(plan, run).identical


def test_reference_script_is_identical_and_imports_to_the_bash_recipe(hostfile: Path, tmp_path: Path) -> None:
    run = run_script(SCRIPT, env=ENV, hostfile=hostfile)
    report = compare(default_plan(hostfile), run, "ref")
    assert report.identical and report.render().endswith("identical: 17 of 17 invocations match\n")
    path, plan = round_trip(run, hostfile, tmp_path)
    recipe = load_recipe(path)
    model = default_plan(hostfile).train_groups[0][1]
    values = {"ckpt_name": "GLM-4.5-355B-A32B", "framework": "miles"}  # not turned back into placeholders
    assert recipe.groups == {g: fill_all(w, values) for g, w in {**BASH_RECIPE.groups, "MODEL": model}.items()}
    assert (recipe.train_prefix, recipe.head_start, recipe.worker_commands, recipe.submit, recipe.entry) == (
        BASH_RECIPE.train_prefix, BASH_RECIPE.head_start, BASH_RECIPE.worker_commands, BASH_RECIPE.submit,
        BASH_RECIPE.entry)
    assert recipe.env_vars == BASH_RECIPE.env_vars and recipe.head_exports == BASH_RECIPE.head_exports
    assert recipe.head_cleanup == BASH_RECIPE.head_cleanup


def test_imported_recipe_works_on_another_rack(hostfile: Path, tmp_path: Path) -> None:
    script = edited_copy(tmp_path, CASES[9].edits)  # ACTOR_NUM_NODES=4
    run = run_script(script, env=ENV, hostfile=hostfile)
    path, _ = round_trip(run, hostfile, tmp_path)
    other = tmp_path / "other-hosts"
    other.write_text("192.168.1.10\n192.168.1.11\n")
    plan = build_plan(LaunchSpec(hostfile=load_hostfile(other), head="192.168.1.10", base_dir="/mnt/b",
                                 recipe=load_recipe(path)))
    argv = plan.train_argv
    assert argv[argv.index("--actor-num-nodes") + 1] == "4"  # the script's value, as a default
    assert argv[argv.index("--hf-checkpoint") + 1] == "/mnt/b/GLM-4.5-355B-A32B"
    assert plan.invocations()[-1][1:3] == ["root@192.168.1.11",
                                          "pkill -9 sglang ; ray stop --force ; pkill -9 python ; ray start "
                                          "--address=192.168.1.10:6379 --num-gpus 8 --node-ip-address 192.168.1.11 "
                                          "--disable-usage-stats --dashboard-host=0.0.0.0 --dashboard-port=8265"]
    over = build_plan(LaunchSpec(hostfile=load_hostfile(other), head="192.168.1.10", base_dir="/mnt/b",
                                 recipe=load_recipe(path), actor_num_nodes=2))
    assert over.train_argv[over.train_argv.index("--actor-num-nodes") + 1] == "2"


def test_default_plan_as_bash_is_identical(hostfile: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--hostfile", str(hostfile), "--head", HEAD, "--base-dir", BASE, "--workdir", str(tmp_path)]
    assert main(["plan", *args, "--format", "bash"]) == 0
    script = tmp_path / "plan.sh"
    script.write_text(capsys.readouterr().out)
    assert main(["parity", str(script), *args]) == 0
    assert capsys.readouterr().out.endswith("identical: 17 of 17 invocations match\n")


def test_python_profile_plan_as_bash_is_identical_to_its_plan(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    hosts = tmp_path / "gb"
    hosts.write_text("".join(f"10.0.0.{i} slots=4\n" for i in range(1, 9)))
    args = ["--hostfile", str(hosts), "--head", HEAD, "--base-dir", BASE, "--workdir", str(tmp_path),
            "--profile", "python", "--hardware", "GB300", "--mtp"]
    assert main(["plan", *args, "--format", "bash"]) == 0
    script = tmp_path / "plan.sh"
    script.write_text(capsys.readouterr().out)
    assert main(["parity", str(script), *args]) == 0
    capsys.readouterr()
    assert main(["parity", str(script), *args[:-5]]) == 1  # vs the bash profile: named differences
    out = capsys.readouterr().out
    assert "train arg GRPO --advantage-estimator: gspo -> grpo" in out
    assert "runtime env SGLANG_ENABLE_SPEC_V2: added = 1" in out


def test_unredirected_hostfile_is_explained(hostfile: Path, tmp_path: Path) -> None:
    script = edited_copy(tmp_path, [('"${HOSTFILE}"', "/etc/rack/hosts")])
    report = compare(default_plan(hostfile), run_script(script, env=ENV, hostfile=hostfile), "s")
    assert report.differences == [f"ssh 7 workers ({WORKERS}): in the plan, not run by the script"]
    assert any("awk: cannot open /etc/rack/hosts" in n and "--script-hostfile" in n for n in report.notes)


def test_inline_python_is_reported_and_not_importable(hostfile: Path, tmp_path: Path) -> None:
    script = edited_copy(tmp_path, [("--dashboard-port=8265\n", "--dashboard-port=8265\npython3 -c 'import ray'\n")])
    run = run_script(script, env=ENV, hostfile=hostfile)
    report = compare(default_plan(hostfile), run)
    assert report.differences == ["only in the script (inline Python, not interpreted): `python3 -c 'import ray'`"]
    imported = import_run(run, head=HEAD, base_dir=BASE, hostfile=load_hostfile(hostfile))
    assert imported.unrepresentable == ["`python3 -c 'import ray'` (after `ray start --head`; a recipe has no place "
                                        "for it)"]
    assert not verify(imported, run, head=HEAD, base_dir=BASE, hostfile=load_hostfile(hostfile)).identical


def test_endless_script_is_cut_off(hostfile: Path, tmp_path: Path) -> None:
    script = edited_copy(tmp_path, [("wait\n", "wait\nwhile :; do :; done\n")])
    start = time.monotonic()
    run = run_script(script, env=ENV, hostfile=hostfile, timeout=2)
    assert time.monotonic() - start < 8
    report = compare(default_plan(hostfile), run)
    assert run.recording.timed_out and not report.identical
    assert report.differences == ["missing from the script: `ray job submit --address=http://127.0.0.1:8265 "
                                  + report.differences[0].split("8265 ", 1)[1]]
    assert any("timed out" in n for n in report.notes)
    assert "not identical" in report.render()


def test_variant_plan_vs_reference_names_the_variant(hostfile: Path) -> None:
    run = run_script(SCRIPT, env=ENV, hostfile=hostfile)
    report = compare(default_plan(hostfile, variant=Variant(mtp=False, r3=True)), run)
    assert report.differences == [
        "train arg GRPO --use-rollout-routing-replay: removed",
        *(f"train arg SGLANG {f}: added" + (f" ({v})" if v else "") for f, v in [
            ("--sglang-speculative-algorithm", "EAGLE"), ("--sglang-speculative-num-steps", "1"),
            ("--sglang-speculative-eagle-topk", "1"), ("--sglang-speculative-num-draft-tokens", "2"),
            ("--sglang-enable-draft-weights-cpu-backup", "")]),
    ]


def test_attribution_keeps_order_and_unknown_flags_in_place() -> None:
    groups = known_flags()
    words = ["--actor-num-nodes", "8", "--colocate", "--num-layers", "2", "--my-flag", "x",
             "--hf-checkpoint", "/h", "--eval-interval", "5", "--rollout-temperature", "1", "--moe-token-dispatcher-type",
             "flex"]
    got = attribute(words, groups)
    assert got["PREFIX"] == ("--actor-num-nodes", "8", "--colocate")
    assert got["MODEL"] == ("--num-layers", "2", "--my-flag", "x")
    assert got["CKPT"] == ("--hf-checkpoint", "/h")
    assert got["EVAL"] == ("--eval-interval", "5", "--rollout-temperature", "1")  # out of order: stays put
    assert got["MISC"] == ("--moe-token-dispatcher-type", "flex")
    assert [w for g in groups for w in got[g]] == words


def test_cli_import_and_parity(hostfile: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = edited_copy(tmp_path, CASES[0].edits)
    out = tmp_path / "r.toml"
    args = ["--hostfile", str(hostfile), "--env", f"BASE_DIR={BASE}", "--env", f"MLP_WORKER_0_HOST={HEAD}",
            "--env", "MLP_SOCKET_IFNAME=eth0"]
    assert main(["import", str(script), "-o", str(out), *args]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"wrote {out} (recipe run,") and "round trip: identical (17 invocations)" in text
    assert out.read_text().startswith(f"# Recipe imported from {script} by `glm45-launch import`.\n")
    assert main(["import", str(script), "-o", str(out), *args]) == 2  # no overwrite without --force
    assert "exists (give --force to overwrite)" in capsys.readouterr().err
    assert main(["parity", str(script), *args, "--recipe", str(out)]) == 0
    assert "identical" in capsys.readouterr().out
    assert main(["parity", str(script), *args, "--format", "json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["identical"] is False
    assert data["differences"] == ["train arg ROLLOUT --rollout-temperature: 1 -> 0.8"]


def test_cli_parity_missing_script(capsys: pytest.CaptureFixture[str], tmp_path: Path, hostfile: Path) -> None:
    code = main(["parity", str(tmp_path / "nope.sh"), "--hostfile", str(hostfile), "--head", HEAD,
                 "--base-dir", BASE])
    assert code == 2 and "nope.sh: no such script" in capsys.readouterr().err


def line_of(script: Path, text: str) -> int:
    return next(i for i, line in enumerate(script.read_text().splitlines(), 1) if text in line)


IMPORT_REFUSALS = [
    pytest.param([("pkill -9 sglang\n", 'BUF=$(python3 -c "import os; print(os.cpu_count() * 2**30)")\n'
                   "pkill -9 sglang\n"),
                  ("   --attention-backend flash\n", "   --attention-backend flash\n   --update-weight-buffer-size ${BUF}\n")],
                 ["BUF=$(python3", "a value computed by inline code `python3 -c 'import os; print(os.cpu_count() * "
                  "2**30)'` (the recorder does not run it: what the script did with its output is unknown)"],
                 ["ray job submit", "`--update-weight-buffer-size` of `ray job submit` lost its "
                  "value (an empty variable, or one computed by code the recorder does not run)"],
                 id="inline-code-value-and-lost-flag"),
    pytest.param([("pkill -9 sglang\n", "pkill -9 sglang\npython3 -c 'import ray; ray.shutdown()'\n")],
                 ["python3 -c 'import ray", "`python3 -c 'import ray; ray.shutdown()'` (inline code in the cleanup: "
                  "not interpreted)"], None, id="inline-python-in-the-cleanup"),
    pytest.param([("pkill -9 sglang\n", "pkill -9 sglang\nrm -rf /tmp/ray\n")],
                 ["rm -rf /tmp/ray", "`rm -rf /tmp/ray` (a command the recorder does not know: recorded, not run; "
                  "import does not vouch for it)"], None, id="unknown-command"),
    pytest.param([("pkill -9 sglang\n", 'BUF=$(python3 -c "print(int(1.5 * 1024))")\npkill -9 sglang\n'),
                  ("   --attention-backend flash\n", "   --attention-backend flash\n   --update-weight-buffer-size ${BUF}\n")],
                 ["BUF=$(python3", "a value computed by inline code `python3 -c 'print(int(1.5 * 1024))'` (the "
                  "recorder answered 1536; a recipe has no place for the computation)"], None, id="computed-value"),
]


@pytest.mark.parametrize(("edits", "first", "second"), IMPORT_REFUSALS)
def test_import_refuses_what_a_recipe_would_not_reproduce(edits: list[tuple[str, str]], first: list[str],
                                                          second: list[str] | None, hostfile: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    script = edited_copy(tmp_path, edits)
    out = tmp_path / "r.toml"
    args = ["--hostfile", str(hostfile), "--env", f"BASE_DIR={BASE}", "--env", f"MLP_WORKER_0_HOST={HEAD}"]
    assert main(["import", str(script), "-o", str(out), *args]) == 1
    text = capsys.readouterr().out
    assert not out.exists()  # never a recipe that would run something else
    assert f"import: {script}: no recipe written: it would not run what the script runs\n" in text
    for where, message in [first] + ([second] if second else []):
        assert f"  not imported: line {line_of(script, where)}: {message}\n" in text, text


def test_import_refuses_a_write_it_would_not_do(hostfile: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    script = edited_copy(tmp_path, [("pkill -9 sglang\n", "pkill -9 sglang\necho started > /var/log/launch.log\n")])
    out = tmp_path / "r.toml"
    args = ["--hostfile", str(hostfile), "--env", f"BASE_DIR={BASE}", "--env", f"MLP_WORKER_0_HOST={HEAD}"]
    assert main(["import", str(script), "-o", str(out), *args]) == 1
    text = capsys.readouterr().out
    assert not out.exists()
    assert "  the script writes /var/log/launch.log (skipped in the recording): the recipe would not\n" in text
    assert "  ? skipped `echo started > /var/log/launch.log`: it writes /var/log/launch.log (outside the sandbox)\n" in text


def test_parity_and_import_pass_the_script_its_arguments(hostfile: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    # the reference script, made to take its temperature as $1
    script = edited_copy(tmp_path, [("--rollout-temperature 1\n", "--rollout-temperature ${1:-1}\n")])
    args = ["--hostfile", str(hostfile), "--env", f"BASE_DIR={BASE}", "--env", f"MLP_WORKER_0_HOST={HEAD}"]
    assert main(["parity", str(script), *args, "--", "0.7"]) == 1
    assert "train arg ROLLOUT --rollout-temperature: 1 -> 0.7" in capsys.readouterr().out
    out = tmp_path / "r.toml"
    assert main(["import", str(script), "-o", str(out), *args, "--", "0.7"]) == 0, capsys.readouterr().out
    assert "--rollout-temperature', '0.7'" in str(load_recipe(out).groups["ROLLOUT"]).replace('"', "'")
