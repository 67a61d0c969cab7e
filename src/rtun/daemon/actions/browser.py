"""OPEN: a URL from the server in the browser of the computer the daemon runs on.

Only ``http``, ``https`` and ``mailto`` pass: ``file:``, ``javascript:``, ``data:``, ``smb:`` and
the desktop's custom handlers (``vscode:``, ``ms-officecmd:`` and the like) would let the server
reach local files or programs. The URL goes to the browser command (``[open] browser``, else
``xdg-open`` or macOS ``open``) as one argv element, after checks that make every reader (this
check, Python's urlsplit, a browser's WHATWG parser, xdg-open's shell script) see the same
scheme and the same host: characters RFC 3986 allows and nothing else, no user name before the
host, and mailto fields that cannot attach local files.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import List, Sequence, Tuple
from urllib.parse import unquote

from rtun.daemon.actions.launch import launch
from rtun.daemon.actions.viewtypes import default_opener
from rtun.protocol import messages
from rtun.protocol.limits import MAX_URL
from rtun.protocol.messages import Rejected

log = logging.getLogger("rtun.daemon")

ALLOWED_SCHEMES = ("http", "https", "mailto")
# Header fields a mailto URL may set. Others are refused: mail programs have taken `attach=`,
# `attachment=` and the like as a local file to attach (CVE-2020-11879 and its kin), which
# would let the server have a mail to itself composed with a file of yours in it.
MAILTO_FIELDS = ("to", "cc", "bcc", "subject", "body", "in-reply-to")
# What RFC 3986 allows in a URI: unreserved, reserved and "%". Left out: space and controls
# (browsers drop or trim them, so they would read another URL than the one checked), "\"
# (a browser reads it as "/" in an http URL, Python does not), and " < > ^ ` { | } which no
# URI holds unencoded (`rtun open` percent-encodes them, and non-ASCII, before sending).
URI_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~:/?#[]@!$&'()*+,;=%")
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789+-.")
_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")


def check_url(url: str) -> Tuple[str, str]:
    """The URL's scheme and the URL to hand the browser (its scheme in lower case, the rest as
    sent) if it may be opened; else a refusal saying why. Refusals quote nothing of the URL but a
    well-formed scheme or field name: the daemon logs them."""
    if len(url.encode("utf-8", "replace")) > MAX_URL:
        raise Rejected(messages.E_BAD_REQUEST, f"URL longer than {MAX_URL} bytes")
    if not url or any(ch not in URI_CHARS for ch in url):
        raise Rejected(
            messages.E_BAD_REQUEST,
            "a URL must be ASCII without spaces, control characters, "
            'backslashes or " < > ^ ` { | } (percent-encode them)',
        )
    name, colon, rest = url.partition(":")
    scheme = name.lower()
    if not colon or scheme not in ALLOWED_SCHEMES:
        well_formed = colon and 0 < len(scheme) <= 32 and scheme[0].isalpha() and set(scheme) <= _SCHEME_CHARS
        shown = (
            f"a URL of scheme {scheme!r}" if well_formed else "a URL without an http, https or mailto scheme"
        )
        raise Rejected(messages.E_REFUSED_TYPE, f"refusing to open {shown}: only http, https and mailto open")
    if scheme == "mailto":
        _check_mailto(rest)
    else:
        _check_host(scheme, rest)
    return scheme, scheme + ":" + rest


def _check_host(scheme: str, rest: str) -> None:
    """``//HOST[:PORT]`` then anything: a host of DNS labels or an IP address, no user name."""
    if not rest.startswith("//") or rest.startswith("///"):
        # A browser reads "http:/x" and "http:///x" as http://x/; Python finds no host in them.
        raise Rejected(messages.E_BAD_REQUEST, f"an {scheme} URL needs a host: {scheme}://HOST/...")
    authority = rest[2:]
    for end in "/?#":
        authority = authority.partition(end)[0]
    if "@" in authority:
        # https://accounts.example.com@evil.example/ goes to evil.example.
        raise Rejected(
            messages.E_BAD_REQUEST,
            "refusing a URL with a user name or password before its host "
            "(USER@HOST): it can disguise where the URL goes",
        )
    if authority.startswith("["):
        host, bracket, port = authority[1:].partition("]")
        if not bracket or not _ipv6(host):
            raise Rejected(
                messages.E_BAD_REQUEST, f"an {scheme} URL whose host is not a valid [IPv6] address"
            )
    else:
        host, colon, number = authority.partition(":")
        port = colon + number
        if not _dns_name(host):
            raise Rejected(
                messages.E_BAD_REQUEST,
                f"an {scheme} URL needs a host name of letters, digits, "
                "- and _ (a non-ASCII one in its xn-- form), or an IP address",
            )
    number = port[1:]
    if port and (port[0] != ":" or number and not (number.isdigit() and int(number) <= 65535)):
        raise Rejected(
            messages.E_BAD_REQUEST, f"an {scheme} URL with a port that is not a number up to 65535"
        )


def _ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)  # a zone ("%25eth0") is refused: "%" is no part of an address
    except ValueError:
        return False
    return "%" not in text


def _dns_name(host: str) -> bool:
    labels = host.lower().split(".")
    if labels[-1] == "" and len(labels) > 1:
        labels.pop()  # a fully qualified name's trailing dot
    return 0 < len(host) <= 254 and all(
        0 < len(label) <= 63 and set(label) <= _LABEL_CHARS for label in labels
    )


def _check_mailto(rest: str) -> None:
    """Addresses, then ``?field=value&...`` of the fields in MAILTO_FIELDS only."""
    if rest.startswith("/"):
        raise Rejected(messages.E_BAD_REQUEST, "a mailto URL starts with its addresses: mailto:NAME@HOST")
    addresses, _, query = rest.partition("?")
    if _has_control(unquote(addresses)):
        raise Rejected(messages.E_BAD_REQUEST, "a mailto address with a line break or control character")
    for piece in _pieces(query):
        field, equals, value = piece.partition("=")
        field = unquote(field).lower()
        if equals and field not in MAILTO_FIELDS:
            raise _field_refused(field)
        if field != "body" and _has_control(unquote(value)):
            raise Rejected(messages.E_BAD_REQUEST, f"a mailto {field} with a line break or control character")
    # Once decoded, too: a mail program that decodes before it splits must find no other field
    # either. (Text like "a = b" in a decoded body has no field name before its "=".)
    # A name padded with spaces (" attach=") counts as the name: mail programs trim it.
    for piece in _pieces(unquote(rest).partition("?")[2]):
        field, equals, _ = piece.partition("=")
        field = field.strip().lower()
        if equals and field and set(field) <= _LABEL_CHARS and field not in MAILTO_FIELDS:
            raise _field_refused(field)
    if any(ch in part for ch in "&=" for part in (addresses, unquote(addresses))):
        # mailto:a@b&attach=/etc/passwd: a mail program that splits fields on "&" before or
        # without a "?" would find a field here that the checks above do not see.
        raise Rejected(messages.E_BAD_REQUEST, "a mailto address with & or = in it: fields go after a ?")


def _pieces(query: str) -> List[str]:
    # Split on "?" as well as "&": some mail programs take either.
    return query.replace("?", "&").split("&")


def _has_control(text: str) -> bool:
    return any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in text)


def _field_refused(field: str) -> Rejected:
    shown = f" {field!r}" if 0 < len(field) <= 20 and set(field) <= _LABEL_CHARS else ""
    return Rejected(
        messages.E_REFUSED_TYPE,
        f"refusing a mailto URL with the field{shown}: only "
        f"{', '.join(MAILTO_FIELDS)} (mail programs may attach a local file for others)",
    )


class Browser:
    def __init__(self, command: Sequence[str] = ()) -> None:
        self.command = tuple(command) or default_opener()

    async def open(self, url: str) -> None:
        scheme, checked = check_url(url)
        # The log says what kind of URL, not which: it may carry tokens.
        await launch(self.command, checked, "[open] browser", "URLs", f"a URL ({scheme})")
        log.info("opened a URL (%s, %d bytes) with %s", scheme, len(checked), self.command[0])
