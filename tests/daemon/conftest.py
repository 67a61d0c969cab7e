"""Fixtures for the daemon's end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Callable, Iterator, List

import pytest

from support.rtun import RTUN, clean_env


@pytest.fixture
def spawn(local_home: Path) -> Iterator[Callable[..., subprocess.Popen]]:
    """Start ``rtun server ARGS`` (HOME=local_home) as a real process; stopped after the test."""
    started: List[subprocess.Popen] = []

    def start(args: List[str], home: Path = local_home, **env: str) -> subprocess.Popen:
        process = subprocess.Popen(
            RTUN + ["server"] + args,
            env=clean_env(home, **env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def detached() -> Iterator[List[int]]:
    """PIDs of detached daemons a test started: SIGTERMed afterwards if still running."""
    pids: List[int] = []
    yield pids
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"rtun" not in f.read():
                    continue  # gone, and the PID reused by something else
            os.kill(pid, signal.SIGTERM)
        except (OSError, ProcessLookupError):
            pass
