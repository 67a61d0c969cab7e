"""`rtun doctor`'s checks of the desktop programs the daemon starts: the browser for `rtun open`,
the clipboard tools for `rtun copy` and `rtun paste`, the editor for `rtun edit`.

Each asks the daemon's own choice (the same functions the daemon calls before it starts one),
so doctor finds what the daemon would run, as seen from this shell's environment; an action
turned off in ``[actions]`` needs nothing.
"""

from __future__ import annotations

import os
import shutil

from rtun.protocol.messages import Rejected
from rtun.session.check import FAIL, OK, Check

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List

    from rtun.daemon.config import Config

SEEN_FROM = " (as seen from this shell's environment)"
RELOAD = " (`rtun server reload` applies it)"


def _off(name: str, action: str) -> Check:
    return Check(name, OK, f"`rtun {action}` is turned off ([actions] {action} = false): nothing needed")


def browser_check(settings: "Config") -> Check:
    from rtun.daemon.actions.browser import Browser

    if not settings.allow_open:
        return _off("browser", "open")
    command = Browser(settings.open_browser).command
    found = shutil.which(command[0])
    setting = "[open] browser" if settings.open_browser else "the platform's opener"
    if found is None:
        return Check(
            "browser",
            FAIL,
            f"{command[0]!r} ({setting}) not found: `rtun open` cannot open pages",
            'install xdg-utils (xdg-open), or set [open] browser in the config file, such as ["firefox"]',
        )
    return Check("browser", OK, f"`rtun open` pages go to {' '.join(command)} ({found}, {setting})")


def clipboard_check(settings: "Config") -> Check:
    from rtun.daemon.actions.clipboard import choose

    if not settings.allow_copy and not settings.allow_paste:
        return Check("clipboard", OK, "copy and paste are turned off in [actions]: nothing needed")
    said = []
    for kind, allowed, configured in (
        ("copy", settings.allow_copy, settings.clipboard_copy),
        ("paste", settings.allow_paste, settings.clipboard_paste),
    ):
        if not allowed:
            said.append(f"{kind} is off ([actions] {kind} = true turns it on)")
            continue
        try:
            tool = choose(configured, kind)
        except Rejected as exc:
            return Check(
                "clipboard",
                FAIL,
                f"`rtun {kind}` cannot work: {exc.text.split('; ')[0]}{SEEN_FROM}",
                "install wl-clipboard (Wayland) or xclip or xsel (X11), or set "
                f"[clipboard] {kind} in the config file{RELOAD}; start the daemon in your desktop session",
            )
        how = f"[clipboard] {kind}" if configured else "found for this session"
        said.append(f"{kind} with {' '.join(tool.argv)} ({how})")
    return Check("clipboard", OK, "; ".join(said))


def editor_check(settings: "Config") -> Check:
    from rtun.daemon.actions.edit import DEFAULT_EDITORS, editor_command

    if not settings.allow_edit:
        return _off("editor", "edit")
    fix = 'set [edit] editor in the config file to an editor that waits, such as ["code", "--wait"]' + RELOAD
    try:
        command = editor_command(settings.edit_editor, os.environ)
    except Rejected:
        tried = ", ".join(command[0] for command in DEFAULT_EDITORS)
        return Check(
            "editor",
            FAIL,
            f"no editor for `rtun edit`: no [edit] editor, no $RTUN_EDITOR, none of {tried} found{SEEN_FROM}",
            fix,
        )
    if settings.edit_editor:
        source = "[edit] editor"
    elif os.environ.get("RTUN_EDITOR", "").strip():
        source = "$RTUN_EDITOR"
    else:
        source = "the first editor found; [edit] editor chooses another"
    found = shutil.which(command[0])
    if found is None:
        return Check("editor", FAIL, f"{command[0]!r} ({source}) not found: `rtun edit` cannot work", fix)
    return Check("editor", OK, f"`rtun edit` opens {' '.join(command)} ({found}, {source})")


def tool_checks(settings: "Config") -> "List[Check]":
    return [browser_check(settings), clipboard_check(settings), editor_check(settings)]
