"""Boot services: rendered units and plists, install/uninstall in a throw-away home."""

from __future__ import annotations

import plistlib
import sys
from pathlib import Path

from rtun.tunnel import service
from support.tunnel import World


def test_systemd_user_unit_restarts_always_without_start_limit() -> None:
    argv = service.agent_argv("pub", ["--name", "pi"])
    text = service.render_systemd(argv, {"RTUN_SSH_COMMAND": "ssh -i '/k ey'"}, "pub", system=False)
    assert "Restart=always" in text and "StartLimitIntervalSec=0" in text and "KillMode=mixed" in text
    assert "WantedBy=default.target" in text and "User=" not in text
    assert f"ExecStart={sys.executable} -m rtun tunnel --name pi pub" in text
    assert 'Environment="RTUN_SSH_COMMAND=ssh -i \'/k ey\'"' in text


def test_systemd_system_unit_waits_for_network_and_runs_as_the_user() -> None:
    text = service.render_systemd(["rtun"], {}, "pub", system=True, run_as="pi")
    assert "After=network-online.target" in text and "User=pi" in text
    assert "WantedBy=multi-user.target" in text


def test_systemd_quoting_escapes_specifiers_and_variables() -> None:
    assert service.systemd_quote("plain-word") == "plain-word"
    assert service.systemd_quote("100%") == '"100%%"'
    assert service.systemd_quote('a "b" $HOME') == '"a \\"b\\" $$HOME"'


def test_launchd_plist_keeps_the_agent_alive() -> None:
    text = service.render_launchd(["/usr/bin/python3", "-m", "rtun"], {}, "/tmp/log", system=False)
    job = plistlib.loads(text.encode())
    assert job["KeepAlive"] is True and job["RunAtLoad"] is True and job["Label"] == service.LABEL
    assert job["ProgramArguments"] == ["/usr/bin/python3", "-m", "rtun"]


def test_install_dry_run_prints_the_unit_and_writes_nothing(world: World) -> None:
    done = world.rtun(["tunnel", "install", "--dry-run", "pub", "--name", "pi", "--local-port", "2222"])
    assert done.returncode == 0, done.stderr
    assert "# would write " in done.stdout and "--local-port 2222" in done.stdout
    assert "enable-linger" in done.stdout
    assert not (world.home / ".config" / "systemd").exists()


def test_install_then_uninstall_a_user_unit(world: World) -> None:
    unit = world.home / ".config" / "systemd" / "user" / service.UNIT
    done = world.rtun(["tunnel", "install", "pub", "--name", "pi", "--no-start"])
    assert done.returncode == 0, done.stderr
    assert unit.exists() and "rtun tunnel --name pi pub" in unit.read_text()
    assert f"RTUN_SSH_COMMAND={world.ssh_command_line}" in unit.read_text()
    done = world.rtun(["tunnel", "uninstall", "--no-start"])
    assert done.returncode == 0 and not unit.exists()
    again = world.rtun(["tunnel", "uninstall", "--no-start"])
    assert again.returncode == 1 and again.stderr.startswith("rtun tunnel uninstall: no rtun tunnel service at")


def test_install_launchd_agent_in_the_home(world: World) -> None:
    done = world.rtun(["tunnel", "install", "--init", "launchd", "pub", "--no-start"])
    assert done.returncode == 0, done.stderr
    plist = Path(world.home, "Library", "LaunchAgents", f"{service.LABEL}.plist")
    assert plistlib.loads(plist.read_bytes())["ProgramArguments"][-3:] == ["rtun", "tunnel", "pub"]
