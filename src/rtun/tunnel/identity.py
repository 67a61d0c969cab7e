"""Who this machine is: its machine id (hashed), default name, and its stable preferred port."""

from __future__ import annotations

import getpass
import hashlib
import os
import platform
import re
import socket
import subprocess
import uuid
from typing import Optional

from rtun import paths

PORT_BASE = 10000
PORT_SPAN = 20000  # 10000-29999: below Linux's ephemeral range, so rarely taken by chance
MACHINE_ID_FILES = ("/etc/machine-id", "/var/lib/dbus/machine-id")


def _raw_machine_id() -> str:
    for path in MACHINE_ID_FILES:
        try:
            with open(path, encoding="ascii") as f:
                value = f.read().strip()
        except (OSError, UnicodeDecodeError):
            continue
        if value:
            return value
    if platform.system() == "Darwin":
        try:
            out = subprocess.run(
                ["ioreg", "-rd1", "-c", "IOPlatformExpertDevice"], capture_output=True, text=True, timeout=5
            ).stdout
            found = re.search(r'"IOPlatformUUID" = "([^"]+)"', out)
            if found:
                return found.group(1)
        except (OSError, subprocess.TimeoutExpired):
            pass
    # No system id: keep one of our own.
    path = os.path.join(paths.rtun_dir(), "machine-id")
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        value = uuid.uuid4().hex
        os.makedirs(paths.rtun_dir(), mode=0o700, exist_ok=True)
        with open(path, "w", encoding="ascii") as f:
            f.write(value + "\n")
        return value


def machine_id(raw: Optional[str] = None) -> str:
    """32 hex digits derived from the system's machine id. /etc/machine-id is meant to stay
    private, so the registry only ever holds this application-specific hash of it."""
    value = raw if raw is not None else _raw_machine_id()
    return hashlib.sha256(b"rtun-tunnel:" + value.encode("utf-8")).hexdigest()[:32]


def preferred_port(mid: str) -> int:
    """A port derived from the machine id: the same every time, so saved ssh configs keep working."""
    return PORT_BASE + int(mid[:8], 16) % PORT_SPAN


def default_name() -> str:
    return sanitize_name(socket.gethostname().split(".")[0]) or "machine"


def hostname() -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", socket.gethostname())[:255] or "unknown"


def sanitize_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-._")
    return cleaned[:63]


def current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def os_description() -> str:
    return f"{platform.system()} {platform.release()}".strip()[:100]
