"""`rtun ping` end to end (process start to exit, through a real ssh -R forward) against the
start-up of a Python that imports socket, json and argparse. Target: at most 1.5x."""

from __future__ import annotations

import compileall
import sys
from typing import List

from common import Result, command_seconds
from rig import RTUN_SCRIPT, Rig
from support.rtun import clean_env


def measure() -> List[Result]:
    # A pip install byte-compiles the package; an editable checkout under
    # PYTHONDONTWRITEBYTECODE=1 would otherwise recompile the client on every run.
    import rtun

    compileall.compile_dir(rtun.__path__[0], quiet=1)
    with Rig() as rig:
        env = clean_env(rig.remote_home)  # discovery finds the forwarded socket itself
        baseline = command_seconds([sys.executable, "-c", "import socket, json, argparse"], env=env)
        ping = command_seconds([RTUN_SCRIPT, "ping"], env=env)
    ratio = ping / baseline
    return [
        Result(
            "rtun ping, process start to exit",
            ping * 1000,
            "ms",
            "<= 1.5x baseline",
            ratio <= 1.5,
            "python3 -c 'import socket, json, argparse'",
            baseline * 1000,
        )
    ]
