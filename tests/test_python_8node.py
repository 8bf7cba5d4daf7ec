"""``--profile python-8node`` against what upstream's ``scripts/run_glm45_355b_a32b_8node.py`` runs:
upstream's own recorded commands (``tests/snapshots/.../execute.txt`` of radixark/miles 31f1ca961,
kept verbatim in ``tests/data/upstream/``), word for word, and the plan's recorded golden."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from glm45_launch import LaunchSpec, build_plan, parse_hostfile_text
from glm45_launch.cli.main import main
from glm45_launch.core.plan import Variant
from glm45_launch.errors import LaunchError

DATA = Path(__file__).resolve().parent / "data"
EXECUTE = DATA / "upstream" / "run_glm45_355b_a32b_8node.execute.txt"
GOLDEN = DATA / "golden" / "python-8node.json"
RENV = "--runtime-env-json="
# The snapshot harness's stand-ins, and the launch that matches them.
REPO, RUN_ID, WANDB = "/repo", "260101-000000-000", "frozen-wandb-api-key"
HOSTS = ["127.0.0.1", *(f"10.0.0.{i}" for i in range(2, 9))]  # MASTER_ADDR=127.0.0.1 heads the hostfile
ENV = {"MASTER_ADDR": "127.0.0.1", "WANDB_API_KEY": WANDB, "PYTHONPATH": "/frozen/pythonpath"}
CLEARED = ("BASE_DIR", "MLP_WORKER_0_HOST", "MLP_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME",
           "NCCL_DEBUG", "NCCL_DEBUG_FILE", "PYTHONPATH", "WANDB_API_KEY")


def upstream_commands() -> list[str]:
    """The snapshot's commands, in order (its line breaks before `` --`` undone)."""
    blocks = re.split(r"^### \d+\n", EXECUTE.read_text(), flags=re.M)[1:]
    return [b.strip("\n").replace("\n  ", " ").strip() for b in blocks]


def split_exports(command: str) -> tuple[list[tuple[str, str]], list[str]]:
    """``export K=V && ... && argv`` -> (env, argv)."""
    *exports, rest = command.split(" && ")
    return [tuple(e.removeprefix("export ").split("=", 1)) for e in exports], shlex.split(rest)  # type: ignore[misc]


def plan_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *args: str, env: dict[str, str] = ENV,
              hosts: list[str] = HOSTS) -> Any:
    for name in CLEARED:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    hostfile = tmp_path / "hosts"
    hostfile.write_text("".join(f"{h}\n" for h in hosts))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["plan", "--hostfile", str(hostfile), "--profile", "python-8node", "--workdir", REPO,
                   "--run-id", RUN_ID, "--format", "json", "--show-secrets", *args])
    assert rc == 0
    return json.loads(out.getvalue())


def step(plan: Any, kind: str) -> Any:
    return next(s for s in plan["steps"] if s["kind"] == kind)


def test_the_plan_runs_upstreams_recorded_commands_word_for_word(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    cleanup, head, workers, nvlink, submit = upstream_commands()
    plan = plan_json(tmp_path, monkeypatch)

    assert [shlex.split(c) for c in cleanup.rstrip("; ").split("; ")] == step(plan, "cleanup")["commands"]

    env, argv = split_exports(head)
    start = step(plan, "head-start")
    assert (list(start["env"].items()), start["commands"]) == (env, [argv])

    # One ssh command per hostfile host but the head, all at once: the same words on each.
    loop = re.fullmatch(r'for worker_ip in \$\(awk \'\{print \$1\}\' /root/mpi_rack_hostfile\); do '
                        r'if \[ "\$worker_ip" = 127\.0\.0\.1 \]; then continue; fi; '
                        r'echo "Starting Ray worker on \$worker_ip"; ssh root@"\$worker_ip" "(.*)" & done; wait',
                        workers)
    assert loop is not None
    starts = [s for s in plan["steps"] if s["kind"] == "worker-start"]
    assert [s["host"] for s in starts] == HOSTS[1:]
    for s in starts:
        remote = loop.group(1).replace("$worker_ip", s["host"])
        assert [shlex.split(c) for c in remote.split(" ; ")] == s["commands"]
        assert s["ssh"] == f"root@{s['host']}"

    # Upstream probes NVLink here; the rack's NCCL_NVLS_ENABLE=0 replaces the probe's answer, so
    # the plan runs no probe (README: a documented difference).
    assert nvlink.startswith("nvidia-smi topo -m")

    env, argv = split_exports(submit.replace("<REPO_ROOT>", REPO))
    job = step(plan, "submit")
    assert list(job["env"].items()) == env
    words = job["commands"][0]
    want_renv = json.loads(next(w for w in argv if w.startswith(RENV))[len(RENV):])
    got_renv = json.loads(next(w for w in words if w.startswith(RENV))[len(RENV):])
    assert list(got_renv["env_vars"].items()) == list(want_renv["env_vars"].items())  # keys, order, values
    assert [w for w in words if not w.startswith(RENV)] == [w for w in argv if not w.startswith(RENV)]

    # Nothing else runs: the cleanup, the head start, the submit, one ssh command per worker.
    assert len(plan["invocations"]) == len(step(plan, "cleanup")["commands"]) + 2 + len(starts)


def test_the_plan_is_its_recorded_golden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    golden = json.loads(GOLDEN.read_text())
    plan = plan_json(tmp_path, monkeypatch, *golden["args"], env=golden["environment"], hosts=golden["hostfile"])
    assert plan["invocations"] == golden["invocations"]


def test_save_num_rollout_and_extras_as_upstream_adds_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = plan_json(tmp_path, monkeypatch, "--save", "--output-dir", "/out/", "--num-rollout", "7",
                     "--extra-args", "--foo 1", "--extra-env-vars", "A=1 B=2", "--extra-env-vars", '{"C": "3"}',
                     "--model-dir", "/m", "--data-dir", "/d")
    args = plan["train_args"]
    assert args["CKPT"] == ["--hf-checkpoint", "/m/GLM-4.5-355B-A32B", "--ref-load", "/m/GLM-4.5-355B-A32B_torch_dist",
                            "--save", "/out/checkpoints", "--save-interval", "20"]
    assert args["ROLLOUT"][:2] == ["--prompt-data", "/d/dapo-math-17k/dapo-math-17k.jsonl"]
    assert args["ROLLOUT"][args["ROLLOUT"].index("--num-rollout") + 1] == "7"
    assert args["EXTRA"] == ["--foo", "1"]
    assert list(plan["runtime_env"]["env_vars"].items())[-3:] == [("A", "1"), ("B", "2"), ("C", "3")]


def test_the_launchers_environment_reaches_the_runtime_env_as_upstream_forwards_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {**ENV, "NCCL_SOCKET_IFNAME": "ib0", "GLOO_SOCKET_IFNAME": "eth9", "NCCL_DEBUG": "INFO",
           "MLP_SOCKET_IFNAME": "eth0"}
    keys = list(plan_json(tmp_path, monkeypatch, env=env)["runtime_env"]["env_vars"].items())
    at = [k for k, _ in keys].index("NCCL_NVLS_ENABLE")
    # forwarded right after NCCL_NVLS_ENABLE; MLP_SOCKET_IFNAME then sets GLOO_SOCKET_IFNAME in place
    assert keys[at + 1:at + 4] == [("NCCL_SOCKET_IFNAME", "ib0"), ("GLOO_SOCKET_IFNAME", "eth0"), ("NCCL_DEBUG", "INFO")]
    assert [k for k, _ in keys[-4:]] == ["TP_SOCKET_IFNAME", "OMPI_MCA_oob_tcp_if_include",
                                          "OMPI_MCA_btl_tcp_if_include", "PYTHONPATH"]
    assert dict(keys)["PYTHONPATH"] == f"{REPO}:/root/Megatron-LM:/frozen/pythonpath"


@pytest.mark.parametrize(("args", "message"), [
    (("--profile", "bash", "--save"), "--save: an option of --profile python-8node"),
    (("--profile", "python", "--hardware", "GB200", "--num-rollout", "3"), "--num-rollout: an option of --profile"),
    (("--mode", "debug-minimal"), "--mode debug-minimal: an option of --profile python (the Python launcher's knob)"),
    (("--save", "--checkpoint-dir", "/c"), "--save with --checkpoint-dir"),
    (("--extra-env-vars", "[1]"), "--extra-env-vars '[1]': want a JSON object of strings"),
    (("--extra-env-vars", "1A=b"), "--extra-env-vars '1A=b': '1A' is not an environment variable name"),
])
def test_options_of_other_profiles_are_refused_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           args: tuple[str, ...], message: str) -> None:
    for name in CLEARED:
        monkeypatch.delenv(name, raising=False)
    hostfile = tmp_path / "hosts"
    hostfile.write_text("10.0.0.1\n10.0.0.2\n")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(["plan", "--hostfile", str(hostfile), "--head", "10.0.0.1", "--base-dir", "/b",
                   "--profile", "python-8node", *args])
    assert rc != 0 and message in err.getvalue() and len(err.getvalue().splitlines()) == 1


def test_the_head_is_master_addr_as_upstream_asks() -> None:
    with pytest.raises(LaunchError, match="no head address: set MASTER_ADDR or give --head"):
        build_plan(LaunchSpec(hostfile=parse_hostfile_text("10.0.0.1\n"), head=None, base_dir=None,
                              variant=Variant(profile="python-8node")))
