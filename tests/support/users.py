"""Throw-away system users, for tests that run what a person types as that person: README's
commands as a non-root user, in that user's own login shell, with the system's own profiles."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest


@dataclass(frozen=True)
class User:
    name: str
    home: Path
    shell: str

    def login(self, command: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """``command`` in a new login shell of the user (``su -``: the environment is the
        login's, not the test's)."""
        return subprocess.run(
            ["su", "-", self.name, "-c", command],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
        )


def can_make_users() -> bool:
    return os.geteuid() == 0 and shutil.which("useradd") is not None and shutil.which("su") is not None


@contextmanager
def system_user(shell: str = "/bin/bash") -> Iterator[User]:
    """A new user with a home made from /etc/skel and ``shell`` as login shell; removed after."""
    if not can_make_users():
        pytest.skip("needs root and useradd to make a user")
    if not os.path.exists(shell):
        pytest.skip(f"{shell} is not installed")
    name = f"rt{uuid.uuid4().hex[:10]}"
    # "*": no password, but not locked (sshd refuses a locked account a key login).
    subprocess.run(
        ["useradd", "--create-home", "--shell", shell, "--password", "*", name],
        check=True,
        capture_output=True,
    )
    try:
        yield User(name, Path(os.path.expanduser(f"~{name}")), shell)
    finally:
        subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True)
        subprocess.run(["userdel", "--remove", name], capture_output=True)
