"""`rtun ssh HOST [ssh options] [COMMAND...]`: log in with the forward, in one step.

It starts the daemon here if none answers, makes ~/.rtun private on HOST, forwards a fresh
socket ``~/.rtun/rtun.sock.LAPTOP.HOST.NONCE`` there, and opens the session (or runs COMMAND,
its exit code passed through) with ``RTUN_SOCK`` set in it. No change to the server's sshd
configuration is needed. When the session ends, the socket is removed.
"""

from __future__ import annotations

import argparse
import os
import sys

from rtun.command import Command
from rtun.errors import RtunError
from rtun.session import identity, localdaemon, master, remote, sshopts
from rtun.ssh import argv as sshargv

TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess
    from typing import Dict, List, Optional, Tuple


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--install",
        action="store_true",
        help="first copy (or upgrade) the single-file rtun client to ~/.rtun/bin on HOST",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print an ssh_config block that does the same for plain ssh, and exit",
    )
    sshopts.declare(parser)
    parser.add_argument("host", metavar="HOST", help="what you would give ssh: an alias, [user@]host, ...")
    parser.add_argument(
        "remote_command",
        nargs=argparse.REMAINDER,
        metavar="COMMAND",
        help="run this instead of a login shell (ssh options may come first)",
    )


def local_target() -> "Tuple[str, Optional[localdaemon.Start]]":
    """The socket the forward leads to, and the daemon's start if it must be started. Within an
    rtun session on another server (a second hop), the forward leads on through ``RTUN_SOCK``."""
    path = localdaemon.socket_path()
    if localdaemon.answers(path):
        return path, None
    chained = os.environ.get("RTUN_SOCK")
    if chained and localdaemon.answers(chained):
        return chained, None
    return path, localdaemon.Start(path)


def _config_remote_command(probe: "Optional[subprocess.Popen[bytes]]") -> "Optional[str]":
    """RemoteCommand from ssh_config (what plain ssh runs when no command is given), if any."""
    if probe is None:
        return None
    out, _ = probe.communicate()
    value = sshargv.parse_config(out.decode("utf-8", "replace")).get("remotecommand", "none")
    return None if value.lower() == "none" or not value else value


def _run(args: argparse.Namespace) -> int:
    code = _connect(args)
    if sys.argv[1:2] == ["ssh"]:  # this process is `rtun ssh` itself, not main() in a test
        # The user waits for the prompt while Python tears its modules down (3-7 ms, with ssh
        # and sshd busy on the same cores); nothing of rtun's is left to do but flush.
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
    return code


def _connect(args: argparse.Namespace) -> int:
    inv = sshopts.from_args(args)
    base = sshargv.ssh_base(check=False)
    conn = master.Login(base, inv, share=True)  # logs in while the rest is prepared
    probe = None
    try:
        if (not inv.command and not inv.forward_only) or "--print-config" in inv.rtun_flags:
            import subprocess  # only here: a command's login needs none (4 ms of CPU while ssh logs in)

            probe = subprocess.Popen(
                sshargv.config_argv(base, inv.host, inv.words(sshopts.SESSION_ONLY)),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
        laptop = identity.laptop_id()
        if "--print-config" in inv.rtun_flags:
            return _print_config(conn, probe, laptop)
        return _login(conn, probe, laptop)
    finally:
        conn.close(linger=True)
        if probe is not None and probe.poll() is None:
            probe.kill()
            probe.wait()


def _login(conn: master.Login, probe: "Optional[subprocess.Popen[bytes]]", laptop: str) -> int:
    inv = conn.inv
    local, starting = local_target()
    report = conn.prelude()
    installed = False
    if "--install" in inv.rtun_flags:
        from rtun.session import installer

        for line in installer.install(conn):
            master.say(line)
        installed = True
    try:
        sock = remote.session_socket(conn.home, laptop, report.get("host", ""), os.urandom(4).hex())
    except ValueError as exc:
        raise RtunError(str(exc)) from None
    conn.remove_at_end(sock)  # before the forward exists: no way to leave it behind
    # Answered while the session's ssh starts (Login.session); the session runs nothing unless
    # the socket is there, and the server makes it before it starts the session.
    conn.ask_forward(sock, local)
    if starting is not None:
        pid = starting.wait()
        if pid is not None:
            master.say(f"started the rtun daemon here (PID {pid}, log ~/.rtun/rtun.log)")
    if inv.has("v"):
        if conn.joined is not None:
            master.say(f"sharing the connection of the open master (PID {conn.joined}) to {inv.host}")
        master.say(f"RTUN_SOCK={sock} on {inv.host} leads to {local} (laptop {laptop})")
    _hint_missing_client(inv, report)
    if inv.forward_only:
        conn.confirm_forward()
        print(f"RTUN_SOCK={sock}", flush=True)
        return conn.wait()
    command = " ".join(inv.command) if inv.command else _config_remote_command(probe)
    extra: List[str] = []
    if command is None and not (inv.has("t") or inv.has("T")) and sys.stdin.isatty():
        extra = ["-t"]  # as plain ssh gives a login session a terminal
    bindir = conn.home.rstrip("/") + "/.rtun/bin" if report.get("bin") == "1" or installed else None
    line = remote.session_command(report.get("shell", ""), sock, bindir, command, require_socket=True)
    return conn.session(extra, line)


def _print_config(conn: master.Login, probe: "Optional[subprocess.Popen[bytes]]", laptop: str) -> int:
    """The ssh_config block for plain ssh: nothing started, nothing forwarded."""
    local = localdaemon.socket_path()
    conn.prelude()
    config = sshargv.parse_config(probe.communicate()[0].decode("utf-8", "replace")) if probe else {}
    try:
        block = remote.plain_block(conn.host, config, conn.home, laptop, local)
    except ValueError as exc:  # a value that ssh_config cannot hold safely: nothing printed
        raise RtunError(str(exc)) from None
    sys.stdout.write(block)
    return 0


def _hint_missing_client(inv: sshopts.Invocation, report: "Dict[str, str]") -> None:
    if report.get("client") or report.get("bin") == "1" or "--install" in inv.rtun_flags:
        return
    master.say(
        f"no rtun client found on {inv.host}: `rtun install {inv.host}` copies one there "
        "(or `rtun ssh --install`, which logs in too)"
    )


ssh = Command(
    _arguments,
    _run,
    usage="rtun ssh [--install] [--print-config] HOST [ssh options] [COMMAND...]",
    description="Log in to HOST with the forward to your computer's daemon (started if needed); "
    "RTUN_SOCK is set in the session. Options and arguments are ssh's.",
)
