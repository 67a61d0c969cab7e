"""A bounded soak: the load test's mix in a loop for SOAK_SECONDS, through a real ssh -R forward.

Each round is 100 concurrent uploads (a fifth `rtun send` processes, the rest raw v1 SEND and
rtun/2 PUT connections; a few files of 8-50 MiB, most of 1 KiB to 1 MiB, ~106 MiB in all)
while 10 clients ping (`rtun ping` and raw PING in turn) and 3 run `rtun notify` (refused with
exit 4: the rig has no notification service; the daemon still answers). After each round every
file is checked byte for byte and the round's files are deleted.

Figures: upload throughput (MiB/s) and requests/s over the rounds' wall time, failures
(target 0), the daemon's peak RSS (target <= 64 MiB, as for a 1 GiB send), its RSS growth from
the first round to the last (a leak grows with every round), and its descriptors afterwards.
Run alone: python benchmarks/run.py soak.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import List

from common import Result, peak_rss_mib
from rig import Rig
from support.load import (
    MIB,
    check_delivered,
    load_sizes,
    make_sources,
    open_fds,
    parts_below,
    plan_uploads,
    rss_kib,
    run_mix,
)
from support.wait import wait_until

SOAK_SECONDS = 150  # rounds start until this much time has passed
CLIENTS = 100
TMPFS = Path("/dev/shm")  # the save directory: measure the daemon, not this VM's disk


def measure() -> List[Result]:
    dest_root = Path(tempfile.mkdtemp(prefix="rtun-soak-", dir=TMPFS))
    try:
        return _measure(dest_root)
    finally:
        shutil.rmtree(dest_root, ignore_errors=True)


def _measure(dest_root: Path) -> List[Result]:
    with Rig(save_dir=dest_root / "saved") as rig:
        assert rig.daemon.process is not None
        pid = rig.daemon.process.pid
        sources = make_sources(rig.root / "src", load_sizes(CLIENTS))
        baseline_fds = open_fds(pid)
        failures: List[str] = []
        requests = rounds = 0
        uploaded = 0
        busy = 0.0
        rss_after: List[int] = []
        peak_fds = baseline_fds

        started = time.monotonic()
        while time.monotonic() - started < SOAK_SECONDS:
            rounds += 1
            uploads = plan_uploads(sources, f"r{rounds}")

            def sample() -> None:
                nonlocal peak_fds
                peak_fds = max(peak_fds, open_fds(pid))

            result = run_mix(
                uploads,
                rig.remote_home,
                rig.forward.remote,
                rig.save_dir,
                on_tick=sample,
                notify_base=rounds * 100_000,
            )
            busy += result.seconds
            requests += len(result.outcomes)
            uploaded += result.uploaded_bytes
            failures += [f"round {rounds} {o.kind}: {o.detail}" for o in result.failures]
            failures += [f"round {rounds}: {p}" for p in check_delivered(uploads, rig.save_dir)]
            if parts_below(rig.save_dir):
                failures.append(f"round {rounds}: .part files left: {parts_below(rig.save_dir)[:3]}")
            if not rig.daemon.alive():
                failures.append(f"round {rounds}: the daemon died")
                break
            shutil.rmtree(rig.save_dir / f"r{rounds}", ignore_errors=True)
            rss_after.append(rss_kib(pid))
        elapsed = time.monotonic() - started

        settled = True
        try:
            wait_until(lambda: open_fds(pid) <= baseline_fds + 2, timeout=20, interval=0.2)
        except AssertionError:
            settled = False
        end_fds = open_fds(pid)
        peak = peak_rss_mib(pid)
        for failure in failures[:20]:
            print(f"  soak failure: {failure}", file=sys.stderr)
        print(
            f"  soak: {rounds} rounds in {elapsed:.0f}s, {requests} requests, {uploaded / MIB:.0f} MiB, "
            f"descriptors {baseline_fds} -> peak {peak_fds} -> {end_fds}, RSS after each round (MiB): "
            f"{[round(r / 1024, 1) for r in rss_after]}",
            file=sys.stderr,
        )

    growth = (rss_after[-1] - rss_after[0]) / 1024 if len(rss_after) > 1 else 0.0
    return [
        Result(f"soak {rounds} rounds: upload throughput", uploaded / MIB / busy, "MiB/s", "report", True),
        Result(
            f"soak {rounds} rounds: requests (uploads, pings, notify)",
            requests / busy,
            "req/s",
            "report",
            True,
        ),
        Result(
            f"soak {rounds} rounds: failures of {requests} requests", len(failures), "", "0", not failures
        ),
        Result("soak: daemon peak RSS", peak, "MiB", "<= 64 MiB", peak <= 64),
        Result("soak: daemon RSS growth, first round to last", growth, "MiB", "<= 16 MiB", growth <= 16),
        Result(
            "soak: daemon descriptors afterwards",
            end_fds,
            "",
            f"<= {baseline_fds + 2} (start: {baseline_fds})",
            settled,
        ),
    ]
