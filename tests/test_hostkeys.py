"""The known_hosts index (runtime/hostkeys.py) with real keys, real OpenSSH files and threads."""

from __future__ import annotations

import base64
import shutil
import subprocess
import threading
from pathlib import Path

import paramiko
import pytest

from glm45_launch.errors import LaunchError
from glm45_launch.runtime.hostkeys import KnownHosts, Verdict


def _ed25519(path: Path) -> paramiko.PKey:
    """A real ed25519 key (ssh-keygen), as paramiko loads it."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return paramiko.PKey.from_path(path)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> list[paramiko.PKey]:
    d = tmp_path_factory.mktemp("keys")
    return [_ed25519(d / f"k{i}") for i in range(3)] + [paramiko.ECDSAKey.generate()]


def line(names: str, key: paramiko.PKey, marker: str = "") -> str:
    return f"{marker + ' ' if marker else ''}{names} {key.get_name()} {key.get_base64()}\n"


def check(kh: KnownHosts, name: str, key: paramiko.PKey) -> Verdict:
    return kh.check(name, key.get_name(), key.asbytes()).verdict


def test_plain_names_lists_and_ports(tmp_path: Path, keys: list[paramiko.PKey]) -> None:
    a, b, c, _ = keys
    f = tmp_path / "known_hosts"
    f.write_text("# comment\n\n" + line("10.0.0.1,node1", a) + line("[10.0.0.2]:2222", b) + line("10.0.0.3", c))
    kh = KnownHosts([f])
    assert check(kh, "10.0.0.1", a) is Verdict.OK and check(kh, "NODE1", a) is Verdict.OK
    assert check(kh, "[10.0.0.2]:2222", b) is Verdict.OK
    assert check(kh, "10.0.0.2", b) is Verdict.UNKNOWN  # port 22 is another entry
    res = kh.check("10.0.0.1", b.get_name(), b.asbytes())
    assert res.verdict is Verdict.CHANGED and res.known[0].where == f"{f}:3"
    assert check(kh, "10.0.0.9", a) is Verdict.UNKNOWN


def test_hashed_entries_as_openssh_writes_them(tmp_path: Path, keys: list[paramiko.PKey]) -> None:
    """`ssh-keygen -H` hashes a file (Debian's HashKnownHosts default): every name still checks."""
    if not shutil.which("ssh-keygen"):
        pytest.skip("ssh-keygen not installed")
    a, b, _, d = keys
    f = tmp_path / "known_hosts"
    f.write_text(line("10.0.0.1", a) + line("[10.0.0.2]:2222", b) + line("10.0.0.4", d))
    subprocess.run(["ssh-keygen", "-H", "-f", str(f)], check=True, capture_output=True)
    assert all(ln.startswith("|1|") for ln in f.read_text().splitlines())
    kh = KnownHosts([f])
    assert check(kh, "10.0.0.1", a) is Verdict.OK
    assert check(kh, "[10.0.0.2]:2222", b) is Verdict.OK
    assert check(kh, "10.0.0.4", d) is Verdict.OK
    assert check(kh, "10.0.0.1", b) is Verdict.CHANGED
    assert check(kh, "10.0.0.5", a) is Verdict.UNKNOWN
    # A client is given no hashed line before the handshake (that needs the slow scan)...
    assert kh.trusted("10.0.0.4") == [] and [e.keytype for e in kh.trusted("10.0.0.4", every=True)] == [
        "ecdsa-sha2-nistp256"]
    # ...but the slow path finds them, so a mismatch is CHANGED with the known type.
    assert kh.check("10.0.0.4", a.get_name(), a.asbytes()).known_types == ["ecdsa-sha2-nistp256"]


def test_patterns_and_negation_match_like_openssh(tmp_path: Path, keys: list[paramiko.PKey]) -> None:
    a = keys[0]
    f = tmp_path / "known_hosts"
    f.write_text(line("10.1.*,!10.1.0.13,gpu-??", a))
    kh = KnownHosts([f])
    for name, want in [("10.1.0.7", True), ("10.1.0.13", False), ("gpu-07", True), ("gpu-107", False),
                       ("10.2.0.1", False)]:
        assert (check(kh, name, a) is Verdict.OK) is want, name
        # OpenSSH agrees (ssh-keygen -F looks names up the way ssh does).
        if shutil.which("ssh-keygen"):
            found = subprocess.run(["ssh-keygen", "-F", name, "-f", str(f)], capture_output=True).returncode == 0
            assert found is want, name
    assert [e.keytype for e in kh.trusted("gpu-01")] == ["ssh-ed25519"] and kh.trusted("10.1.0.13") == []


def test_revoked_and_cert_authority_are_refused(tmp_path: Path, keys: list[paramiko.PKey]) -> None:
    a, b, c, _ = keys
    f = tmp_path / "known_hosts"
    f.write_text(line("10.0.0.1", a) + line("*", a, "@revoked") + line("*.rack", b, "@cert-authority")
                 + line("10.0.0.3", c))
    kh = KnownHosts([f])
    res = kh.check("10.0.0.1", a.get_name(), a.asbytes())
    assert res.verdict is Verdict.REVOKED and res.known[0].where == f"{f}:2"  # even though line 1 lists it
    assert check(kh, "10.0.0.3", c) is Verdict.OK
    assert check(kh, "n1.rack", c) is Verdict.CA_ONLY  # a CA line names it, no key line does
    assert check(kh, "n1.rack", b) is Verdict.CA_ONLY  # the CA key itself is no host key either
    assert kh.trusted("10.0.0.1") == [] and kh.trusted("n1.rack") == []  # a client is never given those


def test_bad_lines_are_skipped_and_named(tmp_path: Path, keys: list[paramiko.PKey]) -> None:
    f = tmp_path / "known_hosts"
    f.write_text("onlyhost\n@weird host ssh-ed25519 AAAA\nh ssh-ed25519 !!notbase64\n" + line("ok", keys[0]))
    kh = KnownHosts([f, tmp_path / "missing"])
    assert check(kh, "ok", keys[0]) is Verdict.OK
    assert [s.split(": ", 1)[0] for s in kh.skipped] == [f"{f}:1", f"{f}:2", f"{f}:3"]


def test_unreadable_known_hosts_is_one_error(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    with pytest.raises(LaunchError, match="cannot read known_hosts"):
        KnownHosts([tmp_path / "dir"])


def test_record_appends_once_from_many_threads(tmp_path: Path, keys: list[paramiko.PKey]) -> None:
    a, b, c, _ = keys
    f = tmp_path / "known_hosts"
    f.write_text(line("10.0.0.1", a).rstrip("\n"))  # no final newline: recording must add one
    kh = KnownHosts([f], writable=f)
    hosts = [f"10.0.1.{i}" for i in range(40)]
    barrier = threading.Barrier(80)
    verdicts: list[Verdict] = []

    def record(host: str) -> None:
        barrier.wait()
        verdicts.append(kh.record(host, b.get_name(), b.asbytes()).verdict)

    threads = [threading.Thread(target=record, args=(h,)) for h in hosts * 2]  # every host twice at once
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert verdicts == [Verdict.OK] * 80
    lines = f.read_text().splitlines()
    assert lines[0] == line("10.0.0.1", a).strip() and len(lines) == 41
    assert sorted(ln.split()[0] for ln in lines[1:]) == sorted(hosts)
    assert all(ln.split()[2] == b.get_base64() for ln in lines[1:])
    # A fresh run reads them back; a changed key is never recorded.
    again = KnownHosts([f], writable=f)
    assert check(again, "10.0.1.7", b) is Verdict.OK
    assert again.record("10.0.1.7", c.get_name(), c.asbytes()).verdict is Verdict.CHANGED
    assert again.record("10.0.0.1", c.get_name(), c.asbytes()).verdict is Verdict.CHANGED
    assert len(f.read_text().splitlines()) == 41
    # The recorded format is OpenSSH's: ssh-keygen finds the new names.
    if shutil.which("ssh-keygen"):
        assert subprocess.run(["ssh-keygen", "-F", "10.0.1.39", "-f", str(f)], capture_output=True).returncode == 0


def test_record_into_a_new_file_is_private(tmp_path: Path, keys: list[paramiko.PKey]) -> None:
    f = tmp_path / "new" / "known_hosts"
    kh = KnownHosts([f], writable=f)
    assert kh.record("[h]:2222", keys[0].get_name(), keys[0].asbytes()).ok
    assert f.read_text() == f"[h]:2222 ssh-ed25519 {base64.b64encode(keys[0].asbytes()).decode()}\n"
    assert f.stat().st_mode & 0o777 == 0o600


def test_a_long_known_hosts_checks_by_lookup(tmp_path: Path, keys: list[paramiko.PKey]) -> None:
    """2048 lines, half hashed: a known host's check never scans the hashed lines."""
    a, b, _, _ = keys
    f = tmp_path / "known_hosts"
    filler = [line(f"10.9.{i // 256}.{i % 256}", b) for i in range(1024)]
    filler += [line(paramiko.HostKeys.hash_host(f"10.8.{i // 256}.{i % 256}"), b) for i in range(1023)]
    f.write_text("".join(filler) + line("10.0.0.1", a))
    kh = KnownHosts([f])
    assert check(kh, "10.0.0.1", a) is Verdict.OK
    assert kh._for_host == {}  # the slow path (one HMAC per hashed line) was not taken
    assert check(kh, "10.8.3.250", b) is Verdict.OK  # a hashed name: one HMAC per line holding that key
    assert check(kh, "10.0.0.1", b) is Verdict.CHANGED and "10.0.0.1" in kh._for_host
