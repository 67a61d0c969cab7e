"""Properties of the registry parser, the listing parser and the ssh_config they lead to, over
generated input (hypothesis). ssh -G runs on a sample of the generated configs, not on each."""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any, List

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtun.tunnel import hostnames, registry, relay

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SSH_G_EVERY = 15  # examples between two real `ssh -G` checks

ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
HEX = "0123456789abcdef"
PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F))


def word(first: str, rest: str, most: int) -> st.SearchStrategy[str]:
    """Strings of the registry's patterns, drawn from their alphabets (faster than from_regex)."""
    return st.builds(lambda a, b: a + b, st.sampled_from(first), st.text(rest, max_size=most))


times = st.integers(0, 4102444799).map(registry.now_iso)
names = word(ALNUM, ALNUM + "._-", 62)
machine_ids = st.text(HEX, min_size=32, max_size=32)
users = word(ALNUM + "._", ALNUM + "._@-", 63)
entries = st.builds(
    registry.Entry,
    name=names,
    hostname=st.text(ALNUM + "._-", min_size=1, max_size=255),
    machine_id=machine_ids,
    user=users,
    port=st.integers(1, 65535),
    local_port=st.integers(1, 65535),
    os=st.text(PRINTABLE, max_size=100),
    agent_version=st.text(PRINTABLE, max_size=100),
    connected_at=times,
    last_seen=times,
    status=st.sampled_from(registry.STATUSES),
    disconnected_at=st.none() | times,
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
FIELDS = [
    "schema",
    "name",
    "hostname",
    "machine_id",
    "user",
    "port",
    "local_port",
    "os",
    "agent_version",
    "connected_at",
    "last_seen",
    "status",
    "disconnected_at",
]


@SETTINGS
@given(entries)
def test_every_valid_entry_round_trips(entry: registry.Entry) -> None:
    for key, pattern in (("name", registry.NAME_RE), ("user", registry.USER_RE), ("os", registry.TEXT_RE)):
        assert registry.valid(pattern, getattr(entry, key))  # the strategies make valid entries
    assert registry.parse_entry(entry.to_json()) == entry
    assert registry.parse_files([(entry.filename, entry.to_json())]) == ([entry], [])


@SETTINGS
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_give_an_entry_or_a_registry_error(raw: bytes) -> None:
    try:
        registry.parse_entry(raw)
    except registry.RegistryError:
        pass


@SETTINGS
@given(entries, st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=4))
def test_arbitrary_json_fields_give_an_entry_or_a_registry_error(entry: registry.Entry, changes: Any) -> None:
    data = json.loads(entry.to_json())
    data.update(changes)
    try:
        parsed = registry.parse_entry(json.dumps(data).encode())
    except registry.RegistryError:
        return
    for key in ("name", "user", "machine_id"):  # what reaches ssh_config and argv: always strict
        assert registry.valid(getattr(registry, f"{key.upper()}_RE"), getattr(parsed, key))


@SETTINGS
@given(json_values)
def test_arbitrary_json_documents_give_an_entry_or_a_registry_error(value: Any) -> None:
    try:
        registry.parse_entry(json.dumps(value).encode())
    except registry.RegistryError:
        pass


@SETTINGS
@given(st.binary(max_size=3000), st.booleans())
def test_any_listing_parses_to_files_and_problems(body: bytes, truncated: bool) -> None:
    found = relay.parse_listing(body, "0" * 32, truncated)
    assert all(registry.valid(registry.FILE_RE, name) for name, _ in found.files)
    assert all(line.isprintable() for line in found.problems + [found.cut or ""])


HOST_BLOCK = re.compile(
    r"Host [a-z0-9._-]+\.rtun|    (HostName|Port|User|HostKeyAlias|ProxyJump) "
    r"[A-Za-z0-9._@:,\[\]-]+|"
)
sample: List[str] = []

# What reaches ssh_config varies (name, machine id, user, port); the rest is fixed, for speed.
# Few names and id prefixes come often, so that names clash, ids share prefixes, and names spell
# other machines' aliases.
configured = st.builds(
    lambda name, prefix, mid, user, port: registry.Entry(
        name=name,
        hostname="h",
        machine_id=(prefix + mid)[:32],
        user=user,
        port=port,
        local_port=22,
        os="Linux",
        agent_version="0",
        connected_at="2024-01-01T00:00:00Z",
        last_seen="2024-01-01T00:00:00Z",
    ),
    names | st.sampled_from(["pi", "Pi", "lab", "lab-aaaaaaaa", "x.rtun", "relay"]),
    st.sampled_from(["", "aaaaaaaa", "aaaaaaaa0000"]),
    machine_ids,
    users,
    st.integers(1, 65535),
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(configured, max_size=8, unique_by=lambda e: e.machine_id),
    st.sampled_from([None, "relay", "me@relay.rtun:2222", "a,b"]),
)
def test_accepted_entries_always_give_ssh_config_that_parses(found: List[registry.Entry], via: Any) -> None:
    text, problems = hostnames.ssh_config(found, via)
    hosts = [line[5:] for line in text.splitlines() if line.startswith("Host ")]
    assert len(hosts) + len(problems) == len(found)
    assert len({h.lower() for h in hosts}) == len(hosts)
    assert not set(hosts) & hostnames.via_hosts(via)
    assert all(HOST_BLOCK.fullmatch(line) for line in text.splitlines()[1:])
    sample.append(text)
    if len(sample) % SSH_G_EVERY == 1:
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "config"
            config.write_text(text)
            for host in hosts[:3] + ["unrelated.example.org"]:
                done = subprocess.run(
                    ["ssh", "-G", "-F", str(config), host],
                    capture_output=True,
                    text=True,
                    timeout=10,
                    stdin=subprocess.DEVNULL,
                )
                assert done.returncode == 0, done.stderr
                wanted = "127.0.0.1" if host in hosts else host
                assert f"\nhostname {wanted}\n" in "\n" + done.stdout
