"""`rtun doctor`'s checks of the programs the daemon starts (browser, clipboard, editor), run as
the user runs them: the real `rtun doctor --json`, with the tools it may find on a PATH of the
test's own and the session's environment (DISPLAY, WAYLAND_DISPLAY, $RTUN_EDITOR) as given."""

from __future__ import annotations

from pathlib import Path
from typing import Dict

import pytest

from support.rtun import run_rtun, write_config


@pytest.fixture
def bin_dir(short_tmp: Path) -> Path:
    path = short_tmp / "bin"
    path.mkdir()
    return path


def _tool(bin_dir: Path, name: str) -> Path:
    path = bin_dir / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def _checks(home: Path, bin_dir: Path, **env: str) -> Dict[str, Dict[str, str]]:
    import json

    env.setdefault("DISPLAY", "")
    env.setdefault("WAYLAND_DISPLAY", "")
    result = run_rtun(["doctor", "--json"], home, PATH=f"{bin_dir}:/usr/bin:/bin", **env)
    return {c["name"]: c for c in json.loads(result.stdout)["checks"]}


def test_the_clipboard_tool_found_for_the_session_and_paste_off(local_home, bin_dir):
    _tool(bin_dir, "xclip")  # first on PATH
    found = _checks(local_home, bin_dir, DISPLAY=":5")["clipboard"]
    assert found["status"] == "ok"
    assert f"copy with {bin_dir}/xclip -selection clipboard -in" in found["detail"]
    assert (
        "(found for this session)" in found["detail"]
        and "paste is off ([actions] paste = true" in found["detail"]
    )
    _tool(bin_dir, "wl-copy")
    _tool(bin_dir, "wl-paste")
    found = _checks(local_home, bin_dir, WAYLAND_DISPLAY="wayland-0")["clipboard"]
    assert f"copy with {bin_dir}/wl-copy" in found["detail"]


def test_no_display_fails_the_clipboard_with_what_to_do(local_home, bin_dir):
    found = _checks(local_home, bin_dir)["clipboard"]
    assert found["status"] == "fail"
    assert "`rtun copy` cannot work" in found["detail"] and "no display" in found["detail"]
    assert (
        "xclip" in found["fix"]
        and "[clipboard] copy" in found["fix"]
        and "rtun server reload" in found["fix"]
    )


def test_paste_on_checks_the_paste_tool_too(local_home, bin_dir):
    copy = _tool(bin_dir, "my-copy")
    write_config(
        local_home, f'[actions]\npaste = true\n[clipboard]\ncopy = ["{copy}"]\npaste = ["no-such-paste"]\n'
    )
    found = _checks(local_home, bin_dir)["clipboard"]
    assert found["status"] == "fail" and "`rtun paste` cannot work" in found["detail"]
    assert "'no-such-paste' was not found" in found["detail"] and "[clipboard] paste" in found["fix"]


def test_the_browser_configured_or_the_platforms(local_home, bin_dir):
    write_config(local_home, '[open]\nbrowser = ["no-such-browser", "--new-window"]\n')
    found = _checks(local_home, bin_dir)["browser"]
    assert found["status"] == "fail" and "'no-such-browser' ([open] browser) not found" in found["detail"]
    assert "[open] browser" in found["fix"]
    write_config(local_home, "")
    _tool(bin_dir, "xdg-open")
    found = _checks(local_home, bin_dir)["browser"]
    assert (
        found["status"] == "ok" and f"xdg-open ({bin_dir}/xdg-open, the platform's opener)" in found["detail"]
    )
    write_config(local_home, "[actions]\nopen = false\n")
    assert "turned off" in _checks(local_home, bin_dir)["browser"]["detail"]


def test_the_editor_from_the_setting_the_environment_or_the_first_found(local_home, bin_dir):
    found = _checks(local_home, bin_dir)["editor"]
    if found["status"] == "ok":
        pytest.skip(f"an editor is installed here: {found['detail']}")
    assert "no [edit] editor, no $RTUN_EDITOR, none of code" in found["detail"]
    assert "[edit] editor" in found["fix"] and "rtun server reload" in found["fix"]
    _tool(bin_dir, "subl")
    found = _checks(local_home, bin_dir)["editor"]
    assert (
        found["status"] == "ok"
        and "subl -w" in found["detail"]
        and "the first editor found" in found["detail"]
    )
    _tool(bin_dir, "myedit")
    found = _checks(local_home, bin_dir, RTUN_EDITOR="myedit --wait")["editor"]
    assert (
        found["status"] == "ok" and "myedit --wait" in found["detail"] and "$RTUN_EDITOR" in found["detail"]
    )
    write_config(local_home, '[edit]\neditor = ["gone-editor"]\n')
    found = _checks(local_home, bin_dir, RTUN_EDITOR="myedit")["editor"]
    assert found["status"] == "fail" and "'gone-editor' ([edit] editor) not found" in found["detail"]


def test_notifications_say_which_commands_need_them(local_home, bin_dir):
    found = _checks(local_home, bin_dir)["notifications"]  # no session bus
    assert found["status"] == "fail"
    assert "`rtun notify`, `rtun done` and the shell hooks" in found["fix"]
