"""Text from elsewhere (a peer, a server, ssh, a relay's registry) made safe to show: the one
place that decides how, used wherever such text reaches a terminal, a log or a message.

A terminal acts on controls (ESC starts a sequence that can retitle the window, move the
cursor or rewrite what is on screen) and bidirectional and other format characters make text
read as something it is not; a line break starts what looks like a line of rtun's own. So each
function here gives one line, of bounded length, with none of those in it. Stdlib only, no
state: the single-file client imports it too.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List

LIMIT = 300  # characters of output, before the "..." that says the text was cut
PATH_LIMIT = 8192  # ... where the text is a whole path (where `rtun send` saved a file)
MORE = "..."


def _escape(text: str, limit: int, keep_unicode: bool) -> str:
    out: List[str] = []
    size = 0
    for ch in text:
        if ch == "\\":
            piece = "\\\\"  # doubled, so that an escape below can never be forged
        elif " " <= ch <= "~" or (keep_unicode and ch > "\x7f" and ch.isprintable()):
            piece = ch
        else:  # str.isprintable() is False for controls, format (bidi) and separator characters
            piece = ascii(ch)[1:-1]
        size += len(piece)
        if size > limit:
            return "".join(out) + MORE
        out.append(piece)
    return "".join(out)


def escaped(text: str, limit: int = LIMIT) -> str:
    """``text`` with every character a terminal would act on (controls, escapes, bidi and other
    format marks, line and paragraph separators) written as its Python escape, backslashes
    doubled; printable letters of any script kept. At most ``limit`` characters, then "..."."""
    return _escape(text, limit, True)


def ascii_escaped(text: str, limit: int = LIMIT) -> str:
    """As :func:`escaped`, but everything outside printable ASCII escaped: for the log and
    messages on the wire, which stay ASCII."""
    return _escape(text, limit, False)


def quoted(text: str, limit: int = LIMIT) -> str:
    """``'text'``, ASCII-escaped: a name a peer sent, quoted in a one-line message."""
    return f"'{ascii_escaped(text, limit)}'"


def one_line(text: object, limit: int = LIMIT) -> str:
    """Prose from a peer as one plain line: anything not printable is a space, runs of
    whitespace are one space, cut at ``limit`` characters (then "..."). Not a string: ""."""
    if not isinstance(text, str):
        return ""
    line = " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
    return line if len(line) <= limit else line[:limit] + MORE


def lines(text: str, limit: int = LIMIT) -> "List[str]":
    """The non-blank lines of what a program (ssh) printed, stripped, progress meters' ``\\r``
    taken as line ends, each escaped: a server's or relay's words never drive the terminal."""
    return [escaped(line.strip(), limit) for line in text.replace("\r", "\n").splitlines() if line.strip()]


def last_line(text: str, limit: int = LIMIT) -> str:
    """The last non-blank line of what a program printed (ssh says why it failed last), escaped."""
    found = lines(text, limit)
    return found[-1] if found else ""
