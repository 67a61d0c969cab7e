"""The agent's decisions without ssh: a fake clock and a fixed rng drive the supervisor."""

from __future__ import annotations

from typing import List, Tuple

import pytest

from rtun import __version__
from rtun.tunnel.backoff import RECONNECT_SPREAD, Backoff
from rtun.tunnel.messages import (
    Action,
    CannotRunSsh,
    CloseSsh,
    Connected,
    ConnectFailed,
    EntryWritten,
    Event,
    Forward,
    Forwarded,
    ForwardRefused,
    Heartbeat,
    Log,
    MarkOffline,
    Probe,
    ProbeFailed,
    ProbeOk,
    Reclaim,
    Reclaimed,
    ReclaimRefused,
    ReconnectRequested,
    Register,
    SshExited,
    Started,
    StartSsh,
    Stop,
    StopRequested,
    TimePassed,
    Wait,
    WriteFailed,
)
from rtun.tunnel.settings import Settings
from rtun.tunnel.supervisor import Supervisor, UnexpectedEvent

MID = "0123456789abcdef0123456789abcdef"
PREFERRED, FALLBACK = 20000, 40000
PROBE_EVERY, BEAT_EVERY, STABLE = 10.0, 25.0, 100.0
LOST = "ssh exited 255: Timeout, server pub not responding. (keepalives)"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Agent:
    """The supervisor, its clock, and the plan it gave last (checked for its shape every time)."""

    def __init__(self, rng: float = 1.0, **changes: object) -> None:
        fields = dict(
            server="pub",
            name="pi",
            machine_id=MID,
            login_user="me",
            port=PREFERRED,
            probe_interval=PROBE_EVERY,
            probe_timeout=3.0,
            heartbeat=BEAT_EVERY,
            max_backoff=60.0,
            stable_after=STABLE,
        )
        fields.update(changes)
        self.clock = Clock()
        self.sup = Supervisor(Settings(**fields), self.clock, rng=lambda: rng)  # type: ignore[arg-type]
        self.plan = self.feed(Started())

    def feed(self, event: Event) -> List[Action]:
        plan = self.sup.handle(event)
        *now, then = plan
        assert all(isinstance(a, (Log, CloseSsh)) for a in now), plan
        assert not isinstance(then, (Log, CloseSsh)), plan  # the plan ends with something to await
        self.plan = plan
        return plan

    @property
    def next(self) -> Action:
        return self.plan[-1]

    @property
    def logs(self) -> List[Tuple[str, str]]:
        return [(a.state, a.message) for a in self.plan if isinstance(a, Log)]

    @property
    def closes(self) -> bool:
        return CloseSsh() in self.plan

    def up(self, port: int = PREFERRED) -> "Agent":
        self.feed(Connected())
        if port != PREFERRED:
            self.feed(ForwardRefused("remote port forwarding failed for listen port 20000", "in use"))
        self.feed(Forwarded(port))
        self.feed(EntryWritten())
        self.feed(ProbeOk())
        assert self.sup.state == "up"
        return self

    def fail(self, times: int = 1) -> List[float]:
        """Connection attempts that fail; the retry delay of each."""
        delays = []
        for _ in range(times):
            self.feed(ConnectFailed("ssh exited 255"))
            assert isinstance(self.next, Wait)
            delays.append(self.next.until - self.clock.now)
            self.clock.now = self.next.until
            self.feed(TimePassed())
            assert self.next == StartSsh()
        return delays

    def delay_after(self, event: Event) -> float:
        self.feed(event)
        assert isinstance(self.next, Wait)
        return self.next.until - self.clock.now


# -- the way up ---------------------------------------------------------------------------


def test_a_connection_goes_through_every_state_to_up() -> None:
    a = Agent()
    assert a.logs == [
        ("starting", f"agent {__version__} for pi (01234567): pub port 20000 -> localhost:22"),
        ("connecting", "ssh pub"),
    ]
    assert a.next == StartSsh()
    a.feed(Connected())
    assert a.logs == [("forwarding", "127.0.0.1:20000 on the server")] and a.next == Forward(PREFERRED)
    a.feed(Forwarded(PREFERRED))
    assert a.logs == [("registering", f"~/.rtun/hosts/{MID}.json")] and a.next == Register(PREFERRED)
    a.feed(EntryWritten())
    assert a.plan == [Probe(PREFERRED, 3.0)] and a.sup.state == "registering"  # up only once it passes
    a.feed(ProbeOk())
    assert a.logs == [("up", "127.0.0.1:20000 on pub -> localhost:22; registered as pi")]
    assert a.next == Wait(a.clock.now + PROBE_EVERY)


def test_a_taken_port_falls_back_to_one_the_server_picks() -> None:
    a = Agent()
    a.feed(Connected())
    a.feed(ForwardRefused("remote port forwarding failed for listen port 20000", "in use"))
    assert a.logs == [
        (
            "forwarding",
            "port 20000 unavailable (remote port forwarding failed for listen port "
            "20000); asking the server for a free port",
        )
    ]
    assert a.next == Forward(0)
    a.feed(Forwarded(FALLBACK))
    assert a.logs[0] == ("forwarding", "the server allocated port 40000") and a.next == Register(FALLBACK)
    a.feed(EntryWritten())
    assert a.next == Probe(FALLBACK, 3.0)


def test_a_refused_fallback_retries_later() -> None:
    a = Agent()
    a.feed(Connected())
    a.feed(ForwardRefused("refused", "in use"))
    a.feed(ForwardRefused("administratively prohibited", "forbidden by permitlisten"))
    assert a.logs == [
        (
            "forwarding",
            "the server refused the forward: administratively prohibited (forbidden by permitlisten)",
        ),
        ("waiting", "retrying in 3.0s"),
    ]
    assert a.closes and isinstance(a.next, Wait)


def test_a_failed_registration_is_logged_and_the_tunnel_still_comes_up() -> None:
    a = Agent()
    a.feed(Connected())
    a.feed(Forwarded(PREFERRED))
    a.feed(WriteFailed("Permission denied"))
    assert a.logs == [
        (
            "registering",
            "registry write failed (Permission denied); the tunnel stays up, retrying at the next heartbeat",
        )
    ]
    assert a.next == Probe(PREFERRED, 3.0)


def test_a_failed_first_probe_is_a_lost_connection() -> None:
    a = Agent()
    a.feed(Connected())
    a.feed(Forwarded(PREFERRED))
    a.feed(EntryWritten())
    a.feed(ProbeFailed(local_sshd_answers=False))
    assert a.logs == [
        ("lost", "probe failed: no sshd banner through 127.0.0.1:20000 on the server"),
        ("lost", "the local sshd at localhost:22 does not answer: is it running?"),
        ("waiting", "retrying in 3.0s"),
    ]
    assert a.closes and isinstance(a.next, Wait)


# -- failing and waiting ------------------------------------------------------------------


def test_a_failed_connection_waits_without_looking_at_the_server() -> None:
    a = Agent()
    a.feed(ConnectFailed("ssh exited 255: Connection refused (is sshd running there?)"))
    assert a.logs == [
        ("lost", "connection failed: ssh exited 255: Connection refused (is sshd running there?)"),
        ("waiting", "retrying in 3.0s"),
    ]
    # Only the wait: no banner look at the relay (a connection that sshd counts, and penalises).
    assert a.closes and a.next == Wait(a.clock.now + 3.0)


def test_the_wait_lasts_until_its_deadline() -> None:
    a = Agent()
    a.feed(ConnectFailed("x"))
    wait = a.next
    assert isinstance(wait, Wait)
    a.clock.now = wait.until - 0.1
    assert a.feed(TimePassed()) == [wait]  # woken early: the same wait again
    a.clock.now = wait.until
    a.feed(TimePassed())
    assert a.logs == [("connecting", "ssh pub")] and a.next == StartSsh()


def test_ssh_that_cannot_run_is_retried() -> None:
    a = Agent()
    a.feed(CannotRunSsh("[Errno 2] No such file or directory: 'ssh'"))
    assert a.logs[0] == ("connecting", "cannot run ssh: [Errno 2] No such file or directory: 'ssh'")
    assert isinstance(a.next, Wait)


def test_retries_back_off_with_decorrelated_jitter_to_the_cap() -> None:
    assert Agent().fail(6) == [3, 9, 27, 60, 60, 60]  # the top of each range: 3 x the last
    assert Agent(rng=0.0).fail(3) == [1, 1, 1]  # the bottom: the base step


def test_a_small_max_backoff_caps_the_first_step_too() -> None:
    assert Agent(max_backoff=0.5).fail(3) == [0.5, 0.5, 0.5]


def test_a_connection_up_for_stable_after_resets_the_backoff() -> None:
    a = Agent()
    a.fail(3)
    a.up()
    a.clock.now += STABLE
    assert a.delay_after(SshExited(LOST)) == RECONNECT_SPREAD  # rng 1.0: the end of the spread
    assert "--reconnect-spread 20s" in a.logs[-1][1]
    a.clock.now = a.next.until  # type: ignore[attr-defined]
    a.feed(TimePassed())
    # That attempt failed (the relay still down, or busy): the next within [1, spread], rng 1.0.
    assert a.delay_after(ConnectFailed("x")) == RECONNECT_SPREAD


def test_the_spread_is_a_setting() -> None:
    a = Agent(rng=0.5, reconnect_spread=100.0).up()
    a.clock.now += STABLE
    assert a.delay_after(SshExited(LOST)) == 50.0


def test_a_connection_up_less_than_stable_after_keeps_backing_off() -> None:
    a = Agent()
    a.fail(3)
    a.up()
    a.clock.now += STABLE - 1
    assert a.delay_after(SshExited(LOST)) == 60.0  # 3 x 27, capped


def test_time_before_the_first_probe_passes_does_not_count_as_up() -> None:
    a = Agent()
    a.fail(3)
    a.feed(Connected())
    a.feed(Forwarded(PREFERRED))
    a.feed(EntryWritten())
    a.clock.now += 10 * STABLE
    assert a.delay_after(ProbeFailed(local_sshd_answers=True)) == 60.0


# -- up: probes, heartbeats, the preferred port ---------------------------------------------


def test_probes_follow_the_probe_interval() -> None:
    a = Agent().up()
    t = a.clock.now
    assert a.next == Wait(t + PROBE_EVERY)
    a.clock.now = t + 5
    assert a.feed(TimePassed()) == [Wait(t + PROBE_EVERY)]
    a.clock.now = t + PROBE_EVERY
    assert a.feed(TimePassed()) == [Probe(PREFERRED, 3.0)]
    assert a.feed(ProbeOk()) == [Wait(t + 2 * PROBE_EVERY)]
    a.clock.now = t + 2 * PROBE_EVERY
    a.feed(TimePassed())
    assert a.feed(ProbeOk()) == [Wait(t + BEAT_EVERY)]  # the heartbeat is due before the next probe


def test_heartbeats_follow_the_heartbeat_interval() -> None:
    a = Agent(probe_interval=1000.0).up()
    t = a.clock.now
    assert a.next == Wait(t + BEAT_EVERY)
    a.clock.now = t + BEAT_EVERY
    assert a.feed(TimePassed()) == [Heartbeat(PREFERRED)]
    a.clock.now += 0.2  # the write took a moment; the next beat counts from its end
    assert a.feed(EntryWritten()) == [Wait(t + 0.2 + 2 * BEAT_EVERY)]
    assert a.sup.state == "up"


def test_a_probe_and_a_heartbeat_both_due_run_one_after_the_other() -> None:
    a = Agent().up()
    t = a.clock.now
    a.clock.now = t + 30
    assert a.feed(TimePassed()) == [Probe(PREFERRED, 3.0)]
    assert a.feed(ProbeOk()) == [Heartbeat(PREFERRED)]
    assert a.feed(EntryWritten()) == [Wait(t + 30 + PROBE_EVERY)]


def test_a_failed_heartbeat_keeps_the_tunnel_up() -> None:
    a = Agent(probe_interval=1000.0).up()
    a.clock.now += BEAT_EVERY
    a.feed(TimePassed())
    a.feed(WriteFailed("No space left on device"))
    assert a.logs == [
        (
            "up",
            "registry write failed (No space left on device); the tunnel stays up, "
            "retrying at the next heartbeat",
        )
    ]
    assert isinstance(a.next, Wait) and not a.closes and a.sup.state == "up"


def test_the_preferred_port_is_reclaimed_at_a_heartbeat() -> None:
    a = Agent(probe_interval=1000.0).up(port=FALLBACK)
    a.clock.now += BEAT_EVERY
    assert a.feed(TimePassed()) == [Reclaim(PREFERRED, FALLBACK)]
    assert a.feed(ReclaimRefused()) == [Heartbeat(FALLBACK)]  # still taken: stay, and try again later
    a.feed(EntryWritten())
    a.clock.now += BEAT_EVERY
    assert a.feed(TimePassed()) == [Reclaim(PREFERRED, FALLBACK)]
    a.feed(Reclaimed())
    assert a.logs == [("up", "moved back from port 40000 to the preferred port 20000")]
    assert a.next == Heartbeat(PREFERRED)
    a.feed(EntryWritten())
    a.clock.now += BEAT_EVERY
    assert a.feed(TimePassed()) == [Heartbeat(PREFERRED)]  # nothing left to reclaim
    a.feed(EntryWritten())
    a.clock.now += 1000
    assert a.feed(TimePassed()) == [Probe(PREFERRED, 3.0)]


def test_a_failed_probe_loses_the_connection() -> None:
    a = Agent().up()
    a.clock.now += PROBE_EVERY
    a.feed(TimePassed())
    a.feed(ProbeFailed(local_sshd_answers=True))
    assert a.logs == [
        ("lost", "probe failed: no sshd banner through 127.0.0.1:20000 on the server"),
        ("waiting", "retrying in 3.0s"),  # up for less than --stable-after: the backoff, no spread
    ]
    assert a.closes and isinstance(a.next, Wait)


@pytest.mark.parametrize("during_probe", [False, True])
def test_ssh_exiting_loses_the_connection(during_probe: bool) -> None:
    a = Agent().up()
    if during_probe:
        a.clock.now += PROBE_EVERY
        a.feed(TimePassed())
    a.feed(SshExited(LOST))
    assert a.logs == [("lost", f"connection lost: {LOST}"), ("waiting", "retrying in 3.0s")]
    assert a.closes and isinstance(a.next, Wait)


# -- signals -------------------------------------------------------------------------------


def test_reconnect_while_up_drops_the_connection_and_reconnects_at_once() -> None:
    a = Agent()
    a.fail(4)
    a.up()
    a.feed(ReconnectRequested())
    assert a.logs == [("reconnecting", "reconnect requested by signal"), ("connecting", "ssh pub")]
    assert a.closes and a.next == StartSsh()
    assert a.delay_after(ConnectFailed("x")) == 3.0  # the backoff starts over


@pytest.mark.parametrize(
    "state, events",
    [
        ("connecting", []),
        ("forwarding", [Connected()]),
        ("registering", [Connected(), Forwarded(PREFERRED)]),
        ("waiting", [ConnectFailed("x")]),
    ],
)
def test_reconnect_in_any_other_state_connects_at_once_without_backoff(
    state: str, events: List[Event]
) -> None:
    a = Agent()
    a.fail(4)
    for event in events:
        a.feed(event)
    assert a.sup.state == state
    a.feed(ReconnectRequested())
    assert a.closes and a.next == StartSsh()
    assert a.delay_after(ConnectFailed("x")) == 3.0


def test_stop_while_up_marks_the_entry_offline_then_stops() -> None:
    a = Agent().up()
    a.feed(StopRequested())
    assert a.logs == [("stopping", "marking the registry entry offline")] and a.next == MarkOffline(PREFERRED)
    assert not a.closes  # the connection is needed for the write
    a.feed(EntryWritten())
    assert a.plan == [CloseSsh(), Log("stopped", "stopped"), Stop(0)]


def test_stop_marks_the_port_in_use_offline() -> None:
    a = Agent().up(port=FALLBACK)
    a.feed(StopRequested())
    assert a.next == MarkOffline(FALLBACK)


def test_stop_while_registering_marks_the_entry_offline() -> None:
    a = Agent()
    a.feed(Connected())
    a.feed(Forwarded(PREFERRED))
    a.feed(StopRequested())
    assert a.next == MarkOffline(PREFERRED)


def test_a_failed_offline_mark_still_stops() -> None:
    a = Agent().up()
    a.feed(StopRequested())
    a.feed(WriteFailed("timed out"))
    assert a.logs[0] == ("stopping", "registry write failed (timed out); the entry still says online")
    assert a.next == Stop(0)


def test_signals_while_stopping_do_not_interrupt_the_offline_mark() -> None:
    a = Agent().up()
    a.feed(StopRequested())
    assert a.feed(StopRequested()) == [MarkOffline(PREFERRED)]
    assert a.feed(ReconnectRequested()) == [MarkOffline(PREFERRED)]


@pytest.mark.parametrize(
    "events",
    [
        [],  # connecting
        [Connected()],  # forwarding, no port yet
        [ConnectFailed("x")],  # waiting
        [Connected(), Forwarded(PREFERRED), EntryWritten(), ProbeOk(), SshExited(LOST)],  # lost after up
    ],
)
def test_stop_without_a_connection_stops_at_once(events: List[Event]) -> None:
    a = Agent()
    for event in events:
        a.feed(event)
    a.feed(StopRequested())
    assert a.plan == [CloseSsh(), Log("stopped", "stopped"), Stop(0)]


def test_an_unexpected_event_is_a_bug_in_the_runner() -> None:
    a = Agent()
    with pytest.raises(UnexpectedEvent, match="ProbeOk"):
        a.sup.handle(ProbeOk())
    a.feed(ConnectFailed("x"))
    with pytest.raises(UnexpectedEvent):
        a.sup.handle(Connected())  # waiting: no connection was asked for


# -- the backoff itself --------------------------------------------------------------------


def test_backoff_is_decorrelated_between_the_base_and_three_times_the_last_wait() -> None:
    draws = iter([1.0, 0.5, 0.0, 1.0, 1.0])
    b = Backoff(base=1, cap=8, stable=60, rng=lambda: next(draws))
    # [1, 3] top; [1, 8] (9 capped) middle; [1, 8] bottom; [1, 3] top; [1, 8] top.
    assert [b.next_delay() for _ in range(5)] == [3, 4.5, 1, 3, 8]


def test_backoff_after_a_stable_connection_is_full_jitter_over_the_spread() -> None:
    draw = [1.0]
    b = Backoff(base=1, cap=60, stable=30, spread=20, rng=lambda: draw[0])
    assert [b.next_delay() for _ in range(3)] == [3, 9, 27]
    draw[0] = 0.25
    assert b.next_delay(connected_for=29) == 1 + 0.25 * 59  # not stable: the backoff goes on
    assert b.next_delay(connected_for=30) == 5 and b.spread_out
    assert b.next_delay() == 1 + 0.25 * 19 and not b.spread_out  # within [base, spread]
    b.reset()
    assert b.next_delay() == 1.5
