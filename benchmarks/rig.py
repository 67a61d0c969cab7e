"""The one rig every benchmark builds on: sshd on 127.0.0.1, the laptop's rtun daemon (with its
config, its environment, and if asked a notification service on a private session bus), the
server's home, and forwards into it: the plain interactive ``ssh -R`` forward, or links that go
through benchmarks/delayline.py to simulate a long round trip."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

from support.notifications import NotificationService, SessionBus
from support.rtun import RtunDaemon, clean_env
from support.sshd import Forward, SshKeys, SshServer
from support.wait import wait_until

RTUN_SCRIPT = str(Path(sys.executable).parent / "rtun")  # the installed console script
DELAYLINE = Path(__file__).resolve().parent / "delayline.py"


class Rig:
    """``forward``: the server's ``~/.rtun/rtun.sock`` forwarded to the daemon (unless
    ``forward=False``); ``link()`` adds delayed connections beside it."""

    def __init__(
        self,
        save_dir: Optional[Path] = None,
        *,
        config: str = "",
        env: Optional[Dict[str, str]] = None,
        notifications: bool = False,
        forward: bool = True,
    ) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="rb", dir="/tmp"))  # short: socket paths
        self.sshd = SshServer(SshKeys(self.root / "keys"), self.root / "sshd").start()
        self.local_home = self.root / "local"
        self.remote_home = self.root / "remote"
        (self.remote_home / ".rtun").mkdir(parents=True, mode=0o700)
        if config:
            path = self.local_home / ".config" / "rtun" / "config.toml"
            path.parent.mkdir(parents=True)
            path.write_text(config)
        daemon_env = dict(env or {})
        self.bus: Optional[SessionBus] = None
        self.notifications: Optional[NotificationService] = None
        if notifications:
            self.bus = SessionBus().start()
            self.notifications = NotificationService(self.bus, self.root / "notifications.jsonl").start()
            daemon_env["DBUS_SESSION_BUS_ADDRESS"] = self.bus.address
        self.save_dir = save_dir or self.local_home / "Downloads"
        self.daemon = RtunDaemon(self.local_home, self.save_dir, env=daemon_env).start()
        self.forward: Optional[Forward] = None
        if forward:
            self.forward = Forward(
                self.sshd, self.remote_home / ".rtun" / "rtun.sock", self.daemon.socket
            ).wait_up()
        self.links: List[Link] = []

    def link(self, name: str, rtt_ms: float, inflight: int) -> "Link":
        link = Link(self, name, rtt_ms, inflight)
        self.links.append(link)
        return link

    def close(self) -> None:
        for link in self.links:
            link.close()
        if self.forward is not None:
            self.forward.close()
        if self.daemon.alive():
            self.daemon.stop()
        if self.notifications is not None:
            self.notifications.stop()
        if self.bus is not None:
            self.bus.stop()
        self.sshd.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "Rig":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Link:
    """One SSH connection from the laptop to sshd through a delay line.

    Data from the server to the laptop (what ``rtun send``, ``ssh HOST cat`` and scp download
    carry) is held by the relay's "received" direction, bounded as the server's TCP send buffer
    would bound it. Commands on the link start no new TCP connection: each is a channel of it.
    """

    def __init__(self, rig: Rig, name: str, rtt_ms: float, inflight: int) -> None:
        self.rig = rig
        self.rtt_ms = rtt_ms
        self.inflight = inflight
        self.count_file = rig.root / f"{name}.json"
        self.control = rig.root / f"{name}.ctl"
        self.socket = rig.remote_home / ".rtun" / f"{name}.sock"
        proxy = (
            f"{sys.executable} {DELAYLINE} --rtt-ms {rtt_ms:g} --inflight {inflight} "
            f"--count {self.count_file} %h %p"
        )
        self.forward = Forward(
            rig.sshd,
            self.socket,
            rig.daemon.socket,
            extra=[
                "-o",
                f"ProxyCommand={proxy}",
                "-o",
                "ControlMaster=yes",
                "-o",
                f"ControlPath={self.control}",
            ],
        ).wait_up(timeout=30)
        wait_until(self.count_file.exists, timeout=10, what="the delay line's first counts")

    @property
    def ssh(self) -> List[str]:
        """ssh as a new channel of this connection (the command line overrides the config's
        ``ControlPath none``)."""
        return self.rig.sshd.ssh_command + ["-o", "ControlMaster=no", "-o", f"ControlPath={self.control}"]

    @property
    def scp(self) -> List[str]:
        return [
            "scp",
            "-q",
            "-F",
            str(self.rig.sshd.client_config),
            "-o",
            "ControlMaster=no",
            "-o",
            f"ControlPath={self.control}",
        ]

    @property
    def host(self) -> str:
        return self.rig.sshd.alias

    def env(self) -> Dict[str, str]:
        """The environment of an rtun command on the server, whose forward is this link's."""
        return clean_env(self.rig.remote_home, RTUN_SOCK=str(self.socket))

    def counts(self) -> dict:
        """The delay line's counts now: asks it for a fresh report (SIGUSR1) and waits for it."""
        before = json.loads(self.count_file.read_text())
        os.kill(before["pid"], signal.SIGUSR1)
        return wait_until(lambda: self._newer(before["report"]), timeout=10, what="a fresh report")

    def _newer(self, report: int) -> Optional[dict]:
        counts = json.loads(self.count_file.read_text())
        return counts if counts["report"] > report else None

    def close(self) -> None:
        self.forward.close()
