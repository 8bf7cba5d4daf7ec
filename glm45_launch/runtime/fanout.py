"""One command per host, many hosts at once, bounded: the launcher's ``&`` ... ``wait``."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from glm45_launch.runtime.interfaces import Echo, RemoteRunner
from glm45_launch.runtime.results import CommandResult, FanOutResult


def run_on_hosts(
    remote: RemoteRunner,
    jobs: Sequence[tuple[str, str]],
    parallel: int,
    log_path: Callable[[str], Path],
    echo_for: Callable[[str], Echo] | None = None,
    timeout_s: float | None = None,
    on_dispatch: Callable[[str], None] | None = None,
) -> FanOutResult:
    """Run (host, command) pairs with at most ``parallel`` at once; results in job order.

    One hung host cannot block the rest: each command has its own timeouts. The threads are
    daemons (a ThreadPoolExecutor's would be joined at exit, so Ctrl-C would wait for the
    slowest host); on Ctrl-C the open connections are closed and nothing new starts.
    """
    results: list[CommandResult | None] = [None] * len(jobs)
    slots = threading.BoundedSemaphore(max(1, parallel))
    stop = threading.Event()

    def work(i: int, host: str, command: str) -> None:
        try:
            if not stop.is_set():
                if on_dispatch:
                    on_dispatch(host)
                results[i] = remote.run(host, command, log_path(host), echo_for(host) if echo_for else None,
                                        timeout_s)
        finally:
            slots.release()

    threads = []
    try:
        for i, (host, command) in enumerate(jobs):
            slots.acquire()
            if stop.is_set():
                slots.release()
                break
            t = threading.Thread(target=work, args=(i, host, command), name=f"ssh-{host}", daemon=True)
            t.start()
            threads.append(t)
        for t in threads:
            while t.is_alive():
                t.join(0.2)
    except KeyboardInterrupt:
        stop.set()
        remote.close_all()
        raise
    return FanOutResult.of(r if r is not None else CommandResult(host=h, command=c, error="not run")
                           for r, (h, c) in zip(results, jobs, strict=True))
