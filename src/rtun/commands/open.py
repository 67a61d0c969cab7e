"""`rtun open TARGET...`: a web page or mail link in your computer's browser, a file as `rtun view`.

A URL of this server's own loopback (``http://localhost:8888/...``) is forwarded first, and so
is the port of a login's loopback redirect in it (loopback.py). A target that exists here is a file, and so is one without a scheme (``name:`` in front); an
``http:``, ``https:`` or ``mailto:`` URL goes to the daemon's browser, and any other scheme is
refused here at once, with exit code 4 as the daemon's refusals have (the daemon checks every
URL again: the client on a server may be old or hostile). Every URL is checked before the
first target opens. Installed as ``rtun-open`` too (see ``main``), the one-word name that BROWSER
and an xdg-open stand-in need (docs/desktop.md).
"""

from __future__ import annotations

import argparse
import os

from rtun.command import Command, socket_option
from rtun.errors import RtunError

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: it slows every command's start
    from typing import Optional, Tuple

# The daemon's list (rtun.daemon.actions.browser, which the client cannot import).
ALLOWED_SCHEMES = ("http", "https", "mailto")
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789+-.")
_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")
# What RFC 3986 allows in a URI, and the backslash (kept, so that the daemon refuses it: a
# browser reads it as "/" in an http URL). Everything else is percent-encoded as UTF-8.
_KEPT = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~:/?#[]@!$&'()*+,;=%\\")
# Characters that IDNA 2003 (Python's codec) and the browsers' UTS 46 map differently.
_IDNA_DEVIATIONS = "\u00df\u03c2\u200c\u200d"


class Refused(RtunError):
    """A URL the daemon would refuse too: refused here, before anything is sent."""

    exit_code = 4


def _arguments(parser: argparse.ArgumentParser) -> None:
    socket_option(parser)
    parser.add_argument(
        "targets",
        nargs="+",
        metavar="TARGET",
        help="a file (sent and opened as rtun view does), or an http, https or mailto URL",
    )


def _run(args: argparse.Namespace) -> int:
    targets = [classify(target) for target in args.targets]
    for is_url, target in targets:
        if is_url:
            from rtun.client import requests
            from rtun.commands import loopback

            requests.open_url(args.socket, loopback.forwarded(args.socket, target))
        else:
            from rtun.client import upload

            upload.view(args.socket, target)
    return 0


def main() -> int:
    """The ``rtun-open`` program: `rtun open` under a name of its own."""
    import sys

    from rtun.cli import main as rtun_main

    return rtun_main(["open"] + sys.argv[1:])


open_target = Command(
    _arguments,
    _run,
    usage="rtun open [-s PATH] [-v] TARGET...",
    description="Open http, https and mailto URLs in your computer's browser; "
    "a file is sent and opened as rtun view does. Other schemes are refused (exit 4).",
    examples=[
        "rtun open https://example.org/",
        "export BROWSER=rtun-open    # programs here open their pages there",
    ],
)


# ---- telling URLs from files ------------------------------------------------------------------


def scheme_of(target: str) -> "Optional[str]":
    """The scheme of ``target`` in lower case ("https" of "HTTPS://x"), or None if it has none."""
    name, colon, _ = target.partition(":")
    scheme = name.lower()
    if not colon or not scheme or not ("a" <= scheme[0] <= "z") or not set(scheme) <= _SCHEME_CHARS:
        return None
    return scheme


def classify(target: str) -> "Tuple[bool, str]":
    """``(True, URL to send)`` for a URL, ``(False, path)`` for a file; raises for a target that
    cannot be opened."""
    if os.path.lexists(target):
        return False, target
    url = target.strip()  # a pasted line's spaces, as a browser's address bar drops them
    scheme = scheme_of(url)
    host_port = (
        scheme is not None
        and scheme not in ALLOWED_SCHEMES  # localhost:8888
        and url[len(scheme) + 1 :].partition("/")[0].isdigit()
    )
    if scheme is None or host_port:
        if _looks_like_host(url):
            local = ":" in url.partition("/")[0]  # a port: a local server, most likely without TLS
            raise RtunError(
                f"cannot read {target}: no such file; if it is a web address, add its "
                f"scheme: rtun open {'http' if local else 'https'}://{url}"
            )
        return False, target  # view says why it cannot be read
    if scheme not in ALLOWED_SCHEMES:
        shown = scheme if len(scheme) <= 32 else scheme[:32] + "..."
        hint = " (for a file on this server, give its path)" if scheme == "file" else ""
        raise Refused(f"refusing to open a URL of scheme {shown!r}: only http, https and mailto open{hint}")
    return True, normalize(url)


def _looks_like_host(target: str) -> bool:
    """``www.example.org/x``, ``localhost:8888``: a host name (with a port or a path)."""
    host, _, port = target.partition("/")[0].partition(":")
    labels = host.lower().split(".")
    named = len(labels) > 1 or bool(port) or host == "localhost"
    return (
        named
        and (not port or port.isdigit())
        and all(label and set(label) <= _HOST_CHARS for label in labels)
    )


def normalize(url: str) -> str:
    """``url`` as the daemon takes it: the scheme in lower case, a non-ASCII host name in its
    xn-- form, and non-ASCII and what RFC 3986 does not allow (spaces, quotes, ...) percent-encoded
    as UTF-8, as browsers do. Control characters are refused: a browser would drop them."""
    if any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in url):
        raise Refused("refusing a URL with a control character (a tab, a line break, ...) in it")
    scheme, _, rest = url.partition(":")
    scheme = scheme.lower()
    if scheme != "mailto" and rest.startswith("//"):
        rest = "//" + _ascii_host(rest[2:])
    return scheme + ":" + "".join(ch if ch in _KEPT else _percent(ch) for ch in rest)


def _percent(ch: str) -> str:
    try:  # surrogateescape: an argv byte that is not UTF-8 is sent as that byte
        data = ch.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate of another kind (not from argv)
        data = ch.encode("utf-8", "surrogatepass")
    return "".join(f"%{byte:02X}" for byte in data)


def _ascii_host(rest: str) -> str:
    """``rest`` (what follows "//") with a non-ASCII host name in its xn-- (IDNA) form."""
    end = min((rest.find(c) for c in "/?#\\" if c in rest), default=len(rest))
    authority = rest[:end]
    if authority.isascii():
        return rest
    user, at, hostport = authority.rpartition("@")
    host, colon, port = hostport.partition(":")
    if any(ch in host for ch in _IDNA_DEVIATIONS):
        raise Refused(
            f"the host name {host} has ß, ς or a zero-width joiner, which the IDNA "
            "standards write differently: give its xn-- form"
        )
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise Refused(f"the host name {host} cannot be written in ASCII (IDNA)") from None
    return user + at + ascii_host + colon + port + rest[end:]
