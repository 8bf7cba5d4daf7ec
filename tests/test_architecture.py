"""The folders are the layers: what each may import, no circles, a pure core, programs as files."""

from __future__ import annotations

import ast
import inspect
import json
import re
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
    "recipes": {"errors", "recipes"},  # data: below the core that reads it
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
    """Every module ``path`` imports, with the line."""
    return _imports_in(path.read_text(), module, path.name == "__init__.py")


def _imports_in(source: str, module: str, is_package: bool) -> list[tuple[str, int]]:
    """Every module ``source`` names in an import, with the line: at module level, inside
    functions and under ``if TYPE_CHECKING:`` alike (``from P import N`` names P and P.N)."""
    found = []
    package = module if is_package else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.append((base, node.lineno))
            found += [(f"{base}.{a.name}", node.lineno) for a in node.names]
    return found


def import_graph(sources: dict[str, tuple[str, bool]]) -> dict[str, set[str]]:
    """module -> the modules of ``sources`` it imports, every kind of import counted;
    ``sources``: module -> (its text, whether it is a package's ``__init__``)."""
    return {module: {name for name, _ in _imports_in(text, module, is_package) if name in sources and name != module}
            for module, (text, is_package) in sources.items()}


def circles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The modules that import each other in a loop: each strongly connected set of two or more
    (Tarjan's algorithm), in a stable order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for dep in sorted(graph[node]):
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            members = {stack.pop()}
            while node not in members:
                members.add(stack.pop())
            if len(members) > 1:
                found.append(frozenset(members))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found, key=sorted)


def _package_graph() -> dict[str, set[str]]:
    return import_graph({m: (p.read_text(), p.name == "__init__.py") for m, p in _modules().items()})


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
    """No modules of the package import each other in a loop, counting module-level,
    function-local and TYPE_CHECKING imports."""
    assert [sorted(c) for c in circles(_package_graph())] == []


_PLANTED = {
    "module level": "from pkg.high import thing\n",
    "inside a function": "def helper():\n    from pkg.high import thing\n    return thing\n",
    "under TYPE_CHECKING": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.high import thing\n",
    "relative, in a method": "class A:\n    def f(self):\n        from . import high\n",
    "import statement": "def helper():\n    import pkg.high\n",
}


@pytest.mark.parametrize("kind", list(_PLANTED))
def test_a_planted_circle_is_found(kind: str) -> None:
    """``pkg.low`` imports ``pkg.high`` (in one of the ways), which imports ``pkg.low`` at module
    level: the graph closes the circle whichever way the import is written."""
    sources = {
        "pkg": ("", True),
        "pkg.low": (_PLANTED[kind], False),
        "pkg.high": ("from pkg.low import A as B\nthing = 1\n", False),
        "pkg.apart": ("from pkg import high\n", False),  # points down at the pair: not a circle
    }
    assert circles(import_graph(sources)) == [frozenset({"pkg.low", "pkg.high"})]


# Shell syntax a program has and prose does not: keywords that open or close a block at a line's
# start or after a separator, case's ";;", command substitution, && and ||, a ";" between commands.
_SHELL = re.compile(r"(?m)(?:^|[;&|]\s*)(?:if|then|elif|else|fi|for|while|until|do|done|case|esac)\b|;;|\$\(|&&|\|\||\S;\s+\w")
_CODE = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.For, ast.While, ast.If,
         ast.With, ast.Try, ast.Assign, ast.AugAssign, ast.Return, ast.Raise)


def _looks_like_python(text: str) -> bool:
    """Two lines or more that parse as Python statements, one of them code (not ``key: value``)."""
    if text.strip().count("\n") < 1:
        return False
    try:
        body = ast.parse(text).body
    except (SyntaxError, ValueError):
        return False
    return len(body) > 1 and any(isinstance(s, _CODE) or isinstance(s, ast.Expr) and isinstance(s.value, ast.Call)
                                 for s in body)


def _looks_like_shell(text: str) -> bool:
    return text.strip().count("\n") >= 1 and len(_SHELL.findall(text)) >= 2


def programs_in(source: str) -> list[tuple[int, str]]:
    """(line, why) of each string literal of ``source`` that holds a program: Python or shell code
    over several lines, or the code after ``-c``/``-e`` in an argv (``[bash, "-c", "a; b"]``).
    Docstrings are prose; f-strings are read with their fields as ``X``."""
    tree = ast.parse(source)
    skip = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    skip |= {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}  # read whole
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.List, ast.Tuple)):
            for flag, code in zip(node.elts, node.elts[1:], strict=False):
                if isinstance(flag, ast.Constant) and flag.value in ("-c", "-e") \
                        and isinstance(code, ast.Constant) and isinstance(code.value, str) and " " in code.value:
                    found.append((code.lineno, f"inline program after {flag.value}"))
        text = None
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            text = node.value
        elif isinstance(node, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) else "X" for v in node.values)
        if text is not None and (_looks_like_python(text) or _looks_like_shell(text)):
            found.append((node.lineno, "python" if _looks_like_python(text) else "shell"))
    return found


def test_no_programs_in_string_literals() -> None:
    """Programs that run elsewhere are package files (checks/programs/probe.py...), never strings."""
    found = [f"{path.relative_to(ROOT)}:{line}: {why}" for path in sorted(PKG.rglob("*.py"))
             for line, why in programs_in(path.read_text())]
    assert found == []


@pytest.mark.parametrize(("source", "found"), [
    ('P = """\\nimport os\\nprint(os.getpid())\\n"""\n', "python"),
    ('S = """\\nif [ -f x ]; then\\n  echo yes\\nfi\\n"""\n', "shell"),
    ('S = (f"for h in {hosts}; do\\n" "  ssh $h true && echo ok\\n" "done\\n")\n', "shell"),
    ('argv = [bash, "-c", "compgen -b; compgen -k"]\n', "inline program after -c"),
    ('Y = """\\nuse_tis: true\\nrs_level: "token"\\n"""\n', None),  # YAML: data, not a program
    ('T = ("-f", "-e", "-s")\n', None),
    ('def f():\n    """Run it; then it ends.\n\n    if x: y\n    """\n', None),
    ('M = "one line; with a semicolon and && in prose"\n', None),
])
def test_programs_in_finds_programs_not_prose(source: str, found: str | None) -> None:
    assert [why for _, why in programs_in(source)] == ([found] if found else [])


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
