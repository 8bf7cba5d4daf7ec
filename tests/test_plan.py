"""Pure plan properties: ``build_plan`` turns a spec into the bash recipe's exact commands."""

from __future__ import annotations

import json
import shlex
from dataclasses import replace
from typing import Any

import pytest

from glm45_launch.checks.rules import check_plan
from glm45_launch.core.builder import build_plan
from glm45_launch.core.hostfile import parse_hostfile_text
from glm45_launch.core.job_facts import JobFacts
from glm45_launch.core.plan import LaunchSpec, Plan
from glm45_launch.core.render import render
from glm45_launch.core.runtime_env import runtime_env_json
from glm45_launch.core.steps import SubmitStep
from glm45_launch.errors import LaunchError
from glm45_launch.recipes import BASH_RECIPE, MODELS

HEAD = "10.0.0.1"
BASE = "/data/glm"
HOSTS8 = [f"10.0.0.{i}" for i in range(1, 9)]
CLEANUP = [
    ["pkill", "-9", "sglang"],
    ["sleep", "3"],
    ["ray", "stop", "--force"],
    ["pkill", "-9", "ray"],
    ["pkill", "-9", "python"],
    ["sleep", "3"],
    ["pkill", "-9", "ray"],
    ["pkill", "-9", "python"],
]
RAY_TAIL = ["--disable-usage-stats", "--dashboard-host=0.0.0.0", "--dashboard-port=8265"]
REF_LOAD = f"{BASE}/GLM-4.5-355B-A32B_torch_dist/"
FILTER = "check_reward_nonzero_std"


def hostfile(names: list[str], slots: int | None = 8) -> Any:
    suffix = "" if slots is None else f" slots={slots}"
    return parse_hostfile_text("".join(f"{n}{suffix}\n" for n in names), "hosts")


def make(hosts: list[str] | None = None, **kw: Any) -> Plan:
    spec = LaunchSpec(
        hostfile=kw.pop("hostfile", None) or hostfile(HOSTS8 if hosts is None else hosts),
        head=kw.pop("head", HEAD),
        base_dir=kw.pop("base_dir", BASE),
        workdir=kw.pop("workdir", "/w"),
        **kw,
    )
    return build_plan(spec)


def worker_cmd(host: str, head: str = HEAD, gpus: int = 8) -> str:
    return (
        f"pkill -9 sglang ; ray stop --force ; pkill -9 python ; ray start --address={head}:6379 "
        f"--num-gpus {gpus} --node-ip-address {host} --disable-usage-stats --dashboard-host=0.0.0.0 "
        "--dashboard-port=8265"
    )


def diff_words(a: list[list[str]], b: list[list[str]]) -> list[tuple[int, int, str, str]]:
    """(invocation, word, a, b) for every differing word of two same-shaped argv lists."""
    assert [len(x) for x in a] == [len(x) for x in b]
    return [
        (i, j, x, y)
        for i, (xa, xb) in enumerate(zip(a, b, strict=True))
        for j, (x, y) in enumerate(zip(xa, xb, strict=True))
        if x != y
    ]


def group(plan: Plan, name: str) -> list[str]:
    return list(dict(plan.train_groups)[name])


@pytest.fixture(scope="module")
def default() -> Plan:
    return make()


# --- invocations and steps ---------------------------------------------------------------------


def test_invocations_order(default: Plan) -> None:
    inv = default.invocations()
    assert inv[:8] == CLEANUP
    assert inv[8] == ["ray", "start", "--head", "--node-ip-address", HEAD, "--num-gpus", "8", *RAY_TAIL]
    assert inv[9][:6] == ["ray", "job", "submit", "--address=http://127.0.0.1:8265", inv[9][4], "--"]
    assert inv[9][4].startswith("--runtime-env-json=")
    assert inv[10:] == [["ssh", f"root@{h}", worker_cmd(h)] for h in HOSTS8[1:]]
    assert len(inv) == 17


def test_steps_order_and_flags(default: Plan) -> None:
    kinds = [s.kind for s in default.steps]
    assert kinds == ["cleanup", "head-start"] + ["worker-start"] * 7 + ["join", "submit"]
    cleanup, start = default.steps[0], default.steps[1]
    assert cleanup.ignore_errors and cleanup.spare_launcher
    assert [list(c) for c in cleanup.commands] == CLEANUP
    assert start.cwd == "/w" and default.step("submit").cwd == "/w"
    assert dict(start.env) == {"PYTHONUNBUFFERED": "1", "MASTER_ADDR": HEAD, "no_proxy": f"127.0.0.1,{HEAD}"}
    # A worker failing `ray start` stops the launch (the recipe would ignore it).
    assert not any(s.ignore_errors for s in default.worker_steps)
    assert default.step("join").commands == ()
    assert default.cluster_hosts == HOSTS8
    assert default.gpus_per_node == 8


def test_submit_argv(default: Plan) -> None:
    argv = default.submit_argv
    assert argv[argv.index("--") + 1 :] == default.train_argv
    assert default.train_argv[:8] == [
        "python3",
        "train.py",
        "--actor-num-nodes",
        "8",
        "--actor-num-gpus-per-node",
        "8",
        "--colocate",
        "--disable-bias-linear",
    ]
    words = [w for _, ws in default.train_groups for w in ws]
    assert default.train_argv[7:] == words
    assert [g for g, _ in default.train_groups] == list(BASH_RECIPE.group_order)
    assert group(default, "MODEL") == list(MODELS["glm4.5-355B-A32B"].args)
    assert group(default, "CKPT") == ["--hf-checkpoint", f"{BASE}/GLM-4.5-355B-A32B", "--ref-load", REF_LOAD]
    assert group(default, "WANDB") == []
    # --moe-token-dispatcher-type twice, in place (MODEL alltoall, MISC flex)
    i = [n for n, w in enumerate(words) if w == "--moe-token-dispatcher-type"]
    assert [words[n + 1] for n in i] == ["alltoall", "flex"]
    assert "--load" not in words and "--save" not in words


def test_runtime_env_is_literal_and_ordered(default: Plan) -> None:
    word = next(w for w in default.submit_argv if w.startswith("--runtime-env-json="))
    items = json.loads(word.split("=", 1)[1], object_pairs_hook=list)[0][1]
    assert items == list(BASH_RECIPE.env_vars)
    assert len(items) == 26
    assert dict(default.env_vars)["MASTER_ADDR"] == "${MLP_WORKER_0_HOST}"
    assert word == "--runtime-env-json=" + runtime_env_json(BASH_RECIPE.env_vars)


@pytest.mark.parametrize("position", [0, 3, 7])
def test_head_listed_is_skipped_from_fan_out(position: int) -> None:
    hosts = [f"10.0.0.{i}" for i in range(11, 18)]
    hosts.insert(position, HEAD)
    plan = make(hosts)
    assert [s.host for s in plan.worker_steps] == [h for h in hosts if h != HEAD]  # file order
    ssh = [a for a in plan.invocations() if a[0] == "ssh"]
    assert [a[1] for a in ssh] == sorted(f"root@{h}" for h in hosts if h != HEAD)
    assert plan.cluster_hosts[0] == HEAD and len(plan.cluster_hosts) == 8
    assert dict(plan.settings)["head"] == HEAD
    assert not any("not in" in n for n in plan.notes)


def test_head_absent_makes_every_host_a_worker() -> None:
    hosts = [f"10.0.0.{i}" for i in range(2, 10)]
    plan = make(hosts)
    assert [s.host for s in plan.worker_steps] == hosts
    assert dict(plan.settings)["nodes"] == "9"
    assert dict(plan.settings)["head"] == f"{HEAD} (not in the hostfile)"
    assert f"head {HEAD} is not in hosts: every listed host joins as a worker" in plan.notes
    assert plan.step("join").purpose.startswith("wait until 9 node(s) and 72 GPUs have joined")


def test_single_host_is_the_head() -> None:
    plan = make([HEAD])
    assert plan.worker_steps == []
    assert [a[0] for a in plan.invocations()] == [
        "pkill",
        "sleep",
        "ray",
        "pkill",
        "pkill",
        "sleep",
        "pkill",
        "pkill",
        "ray",
        "ray",
    ]
    # the rule lives in validate.py (plan/validate/up all report it from there)
    assert any(
        str(p).startswith("--actor-num-nodes 8 but the cluster has 1 node(s)") for p in check_plan(plan)
    )


def test_hostnames_are_compared_as_written() -> None:
    hosts = ["node-01.rack.local", "node-02.rack.local", "node-03.rack.local"]
    plan = make(hosts, head="node-01.rack.local")
    assert [s.host for s in plan.worker_steps] == hosts[1:]
    assert plan.invocations()[-1] == [
        "ssh",
        "root@node-03.rack.local",
        worker_cmd("node-03.rack.local", head="node-01.rack.local"),
    ]


def test_slots_set_gpus_per_node() -> None:
    plan = make(hostfile=hostfile(HOSTS8, slots=4))
    assert plan.invocations()[8][6] == "4"  # ray start --num-gpus
    assert plan.train_argv[5] == "4"  # --actor-num-gpus-per-node
    assert plan.invocations()[-1][2] == worker_cmd("10.0.0.8", gpus=4)
    assert make(hostfile=hostfile(HOSTS8, slots=4), gpus_per_node=8).invocations() == make().invocations()
    assert make(hostfile=hostfile(HOSTS8, slots=None)).invocations() == make().invocations()


def test_actor_num_nodes_override() -> None:
    plan = make(actor_num_nodes=2)
    assert plan.train_argv[2:4] == ["--actor-num-nodes", "2"]
    assert not any("--actor-num-nodes" in w for w in plan.warnings)
    assert not any(p.code == "nodes" for p in check_plan(plan))


# --- checkpoints -------------------------------------------------------------------------------


def test_default_checkpoint_note(default: Plan) -> None:
    assert default.notes[0] == f"effective --load = {REF_LOAD}; no checkpoints are saved"


@pytest.mark.parametrize("interval", [1, 20, 50])
def test_checkpoint_dir_adds_load_save_at_end_of_ckpt(default: Plan, interval: int) -> None:
    plan = make(checkpoint_dir="/ckpt/run1", save_interval=interval)
    added = ["--load", "/ckpt/run1", "--save", "/ckpt/run1", "--save-interval", str(interval)]
    assert group(plan, "CKPT") == group(default, "CKPT") + added
    for name, words in default.train_groups:
        if name != "CKPT":
            assert group(plan, name) == list(words)
    # in the submit argv, right after --ref-load REF and before ROLLOUT
    argv = plan.train_argv
    i = argv.index("--ref-load")
    assert argv[i : i + 2 + len(added) + 1] == ["--ref-load", REF_LOAD, *added, "--prompt-data"]
    assert plan.notes[0] == (
        f"--load/--save = /ckpt/run1 every {interval} rollouts; until it holds "
        f"latest_checkpointed_iteration.txt the trainer loads --ref-load {REF_LOAD}"
    )
    assert not any("no checkpoints" in n for n in plan.notes)
    # everything but the submit command is untouched
    assert plan.invocations()[:9] == default.invocations()[:9]
    assert plan.invocations()[10:] == default.invocations()[10:]


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"checkpoint_dir": "/c", "save_interval": 0}, "--save-interval: must be >= 1, got 0"),
        ({"checkpoint_dir": "  "}, "--checkpoint-dir: empty path"),
    ],
)
def test_checkpoint_errors(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(LaunchError) as info:
        make(**kw)
    assert str(info.value) == message


# --- one-word variations -----------------------------------------------------------------------


def test_framework_slime_changes_only_the_filter_path(default: Plan) -> None:
    plan = make(framework="slime")
    (diff,) = diff_words(default.invocations(), plan.invocations())
    assert diff[2:] == (
        f"miles.rollout.filter_hub.dynamic_sampling_filters.{FILTER}",
        f"slime.rollout.filter_hub.dynamic_sampling_filters.{FILTER}",
    )
    assert dict(plan.settings)["framework"] == "slime"


def test_entry_changes_only_that_word(default: Plan) -> None:
    plan = make(entry="smoke.py")
    (diff,) = diff_words(default.invocations(), plan.invocations())
    assert diff[2:] == ("train.py", "smoke.py")
    assert plan.train_argv[:2] == ["python3", "smoke.py"]
    assert "`python3 smoke.py`" in plan.step("submit").purpose


def test_model_air(default: Plan) -> None:
    plan = make(model="glm4.5-106B-A12B")
    assert group(plan, "MODEL") == list(MODELS["glm4.5-106B-A12B"].args)
    assert "--qk-layernorm" not in plan.train_argv
    assert group(plan, "CKPT") == [
        "--hf-checkpoint",
        f"{BASE}/GLM-4.5-Air",
        "--ref-load",
        f"{BASE}/GLM-4.5-Air_torch_dist/",
    ]
    for name in ("ROLLOUT", "OPTIMIZER", "GRPO", "PERF", "EVAL", "SGLANG", "MISC"):
        assert group(plan, name) == group(default, name)
    assert plan.notes[0] == f"effective --load = {BASE}/GLM-4.5-Air_torch_dist/; no checkpoints are saved"


def test_no_cleanup() -> None:
    plan = make(cleanup=False)
    assert [s.kind for s in plan.steps][:2] == ["head-start", "worker-start"]
    inv = plan.invocations()
    assert inv[0][:3] == ["ray", "start", "--head"]
    assert not any(a[0] in ("pkill", "sleep") or a[:2] == ["ray", "stop"] for a in inv)
    assert inv[-1][2] == worker_cmd("10.0.0.8").split(" ; ")[-1]
    assert dict(plan.settings)["cleanup"] == "no (--no-cleanup)"


def test_dashboard_host(default: Plan) -> None:
    plan = make(dashboard_host="127.0.0.1")
    diffs = diff_words(default.invocations(), plan.invocations())
    assert {(d[2], d[3]) for d in diffs if d[2].startswith("--dashboard")} == {
        ("--dashboard-host=0.0.0.0", "--dashboard-host=127.0.0.1")
    }
    # the head's ray start, and each worker's one ssh word
    assert [d[0] for d in diffs] == [8] + list(range(10, 17))
    assert dict(plan.settings)["dashboard"] == "127.0.0.1:8265"
    assert any("0.0.0.0:8265" in w and "without authentication" in w for w in default.warnings)
    assert not any("without authentication" in w for w in plan.warnings)
    with pytest.raises(LaunchError, match=r"^--dashboard-host: 'a;b' is not an address$"):
        make(dashboard_host="a;b")


def test_ssh_user() -> None:
    plan = make(ssh_user="ubuntu")
    assert {a[1].split("@")[0] for a in plan.invocations() if a[0] == "ssh"} == {"ubuntu"}
    for bad in ("Root", "a;b", "", "-oProxy"):
        with pytest.raises(LaunchError, match=r"^--ssh-user: "):
            make(ssh_user=bad)


# --- runtime env: resolve / export ---------------------------------------------------------------


def test_resolve_env() -> None:
    plan = make(resolve_env=True, socket_ifname="bond0")
    env = dict(plan.env_vars)
    assert env["no_proxy"] == f"localhost,127.0.0.1,0.0.0.0,{HEAD}"
    assert env["MASTER_ADDR"] == HEAD
    assert env["GLOO_SOCKET_IFNAME"] == env["OMPI_MCA_btl_tcp_if_include"] == "bond0"
    assert [k for k, _ in plan.env_vars] == [k for k, _ in BASH_RECIPE.env_vars]
    word = next(w for w in plan.submit_argv if w.startswith("--runtime-env-json="))
    assert "${" not in word
    assert json.loads(word.split("=", 1)[1])["env_vars"] == env
    assert any(n.startswith("--resolve-env: the runtime env holds values") for n in plan.notes)
    assert not any(n.startswith("Ray expands") for n in plan.notes)


def test_resolve_env_needs_the_socket_ifname() -> None:
    with pytest.raises(LaunchError) as info:
        make(resolve_env=True)
    assert (
        str(info.value) == "--resolve-env: no value for ${MLP_SOCKET_IFNAME} (give --socket-ifname or set it)"
    )


def test_default_keeps_refs_and_says_so(default: Plan) -> None:
    assert default.notes[1] == (
        "Ray expands ${MASTER_ADDR}, ${MLP_SOCKET_IFNAME}, ${MLP_WORKER_0_HOST} in the runtime env "
        "from each node's own environment (Ray 2.60 makes an unset one empty; older Ray left it literal)"
    )
    # a socket ifname alone changes nothing: ${MLP_SOCKET_IFNAME} stays for Ray
    assert make(socket_ifname="eth0").invocations() == default.invocations()


def test_export_env_wraps_ray_start(default: Plan) -> None:
    plan = make(export_env=True, socket_ifname="eth0")
    env = ["env", f"MASTER_ADDR={HEAD}", "MLP_SOCKET_IFNAME=eth0", f"MLP_WORKER_0_HOST={HEAD}"]
    inv = plan.invocations()
    assert inv[8] == env + default.invocations()[8]
    for got, want in zip(inv[10:], default.invocations()[10:], strict=True):
        cmds = got[2].split(" ; ")
        assert cmds[:3] == want[2].split(" ; ")[:3]  # the cleanup part is not wrapped
        assert cmds[3] == shlex.join(env) + " " + want[2].split(" ; ")[3]
    assert inv[9] == default.invocations()[9]  # the runtime env keeps its ${VAR}s
    assert inv[:8] == default.invocations()[:8]
    assert any(n.startswith("--export-env: ray start runs under `env MASTER_ADDR=") for n in plan.notes)


def test_export_env_needs_the_socket_ifname() -> None:
    with pytest.raises(LaunchError) as info:
        make(export_env=True)
    assert str(info.value) == "--export-env: no value for ${MLP_SOCKET_IFNAME} (give --socket-ifname)"


# --- inputs ----------------------------------------------------------------------------------------


def test_base_dir_with_space_stays_one_word() -> None:
    plan = make(base_dir="/data/my glm")
    argv = plan.train_argv
    i = argv.index("--hf-checkpoint")
    assert argv[i : i + 4] == [
        "--hf-checkpoint",
        "/data/my glm/GLM-4.5-355B-A32B",
        "--ref-load",
        "/data/my glm/GLM-4.5-355B-A32B_torch_dist/",
    ]
    assert argv[argv.index("--prompt-data") + 1] == "/data/my glm/dapo-math-17k/dapo-math-17k.jsonl"
    assert argv[argv.index("aime") + 1] == "/data/my glm/rl_data/aime-2024.jsonl"
    assert plan.warnings[0] == (
        "BASE_DIR '/data/my glm' contains whitespace: kept as one word here; "
        "the bash recipe would split each path into 2 words"
    )


def test_base_dir_is_not_rescanned_for_placeholders() -> None:
    argv = make(base_dir="/d/{head}/{framework}").train_argv
    assert argv[argv.index("--hf-checkpoint") + 1] == "/d/{head}/{framework}/GLM-4.5-355B-A32B"


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"head": None}, "no head address: set MLP_WORKER_0_HOST or give --head"),
        ({"head": ""}, "no head address: set MLP_WORKER_0_HOST or give --head"),
        ({"head": "a;b"}, "--head: 'a;b' is not an IPv4/IPv6 address or a DNS name"),
        ({"base_dir": None}, "no base dir: set BASE_DIR or give --base-dir"),
        ({"base_dir": ""}, "no base dir: set BASE_DIR or give --base-dir"),
        ({"framework": "verl"}, "--framework: 'verl' is not one of miles, slime"),
        ({"model": "glm5"}, "--model: unknown model 'glm5' (known: glm4.5-355B-A32B, glm4.5-106B-A12B)"),
        ({"entry": ""}, "--entry: '' is not a script path"),
        ({"entry": " x.py"}, "--entry: ' x.py' is not a script path"),
        ({"actor_num_nodes": 0}, "--actor-num-nodes: must be >= 1, got 0"),
        ({"gpus_per_node": 0}, "--gpus-per-node: must be >= 1, got 0"),
        ({"socket_ifname": "eth0;x"}, "--socket-ifname: 'eth0;x' is not an interface name"),
    ],
)
def test_input_errors(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(LaunchError) as info:
        make(**kw)
    assert str(info.value) == message


def test_build_plan_is_pure_and_deterministic(default: Plan) -> None:
    spec = default.spec
    again = build_plan(spec)
    assert again == default
    assert build_plan(replace(spec, workdir="/does/not/exist")).invocations() == default.invocations()


# --- JSON ---------------------------------------------------------------------------------------------


def test_json_shape(default: Plan) -> None:
    data = json.loads(render(default, "json"))
    core = ["recipe", "settings", "notes", "warnings", "invocations", "steps", "train_args", "runtime_env"]
    assert [k for k in data if k in core] == core  # in this order; later issues may add keys after them
    assert data["recipe"] == "glm45-bash"
    assert data["invocations"] == default.invocations()
    assert data["settings"] == dict(default.settings)
    assert list(data["settings"])[:14] == [
        "recipe",
        "model",
        "framework",
        "hostfile",
        "head",
        "nodes",
        "GPUs per node",
        "actor nodes",
        "base dir",
        "workdir",
        "ssh user",
        "dashboard",
        "ray port",
        "cleanup",
    ]
    assert data["settings"]["hostfile"] == "hosts (8 host(s))"
    assert data["notes"] == list(default.notes) and data["warnings"] == list(default.warnings)
    assert list(data["train_args"]) == list(BASH_RECIPE.group_order)
    assert list(data["runtime_env"]["env_vars"].items()) == list(BASH_RECIPE.env_vars)
    steps = data["steps"]
    assert [s["kind"] for s in steps] == [s.kind for s in default.steps]
    for step in steps:
        assert {"kind", "where", "host", "purpose", "commands", "ignore_errors"} <= set(step)
    workers = [s for s in steps if s["kind"] == "worker-start"]
    for w in workers:
        assert w["where"] == "worker" and w["ssh"] == f"root@{w['host']}"
        assert w["remote_command"] == worker_cmd(w["host"])
        assert w["remote_command"] == " ; ".join(shlex.join(c) for c in w["commands"])
    assert steps[0]["spare_launcher"] is True and steps[0]["ignore_errors"] is True
    assert steps[1]["cwd"] == "/w" and steps[1]["env"]["MASTER_ADDR"] == HEAD
    assert steps[-1]["commands"] == [default.submit_argv]


@pytest.mark.parametrize("kw", [{}, {"no_wait": True}, {"dashboard_host": "10.0.0.1"}])
def test_the_submit_step_carries_its_options_apart_from_the_job(kw: dict[str, Any]) -> None:
    """Readers take ``ray job submit``'s own words from the step, never by cutting its argv."""
    plan = make(**kw)
    step = plan.step("submit")
    assert isinstance(step, SubmitStep) and step.commands == (step.options + plan.train.entrypoint,)
    assert step.options[:3] == ("ray", "job", "submit") and step.options[-1] == "--"
    assert f"--address={plan.job_address}" in step.options


def test_the_plan_resolves_what_train_py_reads_once() -> None:
    """plan.job: sizes and checkpoint paths after the variant and the overrides (argparse's last value)."""
    from glm45_launch.core.overrides import build_overrides

    plain = make()
    assert plain.job == JobFacts(actor_nodes=8, actor_gpus_per_node=8, num_gpus_per_node=None,
                                 hf_checkpoint=f"{BASE}/GLM-4.5-355B-A32B",
                                 ref_load=f"{BASE}/GLM-4.5-355B-A32B_torch_dist/", load=None, save=None)
    assert plain.job.trainer_gpus_per_node == 8
    four = make(hostfile=hostfile(HOSTS8, slots=4), checkpoint_dir="/ck",
                overrides=build_overrides(sets=("CKPT.--ref-load=/ref",), extra_args=("--actor-num-nodes 2",)))
    assert (four.job.num_gpus_per_node, four.job.trainer_gpus_per_node, four.job.actor_gpus_per_node) == (4, 4, 4)
    assert (four.job.load, four.job.save, four.job.ref_load, four.job.actor_nodes) == ("/ck", "/ck", "/ref", 2)
