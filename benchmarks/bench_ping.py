"""`rtun ping` end to end (process start to exit, through a real ssh -R forward) against the
start-up of a Python that imports socket, json and argparse, the two run in turn. Target (issue
20): at most 1.2x."""

from __future__ import annotations

import compileall
import sys
from typing import List

from common import Result, paired_command_seconds
from rig import RTUN_SCRIPT, Rig
from support.rtun import clean_env

PAIRS = 60  # about 4 s; 30 unpaired runs each put the ratio anywhere in 1.22-1.35x


def measure() -> List[Result]:
    # A pip install byte-compiles the package; an editable checkout under
    # PYTHONDONTWRITEBYTECODE=1 would otherwise recompile the client on every run.
    import rtun

    compileall.compile_dir(rtun.__path__[0], quiet=1)
    with Rig() as rig:
        env = clean_env(rig.remote_home)  # discovery finds the forwarded socket itself
        baseline, ping = paired_command_seconds(
            [sys.executable, "-c", "import socket, json, argparse"], [RTUN_SCRIPT, "ping"], PAIRS, env=env
        )
    ratio = ping / baseline
    return [
        Result(
            f"rtun ping, process start to exit (median of {PAIRS}, in turn)",
            ping * 1000,
            "ms",
            "<= 1.2x baseline",
            ratio <= 1.2,
            "python3 -c 'import socket, json, argparse'",
            baseline * 1000,
        )
    ]
