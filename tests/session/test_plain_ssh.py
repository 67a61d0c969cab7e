"""The plain-ssh set-up of docs/sessions.md: the block `rtun ssh --print-config` writes, used
by plain `ssh` (no rtun on the laptop's side of the login) against the real sshd."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from session.harness import RTUN_REMOTE, sockets


def _plain_config(laptop, server) -> Path:
    block = laptop.rtun(["ssh", "--print-config", "srv"])
    assert block.returncode == 0, block.stderr
    text = block.stdout.decode()
    assert re.search(r"^Host srv-rtun$", text, re.M) and "RemoteForward " in text and "RemoteCommand " in text
    path = laptop.home / "plain_config"
    path.write_text(
        server.client_config.read_text()
        + "\n"
        + text
        + "\n".join(
            [
                "Host *",
                f"    IdentityFile {server.keys.user_key}",
                "    IdentitiesOnly yes",
                f"    UserKnownHostsFile {server.known_hosts}",
                "    BatchMode yes",
                "    LogLevel ERROR",
                "",
            ]
        )
    )
    return path


def _login(config: Path, commands: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ssh", "-F", str(config), "srv-rtun"], input=commands.encode(), capture_output=True, timeout=60
    )


def test_plain_ssh_with_the_printed_block_sets_rtun_sock_and_cleans_up(
    laptop, laptop_daemon, server, server_home
):
    config = _plain_config(laptop, server)
    for _ in range(2):  # the fixed name is free again for the next login
        done = _login(config, f'echo "sock=$RTUN_SOCK"\n{RTUN_REMOTE} pid\nexit 5\n')
        assert done.returncode == 5, done.stderr
        out = done.stdout.decode().splitlines()
        sock = out[0][len("sock=") :]
        assert f"/rtun.sock.{laptop.laptop_id}." in sock
        assert re.match(rf"OK PID {laptop_daemon.process.pid},", out[1])
        assert sockets(server_home) == []  # removed at logout


def test_a_login_that_died_leaves_its_socket_but_not_the_next_login_without_one(
    laptop, laptop_daemon, server, server_home
):
    config = _plain_config(laptop, server)
    crashed = subprocess.Popen(
        ["ssh", "-F", str(config), "srv-rtun"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert crashed.stdin is not None and crashed.stdout is not None
    crashed.stdin.write(b'echo "$RTUN_SOCK"\n')
    crashed.stdin.flush()
    left = crashed.stdout.readline().decode().strip()
    crashed.kill()  # the laptop vanished: sshd never runs the logout
    crashed.wait()
    done = _login(config, f"{RTUN_REMOTE} ping\n")
    assert done.stdout == b"OK PONG\n", done.stderr
    assert os.path.basename(left).startswith(f"rtun.sock.{laptop.laptop_id}.")
