#!/usr/bin/env python3
"""The launcher's worker-start phase on its own, for bench/fanout.py: ``up``'s fan-out of
``plan.worker_steps`` through the same Runtime (one SshRunner, one connection per host).

    fanout_phase.py start|preflight+start HOSTFILE HEAD BASE_DIR IDENTITY KNOWN_HOSTS LOG_DIR [PARALLEL [SLOTS]]

``preflight+start``: preflight's probes, then the worker start, over the same connections, as
``up`` does. PARALLEL: commands in flight, SLOTS: SSH handshakes in flight (0: the defaults).
Exit 0 when every host succeeded.
"""

from __future__ import annotations

import sys
from pathlib import Path

from glm45_launch.checks.preflight_report import OK, PreflightOptions
from glm45_launch.core.builder import build_plan
from glm45_launch.core.hostfile import load_hostfile
from glm45_launch.core.plan import LaunchSpec
from glm45_launch.core.steps import DEFAULT_PARALLEL
from glm45_launch.runtime.runtime import Runtime
from glm45_launch.runtime.ssh import CONNECT_SLOTS, SshOptions
from glm45_launch.runtime.usecases import preflight


def main() -> int:
    phase, hostfile, head, base_dir, identity, known, logs = sys.argv[1:8]
    parallel = int(sys.argv[8]) if len(sys.argv) > 8 and sys.argv[8] != "0" else DEFAULT_PARALLEL
    slots = int(sys.argv[9]) if len(sys.argv) > 9 and sys.argv[9] != "0" else CONNECT_SLOTS
    plan = build_plan(LaunchSpec(hostfile=load_hostfile(hostfile), head=head, base_dir=base_dir, workdir=logs))
    rt = Runtime.real(SshOptions(identity=(identity,), known_hosts=(known,), connect_slots=slots), parallel=parallel)
    ok = True
    if phase == "preflight+start":
        report = preflight(plan, PreflightOptions(parallel=parallel, libs=False), Path(logs) / "preflight", rt)
        ok = all(c.status == OK for h in report.hosts for c in h.checks if c.name == "ssh")  # every host reached
    results = rt.steps(Path(logs) / "start", plan.head, echo=True).fan_out(plan.worker_steps)
    rt.remote.close_all()
    failed = len(results.failed)
    print(f"failed={failed}")
    return 0 if ok and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
