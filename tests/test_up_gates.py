"""`up`'s fast gates before it touches a host: the pure checks and sglang's option names."""

from __future__ import annotations

import importlib.util

import pytest

from glm45_launch.checks.libs import require_sglang_options
from glm45_launch.core.builder import build_plan
from glm45_launch.core.hostfile import parse_hostfile_text
from glm45_launch.core.overrides import build_overrides
from glm45_launch.core.plan import LaunchSpec
from glm45_launch.errors import LaunchError

HOSTS = "\n".join(f"10.0.0.{i} slots=8" for i in range(1, 9))


def _plan(**kw: object):
    return build_plan(LaunchSpec(hostfile=parse_hostfile_text(HOSTS), head="10.0.0.1", base_dir="/d", **kw))


@pytest.mark.skipif(importlib.util.find_spec("sglang") is None, reason="sglang not installed (CI installs it)")
def test_misspelt_sglang_option_stops_up() -> None:
    assert require_sglang_options(_plan()) == []
    bad = _plan(overrides=build_overrides(sets=["SGLANG.--sglang-mem-fraction-statc=0.5"]))
    with pytest.raises(LaunchError, match=r"--sglang-mem-fraction-statc is not an option of sglang .*"
                                          r"did you mean --sglang-mem-fraction-static\?"):
        require_sglang_options(bad)
    assert [p.flags for p in require_sglang_options(bad, force=True)] == [("--sglang-mem-fraction-statc",)]
