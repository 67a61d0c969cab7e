"""Merging several relays' listings (merge.py), pure: the freshest plausible entry wins, hostile
and conflicting entries (another name, a clock far ahead, one relay's junk) stay in their place;
and the `[hosts] relays` list of the config file (fleet.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

import pytest

from rtun.errors import UsageError
from rtun.tunnel import configfile, fleet, merge, registry
from rtun.tunnel.connect import Listing, table
from rtun.tunnel.readers import hosts_document

NOW = registry.parse_iso("2026-01-01T12:00:00Z")
A, B, C = "a" * 32, "b" * 32, "c" * 32


def entry(
    mid: str, name: str = "pi", seen: float = 0.0, port: int = 2000, **changes: object
) -> registry.Entry:
    """An entry last seen ``seen`` seconds before NOW (negative: in the future)."""
    fields: Dict[str, object] = dict(
        name=name,
        hostname=name,
        machine_id=mid,
        user="u",
        port=port,
        local_port=22,
        os="Linux",
        agent_version="0.1.0",
        connected_at="2025-01-01T00:00:00Z",
        last_seen=registry.now_iso(NOW - seen),
    )
    fields.update(changes)
    return registry.Entry(**fields)  # type: ignore[arg-type]


def listing(*entries: registry.Entry, live: Optional[List[str]] = None, problems: List[str] = ()) -> Listing:
    alive = {e.machine_id: e.machine_id in (live or []) for e in entries}
    return Listing(list(entries), list(problems), alive)


def test_one_machine_on_two_relays_is_listed_once_with_where_it_is_live() -> None:
    merged = merge.merge(
        [
            ("r1", listing(entry(A, seen=30, port=2001))),
            ("r2", listing(entry(A, seen=5, port=2002), live=[A])),
        ],
        NOW,
    )
    [shown] = merged.entries
    assert shown.port == 2002  # the freshest entry's fields
    assert [s.relay for s in merged.sightings[A]] == ["r2", "r1"]  # freshest first
    assert merge.live_relays(merged, A) == ["r2"] and merged.live[A]
    assert [(s.relay, s.entry.port) for s in merge.candidates(merged, A)] == [("r2", 2002)]
    assert [s.relay for s in merge.candidates(merged, A, anyway=True)] == ["r2", "r1"]
    assert merged.relays == ["r1", "r2"] and merged.problems == []
    doc = hosts_document(merged, now=NOW)["machines"][0]
    assert (doc["relays"], doc["relays_live"], doc["live"]) == (["r2", "r1"], ["r2"], True)
    header, row = table(merged, now=NOW).splitlines()
    assert "LIVE ON" in header and row.split()[6] == "r2"  # after "5s ago" and "live"


def test_the_same_id_with_another_name_the_newest_wins_and_it_is_said() -> None:
    merged = merge.merge(
        [("r1", listing(entry(A, "pi", seen=60))), ("r2", listing(entry(A, "lab", seen=10)))], NOW
    )
    assert [e.name for e in merged.entries] == ["lab"]
    [note] = merged.problems
    assert A in note and "lab on r2, pi on r1" in note and "shown: lab" in note


def test_a_last_seen_in_the_future_is_suspect_and_never_wins_over_a_plausible_one() -> None:
    forged = entry(A, "evil", last_seen="2099-01-01T00:00:00Z")
    honest = entry(A, "pi", seen=3600)  # an hour old, but plausible
    merged = merge.merge([("bad", listing(forged)), ("good", listing(honest))], NOW)
    assert merged.entries[0].name == "pi"
    assert [s.relay for s in merged.sightings[A]] == ["good", "bad"]
    assert any("bad: machine" in p and "in the future" in p for p in merged.problems)
    # A clock a little ahead (within the skew) is no suspect: it counts as now, fresher than an
    # hour-old entry, but it cannot outrank one of now by dating itself ahead: the tie goes to the
    # relay given first.
    ahead = entry(A, "pi", seen=-(merge.SKEW - 10))
    merged = merge.merge([("r1", listing(honest)), ("r2", listing(ahead))], NOW)
    assert merged.sightings[A][0].relay == "r2" and not any("future" in p for p in merged.problems)
    current = entry(A, "pi", seen=0)
    merged = merge.merge([("r1", listing(current)), ("r2", listing(ahead))], NOW)
    assert merged.sightings[A][0].relay == "r1"


def test_among_equals_the_relay_given_first_wins() -> None:
    merged = merge.merge(
        [("r1", listing(entry(A, "one", seen=5))), ("r2", listing(entry(A, "two", seen=5)))], NOW
    )
    assert merged.entries[0].name == "one"


def test_an_entry_claiming_another_machines_id_does_not_hide_the_others() -> None:
    """r2 holds an entry with A's id (a copy, or a hostile one): A stays one machine, every other
    machine on either relay is still there, and each relay's own port is the one tried there."""
    merged = merge.merge(
        [
            ("r1", listing(entry(A, "pi", seen=20, port=2001), entry(B, "nas", port=2003), live=[A, B])),
            ("r2", listing(entry(A, "pi", seen=10, port=2999), entry(C, "cam", port=2004), live=[C])),
        ],
        NOW,
    )
    assert sorted(e.name for e in merged.entries) == ["cam", "nas", "pi"]
    assert [(s.relay, s.entry.port) for s in merge.candidates(merged, A)] == [("r1", 2001)]


def test_problems_name_their_relay_and_tags_filter_on_the_shown_entry() -> None:
    merged = merge.merge(
        [
            ("r1", listing(entry(A, seen=50, tags=["gpu"]), problems=["skipped x.json: not JSON"])),
            ("r2", listing(entry(A, seen=5, tags=["gpu", "lab"]), entry(B, "nas", tags=["lab"]))),
        ],
        NOW,
        tags=["gpu", "lab"],
    )
    assert [e.machine_id for e in merged.entries] == [A]
    assert "r1: skipped x.json: not JSON" in merged.problems
    # One relay alone: its problems as they were, no relay prefix.
    alone = merge.merge([("r1", listing(problems=["skipped y.json: not JSON"]))], NOW)
    assert alone.problems == ["skipped y.json: not JSON"]


def test_config_relays(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    assert configfile.relays("hosts", str(path)) == []  # no file
    path.write_text('[hosts]\nrelays = ["r1", "me@r2:2222", "j1,r3"]\n[server]\nverbose = true\n')
    assert configfile.relays("hosts", str(path)) == ["r1", "me@r2:2222", "j1,r3"]
    assert fleet.relays(None, str(path)) == ["r1", "me@r2:2222", "j1,r3"]
    assert fleet.relays(["x", "x"], str(path)) == ["x"]  # --via wins; each relay once


@pytest.mark.parametrize(
    "text, message",
    [
        ('[hosts]\nrelays = "r1"\n', "expected a list"),
        ('[hosts]\nrelays = ["-oProxyCommand=x"]\n', "expected a list"),
        ('[hosts]\nrelays = ["r1\\n"]\n', "expected a list"),
        ('[hosts]\nrelay = ["r1"]\n', "hosts.relay: unknown setting"),
        ("hosts = 1\n", "must be a table"),
        ("[hosts\n", "cannot read config file"),
    ],
)
def test_config_relays_refuses_what_is_not_a_list_of_destinations(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(UsageError, match=message):
        configfile.relays("hosts", str(path))


def test_the_proxy_ends_quietly_when_its_ssh_client_is_gone() -> None:
    """`rtun connect --proxy`'s carry: ssh (our stdout) gone before the first bytes go back, the
    stream to the relay is ended rather than left running, and nothing is raised."""
    import os
    import subprocess
    import time

    from rtun.tunnel import proxy

    stream = subprocess.Popen(
        ["sleep", "60"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    ours_in, their_out = os.pipe()
    their_in, ours_out = os.pipe()
    os.close(their_in)  # the client has gone: writing to it fails
    os.close(their_out)
    began = time.monotonic()
    try:
        code = proxy.carry(stream, b"SSH-2.0-x\r\n", stdin_fd=ours_in, stdout_fd=ours_out)
    finally:
        os.close(ours_in)
        os.close(ours_out)
    assert code != 0 and stream.poll() is not None  # killed, not left behind
    assert time.monotonic() - began < 5


def test_each_relay_probes_every_entry_a_merged_name_may_mean() -> None:
    """Two machines called pi, one on each relay: the merged listing calls them pi-aaaaaaaa and
    pi-bbbbbbbb, names neither relay has on its own; each relay must probe its pi for either."""
    from rtun.tunnel.connect import _probed

    here = [entry(A, "pi"), entry(C, "other")]
    assert _probed(here, f"pi-{A[:8]}") == [here[0]]
    assert _probed(here, f"PI-{A[:8]}.rtun") == [here[0]]
    assert _probed(here, "pi") == [here[0]]
    assert _probed(here, A[:6]) == [here[0]]
    assert _probed(here, f"pi-{B[:8]}") == []  # the other relay's machine: nothing here
    assert _probed(here, True) == here and _probed(here, False) == []
