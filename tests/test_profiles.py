"""The two other launchers the recipe documents: ``--profile python`` (miles' Python launcher's
job) and ``--profile air-p2p`` (the Air per-node script), against their recorded runs and
against an independent reading of upstream (``upstream_launchers.py``) for every variant."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from upstream_launchers import air_rank0, python_cleanup, python_env, python_job

from glm45_launch.checks.rules import check_plan
from glm45_launch.cli.main import main
from glm45_launch.core.builder import build_plan
from glm45_launch.core.flags import last_values
from glm45_launch.core.hostfile import parse_hostfile_text
from glm45_launch.core.overrides import build_overrides
from glm45_launch.core.plan import LaunchSpec, NvlinkFact, Plan, Variant
from glm45_launch.core.render import render
from glm45_launch.errors import LaunchError
from glm45_launch.recipes import MODELS

GOLDEN = Path(__file__).resolve().parent / "data" / "golden"
HEAD = "10.0.0.1"
MODEL_355B = list(MODELS["glm4.5-355B-A32B"].args)
MODEL_AIR = list(MODELS["glm4.5-106B-A12B"].args)
MIS_FILE = "/data/glm45-launch/mis.yaml"


def hosts(n: int, slots: int | None) -> Any:
    suffix = f" slots={slots}" if slots else ""
    return parse_hostfile_text("".join(f"10.0.0.{i}{suffix}\n" for i in range(1, n + 1)), "hosts")


def python_plan(nodes: int = 4, hardware: str = "GB200", nvlink: bool | None = True, **kw: Any) -> Plan:
    spec_kw = {k: kw.pop(k) for k in ("external_ray", "wandb_key", "actor_num_nodes", "hold_workers",
                                        "overrides", "model_local_dir", "launcher_env", "megatron_path",
                                        "data_dir") if k in kw}
    spec = LaunchSpec(
        hostfile=hosts(nodes, 4), head=HEAD, base_dir="/data", workdir="/w", output_dir="/data/out",
        run_id="RUNID", nvlink=NvlinkFact(nvlink, "test"), variant=Variant(profile="python", hardware=hardware, **kw),
        **spec_kw,
    )
    return build_plan(spec)


def air_plan(nodes: int = 8, slots: int | None = 8, base: str = "/root", **kw: Any) -> Plan:
    spec_kw = {k: kw.pop(k) for k in ("external_ray", "hold_workers", "actor_num_nodes", "gpus_per_node") if k in kw}
    spec = LaunchSpec(hostfile=hosts(nodes, slots), head=HEAD, base_dir=base, workdir="/root/miles",
                      variant=Variant(profile="air-p2p", **kw), **spec_kw)
    return build_plan(spec)


def train(plan: Plan) -> list[str]:
    return list(plan.train.argv)


# --- the Python launcher: the recorded run -----------------------------------------------------


def test_python_profile_is_the_recorded_job_word_for_word() -> None:
    g = json.loads((GOLDEN / "python-launcher-4node-gb200.json").read_text())
    plan = python_plan(4)
    inv = plan.invocations()
    head = inv.index(g["ray_head"]["argv"])
    assert inv[:head] == g["cleanup"]
    start, submit = plan.step("head-start"), plan.step("submit")
    assert start is not None and submit is not None
    assert dict(start.env) == g["ray_head"]["env"] and dict(submit.env) == g["submit"]["env"]
    argv = plan.submit_argv
    cut = argv.index("--")
    assert [w for w in argv[3:cut] if not w.startswith("--runtime-env-json=")] == g["submit"]["options"]
    assert json.loads(argv[4].split("=", 1)[1]) == g["submit"]["runtime_env"]
    assert list(json.loads(argv[4].split("=", 1)[1])["env_vars"]) == list(g["submit"]["runtime_env"]["env_vars"])
    assert argv[cut + 1:cut + 3] == ["python3", "train.py"]  # upstream: <REPO>/train.py, here relative to --workdir
    assert plan.train.argv == tuple(g["submit"]["train_args"])
    assert plan.train.prefix == ()
    assert check_plan(plan) == []


def test_the_oracle_reads_upstream_like_the_recording() -> None:
    g = json.loads((GOLDEN / "python-launcher-4node-gb200.json").read_text())
    assert MODEL_355B + python_job(nodes=4) == g["submit"]["train_args"]
    assert python_env() == g["submit"]["runtime_env"]["env_vars"]
    assert python_cleanup() == g["cleanup"]


# --- the Python launcher: every variant of RECIPE.md §5 and §5a ---------------------------------

VARIANTS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    # (id, glm45-launch variant/spec options, upstream options)
    ("gb200-4n", {}, {}),
    ("gb300-4n", {"hardware": "GB300"}, {"hardware": "GB300"}),
    ("1n", {"nodes": 1}, {"nodes": 1}),
    ("2n", {"nodes": 2}, {"nodes": 2}),
    ("5n", {"nodes": 5}, {"nodes": 5}),
    ("6n", {"nodes": 6}, {"nodes": 6}),
    ("8n", {"nodes": 8}, {"nodes": 8}),
    ("8n-gb300", {"nodes": 8, "hardware": "GB300"}, {"nodes": 8, "hardware": "GB300"}),
    ("16n", {"nodes": 16}, {"nodes": 16}),
    ("mtp", {"mtp": True}, {"mtp": True}),
    ("fp8", {"rollout_fp8": True}, {"fp8": True}),
    ("fp8-8n", {"nodes": 8, "rollout_fp8": True}, {"nodes": 8, "fp8": True}),
    ("fp8-1n", {"nodes": 1, "rollout_fp8": True}, {"nodes": 1, "fp8": True}),
    ("kv-fp8", {"kv_cache_fp8": True}, {"kv_fp8": True}),
    ("mis", {"mis": True}, {"mis_path": MIS_FILE}),
    ("all-sglang", {"rollout_fp8": True, "kv_cache_fp8": True, "mtp": True, "mis": True, "hardware": "GB300"},
     {"fp8": True, "kv_fp8": True, "mtp": True, "mis_path": MIS_FILE, "hardware": "GB300"}),
    ("debug-minimal", {"mode": "debug-minimal"}, {"mode": "debug_minimal"}),
    ("debug-minimal-ds", {"mode": "debug-minimal", "dynamic_sampling": True},
     {"mode": "debug_minimal", "dynamic_sampling": True}),
    ("dynamic-sampling", {"dynamic_sampling": True}, {"dynamic_sampling": True}),
    ("gsm8k", {"task": "gsm8k"}, {"task": "gsm8k"}),
    ("gsm8k-debug", {"task": "gsm8k", "mode": "debug-minimal"}, {"task": "gsm8k", "mode": "debug_minimal"}),
    ("no-eval", {"eval": False}, {"eval_": False}),
    ("benchmark", {"benchmark": True}, {"benchmark": True}),
    ("benchmark-gb300", {"benchmark": True, "hardware": "GB300"}, {"benchmark": True, "hardware": "GB300"}),
    ("wandb", {"wandb_key": "k3y-s3cret"}, {"wandb_key": "k3y-s3cret"}),
    ("extra-args", {"overrides": build_overrides(extra_args=("--debug-rollout-only --seed 7",))},
     {"extra_args": "--debug-rollout-only --seed 7"}),
    ("local-dir", {"model_local_dir": "/local"}, {"local": "/local"}),
    ("external-ray", {"external_ray": True}, {}),
    ("air-model", {"model": "glm4.5-106B-A12B"}, {"name": "GLM-4.5-Air"}),
]


def _python_case(ours: dict[str, Any]) -> Plan:
    ours = dict(ours)
    nodes = ours.pop("nodes", 4)
    model = ours.pop("model", None)
    if model:
        spec = LaunchSpec(hostfile=hosts(nodes, 4), head=HEAD, base_dir="/data", workdir="/w", model=model,
                          output_dir="/data/out", run_id="RUNID", nvlink=NvlinkFact(True, "test"),
                          variant=Variant(profile="python", hardware="GB200"))
        return build_plan(spec)
    return python_plan(nodes, **ours)


@pytest.mark.parametrize(("ours", "upstream"), [v[1:] for v in VARIANTS], ids=[v[0] for v in VARIANTS])
def test_python_profile_equals_upstream_for_every_variant(ours: dict[str, Any], upstream: dict[str, Any]) -> None:
    plan = _python_case(ours)
    model = MODEL_AIR if upstream.get("name") == "GLM-4.5-Air" else MODEL_355B
    want = model + python_job(gpus=4, **{"nodes": 4, **upstream})
    # Word for word: the same flags, in upstream's order, with upstream's repeats.
    assert train(plan) == want
    assert last_values(train(plan)) == last_values(want)  # hence also as argparse sees them
    env = python_env(fp8=bool(upstream.get("fp8")), mtp=bool(upstream.get("mtp")))
    assert dict(plan.env_vars) == env and [k for k, _ in plan.env_vars] == list(env)
    assert plan.invocations()[:len(python_cleanup(bool(ours.get("external_ray"))))] == \
        python_cleanup(bool(ours.get("external_ray")))


@pytest.mark.parametrize("nodes", [1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 16])
def test_python_layout_and_engine_by_node_count(nodes: int) -> None:
    plan = python_plan(nodes)
    assert train(plan) == MODEL_355B + python_job(nodes=nodes)
    assert (nodes <= 4) == any("debug layout" in w for w in plan.warnings)


def test_python_runtime_env_variants() -> None:
    dump = python_plan(4, cuda_core_dump=True, rollout_fp8=True, mtp=True,
                       overrides=build_overrides(env=("NCCL_SOCKET_IFNAME=ib0", "CUDA_DEVICE_MAX_CONNECTIONS=8")))
    want = python_env(core_dump_dir="/data/out", fp8=True, mtp=True, extra={"NCCL_SOCKET_IFNAME": "ib0"})
    want["CUDA_DEVICE_MAX_CONNECTIONS"] = "8"  # an extra env var replaces in place (upstream's dict update)
    assert list(dump.env_vars) == list(want.items())
    off = python_plan(4, nvlink=False)
    assert dict(off.env_vars)["NCCL_NVLS_ENABLE"] == "0"
    unknown = python_plan(4, nvlink=None)
    assert dict(unknown.env_vars)["NCCL_NVLS_ENABLE"] == "0"
    assert any("NVLink on the head is unknown" in n for n in unknown.notes)


def test_python_forwards_the_shells_socket_interfaces_and_takes_megatron_path() -> None:
    shell = {"NCCL_SOCKET_IFNAME": "ib0", "GLOO_SOCKET_IFNAME": "eth1", "NCCL_DEBUG": "INFO", "PYTHONPATH": "/x"}
    plan = python_plan(4, launcher_env=tuple(shell.items()), megatron_path="/opt/Megatron-LM", data_dir="/ds")
    want = python_env(megatron="/opt/Megatron-LM", shell=shell)  # the seed forwards these two only
    assert list(plan.env_vars) == list(want.items())
    assert train(plan) == MODEL_355B + python_job(nodes=4, data="/ds")


def test_python_nvlink_is_a_fact_of_the_rack_in_the_plan() -> None:
    text = render(python_plan(4), "text")
    assert "NVLink (head)   yes (test): NCCL_NVLS_ENABLE=1" in text
    assert "run             /data/out/RUNID" in text


def test_python_head_and_workers() -> None:
    plan = python_plan(4)
    assert plan.cluster.dashboard_host == "127.0.0.1" and plan.job_address == "http://127.0.0.1:8265"
    assert not any("dashboard" in w for w in plan.warnings)  # Ray's default binds loopback only
    ssh = [a for a in plan.invocations() if a[0] == "ssh"]
    assert ssh[0] == ["ssh", "root@10.0.0.2", "pkill -9 sglang ; ray stop --force ; pkill -9 ray ; pkill -9 miles ; "
                      "pkill -9 redis ; ray start --address=10.0.0.1:6379 --num-gpus 4 --node-ip-address 10.0.0.2 "
                      "--disable-usage-stats"]
    assert len(ssh) == 3


def test_python_external_ray_goes_straight_to_the_join() -> None:
    plan = python_plan(4, external_ray=True)
    assert [s.kind for s in plan.steps] == ["cleanup", "join", "submit"]
    assert [list(c) for c in plan.steps[0].commands] == python_cleanup(external_ray=True)
    assert plan.on_failure == ()  # never `ray stop` a cluster this run did not start
    assert plan.steps[0].guard_ports == ()  # type: ignore[attr-defined]
    assert dict(plan.settings)["ray cluster"] == "external (--external-ray)"


def test_bash_profile_external_ray_keeps_only_the_non_ray_cleanup() -> None:
    spec = LaunchSpec(hostfile=hosts(8, None), head=HEAD, base_dir="/data", external_ray=True)
    plan = build_plan(spec)
    assert plan.invocations()[:3] == [["pkill", "-9", "sglang"], ["sleep", "3"], ["sleep", "3"]]
    assert [s.kind for s in plan.steps] == ["cleanup", "join", "submit"]
    assert plan.step("join").gpus == 64  # type: ignore[union-attr]


def test_python_wandb_key_is_passed_and_masked() -> None:
    plan = python_plan(4, wandb_key="k3y-s3cret")
    assert "k3y-s3cret" in plan.train.argv
    for fmt in ("text", "json", "bash"):
        shown = render(plan, fmt)
        assert "k3y-s3cret" not in shown and "--wandb-key" in shown
    assert "k3y-s3cret" in render(plan, "json", show_secrets=True)


def test_python_default_run_id_is_stable() -> None:
    spec = LaunchSpec(hostfile=hosts(4, 4), head=HEAD, base_dir="/data", variant=Variant(profile="python",
                                                                                         hardware="GB200"))
    plan = build_plan(spec)
    assert last_values(plan.train.argv)["--load"] == ("/data/default/checkpoints",)
    assert last_values(plan.train.argv)["--dump-details"] == ("/data/default/dump_details",)
    assert build_plan(spec).invocations() == plan.invocations()


@pytest.mark.parametrize(("kw", "message"), [
    ({"profile": "bash", "mode": "debug-minimal"}, "--mode debug-minimal: an option of --profile python"),
    ({"profile": "bash", "benchmark": True}, "--benchmark: an option of --profile python"),
    ({"profile": "air-p2p", "task": "gsm8k"}, "--task gsm8k: an option of --profile python"),
    ({"profile": "bash", "transfer_mode": "broadcast"}, "--transfer-mode broadcast: an option of --profile air-p2p"),
    ({"profile": "python", "hardware": "GB200", "skip_weight_check": True}, "--skip-weight-check: an option of"),
    ({"profile": "air-p2p", "transfer_mode": "broadcast", "bucket_size_gb": 2.0}, "--bucket-size-gb: only --transfer"),
    ({"profile": "air-p2p", "bucket_size_gb": 0.0}, "--bucket-size-gb: must be > 0"),
    ({"profile": "air-p2p", "bucket_size_gb": float("nan")}, "--bucket-size-gb: must be > 0"),
    ({"profile": "python", "hardware": "GB200", "mode": "fast"}, "--mode: unknown mode 'fast'"),
    ({"profile": "python", "hardware": "GB200", "task": "math"}, "--task: unknown task 'math'"),
    ({"profile": "air-p2p", "transfer_mode": "rdma"}, "--transfer-mode: unknown mode 'rdma'"),
])
def test_knobs_of_another_profile_are_refused(kw: dict[str, Any], message: str) -> None:
    spec = LaunchSpec(hostfile=hosts(8, 8 if kw.get("profile") != "python" else 4), head=HEAD, base_dir="/data",
                      variant=Variant(**kw))
    with pytest.raises(LaunchError, match=message.replace("(", r"\(")) as err:
        build_plan(spec)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("kw", "message"), [
    ({"run_id": "RUN"}, "--run-id: an option of --profile python"),
    ({"output_dir": "/o"}, "--output-dir: an option of --profile python"),
    ({"model_local_dir": "/l"}, "--model-local-dir: an option of --profile python"),
])
def test_python_inputs_belong_to_the_python_profile(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(LaunchError, match=message):
        build_plan(LaunchSpec(hostfile=hosts(8, None), head=HEAD, base_dir="/data", **kw))


@pytest.mark.parametrize(("run_id", "ok"), [("RUN-1.a_b", True), ("../x", False), ("a b", False), ("", False)])
def test_run_id_names_a_directory(run_id: str, ok: bool) -> None:
    spec = LaunchSpec(hostfile=hosts(4, 4), head=HEAD, base_dir="/data", run_id=run_id,
                      variant=Variant(profile="python", hardware="GB200"))
    if ok:
        assert f"/data/{run_id}/checkpoints" in build_plan(spec).train.argv
    else:
        with pytest.raises(LaunchError, match="--run-id"):
            build_plan(spec)


def test_recipe_file_with_another_profile_is_refused(tmp_path: Path) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text('name = "mine"\n')
    hostfile = tmp_path / "hosts"
    hostfile.write_text("10.0.0.1 slots=4\n")
    code = main(["plan", "--hostfile", str(hostfile), "--head", HEAD, "--base-dir", "/d", "--recipe", str(recipe),
                 "--profile", "python", "--hardware", "GB200"])
    assert code == 2


# --- the Air recipe ------------------------------------------------------------------------------


def test_air_profile_is_the_recorded_head_and_worker_word_for_word() -> None:
    g = json.loads((GOLDEN / "air-p2p-8node.json").read_text())
    plan = air_plan()
    head_run = [c["argv"] for c in g["rank0_head"]]
    g_start = next(c for c in g["rank0_head"] if c["argv"][:3] == ["ray", "start", "--head"])
    inv = plan.invocations()
    start = plan.step("head-start")
    assert start is not None and start.commands == (tuple(g_start["argv"]),)
    assert dict(start.env)["RAY_memory_monitor_refresh_ms"] == g_start["env"]["RAY_memory_monitor_refresh_ms"]
    assert inv[:inv.index(g_start["argv"])] == head_run[:head_run.index(g_start["argv"])]
    g_submit = next(a for a in head_run if a[:3] == ["ray", "job", "submit"])
    submit = plan.submit_argv
    assert submit[:4] == g_submit[:4] and submit[5:] == g_submit[5:]  # the train args word for word
    assert json.loads(submit[4].split("=", 1)[1]) == json.loads(g_submit[4].split("=", 1)[1])
    assert list(json.loads(submit[4].split("=", 1)[1])["env_vars"]) == \
        list(json.loads(g_submit[4].split("=", 1)[1])["env_vars"])
    # Every worker: the cleanup (no blind sleep 20: the fan-out waits for the head's GCS), then its join.
    worker = [c["argv"] for c in g["rank1_worker"] if c["argv"] != ["sleep", "20"]]
    g_join = next(c for c in g["rank1_worker"] if c["argv"][:2] == ["ray", "start"])
    for step in plan.worker_steps:
        commands = [list(c) for c in step.commands]
        assert commands[:-1] == worker[:-1]
        assert commands[-1] == ["env", *(f"{k}={v}" for k, v in g_join["env"].items()), *g_join["argv"]]
    assert len(plan.worker_steps) == 7
    assert check_plan(plan) == []


@pytest.mark.parametrize(("kw", "upstream"), [
    ({}, {}),
    ({"transfer_mode": "p2p"}, {"mode": "p2p"}),
    ({"transfer_mode": "broadcast"}, {"mode": "broadcast"}),
    ({"bucket_size_gb": 0.5}, {"bucket_gb": "0.5"}),
    ({"bucket_size_gb": 2.25}, {"bucket_gb": "2.25"}),
    ({"skip_weight_check": True}, {"skip_validation": True}),
    ({"transfer_mode": "broadcast", "skip_weight_check": True}, {"mode": "broadcast", "skip_validation": True}),
], ids=["default", "p2p", "broadcast", "bucket-0.5", "bucket-2.25", "skip-check", "broadcast-skip"])
def test_air_modes_equal_the_script(kw: dict[str, Any], upstream: dict[str, Any]) -> None:
    plan = air_plan(**kw)
    assert train(plan) == MODEL_AIR + air_rank0(**upstream)
    assert check_plan(plan) == []


def test_air_paths_follow_the_base_dir() -> None:
    plan = air_plan(base="/mnt/shared")
    assert train(plan) == MODEL_AIR + air_rank0(root="/mnt/shared")


def test_air_defaults_to_its_model_and_refuses_another() -> None:
    assert air_plan().spec.model is None and dict(air_plan().settings)["model"] == "glm4.5-106B-A12B"
    spec = LaunchSpec(hostfile=hosts(8, 8), head=HEAD, base_dir="/root", model="glm4.5-355B-A32B",
                      variant=Variant(profile="air-p2p"))
    with pytest.raises(LaunchError, match="--profile air-p2p is the GLM-4.5-Air recipe"):
        build_plan(spec)


@pytest.mark.parametrize(("nodes", "slots", "actor", "rollout"), [
    (8, 8, 4, 32), (16, 8, 8, 64), (8, 4, 4, 16), (8, 2, 4, 8),
])
def test_air_sizes_follow_the_cluster(nodes: int, slots: int, actor: int, rollout: int) -> None:
    plan = air_plan(nodes, slots)
    values = last_values(plan.train.argv)
    assert values["--actor-num-nodes"] == (str(actor),) and values["--actor-num-gpus-per-node"] == (str(slots),)
    assert values["--rollout-num-gpus"] == (str(rollout),)
    assert ("--num-gpus-per-node" in values) == (slots != 8)
    assert plan.step("join").gpus == nodes * slots  # type: ignore[union-attr]


def test_air_on_2_gpu_nodes_keeps_its_layout_and_says_what_breaks() -> None:
    """8 x 2 GPUs: engines of 8 span 4 nodes (they tile), but EP8 x PP4 needs 32 actor GPUs."""
    plan = air_plan(8, 2)
    assert [p.code for p in check_plan(plan)] == ["expert-layout"]


def test_hold_workers_keeps_a_session_per_worker_until_the_job() -> None:
    plan = air_plan(hold_workers=True)
    kinds = [s.kind for s in plan.steps]
    assert kinds == ["cleanup", "head-start", *["worker-start"] * 7, "join", *["hold"] * 7, "submit"]
    assert [a for a in plan.invocations() if a[-1] == "cat"] == [["ssh", f"root@10.0.0.{i}", "cat"] for i in range(2, 9)]
    assert any("--hold-workers" in n for n in plan.notes)


def test_check_profiles_tool_agrees(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The plans `check-profiles` makes, through the CLI: python with --nvlink yes, air with --base-dir /root."""
    hf = tmp_path / "h"
    hf.write_text("".join(f"10.0.0.{i} slots=4\n" for i in range(1, 5)))
    assert main(["plan", "--hostfile", str(hf), "--head", HEAD, "--base-dir", "/data", "--format", "json",
                 "--profile", "python", "--hardware", "GB200", "--output-dir", "/data/out", "--run-id", "RUNID",
                 "--nvlink", "yes"]) == 0
    data = json.loads(capsys.readouterr().out)
    g = json.loads((GOLDEN / "python-launcher-4node-gb200.json").read_text())
    submit = next(a for a in data["invocations"] if a[:3] == ["ray", "job", "submit"])
    assert submit[submit.index("--") + 3:] == g["submit"]["train_args"]


def test_python_head_takes_no_dashboard_host() -> None:
    spec = LaunchSpec(hostfile=hosts(4, 4), head=HEAD, base_dir="/data", dashboard_host="127.0.0.1",
                      variant=Variant(profile="python", hardware="GB200"))
    with pytest.raises(LaunchError, match="--dashboard-host: the glm45-python recipe's head start passes no "):
        build_plan(spec)
    air = build_plan(LaunchSpec(hostfile=hosts(8, 8), head=HEAD, base_dir="/root", dashboard_host=HEAD,
                                variant=Variant(profile="air-p2p")))
    assert f"--dashboard-host={HEAD}" in air.step("head-start").commands[0]  # type: ignore[union-attr]
    assert air.job_address == f"http://{HEAD}:8265"


def test_export_env_with_nothing_to_export() -> None:
    plan = python_plan(4, nvlink=True)
    spec = LaunchSpec(hostfile=hosts(4, 4), head=HEAD, base_dir="/data", export_env=True,
                      variant=Variant(profile="python", hardware="GB200"))
    exported = build_plan(spec)
    assert "--export-env: the runtime env has no ${VAR}s, nothing to export" in exported.notes
    assert [s.commands for s in exported.worker_steps] == [s.commands for s in plan.worker_steps]


def _fake_smi(bin_dir: Path, topo: str, calls: Path) -> None:
    bin_dir.mkdir(exist_ok=True)
    smi = bin_dir / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\nprintf '%s\\n' '{topo}'\n")
    smi.chmod(0o755)


@pytest.mark.parametrize(("topo", "shown", "nvls"), [
    ("GPU0\tX\tNV18\tNV18", "yes (nvidia-smi topo -m here: NV18)", "1"),
    ("GPU0\tX\tSYS\tPIX", "no (nvidia-smi topo -m here: no NV links)", "0"),
])
def test_cli_probes_nvlink_here_for_the_python_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str], topo: str, shown: str,
                                                       nvls: str) -> None:
    calls = tmp_path / "calls"
    _fake_smi(tmp_path / "bin", topo, calls)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    hf = tmp_path / "h"
    hf.write_text("10.0.0.1 slots=4\n")
    base = ["plan", "--hostfile", str(hf), "--head", HEAD, "--base-dir", "/d", "--format", "json"]
    assert main([*base, "--profile", "python", "--hardware", "GB200"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["settings"]["NVLink (head)"] == f"{shown}: NCCL_NVLS_ENABLE={nvls}"
    assert data["runtime_env"]["env_vars"]["NCCL_NVLS_ENABLE"] == nvls
    assert calls.read_text() == "topo -m\n"
    # --nvlink states it (no probe); the bash profile never probes (its env says NCCL_NVLS_ENABLE=0).
    calls.unlink()
    assert main([*base, "--profile", "python", "--hardware", "GB200", "--nvlink", "no"]) == 0
    assert json.loads(capsys.readouterr().out)["runtime_env"]["env_vars"]["NCCL_NVLS_ENABLE"] == "0"
    assert main(base) == 0
    capsys.readouterr()
    assert not calls.exists()


def test_the_plan_names_the_recipe_it_runs() -> None:
    assert python_plan(4).recipe_name == "glm45-python" and python_plan(4).to_json()["recipe"] == "glm45-python"
    assert air_plan().to_json()["recipe"] == "glm45-air-p2p"
    assert build_plan(LaunchSpec(hostfile=hosts(8, None), head=HEAD, base_dir="/d")).to_json()["recipe"] == "glm45-bash"
