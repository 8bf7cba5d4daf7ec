"""The preparation before the job (``plan --prepare``) against what upstream's
``scripts/run_glm45_355b_a32b.py`` (seed revision 04b61f31a) runs before it trains, host by host:
the recorded 4-node GB200 launch, and its FP8 and MTP+MIS variants (``upstream_launchers``)."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
from upstream_launchers import python_prepare

from glm45_launch.cli.main import main
from glm45_launch.core.builder import build_plan
from glm45_launch.core.hostfile import parse_hostfile_text
from glm45_launch.core.plan import LaunchSpec, NvlinkFact, Plan, Variant
from glm45_launch.core.prepare_plan import PreparePlan, build_prepare
from glm45_launch.core.steps import HEAD, PrepareStep
from glm45_launch.errors import LaunchError
from glm45_launch.recipes import MODELS

NODES = [f"10.0.0.{i}" for i in range(1, 5)]
HEAD_IP, REPO = NODES[0], "/miles"
MODEL = MODELS["glm4.5-355B-A32B"]
Command = tuple[str, dict[str, str], list[str]]


def python_plan(**variant: Any) -> Plan:
    local = variant.pop("model_local_dir", None)
    spec = LaunchSpec(hostfile=parse_hostfile_text("".join(f"{h} slots=4\n" for h in NODES), "hosts"), head=HEAD_IP,
                      base_dir="/data", workdir=REPO, output_dir="/data/out", run_id="RUNID", model_local_dir=local,
                      nvlink=NvlinkFact(True, "test"), variant=Variant(profile="python", hardware="GB200", **variant))
    return build_plan(spec)


def upstream(**kw: Any) -> list[Command]:
    """upstream's commands as each host runs them: the ``all`` ones once per node (rank = the
    cluster's order), ``source`` + ``${MODEL_ARGS[@]}`` expanded, a leading ``K=V`` as env."""
    # upstream names the repo ORG/--model-name; with the recorded --model-name GLM-4.5-355B-A32B that is
    # no repo, so the plan downloads the model's own id into the same directory (README).
    out: list[Command] = []
    for where, command in python_prepare(repo=REPO, model_repo=MODEL.hf_id, **kw):
        for rank, host in enumerate([HEAD_IP] if where == "head" else NODES):
            text = (command.replace("{{node_rank}}", str(rank)).replace("{{nnodes}}", str(len(NODES)))
                    .replace("{{master_addr}}", HEAD_IP).replace("${MODEL_ARGS[@]}", shlex.join(MODEL.args)))
            for part in re.sub(r"^source \S+ && ", "", text).split(" && "):
                words = shlex.split(part)
                env = dict(w.split("=", 1) for w in words if re.fullmatch(r"[A-Z_]+=.*", w))
                out.append((host, env, words[len(env):]))
    return out


def ours(pplan: PreparePlan) -> list[Command]:
    return [(s.host, dict(s.env), list(c)) for s in pplan.steps for c in s.commands]


@pytest.mark.parametrize(("variant", "kw"), [
    ({}, {}),
    ({"rollout_fp8": True}, {"fp8": True}),
    ({"mtp": True, "mis": True}, {}),  # the job's variants change nothing before it
    ({"task": "gsm8k", "model_local_dir": "/local"}, {"task": "gsm8k", "local": "/local"}),
], ids=["4-node GB200", "fp8", "mtp+mis", "gsm8k, local copies"])
def test_the_preparation_is_upstreams_host_by_host(variant: dict[str, Any], kw: dict[str, Any]) -> None:
    assert ours(build_prepare(python_plan(**variant))) == upstream(**kw)


def test_every_step_says_when_its_work_is_done() -> None:
    pplan = build_prepare(python_plan(rollout_fp8=True, model_local_dir="/local"))
    by_name = {p.name: p for p in pplan.phases}
    download = [s for s in by_name["download"].steps if isinstance(s, PrepareStep)]
    assert all(s.done is not None and s.where == HEAD for s in download)
    assert download[1].done and download[1].done.commands == tuple(
        ("test", "-f", f"/data/GLM-4.5-355B-A32B/{f}") for f in ("config.json", "model.safetensors.index.json"))
    fp8 = by_name["fp8"].steps[0]
    assert isinstance(fp8, PrepareStep) and fp8.done and fp8.done.commands == (("test", "-e", "/data/GLM-4.5-355B-A32B-FP8/"),)
    assert fp8.cwd == REPO  # upstream's relative tools/convert_hf_to_fp8.py, from the checkout
    convert = by_name["convert"]
    assert convert.together and convert.done and convert.done.commands == (
        ("grep", "-qxF", "release", "/data/GLM-4.5-355B-A32B_torch_dist/latest_checkpointed_iteration.txt"),)
    copies = [p for p in pplan.phases if p.name == "copy"]
    assert len(copies) == 3 and all(p.together and [s.host for s in p.steps] == NODES for p in copies)
    step = copies[0].steps[1]
    assert isinstance(step, PrepareStep) and step.done and step.done.quiet
    assert step.done.commands == (("rsync", "-a", "--dry-run", "--itemize-changes",
                                   "/data/GLM-4.5-355B-A32B_torch_dist/", "/local/GLM-4.5-355B-A32B_torch_dist"),)
    assert step.remote_command == ("mkdir -p /local/GLM-4.5-355B-A32B_torch_dist && rsync -a --info=progress2 "
                                   "/data/GLM-4.5-355B-A32B_torch_dist/ /local/GLM-4.5-355B-A32B_torch_dist")
    assert ("every node", "rsync") in pplan.requires and ("head", "python") in pplan.requires


def _plan_cli(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    hostfile = tmp_path / "hosts"
    hostfile.write_text("".join(f"{h} slots=4\n" for h in NODES))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["plan", "--hostfile", str(hostfile), "--head", HEAD_IP, "--base-dir", "/data", "--nvlink", "no",
                   "--workdir", REPO, "--prepare", *args])
    return rc, out.getvalue(), err.getvalue()


def test_plan_prepare_shows_every_step_in_text_and_json(tmp_path: Path) -> None:
    rc, text, _ = _plan_cli(tmp_path, "--profile", "python", "--hardware", "GB200")
    assert rc == 0
    prep = text[text.index("Preparation"):text.index("\nSteps\n")]
    assert prep.count("skipped when") == 5 + 1 + 2 * len(NODES)  # 5 head steps, the conversion, 2 copies a node
    assert "$ hf download zai-org/GLM-4.5 --local-dir /data/GLM-4.5-355B-A32B" in prep
    rc, out, _ = _plan_cli(tmp_path, "--profile", "python", "--hardware", "GB200", "--format", "json")
    data = json.loads(out)["prepare"]
    assert [p["name"] for p in data["phases"]] == ["download", "convert", "copy", "copy"]
    assert data["phases"][1]["done"]["says"].endswith("reads release")
    assert len(data["invocations"]) == 5 + len(NODES) + 2 * (2 + len(NODES) - 1)  # the head: 2 commands a copy


@pytest.mark.parametrize(("args", "message"), [
    (("--profile", "bash"), "--prepare: --profile bash prepares nothing"),
    (("--profile", "python", "--hardware", "GB200", "--format", "bash"), "--prepare: the preparation is shown in"),
])
def test_plan_prepare_refuses_in_one_line(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    rc, _, err = _plan_cli(tmp_path, *args)
    assert rc != 0 and message in err and len(err.splitlines()) == 1


def test_only_the_python_profile_prepares() -> None:
    spec = LaunchSpec(hostfile=parse_hostfile_text("10.0.0.1\n"), head="10.0.0.1", base_dir="/b",
                      variant=Variant(profile="python-8node"))
    with pytest.raises(LaunchError, match="python-8node prepares nothing"):
        build_prepare(build_plan(spec))
