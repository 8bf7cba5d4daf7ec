"""A run that survives, for real on the rack-in-a-box: health watch, diagnostics, restarts.

The job is the stand-in trainer (``glm45_launch/testing/standin_trainer.py``): it checkpoints
to ``--save``, resumes from ``--load``'s ``latest_checkpointed_iteration.txt``, touches every
node in every iteration, and hangs (as NCCL does) when a node is lost. Faults are injected
inside the box: a worker's raylet killed by PID, a host whose sshd and processes are gone.
Intervals are short and iterations few so the whole file stays lean on a 2-core CI machine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from boxhelpers import make_base_dir, ray_processes

from glm45_launch.testing import standin_trainer
from glm45_launch.testing.rackbox import RackBox

pytestmark = pytest.mark.rackbox

ITERATIONS = 8


@dataclass
class Rack:
    box: RackBox
    checkout: Path
    hostfile: Path
    runs: Path
    ckpt: Path

    def ssh_args(self) -> list[str]:
        return ["--identity", str(self.box.identity), "--known-hosts", str(self.box.known_hosts), "--retries", "2"]

    def up_args(self, run: str, *extra: str, iterations: int = ITERATIONS, trainer: str = "") -> list[str]:
        return [
            "up", "--hostfile", str(self.hostfile), "--base-dir", str(self.box.workdir / "base"),
            "--workdir", str(self.checkout), "--entry", "standin_trainer.py", "--actor-num-nodes", "3",
            "--force", "--skip-preflight", "--join-timeout", "90", "--run-dir", str(self.runs / run),
            "--checkpoint-dir", str(self.ckpt), "--save-interval", "2",
            "--set", f"ROLLOUT.--num-rollout={iterations}",
            "--extra-args", f"--standin-step-seconds 1 {trainer}".strip(),
            "--health-interval", "1", "--health-timeout", "5", "--stop-grace", "10", "--collect-timeout", "20",
            *self.ssh_args(), *extra,
        ]

    def start(self, args: list[str], name: str) -> tuple[subprocess.Popen[str], Path]:
        """The launcher on the head, its stderr in a file the test can read while it runs."""
        err = self.box.workdir / f"{name}.stderr"
        with err.open("w") as fh:
            proc = self.box.popen_on(1, [sys.executable, "-m", "glm45_launch", *args], cwd=str(self.checkout),
                                     stdout=subprocess.DEVNULL, stderr=fh, text=True, stdin=subprocess.DEVNULL,
                                     env=self.box.host_environ(1))
        return proc, err

    def launch(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self.box.run_on(1, [sys.executable, "-m", "glm45_launch", *args], cwd=str(self.checkout),
                               capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                               env=self.box.host_environ(1))

    def events(self) -> list[dict]:
        path = self.checkout / standin_trainer.REPORT
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def wait_for(self, what: str, test: object, proc: subprocess.Popen[str], err: Path, timeout: float = 150) -> None:
        deadline = time.monotonic() + timeout
        while not test():  # type: ignore[operator]
            assert proc.poll() is None, f"launcher exited early:\n{err.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"never saw {what}:\n{err.read_text()[-3000:]}"
            time.sleep(0.3)


@pytest.fixture
def rack(rackbox: RackBox) -> Rack:
    rackbox.reset()
    checkout = rackbox.workdir / "checkout"
    checkout.mkdir(exist_ok=True)
    shutil.copy(standin_trainer.__file__, checkout / "standin_trainer.py")
    (checkout / standin_trainer.REPORT).unlink(missing_ok=True)
    ckpt = rackbox.workdir / "ckpt"
    shutil.rmtree(ckpt, ignore_errors=True)
    make_base_dir(rackbox.workdir / "base")
    yield Rack(rackbox, checkout, rackbox.hostfile(rackbox.workdir / "hostfile"), rackbox.workdir / "runs", ckpt)
    rackbox.reset()


def _kill_raylet(box: RackBox, host: int) -> int:
    """SIGKILL the raylet of one box host, by PID (as an OOM killer or a crash would)."""
    for pid in box.user_pids(host):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "raylet":
                os.kill(pid, signal.SIGKILL)
                return pid
        except OSError:
            continue
    raise AssertionError(f"no raylet on h{host}")


def _finish(proc: subprocess.Popen[str], err: Path, timeout: float) -> str:
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return err.read_text()


def _iterations(events: list[dict]) -> list[int]:
    return [e["iteration"] for e in events if e["event"] == "iteration"]


def test_a_lost_node_is_restarted_from_the_last_checkpoint(rack: Rack) -> None:
    box = rack.box
    lost = box.hosts[2]
    t0 = time.monotonic()
    proc, err = rack.start(rack.up_args("lost-node", "--max-restarts", "2", "--host-wait", "60"), "lost-node")
    rack.wait_for("an iteration", lambda: _iterations(rack.events()), proc, err)
    # Another shell on the head attaches to the run: it must follow it across the restart.
    attach_out = box.workdir / "attach.stdout"
    with attach_out.open("w") as fh:
        attach = box.popen_on(1, [sys.executable, "-m", "glm45_launch", "attach", "--runs", str(rack.runs)],
                              cwd=str(rack.checkout), stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              env=box.host_environ(1))
    rack.wait_for("three iterations", lambda: len(_iterations(rack.events())) >= 3, proc, err)
    _kill_raylet(box, 3)
    fault_at = time.time()
    # status right away: the node with no raylet is not "in the cluster", whatever Ray still says.
    state = json.loads(rack.launch("status", "--hostfile", str(rack.hostfile), "--json", *rack.ssh_args()).stdout)
    assert state["hosts"][2]["health"].startswith("LOST"), state["hosts"][2]
    out = _finish(proc, err, timeout=240)
    took = time.monotonic() - t0
    assert proc.returncode == 0, out[-4000:]
    assert "Traceback" not in out
    events = rack.events()
    starts = [e for e in events if e["event"] == "start"]
    second = events.index(starts[1])
    # The last checkpoint of the first attempt (every 2 iterations; the fault may land while one saves).
    saved = max(i for i in _iterations(events[:second]) if i % 2 == 0)
    # The output names the lost host and what was seen, then the restart and where it resumed.
    assert f"node lost: {lost}: raylet not running" in out, out[-4000:]
    assert "attempt 2 of at most 3" in out and f"resuming from iteration {saved}" in out
    assert [s["resumed_from"] for s in starts] == [0, saved]
    # The trainer never fails on a lost peer: it hangs, like NCCL, once Ray tells it (unless the
    # watch stopped the job first: the watch's pgrep can beat Ray's own notice of the dead worker).
    assert not any(e["event"] == "crash" for e in events), "the trainer should hang, like NCCL, not fail"
    hung = any(e["event"] == "hang" for e in events)
    assert sorted(set(_iterations(events))) == list(range(1, ITERATIONS + 1))  # all N iterations, none skipped
    # The restart redid what the last checkpoint did not hold, and went on to the end.
    assert _iterations(events[second:]) == list(range(saved + 1, ITERATIONS + 1))
    assert events[-1]["event"] == "done"

    run = rack.runs / "lost-node"
    attempts = json.loads((run / "attempts.json").read_text())
    assert [a["outcome"] for a in attempts][1:] == ["succeeded"] and len(attempts) == 2
    assert attempts[0]["outcome"].startswith(f"node lost: {lost}")
    assert attempts[1]["resumed_from"] == str(saved) and attempts[1]["duration_s"] > 0
    log = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    detected = next(e for e in log if e["event"] == "fault-detected")
    stopped = next(e for e in log if e["event"] == "job-stopped")
    assert detected["host"] == lost and detected["t"] - fault_at < 30
    assert stopped["t"] >= detected["t"]
    summary = (run / "diagnostics" / "attempt-1" / "summary.txt").read_text()
    assert f"{lost}: raylet NOT running" in summary and "driver log:" in summary
    driver_log = (run / "diagnostics" / "attempt-1" / "driver.log").read_text()
    assert "iteration 3/" in driver_log and ("lost a peer" in driver_log) == hung

    # status: per node alive/raylet/GPUs, the jobs with state and runtime; logs of the last job.
    status = rack.launch("status", "--hostfile", str(rack.hostfile), "--json", "--runs", str(rack.runs),
                         *rack.ssh_args())
    state = json.loads(status.stdout)
    assert [(h["ray_state"], h["ray_running"], h["gpus"], h["health"]) for h in state["hosts"]] == \
        [("ALIVE", True, 8, "ok")] * 3
    # The restart made a new cluster: it knows the job of the second attempt only.
    assert [(j["id"], j["status"]) for j in state["jobs"]] == [(attempts[1]["job_id"], "SUCCEEDED")]
    assert state["jobs"][0]["runtime_s"] > 0 and state["current_job"] == attempts[1]["job_id"]
    logs = rack.launch("logs", "--runs", str(rack.runs))
    assert logs.returncode == 0 and f"trained {ITERATIONS} iterations (resumed from {saved})" in logs.stdout
    # attach followed the first job, then the restart's, and ended with the run.
    assert _finish(attach, attach_out, timeout=60) and attach.returncode == 0, attach_out.read_text()[-3000:]
    followed = attach_out.read_text()
    assert ("lost a peer" in followed) == hung and f"trained {ITERATIONS} iterations" in followed
    assert f"attached to job {attempts[0]['job_id']}" in followed and f"attached to job {attempts[1]['job_id']}" in followed
    # collect, any time: one line per node and the last job's driver log.
    coll = rack.launch("collect", "--hostfile", str(rack.hostfile), "--base-dir", str(box.workdir / "base"),
                       "--runs", str(rack.runs), *rack.ssh_args())
    assert coll.returncode == 0, coll.stderr[-3000:]
    (where,) = (run / "diagnostics").glob("collect-*")
    assert [ln.split(":")[0] for ln in (where / "summary.txt").read_text().splitlines()[:3]] == box.hosts
    assert f"trained {ITERATIONS} iterations" in (where / "driver.log").read_text()
    print(f"lost node, one restart, {ITERATIONS} iterations: {took:.1f}s; "
          f"detected {detected['t'] - fault_at:.1f}s, stopped {stopped['t'] - fault_at:.1f}s after the fault")


def test_a_node_that_does_not_come_back(rack: Rack) -> None:
    box = rack.box
    gone = box.hosts[2]
    proc, err = rack.start(rack.up_args("gone", "--max-restarts", "1", "--host-wait", "4",
                                        iterations=100), "gone")
    rack.wait_for("two iterations", lambda: len(_iterations(rack.events())) >= 2, proc, err)
    box.stop_sshd(3)  # the host goes down: no sshd, no processes
    box.kill_all(3)
    out = _finish(proc, err, timeout=180)
    assert proc.returncode == 1, out[-4000:]
    last = out.strip().splitlines()[-1]
    assert last.startswith(f"glm45-launch: error: node gone: {gone}: did not come back within 4s"), last
    assert "Traceback" not in out
    diag = rack.runs / "gone" / "diagnostics" / "attempt-1"
    lines = {ln.split(":")[0]: ln for ln in (diag / "summary.txt").read_text().splitlines()}
    assert "no evidence" in lines[gone] and "cannot connect" in lines[gone]
    assert "raylet running" in lines[box.hosts[1]] and (diag / "driver.log").stat().st_size > 0
    assert json.loads((rack.runs / "gone" / "attempts.json").read_text())[0]["outcome"].startswith(
        f"node lost: {gone}")


def test_restarts_exhausted(rack: Rack) -> None:
    """Both attempts fail: exit 1 with the last failure. With --hold-workers, the failed attempt's
    held sessions end with it, so the restart holds each worker once, and none is left at the end."""
    box = rack.box
    proc, err = rack.start(rack.up_args("exhausted", "--hold-workers", "--max-restarts", "1", iterations=4,
                                        trainer="--standin-fail-at 3"), "exhausted")
    starts = lambda: [e for e in rack.events() if e["event"] == "start"]  # noqa: E731
    rack.wait_for("the first job", lambda: len(starts()) >= 1, proc, err)
    first = {h: _held(box, h) for h in (2, 3)}
    rack.wait_for("the restart's job", lambda: len(starts()) >= 2, proc, err, timeout=180)
    second = {h: _held(box, h) for h in (2, 3)}
    out = _finish(proc, err, timeout=240)
    assert proc.returncode == 1, out[-4000:]
    last = out.strip().splitlines()[-1]
    assert last.startswith("glm45-launch: error: restarts exhausted: 2 attempt(s) failed; the last: job failed"), last
    attempts = json.loads((rack.runs / "exhausted" / "attempts.json").read_text())
    assert [a["resumed_from"] for a in attempts] == [None, "2"]  # the second resumed from checkpoint 2
    for n in (1, 2):
        assert (rack.runs / "exhausted" / "diagnostics" / f"attempt-{n}" / "summary.txt").exists()
    assert [e["event"] for e in rack.events()].count("crash") == 2
    assert first == second == {2: 1, 3: 1}, (first, second)
    time.sleep(1)
    assert {h: _held(box, h) for h in (2, 3)} == {2: 0, 3: 0}


def _launcher_pid(box: RackBox) -> int:
    found = [p for p in box.user_pids(1) if b"glm45_launch" in Path(f"/proc/{p}/cmdline").read_bytes()
             and Path(f"/proc/{p}/comm").read_text().strip().startswith("python")]
    assert len(found) == 1, found
    return found[0]


def test_ctrl_c_during_a_restart_leaves_nothing_running(rack: Rack) -> None:
    box = rack.box
    proc, err = rack.start(rack.up_args("ctrl-c", "--max-restarts", "3", trainer="--standin-fail-at 1"), "ctrl-c")
    # The first attempt crashes at once; Ctrl-C while the restart starts the workers over SSH
    # (the fan-out closes the run's connections: the teardown must still reach every worker).
    rack.wait_for("the restart", lambda: "attempt 2 of at most 4" in err.read_text(), proc, err, timeout=150)
    rack.wait_for("the restart's workers", lambda: err.read_text().count("worker(s) over SSH") >= 2, proc, err)
    time.sleep(2)
    os.kill(_launcher_pid(box), signal.SIGINT)
    out = _finish(proc, err, timeout=120)
    assert proc.returncode == 130, out[-4000:]
    assert "no restart" in out and "attempt 3" not in out
    deadline = time.monotonic() + 20
    while any(box.user_pids(h) for h in (1, 2, 3)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ray_processes(box) == []
    left = {h: [Path(f"/proc/{p}/cmdline").read_bytes()[:80] for p in box.user_pids(h)] for h in (1, 2, 3)}
    assert left == {1: [], 2: [], 3: []}, left


def _running(box: RackBox, host: int, needle: bytes) -> bool:
    """A process on one box host whose command line holds ``needle``."""
    for pid in box.user_pids(host):
        try:
            if needle in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" "):
                return True
        except OSError:
            continue
    return False


@pytest.mark.parametrize(("phase", "restarts", "sig"), [
    ("head", (), signal.SIGTERM), ("workers", (), signal.SIGINT), ("workers", ("--max-restarts", "1"), signal.SIGHUP),
    ("job", ("--max-restarts", "1"), signal.SIGTERM),
], ids=["sigterm-head-start", "ctrl-c-worker-start", "sighup-worker-start-with-restarts", "sigterm-job-with-restarts"])
def test_a_signal_leaves_nothing_running_and_complete_records(rack: Rack, phase: str, restarts: tuple[str, ...],
                                                              sig: signal.Signals) -> None:
    """Ctrl-C, SIGTERM or SIGHUP while the cluster starts (the head's `ray start`, or the workers'
    still running over SSH) or, with restarts, while the job runs: Ray is stopped where it was
    started (or a start was in flight), nothing is left, and the run's records are complete."""
    box = rack.box
    proc, err = rack.start(rack.up_args("signal", *restarts, iterations=100), "signal")
    if phase == "head":
        rack.wait_for("the head's ray start", lambda: _running(box, 1, b"ray start --head"), proc, err, timeout=120)
    elif phase == "workers":
        rack.wait_for("the workers' ray start", lambda: all(_running(box, h, b"ray start --address") for h in (2, 3)),
                      proc, err, timeout=120)
    else:
        rack.wait_for("two iterations", lambda: len(_iterations(rack.events())) >= 2, proc, err)
    os.kill(_launcher_pid(box), sig)
    out = _finish(proc, err, timeout=120)
    deadline = time.monotonic() + 20
    while any(box.user_pids(h) for h in (1, 2, 3)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ray_processes(box) == [], out[-3000:]
    left = {h: [Path(f"/proc/{p}/cmdline").read_bytes()[:80] for p in box.user_pids(h)] for h in (1, 2, 3)}
    assert left == {1: [], 2: [], 3: []}, (left, out[-3000:])
    assert proc.returncode == 128 + sig, out[-4000:]
    what = "Ctrl-C" if sig == signal.SIGINT else sig.name
    assert out.strip().splitlines()[-1] == f"glm45-launch: error: interrupted ({what})", out[-3000:]
    assert "Traceback" not in out and "still running" not in out, out[-4000:]
    assert ("submitted successfully" in out) == (phase == "job")
    run = rack.runs / "signal"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["state"] == "interrupted" and summary["exit_code"] == 128 + sig
    assert json.loads((run / "attempts.json").read_text())[-1]["outcome"] == "interrupted"
    assert "interrupted" in [json.loads(line)["event"] for line in (run / "events.jsonl").read_text().splitlines()]


def test_down_from_another_shell_ends_a_run_with_restarts(rack: Rack) -> None:
    """`glm45-launch down` while `up --max-restarts` runs: the run ends, says who stopped it, and
    nothing restarts (the lock's refusal tells users to stop a running up this way)."""
    box = rack.box
    proc, err = rack.start(rack.up_args("downed", "--max-restarts", "2", iterations=100), "downed")
    rack.wait_for("two iterations", lambda: len(_iterations(rack.events())) >= 2, proc, err)
    down = rack.launch("down", "--hostfile", str(rack.hostfile), "--runs", str(rack.runs), *rack.ssh_args())
    assert down.returncode == 0, down.stderr[-2000:]
    assert "told to stop, without a restart" in down.stderr
    out = _finish(proc, err, timeout=120)
    assert proc.returncode == 1, out[-4000:]
    last = out.strip().splitlines()[-1]
    assert last.startswith("glm45-launch: error: stopped: by glm45-launch down (pid "), last
    assert "attempt 2" not in out
    assert len(json.loads((rack.runs / "downed" / "attempts.json").read_text())) == 1
    assert json.loads((rack.runs / "downed" / "summary.json").read_text())["state"] == "stopped"
    time.sleep(1)
    assert ray_processes(box) == []


def _held(box: RackBox, host: int) -> int:
    """The held ssh sessions' commands (``cat``) on one box host."""
    count = 0
    for pid in box.user_pids(host):
        try:
            count += Path(f"/proc/{pid}/comm").read_text().strip() == "cat"
        except OSError:
            continue
    return count
