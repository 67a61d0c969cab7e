"""The daemon's settings: built-in defaults, then the TOML config file, then command-line flags.

The file is ~/.config/rtun/config.toml (or $XDG_CONFIG_HOME/rtun/config.toml); the
"Configuration" section of README.md lists every key.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, replace
from typing import Any, Dict, Iterable, List, Optional, Tuple

from rtun import paths
from rtun.errors import RtunError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.9/3.10 only
    import tomli as tomllib


@dataclass(frozen=True)
class Config:
    socket: str = field(default_factory=paths.default_socket)
    save_dir: str = field(default_factory=paths.default_save_dir)
    log: Optional[str] = None  # None: stderr in the foreground, ~/.rtun/rtun.log as a daemon
    verbose: bool = False
    idle_timeout: float = 120.0  # seconds a connection may sit silent (v1's deadline)
    max_connections: int = 256
    shutdown_grace: float = 10.0  # seconds transfers in flight get to finish on SIGTERM
    diagnostics: bool = False  # answer v1's PID and SHUTDOWN from the socket
    max_uploads: int = 8  # transfers received at once; more wait their turn
    min_rate: float = 1024.0  # bytes/s an upload must average once it has run 30 s
    min_free_bytes: int = 64 * 1024 * 1024  # left free on the save disk after an upload
    notify_max_chars: int = 4000
    notify_burst: int = 10  # notifications shown at once; past them, bursts are coalesced
    notify_rate: float = 1.0  # ... and per second after that (half of both per connection)
    view_burst: int = 5  # files opened at once; past them, views are refused
    view_rate: float = 0.2  # ... and per second after that (half of both per connection)
    view_opener: Tuple[str, ...] = ()  # () means the platform's own: xdg-open or open
    view_allow_types: Tuple[str, ...] = ()  # risky extensions the user accepts anyway
    view_max_age: float = 24 * 3600.0  # seconds before a viewed temp file is removed
    # [actions]: what the server side may do here. Paste is off: root on a server could read
    # whatever this computer's clipboard holds.
    allow_notify: bool = True
    allow_send: bool = True
    allow_view: bool = True  # files, from `rtun view` and `rtun open FILE`
    allow_open: bool = True  # URLs, from `rtun open URL` and the BROWSER shim
    allow_copy: bool = True
    allow_paste: bool = False
    allow_edit: bool = True
    allow_forward: bool = True  # loopback ports here for a server's ports (`rtun forward`, `rtun open`)
    open_browser: Tuple[str, ...] = ()  # () means the platform's own: xdg-open or open
    clipboard_copy: Tuple[str, ...] = ()  # () means the first of pbcopy, wl-copy, xclip, xsel found
    clipboard_paste: Tuple[str, ...] = ()  # () means pbpaste, wl-paste, xclip or xsel
    clipboard_max_bytes: int = 4 * 1024 * 1024  # held in memory, up to max_uploads at once
    edit_editor: Tuple[str, ...] = ()  # () means $RTUN_EDITOR, else code --wait, else subl -w
    edit_max_bytes: int = 64 * 1024 * 1024
    edit_max_open: int = 16  # edits open at once


# TOML table.key -> Config field
_KEYS: Dict[Tuple[str, str], str] = {
    ("server", "socket"): "socket",
    ("server", "save_dir"): "save_dir",
    ("server", "log"): "log",
    ("server", "verbose"): "verbose",
    ("server", "idle_timeout"): "idle_timeout",
    ("server", "max_connections"): "max_connections",
    ("server", "shutdown_grace"): "shutdown_grace",
    ("server", "diagnostics"): "diagnostics",
    ("server", "max_uploads"): "max_uploads",
    ("server", "min_rate"): "min_rate",
    ("send", "min_free_bytes"): "min_free_bytes",
    ("notify", "max_chars"): "notify_max_chars",
    ("notify", "burst"): "notify_burst",
    ("notify", "rate"): "notify_rate",
    ("view", "burst"): "view_burst",
    ("view", "rate"): "view_rate",
    ("view", "opener"): "view_opener",
    ("view", "allow_types"): "view_allow_types",
    ("view", "max_age"): "view_max_age",
    ("actions", "notify"): "allow_notify",
    ("actions", "send"): "allow_send",
    ("actions", "view"): "allow_view",
    ("actions", "open"): "allow_open",
    ("actions", "copy"): "allow_copy",
    ("actions", "paste"): "allow_paste",
    ("actions", "edit"): "allow_edit",
    ("actions", "forward"): "allow_forward",
    ("open", "browser"): "open_browser",
    ("clipboard", "copy"): "clipboard_copy",
    ("clipboard", "paste"): "clipboard_paste",
    ("clipboard", "max_bytes"): "clipboard_max_bytes",
    ("edit", "editor"): "edit_editor",
    ("edit", "max_bytes"): "edit_max_bytes",
    ("edit", "max_open"): "edit_max_open",
}
# Settings that name a command: a string is split as a shell would, a list is taken as is.
_COMMAND_FIELDS = {"view_opener", "open_browser", "clipboard_copy", "clipboard_paste", "edit_editor"}
_PATH_FIELDS = {"socket", "save_dir", "log"}


def _coerce(name: str, value: Any, default: Any, where: str) -> Any:
    if isinstance(default, tuple):
        if isinstance(value, str) and name in _COMMAND_FIELDS:
            import shlex

            return tuple(shlex.split(value))
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise RtunError(f"{where}: expected a list of strings")
    if name in _PATH_FIELDS:
        if not isinstance(value, str) or not value:
            raise RtunError(f"{where}: expected a path")
        return os.path.expanduser(value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise RtunError(f"{where}: expected true or false")
        return value
    if isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise RtunError(f"{where}: expected a non-negative number")
        return type(default)(value)
    return value


# Tables of the same file that the tunnel commands read (tunnel/configfile.py), not the daemon.
OTHER_TABLES = ("hosts", "tunnel")


def from_file(path: str) -> Dict[str, Any]:
    """The settings the config file at ``path`` gives (none if it does not exist), checked and
    by Config field name; an unknown key or a wrong type is an error."""
    defaults = Config()
    values: Dict[str, Any] = {}
    try:
        with open(path, "rb") as f:
            document = tomllib.load(f)
    except FileNotFoundError:
        document = {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise RtunError(f"cannot read config file {path}: {exc}") from None
    for table, entries in document.items():
        if table in OTHER_TABLES:
            continue
        if not isinstance(entries, dict):
            raise RtunError(f"{path}: [{table}] must be a table")
        for key, value in entries.items():
            name = _KEYS.get((table, key))
            where = f"{path}: {table}.{key}"
            if name is None:
                raise RtunError(f"{where}: unknown setting")
            values[name] = _coerce(name, value, getattr(defaults, name), where)
    return values


def load(path: Optional[str] = None, **overrides: Any) -> Config:
    """Defaults, then the config file (if it exists), then the non-None overrides."""
    values = from_file(path or paths.config_file())
    values.update({k: v for k, v in overrides.items() if v is not None})
    config = replace(Config(), **values)
    # Absolute now: a detached daemon changes its working directory to /.
    absolute = {
        name: os.path.abspath(os.path.expanduser(getattr(config, name)))
        for name in _PATH_FIELDS
        if getattr(config, name) is not None
    }
    return replace(config, **absolute)


def as_toml(config: Config, given: "Iterable[str]" = ()) -> str:
    """``config`` as a config file would say it, every key, table by table; the settings named
    in ``given`` (Config field names) are marked as the file's, the rest are defaults."""
    import json

    given = set(given)
    lines: List[str] = []
    table = ""
    for (section, key), name in _KEYS.items():
        if section != table:
            lines.append(f"{chr(10) if lines else ''}[{section}]")
            table = section
        value = getattr(config, name)
        if value is None:
            lines.append(f"# {key} is not set")
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (int, float)):
            text = repr(value)
        elif isinstance(value, tuple):
            text = "[" + ", ".join(json.dumps(v) for v in value) + "]"
        else:
            text = json.dumps(value)  # a TOML basic string: JSON's escapes are TOML's
        lines.append(f"{key} = {text}" + ("  # from the file" if name in given else ""))
    return "\n".join(lines) + "\n"
