"""The preflight probe: what one host reports about itself, as one JSON line.

Runs on every host as ``python3 -c PROGRAM CONFIG`` (over SSH, or here for the head), where
PROGRAM is ``portowner.py`` followed by this file (:func:`glm45_launch.checks.programs.probe_program`)
and CONFIG is ``preflight.probe_config``'s JSON. Standard library only, Python 3.6 syntax
(whatever ``python3`` a node has); it never raises (each part is guarded) and its last
stdout line is ``cfg["marker"]`` + JSON. Subprocesses get their own timeout so one hung
nvidia-smi cannot eat the whole remote ``timeout`` and lose the rest of the report.
"""
# ruff: noqa: UP031, UP021, BLE001 - Python 3.6 syntax (no text=, %-formatting); the probe never raises
import json
import os
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


for name, fn in (("packages", packages), ("ray", ray), ("gpus", gpus), ("env", env), ("disk", disk),
                 ("ports", ports)):
    guard(name, fn)
guard("paths", lambda: out.__setitem__("paths", dict((p, kind(p)) for p in cfg["paths"])))
sys.stdout.write(cfg["marker"] + json.dumps(out) + "\n")
sys.stdout.flush()
