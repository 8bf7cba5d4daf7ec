"""The recorder's programs are package files that linters pass, loaded as package data.

bash -n and shellcheck on every ``*.bash``/``*.sh`` program of the package, ruff on every
Python one. Without shellcheck the check is skipped, unless CI=true: then it fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "glm45_launch"
PROGRAMS = sorted(p for p in PKG.rglob("*") if "programs" in p.parts and p.suffix in (".bash", ".sh", ".py")
                  and "__pycache__" not in p.parts)
SHELL = [p for p in PROGRAMS if p.suffix in (".bash", ".sh")]
PYTHON = [p for p in PROGRAMS if p.suffix == ".py"]


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def test_the_recorder_has_its_programs() -> None:
    names = {p.name for p in SHELL if p.parent == PKG / "sandbox" / "programs"}
    assert {"profile.bash", "record.bash", "init.bash"} <= names
    for name in names:  # loadable the way rootdir.py loads them (a zip install too)
        assert resources.files("glm45_launch.sandbox").joinpath("programs", name).read_text().startswith("#")


@pytest.mark.parametrize("program", SHELL, ids=[str(p.relative_to(PKG)) for p in SHELL])
def test_shell_program_passes_bash_n_and_shellcheck(program: Path) -> None:
    res = subprocess.run(["bash", "-n", str(program)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        if _ci():
            pytest.fail("shellcheck is not installed (CI=true: failing instead of skipping)", pytrace=False)
        pytest.skip("shellcheck is not installed")
    res = subprocess.run([shellcheck, "-x", "--severity=style", program.name], capture_output=True, text=True,
                         cwd=program.parent)
    assert res.returncode == 0, res.stdout + res.stderr


def test_python_programs_pass_ruff() -> None:
    if not PYTHON:
        pytest.skip("no Python program files")
    res = subprocess.run([sys.executable, "-m", "ruff", "check", *map(str, PYTHON)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_every_shellcheck_exception_says_why() -> None:
    for program in SHELL:
        for number, line in enumerate(program.read_text().splitlines(), 1):
            if "shellcheck disable=" in line:
                assert "#" in line.split("shellcheck disable=", 1)[1], f"{program}:{number}: give a reason"
