"""VIEW: receive one file into a private temporary directory and show it with the desktop opener.

What arrives is never executed by us and, as far as we can help it, not by the opener either:

* the name is reduced to a plain base name (``clean_name``);
* types that desktop openers run, install or follow instead of showing (``RISKY_TYPES``) are
  refused before a single byte is accepted, unless the local user lists the extension in
  ``[view] allow_types``; after the upload, content that is an executable program (ELF,
  Mach-O, Windows PE, a desktop launcher) is refused whatever its name says;
* the file is written with mode 0600 into ``<tmp>/rtun-view-<pid>-<random>/<random>/NAME``
  (directories 0700), never executable;
* the opener (``[view] opener``, else ``xdg-open`` or macOS ``open``) gets the path as one argv
  element: no shell, no interpolation. It is not waited for; its exit is reaped in the
  background and logged.

Viewed files are removed once older than ``[view] max_age`` and all of them when the daemon
stops. docs/desktop.md describes all of it for users.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import stat
import sys
import tempfile
import time
import unicodedata
from typing import Any, FrozenSet, Iterable, Optional, Set, Tuple

from rtun import wire
from rtun.daemon.actions import Refused, pid_alive
from rtun.daemon.actions.files import Tree, check_space, receive_v1_upload
from rtun.daemon.peer import Peer

log = logging.getLogger("rtun.daemon")

# Extensions that desktop openers (xdg-open and the handlers it picks, macOS `open`/Launch
# Services, and Wine's file associations on Linux) run, install, mount or follow rather than
# display. docs/desktop.md explains each group.
RISKY_TYPES: FrozenSet[str] = frozenset(
    {
        # Linux desktop launchers, self-contained programs and packages
        ".desktop", ".directory", ".appimage", ".run", ".bin", ".elf", ".so", ".ko",
        ".flatpak", ".flatpakref", ".flatpakrepo", ".snap", ".deb", ".rpm", ".ymp",
        # shell and interpreter scripts that a handler may execute
        ".sh", ".bash", ".zsh", ".csh", ".tcsh", ".ksh", ".fish", ".command", ".tool",
        ".py", ".pyw", ".pyc", ".pyo", ".pyz", ".pyzw",
        # Java
        ".jar", ".jnlp", ".class",
        # macOS applications, installers, scripts and location files
        ".app", ".pkg", ".mpkg", ".dmg", ".scpt", ".scptd", ".applescript", ".workflow",
        ".action", ".terminal", ".prefpane", ".saver", ".qlgenerator", ".mdimporter",
        ".kext", ".plugin", ".bundle", ".dylib", ".webloc", ".inetloc", ".fileloc",
        ".afploc", ".ftploc", ".mailloc", ".newsloc",
        # Windows programs, scripts and shortcuts (run by Wine where it is installed)
        ".exe", ".com", ".bat", ".cmd", ".msi", ".msp", ".msc", ".scr", ".pif", ".cpl",
        ".lnk", ".url", ".hta", ".vbs", ".vbe", ".jse", ".wsf", ".wsh", ".ps1", ".psm1",
        ".reg", ".inf", ".application", ".appref-ms", ".gadget",
        # disk images, which desktops mount (GNOME's and KDE's disk image mounters)
        ".iso", ".img", ".vhd", ".vhdx", ".vmdk", ".qcow2",
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
_HEAD_LEN = 4096  # how much of the file executable_content looks at
_DESKTOP_GROUPS = (b"[Desktop Entry]", b"[KDE Desktop Entry]")

MAX_NAME_BYTES = 255
MIN_AGE = 30.0  # an opener gets at least this long to read the file, whatever max_age says
DIR_PREFIX = "rtun-view-"
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
        if head[offset:offset + 4] == b"PE\0\0":  # text that happens to start with MZ is not
            return "a Windows program"
    # A desktop launcher: its first group, after blank and comment lines (a "#!" line too).
    for line in head.splitlines():
        line = line.strip()
        if not line or line.startswith(b"#"):
            continue
        if line in _DESKTOP_GROUPS:
            return "a desktop launcher"
        break
    return None


def default_opener() -> Tuple[str, ...]:
    return ("open",) if sys.platform == "darwin" else ("xdg-open",)


class Viewer:
    """The VIEW action; one instance per daemon, created on the first VIEW."""

    def __init__(self, config: Any) -> None:
        self.opener: Tuple[str, ...] = tuple(config.view_opener) or default_opener()
        self.allowed = normalize_types(config.view_allow_types)
        self.max_age = max(float(config.view_max_age), MIN_AGE)
        self.private_dir: Optional[str] = None
        self._sweep_timer: Optional[asyncio.TimerHandle] = None
        self._reapers: Set["asyncio.Task[None]"] = set()

    async def view(self, request: wire.View, peer: Peer) -> bytes:
        name = clean_name(request.name)
        self.sweep()
        # Every check that does not need the data comes before READY.
        ext = risky_type(name, self.allowed)
        if ext is not None:
            raise Refused(
                wire.E_REFUSED_TYPE,
                f"refusing to open {name}: {ext} files are run or installed by the desktop, "
                f"not shown (to accept them anyway, add \"{ext}\" to [view] allow_types "
                f"in the config file of rtun on this computer)",
            )
        program = self._opener_program()
        directory = self._private_dir()
        check_space(directory, request.size)
        view_dir = tempfile.mkdtemp(prefix="", dir=directory)  # 0700, one per view
        try:
            path = await self._receive(peer, view_dir, name, request.size)
            self._check_content(path, name)
            await self._open(program, path)
        except BaseException:
            shutil.rmtree(view_dir, ignore_errors=True)
            raise
        log.info("viewing %s (%d bytes) with %s", path, request.size, self.opener[0])
        self._schedule_sweep()
        return wire.ok()

    # ---- the steps ---------------------------------------------------------------------------

    def _opener_program(self) -> str:
        program = shutil.which(self.opener[0])
        if program is None:
            raise Refused(
                wire.E_OPEN,
                f"cannot open files on this computer: the opener {self.opener[0]!r} was not "
                f"found (set [view] opener in the config file of rtun)",
            )
        return program

    def _private_dir(self) -> str:
        """This daemon's directory for viewed files (made again if something removed it)."""
        if self.private_dir is not None:
            try:
                st = os.lstat(self.private_dir)
                if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() \
                        and stat.S_IMODE(st.st_mode) == 0o700:
                    return self.private_dir
            except FileNotFoundError:
                pass
            log.warning("private view directory %s vanished or changed; making a new one",
                        self.private_dir)
        else:
            _remove_orphans(tempfile.gettempdir())
        try:
            self.private_dir = tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{os.getpid()}-")
        except OSError as exc:
            raise Refused(wire.E_CREATE, f"cannot make a temporary directory: {exc.strerror}") from None
        return self.private_dir

    @staticmethod
    async def _receive(peer: Peer, view_dir: str, name: str, size: int) -> str:
        tree = Tree(view_dir)
        try:
            return await receive_v1_upload(peer, tree, (name,), size, overwrite=False, mode=0o600)
        finally:
            tree.close()

    def _check_content(self, path: str, name: str) -> None:
        ext = extension(name)
        if ext and ext in self.allowed:
            return  # the user accepts this type, programs included
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(path, flags)
        try:
            head = os.read(fd, _HEAD_LEN)
        finally:
            os.close(fd)
        kind = executable_content(head)
        if kind is not None:
            raise Refused(
                wire.E_REFUSED_TYPE,
                f"refusing to open {name}: its content is {kind}, which the desktop might run",
            )

    async def _open(self, program: str, path: str) -> None:
        argv = (program,) + self.opener[1:] + (path,)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                start_new_session=True,  # not killed with the daemon's terminal or group
            )
        except OSError as exc:
            raise Refused(
                wire.E_OPEN, f"cannot start the opener {self.opener[0]!r}: {exc.strerror or exc}"
            ) from None
        # Reap it in the background: the client gets its answer without waiting for the
        # viewer to close, and no zombie is left behind.
        task = asyncio.ensure_future(_reap(proc, self.opener[0], path))
        self._reapers.add(task)
        task.add_done_callback(self._reapers.discard)

    # ---- clean-up ----------------------------------------------------------------------------

    def sweep(self, now: Optional[float] = None) -> None:
        """Remove viewed files older than max_age."""
        if self.private_dir is None:
            return
        limit = (time.time() if now is None else now) - self.max_age
        try:
            entries = list(os.scandir(self.private_dir))
        except OSError:
            return
        for entry in entries:
            try:
                if entry.stat(follow_symlinks=False).st_mtime > limit:
                    continue
            except OSError:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                _unlink_quietly(entry.path)
            log.info("removed expired viewed file %s", entry.path)

    def _schedule_sweep(self) -> None:
        """Keep a timer while viewed files exist, so they expire even if no VIEW follows."""
        if self._sweep_timer is not None:
            return
        loop = asyncio.get_running_loop()
        self._sweep_timer = loop.call_later(min(self.max_age, 3600.0) + 1, self._timed_sweep)

    def _timed_sweep(self) -> None:
        self._sweep_timer = None
        self.sweep()
        if self.private_dir is not None and os.path.isdir(self.private_dir) \
                and os.listdir(self.private_dir):
            self._schedule_sweep()

    def close(self) -> None:
        """At shutdown: every viewed file goes."""
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()
            self._sweep_timer = None
        if self.private_dir is not None:
            shutil.rmtree(self.private_dir, ignore_errors=True)
            log.info("removed viewed files in %s", self.private_dir)
            self.private_dir = None


async def _reap(proc: "asyncio.subprocess.Process", opener: str, path: str) -> None:
    code = await proc.wait()
    if code != 0:
        log.warning("opener %s exited with status %d for %s", opener, code, path)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _remove_orphans(tmp: str) -> None:
    """Private directories of daemons that died without cleaning up (SIGKILL, power loss)."""
    try:
        entries = list(os.scandir(tmp))
    except OSError:
        return
    for entry in entries:
        if not entry.name.startswith(DIR_PREFIX):
            continue
        pid_text = entry.name[len(DIR_PREFIX):].split("-", 1)[0]
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not pid_text.isdigit() or st.st_uid != os.getuid() or not stat.S_ISDIR(st.st_mode):
            continue
        if int(pid_text) != os.getpid() and pid_alive(int(pid_text)):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        log.info("removed viewed files left by an earlier daemon: %s", entry.path)
