"""Host preflight: the pure rules (no SSH), the probe script itself, and faults on the rack-in-a-box."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from boxhelpers import BASE_FILES, make_base_dir, ray_processes

from glm45_launch.checks import portowner, preflight
from glm45_launch.checks.host_checks import (
    PathSpec,
    disk_check,
    env_checks,
    evaluate,
    gpu_checks,
    head_checks,
    is_ray_process,
    lib_checks,
    path_checks,
    plan_paths,
    version_checks,
)
from glm45_launch.checks.preflight import head_probed_here, parse_probe_output, probe_argv
from glm45_launch.checks.preflight_report import (
    FAIL,
    GROUPS,
    OK,
    WARN,
    Check,
    HostReport,
    PreflightOptions,
    PreflightReport,
)
from glm45_launch.checks.programs import probe_program
from glm45_launch.core.builder import build_plan
from glm45_launch.core.flags import flag_values
from glm45_launch.core.hostfile import parse_hostfile_text
from glm45_launch.core.plan import LaunchSpec, Plan
from glm45_launch.core.quoting import remote_command
from glm45_launch.core.runtime_env import RUNTIME_ENV, SESSION, env_ref_sources, ray_env_order
from glm45_launch.runtime.preflight_run import report_table, run_preflight
from glm45_launch.testing.fakes import FakeHostFacts, FakeLocalRunner, FakeRemoteRunner, fake_runtime
from glm45_launch.testing.rackbox import RackBox

HEAD, W2 = "10.0.0.1", "10.0.0.2"
CKPT = "/b/GLM-4.5-355B-A32B"
TORCH_DIST = "/b/GLM-4.5-355B-A32B_torch_dist/"
PROMPTS = "/b/dapo-math-17k/dapo-math-17k.jsonl"
AIME = "/b/rl_data/aime-2024.jsonl"
REPO = Path(__file__).resolve().parent.parent


def make_plan(**kw: Any) -> Plan:
    hosts = parse_hostfile_text(f"{HEAD} slots=8\n{W2} slots=8\n", "hosts")
    return build_plan(LaunchSpec(hostfile=hosts, head=HEAD, base_dir="/b", workdir="/w", **kw))


def facts(**kw: Any) -> dict[str, Any]:
    """A healthy host as the probe reports it."""
    base: dict[str, Any] = {
        "python": "3.11.7", "python_path": "/usr/bin/python3", "hostname": "n", "errors": [],
        "packages": {"ray": "2.60.0", "torch": "2.8.0", "sglang": "0.5.2", "megatron-core": None},
        "ray_path": "/usr/bin/ray", "ray_version": [0, "ray, version 2.60.0\n"], "nvidia_smi": None,
        "env": {"MASTER_ADDR": "set", "MLP_SOCKET_IFNAME": "set", "MLP_WORKER_0_HOST": "set"},
        "ifname_own": "eth0", "ifnames": {"eth0": True}, "disk_free": 100 * 1024**3,
        "ports": {f"{HEAD}:6379": False, "127.0.0.1:8265": False},
        "paths": {CKPT: "dir", CKPT + "/config.json": "file", TORCH_DIST: "dir",
                  TORCH_DIST + "latest_checkpointed_iteration.txt": "file", PROMPTS: "file", AIME: "file",
                  "/w/train.py": "file"},
    }
    base.update(kw)
    return base


def statuses(checks: list[Check]) -> dict[str, str]:
    return {c.name: c.status for c in checks}


# --- pure -------------------------------------------------------------------------------------


def test_paths_come_from_the_filled_train_args() -> None:
    assert plan_paths(make_plan()) == [
        PathSpec("--hf-checkpoint", CKPT, "hf"), PathSpec("--ref-load", TORCH_DIST, "torch_dist"),
        PathSpec("--prompt-data", PROMPTS, "file"), PathSpec("--eval-prompt-data aime", AIME, "file"),
    ]
    with_ckpt = plan_paths(make_plan(checkpoint_dir="/ck"))
    assert PathSpec("--load", "/ck", "load") in with_ckpt
    assert flag_values(["--load", "a", "--x", "--load=b", "c"], "--load") == ("b", "c")
    assert flag_values(["--loadx", "a"], "--load") is None


def test_healthy_facts_pass() -> None:
    plan = make_plan()
    head = evaluate(plan, HEAD, facts(), True, "ssh", PreflightOptions(), HEAD, facts())
    assert {n: s for n, s in statuses(head).items() if s != OK} == {"gpus": WARN, "nvlink": WARN}
    assert {"port 6379", "port 8265", "entry"} <= set(statuses(head))
    worker = evaluate(plan, W2, facts(), False, "ssh", PreflightOptions(), HEAD, facts())
    assert "entry" not in statuses(worker) and "port 6379" not in statuses(worker)


def test_version_skew_names_host_package_and_both_versions() -> None:
    skewed = facts(ray_version=[0, "ray, version 2.59.0\n"], ray_path="/opt/old/bin/ray",
                   packages={"ray": "2.60.0", "torch": "2.7.1", "sglang": None, "megatron-core": None})
    checks = {c.name: c for c in version_checks(W2, skewed, HEAD, facts())}
    assert checks["ray"].status == FAIL
    assert checks["ray"].detail == f"ray 2.59.0 (/opt/old/bin/ray) on {W2}, but 2.60.0 on {HEAD}"
    assert checks["torch"].status == FAIL and "2.7.1" in checks["torch"].detail and "2.8.0" in checks["torch"].detail
    # "not installed" is a version: sglang missing here but installed on the head is skew...
    assert checks["sglang"].status == FAIL and "not installed" in checks["sglang"].detail
    # ...and missing everywhere is consistent.
    assert checks["megatron-core"].status == OK and checks["megatron-core"].detail == "not installed"
    assert checks["python"].status == OK


def test_ray_on_path_problems() -> None:
    no_ray = {c.name: c for c in version_checks(HEAD, facts(ray_path=None, ray_version=None), HEAD, None)}
    assert no_ray["ray"].status == FAIL and "not found on PATH" in no_ray["ray"].detail
    broken = {c.name: c for c in version_checks(HEAD, facts(ray_version=[1, "Traceback"]), HEAD, None)}
    assert broken["ray"].status == FAIL and "broken" in broken["ray"].detail
    # The ray on PATH is not python3's: consistent with the head, but worth a warning.
    other_env = facts(packages={"ray": "2.49.0", "torch": "2.8.0", "sglang": "0.5.2", "megatron-core": None})
    mixed = {c.name: c for c in version_checks(HEAD, other_env, HEAD, other_env)}
    assert mixed["ray"].status == WARN and "2.49.0" in mixed["ray"].detail


def test_gpu_checks() -> None:
    assert statuses(gpu_checks(facts(), 8, require=False)) == {"gpus": WARN, "nvlink": WARN}
    assert statuses(gpu_checks(facts(), 8, require=True)) == {"gpus": FAIL, "nvlink": FAIL}
    listing = "".join(f"GPU {i}: NVIDIA H200 (UUID: GPU-{i})\n" for i in range(8))
    topo = "\tGPU0\tGPU1\nGPU0\t X \tNV18\nGPU1\tNV18\t X \n"
    good = facts(nvidia_smi="/usr/bin/nvidia-smi", smi_list=[0, listing], smi_topo=[0, topo])
    assert [(c.name, c.status, c.detail) for c in gpu_checks(good, 8, False)] == [
        ("gpus", OK, "8 GPUs"), ("nvlink", OK, "NVLink NV18")]
    four = gpu_checks({**good, "smi_list": [0, listing[: listing.index("GPU 4")]]}, 8, False)
    assert four[0] == Check("gpus", FAIL, "4 GPUs, expected 8 per node")
    pcie = gpu_checks({**good, "smi_topo": [0, "GPU0\t X \tPIX\n"]}, 8, False)
    assert pcie[1].status == WARN and "no NVLink" in pcie[1].detail
    broken = gpu_checks({**good, "smi_list": [9, "NVIDIA-SMI has failed\n"]}, 8, False)
    assert broken[0].status == FAIL and "NVIDIA-SMI has failed" in broken[0].detail


def test_path_checks() -> None:
    specs = plan_paths(make_plan(checkpoint_dir="/ck"))
    kinds = {CKPT: "dir", CKPT + "/config.json": "missing", TORCH_DIST: "dir", PROMPTS: "dir", AIME: "missing",
             "/ck": "missing"}
    got = {c.name: (c.status, c.detail) for c in path_checks(specs, kinds)}
    assert got["path --hf-checkpoint"] == (FAIL, f"{CKPT}: not an HF checkpoint (no config.json)")
    assert got["path --ref-load"][0] == FAIL and "glm45-launch convert" in got["path --ref-load"][1]
    assert got["path --prompt-data"] == (FAIL, f"{PROMPTS}: a directory, not a file")
    assert got["path --eval-prompt-data aime"] == (FAIL, f"{AIME}: missing")
    assert got["path --load"][0] == WARN  # the trainer falls back to --ref-load (RECIPE.md §4)


def test_ray_applies_the_runtime_env_sorted() -> None:
    """Ray sets the keys sorted (RuntimeEnv.serialize: json.dumps(sort_keys=True)), upper case first."""
    assert ray_env_order([("no_proxy", "x"), ("MASTER_ADDR", "y"), ("GLOO", "z")]) == ["GLOO", "MASTER_ADDR", "no_proxy"]
    env = [("no_proxy", "l,${MASTER_ADDR}"), ("GLOO", "${MLP_SOCKET_IFNAME}"), ("MASTER_ADDR", "${MLP_WORKER_0_HOST}")]
    # MASTER_ADDR sorts before no_proxy: no_proxy's ${MASTER_ADDR} is the runtime env's own,
    # resolved from the session's MLP_WORKER_0_HOST; the session needs no MASTER_ADDR.
    assert env_ref_sources(env, {"MLP_WORKER_0_HOST", "MLP_SOCKET_IFNAME"}) == {
        "no_proxy": {"MASTER_ADDR": RUNTIME_ENV}, "GLOO": {"MLP_SOCKET_IFNAME": SESSION},
        "MASTER_ADDR": {"MLP_WORKER_0_HOST": SESSION}}
    # ...and when that value does not resolve, neither does the reference (the session's
    # MASTER_ADDR does not help: Ray's empty one replaced it before no_proxy).
    assert env_ref_sources(env, {"MASTER_ADDR"})["no_proxy"] == {"MASTER_ADDR": None}
    # A key that sorts after the referencing one is not set yet: the session's value, or nothing.
    later = [("A_KEY", "${Z_KEY}"), ("Z_KEY", "v")]
    assert env_ref_sources(later, set())["A_KEY"] == {"Z_KEY": None}
    assert env_ref_sources(later, {"Z_KEY"})["A_KEY"] == {"Z_KEY": SESSION}
    # Chains resolve through several keys; a self-reference is the session's.
    chain = [("C", "${B}"), ("B", "${A}"), ("A", "${ROOT}"), ("S", "${S}")]
    assert env_ref_sources(chain, {"ROOT"}) == {"C": {"B": RUNTIME_ENV}, "B": {"A": RUNTIME_ENV},
                                                "A": {"ROOT": SESSION}, "S": {"S": None}}
    assert env_ref_sources(chain, set())["C"] == {"B": None}


def test_ray_sorts_env_vars_in_the_installed_ray() -> None:
    """The rule above, against the installed Ray: serialize, deserialize, update_envs."""
    pytest.importorskip("ray")
    code = (
        "import json, os\n"
        "from ray.runtime_env import RuntimeEnv\n"
        "from ray._private.utils import update_envs\n"
        "env = {'no_proxy': 'localhost,${MASTER_ADDR}', 'MASTER_ADDR': '${MLP_WORKER_0_HOST}', 'A_FIRST': '${Z_LAST}',"
        " 'Z_LAST': 'z'}\n"
        "ctx = RuntimeEnv.deserialize(RuntimeEnv(env_vars=env).serialize()).env_vars()\n"
        "update_envs(ctx)\n"
        "print(json.dumps([list(ctx), {k: os.environ[k] for k in env}]))\n"
    )
    clean = {"PATH": os.environ.get("PATH", ""), "MLP_WORKER_0_HOST": "10.9.9.9", "HOME": os.environ.get("HOME", "/")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=clean, timeout=120)
    order, values = json.loads(out.stdout.strip().splitlines()[-1])
    env = [("no_proxy", ""), ("MASTER_ADDR", ""), ("A_FIRST", ""), ("Z_LAST", "")]
    assert order == ray_env_order(env) == ["A_FIRST", "MASTER_ADDR", "Z_LAST", "no_proxy"]
    assert values["no_proxy"] == "localhost,10.9.9.9" and values["MASTER_ADDR"] == "10.9.9.9"
    assert values["A_FIRST"] == "", values  # Z_LAST was not set yet: Ray 2.60 makes it empty


def test_env_and_interface() -> None:
    plan = make_plan()
    # The bash recipe's workers: no MASTER_ADDR in the session, but the runtime env's
    # MASTER_ADDR=${MLP_WORKER_0_HOST} is set before no_proxy (Ray sorts the keys).
    no_master = facts(env={"MASTER_ADDR": None, "MLP_SOCKET_IFNAME": "set", "MLP_WORKER_0_HOST": "set"})
    env, ifname = env_checks(plan, no_master, False, "ssh")
    assert env.status == OK and ifname.status == OK
    assert "${MASTER_ADDR} (the runtime env's MASTER_ADDR, which Ray sets before no_proxy" in env.detail
    # Without MLP_WORKER_0_HOST neither resolves: both are named.
    unset = facts(env={"MASTER_ADDR": None, "MLP_SOCKET_IFNAME": "set", "MLP_WORKER_0_HOST": None})
    env, ifname = env_checks(plan, unset, False, "ssh")
    assert env.status == WARN and env.detail.startswith(
        "${MLP_WORKER_0_HOST} unset (used by MASTER_ADDR); ${MASTER_ADDR} empty (used by no_proxy: the runtime "
        "env's MASTER_ADDR, which Ray sets first, does not resolve) in the non-interactive ssh session")
    assert "empty string" in env.detail and "--export-env" in env.detail and ifname.status == OK
    # ...a session MASTER_ADDR does not help (Ray's value replaces it before no_proxy).
    assert env_checks(plan, facts(env={**unset["env"], "MASTER_ADDR": "set"}), False, "ssh")[0].status == WARN
    # On the head the recipe exports MASTER_ADDR itself; MLP_WORKER_0_HOST must still be set there.
    assert env_checks(plan, no_master, True, "ssh")[0].status == OK
    empty_ifname = facts(env={"MASTER_ADDR": "set", "MLP_SOCKET_IFNAME": "empty", "MLP_WORKER_0_HOST": "set"})
    env = env_checks(plan, empty_ifname, True, "local")[0]
    assert env.detail.startswith("${MLP_SOCKET_IFNAME} empty (used by GLOO_SOCKET_IFNAME, TP_SOCKET_IFNAME, "
                                 "OMPI_MCA_oob_tcp_if_include, OMPI_MCA_btl_tcp_if_include) in the launcher's")
    # Ray expands ${MLP_SOCKET_IFNAME} from the host's own environment: that interface must exist.
    env, ifname = env_checks(plan, facts(ifname_own="ib9", ifnames={"ib9": False}), False, "ssh")
    assert ifname == Check("ifname", FAIL, "ib9 (the host's MLP_SOCKET_IFNAME): no such interface "
                                           "(/sys/class/net/ib9)")
    # --export-env: the launcher provides the values; the interface is --socket-ifname's.
    exported = make_plan(export_env=True, socket_ifname="eth1")
    env, ifname = env_checks(exported, facts(env={}, ifnames={"eth1": True, "eth0": True}), False, "ssh")
    assert env.status == OK and ifname == Check("ifname", OK, "eth1 (--socket-ifname)")


GCS = {"pid": 41, "comm": "gcs_server", "cmdline": "/venv/lib/python3.11/site-packages/ray/core/src/ray/gcs/gcs_server "
       "--gcs_server_port=6379"}
DASHBOARD = {"pid": 42, "comm": "python3.11", "cmdline": "/venv/bin/python3.11 /venv/lib/python3.11/site-packages/ray/"
             "dashboard/dashboard.py --host=0.0.0.0 --port=8265"}
FOREIGN = {"pid": 77, "comm": "portholder", "cmdline": "python3 -c import socket, time"}


def port(*holders: dict[str, Any], error: str | None = None) -> dict[str, Any]:
    return {"held": True, "listeners": ["0.0.0.0:6379"], "holders": list(holders), "error": error}


def test_is_ray_process() -> None:
    # What a real `ray start --head` (Ray 2.60) leaves on the two ports: gcs_server on 6379,
    # the dashboard (python3.11 .../ray/dashboard/dashboard.py) on 8265.
    assert is_ray_process(GCS["comm"], GCS["cmdline"]) and is_ray_process(DASHBOARD["comm"], DASHBOARD["cmdline"])
    assert is_ray_process("raylet", "")
    assert is_ray_process("python3", "/usr/bin/python3 -u /x/site-packages/ray/_private/log_monitor.py")
    assert not is_ray_process(FOREIGN["comm"], FOREIGN["cmdline"])
    assert not is_ray_process("redis-server", "redis-server *:6379")
    assert not is_ray_process("node", "node /srv/ray/dashboard/app.js")  # not a python
    assert not is_ray_process("python3", "python3 -m http.server 8265")


def test_head_ports_ray_foreign_or_unknown() -> None:
    plan = make_plan()
    ray_held = facts(ports={f"{HEAD}:6379": port(GCS), "127.0.0.1:8265": False})
    checks = {c.name: c for c in head_checks(plan, ray_held)}
    assert checks["port 6379"] == Check("port 6379", WARN, f"Ray GCS {HEAD}:6379 held by Ray's gcs_server (pid 41): "
                                                           "the cleanup will stop the running cluster")
    assert checks["port 8265"].status == OK and checks["entry"].status == OK
    checks = {c.name: c for c in head_checks(make_plan(cleanup=False), ray_held)}
    assert checks["port 6379"].status == FAIL and "--no-cleanup" in checks["port 6379"].detail
    # Something else: the cleanup (pkill sglang/ray/python, ray stop) would not free it, with or without it.
    for p in (plan, make_plan(cleanup=False)):
        foreign = {c.name: c for c in head_checks(p, facts(ports={f"{HEAD}:6379": port(GCS, FOREIGN),
                                                                  "127.0.0.1:8265": port(DASHBOARD)}))}
        assert foreign["port 6379"].status == FAIL and foreign["port 6379"].detail.startswith(
            "port 6379 held by portholder (pid 77), not Ray: the cleanup would not free it "
            f"(Ray GCS {HEAD}:6379; `python3 -c import socket, time`): stop it, or move Ray with a recipe "
            "file's [defaults] ray_port")
        assert foreign["port 8265"].status == (WARN if p.spec.cleanup else FAIL)
    web = head_checks(plan, facts(ports={f"{HEAD}:6379": False, "127.0.0.1:8265": port(
        {"pid": 9, "comm": "python3", "cmdline": "python3 -m http.server 8265"})}))[1]
    assert web.status == FAIL and web.detail.endswith("[defaults] dashboard_port")
    # Held, but nobody to name (another user's process without root): a failure that says why.
    unknown = head_checks(plan, facts(ports={f"{HEAD}:6379": port(error="the open files of 3 process(es) are "
                                                                        "unreadable (not root?)"),
                                             "127.0.0.1:8265": True}))
    assert [c.status for c in unknown[:2]] == [FAIL, FAIL]
    assert unknown[0].detail == (f"port 6379 held (Ray GCS {HEAD}:6379), and the holder cannot be identified: the "
                                 "open files of 3 process(es) are unreadable (not root?); the cleanup may not free it")
    missing = head_checks(make_plan(entry="smoke.py"), ray_held)[-1]
    assert missing.status == FAIL and missing.detail.startswith("/w/smoke.py: not probed")


# /proc/net/tcp{,6} as the kernel prints them (a LISTEN socket, an ESTABLISHED one on the same port).
PROC_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 01007B0A:18EB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0 100 0 0 10 0
   1: 0100007F:2049 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5151 1 0 100 0 0 10 0
   2: 01007B0A:18EB 02007B0A:C350 01 00000000:00000000 00:00000000 00000000     0        0 6000 1 0 20 4 30 10 -1
"""
PROC_TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when \
retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:18EB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 \
00000000     0        0 7373 1 0 100 0 0 10 0
   1: 00000000000000000000000001000000:2049 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 \
00000000     0        0 8484 1 0 100 0 0 10 0
"""


def test_proc_parsers() -> None:
    assert portowner.decode_address("0100007F") == "127.0.0.1"
    assert portowner.decode_address("01007B0A") == "10.123.0.1"
    assert portowner.decode_address("00000000000000000000000001000000") == "::1"
    assert portowner.decode_address("0000000000000000FFFF00000100007F") == "::ffff:127.0.0.1"
    with pytest.raises(ValueError):
        portowner.decode_address("0100")
    assert portowner.parse_listeners(PROC_TCP) == [("10.123.0.1", 6379, 4242), ("127.0.0.1", 8265, 5151)]
    assert portowner.parse_listeners(PROC_TCP6) == [("::", 6379, 7373), ("::1", 8265, 8484)]
    assert portowner.parse_listeners("header\n garbage line\n") == []
    assert portowner.socket_inode("socket:[4242]") == 4242
    assert portowner.socket_inode("pipe:[4242]") is None and portowner.socket_inode("/dev/null") is None
    assert portowner.parse_cmdline(b"python3\0-c\0import x\nprint(1)\0") == "python3 -c import x print(1)"


def fake_proc(root: Path, procs: dict[int, tuple[str, bytes, list[str]]]) -> Path:
    """A /proc tree: net/tcp{,6} and, per pid, comm, cmdline and fd/N links."""
    (root / "net").mkdir(parents=True)
    (root / "net/tcp").write_text(PROC_TCP)
    (root / "net/tcp6").write_text(PROC_TCP6)
    for pid, (comm, cmdline, links) in procs.items():
        (root / str(pid) / "fd").mkdir(parents=True)
        (root / str(pid) / "comm").write_text(comm + "\n")
        (root / str(pid) / "cmdline").write_bytes(cmdline)
        for fd, target in enumerate(links):
            os.symlink(target, root / str(pid) / "fd" / str(fd))
    (root / "self").mkdir()  # not a pid: skipped
    return root


def test_port_report_on_a_fake_proc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    proc = fake_proc(tmp_path / "proc", {
        12: ("portholder", b"python3\0-c\0...\0", ["/dev/null", "pipe:[1]", "socket:[4242]"]),
        13: ("gcs_server", b"/x/ray/gcs_server\0", ["socket:[7373]"]),
        14: ("bash", b"bash\0", ["socket:[999]"]),
    })
    got = portowner.port_report(6379, str(proc))
    assert got == {"listeners": ["10.123.0.1:6379", "[::]:6379"], "error": None, "holders": [
        {"pid": 12, "comm": "portholder", "cmdline": "python3 -c ..."},
        {"pid": 13, "comm": "gcs_server", "cmdline": "/x/ray/gcs_server"}]}
    assert portowner.port_report(8265, str(proc))["error"] == "no process in this PID namespace has it open"
    assert portowner.port_report(1234, str(proc)) == {
        "listeners": [], "holders": [], "error": "no LISTEN socket on that port in /proc/net/tcp{,6}"}
    # fd lists of other users' processes are unreadable without root: say so, name nobody.
    real = os.listdir

    def denied(path: str) -> list[str]:
        if str(path).endswith("/fd"):
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(portowner.os, "listdir", denied)
    assert portowner.port_report(6379, str(proc))["error"] == \
        "the open files of 3 process(es) are unreadable (not root?)"


def test_port_report_on_this_machine() -> None:
    """The real /proc: a listening socket of this very process is found, with its pid."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        number = s.getsockname()[1]
        got = portowner.port_report(number)
    assert got["listeners"] == [f"127.0.0.1:{number}"] and got["error"] is None
    assert [h["pid"] for h in got["holders"]] == [os.getpid()]
    assert got["holders"][0]["comm"] == Path("/proc/self/comm").read_text().strip()


def test_probe_script_embeds_portowner() -> None:
    assert Path(portowner.__file__).read_text() in probe_program()
    assert "@PORTOWNER@" not in probe_program()


def test_head_is_probed_here_when_local(tmp_path: Path) -> None:
    """The head is this machine: probed locally even when the hostfile lists it (no head->head SSH)."""
    calls: dict[str, Any] = {}
    report_line = [preflight.MARKER + json.dumps(facts())]

    def local_answer(argv: Any) -> tuple[int, list[str]]:
        calls["local"] = HEAD
        return 0, report_line

    def ssh_answer(host: str, command: str) -> tuple[int, list[str]]:
        calls.setdefault("ssh", []).append(host)
        return 0, report_line

    plan = make_plan()  # HEAD is in the hostfile
    for here, expected_ssh in ((True, [W2]), (False, [HEAD, W2])):
        calls.clear()
        host = FakeHostFacts(local={HEAD} if here else set())
        rt = fake_runtime(FakeLocalRunner(local_answer), FakeRemoteRunner(answer=ssh_answer), host=host)
        report = run_preflight(plan, PreflightOptions(libs=False, parallel=1), tmp_path, rt)
        assert calls.get("ssh") == expected_ssh and ("local" in calls) == here
        head = report.hosts[0]
        assert head.host == HEAD and head.via == ("local" if here else "ssh")
        if here:
            assert head.checks[0] == Check("ssh", OK, "not needed: the head is this machine (probed here)")
    assert head_probed_here(plan, True) and not head_probed_here(plan, False)
    outside = build_plan(LaunchSpec(hostfile=parse_hostfile_text(f"{W2} slots=8\n", "h"), head=HEAD, base_dir="/b"))
    assert head_probed_here(outside, False)


def test_disk_libs_and_report() -> None:
    assert disk_check(facts(disk_free=2 * 1024**3), PreflightOptions()).status == FAIL
    assert disk_check(facts(disk_free=2 * 1024**3), PreflightOptions(min_free_gb=1)).status == OK
    assert lib_checks(["--sglang-x is not an option"], []).status == FAIL
    assert lib_checks([], ["skipped: sglang not installed"]).status == WARN
    report = PreflightReport([HostReport("a", "head", "ssh", [Check("ssh", OK, "x"), Check("gpus", WARN, "y")]),
                              HostReport("b", "worker", "ssh", [Check("ssh", FAIL, "refused")])])
    assert not report.ok and report.summary() == "1 failed check(s): b ssh: refused"
    assert report.hosts[0].group_status("gpus") == WARN and report.hosts[0].group_status("paths") is None
    assert json.loads(json.dumps(report.to_json()))["hosts"][1]["checks"][0]["group"] == "ssh"


def test_parse_probe_output_skips_noise() -> None:
    assert parse_probe_output(["motd", 'GLM45-PREFLIGHT {"python": "3.11"}', "bye"]) == {"python": "3.11"}
    assert parse_probe_output(["GLM45-PREFLIGHT {broken"]) is None
    assert parse_probe_output(["command not found"]) is None


def test_long_report_line_survives_chunked_ssh_output(tmp_path: Path) -> None:
    """invoke writes remote output in 1000-byte chunks and flushes after each: still one line."""
    import threading

    from glm45_launch.runtime.ssh import _LineSink

    tail: list[str] = []
    line = "GLM45-PREFLIGHT " + json.dumps({"paths": {f"/p/{i}": "file" for i in range(400)}})
    with (tmp_path / "log").open("w") as log:
        sink = _LineSink(log, None, tail, threading.Lock())
        data = "noise\n" + line + "\n"
        for i in range(0, len(data), 1000):
            sink.write(data[i : i + 1000])
            sink.flush()
        sink.finish()
    assert tail == ["noise", line] and parse_probe_output(tail) is not None


def test_a_line_rewritten_in_place_shows_each_state_as_it_comes(tmp_path: Path) -> None:
    """rsync's progress (``\\r``, no newline until the end) reaches the echo while it runs."""
    import threading

    from glm45_launch.runtime.ssh import _LineSink

    seen: list[str] = []
    with (tmp_path / "log").open("w") as log:
        sink = _LineSink(log, seen.append, [], threading.Lock())
        for chunk in ("  1%  10MB\r  50%", " 500MB\r 100% 1GB\r", "\nnext\r\n"):
            sink.write(chunk)
        assert seen == ["  1%  10MB", "  50% 500MB", " 100% 1GB\r", "next\r"]
        sink.finish()


def test_probe_script_through_a_shell(tmp_path: Path) -> None:
    """The real probe, quoted by quoting.py and run by `sh -c` as ssh would, with fake tools first on PATH."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "ray").write_text("#!/bin/sh\necho 'ray, version 9.9.9'\n")
    (fake / "nvidia-smi").write_text(
        "#!/bin/sh\n"
        'if [ "$1" = -L ]; then for i in 0 1 2 3 4 5 6 7; do echo "GPU $i: NVIDIA H200 (UUID: GPU-$i)"; done\n'
        'else printf "\\tGPU0\\tGPU1\\nGPU0\\t X \\tNV18\\n"; fi\n')
    for tool in ("ray", "nvidia-smi"):
        (fake / tool).chmod(0o755)
    base = make_base_dir(tmp_path / "base w space")  # quoting: a base dir with a space
    (tmp_path / "train.py").write_text("")
    hosts = parse_hostfile_text(f"{HEAD} slots=8\n", "hosts")
    plan = build_plan(LaunchSpec(hostfile=hosts, head=HEAD, base_dir=str(base), workdir=str(tmp_path)))
    env = {"PATH": f"{fake}:{Path(sys.executable).parent}:/usr/bin:/bin", "MLP_SOCKET_IFNAME": "lo",
           "MLP_WORKER_0_HOST": HEAD, "HOME": str(tmp_path)}
    out = subprocess.run(["sh", "-c", remote_command([probe_argv(plan, True, PreflightOptions())])],
                         capture_output=True, text=True, env=env, timeout=60)
    got = parse_probe_output(out.stdout.splitlines())
    assert got is not None, out.stdout + out.stderr
    assert got["errors"] == [] and got["ray_path"] == str(fake / "ray")
    checks = {c.name: c for c in evaluate(plan, HEAD, got, True, "local", PreflightOptions(min_free_gb=0),
                                          HEAD, got)}
    bad = {n: c.detail for n, c in checks.items() if c.status != OK}
    # The fake ray is not python3's ray: a warning on the head itself (no skew with itself); this
    # machine's other Python processes would die in the cleanup's `pkill -9 python`: a warning.
    assert set(bad) <= {"ray", "port 6379", "port 8265", "cleanup"}, bad
    assert checks["imports"].status == OK and checks["imports"].detail.startswith("ray imports, torch is found with the job")
    assert checks["ray"].detail.startswith(f"9.9.9 ({fake}/ray)")
    assert checks["gpus"].detail == "8 GPUs" and checks["nvlink"].detail == "NVLink NV18"
    assert checks["ifname"].detail == "lo (the host's MLP_SOCKET_IFNAME)"
    assert checks["path --hf-checkpoint"].detail == str(base / "GLM-4.5-355B-A32B")


# --- rack-in-a-box ----------------------------------------------------------------------------


@dataclass
class Rack:
    box: RackBox
    checkout: Path
    hostfile: Path
    runs: Path

    def args(self, command: str, *extra: str, hostfile: Path | None = None) -> list[str]:
        # --base-dir under /tmp: each host sees its own copy (its private /tmp), so one can lack a file.
        return [
            command, "--hostfile", str(hostfile or self.hostfile), "--base-dir", "/tmp/base",
            "--workdir", str(self.checkout), "--entry", "smoke_entry.py", "--actor-num-nodes", "3",
            "--retries", "2", "--identity", str(self.box.identity), "--known-hosts", str(self.box.known_hosts),
            *extra,
        ]

    def launch(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """glm45-launch on the head, like a user logged in there."""
        return self.box.run_on(1, [sys.executable, "-m", "glm45_launch", *args], cwd=str(self.checkout),
                               capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def preflight(self, *extra: str, hostfile: Path | None = None) -> tuple[int, dict[str, dict[str, Check]], str]:
        res = self.launch(*self.args("preflight", "--json", *extra, hostfile=hostfile))
        assert "Traceback" not in res.stderr, res.stderr
        report = json.loads(res.stdout)
        rows = {h["host"]: {c["name"]: Check(c["name"], c["status"], c["detail"]) for c in h["checks"]}
                for h in report["hosts"]}
        assert [h["via"] for h in report["hosts"]]  # every row says how it was probed
        return res.returncode, rows, res.stderr


@pytest.fixture
def rack(rackbox: RackBox) -> Iterator[Rack]:
    rackbox.reset()
    checkout = rackbox.workdir / "checkout"
    checkout.mkdir(exist_ok=True)
    shutil.copy(REPO / "glm45_launch" / "testing" / "smoke_entry.py", checkout / "smoke_entry.py")
    for k in range(1, rackbox.n_hosts + 1):
        make_base_dir(rackbox.host_dir(k) / "tmp" / "base")
    yield Rack(rackbox, checkout, rackbox.hostfile(rackbox.workdir / "hostfile"), rackbox.workdir / "runs")
    rackbox.reset()


def not_ok(rows: dict[str, dict[str, Check]]) -> dict[tuple[str, str], str]:
    return {(host, c.name): c.status for host, checks in rows.items() for c in checks.values() if c.status != OK}


@pytest.mark.rackbox
def test_healthy_box(rack: Rack) -> None:
    h1, h2, h3 = rack.box.hosts
    t0 = time.monotonic()
    code, rows, err = rack.preflight()  # with the megatron-core/sglang checks on the head
    took = time.monotonic() - t0
    assert code == 0, err
    warnings = {(h, n): s for (h, n), s in not_ok(rows).items() if n != "libs"}
    # No nvidia-smi in the box: warnings, and nothing else.
    assert warnings == {(h, n): WARN for h in (h1, h2, h3) for n in ("gpus", "nvlink")}, rows
    # Workers' sessions have no MASTER_ADDR, but Ray sets the runtime env's MASTER_ADDR (from
    # their MLP_WORKER_0_HOST) before it expands no_proxy: it sorts the keys.
    assert "${MASTER_ADDR} (the runtime env's MASTER_ADDR, which Ray sets before no_proxy" in rows[h2]["env"].detail
    assert rows[h1]["libs"].status in (OK, WARN)  # warn only where megatron-core/sglang are missing
    assert rows[h1]["ray"].detail.startswith(version("ray"))
    # The head is this machine: probed here, no SSH from the head to itself (the recipe needs none).
    assert rows[h1]["ssh"].detail == "not needed: the head is this machine (probed here)"
    assert rows[h2]["ssh"].detail == f"root@{h2}" and rows[h1]["ifname"].detail == "eth0 (the host's MLP_SOCKET_IFNAME)"
    assert set(rows[h2]) >= {"python", "torch", "sglang", "megatron-core", "path --ref-load", "disk"}
    assert "entry" not in rows[h2] and rows[h1]["entry"].status == OK
    print(f"preflight, 3 hosts, with library checks: {took:.1f}s")

    # A head outside the hostfile is probed here (the launcher runs on it), the rest over SSH.
    workers = rack.box.hostfile(rack.box.workdir / "hostfile-workers", hosts=[2, 3])
    code, rows, err = rack.preflight("--no-libs", "--export-env", hostfile=workers)
    assert code == 0, err
    assert rows[h1]["ssh"].detail.startswith("not needed") and "libs" not in rows[h1]
    assert not_ok(rows) == {(h, n): WARN for h in (h1, h2, h3) for n in ("gpus", "nvlink")}


def _stop_sshd(rack: Rack) -> None:
    rack.box.stop_sshd(3)


def _rotate_key(rack: Rack) -> None:
    rack.box.rotate_host_key(2)


def _missing_checkpoint(rack: Rack) -> None:
    (rack.box.host_dir(3) / "tmp" / "base" / BASE_FILES[0]).unlink()


def _old_ray(rack: Rack) -> None:
    fake = rack.box.workdir / "oldray"
    fake.mkdir(exist_ok=True)
    (fake / "ray").write_text("#!/bin/sh\necho 'ray, version 2.9.3'\n")
    (fake / "ray").chmod(0o755)
    rack.box.set_shell_env(2, path_prepend=fake)


def _hold_ray_port(rack: Rack) -> subprocess.Popen[str]:
    # A foreign service on the head's Ray port, renamed so no pkill pattern could match it.
    holder = rack.box.popen_on(1, [sys.executable, "-c", (
        "import socket, time\n"
        "open('/proc/self/comm', 'w').write('portholder')\n"
        "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        "s.bind(('10.123.0.1', 6379)); s.listen(); print('ready', flush=True); time.sleep(600)\n"
    )], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
    return holder


FAULTS: dict[str, tuple[Callable[[Rack], Any], str, str, str, tuple[str, ...]]] = {
    # name: (inject, host, check, detail needle, extra args)
    "sshd-stopped": (_stop_sshd, "10.123.0.3", "ssh", "connection refused", ()),
    "host-key-changed": (_rotate_key, "10.123.0.2", "ssh", "CHANGED", ()),
    "checkpoint-missing-on-one-host": (_missing_checkpoint, "10.123.0.3", "path --hf-checkpoint",
                                       "no config.json", ()),
    "ray-version-skew": (_old_ray, "10.123.0.2", "ray", f"ray 2.9.3 ({{box}}/oldray/ray) on 10.123.0.2, but "
                         f"{version('ray')}", ()),
    # Cleanup on: it would not free a port held by something other than Ray, so that fails too.
    "ray-port-held-by-foreign-service": (_hold_ray_port, "10.123.0.1", "port 6379",
                                         "port 6379 held by portholder (pid ", ()),
}


@pytest.mark.rackbox
@pytest.mark.parametrize("fault", list(FAULTS))
def test_fault_is_named_and_up_starts_nothing(rack: Rack, fault: str) -> None:
    inject, host, check, needle, extra = FAULTS[fault]
    needle = needle.replace("{box}", str(rack.box.workdir))
    holder = inject(rack)
    try:
        code, rows, err = rack.preflight("--no-libs", *extra)
        assert code == 1, err
        failed = {k for k, s in not_ok(rows).items() if s == FAIL}
        assert failed == {(host, check)}, rows
        assert needle in rows[host][check].detail, rows[host][check]
        last = err.strip().splitlines()[-1]
        assert last.startswith("glm45-launch: error: preflight failed") and f"{host} {check}:" in last, last

        run_dir = rack.runs / f"pf-{fault}"
        # --force: the recipe's layout wants 64 GPUs, the box has 24 (validation would stop up first).
        res = rack.launch(*rack.args("up", "--run-dir", str(run_dir), "--force", *extra))
        assert res.returncode == 1, res.stderr[-3000:]
        last = res.stderr.strip().splitlines()[-1]
        assert "preflight failed, nothing was started" in last and f"{host} {check}:" in last, last
        assert "Traceback" not in res.stderr
        # Stopped before the executor: no plan written, no cleanup, no `ray start` anywhere.
        assert (run_dir / "preflight.json").exists() and not (run_dir / "plan.json").exists()
        assert not os.path.exists(run_dir / "hosts")
        assert ray_processes(rack.box) == []
        if isinstance(holder, subprocess.Popen):  # the cleanup (pkill, ray stop) did not run
            assert holder.poll() is None, "the port holder was killed"
            assert "not Ray: the cleanup would not free it" in rows[host][check].detail
    finally:
        if isinstance(holder, subprocess.Popen):
            holder.kill()
            holder.wait()


def test_group_statuses_one_pass_worst_per_column() -> None:
    """The table's cells: each column's worst status from one pass over a host's checks."""
    host = HostReport("h", "worker", "ssh", [
        Check("ssh", OK, ""), Check("probe", WARN, ""), Check("torch", OK, ""), Check("path /a", FAIL, ""),
        Check("path /b", OK, ""), Check("port 6379", OK, ""), Check("gpus", WARN, ""), Check("gpus", OK, ""),
    ])
    assert host.group_statuses() == {"ssh": WARN, "versions": OK, "paths": FAIL, "ports": OK, "gpus": WARN}
    assert [host.group_status(g) for g in GROUPS] == [host.group_statuses().get(g) for g in GROUPS]
    assert Check("megatron-core", OK, "").group == "versions" and Check("disk /tmp", OK, "").group == "disk"


def _table_text(report: PreflightReport) -> str:
    import io

    from rich.console import Console

    out = io.StringIO()
    Console(file=out, width=200).print(report_table(report))
    return out.getvalue()


def test_report_table_at_rack_row_scale_groups_alike_hosts() -> None:
    """Past 32 hosts: failing hosts keep their rows, the others share one per role and statuses,
    and a warning seen everywhere is one line that counts its hosts."""
    def host(i: int, fail: bool) -> HostReport:
        checks = [Check("ssh", OK, "fine"), Check("disk", FAIL if fail else OK, "1 GB free in /tmp"),
                  Check("nvlink", WARN, "no nvidia-smi")]
        return HostReport(f"10.0.{i // 250}.{i % 250 + 1}", "head" if i == 0 else "worker", "ssh", checks)

    small = _table_text(PreflightReport([host(i, i == 5) for i in range(8)], 1.0))
    assert small.count("worker") == 7 and small.count("nvlink: no nvidia-smi") == 8  # a row and a line each
    text = _table_text(PreflightReport([host(i, i == 5) for i in range(1024)], 1.0))
    rows = [ln for ln in text.splitlines() if ln.startswith("│")]
    assert len(rows) == 3, text
    assert "10.0.0.6" in rows[0] and "FAIL" in rows[0]
    assert "head" in rows[1] and "1022 hosts (10.0.0.2...)" in rows[2]
    assert "FAIL 10.0.0.6 disk: 1 GB free in /tmp" in text
    assert "warn 10.0.0.1, 10.0.0.2, 10.0.0.3 and 1021 more host(s) nvlink: no nvidia-smi" in text
    assert "1024 host(s), 1 failure(s), 1024 warning(s)" in text
