"""What comes out of a recording, read in bounded chunks: its frames, stdout and stderr.

The recording's processes write frames to one pipe (the format is documented in
``programs/record.bash``); its stdout and stderr are two more pipes. ``pump`` reads the three
(64 KiB at a time) until the process and every holder of the pipes are gone, the time runs
out or the output passes its byte limit; then it kills. Memory stays bounded whatever the
script prints: a stream keeps its first ``Capture.head_limit`` bytes and a tail, frames are
kept only up to the byte limit.
"""

from __future__ import annotations

import math
import os
import select
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field

FRAME_MARK = b"\x1eG45 "
CHUNK = 64 * 1024
_LINE_LIMIT = 8192  # no frame line is longer (4000 bytes); longer garbage is dropped


@dataclass
class Frame:
    """One message of the recording: ``kind`` (one letter), the sender's pid, the payload."""

    kind: str
    pid: str
    payload: bytes


class FrameReader:
    """Frames from a byte stream fed in arbitrary pieces. A continued payload (``C``) waits for
    its end (``E``) from the same sender; a line not ending in a frame is counted in ``garbled``
    (a script that writes to the frames' pipe only spoils its own recording)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._parts: dict[tuple[bytes, bytes], bytearray] = {}
        self.garbled = 0

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        out: list[Frame] = []
        while True:
            end = self._buf.find(b"\n")
            if end < 0:
                if len(self._buf) > _LINE_LIMIT:
                    del self._buf[: -len(FRAME_MARK)]
                    self.garbled += 1
                break
            line = bytes(self._buf[:end])
            del self._buf[: end + 1]
            frame = self._line(line)
            if frame is not None:
                out.append(frame)
        return out

    def _line(self, line: bytes) -> Frame | None:
        at = line.rfind(FRAME_MARK)
        if at != 0:
            self.garbled += 1
            if at < 0:
                return None
        fields = line[at + len(FRAME_MARK):].split(b" ", 3)
        if len(fields) < 3 or fields[2] not in (b"C", b"E"):
            self.garbled += 1
            return None
        kind, pid, more = fields[:3]
        payload = fields[3] if len(fields) == 4 else b""
        key = (kind, pid)
        if more == b"C":
            self._parts.setdefault(key, bytearray()).extend(payload)
            return None
        whole = bytes(self._parts.pop(key, b"")) + payload
        return Frame(kind.decode("ascii", "replace"), pid.decode("ascii", "replace"), whole)


@dataclass
class Capture:
    """One output stream: its first ``head_limit`` bytes and its last ``tail_limit``."""

    head_limit: int = 4 * 1024 * 1024
    tail_limit: int = 256 * 1024
    total: int = 0
    head: bytearray = field(default_factory=bytearray)
    tail: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            if len(self.tail) > 2 * self.tail_limit:
                del self.tail[: -self.tail_limit]

    def text(self) -> str:
        tail = bytes(self.tail[-self.tail_limit:])
        dropped = self.total - len(self.head) - len(tail)
        middle = f"\n[glm45-launch: {dropped} bytes of output not kept]\n".encode() if dropped else b""
        return (bytes(self.head) + middle + tail).decode("utf-8", "replace")


@dataclass
class Outcome:
    """How a pumped process ended and what it said."""

    frames: list[Frame]
    stdout: Capture
    stderr: Capture
    returncode: int
    timed_out: bool = False
    over_limit: str = ""  # why the output was cut off ("": it was not)
    garbled: int = 0


@dataclass
class Limits:
    """When ``pump`` stops a recording."""

    timeout: float
    output_bytes: int  # stdout + stderr + frames
    records: int  # argv records (R frames)
    drain: float = 2.0  # seconds to read what is left once the process is gone or killed


def pump(proc: subprocess.Popen[bytes], out_fd: int, err_fd: int, frames_fd: int, limits: Limits,
         kill: Callable[[], None]) -> Outcome:
    """Read ``proc``'s stdout, stderr and frames until every writer is gone; ``kill`` stops the
    recording (on timeout or when the output passes its limit). The three fds are closed on return.
    """
    deadline = time.monotonic() + limits.timeout
    reader = FrameReader()
    out, err = Capture(), Capture()
    sinks: dict[int, Callable[[bytes], None]] = {out_fd: out.feed, err_fd: err.feed}
    frames: list[Frame] = []
    records = 0
    total = 0
    timed_out = False
    over = ""
    stop_at = math.inf
    poller = select.poll()
    for fd in (out_fd, err_fd, frames_fd):
        os.set_blocking(fd, False)
        poller.register(fd, select.POLLIN)
    pidfd = _pidfd(proc)
    if pidfd is not None:
        poller.register(pidfd, select.POLLIN)
    live = {out_fd, err_fd, frames_fd}
    exited = False
    try:
        while live:
            now = time.monotonic()
            if not exited and not timed_out and now >= deadline:
                timed_out = True
                kill()
                stop_at = min(stop_at, now + limits.drain)
            if now >= stop_at:
                break
            wait = min(deadline if not (exited or timed_out) else math.inf, stop_at) - now
            if pidfd is None and not exited:
                wait = min(wait, 0.05)
            for fd, _ in poller.poll(max(0, math.ceil(wait * 1000))):
                if fd == pidfd:
                    poller.unregister(pidfd)
                    continue
                try:
                    data = os.read(fd, CHUNK)
                except BlockingIOError:
                    continue
                if not data:
                    poller.unregister(fd)
                    live.discard(fd)
                    continue
                if over:
                    continue  # drained, not kept
                total += len(data)
                if fd == frames_fd:
                    new = reader.feed(data)
                    records += sum(1 for f in new if f.kind == "R")
                    frames += new
                else:
                    sinks[fd](data)
                if total > limits.output_bytes or records > limits.records:
                    over = (f"its output passed {limits.output_bytes // (1024 * 1024)} MiB"
                            if total > limits.output_bytes else f"it recorded more than {limits.records} commands")
                    kill()
                    stop_at = min(stop_at, time.monotonic() + limits.drain)
            if not exited and proc.poll() is not None:
                exited = True
                stop_at = min(stop_at, time.monotonic() + limits.drain)
    finally:
        if pidfd is not None:
            os.close(pidfd)
        for fd in (out_fd, err_fd, frames_fd):
            os.close(fd)
    if proc.poll() is None:
        kill()
    returncode = proc.wait()
    return Outcome(frames, out, err, returncode, timed_out, over, reader.garbled)


def _pidfd(proc: subprocess.Popen[bytes]) -> int | None:
    try:
        return os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        return None
