"""COPY and PASTE: the clipboard of the computer the daemon runs on, through the platform's own tools.

The tool is ``[clipboard] copy`` / ``paste`` if set, else the platform's: ``pbcopy`` and
``pbpaste`` on macOS; ``wl-copy`` and ``wl-paste`` under Wayland; ``xclip``, else ``xsel``, under
X11. The data goes on the tool's standard input (copy) or comes from its standard output
(paste); the argv is fixed, never a shell.

xclip, xsel and wl-copy fork a process that keeps serving the selection after they exit: it
inherits every descriptor it is given, so copy gives it no pipe but standard input (which this
side closes) and writes its errors to a file; a pipe it held would keep a wait from ending.
Every wait has a deadline; a tool past it is killed with its whole process group. Only sizes
are logged, never clipboard text.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass
from typing import IO, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from rtun.daemon.actions.advice import setting as change
from rtun.daemon.actions.files import Transfer
from rtun.protocol import messages
from rtun.protocol.events import FileStart
from rtun.protocol.messages import Rejected

log = logging.getLogger("rtun.daemon")

TOOL_TIMEOUT = 10.0  # seconds a clipboard tool may take; a hung selection owner stalls xclip -o
KILL_TIMEOUT = 5.0  # seconds to wait for a killed tool to be reaped
READ_SIZE = 64 * 1024
ERROR_CHARS = 200  # of the tool's first error line, in a refusal


class Sink(Transfer):
    """The one file of a COPY, kept in memory (its size was checked against the limit before
    READY, and the receiver holds the peer to it)."""

    def __init__(self) -> None:
        self._pieces: List[bytes] = []
        self.data: Optional[bytes] = None

    def start_file(self, event: FileStart) -> None:
        self._pieces = []

    def write(self, data: memoryview) -> None:
        self._pieces.append(bytes(data))

    def end_file(self) -> str:
        self.data = b"".join(self._pieces)
        self._pieces = []
        return ""

    def finish(self) -> None:
        pass

    def abort(self) -> None:
        self._pieces = []
        self.data = None

    def close(self) -> None:
        pass


# ---- which tool ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tool:
    """A clipboard command: its argv (the program found on $PATH), what it needs in its
    environment, and for a built-in paste tool the error it writes when the clipboard is empty
    (read as an empty clipboard, as xsel and pbpaste answer it)."""

    argv: Tuple[str, ...]
    name: str
    empty_error: Optional[str] = None
    env: Tuple[Tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Builtin:
    copy: Tuple[str, ...]
    paste: Tuple[str, ...]
    empty_error: Optional[str] = None
    env: Tuple[Tuple[str, str], ...] = ()


BUILTIN = {
    # pbcopy and pbpaste read and write text in the locale's encoding: a daemon started by
    # launchd has none, and turns every non-ASCII character into garbage.
    "pbcopy": Builtin(("pbcopy",), ("pbpaste",), None, (("LC_CTYPE", "UTF-8"),)),
    "wl-copy": Builtin(("wl-copy",), ("wl-paste", "--no-newline"), "Nothing is copied"),
    "xclip": Builtin(
        ("xclip", "-selection", "clipboard", "-in"),
        ("xclip", "-selection", "clipboard", "-out"),
        "not available",
    ),
    "xsel": Builtin(("xsel", "--clipboard", "--input"), ("xsel", "--clipboard", "--output")),
}

Which = Callable[[str], Optional[str]]


def builtin_name(platform: str, environ: Mapping[str, str], which: Which, setting: str) -> str:
    """The built-in tool for this platform and session, or a refusal saying what to do."""
    if platform == "darwin":
        return "pbcopy"
    wayland, x11 = environ.get("WAYLAND_DISPLAY"), environ.get("DISPLAY")
    if wayland and which("wl-copy") and which("wl-paste"):
        return "wl-copy"
    if x11:
        for name in ("xclip", "xsel"):
            if which(name):
                return name
    if not wayland and not x11:
        raise Rejected(
            messages.E_OPEN,
            "no clipboard on your computer: its rtun daemon has no display (neither "
            "WAYLAND_DISPLAY nor DISPLAY is set); start the daemon from your desktop session, "
            f"or {change(setting)}",
        )
    wanted = (["wl-clipboard (wl-copy, wl-paste)"] if wayland else []) + (["xclip or xsel"] if x11 else [])
    raise Rejected(
        messages.E_OPEN,
        f"no clipboard tool found on your computer: install {' or '.join(wanted)} there, "
        f"or {change(setting)}",
    )


def choose(
    configured: Sequence[str],
    kind: str,
    platform: str = sys.platform,
    environ: Optional[Mapping[str, str]] = None,
    which: Which = shutil.which,
) -> Tool:
    """The tool that copies (``kind`` "copy") or pastes ("paste"): the configured command if
    there is one, else the built-in one."""
    setting = f"[clipboard] {kind}"
    if configured:
        program = which(configured[0])
        if program is None:
            raise Rejected(
                messages.E_OPEN,
                f"cannot use the clipboard on your computer: {configured[0]!r} "
                f"was not found there; install it, or {change(setting)}",
            )
        return Tool((program,) + tuple(configured[1:]), os.path.basename(configured[0]))
    name = builtin_name(platform, os.environ if environ is None else environ, which, setting)
    builtin = BUILTIN[name]
    argv = builtin.copy if kind == "copy" else builtin.paste
    program = which(argv[0])
    if program is None:  # pbcopy and pbpaste come with macOS; found above for the others
        raise Rejected(
            messages.E_OPEN,
            f"no clipboard tool found on your computer: {argv[0]!r} is missing; {change(setting)}",
        )
    return Tool((program,) + argv[1:], argv[0], builtin.empty_error if kind == "paste" else None, builtin.env)


# ---- running it ------------------------------------------------------------------------------


class _TooLarge(Exception):
    pass


class Clipboard:
    def __init__(
        self,
        copy_command: Sequence[str],
        paste_command: Sequence[str],
        max_bytes: int,
        timeout: float = TOOL_TIMEOUT,
        platform: str = sys.platform,
        environ: Optional[Mapping[str, str]] = None,
        which: Which = shutil.which,
    ) -> None:
        self.copy_command = tuple(copy_command)
        self.paste_command = tuple(paste_command)
        self.max_bytes = max_bytes
        self.timeout = timeout
        self._platform = platform
        self._environ = environ  # what the tool is chosen by and runs in (None: the daemon's)
        self._which = which
        self._lock: Optional[asyncio.Lock] = None  # made in the loop (3.9 binds it at creation)

    def tool(self, kind: str) -> Tool:
        configured = self.copy_command if kind == "copy" else self.paste_command
        return choose(configured, kind, self._platform, self._environ, self._which)

    def _one_at_a_time(self) -> asyncio.Lock:
        # One tool at a time: copies land in the order they were answered, and a burst of
        # requests never runs many tools at once.
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def copy(self, data: bytes) -> None:
        tool = self.tool("copy")
        async with self._one_at_a_time():
            with tempfile.TemporaryFile() as errors:
                proc = await self._start(tool, asyncio.subprocess.PIPE, asyncio.subprocess.DEVNULL, errors)
                try:
                    await asyncio.wait_for(proc.communicate(data), self.timeout)
                except asyncio.TimeoutError:
                    await _kill(proc)
                    raise Rejected(
                        messages.E_OPEN,
                        f"cannot copy to the clipboard: {tool.name} did not "
                        f"finish within {self.timeout:.0f} s",
                    ) from None
                except BaseException:
                    await _kill(proc)
                    raise
                if proc.returncode != 0:
                    raise Rejected(
                        messages.E_OPEN,
                        f"cannot copy to the clipboard: {tool.name} {_failure(proc.returncode, errors)}",
                    )
        log.info("copied %d bytes to the clipboard with %s", len(data), tool.name)

    async def paste(self) -> bytes:
        tool = self.tool("paste")
        async with self._one_at_a_time():
            with tempfile.TemporaryFile() as errors:
                proc = await self._start(tool, asyncio.subprocess.DEVNULL, asyncio.subprocess.PIPE, errors)
                try:
                    data = await asyncio.wait_for(_read_all(proc, self.max_bytes), self.timeout)
                except asyncio.TimeoutError:
                    await _kill(proc)
                    raise Rejected(
                        messages.E_OPEN,
                        f"cannot read the clipboard: {tool.name} did not "
                        f"answer within {self.timeout:.0f} s (the program that holds "
                        "the clipboard may be hung)",
                    ) from None
                except _TooLarge:
                    await _kill(proc)
                    raise Rejected(
                        messages.E_TOO_LARGE,
                        f"the clipboard holds more than {self.max_bytes} "
                        f"bytes, more than it may send ([clipboard] max_bytes = {self.max_bytes}); "
                        "to send more, "
                        f"{change('[clipboard] max_bytes')}",
                    ) from None
                except BaseException:
                    await _kill(proc)
                    raise
                if proc.returncode != 0:
                    if data or not tool.empty_error or tool.empty_error not in _first_line(errors):
                        raise Rejected(
                            messages.E_OPEN,
                            f"cannot read the clipboard: {tool.name} {_failure(proc.returncode, errors)}",
                        )
                    data = b""  # xclip and wl-paste fail on an empty clipboard; xsel prints nothing
        log.info("pasted %d bytes from the clipboard with %s", len(data), tool.name)
        return data

    def _env(self, tool: Tool) -> Optional[Dict[str, str]]:
        if self._environ is None and not tool.env:
            return None  # the daemon's own
        env = dict(os.environ if self._environ is None else self._environ)
        if "LC_ALL" not in env:  # it would win over what the tool needs
            env.update(tool.env)
        return env

    async def _start(
        self, tool: Tool, stdin: int, stdout: int, errors: IO[bytes]
    ) -> "asyncio.subprocess.Process":
        try:
            return await asyncio.create_subprocess_exec(
                *tool.argv,
                stdin=stdin,
                stdout=stdout,
                stderr=errors,
                env=self._env(tool),
                start_new_session=True,  # its own group, killed as one; no signal from our terminal
            )
        except OSError as exc:
            raise Rejected(messages.E_OPEN, f"cannot start {tool.name!r}: {exc.strerror or exc}") from None


async def _read_all(proc: "asyncio.subprocess.Process", limit: int) -> bytes:
    """The tool's whole output, or _TooLarge as soon as it passes ``limit`` bytes."""
    assert proc.stdout is not None
    pieces: List[bytes] = []
    total = 0
    while True:
        piece = await proc.stdout.read(READ_SIZE)
        if not piece:
            break
        total += len(piece)
        if total > limit:
            raise _TooLarge()
        pieces.append(piece)
    await proc.wait()
    return b"".join(pieces)


async def _kill(proc: "asyncio.subprocess.Process") -> None:
    """Kill a tool that is still running, and everything it started in its group."""
    if proc.returncode is not None:
        return  # finished: what it left serving the selection must stay
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        await asyncio.wait_for(_reap(proc), KILL_TIMEOUT)
    except asyncio.TimeoutError:  # a descendant left the group and holds a pipe
        log.warning("a killed clipboard tool (pid %d) was not reaped within %.0f s", proc.pid, KILL_TIMEOUT)


async def _reap(proc: "asyncio.subprocess.Process") -> None:
    # The wait ends only once its pipes are closed, and a full pipe is no longer read: close
    # the one we write, read the other to its end (its writers are dead), then wait.
    if proc.stdin is not None:
        proc.stdin.close()
    if proc.stdout is not None:
        while await proc.stdout.read(READ_SIZE):
            pass
    await proc.wait()


def _first_line(errors: IO[bytes]) -> str:
    """The first line the tool wrote to its error file, as printable ASCII."""
    errors.seek(0)
    raw = errors.read(4096).decode("utf-8", "replace").strip().split("\n", 1)[0]
    return "".join(ch if " " <= ch <= "~" else "?" for ch in raw)[:ERROR_CHARS]


def _failure(code: Optional[int], errors: IO[bytes]) -> str:
    said = _first_line(errors)
    how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with status {code}"
    return f"{how}: {said}" if said else how
