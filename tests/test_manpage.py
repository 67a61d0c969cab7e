"""The committed man page is what scripts/manpage makes from today's parsers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_man_page_matches_the_parsers() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "manpage"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def test_the_man_page_lists_every_listed_command_and_its_options() -> None:
    from rtun.cli import COMMANDS

    page = (ROOT / "man" / "rtun.1").read_text()
    for name, (help_text, _) in COMMANDS.items():
        if help_text is not None:
            assert f"'rtun {name}'" in page.replace("\\-", "-"), name
    assert "\\-\\-overwrite" in page and "\\-\\-min\\-seconds" in page
