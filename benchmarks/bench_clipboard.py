"""`rtun copy TEXT` on the server (through the real ssh -R forward) to the text being readable on
the local X clipboard (an Xvfb, polled with `xclip -o`), beside `rtun ping` through the same
forward and a local `xclip -in` timed the same way, all in the same run."""

from __future__ import annotations

import compileall
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, List

from common import Result, command_seconds
from rig import RTUN_SCRIPT
from support.rtun import RtunDaemon, clean_env
from support.sshd import Forward, SshKeys, SshServer
from support.xvfb import XCLIP, Xvfb, running_xvfb

RUNS = 20
WARMUP = 2
# The clipboard's rate limit follows [view]; lifted, so the runs measure the path, not the limit.
CONFIG = "[view]\nburst = 1000\nrate = 1000\n"


class ClipboardRig:
    """sshd on 127.0.0.1, a daemon on the Xvfb display, and the interactive ssh -R forward."""

    def __init__(self, xvfb: Xvfb) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="rb", dir="/tmp"))
        self.sshd = SshServer(SshKeys(self.root / "keys"), self.root / "sshd").start()
        self.local_home = self.root / "local"
        self.remote_home = self.root / "remote"
        (self.remote_home / ".rtun").mkdir(parents=True, mode=0o700)
        config = self.local_home / ".config" / "rtun" / "config.toml"
        config.parent.mkdir(parents=True)
        config.write_text(CONFIG)
        self.daemon = RtunDaemon(self.local_home, self.local_home / "Downloads", env=xvfb.env).start()
        self.forward = Forward(self.sshd, self.remote_home / ".rtun" / "rtun.sock", self.daemon.socket).wait_up()

    def close(self) -> None:
        self.forward.close()
        if self.daemon.alive():
            self.daemon.stop()
        self.sshd.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def until_readable(xvfb: Xvfb, start: Callable[[bytes], subprocess.Popen], runs: int) -> List[float]:
    """Seconds from starting a copy of a new text to the text read back from the clipboard."""
    times = []
    for n in range(WARMUP + runs):
        text = f"rtun clipboard benchmark {time.time_ns()} {n}".encode()
        began = time.perf_counter()
        process = start(text)
        while xvfb.clipboard() != text:
            if time.perf_counter() - began > 30:
                raise RuntimeError(f"the text did not reach the clipboard in 30 s (exit {process.poll()})")
        elapsed = time.perf_counter() - began
        if process.wait(timeout=30) != 0:
            raise RuntimeError(f"the copy exited {process.returncode}")
        if n >= WARMUP:
            times.append(elapsed)
    return times


def measure() -> List[Result]:
    import rtun

    compileall.compile_dir(rtun.__path__[0], quiet=1)  # as a pip install leaves it (see bench_ping)
    with running_xvfb() as xvfb:
        rig = ClipboardRig(xvfb)
        try:
            remote = clean_env(rig.remote_home)  # discovery finds the forwarded socket itself
            local = dict(os.environ, **xvfb.env)
            ping = command_seconds([RTUN_SCRIPT, "ping"], repeat=RUNS, env=remote)
            copy_exit = command_seconds([RTUN_SCRIPT, "copy", "text"], repeat=RUNS, env=remote)
            rtun_copy = until_readable(xvfb, lambda text: subprocess.Popen(
                [RTUN_SCRIPT, "copy", os.fsdecode(text)], env=remote, stdin=subprocess.DEVNULL), RUNS)
            xclip_copy = until_readable(xvfb, lambda text: _xclip_in(text, local), RUNS)
        finally:
            rig.close()
    readable, plain = statistics.median(rtun_copy) * 1000, statistics.median(xclip_copy) * 1000
    return [
        Result(f"rtun copy on the server to the text on the X clipboard (median of {RUNS})", readable, "ms",
               "<= 100 ms", readable <= 100, "local xclip -in to readable", plain),
        Result(f"rtun copy TEXT, process start to exit (median of {RUNS})", copy_exit * 1000, "ms",
               "<= 2x baseline", copy_exit <= 2 * ping, "rtun ping", ping * 1000),
    ]


def _xclip_in(text: bytes, env: dict) -> subprocess.Popen:
    """xclip copying ``text``, as the daemon runs it (its stdin a pipe that already holds it)."""
    read_end, write_end = os.pipe()
    os.write(write_end, text)  # small: it fits the pipe's buffer
    os.close(write_end)
    try:
        return subprocess.Popen([XCLIP, "-selection", "clipboard", "-in"], env=env, stdin=read_end,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finally:
        os.close(read_end)
