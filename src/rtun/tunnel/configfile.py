"""The tunnel commands' tables of the config file (~/.config/rtun/config.toml): ``[tunnel]``
and ``[hosts]``.

The file is the daemon's too (daemon/config.py reads its own tables and leaves these alone).
``[tunnel] relays = ["relay1", "relay2"]`` names the relays `rtun tunnel` (and `rtun tunnel
install`) uses when none is given on the command line; ``[hosts] relays`` those that `rtun
hosts`, `connect` and `ssh-config` read.
"""

from __future__ import annotations

import sys
from typing import Any, Dict, List, Optional

from rtun import paths
from rtun.errors import UsageError
from rtun.protocol import peertext

KEYS = ("relays",)  # of each table


def table(name: str, path: Optional[str] = None) -> Dict[str, Any]:
    """The ``[name]`` table of the config file; {} without the file or the table."""
    path = path or paths.config_file()
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise UsageError(f"cannot read config file {path}: {exc.strerror}") from None
    with f:
        if sys.version_info >= (3, 11):
            import tomllib  # novermin: only on 3.11 and later
        else:  # pragma: no cover - exercised on 3.9/3.10 only
            try:
                import tomli as tomllib
            except ImportError:
                raise UsageError(
                    f"reading {path} needs Python 3.11 or the tomli package (pip install tomli)"
                ) from None
        try:
            document = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"cannot read config file {path}: {exc}") from None
    found = document.get(name, {})
    if not isinstance(found, dict):
        raise UsageError(f"{path}: [{name}] must be a table")
    return found


def relays(name: str, path: Optional[str] = None) -> List[str]:
    """``[name] relays``: ssh destinations, used when the command line names none."""
    from rtun.tunnel import hostnames, registry

    path = path or paths.config_file()
    settings = table(name, path)
    for key in settings:
        if key not in KEYS:
            shown = peertext.ascii_escaped(str(key), 40)
            raise UsageError(f"{path}: {name}.{shown}: unknown setting (known: {', '.join(KEYS)})")
    found = settings.get("relays", [])
    if not isinstance(found, list) or not all(
        isinstance(r, str) and registry.valid(hostnames.VIA_RE, r) for r in found
    ):
        raise UsageError(f"{path}: {name}.relays: expected a list of ssh destinations ([user@]host[:port])")
    return list(found)


def tunnel_relays(path: Optional[str] = None) -> List[str]:
    """``[tunnel] relays``: the relays of `rtun tunnel` when the command line names none."""
    return relays("tunnel", path)
