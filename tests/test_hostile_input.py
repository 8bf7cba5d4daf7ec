"""Hostile input, proven with hypothesis: hostfile contents, option values, environment values.

Whatever comes in, the CLI either succeeds or fails with exactly one line on stderr starting
``glm45-launch: error:`` (never a traceback); and when it succeeds, no input can put shell
syntax into a remote command: every ssh remote command parses back (as a POSIX shell would
split it) into exactly the argv of its step. Secrets are masked in every rendering.

Fixed budget: derandomized, no deadline, a bounded number of examples per property.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import re
import shlex
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from glm45_launch.cli.main import main
from glm45_launch.core.builder import build_plan
from glm45_launch.core.hostfile import parse_hostfile_text, valid_hostname
from glm45_launch.core.plan import LaunchSpec
from glm45_launch.core.plan_secrets import plan_secrets
from glm45_launch.core.quoting import remote_command
from glm45_launch.core.render import render
from glm45_launch.core.secrets import MASK, mask_argv, mask_text
from glm45_launch.recipes import BASH_RECIPE

BUDGET = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
HOSTS8 = "".join(f"10.0.0.{i} slots=8\n" for i in range(1, 9))
ENV_KEYS = ("BASE_DIR", "MLP_WORKER_0_HOST", "MLP_SOCKET_IFNAME")
GOOD_ENV = {"BASE_DIR": "/data/glm", "MLP_WORKER_0_HOST": "10.0.0.1", "MLP_SOCKET_IFNAME": "eth0"}
PREFIX = "glm45-launch: error: "

# Words that have broken shell-built commands before: metacharacters, quotes, expansions,
# option look-alikes, whitespace of every kind, non-ASCII and lone surrogates (what Python
# makes of non-UTF-8 argv bytes).
NASTY = [
    "", " ", "-", "--", "--help", "-h", "-oProxyCommand=id", "$(id)", "`id`", "${HOME}", "$HOME", "a;b",
    "a ; b", "a && b", "a|b", "a>b", "a<b", "'", '"', "\\", "a'b", 'a"b', "\n", "a\nb", "\r", "a\rb", "\t",
    "\x0b", "\x0c", "\x1b[2J", "\u2028", "\x85", "*", "?", "[0]*3", "~", "#", "!", "%", "{a,b}", "10.0.0.1",
    "10.0.0.1;id", "node-01", "node_01.rack", "::1", "[::1]", "0.0.0.0", "127.0.0.1", "localhost", "é",
    "\udcff", "root", "root@x", "eth0", "x" * 300, "/", "/data/glm", "/data/my glm", "train.py", "../../etc",
    "WANDB_API_KEY=secret", "PERF.--tensor-model-parallel-size=3", "MODEL.--num-layers=abc", "0", "-1", "1e9",
    "99999999999999999999", "nan",
]
nasty_text = st.one_of(
    st.sampled_from(NASTY),
    st.text(max_size=24),
    st.text(alphabet=st.sampled_from(list(" ;|&$`'\"\\()<>*?[]{}#~!\n\t=-_.:@/aZ09")), max_size=16),
    st.builds(lambda a, b: a + b, st.sampled_from(NASTY), st.sampled_from(NASTY)),
)

HOST_TOKENS = ["10.0.0.2", "10.0.0.3", "node-02", "n3.rack.local", "::2", "[fe80::1]:8", "10.0.0.4:8", "slots=8",
               "slots=4", "max_slots=8", "slots=0", "slots=x", "slots=8 slots=8", "#", "# c", "10.0.0.256",
               "-oProxyCommand=id", "a;b", "$(id)", "`id`", "'x'", "h\\x", "10.0.0.5\r", "\x00", "é.rack"]
host_line = st.lists(st.one_of(st.sampled_from(HOST_TOKENS), nasty_text), max_size=4).map(" ".join)
# Lines a rack could really have: addresses (v4, v6), DNS names, slots in every form,
# comments and odd whitespace; these mostly plan, so the injection property gets exercised.
dns_name = st.from_regex(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,8}[A-Za-z0-9_])?(\.[A-Za-z0-9_]{1,5}){0,2}", fullmatch=True)
real_host = st.one_of(st.ip_addresses().map(str), dns_name)
slots_forms = st.sampled_from(["", " slots=8", "\tslots=8 max_slots=8", ":8", " slots=8  # rack 1", "  "])


def _line(host: str, form: str) -> str:
    if form == ":8" and ":" in host:
        return f"[{host}]:8"
    return host + form


real_hostfile = st.tuples(st.lists(real_host, unique=True, min_size=1, max_size=10), slots_forms).map(
    lambda t: [_line(h, t[1]) for h in t[0]])
real_line = st.tuples(real_host, slots_forms).map(lambda t: _line(*t))
hostfile_bytes = st.one_of(
    real_hostfile.map(lambda lines: "\n".join(lines).encode()),
    st.tuples(real_hostfile, st.lists(st.sampled_from(["", "# comment", "   ", "\r", "#x;y $(id)"]))).map(
        lambda t: "\n".join(t[0] + t[1]).encode()),
    st.lists(st.one_of(real_line, real_line, host_line), max_size=10).map(
        lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass")),
    st.lists(host_line, max_size=10).map(lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass")),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.binary(max_size=200),
    st.just(HOSTS8.encode()),
)

# Options that take a value, and flags, of the commands that build a plan.
VALUE_OPTIONS = ["--head", "--base-dir", "--ssh-user", "--entry", "--checkpoint-dir", "--socket-ifname",
                 "--dashboard-host", "--workdir", "--gpus-per-node", "--actor-num-nodes", "--save-interval",
                 "--include", "--exclude", "--framework", "--model", "--env", "--set", "--unset",
                 "--extra-args", "--job-files-dir", "--profile", "--hardware", "--hostfile", "--recipe"]
FLAG_OPTIONS = ["--resolve-env", "--export-env", "--no-cleanup", "--mtp", "--no-mtp", "--r3", "--kv-cache-fp8"]


def option_args() -> st.SearchStrategy[list[str]]:
    value = st.tuples(st.sampled_from(VALUE_OPTIONS), nasty_text, st.booleans()).map(
        lambda t: [f"{t[0]}={t[1]}"] if t[2] else [t[0], t[1]])
    flag = st.sampled_from(FLAG_OPTIONS).map(lambda f: [f])
    return st.lists(st.one_of(value, value, flag), max_size=5).map(lambda xs: [w for x in xs for w in x])


env_value = st.one_of(st.sampled_from(NASTY), st.text(max_size=20)).filter(lambda v: "\x00" not in v)
env_values = st.fixed_dictionaries({
    k: st.sampled_from(["good", "nasty", "unset", "good", "good"]).flatmap(
        lambda kind, k=k: st.just(GOOD_ENV[k]) if kind == "good" else env_value if kind == "nasty" else st.none())
    for k in GOOD_ENV
}).map(lambda d: {k: v for k, v in d.items() if v is not None})


@contextlib.contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """Exactly ``values`` for the launcher's variables (others unset), restored afterwards."""
    saved = {k: os.environ.get(k) for k in (*ENV_KEYS, "GLM45_DEBUG")}
    try:
        for k in saved:
            os.environ.pop(k, None)
        for k, v in values.items():
            os.environ[k] = v.encode("utf-8", "surrogateescape").decode("utf-8", "surrogateescape")
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_cli(argv: list[str], env: Mapping[str, str]) -> tuple[int, str, str]:
    """``glm45-launch ARGV`` in-process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with environment(env), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def split_remote(remote: str) -> list[list[str]]:
    """A remote command split the way the remote POSIX shell splits it: words, and `;` lists."""
    lexer = shlex.shlex(remote, posix=True, punctuation_chars=";")
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token == ";":
            commands.append([])
        else:
            commands[-1].append(token)
    return commands


def assert_one_error_line(rc: int, out: str, err: str, allow_stdout: bool = False) -> None:
    assert rc != 0
    assert "Traceback" not in err and "Traceback" not in out
    assert err.startswith(PREFIX), err
    assert err.endswith("\n") and len(err.splitlines()) == 1 and err[:-1].isprintable(), repr(err)
    if not allow_stdout:
        assert out == ""


def assert_safe_plan(data: dict[str, Any]) -> None:
    """Every ssh remote command is exactly its step's argv, quoted in one place."""
    invocations = {tuple(a[:2]): a for a in data["invocations"] if a[0] == "ssh"}
    workers = [s for s in data["steps"] if s["where"] == "worker"]
    for step in workers:
        assert valid_hostname(step["host"])
        remote = step["remote_command"]
        assert remote == remote_command(step["commands"])
        assert split_remote(remote) == step["commands"], remote
        user, _, host = step["ssh"].partition("@")
        assert host == step["host"] and re.fullmatch(r"[a-z_][a-z0-9_.-]*", user)
        assert invocations[("ssh", step["ssh"])] == ["ssh", step["ssh"], remote]
    for argv in data["invocations"]:
        assert all(isinstance(w, str) for w in argv)


def check_plan_run(argv: list[str], env: Mapping[str, str]) -> None:
    rc, out, err = run_cli(argv + ["--format", "json"], env)
    event("refused" if rc else "planned")
    if rc != 0:
        event(re.sub(r"^\S*hosts\S*:\d+: ", "", err[len(PREFIX):])[:30])
        assert_one_error_line(rc, out, err)
        return
    if out.startswith("Usage:"):  # --help as a value's neighbour: help, exit 0
        return
    assert err == ""
    assert_safe_plan(json.loads(out))
    for fmt in ("text", "bash"):
        rc2, out2, err2 = run_cli(argv + ["--format", fmt], env)
        assert (rc2, err2) == (0, "") and out2


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile")


@BUDGET
@given(content=hostfile_bytes)
def test_any_hostfile(workdir: Path, content: bytes) -> None:
    path = workdir / "hosts"
    path.write_bytes(content)
    check_plan_run(["plan", "--hostfile", str(path)], GOOD_ENV)


@BUDGET
@given(args=option_args())
def test_any_option_values(workdir: Path, args: list[str]) -> None:
    path = workdir / "hosts8"
    path.write_text(HOSTS8)
    check_plan_run(["plan", "--hostfile", str(path), *args], GOOD_ENV)


@BUDGET
@given(env=env_values, args=st.sampled_from([[], ["--export-env"], ["--resolve-env"], ["--export-env", "--resolve-env"]]))
def test_any_environment(workdir: Path, env: dict[str, str], args: list[str]) -> None:
    path = workdir / "hosts-env"
    path.write_text(HOSTS8)
    check_plan_run(["plan", "--hostfile", str(path), *args], env)


@settings(BUDGET, max_examples=60)
@given(args=option_args(), env=env_values)
def test_validate_never_crashes(workdir: Path, args: list[str], env: dict[str, str]) -> None:
    """validate: exit 0 (valid), or problems on stdout and one error line (exit 1), or bad input (2)."""
    path = workdir / "hosts8v"
    path.write_text(HOSTS8)
    rc, out, err = run_cli(["validate", "--no-libs", "--hostfile", str(path), *args], env)
    if rc == 0:
        assert err == "" and (out.startswith("OK: ") or out.startswith("Usage:"))
    else:
        assert_one_error_line(rc, out, err, allow_stdout=rc == 1)


word = st.one_of(st.sampled_from(NASTY), st.text(max_size=12)).filter(lambda w: "\x00" not in w)


@BUDGET
@given(commands=st.lists(st.lists(word, min_size=1, max_size=5), min_size=1, max_size=4))
def test_quoting_round_trips_any_words(commands: list[list[str]]) -> None:
    """The one quoting place: any words, joined for a remote shell, split back unchanged.

    The hostfile and option checks keep metacharacters out of remote commands in the first
    place; this proves the quoting underneath holds even if one slipped through."""
    assert split_remote(remote_command(commands)) == commands


def test_hostfile_injection_examples(workdir: Path) -> None:
    """The classic attempts, spelled out: each is refused with the line it came from."""
    for line, reason in [
        ("10.0.0.2;touch /tmp/pwned", "has shell metacharacters"),
        ("$(touch /tmp/pwned)", "has shell metacharacters"),
        ("`id`", "has shell metacharacters"),
        ("-oProxyCommand=id", "is not an IPv4/IPv6 address or a DNS name"),
        ("10.0.0.2 slots=8;id", "has shell metacharacters"),
    ]:
        path = workdir / "inject"
        path.write_text(f"10.0.0.1 slots=8\n{line}\n")
        rc, out, err = run_cli(["plan", "--hostfile", str(path)], GOOD_ENV)
        assert_one_error_line(rc, out, err)
        assert err.startswith(f"{PREFIX}{path}:2: ") and reason in err, err


def test_error_line_escapes_control_characters(workdir: Path) -> None:
    """A message quoting user input stays one printable line (no \\r, escape sequences...)."""
    for bad in ("a\rb", "x\x1b[2Jy", "p\u2028q", "t\x0bu\x85v", "s\udcffz", "n\nm"):
        rc, out, err = run_cli(["plan", "--hostfile", str(workdir / bad)], GOOD_ENV)
        assert_one_error_line(rc, out, err)
        assert err.isascii() or err.rstrip("\n").isprintable(), repr(err)
        assert "no such hostfile" in err


def test_bash_format_is_valid_shell(workdir: Path) -> None:
    """The --format bash script parses (bash -n) even with spaces and quotes in every path."""
    path = workdir / "hosts8b"
    path.write_text(HOSTS8)
    rc, out, err = run_cli(["plan", "--hostfile", str(path), "--format", "bash", "--base-dir", "/d/it's a \"dir\"",
                            "--checkpoint-dir", "/c/$(id) `x`", "--entry", "my train.py"], GOOD_ENV)
    assert (rc, err) == (0, "")
    proc = subprocess.run(["bash", "-n"], input=out, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert "'/d/it'\"'\"'s a \"dir\"/GLM-4.5-355B-A32B'" in out


# --- secrets -----------------------------------------------------------------------------------

SECRET = "wandb-0123456789abcdef"


def secret_plan(env_secret: str = SECRET, flag_secret: str = SECRET + "-flag") -> Any:
    groups = dict(BASH_RECIPE.groups, WANDB=("--use-wandb", "--wandb-key", flag_secret))
    recipe = replace(BASH_RECIPE, groups=groups,
                     env_vars=BASH_RECIPE.env_vars + (("WANDB_API_KEY", env_secret),))
    return build_plan(LaunchSpec(hostfile=parse_hostfile_text(HOSTS8), head="10.0.0.1", base_dir="/data/glm",
                                 workdir="/w", recipe=recipe))


def test_secrets_are_masked_in_every_format_but_not_in_what_runs() -> None:
    plan = secret_plan()
    for fmt in ("text", "json", "bash"):
        shown = render(plan, fmt)
        assert SECRET not in shown and MASK in shown, fmt
        assert SECRET in render(plan, fmt, show_secrets=True)
    data = json.loads(render(plan, "json"))
    assert data["runtime_env"]["env_vars"]["WANDB_API_KEY"] == MASK
    assert data["train_args"]["WANDB"] == ["--use-wandb", "--wandb-key", MASK]
    renv = json.loads(data["invocations"][9][4].removeprefix("--runtime-env-json="))
    assert renv["env_vars"]["WANDB_API_KEY"] == MASK and renv["env_vars"]["NCCL_IB_TC"] == "160"
    # the plan itself (what the executor runs) stays raw
    assert SECRET in plan.submit_argv[4] and SECRET + "-flag" in plan.train_argv
    assert plan_secrets(plan) == [SECRET + "-flag", SECRET]
    # log lines: one helper for argv, one for text
    assert mask_argv(["python3", "train.py", "--wandb-key", "k", "--wandb-key=k2", "WANDB_API_KEY=k3"]) == [
        "python3", "train.py", "--wandb-key", MASK, f"--wandb-key={MASK}", f"WANDB_API_KEY={MASK}"]
    assert mask_text(f"ran with key {SECRET}: ok", plan_secrets(plan)) == f"ran with key {MASK}: ok"


def test_secrets_from_the_command_line(workdir: Path) -> None:
    path = workdir / "hosts8s"
    path.write_text(HOSTS8)
    argv = ["plan", "--hostfile", str(path), "--env", f"WANDB_API_KEY={SECRET}",
            "--set", f"WANDB.--wandb-key={SECRET}2"]
    for fmt in ("text", "json", "bash"):
        rc, out, err = run_cli(argv + ["--format", fmt], GOOD_ENV)
        assert (rc, err) == (0, "") and SECRET not in out and MASK in out, out
        rc, out, err = run_cli(argv + ["--format", fmt, "--show-secrets"], GOOD_ENV)
        assert (rc, err) == (0, "") and SECRET in out and f"{SECRET}2" in out


secret_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                      min_size=8, max_size=40)


@functools.cache
def _baseline() -> dict[str, str]:
    return {fmt: render(secret_plan("x" * 8, "y" * 8), fmt) for fmt in ("text", "json", "bash")}


@BUDGET
@given(env_secret=secret_text, flag_secret=secret_text)
def test_any_secret_is_masked(env_secret: str, flag_secret: str) -> None:
    """Whatever the secrets hold (quotes, JSON escapes, spaces), no rendering shows them."""
    baseline = _baseline()
    plan = secret_plan(env_secret, flag_secret)
    for fmt in ("text", "json", "bash"):
        shown = render(plan, fmt)
        for secret in (env_secret, flag_secret):
            if secret in baseline[fmt]:
                continue  # it is also an ordinary word of the plan
            assert secret not in shown, (fmt, secret)
            if fmt == "json":
                assert json.dumps(secret)[1:-1] not in shown
            if fmt == "bash":
                assert shlex.quote(secret) not in shown
    assert env_secret in plan.submit_argv[4] or json.dumps(env_secret)[1:-1] in plan.submit_argv[4]
