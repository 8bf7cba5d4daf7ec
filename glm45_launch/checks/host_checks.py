"""One host's preflight checks: its probe's facts judged against the plan (pure).

Versions against the head's, GPUs and NVLink, the train args' paths, the runtime env's
``${VAR}``s, free space; on the head the Ray/dashboard ports and the entry script.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from glm45_launch.checks.preflight_report import FAIL, OK, VERSIONED, WARN, Check, PreflightOptions
from glm45_launch.core.flags import flag_values
from glm45_launch.core.plan import Plan
from glm45_launch.core.runtime_env import RUNTIME_ENV, env_ref_sources, env_refs, ray_env_order

PACKAGES = ("ray", "torch", "sglang", "megatron-core")  # distribution names, read by importlib.metadata
LATEST = "latest_checkpointed_iteration.txt"
NOT_INSTALLED = "not installed"
NO_RAY = "not found on PATH"
GIB = 1024**3


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


def entry_path(plan: Plan) -> str:
    return os.path.join(plan.spec.workdir, plan.spec.entry)



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


def nvlink_labels(topo: str) -> list[str]:
    """The NVLink labels (``NV18``...) in ``nvidia-smi topo -m`` output, sorted ([]: no NVLink)."""
    return sorted(set(re.findall(r"\bNV\d+\b", topo)))


def gpu_checks(facts: Mapping[str, Any], expected: int, require: bool, trainer: int | None = None,
               nvls: bool = False) -> list[Check]:
    """GPU count (``nvidia-smi -L``) against the plan's GPUs per node and train.py's
    ``--num-gpus-per-node`` (``trainer``; slime/miles place rollout engines by it), and NVLink
    (``nvidia-smi topo -m``; ``nvls``: the runtime env turns NCCL NVLink SHARP on)."""
    missing = FAIL if require else WARN
    if not facts.get("nvidia_smi"):
        return [Check("gpus", missing, "nvidia-smi not found"), Check("nvlink", missing, "nvidia-smi not found")]
    code, text = facts.get("smi_list") or (None, "no output")
    if code != 0:
        first = next((ln for ln in text.splitlines() if ln.strip()), "no output")
        return [Check("gpus", FAIL, f"nvidia-smi -L failed (exit {code}): {first}"),
                Check("nvlink", missing, "skipped: nvidia-smi does not work")]
    count = sum(1 for ln in text.splitlines() if ln.startswith("GPU "))
    if count != expected:
        gpus = Check("gpus", FAIL, f"{count} GPUs, expected {expected} per node")
    elif trainer is not None and trainer != count:
        gpus = Check("gpus", FAIL, f"{count} GPUs, but train.py's --num-gpus-per-node is {trainer}: the rollout "
                     "engines would be placed as if every node had that many")
    else:
        gpus = Check("gpus", OK, f"{count} GPUs")
    code, topo = facts.get("smi_topo") or (None, "")
    links = nvlink_labels(topo)
    if code != 0:
        nvlink = Check("nvlink", missing, f"nvidia-smi topo -m failed (exit {code})")
    elif links:
        nvlink = Check("nvlink", OK, "NVLink " + "/".join(links))
    elif count <= 1:
        nvlink = Check("nvlink", OK, "single GPU")
    else:
        why = "NCCL_NVLS_ENABLE=1, from the head's NVLink" if nvls else "NCCL_P2P_LEVEL=NVL"
        nvlink = Check("nvlink", missing, f"no NVLink between the GPUs (the runtime env sets {why})")
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
    if not state["held"] and plan.spec.external_ray:
        return Check(name, FAIL, f"{where} free: --external-ray needs the running cluster to submit to")
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
    if plan.spec.external_ray:
        return Check(name, OK, f"{where} held by Ray's {ray}: the running cluster --external-ray submits to")
    if plan.spec.cleanup:
        return Check(name, WARN, f"{where} held by Ray's {ray}: the cleanup will stop the running cluster")
    return Check(name, FAIL, f"{where} held by Ray's {ray} and --no-cleanup: nothing stops it "
                 "(`glm45-launch down`, or drop --no-cleanup)")


def head_checks(plan: Plan, facts: Mapping[str, Any]) -> list[Check]:
    """Head only: the Ray/dashboard ports are free (or held by a Ray the cleanup stops) and the entry exists."""
    held = facts.get("ports") or {}
    checks = [port_check(plan, host, port, what, held.get(f"{host}:{port}")) for host, port, what in plan.cluster.head_ports]
    entry = entry_path(plan)
    kind = (facts.get("paths") or {}).get(entry, "not probed")
    checks.append(Check("entry", OK, entry) if kind == "file" else
                  Check("entry", FAIL, f"{entry}: {kind} (--workdir/--entry: the job runs `python3 {plan.spec.entry}` "
                        "there)"))
    return checks


KILLERS = ("pkill", "killall")
_SIGNAL = re.compile(r"-(\d+|[A-Z][A-Z0-9+-]*)")  # -9, -KILL, -SIGKILL, -RTMIN+1


def kill_queries(commands: Sequence[Sequence[str]]) -> list[dict[str, Any]]:
    """The processes each ``pkill``/``killall`` of ``commands`` selects, as pgrep does (pattern
    against the 15-character name, or the command line with ``-f``; killall: exact names), for
    the probe to list. A command with options not read here is left out (never guessed)."""
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for argv in commands:
        if not argv or argv[0] not in KILLERS:
            continue
        query = {"full": False, "exact": argv[0] == "killall", "ignore_case": False}
        names: list[str] = []
        words, i, readable = list(argv[1:]), 0, True
        while i < len(words):
            word = words[i]
            if word == "--signal" or (word == "-s" and argv[0] == "killall"):
                i += 1
            elif word.startswith("--signal=") or _SIGNAL.fullmatch(word):
                pass
            elif argv[0] == "pkill" and word in ("-f", "--full", "-x", "--exact", "-i", "--ignore-case"):
                query[{"-f": "full", "-x": "exact", "-i": "ignore_case"}.get(word, word[2:].replace("-", "_"))] = True
            elif word.startswith("-"):
                readable = False
            else:
                names.append(word if argv[0] == "pkill" else re.escape(word))
            i += 1
        if not readable or not names or (argv[0] == "pkill" and len(names) > 1):
            continue
        for pattern in names:
            try:
                re.compile(pattern)
            except re.error:
                continue
            key = (pattern, query["full"], query["exact"], query["ignore_case"])
            out.setdefault(key, {**query, "pattern": pattern, "command": " ".join(argv)})
    return list(out.values())


def cleanup_check(facts: Mapping[str, Any], is_head: bool, shown: int = 3) -> Check | None:
    """The kill commands before ``ray start`` (the recipe's ``pkill -9 python``) against the
    processes here that Ray did not start: a warning naming a few (they will be killed)."""
    found = facts.get("victims")
    if found is None:
        return None
    what = "the cleanup" if is_head else "the worker command"
    if not found:
        return Check("cleanup", OK, f"{what}'s kill commands match only Ray's processes here")
    def command(v: Mapping[str, Any]) -> str:
        argv0, _, rest = str(v.get("cmdline") or v.get("comm")).partition(" ")
        return _short(f"{os.path.basename(argv0)} {rest}".strip(), 100)

    listed = ", ".join(f"pid {v.get('pid')} `{command(v)}`" for v in found[:shown])
    more = f" and {len(found) - shown} more" if len(found) > shown else ""
    commands = ", ".join(f"`{c}`" for c in dict.fromkeys(str(v.get("by")) for v in found))
    return Check("cleanup", WARN, f"{what} ({commands}) will also kill {len(found)} process(es) Ray did not "
                 f"start: {listed}{more} (stop them first, or --no-cleanup)")


def imports_check(facts: Mapping[str, Any]) -> Check | None:
    """``python3 -c 'import ray, ...'`` with the job's runtime env applied (its PYTHONPATH
    replaces the node's): Ray's workers and the job's driver import these (torch and the
    framework located on the job's ``sys.path`` unless ``import_all``)."""
    info = facts.get("imports")
    if info is None:
        return None
    mods = list(info.get("modules") or ["ray"])
    skipped = list(info.get("skipped") or [])
    env = "with the job's runtime env"
    path = f"; its PYTHONPATH is {info['pythonpath']}" if info.get("pythonpath") else ""
    if not info.get("python"):
        return Check("imports", FAIL, f"{env}, no python3 on PATH: the job's driver cannot start{path}")
    if info.get("error"):
        return Check("imports", FAIL, f"{env}, `python3 -c 'import {', '.join(mods)}'` gave no answer: "
                     f"{info['error']}{path}")
    result = info.get("result") or {}
    bad = [(m, e) for m, e in result.items() if e]
    if bad:
        mod, error = bad[0]
        also = f" (nor {', '.join(m for m, _ in bad[1:])})" if len(bad) > 1 else ""
        return Check("imports", FAIL, f"{env}, python3 cannot import {mod}: {error}{also}{path}")
    imported = list(info.get("imported") or mods)
    located = [m for m in mods if m not in imported]
    found = f", {' and '.join(located)} {'is' if len(located) == 1 else 'are'} found" if located else ""
    note = f"; {', '.join(skipped)} not installed here: not checked" if skipped else ""
    return Check("imports", OK, f"{', '.join(imported)} {'imports' if len(imported) == 1 else 'import'}{found} "
                 f"{env} ({info['python']}){note}")


def rsync_check(facts: Mapping[str, Any]) -> Check | None:
    """``rsync --version`` (prepare copies the checkpoints to every node's local disk with it)."""
    info = facts.get("rsync")
    if info is None:
        return None
    if not info.get("path"):
        return Check("rsync", FAIL, "rsync not found on PATH: prepare copies the checkpoints to each node with it")
    code, text = info.get("version") or (None, "no output")
    first = " ".join(next((ln for ln in str(text).splitlines() if ln.strip()), "no output").split())
    if code != 0:
        return Check("rsync", FAIL, f"`{info['path']} --version` exit {code}: {first}")
    return Check("rsync", OK, f"{first} ({info['path']})")


def identity_key(facts: Mapping[str, Any] | None) -> tuple[Any, ...] | None:
    """Which machine a probe ran on: hostname, /etc/machine-id and the kernel's boot id (cloned
    images share a machine-id, containers of one kernel a boot id; all three: one machine)."""
    ident = (facts or {}).get("identity")
    if not ident:
        return None
    key = (ident.get("hostname"), ident.get("machine_id"), ident.get("boot_id"))
    return key if any(key) else None


def identity_checks(hosts: Sequence[str], facts: Mapping[str, Mapping[str, Any] | None],
                    where: Mapping[str, str]) -> dict[str, Check]:
    """Two hostfile lines (an IP and an ssh-config alias of it, two names of one machine) that
    reach the same machine: the later one fails, naming both (``where``: each host's line)."""
    first: dict[tuple[Any, ...], str] = {}
    out: dict[str, Check] = {}
    for host in hosts:
        key = identity_key(facts.get(host))
        if key is None:
            continue
        ident = (facts[host] or {})["identity"]
        about = f"hostname {key[0]}, machine-id {str(key[1])[:12]}"
        if key in first:
            other = first[key]
            at = ident.get("address") or ((facts[other] or {}).get("identity") or {}).get("address")
            out[host] = Check("identity", FAIL, f"{host} ({where.get(host, host)}) and {other} "
                              f"({where.get(other, other)}) are one machine ({about}"
                              f"{f', reached at {at}' if at else ''}): list it once")
        else:
            first[key] = host
            out[host] = Check("identity", OK, about)
    return out


def evaluate(
    plan: Plan, host: str, facts: Mapping[str, Any], is_head: bool, via: str, opts: PreflightOptions,
    ref_host: str | None, ref_facts: Mapping[str, Any] | None, paths: Sequence[PathSpec] | None = None,
) -> list[Check]:
    """Every check of one probed host, after ssh (pure); ``paths``: :func:`plan_paths`, when the
    caller has them already (a whole rack's report computes them once)."""
    checks = version_checks(host, facts, ref_host, ref_facts)
    env = dict(plan.env_vars)
    checks += gpu_checks(facts, plan.gpus_per_node, opts.require_gpus,
                         trainer=plan.job.trainer_gpus_per_node,
                         nvls=env.get("NCCL_NVLS_ENABLE") == "1")
    checks += path_checks(plan_paths(plan) if paths is None else paths, facts.get("paths") or {})
    checks += env_checks(plan, facts, is_head, via)
    checks.append(disk_check(facts, opts))
    if is_head:
        checks += head_checks(plan, facts)
    checks += [c for c in (imports_check(facts), cleanup_check(facts, is_head), rsync_check(facts)) if c]
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
