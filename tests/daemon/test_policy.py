"""The [actions] policy: each action the local user turns off is refused with exit 4 and a
sentence naming the setting, and nothing happens on the desktop."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from support.rtun import RtunDaemon, run_rtun


@pytest.fixture
def strict_daemon(local_home: Path, save_dir: Path, short_tmp: Path) -> Iterator[RtunDaemon]:
    local_home.mkdir(parents=True, exist_ok=True)
    opened = short_tmp / "opened"
    opener = short_tmp / "opener.sh"
    opener.write_text(f'#!/bin/sh\necho "$@" >> {opened}\n')
    opener.chmod(0o755)
    config = local_home / "strict.toml"
    config.write_text(
        f'[actions]\nnotify = false\nview = false\nsend = false\n[view]\nopener = ["{opener}"]\n'
    )
    running = RtunDaemon(local_home, save_dir, extra_args=["--config", str(config)]).start()
    yield running
    running.stop()


@pytest.mark.parametrize(
    "argv, action",
    [
        (["notify", "hello"], "notify"),
        (["view", "{file}"], "view"),
        (["open", "{file}"], "view"),
        (["send", "{file}"], "send"),
    ],
)
def test_a_denied_action_is_refused_with_exit_4_and_the_setting(
    strict_daemon: RtunDaemon, short_tmp: Path, save_dir: Path, argv: list, action: str
) -> None:
    payload = short_tmp / "payload.txt"
    payload.write_text("payload\n")
    args = [a.replace("{file}", str(payload)) for a in argv]
    result = run_rtun(args[:1] + ["-s", str(strict_daemon.socket)] + args[1:], short_tmp)
    assert result.returncode == 4
    lines = result.stderr.decode().splitlines()
    assert lines == [
        f"rtun {argv[0]}: {action} is turned off on your computer; to turn it on, set [actions] "
        f"{action} = true in ~/.config/rtun/config.toml on your computer (`rtun config --path` "
        "there prints its path), then run `rtun server reload` there"
    ]
    assert not (short_tmp / "opened").exists()
    assert not save_dir.exists() or not any(save_dir.iterdir())
    assert run_rtun(["ping", "-s", str(strict_daemon.socket)], short_tmp).returncode == 0
