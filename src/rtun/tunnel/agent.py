"""`rtun tunnel SERVER`: keep a reverse tunnel to this machine's sshd up, forever.

The decisions (states, backoff, timers, what a signal means) are the supervisor's
(supervisor.py); this runner carries them out with real processes, signals and select, and
reports back what happened. The connection is an ``ssh -M -N`` master; the reverse forward, the
registry writes and the health probe are all requests over it, so the server sees one login.
SIGUSR1 (or SIGHUP) reconnects at once; SIGTERM (or SIGINT) marks the registry entry offline
and stops. With several relays (tunnels.py) one Agent runs per relay, each in its own thread,
and the main thread hands each the signals through :meth:`Agent.request_stop` and
:meth:`Agent.request_reconnect`.

The agent opens no connection to the relay of its own besides its ssh: no banner look while
the relay is down (each such look is a connection sshd counts against MaxStartups, and one that
OpenSSH 9.8+ penalises as "noauth"), and the probe runs over the ssh connection.
"""

from __future__ import annotations

import os
import random
import select
import signal
import sys
import time
from typing import Callable, List, Optional, TextIO

from rtun import __version__
from rtun.protocol import peertext
from rtun.ssh import argv as sshargv
from rtun.ssh import banner, hints
from rtun.ssh import process as sshproc
from rtun.tunnel import identity, registry, relay
from rtun.tunnel import messages as msg
from rtun.tunnel.settings import Settings
from rtun.tunnel.supervisor import Supervisor


class Agent:
    def __init__(
        self,
        settings: Settings,
        ssh: List[str],
        log: TextIO = sys.stderr,
        clock: Callable[[], float] = time.monotonic,
        label: Optional[str] = None,
    ) -> None:
        self.settings = settings
        # With several relays, each line names its relay: "rtun tunnel RELAY [state] ...".
        self.prefix = "rtun tunnel" if label is None else f"rtun tunnel {peertext.one_line(label)}"
        self.ssh = ssh
        self.out = log
        self.clock = clock
        self.supervisor = Supervisor(settings, clock, random.random)
        self.master: Optional[sshproc.Master] = None
        self.relay: Optional[relay.Relay] = None  # the registry requests over the master
        self.entry: Optional[registry.Entry] = None  # this connection's registry entry
        self._stop_flag = False
        self._reconnect_flag = False
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)

    # -- logging and signals -------------------------------------------------------------

    def log(self, state: str, message: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.out.write(f"{stamp} {self.prefix} [{state}] {message}\n")
        self.out.flush()

    def _on_signal(self, signum: int, frame: object) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            self.request_stop()
        else:
            self.request_reconnect()

    def request_stop(self) -> None:
        """Mark the entry offline and stop (from a signal handler or another thread)."""
        self._stop_flag = True
        self._wake()

    def request_reconnect(self) -> None:
        self._reconnect_flag = True
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def _install_signals(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    def _signalled(self) -> bool:
        return self._stop_flag or self._reconnect_flag

    def _take_signal(self) -> Optional[msg.Event]:
        """A signal received since the last call, as an event (a stop before a reconnect)."""
        try:
            while os.read(self._wake_r, 64):
                pass
        except OSError:
            pass
        if self._stop_flag:
            self._stop_flag = False
            return msg.StopRequested()
        if self._reconnect_flag:
            self._reconnect_flag = False
            return msg.ReconnectRequested()
        return None

    def _select(self, timeout: float, fd: Optional[int]) -> None:
        fds = [self._wake_r] + ([fd] if fd is not None else [])
        select.select(fds, [], [], max(0.0, timeout))

    # -- the loop ------------------------------------------------------------------------

    def run(self, signals: bool = True) -> int:
        """Until stopped; ``signals``: take SIGTERM and the rest here (the main thread's alone)."""
        if signals:
            self._install_signals()
        plan = self.supervisor.handle(msg.Started())
        try:
            while True:
                *immediate, last = plan
                for action in immediate:
                    self._do(action)
                if isinstance(last, msg.Stop):
                    return last.code
                plan = self.supervisor.handle(self._take_signal() or self._perform(last))
        finally:
            self._close()

    def _do(self, action: msg.Action) -> None:
        if isinstance(action, msg.Log):
            self.log(action.state, action.message)
        elif isinstance(action, msg.CloseSsh):
            self._close()
        else:
            raise TypeError(f"{action!r} is not an immediate action")

    def _perform(self, action: msg.Action) -> msg.Event:
        """Carry out one action; what happened is the event returned."""
        if isinstance(action, msg.StartSsh):
            return self._start()
        if isinstance(action, msg.Wait):
            return self._wait(action)
        master = self.master
        assert master is not None, f"{action!r} without a connection"
        if isinstance(action, msg.Forward):
            try:
                return msg.Forwarded(master.forward(self._spec(action.port)))
            except sshargv.SshFailedError as exc:
                return msg.ForwardRefused(str(exc), hints.hint(255, str(exc)))
        if isinstance(action, msg.Probe):
            if master.probe("127.0.0.1", action.port, action.timeout):
                return msg.ProbeOk()
            if not master.alive():
                return msg.SshExited(master.exit_reason())
            s = self.settings
            return msg.ProbeFailed(banner.tcp_banner(s.local_host, s.local_port, timeout=2.0))
        if isinstance(action, msg.Reclaim):
            try:
                master.forward(self._spec(action.port))
            except sshargv.SshFailedError:
                return msg.ReclaimRefused()
            # ssh knows a server-allocated forward by the port it asked for: 0.
            if not master.cancel(self._spec(0)):
                master.cancel(self._spec(action.current))
            return msg.Reclaimed()
        if isinstance(action, (msg.Register, msg.Heartbeat, msg.MarkOffline)):
            return self._write(master, action)
        raise TypeError(f"cannot perform {action!r}")

    def _spec(self, port: int) -> str:
        return sshargv.remote_forward_spec(port, self.settings.local_host, self.settings.local_port)

    def _start(self) -> msg.Event:
        s = self.settings
        self._close()
        self.master = sshproc.Master(
            self.ssh, s.server, sshargv.tunnel_options(s.alive_interval, s.alive_count, s.connect_timeout)
        )
        try:
            self.master.start()
        except OSError as exc:
            return msg.CannotRunSsh(str(exc))
        if self.master.wait_ready(s.connect_timeout + 30, self._signalled, self._wake_r):
            return msg.Connected()
        return self._take_signal() or msg.ConnectFailed(self.master.exit_reason())

    def _wait(self, action: msg.Wait) -> msg.Event:
        """Until the deadline, a signal, or the end of ssh."""
        while True:
            event = self._take_signal()
            if event is not None:
                return event
            master = self.master
            if master is not None:
                for line in master.drain():
                    self.log(self.supervisor.state, f"ssh: {line}")
                if master.stderr_fd is None:
                    master.settle()
                if not master.alive():
                    return msg.SshExited(master.exit_reason())
            remaining = action.until - self.clock()
            if remaining <= 0:
                return msg.TimePassed()
            self._select(remaining, master.stderr_fd if master is not None else None)

    def _write(self, master: sshproc.Master, action: msg.Action) -> msg.Event:
        stamp = registry.now_iso()
        if self.entry is None or isinstance(action, msg.Register):
            s = self.settings
            self.entry = registry.Entry(
                name=s.name,
                hostname=identity.hostname(),
                machine_id=s.machine_id,
                user=s.login_user,
                port=0,
                local_port=s.local_port,
                os=identity.os_description(),
                agent_version=__version__,
                connected_at=stamp,
                last_seen=stamp,
                status="online",
                tags=list(s.tags),
            )
        entry = self.entry
        assert isinstance(action, (msg.Register, msg.Heartbeat, msg.MarkOffline))
        entry.port, entry.last_seen = action.port, stamp
        if isinstance(action, msg.MarkOffline):
            entry.status, entry.disconnected_at = "offline", stamp
        if self.relay is None:
            self.relay = relay.Relay(master.run, self.settings.registry)
        try:
            self.relay.put(entry, timeout=5 if isinstance(action, msg.MarkOffline) else 15)
        except relay.RelayError as exc:
            return msg.WriteFailed(exc.message)
        return msg.EntryWritten()

    def _close(self) -> None:
        if self.master is not None:
            self.master.close()
        self.master, self.entry, self.relay = None, None, None
