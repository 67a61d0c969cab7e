"""The forward comes before the user's command: `rtun ssh` starts the session's ssh while the
server answers the forward, and the command runs only where the socket is there. End to end
against a real sshd that refuses socket forwards, with shared and private masters."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from session.harness import HomeServer, Laptop


class _NoSocketForwards(HomeServer):
    """sshd with ``AllowStreamLocalForwarding no`` (sshd takes a keyword's first value)."""

    def _write_configs(self) -> None:
        super()._write_configs()
        self.config.write_text("AllowStreamLocalForwarding no\n" + self.config.read_text())


@pytest.fixture
def refusing(ssh_keys, short_tmp: Path, server_home: Path) -> Iterator[HomeServer]:
    srv = _NoSocketForwards(ssh_keys, short_tmp / "refusing-sshd", server_home).start()
    yield srv
    srv.stop()


@pytest.mark.parametrize("linger", ["10", "0"])  # a shared master, a private one
def test_a_refused_forward_is_one_line_and_the_command_never_runs(
    refusing, short_tmp: Path, server_home: Path, laptops, linger
):
    laptop = Laptop(short_tmp / "laptop", refusing)
    laptops.append(laptop)
    ran = server_home / "ran"
    for args in (["ssh", "srv", f"touch {ran}"], ["ssh", "-N", "srv"]):
        done = laptop.rtun(args, RTUN_SSH_LINGER=linger)
        lines = done.stderr.decode().splitlines()
        assert done.returncode == 1, lines
        assert lines[-1].startswith("rtun ssh: srv refused to forward ") and lines[-1].endswith(
            "(is AllowStreamLocalForwarding off in its sshd_config?)"
        ), lines
        assert not done.stdout  # -N printed no RTUN_SOCK
    assert not ran.exists()
    assert list((server_home / ".rtun").glob("rtun.sock.*")) == []
