"""OPEN: a URL from the server in this computer's browser.

Only ``http``, ``https`` and ``mailto`` pass: ``file:``, ``javascript:``, ``smb:`` and the
desktop's custom handlers (``vscode:``, ``ms-officecmd:`` and the like) would let the server
reach local files or programs. The URL goes to the browser command (``[open] browser``, else
``xdg-open`` or macOS ``open``) as one argv element, after checks that it is printable ASCII
text a browser reads the same way the check does.
"""

from __future__ import annotations

import logging
from typing import Sequence
from urllib.parse import urlsplit

from rtun.daemon.actions.launch import launch
from rtun.daemon.actions.viewtypes import default_opener
from rtun.protocol import wire
from rtun.protocol.limits import MAX_URL
from rtun.protocol.wire import Rejected

log = logging.getLogger("rtun.daemon")

ALLOWED_SCHEMES = ("http", "https", "mailto")


def check_url(url: str) -> str:
    """The URL's scheme if the URL may be opened; else a refusal saying why."""
    if len(url.encode("utf-8", "replace")) > MAX_URL:
        raise Rejected(wire.E_BAD_REQUEST, f"URL longer than {MAX_URL} bytes")
    # Printable ASCII only: a browser would read spaces, controls and bidirectional marks
    # differently from this check (and they would mislead a log reader). IDNs and other
    # Unicode arrive percent- or punycode-encoded from every tool that makes URLs.
    if not url or any(not ("!" <= ch <= "~") for ch in url):
        raise Rejected(wire.E_BAD_REQUEST, "a URL must be printable ASCII without spaces")
    scheme, colon, _ = url.partition(":")
    scheme = scheme.lower()
    if not colon or scheme not in ALLOWED_SCHEMES:
        shown = scheme[:20] if colon and scheme.isalnum() else "none"
        raise Rejected(wire.E_REFUSED_TYPE,
                       f"refusing to open a URL of scheme {shown!r}: only http, https and mailto open")
    if scheme in ("http", "https"):
        try:
            parts = urlsplit(url)
            host = parts.hostname
        except ValueError:
            host = None
        if not url[len(scheme) + 1:].startswith("//") or not host:
            raise Rejected(wire.E_BAD_REQUEST, f"an {scheme} URL needs a host")
    return scheme


class Browser:
    def __init__(self, command: Sequence[str] = ()) -> None:
        self.command = tuple(command) or default_opener()

    async def open(self, url: str) -> None:
        scheme = check_url(url)
        # The log says what kind of URL, not which: it may carry tokens.
        await launch(self.command, url, "[open] browser", "URLs", f"a {scheme} URL")
        log.info("opened a %s URL (%d bytes) with %s", scheme, len(url), self.command[0])
