"""The preflight probe: what one host reports about itself, as one JSON line.

Runs on every host as ``python3 -c PROGRAM CONFIG`` (over SSH, or here for the head), where
PROGRAM is ``portowner.py`` followed by this file (:func:`glm45_launch.checks.programs.probe_program`)
and CONFIG is ``preflight.probe_config``'s JSON. Standard library only, Python 3.6 syntax
(whatever ``python3`` a node has); it never raises (each part is guarded) and its last
stdout line is ``cfg["marker"]`` + JSON. Subprocesses get their own timeout so one hung
nvidia-smi cannot eat the whole remote ``timeout`` and lose the rest of the report.

Also: which machine this is (hostname, machine-id, boot id, the address ssh reached); the
job's modules imported by ``programs/imports.py`` with the job's runtime env applied (started
first, collected last: it overlaps the rest); the processes the kill commands before ``ray
start`` would hit that Ray did not start; ``rsync --version`` when asked.
"""
# ruff: noqa: UP031, UP021, BLE001 - Python 3.6 syntax (no text=, %-formatting); the probe never raises
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys

if "port_report" not in globals():  # run on its own (tests); bundled, portowner.py precedes this file
    from glm45_launch.checks.portowner import port_report

os.dup2(1, 2)  # one stream: ssh's stdout and stderr readers never interleave inside the report line
cfg = json.loads(sys.argv[1])
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


def read_first(*paths):
    for path in paths:
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text:
            return text
    return None


def identity():
    # Which machine this is, whatever name reached it: two hostfile lines with one identity are one host.
    conn = (os.environ.get("SSH_CONNECTION") or "").split()
    out["identity"] = {"hostname": socket.gethostname(), "machine_id": read_first("/etc/machine-id",
                       "/var/lib/dbus/machine-id"), "boot_id": read_first("/proc/sys/kernel/random/boot_id"),
                       "address": conn[2] if len(conn) == 4 else None}


_VAR = re.compile(r"\$(\w+|\{[^}]*\})", re.ASCII)


def job_env():
    """This session's environment as the job's Ray workers get it: the start step's exports, then
    the runtime env's variables in Ray's order, each expanded as Ray 2.60 update_envs does
    (os.path.expandvars against the environment so far, then any ${X} left becomes "")."""
    env = dict(os.environ)
    env.update(dict(cfg["imports"]["base_env"]))

    def sub(m):
        name = m.group(1)[1:-1] if m.group(1).startswith("{") else m.group(1)
        return env[name] if name in env else m.group(0)

    for key, value in cfg["imports"]["env_vars"]:
        env[key] = re.sub(r"\$\{[A-Z0-9_]+\}", "", _VAR.sub(sub, value))
    return env


IMPORT_MARK = "GLM45-IMPORTS "
importer = None


def start_imports():
    """Start ``python3 -c 'import ray, ...'`` with the job's env (collected at the end, so it
    overlaps the rest of the probe). torch and the framework only where this python3 has them,
    and only located unless ``cfg["imports"]["all"]``."""
    global importer
    try:
        import importlib.util as util
        have = lambda m: util.find_spec(m) is not None  # noqa: E731
    except ImportError:
        have = lambda m: False  # noqa: E731
    optional = cfg["imports"]["optional"]
    mods = ["ray"] + [m for m in optional if have(m)]
    words = ["ray"] + [m if cfg["imports"]["all"] else "?" + m for m in mods[1:]]
    env = job_env()
    py = shutil.which("python3", path=env.get("PATH", ""))
    out["imports"] = {"modules": mods, "imported": [w for w in words if w[0] != "?"], "skipped": [m for m in optional if m not in mods], "python": py,
                      "pythonpath": env.get("PYTHONPATH")}
    if py:
        importer = subprocess.Popen([py, "-c", cfg["imports"]["program"], IMPORT_MARK] + words,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    universal_newlines=True, env=env, cwd="/")


def finish_imports():
    if importer is None:
        return
    try:
        text = importer.communicate(timeout=cfg["cmd_timeout"])[0]
    except subprocess.TimeoutExpired:
        importer.kill()
        importer.communicate()
        out["imports"]["error"] = "timed out after %ss" % cfg["cmd_timeout"]
        return
    found = [ln[len(IMPORT_MARK):] for ln in text.splitlines() if ln.startswith(IMPORT_MARK)]
    if found:
        out["imports"]["result"] = json.loads(found[-1])
    else:
        tail = " | ".join(ln for ln in text.splitlines()[-3:] if ln.strip())[-300:]
        out["imports"]["error"] = "exit %s: %s" % (importer.returncode, tail or "no output")


def stat_of(pid):
    with open("/proc/%s/stat" % pid) as f:
        stat = f.read()
    rest = stat.rsplit(")", 1)[1].split()
    return stat[stat.index("(") + 1:stat.rindex(")")], rest[0], int(rest[1])


def cmdline_of(pid):
    try:
        with open("/proc/%s/cmdline" % pid, "rb") as f:
            return " ".join(f.read().decode("utf-8", "replace").split("\0")).strip()
    except OSError:
        return ""


def is_ray(comm, cmdline):
    # host_checks.is_ray_process, restated (the probe imports nothing of the launcher)
    if comm in cfg["ray"]["daemons"] or comm.startswith("ray::"):
        return True
    argv0 = os.path.basename(cmdline.split(" ", 1)[0]) if cmdline else ""
    return (comm.startswith("python") or argv0.startswith("python")) and any(
        m in cmdline for m in cfg["ray"]["markers"])


def victims():
    """Processes the cleanup's kill commands would hit that Ray did not start (not Ray's, not
    below a Ray process, not this probe, its children or its ancestors: the launcher)."""
    procs = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                procs[int(name)] = stat_of(name)
            except (OSError, ValueError, IndexError):
                pass
    me = os.getpid()
    mine = set()
    pid = me
    while pid > 0 and pid not in mine:
        mine.add(pid)
        pid = procs.get(pid, ("", "", 0))[2]
    found, seen = [], set()
    for kill in cfg["kills"]:
        flags = re.IGNORECASE if kill["ignore_case"] else 0
        for pid in sorted(procs):
            comm, state, ppid = procs[pid]
            if pid in mine or pid in seen or state == "Z":
                continue
            cmdline = cmdline_of(pid)
            text = (cmdline or comm) if kill["full"] else comm[:15]
            hit = re.fullmatch(kill["pattern"], text, flags) if kill["exact"] else \
                re.search(kill["pattern"], text, flags)
            if not hit:
                continue
            chain, up, ours = [], pid, False
            while up > 0 and up not in chain:
                chain.append(up)
                if up == me:
                    ours = True
                    break
                c = procs.get(up)
                if c is None:
                    break
                if is_ray(c[0], cmdline_of(up)):
                    ours = True
                    break
                up = c[2]
            seen.add(pid)
            if not ours:
                found.append({"pid": pid, "comm": comm, "cmdline": cmdline[:200], "by": kill["command"]})
    out["victims"] = found


def rsync():
    path = shutil.which("rsync")
    out["rsync"] = {"path": path, "version": run([path, "--version"]) if path else None}


guard("identity", identity)
if cfg.get("imports"):
    guard("imports", start_imports)
for name, fn in (("packages", packages), ("ray", ray), ("gpus", gpus), ("env", env), ("disk", disk),
                 ("ports", ports)):
    guard(name, fn)
if cfg.get("kills"):
    guard("victims", victims)
if cfg.get("rsync"):
    guard("rsync", rsync)
if cfg.get("imports"):
    guard("imports", finish_imports)
guard("paths", lambda: out.__setitem__("paths", dict((p, kind(p)) for p in cfg["paths"])))
sys.stdout.write(cfg["marker"] + json.dumps(out) + "\n")
sys.stdout.flush()
