"""`rtun doctor`'s checks: what rtun needs on this computer, and on a server through ssh.

Each check gives one :class:`Check` (session/check.py); those of the desktop programs the daemon
starts are in session/toolchecks.py.
"""

from __future__ import annotations

import os
import shutil
import sys

from rtun import __version__, paths
from rtun.errors import RtunError
from rtun.protocol import peertext
from rtun.protocol.units import size_text
from rtun.session import remote
from rtun.session.check import FAIL as FAIL
from rtun.session.check import OK as OK
from rtun.session.check import WARN as WARN
from rtun.session.check import Check as Check
from rtun.session.toolchecks import tool_checks

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional, Tuple

    from rtun.daemon.config import Config
    from rtun.session.master import Login

MARKER = "RTUN-DOCTOR"
PINGS = 5
NEEDED_BY = "`rtun notify`, `rtun done` and the shell hooks' notifications need"


# ---- this computer ----------------------------------------------------------------------------


def config_check(config_file: "Optional[str]") -> "Tuple[Check, Optional[Config]]":
    path = config_file or paths.config_file()
    try:
        from rtun.daemon import config

        settings = config.load(config_file)
    except ImportError as exc:  # tomli, on Python before 3.11
        return Check(
            "config",
            FAIL,
            f"cannot read it: {exc}",
            "install rtun with its desktop extra here: `scripts/install` in rtun's source",
        ), None
    except RtunError as exc:
        return Check(
            "config", FAIL, exc.message, f"correct {paths.tilde(path)} (README.md, Configuration)"
        ), None
    said = (
        f"{paths.tilde(path)} is valid"
        if os.path.exists(path)
        else f"no {paths.tilde(path)}: the defaults apply"
    )
    return Check("config", OK, said), settings


def daemon_check(socket_path: str) -> Check:
    from rtun.client import handshake, pump

    try:
        conn = handshake.negotiate(pump.ClientConnection.open(socket_path))
    except RtunError as exc:
        return Check(
            "daemon",
            FAIL,
            f"no daemon answers on {paths.tilde(socket_path)} ({exc.message})",
            "start it with `rtun server -d` (`rtun ssh HOST` starts it too)",
        )
    from rtun.protocol import wire

    features = conn.features or ()
    pid = _peer_pid(conn.sock)
    conn.close()
    version = wire.daemon_version(features)
    listed = ", ".join(f for f in features if not f.startswith(wire.VERSION_PREFIX))
    speaks = (
        f"rtun {version or 'before 0.2'}, rtun/2: {listed}" if features else "RTUN v1 only: an old daemon"
    )
    detail = f"answers on {paths.tilde(socket_path)} ({speaks}{f'; PID {pid}' if pid else ''}); rtun here is {__version__}"
    if not features or (version is not None and version != __version__):
        return Check("daemon", WARN, detail, "restart it with this rtun: `rtun server restart`")
    return Check("daemon", OK, detail)


def _peer_pid(sock: "Any") -> "Optional[int]":
    import socket
    import struct

    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    try:
        pid, _, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i")))
    except OSError:
        return None
    return pid or None


def notifications_check() -> Check:
    if sys.platform == "darwin":
        found = shutil.which("osascript")
        return (
            Check("notifications", OK, f"shown by the notification centre ({found})")
            if found
            else Check("notifications", FAIL, "osascript not found", f"{NEEDED_BY} macOS's osascript")
        )
    import asyncio

    from rtun.daemon.actions.notify import Notifier
    from rtun.protocol.messages import Rejected

    async def ask() -> "Any":
        notifier = Notifier(4000)
        try:
            return await notifier._dbus_capabilities()  # what the daemon asks before each NOTIFY
        finally:
            notifier._drop_bus()

    try:
        capabilities = asyncio.run(ask())
    except Rejected as exc:
        return Check(
            "notifications",
            FAIL,
            exc.text + " (as seen from this shell's environment)",
            f"run a notification daemon in your desktop session ({NEEDED_BY} one)",
        )
    return Check(
        "notifications",
        OK,
        "org.freedesktop.Notifications answers on the session bus "
        f"({', '.join(sorted(capabilities)) or 'no capabilities'}), for `rtun notify`, `rtun done` "
        "and the shell hooks",
    )


def opener_check(settings: "Config") -> Check:
    from rtun.daemon.actions.viewtypes import default_opener

    opener = tuple(settings.view_opener) or default_opener()
    found = shutil.which(opener[0])
    if found is None:
        return Check(
            "opener",
            FAIL,
            f"{opener[0]!r} not found: `rtun view` cannot open files",
            "install xdg-utils, or set [view] opener in the config file",
        )
    return Check("opener", OK, f"{' '.join(opener)} ({found})")


def save_dir_check(settings: "Config") -> Check:
    directory = settings.save_dir
    existing = directory
    while not os.path.isdir(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    if not os.access(existing, os.W_OK | os.X_OK):
        return Check(
            "save directory",
            FAIL,
            f"{paths.tilde(directory)} is not writable",
            "fix its permissions, or choose another with `rtun server -D DIR`",
        )
    st = os.statvfs(existing)
    free = st.f_bavail * st.f_frsize
    where = paths.tilde(directory) + ("" if existing == directory else " (created on first use)")
    if free <= settings.min_free_bytes:
        return Check(
            "save directory",
            FAIL,
            f"{where}: only {size_text(free)} free, and {size_text(settings.min_free_bytes)} are kept free",
            "free some space there",
        )
    return Check("save directory", OK, f"{where}: writable, {size_text(free)} free")


def local_checks(config_file: "Optional[str]") -> "Tuple[List[Check], Optional[str]]":
    """The checks here, and the daemon's socket if it answers (for the remote ping)."""
    config, settings = config_check(config_file)
    if settings is None:
        return [config], None
    daemon = daemon_check(settings.socket)
    checks = [config, daemon, notifications_check(), opener_check(settings)]
    checks += tool_checks(settings) + [save_dir_check(settings)]
    checks += running_config_check(settings.socket)
    return checks, settings.socket if daemon.status != FAIL else None


def running_config_check(socket_path: str) -> "List[Check]":
    from rtun.daemon.status import config_drift  # the running daemon's settings against the file

    drift = config_drift(socket_path)
    return [Check("running config", WARN, *drift)] if drift else []


# ---- the server -------------------------------------------------------------------------------

_PROBE = r"""
import os, socket, stat, subprocess, sys, time
out = []
def put(key, value):
    out.append("%s=%s" % (key, str(value).replace("\t", " ").replace("\n", " ")))
put("python", "%d.%d.%d" % tuple(sys.version_info[:3]))
home = os.environ.get("HOME") or os.path.expanduser("~")
d = os.path.join(home, ".rtun")
sock = sys.stdin.buffer.readline().decode().strip()
try:
    st = os.stat(d)
    put("mode", "%o" % stat.S_IMODE(st.st_mode))
    put("mine", int(st.st_uid == os.getuid()))
    names = sorted(os.listdir(d))
except OSError:
    put("mode", "-")
    names = []
stale = live = 0
for name in names:
    path = os.path.join(d, name)
    if not name.startswith("rtun.sock") or path == sock:
        continue
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            continue
    except OSError:
        continue
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2.0)
    try:
        s.connect(path)
        live += 1
    except ConnectionRefusedError:
        stale += 1
    except OSError:
        live += 1
    finally:
        s.close()
put("stale", stale)
put("live", live)
def version_of(path):
    try:
        done = subprocess.run([path, "--version"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return "-"
    lines = done.stdout.decode("utf-8", "replace").splitlines()
    words = lines[0].split() if lines else []  # "rtun X", then "daemon Y" where one answers
    return words[1] if len(words) == 2 and words[0] == "rtun" else "-"
found = []
shell = os.environ.get("SHELL", "")
if os.path.basename(shell) in ("sh", "bash", "zsh", "dash", "ksh", "mksh", "fish"):
    try:
        done = subprocess.run([shell, "-lc", "command -v rtun"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=20)
        found += [l for l in done.stdout.decode("utf-8", "replace").splitlines() if l.startswith("/")][-1:]
    except (OSError, subprocess.SubprocessError):
        pass
for where in os.environ.get("PATH", "").split(os.pathsep) + [os.path.join(home, ".local", "bin"), os.path.join(d, "bin")]:
    path = os.path.join(where or ".", "rtun")
    if os.path.isfile(path) and os.access(path, os.X_OK) and path not in found:
        found.append(path)
put("clients", ";".join("%s=%s" % (path, version_of(path)) for path in found))
if sock:
    times = []
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10.0)
        s.connect(sock)
        f = s.makefile("rb")
        for _ in range(@PINGS@):
            began = time.perf_counter()
            s.sendall(b"PING\r\n")
            line = f.readline()
            times.append(time.perf_counter() - began)
            if line.strip() != b"OK PONG":
                put("ping", "answered %r" % line[:60])
                break
        else:
            put("ping", "OK PONG")
        s.close()
    except OSError as exc:
        put("ping", "failed: %s" % exc)
    if times:
        times.sort()
        put("rtt_ms", "%.2f" % (1000 * times[len(times) // 2]))
    if found:
        try:
            done = subprocess.run([found[0], "ping", "-s", sock], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
            put("client_ping", done.stdout.decode("utf-8", "replace").strip() or done.returncode)
        except (OSError, subprocess.SubprocessError) as exc:
            put("client_ping", "failed: %s" % exc)
print("RTUN-DOCTOR\t" + "\t".join(out))
""".replace("@PINGS@", str(PINGS))


def probe(conn: "Login", sock: "Optional[str]") -> "Dict[str, str]":
    """Run the probe on the server (after ``sock`` was forwarded, if given)."""
    program = _PROBE.encode()
    done = conn.run(remote.python_command(program), program + (sock or "").encode() + b"\n")
    for line in done.stdout.decode("utf-8", "replace").splitlines():
        fields = line.split("\t")
        if fields[0] == MARKER:
            return dict(item.partition("=")[::2] for item in fields[1:])
    said = peertext.last_line(done.stderr.decode("utf-8", "replace"))
    return {"error": said or f"exit {done.returncode}"}


def remote_checks(
    conn: "Login",
    report: "Dict[str, str]",
    found: "Dict[str, str]",
    forwarded: "Optional[str]",
    forward_error: "Optional[str]",
    seconds: float,
) -> "List[Check]":
    host = conn.host
    checks = [Check("ssh", OK, f"logged in to {host} in {seconds:.2f} s (home {conn.home})")]
    if "error" in found and "python" not in found:
        missing = "not found" in found["error"] or "127" in found["error"]
        checks.append(
            Check(
                "python3",
                FAIL,
                f"on {host}: {'not found' if missing else found['error']}",
                "install Python 3.9 or newer there",
            )
        )
    else:
        version = found.get("python", "?")
        new_enough = tuple(int(p) for p in version.split(".")[:2] if p.isdigit()) >= (3, 9)
        checks.append(
            Check("python3", OK, f"{version} on {host}")
            if new_enough
            else Check(
                "python3",
                FAIL,
                f"{version} on {host}: the client needs 3.9 or newer",
                "install a newer python3 there",
            )
        )
    checks.append(_client_check(host, found.get("clients", "")))
    checks.append(_prompt_check(conn, report))
    fixed = " (it was not: rtun made it 0700)" if report.get("fixed") == "1" else ""
    if found.get("mode", "-") == "700" and found.get("mine") == "1":
        checks.append(Check("~/.rtun", OK, f"{conn.home}/.rtun is private (0700){fixed}"))
    else:
        checks.append(
            Check(
                "~/.rtun",
                FAIL,
                f"{conn.home}/.rtun: mode {found.get('mode', '-')}",
                f"run `chmod 700 ~/.rtun` on {host}, as its owner",
            )
        )
    stale = int(found.get("stale", "0") or 0)
    checks.append(
        Check("stale sockets", OK, f"none in ~/.rtun ({found.get('live', '0')} live)")
        if not stale
        else Check(
            "stale sockets",
            WARN,
            f"{stale} in ~/.rtun refuse connections",
            "harmless; `rtun ssh` removes those of this host older than a day",
        )
    )
    checks.append(_ping_check(host, found, forwarded, forward_error))
    return checks


def _client_check(host: str, listed: str) -> Check:
    clients = [item.rpartition("=") for item in listed.split(";") if item]
    if not clients:
        return Check(
            "client", FAIL, f"no rtun on {host}", f"`rtun install {host}` copies the single-file client there"
        )
    path, _, version = clients[0]
    if version != __version__:
        return Check(
            "client",
            WARN,
            f"{path} on {host} is {version if version != '-' else 'not runnable'}, here {__version__}",
            f"`rtun install {host}` puts {__version__} in ~/.rtun/bin",
        )
    return Check("client", OK, f"rtun {version} at {path} on {host}")


def _prompt_check(conn: "Login", report: "Dict[str, str]") -> Check:
    """`rtun` where the user types it: at the prompt of an interactive `rtun ssh` login, with
    the server's own profiles and rc files (which may set PATH afresh), not a command's PATH."""
    host, shell = conn.host, report.get("shell", "") or "sh"
    bindir = conn.home.rstrip("/") + "/.rtun/bin" if report.get("bin") == "1" else None
    command, typed = remote.prompt_probe(shell, bindir)
    done = conn.run(command, typed, timeout=30)
    found = remote.prompt_found(done.stdout.decode("utf-8", "replace"))
    name = shell.rsplit("/", 1)[-1]
    if found is None:
        said = peertext.last_line(done.stderr.decode("utf-8", "replace"))
        return Check(
            "prompt",
            WARN,
            f"could not start an interactive {name} login on {host}" + (f": {said}" if said else ""),
            "",
        )
    if not found:
        return Check(
            "prompt",
            FAIL,
            f"`rtun` is not found at the prompt of an `rtun ssh` login ({name}) on {host}",
            f"`rtun install {host}` puts it in ~/.rtun/bin, which `rtun ssh` logins find",
        )
    return Check("prompt", OK, f"`rtun` at the prompt of an `rtun ssh` login ({name}) on {host} is {found}")


def _ping_check(
    host: str, found: "Dict[str, str]", forwarded: "Optional[str]", forward_error: "Optional[str]"
) -> Check:
    if forwarded is None:
        return Check("forward", FAIL, f"not tried: {forward_error}", "see the daemon line above")
    if found.get("ping") != "OK PONG":
        return Check(
            "forward",
            FAIL,
            f"PING through {host} got: {found.get('ping', found.get('error', '?'))}",
            "is the daemon here still running?",
        )
    detail = f"OK PONG through {host}, round trip {found.get('rtt_ms', '?')} ms (median of {PINGS})"
    client = found.get("client_ping")
    if client is not None and client != "OK PONG":
        return Check(
            "forward",
            WARN,
            detail + f"; but `rtun ping` there said: {client}",
            f"`rtun install {host}` puts a current client in ~/.rtun/bin",
        )
    return Check("forward", OK, detail + ("; `rtun ping` there too" if client == "OK PONG" else ""))
