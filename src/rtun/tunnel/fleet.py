"""Readers of several relays: which relays (``--via``, repeated, or ``[hosts] relays`` in the
config file), each read in a thread of its own, and their listings merged (merge.py).

One relay that cannot be reached is one problem line, not a failure: only when none answers
does the command fail. With several relays every ssh login gets a short ConnectTimeout, so a
dead relay costs a few seconds at most.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional, Sequence, Union

from rtun import paths
from rtun.errors import RtunError, UsageError
from rtun.protocol import peertext
from rtun.tunnel import connect as machines
from rtun.tunnel import hostnames, merge, registry

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.9/3.10 only
    import tomli as tomllib

FAILOVER_TIMEOUT = 3  # ssh ConnectTimeout per relay when there are several
MAX_RELAYS = 32


def config_relays(path: Optional[str] = None) -> List[str]:
    """``relays`` of the ``[hosts]`` table in rtun's config file (none if there is no file);
    raises UsageError for a value that is not a list of ssh destinations."""
    path = path or paths.config_file()
    try:
        with open(path, "rb") as f:
            document: Dict[str, Any] = tomllib.load(f)
    except FileNotFoundError:
        return []
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot read config file {path}: {exc}") from None
    table = document.get("hosts", {})
    if not isinstance(table, dict):
        raise UsageError(f"{path}: [hosts] must be a table")
    for key in table:
        if key != "relays":
            raise UsageError(f"{path}: hosts.{peertext.ascii_escaped(str(key), 40)}: unknown setting")
    relays = table.get("relays", [])
    if not isinstance(relays, list) or not all(
        isinstance(r, str) and registry.valid(hostnames.VIA_RE, r) for r in relays
    ):
        raise UsageError(f"{path}: hosts.relays: expected a list of ssh destinations ([user@]host[:port])")
    return relays


def relays(given: Optional[Sequence[str]], config: Optional[str] = None) -> List[str]:
    """The relays to read: the ``--via``s given, else the config file's; [] means this host's
    own registry. Each once, in order."""
    chosen = list(given) if given else config_relays(config)
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
