"""PID 1 of a rack-in-a-box host: set up its private mounts, say "ready", then reap orphans.

Run by ``glm45_launch.testing.rackbox`` as ``python3 -I -S rackbox_init.py CONFIG`` inside the
host's fresh (private-propagation) mount, PID and UTS namespaces, so none of these mounts is
seen outside. Being PID 1 it ignores SIGKILL from inside the host: a ``pkill -9 python`` there
cannot take the host down. Run by this interpreter (``sys.executable``); standard library only, and few imports: a 200-host box starts 200.
"""

import ctypes
import json
import os
import sys
import time

PR_SET_NAME = 15
MS_BIND = 4096
MS_NOSUID = 2
MS_NODEV = 4
INIT_COMM = b"rackbox-init"  # a name pkill patterns like "python" or "ray" do not match


def main(cfg):
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    libc.prctl(PR_SET_NAME, INIT_COMM, 0, 0, 0)

    def mount(src, dst, fstype=None, flags=MS_BIND, data=""):
        if libc.mount(src.encode(), dst.encode(), fstype and fstype.encode(), flags, data.encode() or None):
            err = ctypes.get_errno()
            raise OSError(err, f"mount {src} on {dst}: {os.strerror(err)}")

    name = cfg["hostname"].encode()
    libc.sethostname(name, len(name))
    # Paths under /tmp vanish once the host's own /tmp is mounted: hold them open first and
    # bind them back at the same path inside the new /tmp.
    hidden = [p for p in cfg["share"] if p == "/tmp" or p.startswith("/tmp/")]
    fds = {p: os.open(p, os.O_PATH | os.O_DIRECTORY) for p in hidden}
    mount(cfg["tmp"], "/tmp")
    for path, fd in fds.items():
        os.makedirs(path, exist_ok=True)
        mount(f"/proc/self/fd/{fd}", path)
        os.close(fd)
    mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    if cfg["home"]:
        home = cfg["home"]
        mount("overlay", home, "overlay", 0,
              f"lowerdir={home},upperdir={cfg['home_upper']},workdir={cfg['home_work']}")
        mount(cfg["dotssh"], home + "/.ssh")
    mount(cfg["etc_hosts"], "/etc/hosts")
    mount(cfg["resolv_conf"], "/etc/resolv.conf")

    os.chdir("/")
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):  # keep stderr (init.log) for a late traceback
        os.dup2(devnull, fd)
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            time.sleep(0.2)  # no children right now; orphans may be re-parented to us later
        except InterruptedError:
            pass


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("internal entry point: a RackBox host's PID 1 (rackbox_init.py CONFIG)")
    main(json.loads(sys.argv[1]))
