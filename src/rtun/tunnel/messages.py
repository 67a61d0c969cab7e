"""The messages between the tunnel supervisor (supervisor.py) and its runner (agent.py).

Events say what happened; actions say what to do next. Each action that is not carried out at
once (everything but :class:`Log` and :class:`CloseSsh`) ends in one of the events its docstring
names, or in a stop or reconnect request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Union

# -- events: what happened ----------------------------------------------------------------


@dataclass(frozen=True)
class Started:
    pass


@dataclass(frozen=True)
class Connected:
    pass


@dataclass(frozen=True)
class ConnectFailed:
    reason: str


@dataclass(frozen=True)
class CannotRunSsh:
    error: str


@dataclass(frozen=True)
class Forwarded:
    port: int


@dataclass(frozen=True)
class ForwardRefused:
    reason: str
    advice: str


@dataclass(frozen=True)
class EntryWritten:
    pass


@dataclass(frozen=True)
class WriteFailed:
    reason: str


@dataclass(frozen=True)
class ProbeOk:
    pass


@dataclass(frozen=True)
class ProbeFailed:
    local_sshd_answers: bool


@dataclass(frozen=True)
class Reclaimed:
    pass


@dataclass(frozen=True)
class ReclaimRefused:
    pass


@dataclass(frozen=True)
class SshExited:
    reason: str


@dataclass(frozen=True)
class TimePassed:
    pass


@dataclass(frozen=True)
class StopRequested:
    pass


@dataclass(frozen=True)
class ReconnectRequested:
    pass


Event = Union[
    Started,
    Connected,
    ConnectFailed,
    CannotRunSsh,
    Forwarded,
    ForwardRefused,
    EntryWritten,
    WriteFailed,
    ProbeOk,
    ProbeFailed,
    Reclaimed,
    ReclaimRefused,
    SshExited,
    TimePassed,
    StopRequested,
    ReconnectRequested,
]


# -- actions: what to do ------------------------------------------------------------------


@dataclass(frozen=True)
class Log:
    state: str
    message: str


@dataclass(frozen=True)
class CloseSsh:
    pass


@dataclass(frozen=True)
class StartSsh:
    """-> Connected, ConnectFailed or CannotRunSsh."""


@dataclass(frozen=True)
class Forward:
    """-> Forwarded or ForwardRefused. Port 0 lets the server choose."""

    port: int


@dataclass(frozen=True)
class Register:
    """Write a fresh online entry for this connection -> EntryWritten or WriteFailed."""

    port: int


@dataclass(frozen=True)
class Heartbeat:
    """Refresh the entry's last_seen (and port) -> EntryWritten or WriteFailed."""

    port: int


@dataclass(frozen=True)
class MarkOffline:
    """-> EntryWritten or WriteFailed."""

    port: int


@dataclass(frozen=True)
class Probe:
    """Expect an sshd banner through the tunnel -> ProbeOk, ProbeFailed or SshExited."""

    port: int
    timeout: float


@dataclass(frozen=True)
class Reclaim:
    """Forward the preferred port again and cancel the current one -> Reclaimed or ReclaimRefused."""

    port: int
    current: int


@dataclass(frozen=True)
class Wait:
    """Until the clock reads ``until`` -> TimePassed; or SshExited while connected."""

    until: float


@dataclass(frozen=True)
class Stop:
    code: int = 0


Action = Union[
    Log,
    CloseSsh,
    StartSsh,
    Forward,
    Register,
    Heartbeat,
    MarkOffline,
    Probe,
    Reclaim,
    Wait,
    Stop,
]
Plan = List[Action]
