"""Copying through the terminal itself: the OSC 52 escape sequence, written to /dev/tty, which
the terminal on your computer turns into a copy to its clipboard (when it allows OSC 52). It
works where the daemon's socket does not reach: after `sudo -i`, in a container, before
`rtun ssh`.

``sequence`` builds the bytes (pure): ``ESC ] 52 ; c ; BASE64 BEL``, inside tmux wrapped in
its passthrough, inside GNU screen cut into the DCS strings screen passes on. ``write`` puts
them on the terminal, all or nothing said.

Stdlib only: it runs on the server.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: it slows every command's start
    from typing import List, Mapping

from rtun.errors import RtunError

# hterm (ChromeOS's terminal) drops a sequence past 100,000 bytes, the bound its osc52.sh
# keeps to; xterm, kitty, iTerm2 and tmux take at least that much. 74,994 bytes of data are
# 99,992 of base64, which with ESC ] 52 ; c ; and BEL make 100,000.
MAX_DATA = 74_994
SCREEN_CHUNK = 768 - 4  # screen keeps DCS strings to 768 bytes; 4 go to ESC P and ESC \


def sequence(data: bytes, environ: "Mapping[str, str]") -> bytes:
    """The bytes that copy ``data`` through the terminal, for a program running where
    ``environ`` says (inside tmux: $TMUX; inside screen: $STY)."""
    import base64

    osc = b"\x1b]52;c;" + base64.b64encode(data) + b"\x07"
    if environ.get("TMUX"):
        # tmux passes on what sits between ESC P tmux; and ESC \, its own ESCs doubled (tmux
        # 3.3 and later only with `set -g allow-passthrough on`).
        return b"\x1bPtmux;" + osc.replace(b"\x1b", b"\x1b\x1b") + b"\x1b\\"
    if environ.get("STY"):
        pieces: "List[bytes]" = []
        for start in range(0, len(osc), SCREEN_CHUNK):
            pieces.append(b"\x1bP" + osc[start : start + SCREEN_CHUNK] + b"\x1b\\")
        return b"".join(pieces)
    return osc


def too_large(size: int) -> str:
    return (
        f"{size} bytes is more than a terminal takes through OSC 52 (at most {MAX_DATA} bytes, "
        "a 100,000-byte sequence)"
    )


def open_terminal() -> int:
    """The controlling terminal, opened for writing; -1 when there is none."""
    import os

    try:
        return os.open("/dev/tty", os.O_WRONLY | os.O_NOCTTY)
    except OSError:
        return -1


def write(fd: int, data: bytes, environ: "Mapping[str, str]") -> None:
    """Copy ``data`` through the terminal open on ``fd`` (closed after): every byte of the
    sequence is written, or RtunError says what went wrong."""
    import os

    try:
        if len(data) > MAX_DATA:
            raise RtunError(f"cannot copy through the terminal: {too_large(len(data))}")
        view = memoryview(sequence(data, environ))
        while view:
            try:
                done = os.write(fd, view)
            except InterruptedError:
                continue
            except OSError as exc:
                raise RtunError(f"cannot copy through the terminal: {exc.strerror or exc}") from None
            view = view[done:]
    finally:
        os.close(fd)
