"""Ports on demand end to end: the server is a network namespace of its own (its loopback is not
the laptop's), reached by a real sshd there and a real `ssh -R` forward; `rtun forward` and
`rtun open` run in ssh sessions on it, and the laptop's programs connect to 127.0.0.1 here.

Needs root and iproute2 (scripts/test installs it; CI runs as root).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import re
import selectors
import shlex
import shutil
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

from rtun.session import bundle, installer
from support.netns import Namespace
from support.rtun import RTUN, RtunDaemon, clean_env
from support.sshd import Forward, SshKeys, SshServer, free_port, refused
from support.wait import wait_until
from support.websocket import echo

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2 (network namespaces)"
)

WEBSOCKET = Path(__file__).parent / "support" / "websocket.py"
ADDRESS = re.compile(rb"localhost:(\d+) here is 127\.0\.0\.1:(\d+) on your computer")


@pytest.fixture(scope="module")
def server_ns() -> Iterator[Namespace]:
    namespace = Namespace()
    yield namespace
    namespace.close()


@pytest.fixture(scope="module")
def ns_sshd(
    ssh_keys: SshKeys, tmp_path_factory: pytest.TempPathFactory, server_ns: Namespace
) -> Iterator[SshServer]:
    server = SshServer(
        ssh_keys, tmp_path_factory.mktemp("nssshd"), alias="rtun-ns", namespace=server_ns
    ).start()
    yield server
    server.stop()


@pytest.fixture
def remote_sock(remote_home: Path) -> Path:
    return remote_home / ".rtun" / "rtun.sock.fw"


@pytest.fixture
def link(ns_sshd: SshServer, daemon: RtunDaemon, remote_sock: Path) -> Iterator[Forward]:
    forward = Forward(ns_sshd, remote_sock, daemon.socket).wait_up()
    yield forward
    forward.close()


class Remote:
    """Commands in ssh sessions on the namespaced server (a pty each, as a user's: they end with
    their session)."""

    def __init__(self, sshd: SshServer, home: Path, sock: Path) -> None:
        self.sshd, self.home, self.sock = sshd, home, sock
        self.processes: List[subprocess.Popen] = []

    def start(self, command: str, **env: str) -> subprocess.Popen:
        settings = " ".join(
            f"{k}={shlex.quote(v)}"
            for k, v in {"HOME": str(self.home), "RTUN_SOCK": str(self.sock), **env}.items()
        )
        process = subprocess.Popen(
            self.sshd.ssh_command + ["-tt", self.sshd.alias, f"{settings} exec {command}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.processes.append(process)
        return process

    def rtun(self, args: str, **env: str) -> subprocess.Popen:
        return self.start(f"{shlex.join(RTUN)} {args}", **env)

    def serve_http(self, directory: Path, port: int) -> subprocess.Popen:
        process = subprocess.Popen(
            self.sshd.exec_argv(
                sys.executable,
                "-m",
                "http.server",
                str(port),
                "--bind",
                "127.0.0.1",
                "--directory",
                str(directory),
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.processes.append(process)
        self.wait_listening(port)
        return process

    def serve_websocket(self, port: int) -> subprocess.Popen:
        process = subprocess.Popen(self.sshd.exec_argv(sys.executable, str(WEBSOCKET), str(port)))
        self.processes.append(process)
        self.wait_listening(port)
        return process

    def wait_listening(self, port: int) -> None:
        probe = f"import socket; socket.create_connection(('127.0.0.1', {port}), 1).close()"
        wait_until(
            lambda: (
                subprocess.run(
                    self.sshd.exec_argv(sys.executable, "-c", probe), capture_output=True
                ).returncode
                == 0
            ),
            what=f"port {port} listening on the server",
        )

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


@pytest.fixture
def remote(ns_sshd: SshServer, remote_home: Path, remote_sock: Path, link: Forward) -> Iterator[Remote]:
    server = Remote(ns_sshd, remote_home, remote_sock)
    yield server
    server.close()


@pytest.fixture
def site(short_tmp: Path) -> Path:
    directory = short_tmp / "site"
    directory.mkdir()
    (directory / "index.html").write_text("served on the server\n")
    (directory / "big.bin").write_bytes(os.urandom(20 * 1024 * 1024))
    return directory


def read_until(process: subprocess.Popen, pattern: re.Pattern, timeout: float = 20) -> re.Match:
    """Read the process's output until ``pattern`` matches it."""
    assert process.stdout is not None
    seen = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)

        def match() -> Optional[re.Match]:
            nonlocal seen
            if selector.select(0.1):
                chunk = os.read(process.stdout.fileno(), 65536)
                if not chunk:
                    raise AssertionError(f"output ended without {pattern.pattern!r}: {seen!r}")
                seen += chunk
            return pattern.search(seen)

        return wait_until(match, timeout=timeout, what=f"{pattern.pattern!r} in {seen!r}")


def get(port: int, path: str = "/", host: str = "127.0.0.1") -> bytes:
    with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=30) as response:
        return response.read()


def test_a_server_port_is_reached_from_the_laptop_at_the_same_port(remote: Remote, site: Path) -> None:
    port = free_port()
    remote.serve_http(site, port)
    assert refused(port)  # the laptop's own loopback: nothing of the server's is here
    forwarding = remote.rtun(f"forward {port}")
    found = read_until(forwarding, ADDRESS)
    assert int(found.group(1)) == port and int(found.group(2)) == port
    assert get(port) == b"served on the server\n"
    assert get(port, host="[::1]") == b"served on the server\n"  # browsers try localhost as ::1 first


def test_large_responses_and_many_connections_at_once(remote: Remote, site: Path) -> None:
    port = free_port()
    remote.serve_http(site, port)
    read_until(remote.rtun(f"forward {port}"), ADDRESS)
    expected = hashlib.sha256((site / "big.bin").read_bytes()).hexdigest()
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        large = [pool.submit(get, port, "/big.bin") for _ in range(3)]
        small = [pool.submit(get, port) for _ in range(24)]
        assert all(hashlib.sha256(f.result()).hexdigest() == expected for f in large)
        assert all(f.result() == b"served on the server\n" for f in small)


def test_a_websocket_is_carried_both_ways(remote: Remote) -> None:
    port = free_port()
    remote.serve_websocket(port)
    read_until(remote.rtun(f"forward {port}"), ADDRESS)
    messages = [b"x" * n for n in (1, 125, 126, 70000)] + [os.urandom(300000)]
    assert echo(("127.0.0.1", port), messages) == messages


def test_a_port_taken_on_the_laptop_moves_to_the_next_free_one(remote: Remote, site: Path) -> None:
    port = free_port()
    remote.serve_http(site, port)
    with socket.create_server(("127.0.0.1", port)):  # a program of the laptop's own holds it
        found = read_until(remote.rtun(f"forward {port}"), ADDRESS)
        moved = int(found.group(2))
        assert moved != port and port < moved < port + 16
        assert get(moved) == b"served on the server\n"


def test_for_ends_the_forward_on_its_own(remote: Remote, site: Path) -> None:
    port = free_port()
    remote.serve_http(site, port)
    forwarding = remote.rtun(f"forward {port} --for 2s")
    read_until(forwarding, ADDRESS)
    assert get(port) == b"served on the server\n"
    assert forwarding.wait(20) == 0
    wait_until(lambda: refused(port), what="the laptop port closed")


def test_the_forward_ends_when_the_server_side_ends(remote: Remote, site: Path) -> None:
    port = free_port()
    remote.serve_http(site, port)
    forwarding = remote.rtun(f"forward {port}")
    read_until(forwarding, ADDRESS)
    forwarding.terminate()  # the ssh session ends: its pty hangs up rtun forward
    wait_until(lambda: refused(port), what="the laptop port closed")


def test_server_status_lists_the_forwards(remote: Remote, site: Path, daemon: RtunDaemon) -> None:
    port = free_port()
    remote.serve_http(site, port)
    read_until(remote.rtun(f"forward {port}"), ADDRESS)

    def listed() -> Optional[list]:
        done = subprocess.run(
            RTUN + ["server", "status", "--json", "-s", str(daemon.socket)],
            env=clean_env(daemon.home),
            capture_output=True,
        )
        forwards = json.loads(done.stdout)["forwards"]
        return forwards or None

    forwards = wait_until(listed, timeout=15, what="the forward in rtun server status")
    assert forwards == [{"server_port": port, "port": port, "connections": 0}]


@pytest.fixture
def extra_config() -> str:
    return ""


@pytest.fixture
def daemon(
    start_daemon, daemon_tmp: Path, short_tmp: Path, extra_config: str
) -> RtunDaemon:  # overrides conftest's
    browser = short_tmp / "browser.py"
    # The stand-in browser: fetch the page (for a login, follow the provider's redirect to its
    # loopback redirect_uri, with a code) and write down what it got.
    browser.write_text(BROWSER.format(record=str(short_tmp / "browsed.jsonl")))
    config = f'[open]\nbrowser = ["{sys.executable}", "{browser}"]\n' + extra_config
    return start_daemon(env={"TMPDIR": str(daemon_tmp)}, config=config)


BROWSER = """
import json, sys, urllib.parse, urllib.request
url = sys.argv[1]
query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
target = query.get("redirect_uri")
fetch = target + "?code=granted&state=" + query.get("state", "") if target else url
try:
    body = urllib.request.urlopen(fetch, timeout=20).read().decode()
except Exception as exc:
    body = "failed: %r" % exc
with open({record!r}, "a") as f:
    f.write(json.dumps({{"url": url, "fetched": fetch, "body": body}}) + "\\n")
"""


def browsed(short_tmp: Path) -> List[dict]:
    record = short_tmp / "browsed.jsonl"
    return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []


def test_open_forwards_a_page_of_the_servers_loopback(remote: Remote, site: Path, short_tmp: Path) -> None:
    port = free_port()
    remote.serve_http(site, port)
    with socket.create_server(("127.0.0.1", port)):  # taken on the laptop: the URL's port is rewritten
        opening = remote.rtun(f"open 'http://localhost:{port}/index.html?token=abc'")
        assert opening.wait(30) == 0, opening.stdout.read() if opening.stdout else ""
        (visit,) = wait_until(lambda: browsed(short_tmp), what="the browser's visit")
    moved = int(re.match(r"http://localhost:(\d+)/index\.html\?token=abc$", visit["url"]).group(1))
    assert moved != port
    assert visit["body"] == "served on the server\n"


LOGIN = """
import http.server, sys, threading, urllib.parse, webbrowser
class Callback(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query)).get("code")
        self.send_response(200); self.end_headers(); self.wfile.write(b"logged in")
        print("received code", code, flush=True)
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", {port}), Callback)
redirect = urllib.parse.quote("http://localhost:{port}/cb", safe="")
webbrowser.open("https://provider.example/authorize?client_id=cli&state=s1&redirect_uri=" + redirect)
server.handle_request()  # one request, as login callbacks take: a probe would use it up
server.server_close()
"""


@pytest.mark.parametrize("installed", ["pip", "single-file"])
def test_an_oauth_login_completes_on_the_server(
    remote: Remote, short_tmp: Path, remote_home: Path, installed: str
) -> None:
    port = free_port()
    script = remote_home / "login.py"
    script.write_text(LOGIN.format(port=port))
    if installed == "pip":
        shim = Path(sys.executable).parent / "rtun-open"
    else:  # as `rtun install` leaves a server without pip: the zipapp, rtun-open beside it
        bindir = remote_home / ".rtun" / "bin"
        bindir.mkdir()
        (bindir / "rtun").write_bytes(bundle.build(compiled=False))
        shim = bindir / installer.OPEN_SHIM_NAME
        shim.write_text(installer.open_shim(str(bindir / "rtun")))
        for made in (bindir / "rtun", shim):
            made.chmod(0o755)
    login = remote.start(f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}", BROWSER=str(shim))
    read_until(login, re.compile(rb"received code granted"), timeout=40)
    assert login.wait(20) == 0
    (visit,) = browsed(short_tmp)
    assert visit["url"].startswith("https://provider.example/authorize?")  # opened as it was
    assert visit["fetched"] == f"http://localhost:{port}/cb?code=granted&state=s1"
    assert visit["body"] == "logged in"
    wait_until(lambda: refused(port), timeout=15, what="the redirect's forward ended with its listener")


def test_a_login_whose_redirect_port_is_held_here_is_not_opened(
    remote: Remote, short_tmp: Path, remote_home: Path
) -> None:
    # Another server's forward, or any program here, holds the port the login would be sent to:
    # the provider's redirect (with the code) would reach it instead of this server.
    port = free_port()
    with socket.create_server(("127.0.0.1", port)):
        url = f"https://provider.example/authorize?redirect_uri=http%3A%2F%2Flocalhost%3A{port}%2Fcb"
        opening = remote.rtun(f"open '{url}'")
        assert opening.wait(30) == 4
        output = opening.stdout.read().decode() if opening.stdout else ""
        assert f"not opened: the login's redirect to localhost:{port}" in output, output
    assert browsed(short_tmp) == []


@pytest.mark.parametrize("extra_config", ["[actions]\nforward = false\n"])
def test_forward_turned_off_is_refused_naming_the_setting(remote: Remote) -> None:
    forwarding = remote.rtun(f"forward {free_port()}")
    assert forwarding.wait(20) == 4
    output = forwarding.stdout.read().decode() if forwarding.stdout else ""
    assert "[actions] forward" in output and "turned off" in output
