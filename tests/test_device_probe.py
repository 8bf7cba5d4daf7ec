"""Preflight's GPU judgement on what the probe really printed on a GPU node.

``data/device/`` was recorded on a 2 x H200 machine (NVLink between the GPUs) by running the
package's probe program there (``python3 -c <programs/probe.py> CONFIG``) and ``nvidia-smi topo -m``.
"""

from __future__ import annotations

from pathlib import Path

from glm45_launch.checks.host_checks import gpu_checks, nvlink_labels
from glm45_launch.checks.preflight import parse_probe_output
from glm45_launch.checks.preflight_report import FAIL, OK

DATA = Path(__file__).parent / "data" / "device"


def _facts() -> dict:
    facts = parse_probe_output((DATA / "probe-h200-x2.txt").read_text().splitlines())
    assert facts is not None
    return facts


def test_the_real_topology_shows_nvlink() -> None:
    topo = (DATA / "topo-h200-x2.txt").read_text()
    assert "\x1b[4m" in topo  # nvidia-smi underlines the header: the parser must not care
    assert nvlink_labels(topo) == ["NV18"]


def test_a_real_two_gpu_node() -> None:
    checks = {c.name: c for c in gpu_checks(_facts(), expected=2, require=True)}
    assert (checks["gpus"].status, checks["gpus"].detail) == (OK, "2 GPUs")
    assert (checks["nvlink"].status, checks["nvlink"].detail) == (OK, "NVLink NV18")


def test_a_real_node_with_fewer_gpus_than_planned() -> None:
    checks = {c.name: c for c in gpu_checks(_facts(), expected=8, require=True)}
    assert (checks["gpus"].status, checks["gpus"].detail) == (FAIL, "2 GPUs, expected 8 per node")
    trainer = {c.name: c for c in gpu_checks(_facts(), expected=2, require=True, trainer=8)}["gpus"]
    assert trainer.status == FAIL and "--num-gpus-per-node is 8" in trainer.detail
