"""One listing from several relays' listings, merged by machine id (rules in docs/registry.md).

Pure: listings and the reader's clock in, one Listing out. Each relay's registry is hostile, and
so is its clock: an entry dated in the future is *suspect*, ranked after every entry with a
plausible date, so a relay that writes `last_seen: 2099-...` does not win forever.
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Set, Tuple

from rtun.tunnel import registry
from rtun.tunnel.connect import Listing, Sighting

SKEW = 120.0  # seconds a relay's clock may run ahead of the reader's before its dates are suspect


def rank(entry: registry.Entry, now: float) -> Tuple[int, float]:
    """Sort key, highest first: plausible before suspect, then the newest last_seen, a date
    ahead of the reader's clock counting as now (a relay cannot outrank the others by dating
    its entries ahead; ties go to the relay given first)."""
    seen = registry.parse_iso(entry.last_seen)
    if seen > now + SKEW:
        return (0, -seen)  # among suspects, the least far in the future first
    return (1, min(seen, now))


def merge(listings: Sequence[Tuple[str, Listing]], now: float, tags: Sequence[str] = ()) -> Listing:
    """The machines of every listing, each once: the shown fields are those of its best-ranked
    entry (ties: the relay given first), ``sightings`` lists every relay's entry in that order.
    ``tags``: keep only machines whose shown entry has all of them. Problem lines name their relay."""
    found: Dict[str, List[Tuple[int, Sighting]]] = {}
    problems: List[str] = []
    cuts: List[str] = []
    for order, (relay, listing) in enumerate(listings):
        where = f"{relay}: " if relay and len(listings) > 1 else ""
        problems += [where + problem for problem in listing.problems]
        if listing.cut is not None:
            cuts.append(where + listing.cut)
        for entry in listing.entries:
            live = listing.live.get(entry.machine_id, False)
            found.setdefault(entry.machine_id, []).append((order, Sighting(relay, entry, live)))
    merged = Listing([], problems, {}, "; ".join(cuts) or None, {}, [relay for relay, _ in listings])
    for mid, seen in found.items():
        ordered = [s for _, s in sorted(seen, key=lambda p: (_negated(rank(p[1].entry, now)), p[0]))]
        best = ordered[0].entry
        if not has_tags(best, tags):
            continue
        merged.entries.append(best)
        merged.sightings[mid] = ordered
        merged.live[mid] = any(s.live for s in ordered)
        if len(ordered) > 1:
            merged.problems += _disagreements(mid, ordered, now)
    merged.entries.sort(key=lambda e: (e.name, e.machine_id))
    return merged


def _negated(key: Tuple[int, float]) -> Tuple[int, float]:
    return (-key[0], -key[1])


def _disagreements(mid: str, ordered: List[Sighting], now: float) -> List[str]:
    """One line per thing the relays disagree on, or a relay's clock runs ahead."""
    lines = []
    names = [(s.relay, s.entry.name) for s in ordered]
    if len({name for _, name in names}) > 1:
        said = ", ".join(f"{name} on {relay}" for relay, name in names)
        lines.append(f"machine {mid} has different names ({said}); shown: {names[0][1]} (freshest entry)")
    for s in ordered:
        if rank(s.entry, now)[0] == 0:
            lines.append(
                f"{s.relay}: machine {mid}'s last_seen {s.entry.last_seen} is in the future "
                "(a clock ahead, or a forged entry): ranked after the others"
            )
    return lines


def has_tags(entry: registry.Entry, wanted: Sequence[str]) -> bool:
    """Whether the entry carries every one of ``wanted``."""
    have: Set[str] = set(entry.tags)
    return all(tag in have for tag in wanted)


def live_relays(listing: Listing, mid: str) -> List[str]:
    """The relays a machine answered through, freshest entry first."""
    return [s.relay for s in listing.sightings.get(mid, []) if s.live]


def candidates(listing: Listing, mid: str, anyway: bool = False) -> List[Sighting]:
    """Where `rtun connect` tries, in order: the relays it answered through, freshest first;
    with ``anyway``, then the others."""
    seen = listing.sightings.get(mid, [])
    live = [s for s in seen if s.live]
    return live + ([s for s in seen if not s.live] if anyway else [])
