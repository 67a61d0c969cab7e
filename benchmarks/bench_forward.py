"""Ports on demand against `ssh -L`: a download through `rtun forward` beside the same download
through `ssh -L` to the same port, over one SSH connection from the laptop to the real sshd; and
the time to the first byte of a small request, both ways, over a link with latency (a delay line
as ssh's ProxyCommand).

The server's program is one process (SERVER below): a request for /big gets BIG_MIB MiB, any
other a few bytes. The download goes over loopback with no delay line (it would take a share
of the two cores from both): rtun through the rtun socket's forward of a user's login (`ssh -tt
-R`), ssh through an `ssh -tt -L` login of its own, one SSH connection each. The first byte is
timed over one SSH connection through the delay line, both forwards riding it: the rtun socket's
forward and `ssh -O forward -L` through its ControlMaster, so neither pays a handshake.

Settings (environment): RTUN_BENCH_FORWARD_MB (100), RTUN_BENCH_FORWARD_REPEAT (5, alternating),
RTUN_BENCH_FORWARD_RTT (50 ms), RTUN_BENCH_FORWARD_TTFB_REPEAT (20).
"""

from __future__ import annotations

import os
import re
import socket
import statistics
import subprocess
import sys
import time
from typing import Callable, List

from common import Result, busy_seconds
from rig import RTUN_SCRIPT, Link, Rig
from support.rtun import clean_env
from support.sshd import free_port, refused
from support.wait import wait_until

MIB = 1024**2
BIG_MIB = int(os.environ.get("RTUN_BENCH_FORWARD_MB", "100"))
REPEAT = int(os.environ.get("RTUN_BENCH_FORWARD_REPEAT", "5"))
RTT_MS = float(os.environ.get("RTUN_BENCH_FORWARD_RTT", "50"))
TTFB_REPEAT = int(os.environ.get("RTUN_BENCH_FORWARD_TTFB_REPEAT", "20"))
INFLIGHT = 32 * MIB  # a tuned server's send buffer: the window is not what is measured

SERVER = r"""
import socket, sys, threading
big = bytes(range(256)) * 4096  # 1 MiB
def serve(conn):
    with conn:
        request = b""
        while b"\r\n\r\n" not in request:
            piece = conn.recv(4096)
            if not piece:
                return
            request += piece
        if request.startswith(b"GET /big "):
            conn.sendall(b"HTTP/1.0 200 OK\r\n\r\n")
            for _ in range(int(sys.argv[2])):
                conn.sendall(big)
        else:
            conn.sendall(b"HTTP/1.0 200 OK\r\n\r\nhi")
server = socket.create_server(("127.0.0.1", int(sys.argv[1])))
while True:
    threading.Thread(target=serve, args=(server.accept()[0],), daemon=True).start()
"""


CPU: dict = {}  # port -> busy seconds per download, collected by download()


def download(port: int) -> float:
    """Seconds to read the whole of /big from 127.0.0.1:port."""
    busy = busy_seconds()
    buffer = bytearray(1 << 20)
    began = time.perf_counter()
    total = 0
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /big HTTP/1.0\r\n\r\n")
        while True:
            count = sock.recv_into(buffer)
            if not count:
                break
            total += count
    seconds = time.perf_counter() - began
    CPU.setdefault(port, []).append(busy_seconds() - busy)
    if total < BIG_MIB * MIB:
        raise RuntimeError(f"only {total} bytes arrived through port {port}")
    return seconds


def first_byte(port: int) -> float:
    """Seconds from connecting to the first byte of a small answer."""
    began = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        if not sock.recv(1):
            raise RuntimeError(f"no answer through port {port}")
        return time.perf_counter() - began


def rtun_forward(env: dict, server_port: int, local: int) -> subprocess.Popen:
    process = subprocess.Popen(
        [RTUN_SCRIPT, "forward", f"{server_port}:{local}"], env=env, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not re.search(rf"127\.0\.0\.1:{local} ", line):
        raise RuntimeError(f"rtun forward said {line!r}")
    return process


def ssh_login_forward(rig: Rig, server_port: int, local: int) -> subprocess.Popen:
    """`ssh -L` on a login of its own, as a user would start it (a pty: TCP_NODELAY, as rtun's)."""
    process = subprocess.Popen(
        rig.sshd.ssh_command
        + ["-tt", "-o", "ExitOnForwardFailure=yes", "-L", f"{local}:127.0.0.1:{server_port}", rig.sshd.alias]
        + ["sleep 86400"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until(lambda: not refused(local), timeout=15, what="ssh -L listening")
    return process


def ssh_forward(link: Link, server_port: int, local: int) -> None:
    subprocess.run(
        link.ssh + ["-O", "forward", "-L", f"{local}:127.0.0.1:{server_port}", link.host],
        check=True,
        capture_output=True,
    )


def alternate(first: Callable[[], float], second: Callable[[], float], repeat: int) -> List[List[float]]:
    first(), second()  # warm-up: the first channel of each, page cache, the daemon's code
    times: List[List[float]] = [[], []]
    for _ in range(repeat):
        times[0].append(first())
        times[1].append(second())
    return times


def measure() -> List[Result]:
    server_port = free_port()
    program = subprocess.Popen([sys.executable, "-c", SERVER, str(server_port), str(BIG_MIB)])
    try:
        with Rig() as rig:
            return _throughput(rig, server_port) + [_first_byte(rig, server_port)]
    finally:
        program.kill()
        program.wait()


def _throughput(rig: Rig, server_port: int) -> List[Result]:
    via_rtun, via_ssh = free_port(), free_port()
    holder = rtun_forward(clean_env(rig.remote_home), server_port, via_rtun)
    login = ssh_login_forward(rig, server_port, via_ssh)
    try:
        rtun_s, ssh_s = alternate(lambda: download(via_rtun), lambda: download(via_ssh), REPEAT)
    finally:
        holder.terminate()
        login.terminate()
        holder.wait(10)
        login.wait(10)
    rate, base = BIG_MIB / statistics.median(rtun_s), BIG_MIB / statistics.median(ssh_s)
    # Where the time goes on few cores: the machine's CPU per GiB, every process counted.
    per_gib = {p: statistics.median(CPU[p][1:]) * 1024 / BIG_MIB for p in (via_rtun, via_ssh)}
    return [
        Result(
            f"{BIG_MIB} MiB download through rtun forward (median of {REPEAT}, alternating)",
            rate,
            "MiB/s",
            ">= 0.8x baseline",
            rate >= 0.8 * base,
            "ssh -L",
            base,
        ),
        Result(
            "the machine's CPU per GiB of that download (every process: ssh, sshd, rtun's two hops)",
            per_gib[via_rtun],
            "s",
            "(where the time goes)",
            True,
            "ssh -L",
            per_gib[via_ssh],
        ),
    ]


def _first_byte(rig: Rig, server_port: int) -> Result:
    link = rig.link("fw", RTT_MS, INFLIGHT)
    via_rtun, via_ssh = free_port(), free_port()
    holder = rtun_forward(link.env(), server_port, via_rtun)
    try:
        ssh_forward(link, server_port, via_ssh)
        rtun_t, ssh_t = alternate(lambda: first_byte(via_rtun), lambda: first_byte(via_ssh), TTFB_REPEAT)
    finally:
        holder.terminate()
        holder.wait(10)
    first, base = statistics.median(rtun_t) * 1000, statistics.median(ssh_t) * 1000
    return Result(
        f"first byte of a small request at {RTT_MS:g} ms round trip (median of {TTFB_REPEAT})",
        first,
        "ms",
        "<= baseline + 1 round trip",
        first <= base + RTT_MS,
        "ssh -L on the same connection",
        base,
    )
