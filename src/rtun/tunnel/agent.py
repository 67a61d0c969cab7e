"""`rtun tunnel SERVER`: keep a reverse tunnel to this machine's sshd up, forever.

One loop, one state at a time, each change logged to stderr:

    connecting -> forwarding -> registering -> up -> (lost) -> waiting -> connecting ...

The connection is an ``ssh -M -N`` master; the reverse forward, the registry writes and the
health probe are all requests over it, so the server sees one login. The loop never gives up:
every failure is retried after a capped exponential backoff with jitter, reset once a connection
has stayed up for a stable period. SIGUSR1 (or SIGHUP) reconnects at once; SIGTERM (or SIGINT)
marks the registry entry offline and stops.
"""

from __future__ import annotations

import os
import random
import select
import signal
import sys
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, TextIO, Tuple

from rtun import __version__
from rtun.tunnel import identity, registry, sshcmd


@dataclass
class Settings:
    server: str
    name: str
    machine_id: str
    login_user: str
    local_host: str = "localhost"
    local_port: int = 22
    port: Optional[int] = None  # preferred server port; None: derived from the machine id
    registry: str = registry.DEFAULT_DIR
    probe_interval: float = 60.0  # end-to-end banner probe through the tunnel
    probe_timeout: float = 10.0
    heartbeat: float = 60.0  # last_seen refresh
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    stable_after: float = 60.0  # a connection up this long resets the backoff
    alive_interval: int = sshcmd.SERVER_ALIVE_INTERVAL
    alive_count: int = sshcmd.SERVER_ALIVE_COUNT_MAX
    connect_timeout: int = sshcmd.CONNECT_TIMEOUT

    @property
    def preferred_port(self) -> int:
        return self.port or identity.preferred_port(self.machine_id)


class Backoff:
    """Capped exponential backoff with jitter, reset after a stable period."""

    def __init__(self, base: float = 1.0, cap: float = 60.0, stable: float = 60.0,
                 rng: Callable[[], float] = random.random) -> None:
        self.base, self.cap, self.stable, self.rng = base, cap, stable, rng
        self.attempt = 0

    def next_delay(self, connected_for: float = 0.0) -> float:
        """The wait before the next try, after a connection that stayed up ``connected_for`` s."""
        if connected_for >= self.stable:
            self.attempt = 0
        ceiling = min(self.cap, self.base * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return ceiling * (0.5 + 0.5 * self.rng())  # "equal jitter": never below half the ceiling

    def reset(self) -> None:
        self.attempt = 0


class Agent:
    def __init__(self, settings: Settings, ssh: List[str], log: TextIO = sys.stderr) -> None:
        self.settings = settings
        self.ssh = ssh
        self.out = log
        self.backoff = Backoff(settings.backoff_base, settings.backoff_max, settings.stable_after)
        self.stop_requested = False
        self.reconnect_requested = False
        self.state = "starting"
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        self.direct: Optional[Tuple[str, int]] = None

    # -- logging and signals -------------------------------------------------------------

    def log(self, message: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.out.write(f"{stamp} rtun tunnel [{self.state}] {message}\n")
        self.out.flush()

    def enter(self, state: str, message: str) -> None:
        self.state = state
        self.log(message)

    def _on_signal(self, signum: int, frame: object) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            self.stop_requested = True
        else:
            self.reconnect_requested = True
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def _install_signals(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    def _interrupted(self) -> bool:
        return self.stop_requested or self.reconnect_requested

    def _wait(self, timeout: float, extra_fd: Optional[int] = None) -> List[int]:
        fds = [self._wake_r] + ([extra_fd] if extra_fd is not None else [])
        ready, _, _ = select.select(fds, [], [], max(0.0, timeout))
        if self._wake_r in ready:
            try:
                while os.read(self._wake_r, 64):
                    pass
            except OSError:
                pass
        return ready

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> int:
        self._install_signals()
        s = self.settings
        self.direct = self._direct_target()
        self.log(f"agent {__version__} for {s.name} ({s.machine_id[:8]}): {s.server} port "
                 f"{s.preferred_port} -> {s.local_host}:{s.local_port}")
        while not self.stop_requested:
            self.reconnect_requested = False
            up_for = self._session()
            if self.stop_requested:
                break
            if self.reconnect_requested:
                self.backoff.reset()
                continue
            delay = self.backoff.next_delay(up_for)
            server_gone = self.direct is not None and not sshcmd.tcp_banner(*self.direct, timeout=1.0)
            self.enter("waiting", f"retrying in {delay:.1f}s"
                       + (" or as soon as the server answers again" if server_gone else ""))
            self._wait_retry(delay, server_gone)
        self.enter("stopped", "stopped")
        return 0

    def _direct_target(self) -> Optional[Tuple[str, int]]:
        """The server's host and port if ssh reaches it directly (no proxy): while it is down,
        the agent watches for its banner and reconnects the moment it is back."""
        config = sshcmd.effective_config(self.ssh, self.settings.server)
        if not config.get("hostname") or not config.get("port", "").isdigit():
            return None
        for key in ("proxycommand", "proxyjump"):
            if config.get(key, "none").lower() != "none":
                return None
        return config["hostname"], int(config["port"])

    def _wait_retry(self, delay: float, watch_server: bool) -> None:
        deadline = time.monotonic() + delay
        while not self._interrupted():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wait(min(remaining, 0.5) if watch_server else remaining)
            if watch_server and self.direct is not None and sshcmd.tcp_banner(*self.direct, timeout=0.5):
                self.log("the server answers again")
                return

    def _session(self) -> float:
        """One connection, from connect to loss. Returns how long it was up (0 if never)."""
        s = self.settings
        master = sshcmd.Master(self.ssh, s.server,
                               sshcmd.tunnel_options(s.alive_interval, s.alive_count, s.connect_timeout))
        try:
            self.enter("connecting", f"ssh {s.server}")
            try:
                master.start()
            except OSError as exc:
                self.log(f"cannot run ssh: {exc}")
                return 0.0
            if not master.wait_ready(s.connect_timeout + 30, self._interrupted, self._wake_r):
                if not self._interrupted():
                    self._report_exit(master, "connection failed")
                return 0.0
            port = self._forward(master)
            if port is None:
                return 0.0
            entry = self._entry(port)
            self.enter("registering", f"{s.registry}/{entry.filename}")
            self._write(master, entry)
            return self._supervise(master, entry)
        finally:
            master.close()

    def _forward(self, master: sshcmd.Master) -> Optional[int]:
        s = self.settings
        self.enter("forwarding", f"127.0.0.1:{s.preferred_port} on the server")
        try:
            return master.forward(sshcmd.remote_forward_spec(s.preferred_port, s.local_host, s.local_port))
        except sshcmd.SshFailedError as exc:
            self.log(f"port {s.preferred_port} unavailable ({exc}); asking the server for a free port")
        try:
            port = master.forward(sshcmd.remote_forward_spec(0, s.local_host, s.local_port))
        except sshcmd.SshFailedError as exc:
            self.log(f"the server refused the forward: {exc} ({sshcmd.hint(255, str(exc))})")
            return None
        self.log(f"the server allocated port {port}")
        return port

    def _entry(self, port: int) -> registry.Entry:
        s = self.settings
        stamp = registry.now_iso()
        return registry.Entry(
            name=s.name, hostname=identity.hostname(),
            machine_id=s.machine_id, user=s.login_user, port=port, local_port=s.local_port,
            os=identity.os_description(), agent_version=__version__, connected_at=stamp,
            last_seen=stamp, status="online",
        )

    def _write(self, master: sshcmd.Master, entry: registry.Entry, timeout: float = 15) -> bool:
        command = registry.write_command(self.settings.registry, entry.filename)
        done = master.run(command, input=entry.to_json(), timeout=timeout)
        if done.returncode != 0:
            reason = sshcmd.last_line(done.stderr.decode("utf-8", "replace")) or f"exit {done.returncode}"
            self.log(f"registry write failed ({reason}); the tunnel stays up, retrying at the next heartbeat")
            return False
        return True

    def _probe(self, master: sshcmd.Master, port: int) -> bool:
        return master.probe("127.0.0.1", port, self.settings.probe_timeout)

    def _supervise(self, master: sshcmd.Master, entry: registry.Entry) -> float:
        s = self.settings
        up_since = time.monotonic()
        if not self._probe(master, entry.port):
            self._probe_failed(entry)
            return 0.0
        self.enter("up", f"127.0.0.1:{entry.port} on {s.server} -> {s.local_host}:{s.local_port}; "
                   f"registered as {s.name}")
        next_probe = time.monotonic() + s.probe_interval
        next_beat = time.monotonic() + s.heartbeat
        while True:
            now = time.monotonic()
            self._wait(min(next_probe, next_beat) - now, master.stderr_fd)
            for line in master.drain():
                self.log(f"ssh: {line}")
            if self.stop_requested:
                entry.status, entry.last_seen = "offline", registry.now_iso()
                entry.disconnected_at = entry.last_seen
                self.enter("stopping", "marking the registry entry offline")
                self._write(master, entry, timeout=5)
                return time.monotonic() - up_since
            if self.reconnect_requested:
                self.enter("reconnecting", "reconnect requested by signal")
                return time.monotonic() - up_since
            if master.stderr_fd is None:
                _exits(master)
            if not master.alive():
                self._report_exit(master, "connection lost")
                return time.monotonic() - up_since
            now = time.monotonic()
            if now >= next_probe:
                if not self._probe(master, entry.port):
                    if master.alive():
                        self._probe_failed(entry)
                    else:
                        self._report_exit(master, "connection lost")
                    return time.monotonic() - up_since
                next_probe = time.monotonic() + s.probe_interval
            if now >= next_beat:
                if entry.port != s.preferred_port:
                    self._reclaim(master, entry)
                entry.last_seen = registry.now_iso()
                self._write(master, entry)
                next_beat = time.monotonic() + s.heartbeat

    def _reclaim(self, master: sshcmd.Master, entry: registry.Entry) -> None:
        """Back to the preferred port once it is free again (a stale session of this machine
        held it until the server dropped that session), so saved ssh configs work again."""
        s = self.settings
        try:
            master.forward(sshcmd.remote_forward_spec(s.preferred_port, s.local_host, s.local_port))
        except sshcmd.SshFailedError:
            return
        # ssh knows a server-allocated forward by the port it asked for: 0.
        if not master.cancel(sshcmd.remote_forward_spec(0, s.local_host, s.local_port)):
            master.cancel(sshcmd.remote_forward_spec(entry.port, s.local_host, s.local_port))
        self.log(f"moved back from port {entry.port} to the preferred port {s.preferred_port}")
        entry.port = s.preferred_port

    def _probe_failed(self, entry: registry.Entry) -> None:
        s = self.settings
        self.enter("lost", f"probe failed: no sshd banner through 127.0.0.1:{entry.port} on the server")
        if not sshcmd.tcp_banner(s.local_host, s.local_port, timeout=2.0):
            self.log(f"the local sshd at {s.local_host}:{s.local_port} does not answer: is it running?")

    def _report_exit(self, master: sshcmd.Master, what: str) -> None:
        if master.process is not None and master.process.poll() is None:
            _exits(master)
        master.drain()
        code = master.process.poll() if master.process is not None else None
        said = sshcmd.last_line(master.stderr_text)
        self.enter("lost", f"{what}: ssh exited {code}" + (f": {said}" if said else "")
                   + f" ({sshcmd.hint(code, master.stderr_text)})")


def _exits(master: sshcmd.Master, timeout: float = 2.0) -> bool:
    """After ssh closed its stderr, give it a moment to exit; True if it did."""
    if master.process is None:
        return True
    try:
        master.process.wait(timeout=timeout)
        return True
    except Exception:
        return False
