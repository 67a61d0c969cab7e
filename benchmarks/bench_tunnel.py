"""The reverse tunnel agent against autossh, side by side through one real sshd on 127.0.0.1.

- recovery: the public server's sshd is killed, stays down a few seconds, and comes back on the
  same port; measured from the moment it answers again until an ssh login through the tunnel
  works. rtun runs with its defaults; autossh as its README recommends
  (`autossh -M 0 -o "ServerAliveInterval 30" -o "ServerAliveCountMax 3"`), both in the same run.
- detection: the server freezes (SIGSTOP: no FIN, no RST, as a dead host or a cut link); time
  until the agent, with default settings, reports the connection lost.
- memory: the agent's peak RSS (the Python process alone, not its ssh).
sidedoor is not packaged for this system, so it is left out.
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, List

from common import Result, peak_rss_mib
from support.rtun import RTUN
from support.sshd import SshKeys, SshServer, free_port
from support.tunnel import World
from support.wait import wait_until

CYCLES = int(os.environ.get("RTUN_BENCH_TUNNEL_CYCLES", "5"))
DOWN_SECONDS = 4.0
FREEZES = 3


def _login_works(world: World, port: int) -> bool:
    done = subprocess.run(
        [
            "ssh",
            "-F",
            str(world.ssh_config),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=2",
            "-p",
            str(port),
            "127.0.0.1",
            "true",
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=15,
    )
    return done.returncode == 0


def _time_until_login(
    world: World, port: Callable[[], int], start: float, limit: float, out: dict, key: str
) -> None:
    while time.monotonic() - start < limit:
        if _login_works(world, port()):
            out[key] = time.monotonic() - start
            return
        time.sleep(0.05)
    out[key] = float("inf")


def _tree(pid: int) -> List[int]:
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [pid] + [p for c in children for p in _tree(int(c))]


def _signal_all(pids: List[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def measure() -> List[Result]:
    if shutil.which("autossh") is None:
        raise RuntimeError("autossh is not installed (apt-get install autossh)")
    root = Path(tempfile.mkdtemp(prefix="rtb", dir="/tmp"))
    keys = SshKeys(root / "keys")
    machine = SshServer(keys, root / "machine", alias="machine").start()
    world = World(keys, root / "w", machine).start()
    agent_log = root / "agent.log"
    processes: List[subprocess.Popen] = []
    try:
        with open(agent_log, "wb") as log:
            agent = subprocess.Popen(
                RTUN
                + [
                    "tunnel",
                    "pub",
                    "--name",
                    "bench",
                    "--local-port",
                    str(machine.port),
                    "--registry",
                    str(world.registry),
                    "--machine-id",
                    f"bench-{os.getpid()}",
                ],
                env=world.env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        processes.append(agent)
        auto_port = free_port()
        autossh = subprocess.Popen(
            [
                "autossh",
                "-M",
                "0",
                "-F",
                str(world.ssh_config),
                "-N",
                "-o",
                "ServerAliveInterval 30",
                "-o",
                "ServerAliveCountMax 3",
                "-o",
                "ExitOnForwardFailure yes",
                "-R",
                f"127.0.0.1:{auto_port}:127.0.0.1:{machine.port}",
                "pub",
            ],
            env=dict(os.environ, AUTOSSH_GATETIME="0"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes.append(autossh)

        def agent_ups() -> int:
            return agent_log.read_text(errors="replace").count("[up]")

        def lost_count() -> int:
            return agent_log.read_text(errors="replace").count("[lost]")

        wait_until(lambda: agent_ups() >= 1, timeout=30, what="agent up")

        def port() -> int:  # what `rtun connect` would use: the registry's port
            return next(iter(world.entries().values()))["port"]

        wait_until(
            lambda: _login_works(world, port()) and _login_works(world, auto_port),
            timeout=30,
            what="both tunnels up",
        )

        ours, theirs = [], []
        for _ in range(CYCLES):
            ups = agent_ups()
            world.server.stop()
            time.sleep(DOWN_SECONDS)  # the outage being simulated, not a wait for a condition
            world.restart_server()
            start = time.monotonic()
            found: dict = {}
            threads = [
                threading.Thread(target=_time_until_login, args=(world, p, start, 120, found, k))
                for p, k in ((port, "rtun"), (lambda: auto_port, "autossh"))
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            ours.append(found["rtun"])
            theirs.append(found["autossh"])
            wait_until(lambda: agent_ups() > ups, timeout=30, what="agent up again")

        # Detection: freeze the server with the agent connected.
        detect = []
        for _ in range(FREEZES):
            wait_until(lambda: _login_works(world, port()), timeout=60, what="tunnel up before freeze")
            before = lost_count()
            frozen = _tree(world.server.process.pid)
            _signal_all(frozen, signal.SIGSTOP)
            start = time.monotonic()
            try:
                wait_until(lambda: lost_count() > before, timeout=60, interval=0.05, what="agent notices")
                detect.append(time.monotonic() - start)
            finally:
                _signal_all(frozen, signal.SIGCONT)
        rss = peak_rss_mib(agent.pid)
    finally:
        for process in processes:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        world.server.stop()
        machine.stop()
        shutil.rmtree(root, ignore_errors=True)

    print(f"  tunnel recovery rtun: {[round(x, 2) for x in ours]}", file=sys.stderr)
    print(f"  tunnel recovery autossh: {[round(x, 2) for x in theirs]}", file=sys.stderr)
    print(f"  dead-server detection: {[round(x, 2) for x in detect]}", file=sys.stderr)
    ours_median, theirs_median = statistics.median(ours), statistics.median(theirs)
    return [
        Result(
            "tunnel: login works again after server restart (median)",
            ours_median,
            "s",
            "<= 2 s and <= 0.2x autossh",
            ours_median <= 2 and ours_median <= 0.2 * theirs_median,
            "autossh -M 0 ServerAliveInterval 30",
            theirs_median,
        ),
        Result(
            "tunnel: notice a frozen server, defaults (worst of 3)",
            max(detect),
            "s",
            "<= 10 s",
            max(detect) <= 10,
        ),
        Result("tunnel: agent peak RSS (without ssh)", rss, "MiB", "<= 30 MiB", rss <= 30),
    ]
