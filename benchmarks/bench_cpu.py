"""CPU seconds per GiB sent, for the client and for the daemon, through a real ssh -R forward.

Wall time on two shared cores swings from run to run; CPU time per byte does not, so this is
the figure that shows whether a change to the transfer path made it dearer. The client's CPU
comes from wait4's rusage of the `rtun send` process, the daemon's from /proc/PID/stat before
and after. The baseline, measured in the same run, is `openssl dgst -sha256` of the same file
(the SHA-256 code Python's hashlib uses): both sides hash every byte, so their cost is a steady
multiple of it on any machine. The targets: no more than
10 % above the multiples measured before the sans-I/O protocol core (issue 7).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import List, Tuple

from common import Result
from rig import RTUN_SCRIPT, Rig
from support.rtun import clean_env

GIB = 1024 ** 3
REPEAT = 3
# Multiples of the baseline's CPU per GiB, measured on the code before issue 7 (docs/benchmarks.md).
CLIENT_BEFORE = 1.88  # median of three runs, 2026-12-01
DAEMON_BEFORE = 2.91


def _process_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _command_cpu(argv: List[str]) -> float:
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    _, _, usage = os.wait4(process.pid, 0)
    return usage.ru_utime + usage.ru_stime


def _send_once(argv: List[str], env: dict, daemon_pid: int) -> Tuple[float, float]:
    before = _process_cpu(daemon_pid)
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"rtun send exited {process.returncode}")
    return usage.ru_utime + usage.ru_stime, _process_cpu(daemon_pid) - before


def measure() -> List[Result]:
    dest_root = Path(tempfile.mkdtemp(prefix="rtun-bench-", dir="/dev/shm"))
    try:
        with Rig(save_dir=dest_root / "saved") as rig:
            big = dest_root / "big.bin"
            block = os.urandom(16 * 1024 * 1024)
            with open(big, "wb") as f:
                for _ in range(GIB // len(block)):
                    f.write(block)
            env = clean_env(rig.remote_home)
            assert rig.daemon.process is not None
            samples = []
            for _ in range(REPEAT):
                shutil.rmtree(rig.save_dir, ignore_errors=True)
                rig.save_dir.mkdir()
                samples.append(_send_once([RTUN_SCRIPT, "send", "-q", str(big)], env, rig.daemon.process.pid))
            hashing = min(_command_cpu(["openssl", "dgst", "-sha256", str(big)]) for _ in range(REPEAT))
    finally:
        shutil.rmtree(dest_root, ignore_errors=True)
    client = min(s[0] for s in samples)
    daemon = min(s[1] for s in samples)
    return [
        Result("client CPU per GiB sent (best of 3)", client, "s",
               f"<= {CLIENT_BEFORE * 1.1:.2f}x baseline (before: {CLIENT_BEFORE:.2f}x)",
               client <= hashing * CLIENT_BEFORE * 1.1, "openssl dgst -sha256", hashing),
        Result("daemon CPU per GiB received (best of 3)", daemon, "s",
               f"<= {DAEMON_BEFORE * 1.1:.2f}x baseline (before: {DAEMON_BEFORE:.2f}x)",
               daemon <= hashing * DAEMON_BEFORE * 1.1, "openssl dgst -sha256", hashing),
    ]
