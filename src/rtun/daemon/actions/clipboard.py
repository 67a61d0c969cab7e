"""COPY and PASTE: the clipboard of the computer the daemon runs on, through the platform's own tools.

Which tool, and its argv (fixed, never a shell), is ``cliptools``' choice. The data goes on the
tool's standard input (copy) or comes from its standard output (paste), or for osascript's
images through a private file. An image's data must begin as its type's does before any tool
sees it.

xclip, xsel and wl-copy fork a process that keeps serving the selection after they exit: it
inherits every descriptor it is given, so copy gives it no pipe but standard input (which this
side closes) and writes its errors to a file; a pipe it held would keep a wait from ending.
Every wait has a deadline; a tool past it is killed with its whole process group. Only sizes
are logged, never clipboard text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
from typing import IO, Callable, Dict, Iterator, List, Mapping, Optional, Sequence

from rtun.daemon.actions.advice import setting as change
from rtun.daemon.actions.cliptools import COPY, LIST, PASTE, Tool, Which, choose
from rtun.daemon.actions.files import Transfer
from rtun.protocol import messages
from rtun.protocol.events import FileStart
from rtun.protocol.imagetypes import is_image
from rtun.protocol.messages import Rejected

log = logging.getLogger("rtun.daemon")

TOOL_TIMEOUT = 10.0  # seconds a clipboard tool may take; a hung selection owner stalls xclip -o
KILL_TIMEOUT = 5.0  # seconds to wait for a killed tool to be reaped
READ_SIZE = 64 * 1024
ERROR_CHARS = 200  # of the tool's first error line, in a refusal
MAX_TYPES = 64  # types a listing gives back, each at most TYPE_CHARS printable ASCII
TYPE_CHARS = 100
LIST_BYTES = 64 * 1024  # of a tool's listing read at most

__all__ = ["Clipboard", "Sink", "choose"]  # choose: cliptools', for doctor and the tests


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

    def tool(self, kind: str, mime: str = "") -> Tool:
        configured = self.copy_command if kind == COPY else self.paste_command
        return choose(configured, kind, self._platform, self._environ, self._which, mime)

    def _one_at_a_time(self) -> asyncio.Lock:
        # One tool at a time: copies land in the order they were answered, and a burst of
        # requests never runs many tools at once.
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def copy(self, data: bytes, mime: str = "") -> None:
        """``data`` onto the clipboard as ``mime`` ("" or text/plain: text; else an image type,
        which the data must begin as)."""
        if mime not in ("", messages.TEXT_TYPE) and not is_image(data, mime):
            raise Rejected(
                messages.E_REFUSED_TYPE,
                f"refusing to copy: the data is not a {mime} image (it does not begin as one); "
                "the clipboard was left alone",
            )
        tool = self.tool(COPY, mime)
        async with self._one_at_a_time():
            if tool.via_file:
                with _private_file(data) as path:
                    await self._copy(Tool(tool.argv + (path,), tool.name, env=tool.env), b"")
            else:
                await self._copy(tool, data)
        log.info("copied %d bytes%s to the clipboard with %s", len(data), _of(mime), tool.name)

    async def _copy(self, tool: Tool, data: bytes) -> None:
        with tempfile.TemporaryFile() as errors:
            proc = await self._start(tool, asyncio.subprocess.PIPE, asyncio.subprocess.DEVNULL, errors)
            try:
                await asyncio.wait_for(proc.communicate(data), self.timeout)
            except asyncio.TimeoutError:
                await _kill(proc)
                raise Rejected(
                    messages.E_OPEN,
                    f"cannot copy to the clipboard: {tool.name} did not finish within {self.timeout:.0f} s",
                ) from None
            except BaseException:
                await _kill(proc)
                raise
            if proc.returncode != 0:
                raise Rejected(
                    messages.E_OPEN,
                    f"cannot copy to the clipboard: {tool.name} {_failure(proc.returncode, errors)}",
                )

    async def paste(self, mime: str = "") -> bytes:
        """The clipboard as ``mime`` ("" or text/plain: text), at most ``max_bytes``."""
        tool = self.tool(PASTE, mime)
        image = mime not in ("", messages.TEXT_TYPE)
        async with self._one_at_a_time():
            if tool.via_file:
                with _private_file(b"") as path:
                    await self._read(Tool(tool.argv + (path,), tool.name, env=tool.env), self.max_bytes)
                    data = _read_bounded(path, self.max_bytes, self._too_large)
            else:
                data = await self._read(tool, self.max_bytes, image=mime if image else "")
        if image and not is_image(data, mime):  # some owners (xclip) answer any type they are asked
            raise Rejected(messages.E_OPEN, _no_such_type(mime))
        log.info("pasted %d bytes%s from the clipboard with %s", len(data), _of(mime), tool.name)
        return data

    async def list_types(self) -> List[str]:
        """The types the clipboard holds, as its tool names them: at most MAX_TYPES, each
        printable ASCII of at most TYPE_CHARS."""
        tool = self.tool(LIST)
        async with self._one_at_a_time():
            listing = await self._read(tool, LIST_BYTES, empty_ok=True)
        text = listing.decode("utf-8", "replace")
        names = _mac_types(text) if tool.name == "osascript" else text.splitlines()
        types: List[str] = []
        for name in names:
            clean = "".join(ch for ch in name.strip() if " " <= ch <= "~")[:TYPE_CHARS]
            if clean and clean not in types and len(types) < MAX_TYPES:
                types.append(clean)
        return types

    def _too_large(self) -> Rejected:
        return Rejected(
            messages.E_TOO_LARGE,
            f"the clipboard holds more than {self.max_bytes} "
            f"bytes, more than it may send ([clipboard] max_bytes = {self.max_bytes}); "
            f"to send more, {change('[clipboard] max_bytes')}",
        )

    async def _read(self, tool: Tool, limit: int, *, image: str = "", empty_ok: bool = False) -> bytes:
        """What ``tool`` writes, at most ``limit`` bytes. ``image``: the type asked for; a
        failure that says it is not there is said so; ``empty_ok``: any failure with no output is an empty
        clipboard."""
        with tempfile.TemporaryFile() as errors:
            proc = await self._start(tool, asyncio.subprocess.DEVNULL, asyncio.subprocess.PIPE, errors)
            try:
                data = await asyncio.wait_for(_read_all(proc, limit), self.timeout)
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
                raise self._too_large() from None
            except BaseException:
                await _kill(proc)
                raise
            if proc.returncode != 0:
                said = _first_line(errors)
                if image and not data and any(words in said for words in NO_SUCH_TYPE):
                    raise Rejected(messages.E_OPEN, _no_such_type(image))
                empty = empty_ok or (tool.empty_error is not None and tool.empty_error in said)
                if data or not empty:
                    raise Rejected(
                        messages.E_OPEN,
                        f"cannot read the clipboard: {tool.name} {_failure(proc.returncode, errors)}",
                    )
                data = b""  # xclip and wl-paste fail on an empty clipboard; xsel prints nothing
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


NO_SUCH_TYPE = ("not available", "No suitable type")  # xclip's and wl-paste's words for it


def _of(mime: str) -> str:
    return f" of {mime}" if mime not in ("", messages.TEXT_TYPE) else ""  # text logs as it always has


def _no_such_type(mime: str) -> str:
    return f"the clipboard on your computer holds no {mime} (`rtun paste --list-types` lists what it holds)"


@contextlib.contextmanager
def _private_file(data: bytes) -> Iterator[str]:
    """A file only this user reads (mkstemp makes it 0600), holding ``data``; removed after."""
    fd, path = tempfile.mkstemp(prefix="rtun-clipboard-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _read_bounded(path: str, limit: int, too_large: Callable[[], Rejected]) -> bytes:
    with open(path, "rb") as source:
        data = source.read(limit + 1)
    if len(data) > limit:
        raise too_large()
    return data


def _mac_types(info: str) -> List[str]:
    """The MIME types of what osascript's ``clipboard info`` names («class PNGf», 123, ...)."""
    found = {"«class PNGf»": "image/png", "«class JPEG»": "image/jpeg", "«class GIFf»": "image/gif"}
    types = [mime for name, mime in found.items() if name in info]
    if "«class utf8»" in info or "string" in info:
        types.insert(0, messages.TEXT_TYPE)
    return types


def _first_line(errors: IO[bytes]) -> str:
    """The first line the tool wrote to its error file, as printable ASCII."""
    errors.seek(0)
    raw = errors.read(4096).decode("utf-8", "replace").strip().split("\n", 1)[0]
    return "".join(ch if " " <= ch <= "~" else "?" for ch in raw)[:ERROR_CHARS]


def _failure(code: Optional[int], errors: IO[bytes]) -> str:
    said = _first_line(errors)
    how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with status {code}"
    return f"{how}: {said}" if said else how
