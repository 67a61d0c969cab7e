"""`rtun` at the prompt of an interactive `rtun ssh --install` login, as a real user of the
server with the distribution's own profiles (Debian's /etc/profile resets PATH), in bash, zsh
and fish: the user types `rtun ping` into a terminal (tmux) and the daemon answers. And
`rtun doctor HOST` checks exactly that PATH."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from session.harness import Laptop, sockets
from support.sshd import SshKeys, SshServer
from support.users import User, system_user
from support.wait import wait_until

SHELLS = ["/bin/bash", "/usr/bin/zsh", "/usr/bin/fish"]


class UserServer(SshServer):
    """sshd on 127.0.0.1 that logs ``user`` in as sshd would anywhere: their own shell, home,
    profiles and authorized_keys; no environment of the test's."""

    def __init__(self, keys: SshKeys, directory: Path, user: User) -> None:
        self.login = user
        super().__init__(keys, directory, alias="srv")

    def _write_configs(self) -> None:
        super()._write_configs()
        text = self.config.read_text()
        text = "\n".join(
            line for line in text.splitlines() if not line.startswith(("SetEnv", "AuthorizedKeysFile"))
        )
        self.config.write_text(text + "\nAuthorizedKeysFile .ssh/authorized_keys\n")
        self.client_config.write_text(
            self.client_config.read_text().replace(f"User {self.user}", f"User {self.login.name}")
        )


def _authorize(user: User, keys: SshKeys) -> None:
    ssh_dir = user.home / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(Path(str(keys.user_key) + ".pub").read_text())
    for path in (ssh_dir, ssh_dir / "authorized_keys"):
        shutil.chown(path, user.name, user.name)


@pytest.fixture(params=SHELLS, ids=lambda s: s.rsplit("/", 1)[1])
def remote_user(request: pytest.FixtureRequest, ssh_keys: SshKeys) -> Iterator[User]:
    with system_user(request.param) as user:
        _authorize(user, ssh_keys)
        if request.param.endswith("zsh"):  # zsh's new-user menu would take the typed line
            (user.home / ".zshrc").write_text("# mine\n")
            shutil.chown(user.home / ".zshrc", user.name, user.name)
        yield user


@pytest.fixture
def user_server(ssh_keys: SshKeys, short_tmp: Path, remote_user: User) -> Iterator[UserServer]:
    server = UserServer(ssh_keys, short_tmp / "usersshd", remote_user).start()
    yield server
    server.stop()


class Pane:
    """A tmux pane of its own server: a terminal the test types into and reads back."""

    def __init__(self, directory: Path) -> None:
        self.socket = directory / f"tmux-{uuid.uuid4().hex[:8]}"
        self.target = "t"

    def tmux(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-S", str(self.socket), *args], capture_output=True, text=True, timeout=30
        ).stdout

    def start(self, command: str, env: dict) -> None:
        subprocess.run(
            [
                "tmux",
                "-S",
                str(self.socket),
                "new-session",
                "-d",
                "-s",
                self.target,
                "-x",
                "160",
                "-y",
                "50",
                command,
            ],
            env=env,
            check=True,
            timeout=30,
        )

    def type(self, line: str) -> None:
        self.tmux("send-keys", "-t", self.target, line, "Enter")

    def text(self) -> str:
        return self.tmux("capture-pane", "-p", "-J", "-S", "-200", "-t", self.target)

    def close(self) -> None:
        self.tmux("kill-server")


def test_rtun_is_on_the_path_at_the_prompt_of_an_interactive_login(
    user_server: UserServer, remote_user: User, short_tmp: Path
) -> None:
    laptop = Laptop(short_tmp / "laptop", user_server)
    pane = Pane(short_tmp)
    try:
        argv = " ".join(laptop.rtun_argv(["ssh", "--install", "srv"]))
        pane.start(f"{argv}; echo RTUN-SSH-ENDED; sleep 60", laptop.env())
        wait_until(lambda: sockets(remote_user.home), timeout=60, what="the session's socket on the server")
        pane.type("rtun ping && rtun-open --help >/dev/null && echo OPEN-SHIM-OK")
        wait_until(
            lambda: (
                "OK PONG" in pane.text() or "not found" in pane.text() or "Unknown command" in pane.text()
            ),
            timeout=60,
            what=f"rtun ping at the prompt:\n{pane.text()}",
        )
        text = pane.text()
        assert "OK PONG" in text and "OPEN-SHIM-OK" in text, text
        pane.type("exit")
        wait_until(lambda: "RTUN-SSH-ENDED" in pane.text(), timeout=30, what="the login to end")
    finally:
        pane.close()
        laptop.stop_started_daemons()


def test_doctor_checks_the_interactive_login_shells_path(
    user_server: UserServer, remote_user: User, short_tmp: Path
) -> None:
    laptop = Laptop(short_tmp / "laptop", user_server)
    try:
        before = laptop.rtun(["doctor", "srv"], timeout=120)
        assert "prompt: `rtun` is not found at the prompt" in before.stdout.decode(), before.stdout.decode()
        installed = laptop.rtun(["install", "srv"], timeout=120)
        assert installed.returncode == 0, installed.stderr
        after = laptop.rtun(["doctor", "srv"], timeout=120)
        line = [x for x in after.stdout.decode().splitlines() if " prompt: " in x]
        assert line and line[0].startswith("ok"), after.stdout.decode()
    finally:
        laptop.stop_started_daemons()
