"""The laptop's side: its id, and starting its daemon once however many `rtun ssh` start at once."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

from rtun.session import identity, localdaemon
from session.harness import Laptop
from support.rtun import answers_ping


def test_the_laptop_id_is_made_once_and_kept(short_tmp: Path):
    directory = short_tmp / ".rtun"
    first = identity.laptop_id(str(directory))
    assert len(first) == 12 and int(first, 16) >= 0
    assert identity.laptop_id(str(directory)) == first
    assert identity.laptop_id(str(short_tmp / "elsewhere")) != first  # another laptop
    (directory / identity.FILE_NAME).write_text("damaged\n")
    assert identity.laptop_id(str(directory)) not in (first, "damaged")


def test_processes_making_the_id_at_once_agree(short_tmp: Path):
    code = f"from rtun.session import identity; print(identity.laptop_id({str(short_tmp / 'r')!r}))"
    processes = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE) for _ in range(6)]
    ids = {p.communicate(timeout=60)[0].strip() for p in processes}
    assert len(ids) == 1 and len(ids.pop()) == 12


_STARTER = """
from rtun.session import localdaemon
start = localdaemon.Start(localdaemon.socket_path())
print("waiting" if start.process is None else "starting", flush=True)
print(start.wait(), flush=True)
"""


def test_daemon_starts_wait_for_the_lock_and_only_the_first_starts_one(laptop: Laptop):
    lock = laptop.home / ".rtun" / localdaemon.LOCK_NAME
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as if another `rtun ssh` were starting one (and then failed)
    starters = [
        subprocess.Popen(
            [sys.executable, "-c", _STARTER], env=laptop.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    try:
        for starter in starters:
            assert starter.stdout is not None
            assert starter.stdout.readline() == b"waiting\n"
        assert not (laptop.home / ".rtun" / "rtun.sock").exists()
    finally:
        os.close(fd)
    said = sorted(p.communicate(timeout=60)[0].decode().strip() for p in starters)
    assert said[1] == "None" and said[0].isdigit(), said  # one started it, the other found it
    assert laptop.started_daemons() == [int(said[0])]
    assert answers_ping(laptop.home / ".rtun" / "rtun.sock")
