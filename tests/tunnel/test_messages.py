"""tunnel/messages.py is a contract between the supervisor and the runner: each action that is not
carried out at once names, in its docstring, the events it ends in. Checked here: the names are
events; random walks through the supervisor (hypothesis) feed it every documented outcome in
every state it reaches, and it never refuses one, never asks for a connection's action after
closing the connection, and its plans have the documented shape; the runner (agent.py) dispatches
every action and makes every event. The supervisor's individual decisions: test_supervisor.py."""

from __future__ import annotations

import ast
import inspect
import random
import re
from typing import Callable, Dict, List, Set, Tuple, Type, get_args

from hypothesis import given, settings
from hypothesis import strategies as st

from rtun.tunnel import agent, messages
from rtun.tunnel.messages import (
    CannotRunSsh,
    CloseSsh,
    Connected,
    ConnectFailed,
    EntryWritten,
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
    Stop,
    StopRequested,
    TimePassed,
    Wait,
    WriteFailed,
)
from rtun.tunnel.settings import Settings
from rtun.tunnel.supervisor import Supervisor

ACTIONS: Tuple[type, ...] = get_args(messages.Action)
EVENTS: Tuple[type, ...] = get_args(messages.Event)
IMMEDIATE = (Log, CloseSsh)  # carried out at once, no outcome
NEEDS_CONNECTION = (Forward, Register, Heartbeat, MarkOffline, Probe, Reclaim)  # requests over the master
REQUESTS = (StopRequested, ReconnectRequested)  # may come instead of any outcome
MID = "0123456789abcdef0123456789abcdef"

# One value of each outcome event, given the action awaited and a random source.
SAMPLES: Dict[type, Callable[[object, random.Random], object]] = {
    Connected: lambda a, r: Connected(),
    ConnectFailed: lambda a, r: ConnectFailed("ssh exited 255"),
    CannotRunSsh: lambda a, r: CannotRunSsh("No such file or directory: 'ssh'"),
    Forwarded: lambda a, r: Forwarded(a.port or r.randint(30000, 60000)),  # type: ignore[attr-defined]
    ForwardRefused: lambda a, r: ForwardRefused("remote port forwarding failed", "in use"),
    EntryWritten: lambda a, r: EntryWritten(),
    WriteFailed: lambda a, r: WriteFailed("the relay failed the entry"),
    ProbeOk: lambda a, r: ProbeOk(),
    ProbeFailed: lambda a, r: ProbeFailed(r.random() < 0.5),
    Reclaimed: lambda a, r: Reclaimed(),
    ReclaimRefused: lambda a, r: ReclaimRefused(),
    SshExited: lambda a, r: SshExited("ssh exited 255: Broken pipe"),
    TimePassed: lambda a, r: TimePassed(),
}


def documented_outcomes(action: type) -> List[type]:
    """The events named after ``->`` in the action's docstring, in order."""
    doc = action.__doc__ or ""
    if "->" not in doc:
        return []
    names = re.findall(r"\b[A-Z][A-Za-z]+\b", doc.split("->", 1)[1])
    return [getattr(messages, name) for name in names if name in messages.__dict__]


def test_every_awaited_action_documents_outcomes_that_are_events() -> None:
    for action in ACTIONS:
        outcomes = documented_outcomes(action)
        if action in IMMEDIATE or action is Stop:
            assert outcomes == [], action
            continue
        assert outcomes, f"{action.__name__} names no outcome"
        assert set(outcomes) <= set(EVENTS), (action, outcomes)


def test_every_event_is_an_outcome_a_request_or_the_start() -> None:
    documented = {event for action in ACTIONS for event in documented_outcomes(action)}
    assert documented | set(REQUESTS) | {Started} == set(EVENTS)
    assert set(SAMPLES) == documented  # the walk below can make each one


def allowed(action: object, event: type, connected: bool) -> bool:
    """The qualifier of Wait's docstring: SshExited only while connected."""
    if isinstance(action, Wait) and event is SshExited:
        return connected
    return True


class Walk:
    """A supervisor fed documented outcomes at random, with the runner's view of the connection."""

    def __init__(self, rnd: random.Random) -> None:
        self.rnd = rnd
        self.now = 1000.0
        fields = dict(
            server="pub",
            name="pi",
            machine_id=MID,
            login_user="me",
            port=20000,
            probe_interval=10.0,
            probe_timeout=3.0,
            heartbeat=25.0,
            max_backoff=60.0,
            stable_after=100.0,
        )
        self.sup = Supervisor(Settings(**fields), lambda: self.now, rng=rnd.random)  # type: ignore[arg-type]
        self.connected = False
        self.seen: Set[Tuple[type, type]] = set()
        self.emitted: Set[type] = set()
        self.plan = self.check(self.sup.handle(Started()))

    def check(self, plan: List[object]) -> List[object]:
        *now, then = plan
        assert all(isinstance(a, IMMEDIATE) for a in now), plan
        assert not isinstance(then, IMMEDIATE), plan
        self.emitted.update(type(a) for a in plan)
        if any(isinstance(a, CloseSsh) for a in now):
            self.connected = False
        if isinstance(then, NEEDS_CONNECTION):
            assert self.connected, f"{then!r} after the connection was closed: {plan}"
        if isinstance(then, Stop):
            assert self.sup.state == "stopped"
        return plan

    def step(self) -> bool:
        """Feed one event; False once the supervisor has stopped."""
        action = self.plan[-1]
        if isinstance(action, Stop):
            return False
        if self.rnd.random() < 0.03:
            event: object = self.rnd.choice(REQUESTS)()
        else:
            choices = [e for e in documented_outcomes(type(action)) if allowed(action, e, self.connected)]
            # The first outcome named is the way forward: favoured, so walks get deep (a reclaim
            # needs a refused forward and then three probes and a heartbeat in a row).
            kind = choices[0] if self.rnd.random() < 0.6 else self.rnd.choice(choices)
            self.seen.add((type(action), kind))
            event = SAMPLES[kind](action, self.rnd)
            if isinstance(event, Connected):
                self.connected = True
        if isinstance(action, Wait) and isinstance(event, TimePassed):
            self.now = max(self.now, action.until)  # the runner reports it only at the deadline
        else:
            self.now += self.rnd.uniform(0, 5)
        self.plan = self.check(self.sup.handle(event))  # type: ignore[arg-type]
        return True


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**64))
def test_the_supervisor_takes_every_documented_outcome_in_every_state(seed: int) -> None:
    # A seeded Random, not st.randoms(): hypothesis' own draws favour zeros, which here would
    # mean a stop request at every step and walks that never leave the start.
    walk = Walk(random.Random(seed))
    for _ in range(120):
        if not walk.step():
            break


def test_the_walks_reach_every_action_and_every_documented_outcome() -> None:
    # Without this, the walk above could pass by never getting anywhere.
    rnd = random.Random(16)
    seen: Set[Tuple[type, type]] = set()
    emitted: Set[type] = set()
    for _ in range(400):
        walk = Walk(rnd)
        for _ in range(80):
            if not walk.step():
                break
        seen |= walk.seen
        emitted |= walk.emitted
    assert emitted == set(ACTIONS)
    expected = {(a, e) for a in ACTIONS for e in documented_outcomes(a)}
    assert seen == expected, expected - seen


def _agent_tree() -> ast.Module:
    return ast.parse(inspect.getsource(agent))


def _names(node: ast.AST) -> Set[str]:
    return {
        n.attr if isinstance(n, ast.Attribute) else n.id
        for n in ast.walk(node)
        if isinstance(n, (ast.Attribute, ast.Name))
    }


def test_the_runner_dispatches_every_action() -> None:
    dispatched: Set[str] = set()
    for node in ast.walk(_agent_tree()):
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", None) == "isinstance"
            and len(node.args) == 2
        ):
            dispatched |= _names(node.args[1])
    missing = {a.__name__ for a in ACTIONS} - dispatched
    assert not missing, f"agent.py never tells these actions apart: {missing}"


def test_the_runner_makes_every_event() -> None:
    made: Set[str] = set()
    for node in ast.walk(_agent_tree()):
        if isinstance(node, ast.Call):
            made |= _names(node.func)
    missing: Set[Type[object]] = {e for e in EVENTS if e.__name__ not in made}
    assert not missing, f"agent.py never reports {sorted(e.__name__ for e in missing)}"
