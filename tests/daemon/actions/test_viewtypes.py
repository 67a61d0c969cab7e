"""The pure checks of VIEW: names, risky types, program content."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict

import pytest

from rtun.daemon.actions.viewtypes import (
    LAUNCHER_TYPES,
    RISKY_TYPES,
    clean_name,
    executable_content,
    normalize_types,
    risky_type,
)


@pytest.mark.parametrize(
    "raw, clean",
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\report.pdf", "report.pdf"),
        (".bashrc", "bashrc"),
        (". .sh", "sh"),
        ("..", "rtun-view"),
        ("", "rtun-view"),
        ("a\x00b\x1b[31mc\n.txt", "ab[31mc.txt"),
        ("invoice\u202efdp.exe", "invoicefdp.exe"),
        ("report.pdf. . ", "report.pdf"),
    ],
)
def test_clean_name_keeps_a_plain_base_name(raw, clean):
    assert clean_name(raw) == clean


def test_clean_name_shortens_to_255_bytes_keeping_the_extension():
    name = clean_name("é" * 300 + ".pdf")
    assert len(name.encode()) <= 255 and name.endswith(".pdf") and name.startswith("é")


def test_risky_type_is_case_insensitive_and_honours_the_allow_list():
    assert risky_type("A.DeskTop", frozenset()) == ".desktop"
    assert risky_type("x.tar.sh", frozenset()) == ".sh"
    assert risky_type("x.sh.txt", frozenset()) is None
    assert risky_type("x.sh", normalize_types(["SH"])) is None
    assert normalize_types(["*.Jar", ".PY", " sh "]) == {".jar", ".py", ".sh"}
    assert {".desktop", ".app", ".command", ".sh", ".exe", ".jar"} <= RISKY_TYPES


def test_executable_content_recognises_programs_only():
    pe = bytearray(b"MZ" + b"\0" * 0x3A + (0x80).to_bytes(4, "little") + b"\0" * 0x40 + b"PE\0\0")
    assert executable_content(bytes(pe)) == "a Windows program"
    assert executable_content(b"MZ is how this text file begins" * 10) is None
    assert executable_content(b"\xcf\xfa\xed\xfe....") == "a Mach-O program"
    assert executable_content(b"# comment\n[Desktop Entry]\nExec=x") == "a desktop launcher"
    assert executable_content(b"text\n[Desktop Entry]\n") == "a desktop launcher"  # within 32 bytes
    assert executable_content(b"x" * 40 + b"\n[Desktop Entry]\n") is None
    assert executable_content(b"\xef\xbb\xbf\n\n[Desktop Action new]\n") == "a desktop launcher"
    assert executable_content(b"#!/bin/sh\necho hi\n") is None


def _mime_types(database: Path, root: str) -> Dict[str, ET.Element]:
    """``root`` and every type that is a sub-class of it, in the installed MIME database."""
    ns = "{http://www.freedesktop.org/standards/shared-mime-info}"
    types = {t.get("type"): t for t in ET.parse(database).getroot().iter(f"{ns}mime-type")}
    family = {root}
    while True:
        more = {
            name
            for name, t in types.items()
            if any(s.get("type") in family for s in t.iter(f"{ns}sub-class-of"))
        } - family
        if not more:
            return {name: types[name] for name in family}
        family |= more


MIME_DATABASE = Path("/usr/share/mime/packages/freedesktop.org.xml")


def test_everything_the_mime_database_calls_a_launcher_is_refused() -> None:
    # scripts/test installs shared-mime-info: the rules are the desktop's own, not a copy.
    ns = "{http://www.freedesktop.org/standards/shared-mime-info}"
    family = _mime_types(MIME_DATABASE, "application/x-desktop")
    assert "application/x-theme" in family
    globs, magics = set(), []
    for t in family.values():
        globs |= {g.get("pattern") for g in t.iter(f"{ns}glob")}
        magics += [(m.get("value"), m.get("offset")) for m in t.iter(f"{ns}match")]
    assert globs and magics
    for pattern in globs:
        ext = pattern.lstrip("*").lower()
        assert ext in RISKY_TYPES and ext in LAUNCHER_TYPES, pattern
    for value, offset in magics:
        last = int(offset.split(":")[-1])
        for at in {0, last}:
            head = b" " * at + value.encode() + b"\nName=x\n"
            assert executable_content(head) == "a desktop launcher", (value, at)
