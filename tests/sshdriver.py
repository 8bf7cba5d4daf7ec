"""The launcher's SSH layer driven from a rack-in-a-box host, for tests/test_ssh_pool.py.

Run on the head (``box.run_on(1, [python, sshdriver.py, SCENARIO, CONFIG_JSON])``); prints one
JSON line with what happened. CONFIG: identity, known_hosts, hosts, log_dir, and per scenario
extras. Scenarios use the library exactly as a run does: one ``Runtime.real`` for everything.
"""

from __future__ import annotations

import json
import resource
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from glm45_launch.runtime.fanout import run_on_hosts
from glm45_launch.runtime.ssh import SshOptions, SshRunner


def _runner(cfg: dict[str, Any], **extra: Any) -> SshRunner:
    return SshRunner(SshOptions(identity=(cfg["identity"],), known_hosts=(cfg["known_hosts"],), retries=2,
                                backoff_s=0.2, connect_timeout=5, **extra))


def _log(cfg: dict[str, Any]) -> Any:
    return lambda host: Path(cfg["log_dir"]) / f"{host}.log"


def phases(cfg: dict[str, Any]) -> dict[str, Any]:
    """Four phases over every host (like preflight, cleanup, start, teardown): one connection each."""
    ssh = _runner(cfg, accept_new_host_keys=cfg.get("accept_new", False))
    out = []
    for phase in ("probe", "cleanup", "start", "stop"):
        res = run_on_hosts(ssh, [(h, f"echo {phase} on $(hostname)") for h in cfg["hosts"]], 64, _log(cfg))
        out.append({h: (r.exit_code, r.output_tail) for h, r in res.items()})
    ssh.close_all()
    return {"phases": out}


def lost(cfg: dict[str, Any]) -> dict[str, Any]:
    """A command whose connection dies under it is not run again; the next command reconnects."""
    ssh = _runner(cfg)
    host, log = cfg["hosts"][0], _log(cfg)(cfg["hosts"][0])
    first = ssh.run(host, "echo one >> /tmp/ran-once", log)
    # The sshd session serving us dies while the command runs (a host's sshd restarted, a reset).
    killed = ssh.run(host, "echo two >> /tmp/ran-once; pkill -9 -f 'sshd.*notty'; sleep 5", log)
    after = ssh.run(host, "echo three >> /tmp/ran-once; cat /tmp/ran-once", log)
    return {"first": [first.exit_code, first.error], "killed": [killed.exit_code, killed.error, killed.attempts],
            "after": [after.exit_code, after.error, after.output_tail]}


def interrupt(cfg: dict[str, Any]) -> dict[str, Any]:
    """Ctrl-C while every host runs a long command: all connections close at once."""
    ssh = _runner(cfg)
    started: list[str] = []
    sigint_at = [0.0]
    lock = threading.Lock()

    def on_line(host: str) -> Any:
        def echo(line: str) -> None:
            with lock:  # the test sends SIGINT once every host said it started: no race
                started.append(host)
                print(f"started {host}", flush=True)
        return echo

    def on_sigint(*_: Any) -> None:
        sigint_at[0] = time.monotonic()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)
    print("ready", flush=True)
    try:
        run_on_hosts(ssh, [(h, "echo started; sleep 60") for h in cfg["hosts"]], 64, _log(cfg),
                     echo_for=on_line)
    except KeyboardInterrupt:
        return {"returned_after_s": time.monotonic() - sigint_at[0], "started": sorted(started)}
    return {"returned_after_s": None}


def output(cfg: dict[str, Any]) -> dict[str, Any]:
    """Huge output is streamed into the log in bounded pieces; lines arrive as they are printed."""
    ssh = _runner(cfg)
    host, log = cfg["hosts"][0], _log(cfg)(cfg["hosts"][0])
    seen: list[tuple[float, str]] = []
    start = time.monotonic()
    streamed = ssh.run(host, "echo first; sleep 2; echo second", log,
                       echo=lambda line: seen.append((time.monotonic() - start, line)))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    big = ssh.run(host, f"head -c {cfg['bytes']} /dev/zero | tr '\\0' x; seq 1 100000", log)
    grew_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    return {"seen": seen, "streamed": streamed.exit_code, "big": [big.exit_code, big.error],
            "tail_chars": sum(map(len, big.output_tail)), "tail_last": big.output_tail[-1:], "grew_kib": grew_kib}


if __name__ == "__main__":
    result = globals()[sys.argv[1]](json.loads(sys.argv[2]))
    print(json.dumps(result), flush=True)
