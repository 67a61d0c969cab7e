"""`rtun copy TEXT` on the server (through the real ssh -R forward) to the text being readable on
the local X clipboard (an Xvfb, polled with `xclip -o`), beside `rtun ping` through the same
forward and a local `xclip -in` timed the same way, all in the same run."""

from __future__ import annotations

import compileall
import os
import statistics
import subprocess
import time
from typing import Callable, List

from common import Result, command_seconds
from rig import RTUN_SCRIPT, Rig
from support.rtun import clean_env
from support.xvfb import XCLIP, Xvfb, running_xvfb

RUNS = 20
WARMUP = 2
# The clipboard's rate limit follows [view]; lifted, so the runs measure the path, not the limit.
CONFIG = "[view]\nburst = 1000\nrate = 1000\n"


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
        with Rig(config=CONFIG, env=xvfb.env) as rig:
            remote = clean_env(rig.remote_home)  # discovery finds the forwarded socket itself
            local = dict(os.environ, **xvfb.env)
            ping = command_seconds([RTUN_SCRIPT, "ping"], repeat=RUNS, env=remote)
            copy_exit = command_seconds([RTUN_SCRIPT, "copy", "text"], repeat=RUNS, env=remote)
            rtun_copy = until_readable(
                xvfb,
                lambda text: subprocess.Popen(
                    [RTUN_SCRIPT, "copy", os.fsdecode(text)], env=remote, stdin=subprocess.DEVNULL
                ),
                RUNS,
            )
            xclip_copy = until_readable(xvfb, lambda text: _xclip_in(text, local), RUNS)
    readable, plain = statistics.median(rtun_copy) * 1000, statistics.median(xclip_copy) * 1000
    return [
        Result(
            f"rtun copy on the server to the text on the X clipboard (median of {RUNS})",
            readable,
            "ms",
            "<= 100 ms",
            readable <= 100,
            "local xclip -in to readable",
            plain,
        ),
        Result(
            f"rtun copy TEXT, process start to exit (median of {RUNS})",
            copy_exit * 1000,
            "ms",
            "<= 2x baseline",
            copy_exit <= 2 * ping,
            "rtun ping",
            ping * 1000,
        ),
    ]


def _xclip_in(text: bytes, env: dict) -> subprocess.Popen:
    """xclip copying ``text``, as the daemon runs it (its stdin a pipe that already holds it)."""
    read_end, write_end = os.pipe()
    os.write(write_end, text)  # small: it fits the pipe's buffer
    os.close(write_end)
    try:
        return subprocess.Popen(
            [XCLIP, "-selection", "clipboard", "-in"],
            env=env,
            stdin=read_end,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    finally:
        os.close(read_end)
