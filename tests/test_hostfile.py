"""The MPI hostfile parser: every accepted form, every rejection with its exact message."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from glm45_launch.core.hostfile import Host, Hostfile, load_hostfile, parse_hostfile_text
from glm45_launch.errors import LaunchError


def write(tmp_path: Path, data: str | bytes, name: str = "hosts") -> Path:
    path = tmp_path / name
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_bytes(data.encode())
    return path


def rejected(tmp_path: Path, data: str | bytes, name: str = "hosts") -> str:
    """Load ``data`` as a hostfile that must be refused; return the message."""
    path = write(tmp_path, data, name)
    with pytest.raises(LaunchError) as info:
        load_hostfile(path)
    message = str(info.value)
    assert "\n" not in message and info.value.exit_code == 2
    return message


# --- accepted forms ------------------------------------------------------------------------

ACCEPTED = [
    pytest.param("node1\n", [Host("node1", None, None, 1)], id="bare-host"),
    pytest.param("10.0.0.1 slots=8\n", [Host("10.0.0.1", 8, None, 1)], id="slots"),
    pytest.param("10.0.0.1 slots=8 max_slots=16\n", [Host("10.0.0.1", 8, 16, 1)], id="max_slots"),
    pytest.param("10.0.0.1 slots=4 max-slots=4\n", [Host("10.0.0.1", 4, 4, 1)], id="max-slots"),
    pytest.param("10.0.0.1 max_slots=8\n", [Host("10.0.0.1", None, 8, 1)], id="max_slots-alone"),
    pytest.param("10.0.0.1 max_slots=16 slots=8\n", [Host("10.0.0.1", 8, 16, 1)], id="keys-any-order"),
    pytest.param("node1:4\n", [Host("node1", 4, None, 1)], id="host:N"),
    pytest.param("10.0.0.7:8\n", [Host("10.0.0.7", 8, None, 1)], id="ipv4:N"),
    pytest.param("[fe80::1]:8\n", [Host("fe80::1", 8, None, 1)], id="[v6]:N"),
    pytest.param("[2001:db8::5]\n", [Host("2001:db8::5", None, None, 1)], id="[v6]"),
    pytest.param("2001:db8::1 slots=8\n", [Host("2001:db8::1", 8, None, 1)], id="bare-ipv6"),
    pytest.param("::1\n", [Host("::1", None, None, 1)], id="ipv6-loopback"),
    pytest.param("fe80::1%eth0\n", [Host("fe80::1%eth0", None, None, 1)], id="ipv6-zone"),
    pytest.param("node-01.rack.local slots=8\n", [Host("node-01.rack.local", 8, None, 1)], id="fqdn"),
    pytest.param("gpu_node_7\n", [Host("gpu_node_7", None, None, 1)], id="underscore"),
    pytest.param("node1.rack.\n", [Host("node1.rack.", None, None, 1)], id="trailing-dot"),
    pytest.param(
        "# rack A\n10.0.0.1 slots=8\n  # indented comment\n10.0.0.2 slots=8\n",
        [Host("10.0.0.1", 8, None, 2), Host("10.0.0.2", 8, None, 4)],
        id="full-line-comments",
    ),
    pytest.param(
        "10.0.0.1 slots=8 # head\n10.0.0.2# no space\n",
        [Host("10.0.0.1", 8, None, 1), Host("10.0.0.2", None, None, 2)],
        id="trailing-comments",
    ),
    pytest.param(
        "\n\n10.0.0.1\n   \n\t\n10.0.0.2\n\n",
        [Host("10.0.0.1", None, None, 3), Host("10.0.0.2", None, None, 6)],
        id="blank-lines",
    ),
    pytest.param(
        "\t10.0.0.1\tslots=8\t\tmax_slots=8 \n  10.0.0.2   slots=8\n",
        [Host("10.0.0.1", 8, 8, 1), Host("10.0.0.2", 8, None, 2)],
        id="tabs-and-spaces",
    ),
    pytest.param(
        "10.0.0.1 slots=8\r\n10.0.0.2 slots=8\r\n",
        [Host("10.0.0.1", 8, None, 1), Host("10.0.0.2", 8, None, 2)],
        id="crlf",
    ),
    pytest.param("10.0.0.1", [Host("10.0.0.1", None, None, 1)], id="no-final-newline"),
]


@pytest.mark.parametrize(("text", "hosts"), ACCEPTED)
def test_accepted_forms(tmp_path: Path, text: str, hosts: list[Host]) -> None:
    parsed = load_hostfile(write(tmp_path, text))
    assert parsed.hosts == tuple(hosts)
    assert parsed.path == str(tmp_path / "hosts")
    assert parse_hostfile_text(text, "x").hosts == tuple(hosts)


def test_mixed_forms_keep_file_order(tmp_path: Path) -> None:
    text = (
        "# a rack of mixed spellings\n"
        "node-01.rack.local slots=8\n"
        "10.0.0.2:8\n"
        "[2001:db8::3]:8   # v6 with slots\n"
        "2001:db8::4 slots=8 max-slots=8\n"
        "\n"
        "gpu5\tslots=8\r\n"
    )
    parsed = load_hostfile(write(tmp_path, text))
    assert parsed.names == ["node-01.rack.local", "10.0.0.2", "2001:db8::3", "2001:db8::4", "gpu5"]
    assert [h.line for h in parsed.hosts] == [2, 3, 4, 5, 7]
    assert parsed.gpus_per_node() == 8


def test_comment_text_never_becomes_a_host(tmp_path: Path) -> None:
    # \f, \v and U+2028 are line breaks to str.splitlines() but not to awk, sed or editors:
    # the rest of a comment line must stay a comment, and line numbers must match `sed -n`.
    text = "10.0.0.1\n# old rack\x0c10.0.0.9 slots=8\n# moved\u2028node9\n10.0.0.2;\n"
    message = rejected(tmp_path, text)
    assert message == f"{tmp_path / 'hosts'}:4: token '10.0.0.2;' has shell metacharacters or spaces"
    parsed = parse_hostfile_text(text.replace("10.0.0.2;", "10.0.0.2"))
    assert parsed.names == ["10.0.0.1", "10.0.0.2"]
    assert [h.line for h in parsed.hosts] == [1, 4]


# --- GPUs per node -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "override", "want"),
    [
        ("a\nb\n", None, 8),  # no slots anywhere: the recipe's 8
        ("a slots=4\nb slots=4\n", None, 4),
        ("a:4\nb slots=4\n", None, 4),  # host:N is slots too
        ("a slots=4\nb slots=8\n", 8, 8),  # mixed, but --gpus-per-node decides
        ("a\nb slots=8\n", 2, 2),
    ],
)
def test_gpus_per_node(text: str, override: int | None, want: int) -> None:
    assert parse_hostfile_text(text, "h").gpus_per_node(override) == want


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a slots=8\nb slots=8\nc slots=4\n", "h:3: slots=4 differs from slots=8 on line 1"),
        ("# c\na slots=8\n\nb\n", "h:4: no slots= differs from slots=8 on line 2"),
        ("a\nb:8\n", "h:2: slots=8 differs from no slots= on line 1"),
    ],
)
def test_mixed_slots_need_gpus_per_node(text: str, message: str) -> None:
    hostfile = parse_hostfile_text(text, "h")
    with pytest.raises(LaunchError) as info:
        hostfile.gpus_per_node()
    assert str(info.value) == message + " (GPUs per node must agree); give --gpus-per-node"


@pytest.mark.parametrize("bad", [0, -1])
def test_gpus_per_node_override_must_be_positive(bad: int) -> None:
    with pytest.raises(LaunchError, match=rf"^--gpus-per-node: must be >= 1, got {bad}$"):
        parse_hostfile_text("a\n").gpus_per_node(bad)


# --- rejections ----------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(LaunchError) as info:
        load_hostfile(tmp_path / "nope")
    assert str(info.value) == f"{tmp_path / 'nope'}: no such hostfile (give --hostfile)"


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(LaunchError) as info:
        load_hostfile(tmp_path)
    assert str(info.value) == f"{tmp_path}: is a directory, not a hostfile"


@pytest.mark.parametrize("text", ["", "\n\n", "# only\n   # comments\n\n", "\t \r\n"])
def test_no_hosts(tmp_path: Path, text: str) -> None:
    assert rejected(tmp_path, text) == f"{tmp_path / 'hosts'}: hostfile has no hosts"


def test_not_utf8_names_the_line(tmp_path: Path) -> None:
    message = rejected(tmp_path, b"10.0.0.1\n# caf\xe9\n")
    assert message == f"{tmp_path / 'hosts'}:2: not UTF-8 text (byte 14)"


def test_nul_byte_names_the_line(tmp_path: Path) -> None:
    message = rejected(tmp_path, b"10.0.0.1\n10.0.0.2\n10.0.\x000.3\n")
    assert message == f"{tmp_path / 'hosts'}:3: binary file (NUL byte), not a hostfile"


REJECTED = [
    # duplicates, by name, whatever the spelling of slots
    ("10.0.0.1\n10.0.0.2\n10.0.0.1 slots=8\n", 3, "duplicate host '10.0.0.1' (first on line 1)"),
    ("a:8\n# x\na slots=8\n", 3, "duplicate host 'a' (first on line 1)"),
    ("[::1]:8\n::1\n", 2, "duplicate host '::1' (first on line 1)"),
    # malformed slots
    ("a slots=0\n", 1, "malformed slots value '0' (want a whole number >= 1)"),
    ("a slots=-1\n", 1, "malformed slots value '-1' (want a whole number >= 1)"),
    ("a slots=x\n", 1, "malformed slots value 'x' (want a whole number >= 1)"),
    ("a slots=1.5\n", 1, "malformed slots value '1.5' (want a whole number >= 1)"),
    ("a slots=\n", 1, "malformed slots value '' (want a whole number >= 1)"),
    ("b\na:0\n", 2, "malformed slots value '0' (want a whole number >= 1)"),
    ("a:x\n", 1, "malformed slots value 'x' (want a whole number >= 1)"),
    ("[::1]:\n", 1, "malformed slots value '' (want a whole number >= 1)"),
    ("a max_slots=0\n", 1, "malformed max_slots value '0' (want a whole number >= 1)"),
    ("a max-slots=1.5\n", 1, "malformed max-slots value '1.5' (want a whole number >= 1)"),
    ("a slots=8 slots=8\n", 1, "slots given twice"),
    ("a:8 slots=8\n", 1, "slots given twice"),
    ("a max_slots=8 max-slots=4\n", 1, "max_slots given twice"),
    # max_slots < slots
    ("a slots=8 max_slots=4\n", 1, "max_slots=4 is less than slots=8"),
    ("a:8 max-slots=2\n", 1, "max_slots=2 is less than slots=8"),
    # unknown key=value, stray words
    ("a slots=8 gpus=8\n", 1, "unknown field 'gpus' (known: slots, max_slots)"),
    ("a cpu=4\n", 1, "unknown field 'cpu' (known: slots, max_slots)"),
    ("a slots=8 8\n", 1, "unexpected token '8' (want key=value)"),
    ("a b\n", 1, "unexpected token 'b' (want key=value)"),
    # not a host
    ("10.0.0.256\n", 1, "'10.0.0.256' is not an IPv4/IPv6 address or a DNS name"),
    ("-oProxyCommand\n", 1, "'-oProxyCommand' is not an IPv4/IPv6 address or a DNS name"),
    ("node-\n", 1, "'node-' is not an IPv4/IPv6 address or a DNS name"),
    ("a..b\n", 1, "'a..b' is not an IPv4/IPv6 address or a DNS name"),
    ("slots=8\n", 1, "'slots=8' is not an IPv4/IPv6 address or a DNS name"),
    ("a:b:c\n", 1, "'a:b:c' is not an IPv4/IPv6 address or a DNS name"),
    ("[::1\n", 1, "malformed host '[::1'"),
]


@pytest.mark.parametrize(("text", "line", "reason"), REJECTED)
def test_rejections_name_file_and_line(tmp_path: Path, text: str, line: int, reason: str) -> None:
    assert rejected(tmp_path, text) == f"{tmp_path / 'hosts'}:{line}: {reason}"


SHELL_TOKENS = [
    "a;b",
    "$(x)",
    "`id`",
    "a`b`",
    "'a'",
    '"a"',
    "a|b",
    "a&b",
    "a>b",
    "a<b",
    "a\\b",
    "a*",
    "a?",
    "~root",
    "a{b}",
    "${X}",
    "a!b",
    "a(b)",
]


@pytest.mark.parametrize("token", SHELL_TOKENS)
@pytest.mark.parametrize("where", ["host", "value"])
def test_shell_metacharacters_are_refused(tmp_path: Path, token: str, where: str) -> None:
    bad = token if where == "host" else f"slots={token}"
    message = rejected(tmp_path, f"10.0.0.1 slots=8\n\n{'' if where == 'host' else 'node1 '}{bad}\n")
    want = f"{tmp_path / 'hosts'}:3: token {bad!r} has shell metacharacters or spaces"
    assert message == want


def test_first_bad_line_wins(tmp_path: Path) -> None:
    message = rejected(tmp_path, "a\nb slots=0\nc;d\na\n")
    assert message.startswith(f"{tmp_path / 'hosts'}:2: ")


def test_message_names_the_path_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "a slots=0\n", "rack.hosts")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LaunchError) as info:
        load_hostfile("rack.hosts")
    assert str(info.value).startswith("rack.hosts:1: malformed slots")


# --- --include / --exclude -------------------------------------------------------------------

RACK = Hostfile("rack", tuple(Host(f"n{i}", 8, None, i) for i in range(1, 7)))


@pytest.mark.parametrize(
    ("include", "exclude", "want"),
    [
        (("n2,n4",), (), ["n2", "n4"]),
        (("n4@n2",), (), ["n2", "n4"]),  # file order, not option order
        (("n1", "n3,n5"), (), ["n1", "n3", "n5"]),  # repeatable
        (("n6@n1,n3",), (), ["n1", "n3", "n6"]),
        ((), ("n1",), ["n2", "n3", "n4", "n5", "n6"]),
        ((), ("n1,n2@n3",), ["n4", "n5", "n6"]),
        ((), ("n5", "n6"), ["n1", "n2", "n3", "n4"]),
        ((), (), ["n1", "n2", "n3", "n4", "n5", "n6"]),
        (("n3,,n3",), (), ["n3"]),
    ],
)
def test_select(include: tuple[str, ...], exclude: tuple[str, ...], want: list[str]) -> None:
    selected = RACK.select(include, exclude)
    assert selected.names == want
    assert selected.path == "rack"
    assert [h.line for h in selected.hosts] == [int(n[1:]) for n in want]  # lines kept


@pytest.mark.parametrize(
    ("include", "exclude", "message"),
    [
        (("n1,n9",), (), "--include: host 'n9' is not in rack"),
        ((), ("n7",), "--exclude: host 'n7' is not in rack"),
        (("n1",), ("n2",), "--include and --exclude are mutually exclusive"),
        ((), ("n1,n2,n3@n4@n5", "n6"), "rack: no hosts left after --include/--exclude"),
    ],
)
def test_select_errors(include: tuple[str, ...], exclude: tuple[str, ...], message: str) -> None:
    with pytest.raises(LaunchError) as info:
        RACK.select(include, exclude)
    assert str(info.value) == message


def test_select_then_gpus_per_node_sees_only_the_kept_hosts() -> None:
    hostfile = parse_hostfile_text("a slots=8\nb slots=4\nc slots=8\n", "h")
    assert hostfile.select((), ("b",)).gpus_per_node() == 8
    with pytest.raises(LaunchError, match=re.escape("h:2: slots=4 differs from slots=8 on line 1")):
        hostfile.gpus_per_node()
