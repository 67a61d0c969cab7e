"""Listing a big registry through a real relay sshd on 127.0.0.1: 2,000 machines.

- `rtun hosts --via` (listing, parsing and probing every machine; 20 of them live) and
  `rtun ssh-config --via` (the listing alone), against a same-run baseline: one fresh
  `ssh relay true`, the least any command through the relay costs.
- the relay's side alone: the relay script's `list` against `ls -l` of the same directory.
- the same listing with 1,100 junk files just under the size cap added (past the byte budget):
  the cost stays bounded and every real machine is still listed.
- peak memory of `rtun hosts --via` (the Python process and its children, largest).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List

from common import Result, command_seconds, median_seconds
from support.rtun import RTUN
from support.sshd import SshKeys, SshServer
from support.tunnel import TunnelAgent, World

MACHINES = int(os.environ.get("RTUN_BENCH_HOSTS", "2000"))
LIVE = 20
REPEAT = 5


def _fill(registry_dir: Path, count: int) -> None:
    from rtun.tunnel import registry

    registry_dir.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        e = registry.Entry(
            name=f"m{n}",
            hostname=f"m{n}",
            machine_id=f"{n:032x}",
            user="pi",
            port=40000 + n % 20000,
            local_port=22,
            os="Linux 6.1",
            agent_version="0.1.0",
            connected_at="2024-05-01T10:00:00Z",
            last_seen="2024-05-01T10:00:00Z",
        )
        (registry_dir / e.filename).write_bytes(e.to_json())


def _peak_rss_mib(argv: List[str], env: dict) -> float:
    """ru_maxrss of the largest child waited for so far: run this first, in a fresh child."""
    code = (
        "import resource, subprocess, sys, json; subprocess.run(json.loads(sys.argv[1]), env=json.loads(sys.argv[2]), "
        "stdout=subprocess.DEVNULL, check=True); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(argv), json.dumps(env)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(out) / 1024


def measure() -> List[Result]:
    from rtun.tunnel import relay, relayscript

    root = Path(tempfile.mkdtemp(prefix="rbh", dir="/tmp"))
    keys = SshKeys(root / "keys")
    machine = SshServer(keys, root / "machine", alias="machine").start()
    world = World(keys, root / "w", machine).start()
    agents: List[TunnelAgent] = []
    try:
        _fill(world.registry, MACHINES - LIVE)
        agents = [TunnelAgent(world, f"live{n}") for n in range(LIVE)]
        for agent in agents:
            agent.wait_up(timeout=60)
        env = world.env()
        base = ["--via", "pub", "--registry", str(world.registry)]
        check = json.loads(
            subprocess.run(
                RTUN + ["hosts", "--json"] + base, env=env, capture_output=True, text=True, check=True
            ).stdout
        )
        assert len(check["machines"]) == MACHINES, len(check["machines"])
        assert sum(m["live"] for m in check["machines"]) == LIVE
        rss = _peak_rss_mib(RTUN + ["hosts"] + base, env)

        ssh_true = command_seconds(world.server.ssh_command + ["pub", "true"], repeat=REPEAT)
        hosts = command_seconds(RTUN + ["hosts"] + base, repeat=REPEAT, env=env)
        config = command_seconds(RTUN + ["ssh-config"] + base, repeat=REPEAT, env=env)
        script = relay.inline_request(str(world.registry), "list", "0" * 32)
        relay_list = command_seconds(["sh", "-c", script], repeat=REPEAT)
        ls = command_seconds(["ls", "-l", str(world.registry)], repeat=REPEAT)

        for n in range(relayscript.MAX_LISTING_BYTES // relayscript.MAX_ENTRY_BYTES + 76):
            (world.registry / f"{0xF << 124 | n:032x}.json").write_bytes(b" " * relayscript.MAX_ENTRY_BYTES)
        junk = json.loads(
            subprocess.run(
                RTUN + ["hosts", "--json"] + base, env=env, capture_output=True, text=True, check=True
            ).stdout
        )
        junk_ok = len(junk["machines"]) == MACHINES and junk["cut"] is not None
        with_junk = median_seconds(
            lambda: subprocess.run(
                RTUN + ["hosts"] + base,
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            ),
            REPEAT,
            warmup=1,
        )
    finally:
        for agent in agents:
            agent.stop()
        world.server.stop()
        machine.stop()
        shutil.rmtree(root, ignore_errors=True)

    n = f"{MACHINES} machines"
    return [
        Result(
            f"hosts --via, {n} ({LIVE} live), probes included",
            hosts,
            "s",
            "<= 2 s",
            hosts <= 2,
            "ssh relay true",
            ssh_true,
        ),
        Result(
            f"ssh-config --via, {n} (listing alone)",
            config,
            "s",
            "<= 1.5 s",
            config <= 1.5,
            "ssh relay true",
            ssh_true,
        ),
        Result(f"relay script list, {n}", relay_list, "s", "<= 0.5 s", relay_list <= 0.5, "ls -l", ls),
        Result(
            f"hosts --via, {n} + 1,100 junk files at the size cap",
            with_junk,
            "s",
            "<= 3 s, all machines listed, cut said",
            with_junk <= 3 and junk_ok,
            "ssh relay true",
            ssh_true,
        ),
        Result(f"hosts --via, {n}: peak RSS", rss, "MiB", "<= 80 MiB", rss <= 80),
    ]
