"""The folders are the layers: what each may import, no circles, a pure core, programs as files."""

from __future__ import annotations

import ast
import inspect
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import glm45_launch
from glm45_launch.runtime import interfaces
from glm45_launch.runtime.hostfacts import LocalHostFacts
from glm45_launch.runtime.local import LocalRunner
from glm45_launch.runtime.ray_api import RayClient
from glm45_launch.runtime.reporter import RichReporter
from glm45_launch.runtime.ssh import SshRunner
from glm45_launch.testing import fakes

PKG = Path(glm45_launch.__file__).resolve().parent
ROOT = PKG.parent

# Layer -> the layers it may import (itself included). Lower layers never import higher ones.
ALLOWED = {
    "errors": {"errors"},
    "core": {"errors", "core", "recipes"},
    "recipes": {"errors", "core", "recipes"},
    "checks": {"errors", "core", "recipes", "checks"},
    "runtime": {"errors", "core", "recipes", "checks", "runtime"},
    "sandbox": {"errors", "core", "recipes", "checks", "sandbox"},
    "cli": {"errors", "core", "recipes", "checks", "runtime", "sandbox", "cli", "testing"},
    "testing": {"errors", "core", "recipes", "checks", "runtime", "testing"},
    "__init__": {"errors", "core", "recipes"},
    "__main__": {"cli"},
}
# What the pure core must never import, even lazily: processes, sockets, threads, SSH, Ray, UI.
IMPURE = {"subprocess", "socket", "threading", "multiprocessing", "fabric", "paramiko", "invoke", "ray",
          "rich", "click", "urllib.request", "http", "asyncio", "concurrent"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(path: Path, module: str) -> list[tuple[str, int]]:
    """Every module ``path`` imports (module level and inside functions), with the line."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.append((base, node.lineno))
            found += [(f"{base}.{a.name}", node.lineno) for a in node.names]
    return found


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_layers_import_only_downwards() -> None:
    modules = _modules()
    bad = []
    for module, path in modules.items():
        if "programs" in module.split("."):
            continue  # programs run elsewhere; checked by test_programs_are_linted
        layer = _layer(module)
        for name, line in _imports(path, module):
            if name.startswith("glm45_launch.") and name in modules:
                target = _layer(name)
                if target not in ALLOWED[layer]:
                    bad.append(f"{path.relative_to(ROOT)}:{line}: {layer} imports {name} ({target})")
    assert bad == []


def test_pure_core_imports_nothing_with_side_effects() -> None:
    bad = []
    for module, path in _modules().items():
        if _layer(module) not in ("core", "recipes"):
            continue
        for name, line in _imports(path, module):
            top = name.split(".")[0]
            if top in IMPURE or name in IMPURE:
                bad.append(f"{path.relative_to(ROOT)}:{line}: {name}")
    assert bad == []
    # And at run time: building and rendering a plan loads none of them (Python's own start-up may).
    code = ("import sys, json; before = set(sys.modules); "
            "from glm45_launch import build_plan, LaunchSpec, parse_hostfile_text; "
            "from glm45_launch.core.render import render; "
            "p = build_plan(LaunchSpec(hostfile=parse_hostfile_text('10.0.0.1\\n10.0.0.2\\n'), head='10.0.0.1', "
            "base_dir='/d')); [render(p, f) for f in ('text', 'json', 'bash')]; "
            f"print(json.dumps(sorted(m for m in set(sys.modules) - before if m.split('.')[0] in {sorted(IMPURE)!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == []


def test_no_import_circles() -> None:
    """Module-level imports between the package's modules form no cycle."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text())
        deps = set()
        for node in tree.body:  # module level only: lazy imports inside functions cannot loop at import
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("glm45_launch"):
                deps.add(node.module)
                deps |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules}
        graph[module] = {d for d in deps if d in modules and d != module}
    seen: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        seen[node] = 1
        for dep in graph[node]:
            if seen.get(dep) == 1:
                cycles.append(" -> ".join(stack[stack.index(dep):] + [dep]) if dep in stack else dep)
            elif dep not in seen:
                visit(dep, [*stack, dep])
        seen[node] = 2

    for module in sorted(graph):
        if module not in seen:
            visit(module, [module])
    # A package's __init__ importing its own submodules is not a circle.
    cycles = [c for c in cycles if not all(p.startswith(c.split(" -> ")[0]) for p in c.split(" -> "))]
    assert cycles == []


def test_no_module_is_too_big() -> None:
    """About 500 lines at most, unless one concept (the rack-in-a-box, the recorder)."""
    big = {str(p.relative_to(ROOT)): n for p in PKG.rglob("*.py")
           if (n := len(p.read_text().splitlines())) > 520}
    assert set(big) <= {"glm45_launch/testing/rackbox.py", "glm45_launch/sandbox/record.py"}, big


@pytest.mark.parametrize(("interface", "real", "fake"), [
    (interfaces.CommandRunner, LocalRunner, fakes.FakeLocalRunner),
    (interfaces.RemoteRunner, SshRunner, fakes.FakeRemoteRunner),
    (interfaces.RayQueries, RayClient, fakes.FakeRay),
    (interfaces.HostFacts, LocalHostFacts, fakes.FakeHostFacts),
    (interfaces.Reporter, RichReporter, fakes.RecordingReporter),
])
def test_implementations_have_exactly_the_interface(interface: type, real: type, fake: type) -> None:
    """Like Ray's command runners: every implementation exposes the interface's public methods,
    with the same parameters (a fake may add helpers for the test to read)."""
    def methods(cls: type) -> dict[str, list[str]]:
        return {name: list(inspect.signature(fn).parameters)
                for name, fn in inspect.getmembers(cls, inspect.isfunction) if not name.startswith("_")}

    want = methods(interface)
    for impl in (real, fake):
        got = methods(impl)
        assert {k: got.get(k) for k in want} == want, impl
    extra = set(methods(real)) - set(want)
    assert extra == set(), f"{real.__name__} has public methods outside {interface.__name__}: {extra}"


def test_readme_library_example_runs(tmp_path: Path) -> None:
    """The README's library example, as written, with the fake runtime in place of the real one."""
    import re
    import shlex

    from glm45_launch.runtime.runtime import Runtime

    text = (ROOT / "README.md").read_text()
    code = re.search(r"## The library.*?```python\n(.*?)```", text, re.S).group(1)  # type: ignore[union-attr]
    hosts = [f"10.0.0.{i}" for i in range(1, 9)]
    hostfile = tmp_path / "hosts"
    hostfile.write_text("".join(f"{h} slots=8\n" for h in hosts))
    code = code.replace('"/root/mpi_rack_hostfile"', repr(str(hostfile)))
    code = code.replace('Runtime.real(SshOptions(user="root"))', "FAKE")
    code = code.replace('"runs/first"', repr(str(tmp_path / "run")))

    def local(words: Any) -> tuple[int, list[str]]:
        argv = list(words)
        if argv[:2] == ["python3", "-c"]:
            return 0, [_probe_report(argv[-1])]
        return 0, ["Job 'raysubmit_1' submitted successfully"] if argv[:3] == ["ray", "job", "submit"] else []

    def remote(host: str, command: str) -> tuple[int, list[str]]:
        return 0, [_probe_report(shlex.split(command)[-1])] if "GLM45-PREFLIGHT" in command else []

    fake = Runtime(fakes.FakeLocalRunner(local), fakes.FakeRemoteRunner(answer=remote),  # type: ignore[arg-type]
                   fakes.FakeRay.alive(hosts), fakes.FakeHostFacts(local={hosts[0]}), fakes.RecordingReporter())
    scope: dict[str, object] = {"FAKE": fake}
    exec(compile(code, "README.md", "exec"), scope)
    result = scope["result"]
    assert (result.exit_code, result.job_id) == (0, "raysubmit_1")  # type: ignore[attr-defined]


def _probe_report(config: str) -> str:
    """What programs/probe.py prints on a healthy host without GPUs, for this probe config."""
    cfg = json.loads(config)
    paths = {p: "file" if Path(p).suffix in (".json", ".jsonl", ".txt", ".py") else "dir" for p in cfg["paths"]}
    facts = {"python": "3.11.7", "packages": {}, "ray_path": "/usr/bin/ray", "ray_version": [0, "ray, version 2.60.0"],
             "nvidia_smi": None, "env": {name: "set" for name in cfg["env"]}, "ifnames": {}, "disk_free": 100 * 1024**3,
             "ports": {}, "paths": paths, "errors": []}
    return cfg["marker"] + json.dumps(facts)
