"""Resumption: a 256 MiB send cut at half way (the link stops passing bytes, the client is
killed), then sent again; the figure is the share of the file's bytes the second send moved.

Both sends go through a relay that counts what the client writes (tests/support/turns.py)
into the real daemon's socket. Issue 11's goal: at most 55 % after an interruption at half
way. The baseline, in the same run, is the same second send with --no-resume.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from typing import List

from common import Result
from rig import RTUN_SCRIPT
from support.rtun import RtunDaemon, clean_env
from support.turns import TurnCounter
from support.wait import wait_until

SIZE = 256 * 1024 * 1024


def _parts(directory: Path) -> List[Path]:
    return [p for p in directory.rglob(".rtun-*")] if directory.exists() else []


def _interrupted_then_again(
    root: Path, daemon: RtunDaemon, source: Path, home: Path, extra: List[str]
) -> int:
    cut = TurnCounter(root / "cut.sock", daemon.socket, stall_after=SIZE // 2)
    client = subprocess.Popen(
        [RTUN_SCRIPT, "send", "-q", "-s", str(cut.listen), str(source)],
        env=clean_env(home),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        cut.stalled.wait(120)
        wait_until(lambda: len(_parts(daemon.save_dir)) == 1, timeout=30, what="the part file")
        client.kill()
    finally:
        client.wait(30)
        cut.close()
    (root / "cut.sock").unlink()
    again = TurnCounter(root / "again.sock", daemon.socket)
    subprocess.run(
        [RTUN_SCRIPT, "send", "-q", "-s", str(again.listen)] + extra + [str(source)],
        env=clean_env(home),
        stdin=subprocess.DEVNULL,
        check=True,
        timeout=300,
    )
    again.close()
    (root / "again.sock").unlink()
    return again.client_bytes


def measure() -> List[Result]:
    with tempfile.TemporaryDirectory(prefix="rr", dir="/tmp") as tmp:
        root = Path(tmp)
        home = root / "home"
        daemon = RtunDaemon(home, root / "save").start()
        try:
            source = root / "big.bin"
            with open(source, "wb") as f:
                f.write(os.urandom(SIZE))
            resumed = _interrupted_then_again(root, daemon, source, home, [])
            for saved in (root / "save").iterdir():
                saved.unlink()
            whole = _interrupted_then_again(root, daemon, source, home, ["--no-resume"])
        finally:
            daemon.stop()
    share = resumed / SIZE
    return [
        Result(
            "second send after a cut at half way: share of the file's bytes moved",
            share * 100,
            "%",
            "<= 55 % (issue 11)",
            share <= 0.55,
            "the same with --no-resume",
            whole / SIZE * 100,
        )
    ]
