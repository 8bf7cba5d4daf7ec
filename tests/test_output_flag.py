"""One output flag (issue 16.6): ``--format text|json`` on every command that prints a report,
``--json`` a hidden alias of ``--format json``."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from glm45_launch.cli.main import cli

REPORTS = ("plan", "validate", "convert", "parity", "preflight", "status", "netcheck", "prepare")


@pytest.mark.parametrize("name", REPORTS)
def test_every_report_takes_format_and_hides_json(name: str) -> None:
    cmd = cli.commands[name]
    opts = {o.name: o for o in cmd.params if o.name == "fmt"}
    decls = [d for p in cmd.params if p.name == "fmt" for d in p.opts]
    assert "--format" in decls and "--json" in decls and opts
    helptext = CliRunner().invoke(cli, [name, "--help"]).output
    assert "--format" in helptext and "--json" not in helptext


def test_json_alias_gives_the_same_facts_as_format_json(tmp_path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("".join(f"10.0.0.{i} slots=8\n" for i in range(1, 9)))
    args = ["validate", "--hostfile", str(hosts), "--head", "10.0.0.1", "--base-dir", "/data"]
    a = CliRunner().invoke(cli, [*args, "--format", "json"])
    b = CliRunner().invoke(cli, [*args, "--json"])
    assert a.exit_code == b.exit_code and json.loads(a.stdout) == json.loads(b.stdout)
