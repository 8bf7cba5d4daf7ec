"""One command per host, many hosts at once, bounded: the launcher's ``&`` ... ``wait``.

How wide: ``--parallel`` commands in flight (default :data:`DEFAULT_PARALLEL`, one round for a
rack row of up to 256 hosts, two up to 512). Width costs little: a host in flight is one
thread blocked on its channel, holding at most the channel window (``sshhosts.WINDOW_BYTES``),
one partial line (``results.MAX_LINE``) and the result's tail (``results.TAIL_BYTES``); what
costs CPU, the SSH handshakes, is bounded separately (``sshhosts.CONNECT_SLOTS`` in flight).
``bench/fanout.py`` measured the choice.

Past :data:`LIVE_AFTER` hosts, hosts' output lines are not echoed one by one: a reporter that
offers a live board (``echo.fan_out_board``, see ``reporter.RichReporter``) shows one progress
line (done/total, failures, the latest line); every line still goes to the host's log.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from glm45_launch.runtime.interfaces import Echo, RemoteRunner
from glm45_launch.runtime.results import CommandResult, FanOutResult

LIVE_AFTER = 16  # more hosts than this: one progress line instead of their output lines


def _live_board(echo_for: Callable[[str], Echo] | None, jobs: Sequence[tuple[str, str]]) -> Any:
    """The reporter's live board for this fan-out, when it is wide and the reporter has one."""
    if echo_for is None or len(jobs) <= LIVE_AFTER:
        return None
    make = getattr(echo_for(jobs[0][0]), "fan_out_board", None)
    return make(len(jobs)) if make is not None else None


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
    board = _live_board(echo_for, jobs)

    def echo(host: str) -> Echo | None:
        if board is not None:
            return lambda text: board.line(host, text)
        return echo_for(host) if echo_for else None

    def work(i: int, host: str, command: str) -> None:
        try:
            if not stop.is_set():
                if on_dispatch:
                    on_dispatch(host)
                results[i] = res = remote.run(host, command, log_path(host), echo(host), timeout_s)
                if board is not None:
                    board.done(host, res.ok)
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
    finally:
        if board is not None:
            board.close()
    return FanOutResult.of(r if r is not None else CommandResult(host=h, command=c, error="not run")
                           for r, (h, c) in zip(results, jobs, strict=True))
