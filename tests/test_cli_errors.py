"""Every command as a hostile user runs it, in a subprocess: one line ``glm45-launch: error: ...``
naming the culprit and exit 2 (bad input) or 1 (a failure); never a traceback, never exit 70.

No Ray runs here: the job server is a refused loopback port, a port that accepts and never
answers, or a few lines of HTTP that answer as Ray's job server does for a job it does not know.
"""

from __future__ import annotations

import http.server
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cli_plan import ROOT, error_line, run_cli

RACK = str(ROOT / "hostfiles/rack-8x8.hostfile")
ENV = {"BASE_DIR": "/data", "MLP_WORKER_0_HOST": "10.0.0.1"}


def _refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def refused() -> str:
    return f"http://127.0.0.1:{_refused_port()}"


@pytest.fixture
def silent() -> Iterator[str]:
    """A port that accepts connections and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


class _NoJobs(http.server.BaseHTTPRequestHandler):
    """Ray's job server as the job SDK sees it, knowing no job."""

    def do_GET(self) -> None:
        known = self.path == "/api/version"
        body = json.dumps({"ray_version": "2.60.0", "version": "4"} if known else {}).encode()
        self.send_response(200 if known else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def nojobs() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NoJobs)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _runs(tmp: Path, job_id: bytes | None, plan: str | None = None) -> Path:
    run = tmp / "runs" / "r1"
    run.mkdir(parents=True)
    if job_id is not None:
        (run / "job_id").write_bytes(job_id)
    if plan is not None:
        (run / "plan.json").write_text(plan)
    return tmp / "runs"


# (id, the runs/ content: job_id bytes or None, plan.json, args, message ({runs}, {address}), exit code)
JOB_CASES = [
    ("no-runs", "absent", None, ["logs"], "no run directory with a job under {cwd}/runs: give a JOB id, --run-dir or "
     "--runs (where `up` wrote its runs)", 2),
    ("run-without-job", None, None, ["stop"], "no run directory with a job under {cwd}/runs: give a JOB id, "
     "--run-dir or --runs (where `up` wrote its runs)", 2),
    ("empty-job-id", b"", None, ["attach"], "runs/r1: no job_id (the run submitted no job)", 2),
    ("binary-job-id", b"\xff\xfe\x00x", None, ["logs"],
     "runs/r1/job_id: not UTF-8 text (a damaged job_id file: give the JOB id)", 2),
    ("run-dir-missing", "absent", None, ["logs", "--run-dir", "nowhere"],
     "Invalid value for '--run-dir': Directory 'nowhere' does not exist.", 2),
    ("runs-is-a-file", "absent", None, ["stop", "--runs", RACK],
     f"Invalid value for '--runs': Directory '{RACK}' is a file.", 2),
    ("no-server", b"raysubmit_1\n", None, ["logs", "--address", "{refused}"],
     "no Ray job server answers at {refused} (is the cluster up? --address names another)", 1),
    ("no-server-from-plan", b"raysubmit_1\n", '{"cluster": {"job_address": "{refused}"}}', ["stop"],
     "no Ray job server answers at {refused} (is the cluster up? --address names another)", 1),
    ("damaged-plan", b"raysubmit_1\n", '{"cluster": 5}', ["attach", "--address", "{refused}"],
     "no Ray job server answers at {refused} (is the cluster up? --address names another)", 1),
    ("no-such-job", "absent", None, ["logs", "raysubmit_nope", "--address", "{nojobs}"],
     "job raysubmit_nope: no such job at {nojobs}", 2),
    ("bad-address", "absent", None, ["stop", "J", "--address", "not a url"],
     "job server address 'not a url': Invalid address format: not a url", 2),
]


@pytest.mark.parametrize(("runs", "plan", "args", "message", "code"), [c[1:] for c in JOB_CASES],
                         ids=[c[0] for c in JOB_CASES])
def test_job_commands(tmp_path: Path, refused: str, nojobs: str, runs: bytes | str | None, plan: str | None,
                      args: list[str], message: str, code: int) -> None:
    fill = {"refused": refused, "nojobs": nojobs, "cwd": str(tmp_path)}
    if runs != "absent":
        _runs(tmp_path, runs, plan.replace("{refused}", refused) if plan else None)
    proc = run_cli([a.format(**fill) for a in args], tmp_path)
    assert error_line(proc) == message.format(**fill)
    assert proc.returncode == code


def test_silent_job_server_is_bounded(tmp_path: Path, silent: str) -> None:
    start = time.monotonic()
    proc = run_cli(["logs", "--follow", "J", "--address", silent], tmp_path)
    assert error_line(proc) == f"the Ray job server at {silent} did not answer within 10s"
    assert proc.returncode == 1 and time.monotonic() - start < 30


@pytest.mark.parametrize("command", [["logs", "--follow"], ["attach"], ["stop"]])
def test_ctrl_c_while_asking_is_one_line(tmp_path: Path, silent: str, command: list[str]) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "glm45_launch", *command, "J", "--address", silent], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={"PYTHONPATH": str(ROOT)})
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert (proc.returncode, out, err) == (130, "", "glm45-launch: interrupted\n")


# (id, args, env, message): every one exits 2.
USAGE_CASES = [
    ("nan-seconds", ["plan", "--host-wait", "nan"], {}, "Invalid value for '--host-wait': 'nan' is not a finite number."),
    ("huge-seconds", ["up", "--health-timeout", "1e300"], {},
     "Invalid value for '--health-timeout': 1e+300 is not in the range 0.1<=x<=2592000.0."),
    ("inf-seconds", ["up", "--dry-run", "--connect-timeout", "inf"], {},
     "Invalid value for '--connect-timeout': 'inf' is not a finite number."),
    ("nan-join", ["up", "--dry-run", "--join-timeout", "nan"], {},
     "Invalid value for '--join-timeout': 'nan' is not a finite number."),
    ("ssh-port-0", ["up", "--dry-run", "--ssh-port", "0"], {},
     "Invalid value for '--ssh-port': 0 is not in the range 1<=x<=65535."),
    ("ssh-port-big", ["status", "--ssh-port", "70000"], {},
     "Invalid value for '--ssh-port': 70000 is not in the range 1<=x<=65535."),
    ("restarts-no-wait", ["plan", "--no-wait", "--max-restarts", "1", "--checkpoint-dir", "/c"], {},
     "--max-restarts needs to wait for the job (drop --no-wait)"),
    ("restarts-no-load", ["up", "--dry-run", "--max-restarts", "1"], {},
     "--max-restarts: the train args have no --load, so a restart would start again from --ref-load: give "
     "--checkpoint-dir DIR (adds --load/--save DIR)"),
    ("no-watch-stall", ["plan", "--no-watch", "--stall-timeout", "60"], {},
     "--stall-timeout with --no-watch: the health watch is off; drop one of them"),
    ("no-wait-interval", ["up", "--dry-run", "--no-wait", "--health-interval", "5"], {},
     "--health-interval with --no-wait: up returns once the job is submitted: no health watch, no restart; "
     "drop one of them"),
    ("no-collect-timeout", ["plan", "--no-collect", "--collect-timeout", "5"], {},
     "--collect-timeout with --no-collect: no diagnostics are collected; drop one of them"),
    ("job-not-utf8", ["logs", "J\udcff"], {}, "Invalid value for '[JOB]': is not UTF-8 text: 'J\\xff'"),
    ("env-not-utf8", ["plan"], {"BASE_DIR": "/da\udcffta"},
     "Invalid value for '--base-dir': $BASE_DIR is not UTF-8 text: '/da\\xffta'"),
    ("env-head-garbage", ["plan"], {"MLP_WORKER_0_HOST": ";reboot"},
     "--head: ';reboot' is not an IPv4/IPv6 address or a DNS name"),
]


@pytest.mark.parametrize(("args", "env", "message"), [c[1:] for c in USAGE_CASES], ids=[c[0] for c in USAGE_CASES])
def test_usage(tmp_path: Path, args: list[str], env: dict[str, str], message: str) -> None:
    full = {**ENV, **env}
    # Non-UTF-8 bytes reach Python as lone surrogates; the child gets the bytes themselves.
    argv = [a.encode("utf-8", "surrogateescape") for a in args]
    if args[0] != "logs":
        argv += [b"--hostfile", RACK.encode()]
    proc = subprocess.run([sys.executable.encode(), b"-m", b"glm45_launch", *argv], cwd=tmp_path, capture_output=True,
                          timeout=60, stdin=subprocess.DEVNULL,
                          env={b"PYTHONPATH": str(ROOT).encode(), b"LC_ALL": b"C.UTF-8", b"PATH": b"/usr/bin:/bin",
                               **{k.encode(): v.encode("utf-8", "surrogateescape") for k, v in full.items()}})
    done = subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode())
    assert error_line(done) == message
    assert done.returncode == 2


def test_plan_equals_up_dry_run(tmp_path: Path) -> None:
    args = ["--hostfile", RACK, "--max-restarts", "2", "--checkpoint-dir", "/c", "--stall-timeout", "30", "--no-overlap"]
    plan = run_cli(["plan", *args], tmp_path, ENV)
    up = run_cli(["up", "--dry-run", *args], tmp_path, ENV)
    assert plan.returncode == up.returncode == 0 and plan.stderr == up.stderr == ""
    assert plan.stdout == up.stdout
