"""How the daemon's refusals tell the user what to change. They are printed on the server, where
"this computer" or "here" would mean the server: they say "your computer", name the config file
and the setting, and that `rtun server reload` applies a change to the running daemon.
"""

from __future__ import annotations

# The default path ($XDG_CONFIG_HOME moves it, `rtun server --config FILE` replaces it):
# `rtun config --path` on the user's computer prints the one in effect there.
CONFIG_FILE = "~/.config/rtun/config.toml on your computer (`rtun config --path` there prints its path)"


def in_config(change: str) -> str:
    """``change`` ("set [view] opener", 'add ".exe" to [view] allow_types') said in full:
    where it goes and how the running daemon takes it up."""
    return f"{change} in {CONFIG_FILE}, then run `rtun server reload` there"


def setting(name: str, value: str = "") -> str:
    """``set [view] opener`` (or ``set [actions] paste = true``) in the config file, in full."""
    return in_config(f"set {name}" + (f" = {value}" if value else ""))
