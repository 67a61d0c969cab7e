"""What VIEW accepts: pure checks of a file's name and first bytes (no files, no processes).

* the name is reduced to a plain base name (``clean_name``);
* types that desktop openers run, install or follow instead of showing (``RISKY_TYPES``) are
  refused before a single byte is accepted, unless the local user lists the extension in
  ``[view] allow_types``;
* after the upload, content that is an executable program (ELF, Mach-O, Windows PE, a desktop
  launcher) is refused whatever its name says (``executable_content``).

docs/desktop.md describes all of it for users.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from typing import FrozenSet, Iterable, Optional, Set, Tuple

# Extensions that desktop openers (xdg-open and the handlers it picks, macOS `open`/Launch
# Services, and Wine's file associations on Linux) run, install, mount or follow rather than
# display. docs/desktop.md explains each group.
RISKY_TYPES: FrozenSet[str] = frozenset(
    {
        # Linux desktop launchers, self-contained programs and packages
        ".desktop",
        ".kdelnk",
        ".theme",
        ".directory",
        ".appimage",
        ".run",
        ".bin",
        ".elf",
        ".so",
        ".ko",
        ".flatpak",
        ".flatpakref",
        ".flatpakrepo",
        ".snap",
        ".deb",
        ".rpm",
        ".ymp",
        # shell and interpreter scripts that a handler may execute
        ".sh",
        ".bash",
        ".zsh",
        ".csh",
        ".tcsh",
        ".ksh",
        ".fish",
        ".command",
        ".tool",
        ".py",
        ".pyw",
        ".pyc",
        ".pyo",
        ".pyz",
        ".pyzw",
        # Java
        ".jar",
        ".jnlp",
        ".class",
        # macOS applications, installers, scripts and location files
        ".app",
        ".pkg",
        ".mpkg",
        ".dmg",
        ".scpt",
        ".scptd",
        ".applescript",
        ".workflow",
        ".action",
        ".terminal",
        ".prefpane",
        ".saver",
        ".qlgenerator",
        ".mdimporter",
        ".kext",
        ".plugin",
        ".bundle",
        ".dylib",
        ".webloc",
        ".inetloc",
        ".fileloc",
        ".afploc",
        ".ftploc",
        ".mailloc",
        ".newsloc",
        # Windows programs, scripts and shortcuts (run by Wine where it is installed)
        ".exe",
        ".com",
        ".bat",
        ".cmd",
        ".msi",
        ".msp",
        ".msc",
        ".scr",
        ".pif",
        ".cpl",
        ".lnk",
        ".url",
        ".hta",
        ".vbs",
        ".vbe",
        ".jse",
        ".wsf",
        ".wsh",
        ".ps1",
        ".psm1",
        ".reg",
        ".inf",
        ".application",
        ".appref-ms",
        ".gadget",
        # disk images, which desktops mount (GNOME's and KDE's disk image mounters)
        ".iso",
        ".img",
        ".vhd",
        ".vhdx",
        ".vmdk",
        ".qcow2",
    }
)

# Leading bytes of executable programs, refused whatever the name: content sniffing openers
# (xdg-open on a desktop without its own MIME database, Wine) may run them.
_EXECUTABLE_MAGIC: Tuple[Tuple[bytes, str], ...] = (
    (b"\x7fELF", "an ELF program"),
    (b"\xfe\xed\xfa\xce", "a Mach-O program"),
    (b"\xfe\xed\xfa\xcf", "a Mach-O program"),
    (b"\xce\xfa\xed\xfe", "a Mach-O program"),
    (b"\xcf\xfa\xed\xfe", "a Mach-O program"),
    (b"\xca\xfe\xba\xbe", "a Mach-O universal program or a Java class"),
)
HEAD_LEN = 4096  # how much of the file executable_content looks at
# What shared-mime-info calls application/x-desktop (and its sub-class x-theme): launchers,
# whatever their name. Its magic: "[Desktop Entry]" starting in the first 33 bytes, or one of
# these at the very start. We also look past a BOM, blank lines and comments.
_DESKTOP_ENTRY = b"[Desktop Entry]"
_DESKTOP_AT_START = (b"[Desktop Action", b"[KDE Desktop Entry]", b"# Config File", b"# KDE Config File")
_DESKTOP_GROUPS = (_DESKTOP_ENTRY, b"[KDE Desktop Entry]", b"[Desktop Action")
_BOM = b"\xef\xbb\xbf"

# Sent files of these types never arrive executable: a desktop would run them on a double click.
LAUNCHER_TYPES: FrozenSet[str] = frozenset(
    {".desktop", ".kdelnk", ".theme", ".directory", ".command", ".tool"}
)

MAX_NAME_BYTES = 255
FALLBACK_NAME = "rtun-view"

# Controls, bidirectional overrides and other format characters that make a name read as
# something it is not ("invoice\u202efdp.exe" shows as "invoiceexe.pdf").
_NAME_JUNK = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")


def clean_name(name: str) -> str:
    """A safe local file name for what the client called ``name``.

    The base name only (after the last ``/`` or ``\\``), without control or bidirectional
    characters, without leading dots (no hidden files, no ``.``/``..``), without trailing dots
    and spaces, at most 255 bytes (the extension is kept when shortening).
    """
    name = unicodedata.normalize("NFC", name)
    name = re.split(r"[/\\]", name)[-1]
    name = _NAME_JUNK.sub("", name)
    previous = None
    while name != previous:  # ". .sh" must not end as ".sh"
        previous = name
        name = name.strip().lstrip(".").rstrip(". ")
    if not name:
        return FALLBACK_NAME
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        stem, ext = _split_ext(name)
        if len(ext.encode("utf-8", "surrogateescape")) > 32:
            stem, ext = name, ""
        budget = MAX_NAME_BYTES - len(ext.encode("utf-8", "surrogateescape"))
        stem = stem.encode("utf-8", "surrogateescape")[:budget].decode("utf-8", "ignore")
        name = stem.rstrip(". ") + ext
    return name or FALLBACK_NAME


def _split_ext(name: str) -> Tuple[str, str]:
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        return name, ""
    return stem, "." + ext


def extension(name: str) -> str:
    """The last extension of ``name``, lower case with its dot ("" when there is none)."""
    return _split_ext(name)[1].lower()


def normalize_types(types: Iterable[str]) -> FrozenSet[str]:
    """Config ``allow_types`` entries as comparable extensions: ".SH", "sh" and "*.sh" are ".sh"."""
    result: Set[str] = set()
    for entry in types:
        entry = entry.strip().lower().lstrip("*")
        if entry:
            result.add(entry if entry.startswith(".") else "." + entry)
    return frozenset(result)


def risky_type(name: str, allowed: FrozenSet[str]) -> Optional[str]:
    """The extension for which ``name`` must be refused, or None."""
    ext = extension(name)
    if ext in RISKY_TYPES and ext not in allowed:
        return ext
    return None


def executable_content(head: bytes) -> Optional[str]:
    """What kind of program ``head`` (the file's first 4 KiB) is, or None."""
    for magic, kind in _EXECUTABLE_MAGIC:
        if head.startswith(magic):
            return kind
    if head.startswith(b"MZ") and len(head) >= 0x40:
        offset = int.from_bytes(head[0x3C:0x40], "little")
        if head[offset : offset + 4] == b"PE\0\0":  # text that happens to start with MZ is not
            return "a Windows program"
    return "a desktop launcher" if is_launcher(head) else None


def is_launcher(head: bytes) -> bool:
    """Whether a desktop would take ``head`` (a file's first bytes) for a launcher."""
    if _DESKTOP_ENTRY in head[: 32 + len(_DESKTOP_ENTRY)] or head.startswith(_DESKTOP_AT_START):
        return True
    body = head[len(_BOM) :] if head.startswith(_BOM) else head
    if body.startswith(_DESKTOP_AT_START):
        return True
    # Its first group, after blank and comment lines (a "#!" line too).
    for line in body.splitlines():
        line = line.strip()
        if not line or line.startswith(b"#"):
            continue
        return line.startswith(_DESKTOP_GROUPS)
    return False


def default_opener() -> Tuple[str, ...]:
    return ("open",) if sys.platform == "darwin" else ("xdg-open",)
