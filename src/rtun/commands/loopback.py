"""What `rtun open` forwards before it opens a URL.

A page on this server's own loopback (``http://localhost:8888/?token=...``, 127.0.0.1, [::1],
0.0.0.0) would open nothing on your computer: its port is forwarded first and the URL opened
at the port it got there. A login page whose ``redirect_uri`` (or ``redirect_url``,
``callback``) points at a loopback port here is opened as it is, and that port is forwarded
at the very same port on your computer, so the provider's redirect reaches the program that
waits for it on this server.

The forwards are held by a background `rtun forward` (the command returns at once, as BROWSER
needs): it reports the ports it got, then holds them while the server ports listen.
"""

from __future__ import annotations

from rtun.errors import RtunError

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: it slows every command's start
    import subprocess
    from typing import Dict, List, Optional, Tuple

LOOPBACK_HOSTS = frozenset(("localhost", "127.0.0.1", "::1", "0.0.0.0"))
REDIRECT_KEYS = frozenset(("redirect_uri", "redirect_url", "callback"))
DECODINGS = 3  # a redirect encoded once more than the query needs, as some providers send it


def loopback_port(url: str) -> "Optional[int]":
    """The port of an http(s) URL on this machine's loopback, else None."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url.strip())
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or host not in LOOPBACK_HOSTS:
        return None
    return port or (443 if parts.scheme.lower() == "https" else 80)


def redirect_ports(url: str) -> "List[int]":
    """The loopback ports that ``url``'s redirect parameters name (query or fragment)."""
    from urllib.parse import parse_qsl, unquote, urlsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    ports: "List[int]" = []
    for key, value in parse_qsl(parts.query) + parse_qsl(parts.fragment):
        if key.lower() not in REDIRECT_KEYS:
            continue
        for _ in range(DECODINGS):
            port = loopback_port(value)
            if port is not None:
                if port not in ports:
                    ports.append(port)
                break
            value = unquote(value)
    return ports


def with_port(url: str, port: int) -> str:
    """``url`` at ``port`` of your computer's loopback (0.0.0.0, which browsers refuse, as
    127.0.0.1)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    host = "127.0.0.1" if host == "0.0.0.0" else f"[{host}]" if ":" in host else host
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = (userinfo + "@" if userinfo else "") + f"{host}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class NotForwarded(RtunError):
    """A page or login of the server's loopback whose port cannot be forwarded: opening it
    anyway would hand its token or code to whatever holds that port on your computer, maybe
    another server's forward. Exit code 4, as the daemon's refusals."""

    exit_code = 4


def forwarded(explicit: "Optional[str]", url: str) -> str:
    """The URL to open on your computer, after starting the forwards it needs; raises
    NotForwarded (nothing opens) when one of them cannot be made."""
    from rtun.client.forward import local_for

    page = loopback_port(url)
    redirects = [port for port in redirect_ports(url) if port != page]
    if page is None and not redirects:
        return url
    specs = ([f"{page}:{local_for(page)}"] if page is not None else []) + [f"{p}:{p}" for p in redirects]
    results, holder = _hold(explicit, specs, redirects)
    for spec, result in zip(specs, results):
        if "error" in result:
            from rtun.protocol import peertext

            if holder is not None:
                holder.terminate()  # the forwards it made are no use without this one
            port = spec.partition(":")[0]
            what = (
                f"the login's redirect to localhost:{port}" if int(port) in redirects else f"localhost:{port}"
            )
            raise NotForwarded(
                f"not opened: {what} of this server cannot be forwarded to your computer ("
                + peertext.escaped(str(result["error"]), peertext.PATH_LIMIT)
                + "), and whatever listens there instead would receive what the page sends"
            )
    if page is not None and "port" in results[0]:
        got = results[0]["port"]
        if isinstance(got, int) and (got != page or "0.0.0.0" in url):
            return with_port(url, got)
    return url


def _hold(
    explicit: "Optional[str]", specs: "List[str]", exact: "List[int]"
) -> "Tuple[List[Dict[str, object]], Optional[subprocess.Popen[bytes]]]":
    """Start the background `rtun forward`; what it got for each spec, and the process."""
    import json
    import os
    import subprocess

    from rtun import paths

    argv, env = paths.this_rtun()
    read, write = os.pipe()
    options = ["-s", explicit] if explicit else []
    options += [f"--exact-port={port}" for port in exact]
    try:
        holder = subprocess.Popen(
            argv + ["forward", f"--report-fd={write}"] + options + specs,
            pass_fds=(write,),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # it outlives this command and the terminal's signals
            env=dict(os.environ, **env),
        )
    except OSError as exc:
        os.close(read)
        return [{"error": f"could not start rtun forward: {exc.strerror}"}] * len(specs), None
    finally:
        os.close(write)
    with os.fdopen(read, encoding="utf-8") as report:
        line = report.readline()
    try:
        results = json.loads(line)
    except ValueError:
        results = None
    if not isinstance(results, list) or len(results) != len(specs):
        return [{"error": "rtun forward ended without saying why"}] * len(specs), holder
    return [r if isinstance(r, dict) else {"error": "?"} for r in results], holder
