"""The reference bash recipe, run under argv-recording shims, against the golden argv."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from glm45_launch.sandbox.record import DEFAULT_RECORDED, Recording, canonical, record_script

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SCRIPT = EXAMPLES / "run-glm4.5-355B-A32B.sh"
GOLDEN = json.loads((ROOT / "tests/data/golden/glm45-355b-a32b-8node.json").read_text())
RENV = "--runtime-env-json="
RAY_FLAGS = ["--disable-usage-stats", "--dashboard-host=0.0.0.0", "--dashboard-port=8265"]


def write_hostfile(path: Path, lines: list[str]) -> Path:
    """Write an MPI-style hostfile, one line each."""
    path.write_text("".join(line + "\n" for line in lines))
    return path


def record_recipe(tmp_path: Path, lines: list[str] | None = None, **env: str | None) -> Recording:
    """Record the reference script with the golden's environment; ``None`` in ``env`` unsets."""
    hostfile = write_hostfile(tmp_path / "hostfile", GOLDEN["hostfile"] if lines is None else lines)
    full_env = {k: v for k, v in {**GOLDEN["environment"], **env}.items() if v is not None}
    return record_script(SCRIPT, env=full_env, hostfile=hostfile)


def ray_submit(rec: Recording) -> list[str]:
    """The single `ray job submit` argv."""
    (argv,) = [a for a in rec.invocations if a[:3] == ["ray", "job", "submit"]]
    return argv


def ssh_calls(rec: Recording) -> list[list[str]]:
    """The ssh fan-out, sorted."""
    return [a for a in rec.canonical() if a[0] == "ssh"]


def write_script(path: Path, body: str) -> Path:
    """A small bash script."""
    path.write_text("#!/bin/bash\n" + body)
    return path


@pytest.fixture(scope="module")
def golden_run(tmp_path_factory: pytest.TempPathFactory) -> Recording:
    """One recording of the reference script with the golden's inputs."""
    return record_recipe(tmp_path_factory.mktemp("golden"))


def test_reference_script_matches_golden_word_for_word(golden_run: Recording) -> None:
    assert golden_run.returncode == 0, golden_run.stderr
    assert not golden_run.timed_out and golden_run.notes == []
    assert golden_run.canonical() == canonical(GOLDEN["invocations"])


def test_runtime_env_word_is_byte_identical(golden_run: Recording) -> None:
    (want,) = [w for a in GOLDEN["invocations"] for w in a if w.startswith(RENV)]
    (got,) = [w for w in ray_submit(golden_run) if w.startswith(RENV)]
    assert got == want
    env_vars = json.loads(got[len(RENV) :])["env_vars"]
    assert len(env_vars) == 26
    assert env_vars["MASTER_ADDR"] == "${MLP_WORKER_0_HOST}"  # single quotes: Ray expands it


def test_head_commands_precede_fan_out_and_submit(golden_run: Recording) -> None:
    kinds = [a[0] if a[0] != "ray" else " ".join(a[:2]) for a in golden_run.invocations]
    assert kinds[:8] == ["pkill", "sleep", "ray stop", "pkill", "pkill", "sleep", "pkill", "pkill"]
    assert kinds[8] == "ray start" and kinds[-1] == "ray job"
    assert kinds[9:-1] == ["ssh"] * 7


def test_unset_head_address_drops_the_word(tmp_path: Path) -> None:
    rec = record_recipe(tmp_path, MLP_WORKER_0_HOST=None)
    (start,) = [a for a in rec.invocations if a[:2] == ["ray", "start"]]
    assert start == ["ray", "start", "--head", "--node-ip-address", "--num-gpus", "8", *RAY_FLAGS]
    ssh = ssh_calls(rec)
    assert [a[1] for a in ssh] == [f"root@10.0.0.{i}" for i in range(1, 9)]  # head not skipped
    assert "--address=:6379 " in ssh[0][2]


def test_comment_line_in_hostfile_becomes_a_host(tmp_path: Path) -> None:
    rec = record_recipe(tmp_path, ["10.0.0.1 slots=8", "# x", "", "10.0.0.2 slots=8"])
    assert [a[1] for a in ssh_calls(rec)] == ["root@#", "root@10.0.0.2"]
    assert "--node-ip-address # " in ssh_calls(rec)[0][2]


def test_awk_keeps_host_port_and_carriage_return(tmp_path: Path) -> None:
    rec = record_recipe(tmp_path, ["10.0.0.1 slots=8", "host:4", "10.0.0.3\r", "\t10.0.0.4\tslots=8"])
    hosts = [a[1] for a in ssh_calls(rec)]
    assert hosts == ["root@10.0.0.3\r", "root@10.0.0.4", "root@host:4"]


def test_base_dir_with_space_splits_words(tmp_path: Path) -> None:
    argv = ray_submit(record_recipe(tmp_path, BASE_DIR="/data/my glm"))
    i = argv.index("--hf-checkpoint")
    assert argv[i : i + 4] == ["--hf-checkpoint", "/data/my", "glm/GLM-4.5-355B-A32B", "--ref-load"]


def test_moe_layer_freq_glob_matches_a_file_in_cwd(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "03+189").touch()
    hostfile = write_hostfile(tmp_path / "hostfile", GOLDEN["hostfile"])
    rec = record_script(SCRIPT, env=GOLDEN["environment"], hostfile=hostfile, cwd=work)
    argv = ray_submit(rec)
    assert argv[argv.index("--moe-layer-freq") + 1] == "03+189"


AIR_MODEL_ARGS = """
--disable-bias-linear --group-query-attention --num-attention-heads 96 --num-query-groups 8
--kv-channels 128 --num-layers 46 --hidden-size 4096 --ffn-hidden-size 10944 --add-qkv-bias
--normalization RMSNorm --position-embedding-type rope --rotary-percent 0.5 --swiglu
--untie-embeddings-and-output-weights --vocab-size 151552 --rotary-base 1000000
--moe-ffn-hidden-size 1408 --moe-shared-expert-intermediate-size 1408 --moe-router-pre-softmax
--moe-router-score-function sigmoid --moe-router-enable-expert-bias --moe-router-bias-update-rate 0
--moe-router-load-balancing-type seq_aux_loss --moe-token-dispatcher-type alltoall
--moe-router-topk 8 --moe-layer-freq [0]*1+[1]*45 --num-experts 128 --moe-grouped-gemm
--moe-router-dtype fp32 --moe-permute-fusion --moe-aux-loss-coeff 0
""".split()


def test_air_model_file(tmp_path: Path) -> None:
    body = f'source "{EXAMPLES}/models/glm4.5-106B-A12B.sh"\npython3 ${{MODEL_ARGS[@]}}\n'
    rec = record_script(write_script(tmp_path / "air.sh", body), env={}, expose=[EXAMPLES / "models"])
    assert rec.invocations == [["python3", *AIR_MODEL_ARGS]]


def test_framework_package_override(tmp_path: Path) -> None:
    argv = ray_submit(record_recipe(tmp_path, FRAMEWORK_PACKAGE="slime"))
    path = argv[argv.index("--dynamic-sampling-filter-path") + 1]
    assert path == "slime.rollout.filter_hub.dynamic_sampling_filters.check_reward_nonzero_std"


def test_hardcoded_hostfile_copy_is_redirected(tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"
    shutil.copytree(EXAMPLES / "models", scripts / "models")
    text = SCRIPT.read_text()
    assert text.count('"${HOSTFILE}"') == 1
    copy = scripts / SCRIPT.name
    copy.write_text(text.replace('"${HOSTFILE}"', "/root/mpi_rack_hostfile"))
    before = sorted(p.name for p in scripts.iterdir())
    hostfile = write_hostfile(tmp_path / "hosts", GOLDEN["hostfile"])
    rec = record_script(copy, env=GOLDEN["environment"], hostfile=hostfile, hostfile_var="")
    assert rec.canonical() == canonical(GOLDEN["invocations"]), rec.stderr
    assert sorted(p.name for p in scripts.iterdir()) == before  # user's tree untouched
    assert "/root/mpi_rack_hostfile" in copy.read_text()


def test_mirror_keeps_parent_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "lib.sh").write_text("LIB_WORD=from-parent\n")
    (tmp_path / "bin").mkdir()
    script = write_script(
        tmp_path / "bin/run.sh",
        'D="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"\nsource "$D/../lib.sh"\n'
        "ssh $(awk '{print $1}' /root/mpi_rack_hostfile) $LIB_WORD\n",
    )
    hostfile = write_hostfile(tmp_path / "hosts", ["node7 slots=8"])
    rec = record_script(script, env={}, hostfile=hostfile, expose=[tmp_path])  # the sandbox shows the parent
    assert rec.invocations == [["ssh", "node7", "from-parent"]]


def test_infinite_loop_is_killed_at_timeout(tmp_path: Path) -> None:
    script = write_script(tmp_path / "loop.sh", "ray start\nwhile :; do :; done\n")
    start = time.monotonic()
    rec = record_script(script, env={}, timeout=1)
    assert time.monotonic() - start < 5
    assert rec.timed_out and rec.returncode < 0
    assert rec.invocations == [["ray", "start"]]
    assert any("timed out" in n for n in rec.notes)


def test_stdin_is_not_inherited(tmp_path: Path) -> None:
    script = write_script(tmp_path / "read.sh", "read -r line || echo eof\ncat\nray status\n")
    rec = record_script(script, env={}, timeout=5)
    assert not rec.timed_out and rec.returncode == 0
    assert rec.stdout == "eof\n" and rec.invocations == [["ray", "status"]]


def processes_running(word: str) -> list[int]:
    """Live processes whose command line contains ``word`` (zombies have none)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and word.encode() in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def test_background_real_process_is_killed(tmp_path: Path) -> None:
    # `tail -f` is an allowlisted (real) tool: the one way a script leaves something running
    marker = tmp_path / f"leftover-{os.getpid()}-{time.monotonic_ns()}"
    marker.touch()
    real_sleep = Path("/bin/sleep") if Path("/bin/sleep").exists() else Path(shutil.which("sleep") or "")
    script = write_script(tmp_path / "bg.sh", f"tail -f {marker} &\n{real_sleep} 1000 &\nsleep 1000\n")
    start = time.monotonic()
    rec = record_script(script, env={}, timeout=10)
    assert time.monotonic() - start < 5  # neither sleep held us up
    # the sleep called by path is recorded, not run; the PATH one is the shim
    assert sorted(rec.invocations) == [[str(real_sleep), "1000"], ["sleep", "1000"]]
    assert processes_running(str(marker)) == []
    assert any("left running" in n for n in rec.notes)


def test_shims_record_python_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    script = write_script(
        tmp_path / "py.sh", f'python3 -c \'open("{marker}", "w")\'\npython -m x\nnvidia-smi topo -m\n'
    )
    rec = record_script(script, env={})
    assert rec.returncode == 0 and rec.stdout == "" and not marker.exists()
    assert rec.invocations == [
        ["python3", "-c", f'open("{marker}", "w")'],
        ["python", "-m", "x"],
        ["nvidia-smi", "topo", "-m"],
    ]
    assert {"ray", "ssh", "pkill", "sleep", "python", "python3", "torchrun", "hf"} <= set(DEFAULT_RECORDED)


def test_parallel_fan_out_lines_do_not_interleave(tmp_path: Path) -> None:
    script = write_script(
        tmp_path / "fan.sh",
        'big=$(printf "%08000d" 0)\nfor i in $(seq 1 24); do ssh "h$i" "$big" & done\nwait\nexit 3\n',
    )
    rec = record_script(script, env={})
    assert rec.notes == ["script exited with status 3"]
    assert sorted(a[1] for a in rec.invocations) == sorted(f"h{i}" for i in range(1, 25))
    assert all(len(a) == 3 and len(a[2]) == 8000 for a in rec.invocations)


def test_canonical_sorts_only_the_ssh_fan_out() -> None:
    got = canonical([["ray", "b"], ["ssh", "z"], ["ray", "a"], ["ssh", "a", "2"], ["ssh", "a", "1"]])
    assert got == [["ray", "b"], ["ray", "a"], ["ssh", "a", "1"], ["ssh", "a", "2"], ["ssh", "z"]]
