"""The pure checks of VIEW: names, risky types, program content."""

from __future__ import annotations

import pytest

from rtun.daemon.actions.viewtypes import (
    RISKY_TYPES, clean_name, executable_content, normalize_types, risky_type,
)


@pytest.mark.parametrize("raw, clean", [
    ("../../etc/passwd", "passwd"),
    ("C:\\Users\\me\\report.pdf", "report.pdf"),
    (".bashrc", "bashrc"),
    (". .sh", "sh"),
    ("..", "rtun-view"),
    ("", "rtun-view"),
    ("a\x00b\x1b[31mc\n.txt", "ab[31mc.txt"),
    ("invoice\u202efdp.exe", "invoicefdp.exe"),
    ("report.pdf. . ", "report.pdf"),
])
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
    assert executable_content(b"text\n[Desktop Entry]\n") is None
    assert executable_content(b"#!/bin/sh\necho hi\n") is None
