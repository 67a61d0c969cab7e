"""The end of an `rtun ssh` login: rtun gives back the session's exit status at once, and the
control session it leaves behind still removes the socket. Real OpenSSH client and sshd; the
server's `rm` waits on a FIFO the test holds, so the order is seen without timing it."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

from session.harness import HomeServer, Laptop
from support.wait import wait_until


def _open_writer(fifo: Path) -> bool:
    """Let the waiting `rm` go on (False while it is not waiting yet)."""
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # no reader yet
            return False
        raise
    try:
        os.write(fd, b"go\n")
    finally:
        os.close(fd)
    return True


def _rtun(laptop: Laptop, args: "list[str]", log: Path, timeout: float) -> subprocess.CompletedProcess:
    """rtun's stderr to a file: the control session's ssh, still at work when rtun has exited,
    holds it (a pipe would wait for it, as `2>&1 | ...` in a shell does)."""
    with open(log, "ab") as stderr:
        return subprocess.run(
            laptop.rtun_argv(args),
            env=laptop.env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            timeout=timeout,
        )


def test_the_exit_status_comes_before_the_cleanup_which_still_removes_the_socket(
    ssh_keys, short_tmp: Path, server_home: Path, laptops
):
    fifo = short_tmp / "go"
    os.mkfifo(fifo)
    bindir = short_tmp / "slow-bin"
    bindir.mkdir()
    rm = bindir / "rm"
    rm.write_text(f'#!/bin/sh\nread -r go < "{fifo}"\nexec /bin/rm "$@"\n')
    rm.chmod(0o755)
    server = HomeServer(
        ssh_keys, short_tmp / "slow-sshd", server_home, path=f"{bindir}:/usr/bin:/bin"
    ).start()
    try:
        laptop = Laptop(short_tmp / "laptop", server)
        laptops.append(laptop)
        log = short_tmp / "stderr"
        assert _rtun(laptop, ["ssh", "srv", "true"], log, 60).returncode == 0, log.read_text()
        wait_until(lambda: _open_writer(fifo), timeout=30, what="the first login's cleanup")
        # Before, rtun waited up to 10 s for the control session's last word, then ended it.
        done = _rtun(laptop, ["ssh", "srv", 'echo "$RTUN_SOCK"; exit 3'], log, 8)
        assert done.returncode == 3, log.read_text()
        sock = done.stdout.decode().strip()
        assert os.path.exists(sock)  # rtun has exited; the removal waits for the test
        wait_until(lambda: _open_writer(fifo), timeout=30, what="the control session's rm")
        wait_until(lambda: not os.path.lexists(sock), timeout=30, what="the socket to be removed")
        assert list((server_home / ".rtun").glob("rtun.sock.*")) == []
    finally:
        server.stop()
        for _ in range(3):  # a failed run must not leave an rm waiting on the FIFO for ever
            if not _open_writer(fifo):
                break
