"""Readers of several relays: which relays (``--via``, repeated, or ``[hosts] relays`` in the
config file), each read in a thread of its own, and their listings merged (merge.py).

One relay that cannot be reached is one problem line, not a failure: only when none answers
does the command fail. With several relays every ssh login gets a short ConnectTimeout, so a
dead relay costs a few seconds at most.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional, Sequence, Union

from rtun.errors import RtunError, UsageError
from rtun.tunnel import configfile, hostnames, merge
from rtun.tunnel import connect as machines

FAILOVER_TIMEOUT = 3  # ssh ConnectTimeout per relay when there are several
MAX_RELAYS = 32


def relays(given: Optional[Sequence[str]], config: Optional[str] = None) -> List[str]:
    """The relays to read: the ``--via``s given, else the config file's; [] means this host's
    own registry. Each once, in order."""
    chosen = list(given) if given else configfile.relays("hosts", config)
    for via in chosen:
        hostnames.check_via(via)
    unique = list(dict.fromkeys(chosen))
    if len(unique) > MAX_RELAYS:
        raise UsageError(f"at most {MAX_RELAYS} relays")
    return unique


def load(
    ssh: Optional[List[str]],
    vias: Sequence[str],
    directory: str,
    probe: Union[bool, str] = True,
    timeout: float = 3.0,
    tags: Sequence[str] = (),
) -> machines.Listing:
    """Every relay's listing, read at once, merged by machine id; a relay that fails is a
    problem line (first in the list), unless all fail."""
    if len(vias) <= 1:
        via = vias[0] if vias else None
        listing = machines.load(ssh, via, directory, probe=probe, timeout=timeout)
        return merge.merge([(via or "", listing)], time.time(), tags)
    assert ssh is not None
    with ThreadPoolExecutor(max_workers=len(vias)) as pool:
        futures = [
            pool.submit(machines.load, ssh, via, directory, probe, timeout, FAILOVER_TIMEOUT) for via in vias
        ]
        results, failed = [], []
        for via, future in zip(vias, futures):
            try:
                results.append((via, future.result()))
            except RtunError as exc:
                failed.append(exc.message)
    if not results:
        raise machines.RegistryUnreachableError("no relay could be read: " + "; ".join(failed))
    merged = merge.merge(results, time.time(), tags)
    merged.problems[:0] = failed
    merged.relays = list(vias)
    return merged
