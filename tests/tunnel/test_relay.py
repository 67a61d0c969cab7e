"""tunnel/relay.py: the relay's answers and listings are hostile (hypothesis), public keys are checked
against real ssh-keygen keys, forced-command paths stay one shell word, the authorized_keys line
reads back through OpenSSH's own parser, and the directory word through a real sh.
(The relay script itself and the forced/inline fallback: test_relayscript.py.)"""

from __future__ import annotations

import base64
import shlex
import struct
import subprocess
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from rtun.ssh.process import run_bounded
from rtun.tunnel import registry, relay
from rtun.tunnel.relayscript import STATUS

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HEX = "0123456789abcdef"
MID = "0123456789abcdef0123456789abcdef"
NONCE = "5" * 32
PRINTABLE = {chr(c) for c in range(0x20, 0x7F)}

file_names = st.text(HEX, min_size=32, max_size=32).map(lambda h: h + ".json")


# -- the status line ----------------------------------------------------------------------


@SETTINGS
@given(st.binary(max_size=300))
def test_a_reply_is_the_scripts_status_line_or_none(stdout: bytes) -> None:
    reply = relay.parse_reply(stdout)
    if reply is None:
        return
    assert stdout.startswith(STATUS) and reply.status in ("ok", "refused", "failed")
    assert set(reply.detail) <= PRINTABLE  # a terminal escape in the reason is shown, not obeyed
    assert stdout.endswith(reply.body) and len(reply.body) < len(stdout)


@SETTINGS
@given(st.sampled_from(["ok", "refused", "failed"]), st.text(max_size=100), st.binary(max_size=100))
def test_every_status_line_the_script_writes_is_read(status: str, detail: str, body: bytes) -> None:
    assume("\n" not in detail and "\r" not in detail)
    line = STATUS + status.encode() + (b": " + detail.encode() if detail else b"") + b"\n"
    reply = relay.parse_reply(line + body)
    assert reply is not None and (reply.status, reply.body) == (status, body)
    if set(detail) <= PRINTABLE - {"\\"}:
        assert reply.detail == detail


# -- listings -----------------------------------------------------------------------------


def listing(
    files: List[Tuple[str, bytes]], nonce: str = NONCE, seen: int = -1, unread: int = 0, ports: object = None
) -> bytes:
    """A listing as the relay script writes it."""
    head = b"".join(b"S " + name.encode() + b"\n" for name, _ in files)
    head += b"N %d %d\nC\n" % (len(files) if seen < 0 else seen, unread)
    sep = b"\n--rtun-" + nonce.encode() + b"--\n"
    body = b"".join(data + sep for _, data in files) + b"E\n"
    if ports is not None:
        body += b"P\n" + b"".join(b"L %04X\n" % p for p in ports)  # type: ignore[attr-defined]
    return head + body


@SETTINGS
@given(
    st.lists(st.tuples(file_names, st.binary(max_size=200)), max_size=6, unique_by=lambda f: f[0]),
    st.none() | st.sets(st.integers(1, 65535), max_size=5),
)
def test_a_listing_of_any_contents_gives_back_exactly_those_files(files, ports) -> None:
    sep = b"--rtun-" + NONCE.encode() + b"--"
    assume(all(sep not in data for _, data in files))  # the writers cannot know the nonce
    found = relay.parse_listing(listing(files, ports=ports), NONCE)
    assert found.files == files and found.problems == [] and found.cut is None
    assert found.listening == (None if ports is None else frozenset(ports))


@SETTINGS
@given(
    st.lists(st.tuples(file_names, st.binary(max_size=40)), min_size=1, max_size=4, unique_by=lambda f: f[0]),
    st.text(HEX, min_size=32, max_size=32),
)
def test_a_file_that_forges_another_nonces_separator_stays_one_file(files, forged: str) -> None:
    assume(forged != NONCE)
    fake = b"\n--rtun-" + forged.encode() + b"--\nE\n"
    files = [(name, data + fake + b"S " + name.encode()) for name, data in files]
    found = relay.parse_listing(listing(files), NONCE)
    assert found.files == files and found.problems == []


@SETTINGS
@given(st.binary(max_size=600), st.booleans())
def test_any_bytes_as_a_listing_give_valid_names_and_never_raise(body: bytes, truncated: bool) -> None:
    found = relay.parse_listing(body, NONCE, truncated)
    for name, data in found.files:
        assert registry.valid(registry.FILE_RE, name) and data in body
    assert found.listening is None or all(0 <= p <= 0xFFFF for p in found.listening)
    for text in found.problems + ([found.cut] if found.cut else []):
        assert set(text) <= PRINTABLE


@SETTINGS
@given(
    st.lists(st.tuples(file_names, st.binary(max_size=50)), min_size=1, max_size=5, unique_by=lambda f: f[0]),
    st.data(),
)
def test_a_listing_cut_anywhere_never_invents_a_file(files, data) -> None:
    sep = b"--rtun-" + NONCE.encode() + b"--"
    assume(all(sep not in content for _, content in files))
    whole = listing(files)
    cut = data.draw(st.integers(0, len(whole) - 1))
    found = relay.parse_listing(whole[:cut], NONCE, truncated=True)
    assert found.files == files[: len(found.files)]  # a prefix of the truth, nothing else
    assert found.problems or found.cut or found.files == files


def test_names_that_are_not_entry_files_stop_the_listing() -> None:
    for name in ("../" + MID + ".json", MID.upper() + ".json", MID + ".json\x1b[2J", MID):
        found = relay.parse_listing(
            b"S " + name.encode() + b"\nN 1 0\nC\n{}\n--rtun-" + NONCE.encode() + b"--\nE\n", NONCE
        )
        assert found.files == [] and "garbled" in found.problems[0]


def test_the_unread_count_becomes_the_cut_note() -> None:
    found = relay.parse_listing(listing([(MID + ".json", b"{}")], seen=7, unread=6), NONCE)
    assert found.cut is not None and "6 of 7 entry files not read" in found.cut


# -- public keys --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, str]:
    """Public key lines made by ssh-keygen, by type."""
    directory = tmp_path_factory.mktemp("keys")
    made = {}
    for kind, args in (
        ("ssh-ed25519", ["-t", "ed25519"]),
        ("ecdsa-sha2-nistp256", ["-t", "ecdsa", "-b", "256"]),
        ("ecdsa-sha2-nistp384", ["-t", "ecdsa", "-b", "384"]),
        ("ssh-rsa", ["-t", "rsa", "-b", "2048"]),
    ):
        path = directory / kind
        subprocess.run(["ssh-keygen", "-q", "-N", "", "-C", "me@laptop", "-f", str(path)] + args, check=True)
        made[kind] = (directory / f"{kind}.pub").read_text()
    return made


def test_real_public_keys_are_accepted(keys: Dict[str, str]) -> None:
    for kind, line in keys.items():
        assert relay.parse_public_key(line) == (kind, line.split()[1])
        assert relay.parse_public_key("  " + line.strip() + "  \n") == (kind, line.split()[1])


def test_a_key_whose_data_names_another_type_is_refused(keys: Dict[str, str]) -> None:
    blob = keys["ssh-ed25519"].split()[1]
    with pytest.raises(ValueError, match="does not say ssh-rsa"):
        relay.parse_public_key(f"ssh-rsa {blob}")


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "not an OpenSSH public key"),
        ("ssh-ed25519", "not an OpenSSH public key"),
        ("ssh-dss AAAAB3NzaC1kc3M=", "not an OpenSSH public key"),
        ("ssh-ed25519 not*base64", "not valid base64"),
        ("ssh-ed25519 AAA=", "truncated"),
        ("ssh-ed25519 " + base64.b64encode(struct.pack(">I", 0xFFFFFFFF) + b"ssh").decode(), "does not say"),
    ],
)
def test_what_is_not_a_key_is_a_value_error_saying_why(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        relay.parse_public_key(text)


@SETTINGS
@given(
    st.sampled_from(relay.KEY_TYPES + ("",)),
    st.text(max_size=60) | st.binary(max_size=60).map(lambda b: base64.b64encode(b).decode()),
)
def test_any_text_is_a_key_or_a_value_error(kind: str, rest: str) -> None:
    try:
        found_kind, blob = relay.parse_public_key(f"{kind} {rest}")
    except ValueError:
        return
    raw = base64.b64decode(blob)
    assert found_kind == kind and raw[4 : 4 + struct.unpack(">I", raw[:4])[0]] == kind.encode()


# -- paths in the forced command, and the authorized_keys line ---------------------------


@SETTINGS
@given(st.text(max_size=60))
def test_a_relay_path_is_one_plain_shell_word_never_an_option_or_a_way_up(value: str) -> None:
    try:
        path = relay.relay_path("--script", value)
    except ValueError as exc:
        assert set(str(exc)) <= PRINTABLE and "\n" not in str(exc)
        return
    assert shlex.split(path) == [path] and shlex.quote(path) == path
    assert not path.startswith(("-", "~")) and ".." not in path.split("/")
    assert value in (path, "~/" + path)


@pytest.mark.parametrize(
    "value, expected",
    [("~/.rtun/rtun-relay", ".rtun/rtun-relay"), ("/srv/rtun/hosts", "/srv/rtun/hosts"), ("hosts", "hosts")],
)
def test_a_relay_path_from_the_home_is_relative(value: str, expected: str) -> None:
    assert relay.relay_path("--dir", value) == expected


@pytest.mark.parametrize(
    "value", ["a/../b", "..", "../x", "a/..", "a b", "$(id)", "-rf", "~root/x", "a;b", ""]
)
def test_dangerous_relay_paths_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="without '..'"):
        relay.relay_path("--dir", value)


def _fingerprint(path: Path) -> str:
    done = subprocess.run(["ssh-keygen", "-l", "-f", str(path)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()[1]


def test_the_authorized_line_is_read_by_openssh_as_the_same_key(keys: Dict[str, str], tmp_path: Path) -> None:
    for kind, line in keys.items():
        (tmp_path / "key.pub").write_text(line)
        written = relay.authorized_line(*relay.parse_public_key(line), MID, "pi-5", 20123)
        (tmp_path / "authorized_keys").write_text(written + "\n")
        assert _fingerprint(tmp_path / "authorized_keys") == _fingerprint(tmp_path / "key.pub"), kind
        options = written.rsplit(" ", 3)[0]
        assert options.startswith("restrict,port-forwarding,")
        assert 'permitlisten="127.0.0.1:20123"' in options and 'permitopen="127.0.0.1:20123"' in options
        assert f'command="sh .rtun/rtun-relay serve {MID} .rtun/hosts"' in options
    any_port = relay.authorized_line("ssh-ed25519", keys["ssh-ed25519"].split()[1], MID, "pi", None)
    assert 'permitlisten="127.0.0.1:*"' in any_port


text_or_valid = st.text(max_size=40)


@SETTINGS
@given(
    st.sampled_from(relay.KEY_TYPES) | text_or_valid,
    st.just("AAAAC3NzaC1lZDI1NTE5AAAAI") | text_or_valid,
    st.just(MID) | text_or_valid,
    st.just("pi") | text_or_valid,
    st.none() | st.integers(-5, 70000),
    st.just(relay.DEFAULT_SCRIPT) | text_or_valid,
)
def test_no_input_can_add_an_option_or_a_line(kind, blob, machine_id, name, port, script) -> None:
    try:
        line = relay.authorized_line(kind, blob, machine_id, name, port, script)
    except ValueError:
        return
    # Six quotes: the three option values, nothing a value could open or close.
    assert "\n" not in line and "\r" not in line and line.count('"') == 6
    assert line.rsplit(" ", 3)[1:] == [kind, blob, f"rtun-tunnel:{name}"]
    assert f"serve {machine_id} " in line and (port is None or 1 <= port <= 65535)


# -- the directory word of the inline script -----------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30))
def test_the_directory_word_means_the_same_path_to_sh(directory: str) -> None:
    home = "/home/some user"
    done = run_bounded(
        ["env", "-i", f"HOME={home}", "sh", "-c", "printf %s " + relay.remote_dir(directory)], b"", 10
    )
    expected = (
        home if directory == "~" else home + "/" + directory[2:] if directory.startswith("~/") else directory
    )
    assert done.returncode == 0 and done.stdout == expected.encode()


def test_an_ssh_failure_is_not_retried_inline(tmp_path: Path) -> None:
    commands: List[str] = []

    def unreachable(command: str, data: bytes, timeout: float, limit: object) -> relay.Done:
        commands.append(command)
        return run_bounded(
            ["sh", "-c", "echo 'ssh: connect to host relay port 22: Connection refused' >&2; exit 255"],
            data,
            timeout,
        )

    with pytest.raises(relay.RelayError, match="Connection refused"):
        relay.Relay(unreachable, "hosts").put(
            registry.Entry(
                name="pi",
                hostname="pi",
                machine_id=MID,
                user="pi",
                port=1,
                local_port=22,
                os="Linux",
                agent_version="0",
                connected_at="2024-05-01T10:00:00Z",
                last_seen="2024-05-01T10:00:00Z",
            )
        )
    assert commands == [f"rtun-relay put {MID}"]  # the inline form would fail the same way
