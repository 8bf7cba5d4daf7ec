"""Preflight's node checks: the job's runtime env imports, the cleanup's other victims, one machine
behind two hostfile lines, rsync (pure rules, then one rack-in-a-box run with all four faults)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from boxhelpers import make_base_dir

from glm45_launch.checks.host_checks import (
    cleanup_check,
    identity_checks,
    imports_check,
    kill_queries,
    rsync_check,
)
from glm45_launch.checks.preflight import parse_probe_output, probe_argv, probe_config
from glm45_launch.checks.preflight_report import FAIL, OK, WARN, PreflightOptions
from glm45_launch.core.builder import build_plan
from glm45_launch.core.hostfile import parse_hostfile_text
from glm45_launch.core.plan import LaunchSpec, Overrides
from glm45_launch.testing.rackbox import RackBox

REPO = Path(__file__).resolve().parent.parent


def test_kill_queries_read_the_recipe_cleanup_as_pgrep_does() -> None:
    queries = kill_queries([("pkill", "-9", "sglang"), ("sleep", "3"), ("ray", "stop", "--force"),
                            ("pkill", "-9", "python"), ("pkill", "-9", "python"), ("pkill", "-f", "ray::"),
                            ("killall", "-s", "KILL", "redis-server"), ("pkill", "--newest", "x")])
    assert [(q["pattern"], q["full"], q["exact"]) for q in queries] == [
        ("sglang", False, False), ("python", False, False), ("ray::", True, False), ("redis\\-server", False, True)]
    assert queries[1]["command"] == "pkill -9 python"  # said in the warning; --newest: not read, left out


def test_probe_config_carries_the_runtime_env_in_rays_order() -> None:
    hosts = parse_hostfile_text("10.0.0.1 slots=8\n10.0.0.2 slots=8\n", "hosts")
    plan = build_plan(LaunchSpec(hostfile=hosts, head="10.0.0.1", base_dir="/b", workdir="/w",
                                 overrides=Overrides(env=(("PYTHONPATH", "/x"),))))
    head, worker = (probe_config(plan, h, PreflightOptions()) for h in (True, False))
    keys = [k for k, _ in head["imports"]["env_vars"]]
    assert keys == sorted(keys) and ["PYTHONPATH", "/x"] in head["imports"]["env_vars"]
    assert ("MASTER_ADDR", "10.0.0.1") in head["imports"]["base_env"] and worker["imports"]["base_env"] == []
    assert head["imports"]["optional"] == ["torch", "miles"]
    assert [q["pattern"] for q in head["kills"]] == ["sglang", "ray", "python"]
    assert head["rsync"] is False and probe_config(plan, False, PreflightOptions(needs_rsync=True))["rsync"]


def test_node_check_rules() -> None:
    info: dict[str, Any] = {"modules": ["ray", "torch"], "skipped": ["miles"], "python": "/usr/bin/python3",
                            "pythonpath": "/root/Megatron-LM/"}
    bad = imports_check({"imports": {**info, "result": {"ray": "ModuleNotFoundError: No module named 'ray'",
                                                        "torch": None}}})
    assert bad is not None and bad.status == FAIL
    assert bad.detail == ("with the job's runtime env, python3 cannot import ray: ModuleNotFoundError: No module "
                          "named 'ray'; its PYTHONPATH is /root/Megatron-LM/")
    good = imports_check({"imports": {**info, "imported": ["ray"], "result": {"ray": None, "torch": None}}})
    assert good is not None and good.status == OK
    assert good.detail == ("ray imports, torch is found with the job's runtime env (/usr/bin/python3); miles not "
                           "installed here: not checked")
    deep = imports_check({"imports": {**info, "imported": ["ray", "torch"], "result": {"ray": None, "torch": None}}})
    assert deep is not None and deep.detail.startswith("ray, torch import with the job's runtime env")
    assert imports_check({}) is None and rsync_check({}) is None and cleanup_check({}, True) is None

    victims = [{"pid": 40 + i, "comm": "python3", "cmdline": f"python3 sleeper{i}.py", "by": "pkill -9 python"}
               for i in range(5)]
    warn = cleanup_check({"victims": victims}, True)
    assert warn is not None and warn.status == WARN
    assert "(`pkill -9 python`) will also kill 5 process(es) Ray did not start: pid 40 `python3 sleeper0.py`" \
        in warn.detail and "and 2 more" in warn.detail
    assert cleanup_check({"victims": []}, False).status == OK  # type: ignore[union-attr]

    missing = rsync_check({"rsync": {"path": None}})
    broken = rsync_check({"rsync": {"path": "/x/rsync", "version": [127, "rsync: libpopt.so.0: not found\n"]}})
    assert missing is not None and missing.status == FAIL and "rsync not found on PATH" in missing.detail
    assert broken is not None and broken.detail == "`/x/rsync --version` exit 127: rsync: libpopt.so.0: not found"

    def ident(name: str, mid: str = "m1", boot: str = "b1") -> dict[str, Any]:
        return {"identity": {"hostname": name, "machine_id": mid, "boot_id": boot, "address": "10.0.0.3"}}

    # A cloned image (same machine-id, other hostname) is another machine; an alias is not.
    same = identity_checks(["a", "b", "c", "d"], {"a": ident("n1"), "b": ident("n2"), "c": ident("n2"), "d": None},
                           {"a": "--head", "b": "hosts:2", "c": "hosts:3"})
    assert {h: c.status for h, c in same.items()} == {"a": OK, "b": OK, "c": FAIL}
    assert same["c"].detail == ("c (hosts:3) and b (hosts:2) are one machine (hostname n2, machine-id m1, "
                                "reached at 10.0.0.3): list it once")


@pytest.mark.parametrize("import_all", [False, True])
def test_torch_is_located_or_imported_with_the_job_env(tmp_path: Path, import_all: bool) -> None:
    """The probe on this machine, its runtime env's PYTHONPATH shadowing torch with a failing
    module: located, torch is found; imported (--import-all), the import error is named."""
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text('raise ImportError("shadowed torch")\n')
    hosts = parse_hostfile_text("127.0.0.1 slots=8\n", "hosts")
    plan = build_plan(LaunchSpec(hostfile=hosts, head="127.0.0.1", base_dir="/b", workdir="/w",
                                 overrides=Overrides(env=(("PYTHONPATH", str(tmp_path)),))))
    out = subprocess.run(probe_argv(plan, True, PreflightOptions(import_all=import_all)), capture_output=True,
                         text=True, timeout=60, stdin=subprocess.DEVNULL)
    facts = parse_probe_output(out.stdout.splitlines())
    assert facts is not None and facts["errors"] == [], out.stdout[-2000:]
    check = imports_check(facts)
    assert check is not None
    if import_all:
        assert check.status == FAIL and check.detail == (
            f"with the job's runtime env, python3 cannot import torch: ImportError: shadowed torch; its PYTHONPATH "
            f"is {tmp_path}")
    else:
        assert check.status == OK and check.detail.startswith("ray imports, torch is found with the job's runtime env")


@pytest.mark.rackbox
def test_node_faults_on_the_box(rackbox: RackBox, tmp_path: Path) -> None:
    """One preflight over the box with four faults: a runtime-env PYTHONPATH that shadows `ray`,
    a Python process on the head that Ray did not start, h3 listed twice (its IP and an ssh
    config alias), a broken rsync on h2. Each is named on its host; nothing is killed."""
    box = rackbox
    box.reset()
    h1, h2, h3 = box.hosts
    work = box.workdir / "nodes"
    checkout = work / "checkout"
    (checkout / "shadow" / "ray").mkdir(parents=True, exist_ok=True)
    (checkout / "shadow" / "ray" / "__init__.py").write_text(
        'raise ImportError("shadowed ray: a broken module on PYTHONPATH")\n')
    shutil.copy(REPO / "glm45_launch" / "testing" / "smoke_entry.py", checkout / "smoke_entry.py")
    for k in range(1, box.n_hosts + 1):
        make_base_dir(box.host_dir(k) / "tmp" / "base")
    home = work / "home"  # the launcher's HOME: an ssh config alias of h3
    (home / ".ssh").mkdir(parents=True, exist_ok=True)
    (home / ".ssh" / "config").write_text(f"Host h3twin\n    HostName {h3}\n")
    hostfile = work / "hostfile"
    hostfile.write_text(f"{h1} slots=8\n{h2} slots=8\n{h3} slots=8\nh3twin slots=8\n")
    fake = work / "badrsync"
    fake.mkdir(exist_ok=True)
    (fake / "rsync").write_text("#!/bin/sh\necho 'rsync: error while loading shared libraries: libpopt.so.0' >&2\n"
                                "exit 127\n")
    (fake / "rsync").chmod(0o755)
    box.set_shell_env(2, path_prepend=fake)
    sleeper = box.popen_on(1, [sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(600)"],
                           stdout=subprocess.PIPE, text=True)
    try:
        assert sleeper.stdout is not None and sleeper.stdout.readline().strip() == "ready"
        res = box.run_on(1, [
            sys.executable, "-m", "glm45_launch", "preflight", "--json", "--no-libs", "--needs-rsync",
            "--hostfile", str(hostfile), "--base-dir", "/tmp/base", "--workdir", str(checkout),
            "--entry", "smoke_entry.py", "--actor-num-nodes", "4", "--env", f"PYTHONPATH={checkout / 'shadow'}",
            "--identity", str(box.identity), "--known-hosts", str(box.known_hosts),
        ], env={**box.host_environ(1), "HOME": str(home)}, cwd=str(checkout), capture_output=True, text=True,
            timeout=120, stdin=subprocess.DEVNULL)
        assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr[-3000:]
        report = json.loads(res.stdout)
        rows = {h["host"]: {c["name"]: c for c in h["checks"]} for h in report["hosts"]}
        bad = {(h, n): c["status"] for h, checks in rows.items() for n, c in checks.items()
               if c["status"] != OK and n not in ("gpus", "nvlink")}
        assert bad == {(h1, "imports"): FAIL, (h2, "imports"): FAIL, (h3, "imports"): FAIL,
                       ("h3twin", "imports"): FAIL, (h2, "rsync"): FAIL, ("h3twin", "identity"): FAIL,
                       (h1, "cleanup"): WARN}, bad
        shadowed = (f"with the job's runtime env, python3 cannot import ray: ImportError: shadowed ray: a broken "
                    f"module on PYTHONPATH; its PYTHONPATH is {checkout / 'shadow'}")
        assert rows[h2]["imports"]["detail"] == shadowed
        assert rows[h2]["rsync"]["detail"].endswith("exit 127: rsync: error while loading shared libraries: "
                                                     "libpopt.so.0")
        assert rows[h3]["rsync"]["status"] == OK and rows[h3]["rsync"]["detail"].startswith("rsync version")
        assert rows["h3twin"]["identity"]["detail"] == (
            f"h3twin ({hostfile}:4) and {h3} ({hostfile}:3) are one machine (hostname {box.netns(3)}, machine-id "
            f"{rows[h3]['identity']['detail'].rsplit(' ', 1)[1]}, reached at {h3}): list it once")
        cleanup = rows[h1]["cleanup"]["detail"]
        assert "the cleanup (`pkill -9 python`) will also kill 1 process(es) Ray did not start: pid " in cleanup
        assert "time.sleep(600)" in cleanup and "glm45_launch" not in cleanup  # the launcher is spared
        assert rows[h2]["cleanup"]["status"] == OK
        last = res.stderr.strip().splitlines()[-1]
        assert f"{h1}, {h2}, {h3}, h3twin imports: with the job's runtime env, python3 cannot import ray" in last, last
        assert f"h3twin identity: h3twin ({hostfile}:4) and {h3} ({hostfile}:3) are one machine" in last, last
        assert sleeper.poll() is None, "preflight only looks: the sleeper must live"
    finally:
        sleeper.kill()
        sleeper.wait()
        box.reset()
