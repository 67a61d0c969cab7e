"""A private D-Bus session bus and a recording org.freedesktop.Notifications service on it.

``SessionBus`` runs ``dbus-daemon`` with a minimal session configuration of its own (no system
service directories, so no real notification daemon can be activated by accident).
``NotificationService`` runs this file as a separate process: it owns
``org.freedesktop.Notifications`` on that bus and appends every Notify call to a JSON-lines
file, so a test can assert the exact app name, title and body that arrived.

(No ``from __future__ import annotations`` here: dbus-fast reads the D-Bus signatures from the
method annotations at run time.) The service can also be made D-Bus activatable instead of started (``SessionBus(activatable=...)``),
as most desktops start their notification daemon on demand.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

DBUS_DAEMON = shutil.which("dbus-daemon") or "/usr/bin/dbus-daemon"
BUS_NAME = "org.freedesktop.Notifications"
OBJECT_PATH = "/org/freedesktop/Notifications"
DEFAULT_CAPABILITIES = ("body", "actions")

_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <servicedir>{services}</servicedir>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


class SessionBus:
    """``dbus-daemon`` for one test, listening on a socket in a private directory."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="rtbus", dir="/tmp"))
        self.socket = self.directory / "bus"
        self.services = self.directory / "services"
        self.services.mkdir()
        self.config = self.directory / "session.conf"
        self.config.write_text(_CONFIG.format(socket=self.socket, services=self.services))
        self.address = f"unix:path={self.socket}"
        self.process: Optional[subprocess.Popen] = None

    def start(self) -> "SessionBus":
        from support.wait import wait_until

        self.process = subprocess.Popen(
            [DBUS_DAEMON, f"--config-file={self.config}", "--nofork", "--nopidfile"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

        def listening() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"dbus-daemon exited: {self.process.stderr.read().decode()}")
            return self.socket.exists()

        wait_until(listening, timeout=10, what="dbus-daemon to listen")
        return self

    def make_activatable(self, record: Path, capabilities: Sequence[str] = DEFAULT_CAPABILITIES) -> None:
        """Let the bus start the recording service on the first call to its name."""
        command = " ".join(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--record",
                str(record),
                "--capabilities",
                ",".join(capabilities) or "-",
            ]
        )
        (self.services / f"{BUS_NAME}.service").write_text(
            f"[D-BUS Service]\nName={BUS_NAME}\nExec={command}\n"
        )

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
                self.process.wait(timeout=10)
            self.process.stderr.close()
            self.process = None
        shutil.rmtree(self.directory, ignore_errors=True)


def read_records(path: Path) -> List[Dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class NotificationService:
    """The recording notification service, as a process of its own on ``bus``."""

    def __init__(
        self, bus: SessionBus, record: Path, capabilities: Sequence[str] = DEFAULT_CAPABILITIES
    ) -> None:
        self.bus = bus
        self.record = record
        self.ready = record.with_name(record.name + ".ready")
        self.capabilities = tuple(capabilities)
        self.process: Optional[subprocess.Popen] = None

    def start(self) -> "NotificationService":
        from support.wait import wait_until

        if self.ready.exists():
            self.ready.unlink()
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--address",
                self.bus.address,
                "--record",
                str(self.record),
                "--ready",
                str(self.ready),
                "--capabilities",
                ",".join(self.capabilities) or "-",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

        def owns_name() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"notification service exited: {self.process.stderr.read().decode()}")
            return self.ready.exists()

        wait_until(owns_name, timeout=15, what=f"the test service to own {BUS_NAME}")
        return self

    def notifications(self) -> List[Dict[str, Any]]:
        return read_records(self.record)

    def shown(self, count: int = 1) -> List[Dict[str, Any]]:
        """The notifications once at least ``count`` have arrived."""
        from support.wait import wait_until  # not at the top: this file also runs as the service

        return wait_until(
            lambda: len(self.notifications()) >= count and self.notifications(),
            what=f"{count} notification(s) to arrive",
        )

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                self.process.wait(timeout=10)
            self.process.stderr.close()
            self.process = None


# ---- the service itself (run as a script) ---------------------------------------------------


def _serve(address: Optional[str], record: str, ready: Optional[str], capabilities: List[str]) -> None:
    import asyncio

    from dbus_fast import RequestNameReply
    from dbus_fast.aio import MessageBus
    from dbus_fast.service import ServiceInterface, method
    from dbus_fast.service import signal as dbus_signal

    class Notifications(ServiceInterface):
        def __init__(self) -> None:
            super().__init__(BUS_NAME)
            self.next_id = 0

        @method()
        def Notify(
            self,
            app_name: "s",
            replaces_id: "u",
            app_icon: "s",
            summary: "s",
            body: "s",
            actions: "as",
            hints: "a{sv}",
            expire_timeout: "i",
        ) -> "u":
            self.next_id += 1
            entry = {
                "id": self.next_id,
                "app_name": app_name,
                "summary": summary,
                "body": body,
                "app_icon": app_icon,
                "actions": list(actions),
            }
            with open(record, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")
                f.flush()
                os.fsync(f.fileno())
            return self.next_id

        @method()
        def GetCapabilities(self) -> "as":
            return list(capabilities)

        @method()
        def GetServerInformation(self) -> "ssss":
            return ["rtun-test-notifications", "rtun", "1.0", "1.2"]

        @method()
        def CloseNotification(self, notification_id: "u") -> None:
            pass

        @dbus_signal()
        def NotificationClosed(self, notification_id: "u", reason: "u") -> "uu":
            return [notification_id, reason]

        @dbus_signal()
        def ActionInvoked(self, notification_id: "u", action_key: "s") -> "us":
            return [notification_id, action_key]

    async def main() -> None:
        bus_address = (
            address or os.environ.get("DBUS_STARTER_ADDRESS") or os.environ["DBUS_SESSION_BUS_ADDRESS"]
        )
        bus = await MessageBus(bus_address=bus_address).connect()
        bus.export(OBJECT_PATH, Notifications())
        reply = await bus.request_name(BUS_NAME)
        if reply != RequestNameReply.PRIMARY_OWNER:
            raise SystemExit(f"could not own {BUS_NAME}: {reply}")
        if ready:
            Path(ready).write_text("ready\n")
        await bus.wait_for_disconnect()  # ends with the bus, or on SIGTERM

    asyncio.run(main())


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--address")
    parser.add_argument("--record", required=True)
    parser.add_argument("--ready")
    parser.add_argument("--capabilities", default=",".join(DEFAULT_CAPABILITIES))
    args = parser.parse_args()
    caps = [c for c in args.capabilities.split(",") if c and c != "-"]
    _serve(args.address, args.record, args.ready, caps)
