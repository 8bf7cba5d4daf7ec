"""Every table fits 80 columns in a pipe: preflight's report, status's tables, an outcome table.

Real runs on the rack-in-a-box at COLUMNS=80 with stdout and stderr piped: no cell is cut to an
ellipsis and no line of a table or report is wider than 80. The one-line messages (the final
``glm45-launch: error: ...`` and the reporter's phase/warning lines) stay one line by design.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from boxhelpers import make_base_dir

from glm45_launch.runtime.table_fit import FitTable
from glm45_launch.testing.rackbox import RackBox

REPO = Path(__file__).resolve().parent.parent
WIDTH = 80


def table_lines(text: str, messages: tuple[str, ...] = ()) -> list[str]:
    """The output's lines but the one-line messages (the error line, the reporter's lines that
    start with one of ``messages``)."""
    return [ln for ln in text.splitlines() if not ln.startswith(("glm45-launch: error:", *messages))]


def assert_fits(text: str, messages: tuple[str, ...] = ()) -> None:
    assert "…" not in text, text
    wide = [ln for ln in table_lines(text, messages) if len(ln) > WIDTH]
    assert not wide, "\n".join(wide)


def test_fit_table_keeps_every_cell_whole() -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="hosts")
    for col in ("host", "reachable", "raylet process", "Ray's node table", "GPUs", "health"):
        table.add_column(col)
    long = "no (ssh: connection refused by 10.123.0.3:22, /tmp/" + "x" * 90 + "/known_hosts)"
    table.add_row("10.123.0.3", long, "no", "-", "0", "unreachable")
    table.add_row("10.123.0.1", "yes", "yes", "ALIVE", "8", "ok")
    for width, rows in ((80, 2), (400, 0)):
        out = io.StringIO()
        Console(file=out, width=width, soft_wrap=True).print(FitTable(table))
        text = out.getvalue()
        assert "…" not in text and max(len(ln) for ln in text.splitlines()) <= width, text
        assert "".join(text.split()).count("x" * 90) == 1  # folded, never cut
        assert sum(ln.startswith("10.123.0.") for ln in text.splitlines()) == rows, text  # narrow: a line a row
    out = io.StringIO()
    Console(file=out, width=80).print(FitTable(table))
    assert "10.123.0.1  reachable: yes; raylet process: yes; Ray's node table: ALIVE;\n  GPUs: 8; health: ok\n" \
        in out.getvalue()  # header: value, wrapped at a space


@pytest.fixture(scope="module")
def box(rackbox: RackBox) -> Iterator[RackBox]:
    rackbox.reset()
    yield rackbox
    rackbox.reset()


def _on_head(box: RackBox, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in box.host_environ(1).items() if k not in ("COLUMNS", "LINES")}
    return box.run_on(1, [sys.executable, "-m", "glm45_launch", *args], env={**env, "COLUMNS": str(WIDTH)},
                      cwd=str(cwd), capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def _ssh(box: RackBox) -> list[str]:
    return ["--identity", str(box.identity), "--known-hosts", str(box.known_hosts)]


@pytest.mark.rackbox
def test_preflight_status_and_down_fit_80_columns(box: RackBox) -> None:
    work = box.workdir / "width"
    checkout = work / "checkout-with-a-long-name-so-that-every-path-is-longer-than-the-screen-is-wide"
    shadow = checkout / "shadow"
    (shadow / "ray").mkdir(parents=True, exist_ok=True)
    (shadow / "ray" / "__init__.py").write_text('raise ImportError("shadowed ray: a broken module on PYTHONPATH")\n')
    shutil.copy(REPO / "glm45_launch" / "testing" / "smoke_entry.py", checkout / "smoke_entry.py")
    for k in range(1, box.n_hosts + 1):
        make_base_dir(box.host_dir(k) / "tmp" / "base")
    hostfile = box.hostfile(work / "hostfile")

    pf = _on_head(box, "preflight", "--no-libs", "--hostfile", str(hostfile), "--base-dir", "/tmp/base",
                  "--workdir", str(checkout), "--entry", "smoke_entry.py", "--actor-num-nodes", "3",
                  "--env", f"PYTHONPATH={shadow}", *_ssh(box), cwd=checkout)
    text = pf.stdout + pf.stderr
    assert pf.returncode == 1 and "Traceback" not in text, text[-3000:]
    assert_fits(text)
    assert "cannot import ray: ImportError: shadowed ray" in " ".join(text.split())
    assert "preflight failed: 3 host(s)" in text
    for host in box.hosts:  # narrow: one line per host names its failing groups
        assert any(ln.startswith(f"{host} (") and "FAIL imports" in ln for ln in text.splitlines()), text

    box.stop_sshd(3)  # a long error in a cell: status's table and down's outcome table wrap it, whole
    try:
        status = _on_head(box, "status", "--hostfile", str(hostfile), *_ssh(box), cwd=work)
        assert status.returncode == 1 and "Traceback" not in status.stderr, status.stderr
        assert_fits(status.stdout + status.stderr, ("cluster at ",))
        assert f"hosts of {hostfile}" in " ".join(status.stderr.split())
        down = _on_head(box, "down", "--hostfile", str(hostfile), *_ssh(box), cwd=work)
        assert "Traceback" not in down.stderr, down.stderr
        assert_fits(down.stdout + down.stderr, ("[",))  # [host] output lines are the hosts' own
        assert "glm45-launch down" in down.stderr and box.hosts[2] in down.stderr
    finally:
        box.start_sshd(3)
    print(pf.stderr, status.stderr, down.stderr, sep="\n----\n")
