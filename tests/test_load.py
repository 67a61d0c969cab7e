"""Load through the real sshd and ``ssh -R`` forward: 100 concurrent uploads (the `rtun send`
command, raw v1 SEND and raw rtun/2 PUT), interleaved with pings and notifications.

Nothing is mocked: the clients are real processes and real socket connections on the remote
end of the forward, and notifications go to a recording service on a private session bus.
Afterwards every file must be byte-identical under its final name, every ping answered, every
notification shown (or counted by the daemon's flood summary), and the daemon's descriptors
and resident memory back near where they were. The daemon may queue uploads beyond a
concurrency limit: nothing here depends on timing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List

import pytest

from support.load import (
    MIB,
    MixResult,
    Upload,
    check_delivered,
    fd_targets,
    load_sizes,
    make_sources,
    open_fds,
    parts_below,
    peak_rss_kib,
    plan_uploads,
    rss_kib,
    run_mix,
    run_notify,
    run_ping,
    run_upload,
)
from support.notifications import NotificationService, SessionBus
from support.rtun import RtunDaemon
from support.sshd import Forward
from support.wait import wait_until

CLIENTS = 100
# After the load, descriptors go back to the baseline (a couple of lazily opened ones allowed).
FD_MARGIN = 2
# Memory: freed receive buffers need not go back to the kernel at once (malloc keeps some), so
# "near the baseline" is a bound, not equality: at most this much above it after a round...
RSS_MARGIN_MIB = 32
# ... and a second identical round may not raise the peak by more than this: what a round leaks
# lifts the floor, hence the peak, of the next (what malloc keeps between rounds does not).
PEAK_GROWTH_MIB = 8
SETTLE_SECONDS = 20
WARM = 999_999  # the warm-up notification's number (the mix's are below)


@pytest.fixture
def daemon(start_daemon, session_bus: SessionBus, notifications: NotificationService) -> RtunDaemon:
    """tests/conftest.py's daemon, on the session bus (so notify is shown: exit 0)."""
    return start_daemon(env={"DBUS_SESSION_BUS_ADDRESS": session_bus.address})


def test_100_concurrent_clients_deliver_every_byte_and_the_daemon_returns_to_baseline(
    forward: Forward,
    daemon: RtunDaemon,
    remote_home: Path,
    save_dir: Path,
    notifications: NotificationService,
) -> None:
    assert daemon.process is not None
    pid = daemon.process.pid
    remote_sock = forward.remote
    sources = make_sources(remote_home / "src", load_sizes(CLIENTS))
    assert sum(size for _, size, _ in sources) < 200 * MIB
    assert min(size for _, size, _ in sources) == 1024 and max(size for _, size, _ in sources) == 50 * MIB

    # Warm up every code path once (lazily made actions, imports), then take the baseline.
    warm = make_sources(remote_home / "warm", [4096, 2 * MIB, 300], seed=3)
    for upload in plan_uploads(warm, "warm"):
        outcome = run_upload(upload, remote_home, remote_sock, save_dir)
        assert outcome.ok, outcome.detail
    assert run_ping(remote_home, remote_sock, use_command=True).ok
    assert run_ping(remote_home, remote_sock, use_command=False).ok
    assert run_notify(remote_home, WARM).code == 0
    baseline_fds = wait_until(_Settled(pid), timeout=10, interval=0.05, what="the daemon's fds to settle")
    baseline_rss = rss_kib(pid)
    before_targets = fd_targets(pid)
    sent_titles = [f"load {WARM}"]
    after: List[int] = []
    peaks: List[int] = []

    for round_number in (1, 2):
        uploads = plan_uploads(sources, f"load{round_number}")
        assert len(uploads) == CLIENTS and {u.kind for u in uploads} == {"send", "v1", "put"}
        peak: Dict[str, int] = {"fds": baseline_fds}

        def sample() -> None:
            peak["fds"] = max(peak["fds"], open_fds(pid))

        result = run_mix(
            uploads,
            remote_home,
            remote_sock,
            save_dir,
            pingers=10,
            notifiers=3,
            on_tick=sample,
            notify_base=round_number * 100_000,
        )
        _check_round(result, uploads, save_dir, daemon)
        assert peak["fds"] > baseline_fds + 20  # the load did reach the daemon concurrently
        sent_titles += [o.name for o in result.of("notify")]

        # Back to the baseline once the last connection has closed: descriptors, then memory.
        try:
            wait_until(
                lambda: open_fds(pid) <= baseline_fds + FD_MARGIN,
                timeout=SETTLE_SECONDS,
                interval=0.2,
                what="the daemon's descriptors to return to the baseline",
            )
        except AssertionError:
            raise AssertionError(
                f"round {round_number}: {open_fds(pid)} descriptors open, baseline {baseline_fds} "
                f"(peak {peak['fds']}); new: {_new(before_targets, fd_targets(pid))}"
            ) from None
        limit = baseline_rss + RSS_MARGIN_MIB * 1024
        try:
            wait_until(
                lambda: rss_kib(pid) <= limit,
                timeout=SETTLE_SECONDS,
                interval=0.2,
                what="the daemon's RSS to return near the baseline",
            )
        except AssertionError:
            raise AssertionError(
                f"round {round_number}: daemon RSS {rss_kib(pid) / 1024:.1f} MiB after the load, "
                f"limit {limit / 1024:.1f} MiB (baseline {baseline_rss / 1024:.1f} MiB), peak "
                f"{peak_rss_kib(pid) / 1024:.1f} MiB"
            ) from None
        after.append(rss_kib(pid))
        peaks.append(peak_rss_kib(pid))
        print(
            f"\nround {round_number}: {len(result.outcomes)} requests in {result.seconds:.1f}s, "
            f"{result.uploaded_bytes / MIB:.0f} MiB; fds {baseline_fds} -> peak {peak['fds']} -> "
            f"{open_fds(pid)}; RSS {baseline_rss / 1024:.1f} -> peak {peak_rss_kib(pid) / 1024:.1f} "
            f"-> {after[-1] / 1024:.1f} MiB"
        )
    assert peaks[1] <= peaks[0] + PEAK_GROWTH_MIB * 1024, (
        f"the daemon's peak RSS grew from {peaks[0] / 1024:.1f} to {peaks[1] / 1024:.1f} MiB in an identical round"
    )

    # Every notification shown, or counted in a "N more notifications came too fast" summary
    # (the daemon's flood limit), and none shown twice.
    try:
        wait_until(
            lambda: _accounted(notifications.notifications()) >= len(sent_titles),
            timeout=15,
            what="every notification to be shown or summarised",
        )
    except AssertionError:
        raise AssertionError(
            f"sent {len(sent_titles)}, accounted for "
            f"{_accounted(notifications.notifications())}: {notifications.notifications()}"
        ) from None
    shown = [
        str(n["summary"]) for n in notifications.notifications() if str(n["summary"]).startswith("load ")
    ]
    assert len(shown) == len(set(shown)) and set(shown) <= set(sent_titles)
    assert _accounted(notifications.notifications()) == len(sent_titles)

    # And it still serves.
    assert run_ping(remote_home, remote_sock, use_command=True).ok
    late = plan_uploads(make_sources(remote_home / "late", [10_000], seed=5), "late")[0]
    outcome = run_upload(late, remote_home, remote_sock, save_dir)
    assert outcome.ok, outcome.detail
    assert "Traceback" not in daemon.log_text()


def _check_round(result: MixResult, uploads: List[Upload], save_dir: Path, daemon: RtunDaemon) -> None:
    failures = [f"{o.kind}: {o.detail}" for o in result.failures]
    assert not failures, "\n".join(failures[:20])
    assert len(result.of("send", "v1", "put")) == CLIENTS
    pings = result.of("ping", "rawping")
    assert len(pings) >= 20 and all(o.ok for o in pings)
    notified = result.of("notify")
    assert len(notified) >= 6
    assert all(o.code == 0 for o in notified), [o.detail for o in notified]  # the service is up
    assert daemon.alive(), daemon.log_text()[-3000:]
    problems = check_delivered(uploads, save_dir)
    assert not problems, "\n".join(problems[:20])
    assert not parts_below(save_dir)
    directory = save_dir / uploads[0].dest.split("/")[0]
    saved = sorted(p.name for p in directory.iterdir())
    assert saved == sorted(u.dest.split("/")[-1] for u in uploads)  # nothing else, no "(1)" copies


def _accounted(records: List[Dict[str, object]]) -> int:
    """Notifications shown one by one, plus those a flood summary counts."""
    count = 0
    for record in records:
        found = re.match(r"(\d+) more notifications? came too fast to show", str(record["body"]))
        if record["summary"] == "rtun" and found:
            count += int(found.group(1))
        else:
            count += 1
    return count


class _Settled:
    """Polled: the descriptor count once five looks in a row agree (closing connections finish)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.seen: List[int] = []

    def __call__(self) -> int:
        self.seen = (self.seen + [open_fds(self.pid)])[-5:]
        return self.seen[0] if len(self.seen) == 5 and len(set(self.seen)) == 1 else 0


def _new(before: List[str], after: List[str]) -> List[str]:
    """Descriptors open now that were not at the baseline."""
    remaining = list(before)
    extra = []
    for target in after:
        if target in remaining:
            remaining.remove(target)
        else:
            extra.append(target)
    return extra[:30]
