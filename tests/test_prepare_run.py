"""``glm45-launch prepare`` for real: the rack-in-a-box, where every host's /tmp is its own disk and
the model directory is shared; the downloads and the conversion are done already (their checks
hold), so the copies are what runs. And a download with no network, on this machine."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from rich.console import Console

from glm45_launch.cli.main import main
from glm45_launch.core.builder import build_plan
from glm45_launch.core.hostfile import parse_hostfile_text
from glm45_launch.core.plan import LaunchSpec, NvlinkFact, Variant
from glm45_launch.core.prepare_plan import build_prepare
from glm45_launch.runtime.prepare import Outcome, prepare
from glm45_launch.runtime.reporter import RichReporter
from glm45_launch.testing.fakes import FakeLocalRunner, FakeRemoteRunner, fake_runtime
from glm45_launch.testing.rackbox import RackBox

NAME = "GLM-4.5-355B-A32B"
COPIES = (f"{NAME}_torch_dist", NAME)
DONE_FILES = {  # what the download and conversion checks look for, and a little real content
    f"{NAME}/config.json": b"{}\n", f"{NAME}/model.safetensors.index.json": b"{}\n",
    f"{NAME}/model-00001-of-00002.safetensors": os.urandom(300_000),
    f"{NAME}/sub/tokenizer.json": b'{"v": 1}\n',
    f"{NAME}_torch_dist/latest_checkpointed_iteration.txt": b"release\n",
    f"{NAME}_torch_dist/release/__0_0.distcp": os.urandom(200_000),
    "dapo-math-17k/dapo-math-17k.jsonl": b"{}\n", "aime-2024/aime-2024.jsonl": b"{}\n",
    "aime-2025/aime-2025.jsonl": b"{}\n",
}


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


class Prepared:
    """One box set-up for the module: the shared model dir, the hostfile, the launcher's options."""

    def __init__(self, box: RackBox) -> None:
        self.box, self.base = box, box.workdir / "prep-base"
        for rel, data in DONE_FILES.items():
            (self.base / rel).parent.mkdir(parents=True, exist_ok=True)
            (self.base / rel).write_bytes(data)
        self.hostfile = box.hostfile(box.workdir / "prep-hosts", slots=4)
        self.runs = box.workdir / "prep-runs"

    def local(self, host: int, local_dir: str, item: str = "") -> Path:
        """Host ``host``'s ``local_dir`` (under its private /tmp), seen from here."""
        return self.box.host_dir(host) / "tmp" / Path(local_dir).relative_to("/tmp") / item

    def run(self, local_dir: str, run: str) -> tuple[subprocess.CompletedProcess[str], dict]:
        args = ["prepare", "--hostfile", str(self.hostfile), "--base-dir", str(self.base), "--profile", "python",
                "--hardware", "GB200", "--nvlink", "no", "--workdir", str(self.base), "--model-local-dir", local_dir,
                "--identity", str(self.box.identity), "--known-hosts", str(self.box.known_hosts),
                "--run-dir", str(self.runs / run), "--timeout", "120"]
        proc = self.box.run_on(1, [sys.executable, "-m", "glm45_launch", *args], capture_output=True, text=True,
                               timeout=180, stdin=subprocess.DEVNULL, env=self.box.host_environ(1))
        return proc, json.loads((self.runs / run / "prepare.json").read_text())


@pytest.fixture(scope="module")
def prepared(rackbox: RackBox) -> Iterator[Prepared]:
    yield Prepared(rackbox)
    rackbox.reset()


def by_outcome(summary: dict, phase: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for s in summary["steps"]:
        if s["phase"] == phase:
            out.setdefault(s["outcome"], []).append(s["host"])
    return out


@pytest.mark.rackbox
def test_every_node_gets_an_identical_copy_and_a_second_run_copies_nothing(prepared: Prepared) -> None:
    box, local = prepared.box, "/tmp/prep-local"
    first, summary = prepared.run(local, "first")
    assert first.returncode == 0, first.stderr[-3000:]
    assert by_outcome(summary, "download") == {"skipped": [box.head] * 5}  # mkdir, the model, 3 datasets
    assert by_outcome(summary, "convert") == {"skipped": box.hosts}
    assert by_outcome(summary, "copy") == {"ran": box.hosts * 2}
    assert "reads release" in first.stderr and "skipped on" in first.stderr
    for item in COPIES:
        want = tree(prepared.base / item)
        assert all(tree(prepared.local(h, local, item)) == want for h in (1, 2, 3)), item
    inodes = {h: prepared.local(h, local, f"{NAME}/config.json").stat().st_ino for h in (1, 2, 3)}

    second, summary = prepared.run(local, "second")
    assert second.returncode == 0, second.stderr[-3000:]
    assert summary["counts"] == {"ran": 0, "skipped": 5 + 3 + 6, "failed": 0, "not run": 0}
    assert f"skipped on {', '.join(box.hosts)}: {local}/{NAME} is up to date" in second.stderr
    # rsync writes a new file and renames it over the old one: the same inode means nothing was copied
    assert inodes == {h: prepared.local(h, local, f"{NAME}/config.json").stat().st_ino for h in (1, 2, 3)}


@pytest.mark.rackbox
def test_a_node_whose_local_dir_is_unwritable_is_named_and_the_others_finish(prepared: Prepared) -> None:
    box, local = prepared.box, "/tmp/prep-ro"
    box.run_on(3, f"mkdir -p {local} && mount --bind {local} {local} && mount -o remount,bind,ro {local}",
               check=True)
    try:
        proc, summary = prepared.run(local, "readonly")
    finally:
        box.run_on(3, ["umount", local], check=True)
    assert proc.returncode == 1, proc.stderr[-3000:]
    error = proc.stderr.strip().splitlines()[-1]
    bad = box.ip(3)
    assert error.startswith(f"glm45-launch: error: prepare failed on 1 node(s): {bad} (copy {local}/{NAME}_torch_dist")
    assert "Read-only file system" in error
    assert by_outcome(summary, "copy") == {"ran": [box.head, box.ip(2)] * 2, "failed": [bad] * 2}
    assert summary["failed_hosts"] == [bad]
    for item in COPIES:
        assert all(tree(prepared.local(h, local, item)) == tree(prepared.base / item) for h in (1, 2)), item
    assert not any(prepared.local(3, local).iterdir())


def _closed_port() -> socket.socket:
    """A port bound here that nothing listens on: a connection to it is refused at once."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.mark.skipif(shutil.which("hf") is None, reason="huggingface_hub's `hf` CLI is not installed (extra: prepare)")
@pytest.mark.parametrize(("have_model", "repo"), [(False, "zai-org/GLM-4.5"), (True, "zhuzilin/dapo-math-17k")])
def test_a_download_without_network_fails_in_one_line_naming_the_repo(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        have_model: bool, repo: str) -> None:
    base = tmp_path / "base"
    if have_model:  # the model's check holds: skipped; the first dataset is what fails
        for rel in (f"{NAME}/config.json", f"{NAME}/model.safetensors.index.json"):
            (base / rel).parent.mkdir(parents=True, exist_ok=True)
            (base / rel).write_text("{}\n")
    (tmp_path / "hosts").write_text("127.0.0.1 slots=4\n")
    sock = _closed_port()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{sock.getsockname()[1]}")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    try:
        rc = main(["prepare", "--hostfile", str(tmp_path / "hosts"), "--head", "127.0.0.1", "--base-dir", str(base),
                   "--profile", "python", "--hardware", "GB200", "--nvlink", "no", "--run-dir", str(tmp_path / "run"),
                   "--format", "json"])
    finally:
        sock.close()
    out, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("glm45-launch: error:")]
    assert rc == 1 and len(errors) == 1 and err.rstrip().endswith(errors[0])
    assert errors[0].startswith(f"glm45-launch: error: prepare failed: download {repo} on 127.0.0.1: ")
    assert "Connection refused" in errors[0] and "no network?" in errors[0]
    summary = json.loads((tmp_path / "run/prepare.json").read_text())
    assert json.loads(out) == summary and summary["error"] == errors[0].removeprefix("glm45-launch: error: ")
    want = ["skipped", "skipped", "failed"] if have_model else ["ran", "failed", "not run"]  # mkdir, model, dataset
    assert [s["outcome"] for s in summary["steps"][:3]] == want


def test_past_16_nodes_a_phase_shows_one_progress_line() -> None:
    """20 nodes: each copy phase is one live line (the board), not a line per node; the head's
    rsync output stays in its log."""
    hosts = [f"10.0.1.{i}" for i in range(1, 21)]
    spec = LaunchSpec(hostfile=parse_hostfile_text("".join(f"{h} slots=4\n" for h in hosts)), head=hosts[0],
                      base_dir="/data", workdir="/miles", model_local_dir="/local", nvlink=NvlinkFact(True, "test"),
                      variant=Variant(profile="python", hardware="GB200"))
    pplan = build_prepare(build_plan(spec))
    progress = "  1,024 100%  1.00MB/s  0:00:01 (xfr#1, to-chk=0/1)"

    class EchoingRemote(FakeRemoteRunner):
        def run(self, host, command, log_path, echo=None, timeout_s=None):  # type: ignore[no-untyped-def]
            res = super().run(host, command, log_path, echo, timeout_s)
            if echo and "--info=progress2" in command:
                echo("\r" + progress)
            return res

    def remote_answer(host: str, command: str) -> tuple[int, list[str]]:
        return 0, ["cd+++++++++ ./"] if "--dry-run" in command else []  # the copies are not there yet

    reporter = RichReporter()
    out = io.StringIO()
    reporter.rich = Console(file=out, width=80, force_terminal=False)
    local = FakeLocalRunner(lambda argv: (0, ["cd+++++++++ ./"] if "--dry-run" in argv else [progress]))
    rt = fake_runtime(local=local, remote=EchoingRemote(answer=remote_answer), reporter=reporter,  # type: ignore[arg-type]
                      here=[hosts[0]])
    result = prepare(pplan, rt, Path("/nonexistent-logs"))
    assert result.ok and [o.outcome for o in result.outcomes if o.phase == "copy"] == [Outcome.RAN] * 40
    text = out.getvalue()
    assert text.count("19/19") == 2  # one board line per copy phase: the 19 nodes over SSH
    assert "[10.0.1.5]" not in text and f"[head] {progress.strip()}" not in text


def test_up_prepare_runs_before_the_launch_and_a_failure_starts_nothing(tmp_path: Path) -> None:
    """``up --prepare`` (the use case, with fakes): the preparation runs after preflight; a failed
    download ends the run with its cause before any Ray command runs anywhere."""
    from glm45_launch.runtime.causes import CauseKind
    from glm45_launch.runtime.usecases import UpOptions, up

    hosts = ["10.0.2.1", "10.0.2.2"]
    spec = LaunchSpec(hostfile=parse_hostfile_text("".join(f"{h} slots=4\n" for h in hosts)), head=hosts[0],
                      base_dir="/data", workdir=str(tmp_path), nvlink=NvlinkFact(True, "test"),
                      variant=Variant(profile="python", hardware="GB200"))

    def answer(argv: Sequence[str]) -> tuple[int, list[str]]:
        if list(argv[:2]) == ["hf", "download"]:
            return 1, ["\x1b[31mError: Local entry not found. [Errno 111] Connection refused\x1b[0m"]
        return (1, []) if argv[0] == "test" else (0, [])

    local, remote = FakeLocalRunner(answer), FakeRemoteRunner()
    rt = fake_runtime(local=local, remote=remote, here=[hosts[0]])
    result = up(build_plan(spec), UpOptions(run_dir=tmp_path / "run", preflight=None, prepare=True), rt)
    assert result.exit_code == 1 and result.cause is not None and result.cause.kind is CauseKind.PREPARE_FAILED
    assert result.error and result.error.startswith("prepare failed: download zai-org/GLM-4.5 on 10.0.2.1: Local "
                                                    "entry not found. [Errno 111] Connection refused (exit 1)")
    assert result.error.endswith("; the cluster was not started")
    assert [c[0] for c in local.calls] == ["test", "mkdir", "test", "hf"] and remote.calls == []
    assert json.loads((tmp_path / "run/prepare.json").read_text())["failed_hosts"] == [hosts[0]]


def test_up_prepare_preflight_excuses_only_the_paths_the_preparation_makes() -> None:
    from glm45_launch.checks.preflight_report import Check, HostReport, PreflightReport
    from glm45_launch.runtime.prepare import excuse_prepared_paths

    spec = LaunchSpec(hostfile=parse_hostfile_text("10.0.3.1 slots=4\n10.0.3.2 slots=4\n"), head="10.0.3.1",
                      base_dir="/data", model_local_dir="/local", nvlink=NvlinkFact(True, "test"),
                      variant=Variant(profile="python", hardware="GB200"))
    plan = build_plan(spec)
    missing = [Check("path --ref-load", "fail", f"/local/{NAME}_torch_dist: missing"),
               Check("path --prompt-data", "fail", "/data/dapo-math-17k/dapo-math-17k.jsonl: missing")]
    report = PreflightReport([HostReport("10.0.3.1", "head", "local", list(missing)),
                              HostReport("10.0.3.2", "worker", "ssh", [*missing, Check("ssh", "fail", "refused")])])
    report = excuse_prepared_paths(report, plan, build_prepare(plan))
    assert [(h.host, c.name) for h in report.hosts for c in h.checks if c.status == "fail"] == [("10.0.3.2", "ssh")]
    assert report.hosts[0].checks[0].detail == f"/local/{NAME}_torch_dist: missing (--prepare makes it)"
    assert not report.ok and report.hosts[0].status == "warn"


def test_up_prepare_asks_preflight_for_rsync_on_every_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The local copies are rsync's: ``up --prepare``'s preflight checks it (``needs_rsync``)."""
    from glm45_launch.checks.preflight_report import PreflightOptions, PreflightReport
    from glm45_launch.runtime import usecases

    seen: list[PreflightOptions] = []
    monkeypatch.setattr(usecases, "preflight", lambda plan, opts, logs, rt: seen.append(opts) or PreflightReport([]))
    spec = LaunchSpec(hostfile=parse_hostfile_text("10.0.4.1 slots=4\n"), head="10.0.4.1", base_dir="/data",
                      nvlink=NvlinkFact(True, "test"), variant=Variant(profile="python", hardware="GB200"))
    plan = build_plan(spec)
    rt = fake_runtime(here=["10.0.4.1"])
    usecases._preflight_phase(plan, PreflightOptions(libs=False), tmp_path, rt, build_prepare(plan))
    usecases._preflight_phase(plan, PreflightOptions(libs=False), tmp_path, rt)
    assert [o.needs_rsync for o in seen] == [True, False]
