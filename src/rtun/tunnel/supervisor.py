"""The tunnel agent's decisions, as a pure state machine: told what happened, it says what to do.

    starting -> connecting -> forwarding -> registering -> up -> lost -> waiting -> connecting ...
    a reconnect request: reconnecting -> connecting;  a stop request: [stopping ->] stopped

No processes, files, signals or sleeping here: time comes from an injected clock, jitter from an
injected rng. The runner (agent.py) feeds :meth:`Supervisor.handle` one event at a time and
carries out the plan it returns: any number of :class:`Log` and :class:`CloseSsh`, done at once,
then exactly one action whose outcome is the next event (or :class:`Stop`). A stop or reconnect
request may come instead of that outcome; it replaces the plan.
"""

from __future__ import annotations

import random
from typing import Callable, Optional

from rtun import __version__
from rtun.tunnel.backoff import Backoff
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
    Plan,
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
from rtun.tunnel.registry import entry_filename
from rtun.tunnel.settings import Settings


class UnexpectedEvent(Exception):
    """The runner reported something the supervisor did not ask about: a bug in the runner."""


class Supervisor:
    def __init__(
        self, settings: Settings, clock: Callable[[], float], rng: Callable[[], float] = random.random
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.backoff = Backoff(
            settings.backoff_base, settings.max_backoff, settings.stable_after, settings.reconnect_spread, rng
        )
        self.state = "starting"
        self.pending: Optional[Action] = None  # the action whose outcome is awaited
        self.port: Optional[int] = None  # the server port forwarded over the current connection
        self._up_since: Optional[float] = None  # set once the tunnel reached "up"
        self._next_probe = self._next_beat = 0.0

    # -- helpers --------------------------------------------------------------------------

    def _enter(self, state: str, message: str) -> Log:
        self.state = state
        return Log(state, message)

    def _say(self, message: str) -> Log:
        return Log(self.state, message)

    def _issue(self, action: Action) -> Plan:
        self.pending = action
        return [action]

    # -- events ---------------------------------------------------------------------------

    def handle(self, event: Event) -> Plan:
        if isinstance(event, StopRequested):
            return self._stop()
        if isinstance(event, ReconnectRequested):
            return self._reconnect()
        if isinstance(event, Started):
            s = self.settings
            return [
                Log(
                    self.state,
                    f"agent {__version__} for {s.name} ({s.machine_id[:8]}): {s.server} "
                    f"port {s.preferred_port} -> {s.local_host}:{s.local_port}",
                )
            ] + self._connect()
        pending = self.pending
        plan: Optional[Plan] = None
        if isinstance(pending, StartSsh):
            plan = self._after_start(event)
        elif isinstance(pending, Forward):
            plan = self._after_forward(pending, event)
        elif isinstance(pending, (Register, Heartbeat, MarkOffline)):
            plan = self._after_write(pending, event)
        elif isinstance(pending, Probe):
            plan = self._after_probe(event)
        elif isinstance(pending, Reclaim):
            plan = self._after_reclaim(pending, event)
        elif isinstance(pending, Wait):
            plan = self._after_wait(pending, event)
        if plan is None:
            raise UnexpectedEvent(f"{event!r} in state {self.state} awaiting {pending!r}")
        return plan

    def _connect(self) -> Plan:
        self.port, self._up_since = None, None
        return [self._enter("connecting", f"ssh {self.settings.server}")] + self._issue(StartSsh())

    def _after_start(self, event: Event) -> Optional[Plan]:
        if isinstance(event, Connected):
            preferred = self.settings.preferred_port
            return [self._enter("forwarding", f"127.0.0.1:{preferred} on the server")] + self._issue(
                Forward(preferred)
            )
        if isinstance(event, ConnectFailed):
            return self._lost(f"connection failed: {event.reason}")
        if isinstance(event, CannotRunSsh):
            return [self._say(f"cannot run ssh: {event.error}")] + self._retry()
        return None

    def _after_forward(self, asked: Forward, event: Event) -> Optional[Plan]:
        preferred = self.settings.preferred_port
        if isinstance(event, Forwarded):
            self.port = event.port
            plan: Plan = [self._say(f"the server allocated port {event.port}")] if asked.port == 0 else []
            where = f"{self.settings.registry}/{entry_filename(self.settings.machine_id)}"
            return plan + [self._enter("registering", where)] + self._issue(Register(event.port))
        if isinstance(event, ForwardRefused):
            if asked.port != 0:
                return [
                    self._say(
                        f"port {preferred} unavailable ({event.reason}); asking the server for a free port"
                    )
                ] + self._issue(Forward(0))
            return [
                self._say(f"the server refused the forward: {event.reason} ({event.advice})")
            ] + self._retry()
        return None

    def _after_write(self, written: Action, event: Event) -> Optional[Plan]:
        if not isinstance(event, (EntryWritten, WriteFailed)):
            return None
        plan: Plan = []
        if isinstance(event, WriteFailed):
            if isinstance(written, MarkOffline):
                plan.append(self._say(f"registry write failed ({event.reason}); the entry still says online"))
            else:
                plan.append(
                    self._say(
                        f"registry write failed ({event.reason}); the tunnel stays up, "
                        "retrying at the next heartbeat"
                    )
                )
        if isinstance(written, Register):
            return plan + self._probe()  # the first probe: up only once it passes
        if isinstance(written, Heartbeat):
            self._next_beat = self.clock() + self.settings.heartbeat
            return plan + self._wait_up()
        return plan + self._finish()

    def _probe(self) -> Plan:
        assert self.port is not None
        return self._issue(Probe(self.port, self.settings.probe_timeout))

    def _after_probe(self, event: Event) -> Optional[Plan]:
        assert self.port is not None
        if isinstance(event, ProbeOk):
            now = self.clock()
            self._next_probe = now + self.settings.probe_interval
            if self._up_since is None:
                s = self.settings
                self._up_since = now
                self._next_beat = now + s.heartbeat
                return [
                    self._enter(
                        "up",
                        f"127.0.0.1:{self.port} on {s.server} -> {s.local_host}:"
                        f"{s.local_port}; registered as {s.name}",
                    )
                ] + self._wait_up()
            return self._beat() if now >= self._next_beat else self._wait_up()
        if isinstance(event, ProbeFailed):
            s = self.settings
            plan = [
                self._enter(
                    "lost", f"probe failed: no sshd banner through 127.0.0.1:{self.port} on the server"
                )
            ]
            if not event.local_sshd_answers:
                plan.append(
                    self._say(
                        f"the local sshd at {s.local_host}:{s.local_port} does not answer: is it running?"
                    )
                )
            return plan + self._retry()
        if isinstance(event, SshExited):
            return self._lost(f"connection lost: {event.reason}")
        return None

    def _wait_up(self) -> Plan:
        return self._issue(Wait(min(self._next_probe, self._next_beat)))

    def _beat(self) -> Plan:
        """The heartbeat; first, when on a fallback port, an attempt to move back to the
        preferred one (a stale session of this machine held it until the server dropped it)."""
        assert self.port is not None
        preferred = self.settings.preferred_port
        if self.port != preferred:
            return self._issue(Reclaim(preferred, self.port))
        return self._issue(Heartbeat(self.port))

    def _after_reclaim(self, asked: Reclaim, event: Event) -> Optional[Plan]:
        if isinstance(event, Reclaimed):
            plan = [self._say(f"moved back from port {asked.current} to the preferred port {asked.port}")]
            self.port = asked.port
            return plan + self._issue(Heartbeat(asked.port))
        if isinstance(event, ReclaimRefused):
            return self._issue(Heartbeat(asked.current))
        return None

    def _after_wait(self, asked: Wait, event: Event) -> Optional[Plan]:
        if self.state == "waiting":
            if isinstance(event, TimePassed):
                return self._connect() if self.clock() >= asked.until else self._issue(asked)
            return None
        if isinstance(event, SshExited):
            return self._lost(f"connection lost: {event.reason}")
        if isinstance(event, TimePassed):
            now = self.clock()
            if now >= self._next_probe:
                return self._probe()
            return self._beat() if now >= self._next_beat else self._issue(asked)
        return None

    # -- losing the connection and retrying ------------------------------------------------

    def _lost(self, message: str) -> Plan:
        return [self._enter("lost", message)] + self._retry()

    def _retry(self) -> Plan:
        """Close the connection and wait out the backoff (backoff.py): spread out when the
        connection had been up for --stable-after, as after a relay restart."""
        up_for = None if self._up_since is None else self.clock() - self._up_since
        delay = self.backoff.next_delay(up_for)
        self.port, self._up_since = None, None
        message = f"retrying in {delay:.1f}s"
        if self.backoff.spread_out:
            message += f" (a random point in --reconnect-spread {self.settings.reconnect_spread:g}s)"
        plan: Plan = [CloseSsh(), self._enter("waiting", message)]
        return plan + self._issue(Wait(self.clock() + delay))

    # -- signals ----------------------------------------------------------------------------

    def _stop(self) -> Plan:
        if self.state in ("stopping", "stopped"):
            assert self.pending is not None
            return [self.pending]
        if self.port is not None:  # connected, with a forward: say so in the registry first
            return [self._enter("stopping", "marking the registry entry offline")] + self._issue(
                MarkOffline(self.port)
            )
        return self._finish()

    def _finish(self) -> Plan:
        plan: Plan = [CloseSsh(), self._enter("stopped", "stopped")]
        return plan + self._issue(Stop())

    def _reconnect(self) -> Plan:
        if self.state in ("stopping", "stopped"):
            assert self.pending is not None
            return [self.pending]
        self.backoff.reset()
        plan: Plan = [self._enter("reconnecting", "reconnect requested by signal"), CloseSsh()]
        return plan + self._connect()
