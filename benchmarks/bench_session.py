"""`rtun ssh HOST true` against plain `ssh HOST true`, and `rtun ping` inside an `rtun ssh` login.

One real sshd on 127.0.0.1 (sessions get a home of the benchmark's). Plain ssh and rtun ssh run
in alternation, so load from elsewhere hits both alike; each figure is a median.

- daemon running: the laptop's daemon answers before each run, and no master of an earlier
  login lingers (each is ended first): a first login. Target: at most 1.2x ssh.
- daemon must start: it is stopped before each run, so `rtun ssh` starts it. Target: at most 2x.
- a second login: a first `rtun ssh -N HOST` is held open meanwhile, whose master a second one
  may share. Target: at most 0.7x ssh.
- `rtun ping` through the forward, inside one `rtun ssh` login: the pip-installed client (this
  virtualenv's) and the zipapp that `rtun install` puts in ~/.rtun/bin (run by the server's
  python3), each against the start-up of the same Python importing socket, json and argparse
  (bench_ping's baseline). Target: at most 1.2x for the installed client, as bench_ping's;
  the zipapp's figure is for information.
"""

from __future__ import annotations

import compileall
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, List, Tuple

from common import Result
from rig import RTUN_SCRIPT
from session.harness import HomeServer, Laptop
from support.sshd import SshKeys
from support.wait import wait_until

ROUNDS = int(os.environ.get("RTUN_BENCH_SESSION_ROUNDS", "20"))
SECOND_ROUNDS = int(os.environ.get("RTUN_BENCH_SESSION_SECOND_ROUNDS", "20"))
START_ROUNDS = int(os.environ.get("RTUN_BENCH_SESSION_START_ROUNDS", "8"))
PINGS = 30

# Runs on the "server" inside the login: two commands (separated by "--") in alternation, and
# the median wall time of each, in ms.
_TIMER = (
    """
import statistics, subprocess, sys, time
cut = sys.argv.index("--")
commands = [sys.argv[1:cut], sys.argv[cut + 1:]]
times = [[], []]
for i in range(%d + 3):
    for which, argv in enumerate(commands):
        began = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        if i >= 3:
            times[which].append(time.perf_counter() - began)
print(" ".join("%%.2f" %% (1000 * statistics.median(t)) for t in times))
"""
    % PINGS
)


def _alternate(
    first: Callable[[], None],
    second: Callable[[], None],
    rounds: int,
    before: Callable[[], None] = lambda: None,
    settle: Callable[[], None] = lambda: None,
) -> Tuple[float, float]:
    """Medians of ``first`` and ``second`` in turn; ``before`` runs before each ``second``,
    ``settle`` before each of both (what the previous command left still at work, such as an
    `rtun ssh` control session removing its socket after rtun has exited, ends first)."""
    a: List[float] = []
    b: List[float] = []
    for _ in range(2):  # warm-up
        settle()
        first()
        settle()
        before()
        second()
    for _ in range(rounds):
        settle()
        began = time.perf_counter()
        first()
        a.append(time.perf_counter() - began)
        settle()
        before()
        began = time.perf_counter()
        second()
        b.append(time.perf_counter() - began)
    return statistics.median(a), statistics.median(b)


def _run(argv: List[str], env: dict) -> None:
    subprocess.run(
        argv,
        env=env,
        check=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _stop_daemons(laptop: Laptop) -> None:
    for pid in laptop.started_daemons():
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    sock = laptop.home / ".rtun" / "rtun.sock"
    wait_until(lambda: not sock.exists(), timeout=30, what="the daemon to stop")


def _end_masters(laptop: Laptop) -> None:
    """End the shared masters that earlier logins left lingering: the next login is a first."""
    from rtun.ssh import mux

    directory = laptop.home / ".rtun" / "masters"
    for control in directory.glob("*") if directory.exists() else []:
        pid = mux.alive(str(control)) if not control.name.endswith(".lock") else None
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            wait_until(lambda: not control.exists(), timeout=30, what="a master to end")


def _sshd_children(server: HomeServer) -> int:
    """sshd's per-connection processes: a connection that is still being torn down has one."""
    count = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                count += int(f.read().rsplit(") ", 1)[1].split()[1]) == server.process.pid
        except (OSError, IndexError, ValueError):
            continue
    return count


def _first_login(laptop: Laptop, server: HomeServer) -> None:
    """No master left from an earlier login, nor its connection's teardown on sshd's side
    (which would take CPU from the login measured next)."""
    _end_masters(laptop)
    wait_until(lambda: _sshd_children(server) == 0, timeout=30, what="sshd's sessions to end")


def _second_logins(laptop: Laptop, plain: List[str], ours: List[str], env: dict) -> Tuple[float, float]:
    """Plain ssh and a second `rtun ssh` while a first `rtun ssh -N srv` holds its session."""
    _end_masters(laptop)
    first = subprocess.Popen(
        [RTUN_SCRIPT, "ssh", "-N", "srv"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert first.stdout is not None
        line = first.stdout.readline()
        assert line.startswith(b"RTUN_SOCK="), line
        return _alternate(lambda: _run(plain, env), lambda: _run(ours, env), SECOND_ROUNDS)
    finally:
        first.send_signal(signal.SIGINT)
        first.wait(timeout=30)
        first.stdout.close()


def measure() -> List[Result]:
    import rtun

    compileall.compile_dir(rtun.__path__[0], quiet=1)  # as a pip install leaves it
    root = Path(tempfile.mkdtemp(prefix="rbs", dir="/tmp"))
    home = root / "srvhome"
    home.mkdir()
    server = HomeServer(SshKeys(root / "keys"), root / "sshd", home).start()
    laptop = Laptop(root / "laptop", server)
    env = laptop.env()
    plain = server.ssh_command + ["srv", "true"]
    ours = [RTUN_SCRIPT, "ssh", "srv", "true"]
    try:
        _run(ours, env)  # starts the daemon
        ssh_s, rtun_s = _alternate(
            lambda: _run(plain, env),
            lambda: _run(ours, env),
            ROUNDS,
            settle=lambda: _first_login(laptop, server),
        )
        ssh_2, rtun_2 = _second_logins(laptop, plain, ours, env)

        ssh_cold, rtun_cold = _alternate(
            lambda: _run(plain, env),
            lambda: _run(ours, env),
            START_ROUNDS,
            before=lambda: _stop_daemons(laptop),
            settle=lambda: _first_login(laptop, server),
        )
        subprocess.run([RTUN_SCRIPT, "install", "srv"], env=env, check=True, capture_output=True)
        timer = root / "timer.py"
        timer.write_text(_TIMER)
        python = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin") or sys.executable
        imports = "-c 'import socket, json, argparse'"
        inside = subprocess.run(
            [
                RTUN_SCRIPT,
                "ssh",
                "srv",
                f"{python} {timer} {sys.executable} {imports} -- {RTUN_SCRIPT} ping; "
                f"{python} {timer} {python} {imports} -- {home}/.rtun/bin/rtun ping",
            ],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        baseline, installed, system, zipapp = (float(x) for x in inside.stdout.split())
    finally:
        _stop_daemons(laptop)
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    warm, cold, second = rtun_s / ssh_s, rtun_cold / ssh_cold, rtun_2 / ssh_2
    return [
        Result(
            "rtun ssh HOST true, daemon running",
            rtun_s * 1000,
            "ms",
            "<= 1.2x ssh",
            warm <= 1.2,
            "ssh HOST true",
            ssh_s * 1000,
        ),
        Result(
            "rtun ssh HOST true, a second login while one is open",
            rtun_2 * 1000,
            "ms",
            "<= 0.7x ssh",
            second <= 0.7,
            "ssh HOST true",
            ssh_2 * 1000,
        ),
        Result(
            "rtun ssh HOST true, daemon started by it",
            rtun_cold * 1000,
            "ms",
            "<= 2x ssh",
            cold <= 2.0,
            "ssh HOST true",
            ssh_cold * 1000,
        ),
        Result(
            "rtun ping through the rtun ssh forward (pip client)",
            installed,
            "ms",
            "<= 1.2x baseline",
            installed / baseline <= 1.2,
            "python3 -c 'import socket, json, argparse'",
            baseline,
        ),
        Result(
            "rtun ping through the rtun ssh forward (zipapp client)",
            zipapp,
            "ms",
            "for information",
            True,
            "the server's python3 -c 'import socket, json, argparse'",
            system,
        ),
    ]
