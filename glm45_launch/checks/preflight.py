"""Host preflight: is every node ready for the plan, before anything is started?

One self-contained Python probe (:data:`PROBE_SCRIPT`) runs on every host at once, over SSH
as ``python3 -c SCRIPT CONFIG`` (quoted by ``quoting.py``), or here for the head when it is
this machine or not in the hostfile (the bash recipe never needs SSH from the head to
itself, so neither does preflight). It imports nothing heavy (versions come from ``importlib.metadata`` and
``ray --version``) and prints one JSON line; everything judged from it is pure
(:func:`evaluate`), so the rules are unit-tested without SSH.

Per host: SSH, versions (python3, the ``ray`` first on PATH, torch, sglang, megatron-core)
against the head's, GPUs and NVLink (``nvidia-smi``), the checkpoint and data paths of the
train args, the socket interface, the ``${VAR}``s of the runtime env, free space in /tmp.
On the head also: the Ray and dashboard ports (and, when held, whether the holder is Ray's:
``portowner.py``, pasted into the probe), the entry script, and (optionally) the
megatron-core/sglang checks of ``validate_libs`` with the head's installed versions.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from glm45_launch.checks import portowner
from glm45_launch.core.plan import Plan, env_refs
from glm45_launch.core.quoting import remote_command
from glm45_launch.errors import LaunchError
from glm45_launch.recipes import split_flags
from glm45_launch.runtime.cluster import is_local_address
from glm45_launch.runtime.ssh import SshOptions, SshRunner

OK, WARN, FAIL = "ok", "warn", "fail"
_RANK = {OK: 0, WARN: 1, FAIL: 2}
PACKAGES = ("ray", "torch", "sglang", "megatron-core")  # distribution names, read by importlib.metadata
VERSIONED = ("python", "ray", "torch", "sglang", "megatron-core")
# Table columns, in order; a check belongs to the column its name starts with (see Check.group).
GROUPS = ("ssh", "versions", "gpus", "nvlink", "paths", "ifname", "env", "disk", "ports", "entry", "libs")
LATEST = "latest_checkpointed_iteration.txt"
MARKER = "GLM45-PREFLIGHT "
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")  # as plan.env_refs reads them
NOT_INSTALLED = "not installed"
NO_RAY = "not found on PATH"
GIB = 1024**3

# The probe: standard library only (Python >= 3.6 syntax: whatever python3 a node has),
# never raises (each part is guarded), and its last stdout line is MARKER + JSON. argv[1] is
# the JSON config of probe_config(). Subprocesses get their own timeout so one hung
# nvidia-smi cannot eat the whole remote `timeout` and lose the rest of the report.
PROBE_SCRIPT = r'''
import json, os, shutil, socket, stat, subprocess, sys
os.dup2(1, 2)  # one stream: ssh's stdout and stderr readers never interleave inside the report line
cfg = json.loads(sys.argv[1])
# --- glm45_launch/checks/portowner.py ---
@PORTOWNER@
# ---
out = {"python": sys.version.split()[0], "python_path": sys.executable, "hostname": socket.gethostname(),
       "errors": []}

def run(argv):
    try:
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                           universal_newlines=True, timeout=cfg["cmd_timeout"])
        return [p.returncode, p.stdout[-2000:]]
    except subprocess.TimeoutExpired:
        return [None, "timed out after %ss" % cfg["cmd_timeout"]]
    except OSError as e:
        return [None, str(e)]

def kind(path):
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "missing"
    except NotADirectoryError:
        return "missing"
    except OSError as e:
        return "error: " + (e.strerror or str(e))
    return "dir" if stat.S_ISDIR(st.st_mode) else "file" if stat.S_ISREG(st.st_mode) else "other"

def guard(name, fn):
    try:
        fn()
    except Exception as e:
        out["errors"].append("%s: %s: %s" % (name, type(e).__name__, e))

def packages():
    try:
        from importlib.metadata import version
    except ImportError:
        out["packages"] = dict((d, "unknown (python < 3.8)") for d in cfg["packages"])
        return
    found = {}
    for d in cfg["packages"]:
        try:
            found[d] = version(d)
        except Exception:
            found[d] = None
    out["packages"] = found

def ray():
    path = shutil.which("ray")
    out["ray_path"] = path
    out["ray_version"] = run([path, "--version"]) if path else None

def gpus():
    smi = shutil.which("nvidia-smi")
    out["nvidia_smi"] = smi
    if smi:
        out["smi_list"] = run([smi, "-L"])
        out["smi_topo"] = run([smi, "topo", "-m"])

def env():
    out["env"] = dict((n, None if n not in os.environ else "set" if os.environ[n] else "empty") for n in cfg["env"])
    own = os.environ.get("MLP_SOCKET_IFNAME") or None
    out["ifname_own"] = own
    names = list(cfg["ifnames"]) + ([own] if own else [])
    out["ifnames"] = dict((n, "/" not in n and n not in (".", "..") and os.path.exists("/sys/class/net/" + n))
                          for n in names)

def disk():
    out["disk_free"] = shutil.disk_usage(cfg["tmp_dir"]).free

def ports():
    # Held: it accepts connections, or anything listens on the port (any address: Ray binds
    # the wildcard). Then who holds it, so the head's check can tell Ray from a foreign service.
    held = {}
    for host, port in cfg["ports"]:
        report = port_report(port)
        try:
            socket.create_connection((host, port), timeout=1).close()
            accepts = True
        except OSError:
            accepts = False
        report["held"] = accepts or bool(report["listeners"])
        held["%s:%s" % (host, port)] = report
    out["ports"] = held

for name, fn in (("packages", packages), ("ray", ray), ("gpus", gpus), ("env", env), ("disk", disk),
                 ("ports", ports)):
    guard(name, fn)
guard("paths", lambda: out.__setitem__("paths", dict((p, kind(p)) for p in cfg["paths"])))
sys.stdout.write("@MARKER@" + json.dumps(out) + "\n")
sys.stdout.flush()
'''.replace("@MARKER@", MARKER).replace("@PORTOWNER@", Path(portowner.__file__).read_text(encoding="utf-8"))


# --- results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One check on one host: ``name`` (its column is :attr:`group`), ok/warn/fail, one line."""

    name: str
    status: str
    detail: str

    @property
    def group(self) -> str:
        if self.name in ("probe", "ssh"):
            return "ssh"
        if self.name in VERSIONED:
            return "versions"
        first = self.name.split(" ", 1)[0]
        return {"path": "paths", "port": "ports"}.get(first, first)

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "group": self.group, "status": self.status, "detail": self.detail}


@dataclass
class HostReport:
    """Every check of one host (``via``: ssh, or local for the head probed on this machine)."""

    host: str
    role: str  # head | worker
    via: str  # ssh | local
    checks: list[Check] = field(default_factory=list)

    @property
    def status(self) -> str:
        return worst(c.status for c in self.checks)

    def group_status(self, group: str) -> str | None:
        found = [c.status for c in self.checks if c.group == group]
        return worst(found) if found else None

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "role": self.role, "via": self.via, "status": self.status,
                "checks": [c.to_json() for c in self.checks]}


@dataclass
class PreflightReport:
    hosts: list[HostReport]
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return all(h.status != FAIL for h in self.hosts)

    def problems(self, status: str = FAIL) -> list[tuple[str, Check]]:
        return [(h.host, c) for h in self.hosts for c in h.checks if c.status == status]

    def summary(self, limit: int = 8) -> str:
        """One line naming each failing host and check (for the CLI's error line)."""
        fails = self.problems()
        shown = "; ".join(f"{host} {c.name}: {c.detail}" for host, c in fails[:limit])
        more = f"; and {len(fails) - limit} more" if len(fails) > limit else ""
        return f"{len(fails)} failed check(s): {shown}{more}"

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "duration_s": round(self.duration_s, 2), "hosts": [h.to_json() for h in self.hosts]}


def worst(statuses: Sequence[str] | Any) -> str:
    return max(statuses, key=_RANK.__getitem__, default=OK)


@dataclass(frozen=True)
class PreflightOptions:
    """Thresholds and switches (the plan says what to check)."""

    parallel: int = 32
    min_free_gb: float = 5.0
    require_gpus: bool = False  # no nvidia-smi / no NVLink: a failure instead of a warning
    libs: bool = True  # megatron-core/sglang checks of validate_libs, here on the head
    timeout_s: float = 60.0  # the whole probe on one host
    tmp_dir: str = "/tmp"  # Ray's default temp dir lives under it (/tmp/ray)


# --- pure: what to check ----------------------------------------------------------------------


@dataclass(frozen=True)
class PathSpec:
    """A path of the train args and what must be there."""

    flag: str
    path: str
    kind: str  # hf (dir + config.json) | torch_dist (dir + LATEST) | load (optional dir) | file

    @property
    def marker(self) -> str | None:
        return {"hf": "config.json", "torch_dist": LATEST, "load": LATEST}.get(self.kind)

    @property
    def probe_paths(self) -> list[str]:
        return [self.path] + ([os.path.join(self.path, self.marker)] if self.marker else [])


def flag_values(words: Sequence[str], flag: str) -> tuple[str, ...] | None:
    """The values of the last ``flag`` in ``words`` (``--flag V...`` or ``--flag=V``), else None."""
    found = None
    for name, values in split_flags(words):
        if name == flag:
            found = values
        elif name.startswith(flag + "="):
            found = (name.split("=", 1)[1], *values)
    return found


def plan_paths(plan: Plan) -> list[PathSpec]:
    """Checkpoint and data paths of the plan's filled train args (relative ones: from the workdir)."""
    words = [w for _, group in plan.train_groups for w in group]

    def path(value: str) -> str:
        return value if os.path.isabs(value) else os.path.join(plan.spec.workdir, value)

    specs: list[PathSpec] = []
    for flag, kind in (("--hf-checkpoint", "hf"), ("--ref-load", "torch_dist"), ("--load", "load"),
                       ("--prompt-data", "file")):
        values = flag_values(words, flag)
        if values and values[0]:
            specs.append(PathSpec(flag, path(values[0]), kind))
    evals = flag_values(words, "--eval-prompt-data") or ()
    for name, value in zip(evals[0::2], evals[1::2], strict=False):
        specs.append(PathSpec(f"--eval-prompt-data {name}", path(value), "file"))
    return specs


def ray_port(plan: Plan) -> int:
    return int(dict(plan.settings).get("ray port", "6379"))


def head_ports(plan: Plan) -> list[tuple[str, int, str]]:
    """(host, port, what) the head must have free: Ray's GCS port and the job server's."""
    dash = urlsplit(plan.job_address)
    return [(plan.head, ray_port(plan), "Ray GCS"), (dash.hostname or "127.0.0.1", dash.port or 8265, "dashboard")]


def probe_config(plan: Plan, is_head: bool, opts: PreflightOptions) -> dict[str, Any]:
    """The probe's argv[1]: what one host must report (pure)."""
    paths = [p for spec in plan_paths(plan) for p in spec.probe_paths]
    if is_head:
        paths.append(entry_path(plan))
    return {
        "packages": list(PACKAGES),
        "paths": list(dict.fromkeys(paths)),
        "env": env_refs(plan.env_vars),
        "ifnames": [plan.spec.socket_ifname] if plan.spec.socket_ifname else [],
        "tmp_dir": opts.tmp_dir,
        "ports": [[h, p] for h, p, _ in head_ports(plan)] if is_head else [],
        "cmd_timeout": max(5, int(opts.timeout_s - 10) // 2),
    }


def entry_path(plan: Plan) -> str:
    return os.path.join(plan.spec.workdir, plan.spec.entry)


def probe_argv(plan: Plan, is_head: bool, opts: PreflightOptions) -> list[str]:
    return ["python3", "-c", PROBE_SCRIPT, json.dumps(probe_config(plan, is_head, opts))]


def parse_probe_output(lines: Sequence[str]) -> dict[str, Any] | None:
    """The probe's JSON from its output (the last marker line wins; shell noise is ignored)."""
    for line in reversed(lines):
        if line.startswith(MARKER):
            try:
                facts = json.loads(line[len(MARKER):])
            except ValueError:
                return None
            return facts if isinstance(facts, dict) else None
    return None


# --- pure: judging one host's facts -----------------------------------------------------------


def parse_ray_version(text: str) -> str | None:
    """``ray, version 2.60.0`` -> ``2.60.0``."""
    m = re.search(r"version\s+(\S+)", text)
    return m.group(1) if m else None


def host_versions(facts: Mapping[str, Any]) -> dict[str, str]:
    """What each versioned thing is on a host; "not installed"/"not found on PATH" count as versions."""
    packages = facts.get("packages") or {}
    out = {"python": str(facts.get("python") or "?")}
    ray = facts.get("ray_version")
    if not facts.get("ray_path") or ray is None:
        out["ray"] = NO_RAY
    else:
        code, text = ray
        out["ray"] = (parse_ray_version(text) or "unreadable") if code == 0 else f"broken (`ray --version` exit {code})"
    for dist in PACKAGES[1:]:
        out[dist] = packages.get(dist) or NOT_INSTALLED
    return out


def version_checks(
    host: str, facts: Mapping[str, Any], ref_host: str | None, ref_facts: Mapping[str, Any] | None,
) -> list[Check]:
    """Each versioned thing vs the reference host's (the head's): skew is a failure."""
    mine = host_versions(facts)
    ref = host_versions(ref_facts) if ref_facts is not None else None
    checks = []
    for name in VERSIONED:
        value = mine[name]
        where = f" ({facts.get('ray_path')})" if name == "ray" and value != NO_RAY else \
            f" ({facts.get('python_path')})" if name == "python" else ""
        status, detail = OK, value + where
        if ref is not None and ref_host != host and ref[name] != value:
            status = FAIL
            detail = f"{name} {value}{where} on {host}, but {ref[name]} on {ref_host}"
        if name == "ray":
            pkg = (facts.get("packages") or {}).get("ray") or NOT_INSTALLED
            if value == NO_RAY or value.startswith(("broken", "unreadable")):
                status = FAIL
                detail = f"`ray` {value} in the session: `ray start` cannot run here"
            elif status == OK and pkg != value:
                status = WARN
                detail += f"; but python3 ({facts.get('python_path')}) has ray {pkg}: another env comes first on PATH"
        checks.append(Check(name, status, detail))
    return checks


def gpu_checks(facts: Mapping[str, Any], expected: int, require: bool) -> list[Check]:
    """GPU count (``nvidia-smi -L``) and NVLink (``nvidia-smi topo -m``)."""
    missing = FAIL if require else WARN
    if not facts.get("nvidia_smi"):
        return [Check("gpus", missing, "nvidia-smi not found"), Check("nvlink", missing, "nvidia-smi not found")]
    code, text = facts.get("smi_list") or (None, "no output")
    if code != 0:
        first = next((ln for ln in text.splitlines() if ln.strip()), "no output")
        return [Check("gpus", FAIL, f"nvidia-smi -L failed (exit {code}): {first}"),
                Check("nvlink", missing, "skipped: nvidia-smi does not work")]
    count = sum(1 for ln in text.splitlines() if ln.startswith("GPU "))
    gpus = Check("gpus", OK, f"{count} GPUs") if count == expected else \
        Check("gpus", FAIL, f"{count} GPUs, expected {expected} per node")
    code, topo = facts.get("smi_topo") or (None, "")
    links = sorted(set(re.findall(r"\bNV\d+\b", topo)))
    if code != 0:
        nvlink = Check("nvlink", missing, f"nvidia-smi topo -m failed (exit {code})")
    elif links:
        nvlink = Check("nvlink", OK, "NVLink " + "/".join(links))
    elif count <= 1:
        nvlink = Check("nvlink", OK, "single GPU")
    else:
        nvlink = Check("nvlink", missing, "no NVLink between the GPUs (the runtime env sets NCCL_P2P_LEVEL=NVL)")
    return [gpus, nvlink]


def path_checks(specs: Sequence[PathSpec], kinds: Mapping[str, str]) -> list[Check]:
    """Each train-arg path as seen from the host."""
    checks = []
    for spec in specs:
        name = f"path {spec.flag}"
        kind = kinds.get(spec.path, "not probed")
        marker = kinds.get(os.path.join(spec.path, spec.marker)) if spec.marker else None
        if spec.kind == "file":
            checks.append(Check(name, OK, spec.path) if kind == "file"
                          else Check(name, FAIL, f"{spec.path}: {kind if kind != 'dir' else 'a directory, not a file'}"))
        elif spec.kind == "load" and kind == "missing":
            checks.append(Check(name, WARN, f"{spec.path}: missing; the trainer loads --ref-load instead"))
        elif kind != "dir":
            checks.append(Check(name, FAIL, f"{spec.path}: {kind if kind != 'file' else 'a file, not a directory'}"))
        elif spec.kind == "load":
            note = "" if marker == "file" else f" (no {LATEST} yet: the trainer loads --ref-load)"
            checks.append(Check(name, OK, spec.path + note))
        elif marker != "file":
            hint = "; convert it with `glm45-launch convert`" if spec.kind == "torch_dist" else ""
            what = "not a torch_dist checkpoint" if spec.kind == "torch_dist" else "not an HF checkpoint"
            checks.append(Check(name, FAIL, f"{spec.path}: {what} (no {spec.marker}){hint}"))
        else:
            checks.append(Check(name, OK, spec.path))
    return checks


SESSION, RUNTIME_ENV = "session", "runtime env"


def ray_env_order(env_vars: Sequence[tuple[str, str]]) -> list[str]:
    """The order in which Ray sets the runtime env's variables in a worker process.

    Not the JSON's order: ``RuntimeEnv.serialize`` (ray/runtime_env/runtime_env.py) is
    ``json.dumps(..., sort_keys=True)``, which sorts the nested ``env_vars`` too; the runtime
    env agent deserializes that string into ``RuntimeEnvContext(env_vars=...)`` and
    ``update_envs`` (ray/_private/utils.py) sets them in that order, expanding each value
    with ``os.path.expandvars`` against the environment as set so far. Sorted as Python
    sorts str (code points: upper case before lower case), as ``json.dumps`` does.
    """
    return sorted(dict(env_vars))


def env_ref_sources(
    env_vars: Sequence[tuple[str, str]], available: Collection[str],
) -> dict[str, dict[str, str | None]]:
    """Where each ``${X}`` of each runtime-env value comes from when Ray expands it (pure).

    ``{key: {X: source}}``: :data:`RUNTIME_ENV` when ``X`` is itself a runtime-env key that
    Ray sets before ``key`` (:func:`ray_env_order`) and ``X``'s own value resolves;
    :data:`SESSION` when ``X`` is in ``available`` (set where ``ray start`` ran); else None
    (Ray 2.60 substitutes an empty string). ``X`` set earlier from an unresolved value is
    None too, even when the session has ``X``: Ray's value replaced the session's.
    """
    values = dict(env_vars)
    rank = {k: i for i, k in enumerate(ray_env_order(env_vars))}
    resolved: dict[str, bool] = {}
    out: dict[str, dict[str, str | None]] = {}

    def sources(key: str) -> dict[str, str | None]:
        if key not in out:
            found: dict[str, str | None] = {}
            for ref in _ENV_REF.findall(values[key]):
                if ref in rank and rank[ref] < rank[key]:
                    found[ref] = RUNTIME_ENV if resolves(ref) else None  # strictly earlier: terminates
                else:
                    found[ref] = SESSION if ref in available else None
            out[key] = found
        return out[key]

    def resolves(key: str) -> bool:
        if key not in resolved:
            resolved[key] = all(s is not None for s in sources(key).values())
        return resolved[key]

    for key in values:
        sources(key)
    return {k: out[k] for k in values}


def env_checks(plan: Plan, facts: Mapping[str, Any], is_head: bool, via: str) -> list[Check]:
    """The runtime env's ``${VAR}``s resolve where Ray expands them, and the socket interface exists.

    A ``${X}`` resolves from the environment ``ray start`` ran in (the host's session, the
    recipe's head exports, ``--export-env``) or from the runtime env's own ``X`` when Ray
    sets that first (:func:`env_ref_sources`): the recipe's ``no_proxy=...${MASTER_ADDR}``
    gets the ``MASTER_ADDR=${MLP_WORKER_0_HOST}`` set just before it on every worker.
    """
    refs = env_refs(plan.env_vars)
    provided: dict[str, str] = {}
    if plan.spec.export_env:
        provided = {r: "--export-env" for r in refs}
    elif is_head:
        head = plan.step("head-start")
        provided = {k: "the recipe's head exports" for k, _ in (head.env if head else ()) if k in refs}
    seen = facts.get("env") or {}
    session = "the non-interactive ssh session" if via == "ssh" else "the launcher's environment"
    found = env_ref_sources(plan.env_vars, set(provided) | {r for r in refs if seen.get(r) == "set"})
    # ${X} -> the keys that get "" for it: from the session, or from the runtime env's own X
    # (set first but unresolved itself); and the keys that get it from the runtime env's X.
    unset: dict[str, list[str]] = {}
    broken_chain: dict[str, list[str]] = {}
    chained: dict[str, list[str]] = {}
    position = {k: i for i, k in enumerate(ray_env_order(plan.env_vars))}
    for key, sources in found.items():
        for ref, source in sources.items():
            if source == RUNTIME_ENV:
                chained.setdefault(ref, []).append(key)
            elif source is None and ref in position and position[ref] < position[key]:
                broken_chain.setdefault(ref, []).append(key)
            elif source is None:
                unset.setdefault(ref, []).append(key)
    if not refs:
        env = Check("env", OK, "the runtime env holds no ${VAR}s")
    elif unset or broken_chain:
        # A warning: the job still starts (Ray substitutes ""); a bad interface it leads to is
        # the ifname check's failure.
        parts = [f"${{{r}}} {'empty' if seen.get(r) == 'empty' else 'unset'} (used by {', '.join(keys)})"
                 for r, keys in unset.items()]
        parts += [f"${{{r}}} empty (used by {', '.join(keys)}: the runtime env's {r}, which Ray sets first, "
                  "does not resolve)" for r, keys in broken_chain.items()]
        env = Check("env", WARN, f"{'; '.join(parts)} in {session}: Ray substitutes an empty string "
                    "(Ray 2.60 update_envs); set it there or pass --export-env")
    else:
        def how(ref: str) -> str:
            if ref in chained:
                return (f"${{{ref}}} (the runtime env's {ref}, which Ray sets before "
                        f"{', '.join(chained[ref])}: it applies the keys sorted)")
            return f"${{{ref}}}" + (f" ({provided[ref]})" if ref in provided else "")

        env = Check("env", OK, ", ".join(how(r) for r in refs))

    exists = facts.get("ifnames") or {}
    own = facts.get("ifname_own")
    if "MLP_SOCKET_IFNAME" in refs and not plan.spec.export_env:
        # Ray expands ${MLP_SOCKET_IFNAME} from this host's own environment: check that one.
        name, source = own, "the host's MLP_SOCKET_IFNAME"
        if not name:
            return [env, Check("ifname", WARN, "no interface to check: MLP_SOCKET_IFNAME is unset (see env)")]
    elif plan.spec.socket_ifname:
        name, source = plan.spec.socket_ifname, "--socket-ifname"
    else:
        return [env, Check("ifname", OK, "no socket interface in the runtime env")]
    ifname = Check("ifname", OK, f"{name} ({source})") if exists.get(name) else \
        Check("ifname", FAIL, f"{name} ({source}): no such interface (/sys/class/net/{name})")
    return [env, ifname]


def disk_check(facts: Mapping[str, Any], opts: PreflightOptions) -> Check:
    free = facts.get("disk_free")
    if not isinstance(free, int):
        return Check("disk", FAIL, f"cannot read the free space of {opts.tmp_dir}")
    text = f"{free / GIB:.1f} GiB free in {opts.tmp_dir} (Ray's temp dir)"
    if free < opts.min_free_gb * GIB:
        return Check("disk", FAIL, f"{text}, need >= {opts.min_free_gb:g} GiB (--min-free-gb)")
    return Check("disk", OK, text)


RAY_DAEMONS = ("gcs_server", "raylet")  # /proc/PID/comm of Ray's native daemons
RAY_PYTHON_MARKERS = ("ray/dashboard", "ray/_private")  # in the cmdline of Ray's Python daemons
_PORT_KEYS = {"Ray GCS": "ray_port", "dashboard": "dashboard_port"}  # recipe [defaults] keys


def is_ray_process(comm: str, cmdline: str) -> bool:
    """A Ray daemon by its comm (gcs_server, raylet) or a Python one by its cmdline
    (dashboard.py, the runtime env agent, log monitor: ``.../ray/dashboard/...``, ``.../ray/_private/...``)."""
    if comm in RAY_DAEMONS:
        return True
    argv0 = os.path.basename(cmdline.split(" ", 1)[0]) if cmdline else ""
    python = comm.startswith("python") or argv0.startswith("python")
    return python and any(m in cmdline for m in RAY_PYTHON_MARKERS)


def port_state(value: Any) -> dict[str, Any]:
    """A probe's port entry as ``{"held", "listeners", "holders", "error"}`` (a bare bool: held or not)."""
    if isinstance(value, Mapping):
        return {"held": bool(value.get("held")), "listeners": list(value.get("listeners") or []),
                "holders": list(value.get("holders") or []), "error": value.get("error")}
    return {"held": bool(value), "listeners": [], "holders": [],
            "error": None if not value else "the probe did not report who holds it"}


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def port_check(plan: Plan, host: str, port: int, what: str, value: Any) -> Check:
    """One head port: free; or held by Ray (the cleanup stops it, unless --no-cleanup); or
    held by something else, or by an unidentified process: then the cleanup would kill
    Ray and sglang for nothing and ``ray start`` would still fail."""
    name, where = f"port {port}", f"{what} {host}:{port}"
    state = port_state(value)
    if not state["held"]:
        return Check(name, OK, f"{where} free")
    holders = state["holders"]
    if not holders:
        return Check(name, FAIL, f"port {port} held ({where}), and the holder cannot be identified: "
                     f"{state['error'] or 'no process found'}; the cleanup may not free it")
    foreign = [h for h in holders if not is_ray_process(str(h.get("comm", "")), str(h.get("cmdline", "")))]
    if foreign:
        h = foreign[0]
        return Check(name, FAIL, f"port {port} held by {h.get('comm')} (pid {h.get('pid')}), not Ray: the "
                     f"cleanup would not free it ({where}; `{_short(str(h.get('cmdline', '')))}`): stop it, or "
                     f"move Ray with a recipe file's [defaults] {_PORT_KEYS.get(what, 'ray_port')}")
    ray = ", ".join(f"{h.get('comm')} (pid {h.get('pid')})" for h in holders)
    if plan.spec.cleanup:
        return Check(name, WARN, f"{where} held by Ray's {ray}: the cleanup will stop the running cluster")
    return Check(name, FAIL, f"{where} held by Ray's {ray} and --no-cleanup: nothing stops it "
                 "(`glm45-launch down`, or drop --no-cleanup)")


def head_checks(plan: Plan, facts: Mapping[str, Any]) -> list[Check]:
    """Head only: the Ray/dashboard ports are free (or held by a Ray the cleanup stops) and the entry exists."""
    held = facts.get("ports") or {}
    checks = [port_check(plan, host, port, what, held.get(f"{host}:{port}")) for host, port, what in head_ports(plan)]
    entry = entry_path(plan)
    kind = (facts.get("paths") or {}).get(entry, "not probed")
    checks.append(Check("entry", OK, entry) if kind == "file" else
                  Check("entry", FAIL, f"{entry}: {kind} (--workdir/--entry: the job runs `python3 {plan.spec.entry}` "
                        "there)"))
    return checks


def evaluate(
    plan: Plan, host: str, facts: Mapping[str, Any], is_head: bool, via: str, opts: PreflightOptions,
    ref_host: str | None, ref_facts: Mapping[str, Any] | None,
) -> list[Check]:
    """Every check of one probed host, after ssh (pure)."""
    checks = version_checks(host, facts, ref_host, ref_facts)
    checks += gpu_checks(facts, plan.gpus_per_node, opts.require_gpus)
    checks += path_checks(plan_paths(plan), facts.get("paths") or {})
    checks += env_checks(plan, facts, is_head, via)
    checks.append(disk_check(facts, opts))
    if is_head:
        checks += head_checks(plan, facts)
    for error in facts.get("errors") or []:
        checks.append(Check("probe", FAIL, f"probe error: {error}"))
    return checks


def lib_checks(problems: Sequence[str], notes: Sequence[str]) -> Check:
    """validate_libs' findings on the head as one check."""
    if problems:
        return Check("libs", FAIL, "; ".join(problems))
    skipped = [n for n in notes if n.startswith("skipped")]
    if skipped:
        return Check("libs", WARN, "; ".join(skipped))
    return Check("libs", OK, "; ".join(notes) or "megatron-core/sglang checks passed")


# --- I/O: probing -----------------------------------------------------------------------------


@dataclass
class _Probe:
    host: str
    via: str
    facts: dict[str, Any] | None
    error: Check | None  # ssh or probe failure


def _probe_failure(host: str, code: int | None, tail: Sequence[str]) -> Check:
    text = " | ".join(ln for ln in tail[-3:] if ln.strip())[-300:] or "no output"
    if code == 127:
        return Check("probe", FAIL, f"python3 not found on PATH of {host} (the probe and train.py need it): {text}")
    return Check("probe", FAIL, f"probe exited {code} without a report: {text}")


def head_probed_here(plan: Plan, head_is_local: bool) -> bool:
    """The head is probed on this machine, not over SSH, when it is this machine (whether or
    not the hostfile lists it: the recipe never SSHes from the head to itself) or when the
    hostfile does not list it (the launcher runs on the head)."""
    return head_is_local or plan.head not in plan.spec.hostfile.names


def _probe_local(plan: Plan, opts: PreflightOptions, log: Path) -> _Probe:
    """The probe on this machine (the head, where the launcher runs)."""
    host = plan.head
    argv = probe_argv(plan, True, opts)
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=opts.timeout_s,
                              stdin=subprocess.DEVNULL, errors="replace")
    except FileNotFoundError:
        return _Probe(host, "local", None, _probe_failure(host, 127, ["python3: not found"]))
    except subprocess.TimeoutExpired:
        return _Probe(host, "local", None, Check("probe", FAIL, f"probe timed out after {opts.timeout_s:.0f}s"))
    log.write_text(f"$ python3 -c <probe> (local)\n{proc.stdout}{proc.stderr}# exit={proc.returncode}\n")
    facts = parse_probe_output(proc.stdout.splitlines())
    lines = (proc.stdout + proc.stderr).splitlines()
    return _Probe(host, "local", facts, None if facts else _probe_failure(host, proc.returncode, lines))


def _probe_ssh(remote: SshRunner, plan: Plan, hosts: Sequence[str], opts: PreflightOptions,
               log_path: Callable[[str], Path]) -> list[_Probe]:
    from glm45_launch.runtime.executor import run_on_hosts

    jobs = [(h, remote_command([probe_argv(plan, h == plan.head, opts)])) for h in hosts]
    results = run_on_hosts(remote, jobs, opts.parallel, log_path, None, opts.timeout_s)
    probes = []
    for r in results:
        if r.exit_code is None:
            probes.append(_Probe(r.host, "ssh", None, Check("ssh", FAIL, r.error or "no result")))
            continue
        if r.error:  # the remote `timeout` fired (exit 124)
            probes.append(_Probe(r.host, "ssh", None, Check("probe", FAIL, r.error)))
            continue
        facts = parse_probe_output(r.output_tail)
        probes.append(_Probe(r.host, "ssh", facts, None if facts else _probe_failure(r.host, r.exit_code,
                                                                                       r.output_tail)))
    return probes


def _run_libs(plan: Plan) -> Check:
    try:
        from glm45_launch.checks.libs import check_libraries

        report = check_libraries(plan)
    except Exception as exc:  # noqa: BLE001 - a broken library check is a warning, not a crash
        return Check("libs", WARN, f"megatron-core/sglang checks crashed: {type(exc).__name__}: {exc}")
    return lib_checks([p.message for p in report.problems], report.notes)


def run_preflight(
    plan: Plan, ssh: SshOptions, opts: PreflightOptions, log_dir: Path, remote: SshRunner | None = None,
) -> PreflightReport:
    """Probe every host at once and judge the facts: the head here when it is this machine
    (:func:`cluster.is_local_address`, read from /proc) or not in the hostfile, the other
    hostfile hosts over SSH."""
    start = time.monotonic()
    remote = remote or SshRunner(ssh)
    head = plan.head
    listed = list(dict.fromkeys(plan.spec.hostfile.names))
    head_here = head_probed_here(plan, is_local_address(head))
    ssh_hosts = [h for h in listed if not (h == head and head_here)]

    def log_path(host: str) -> Path:
        return log_dir / f"{'head' if host == head else host.replace(':', '_')}.log"

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="preflight") as pool:
        local = pool.submit(_probe_local, plan, opts, log_path(head)) if head_here else None
        libs = pool.submit(_run_libs, plan) if opts.libs else None
        probes = _probe_ssh(remote, plan, ssh_hosts, opts, log_path) if ssh_hosts else []
        if local is not None:
            probes.insert(0, local.result())
        lib_check = libs.result() if libs is not None else None

    by_host = {p.host: p for p in probes}
    ref = by_host[head] if head in by_host and by_host[head].facts else next((p for p in probes if p.facts), None)
    reports = []
    for host in [head, *[h for h in listed if h != head]]:
        probe = by_host[host]
        is_head = host == head
        report = HostReport(host, "head" if is_head else "worker", probe.via)
        if probe.via == "ssh":
            report.checks.append(probe.error if probe.error and probe.error.name == "ssh"
                                 else Check("ssh", OK, f"{ssh.user}@{host}"))
        else:
            why = "is this machine" if head in listed else "is not in the hostfile"
            report.checks.append(Check("ssh", OK, f"not needed: the head {why} (probed here)"))
        if probe.error and probe.error.name != "ssh":
            report.checks.append(probe.error)
        if probe.facts is not None:
            report.checks += evaluate(plan, host, probe.facts, is_head, probe.via, opts,
                                      ref.host if ref else None, ref.facts if ref else None)
        if is_head and lib_check is not None:
            report.checks.append(lib_check)
        reports.append(report)
    return PreflightReport(reports, time.monotonic() - start)


# --- output -----------------------------------------------------------------------------------

_STYLE = {OK: "[green]ok[/]", WARN: "[yellow]warn[/]", FAIL: "[bold red]FAIL[/]"}


def print_report(report: PreflightReport, rich_console: Any) -> None:
    """One row per host, a column per check group; then every warning and failure in full."""
    from rich.markup import escape
    from rich.table import Table

    groups = [g for g in GROUPS if any(h.group_status(g) for h in report.hosts)]
    table = Table(title=f"glm45-launch preflight ({report.duration_s:.1f}s)", title_justify="left")
    for col in ("host", "role", *groups):
        table.add_column(col)
    for h in report.hosts:
        cells = [_STYLE[s] if (s := h.group_status(g)) else "-" for g in groups]
        table.add_row(escape(h.host), h.role, *cells)
    rich_console.print(table)
    for status in (FAIL, WARN):
        for host, check in report.problems(status):
            rich_console.print(f"  {_STYLE[status]} {escape(host)} {escape(check.name)}: {escape(check.detail)}",
                               soft_wrap=True)
    verdict = "[green]preflight passed[/]" if report.ok else "[bold red]preflight failed[/]"
    rich_console.print(f"{verdict}: {len(report.hosts)} host(s), {len(report.problems(FAIL))} failure(s), "
                       f"{len(report.problems(WARN))} warning(s)")


def preflight_or_raise(
    plan: Plan, ssh: SshOptions, opts: PreflightOptions, run_dir: Path, rich_console: Any,
) -> PreflightReport:
    """``up``'s first phase: probe, print, save ``preflight.json``; raise when a check failed."""
    report = run_preflight(plan, ssh, opts, run_dir / "preflight")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "preflight.json").write_text(json.dumps(report.to_json(), indent=2))
    print_report(report, rich_console)
    if not report.ok:
        raise LaunchError(f"preflight failed, nothing was started: {report.summary()} "
                          "(--skip-preflight to launch anyway)", exit_code=1)
    return report
