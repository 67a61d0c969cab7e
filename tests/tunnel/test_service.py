"""Boot services: rendered units and plists, install/uninstall in a throw-away home."""

from __future__ import annotations

import os
import plistlib
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from rtun.session import bundle
from rtun.tunnel import service
from support.rtun import RTUN
from support.tunnel import World
from support.wait import wait_until


def test_systemd_user_unit_restarts_always_without_start_limit() -> None:
    argv = service.agent_argv("pub", ["--name", "pi"])
    text = service.render_systemd(argv, {"RTUN_SSH_COMMAND": "ssh -i '/k ey'"}, "pub", system=False)
    assert "Restart=always" in text and "StartLimitIntervalSec=0" in text and "KillMode=mixed" in text
    assert "WantedBy=default.target" in text and "User=" not in text
    assert f"ExecStart={sys.executable} -m rtun tunnel --name pi pub" in text
    assert "Environment=\"RTUN_SSH_COMMAND=ssh -i '/k ey'\"" in text


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
    assert again.returncode == 1 and again.stderr.startswith(
        "rtun tunnel uninstall: no rtun tunnel service at"
    )


def test_install_launchd_agent_in_the_home(world: World) -> None:
    done = world.rtun(["tunnel", "install", "--init", "launchd", "pub", "--no-start"])
    assert done.returncode == 0, done.stderr
    plist = Path(world.home, "Library", "LaunchAgents", f"{service.LABEL}.plist")
    assert plistlib.loads(plist.read_bytes())["ProgramArguments"][-3:] == ["rtun", "tunnel", "pub"]


def _exec_start(unit: str) -> Tuple[List[str], Dict[str, str]]:
    """ExecStart's argv and the Environment= settings, read back as systemd reads them (our
    words are plain or double-quoted; %% and $$ are systemd's escapes)."""
    argv: List[str] = []
    env: Dict[str, str] = {}
    for line in unit.splitlines():
        key, _, value = line.partition("=")
        words = [w.replace("%%", "%").replace("$$", "$") for w in shlex.split(value)]
        if key == "ExecStart":
            argv = words
        elif key == "Environment":
            name, _, setting = words[0].partition("=")
            env[name] = setting
    return argv, env


@pytest.mark.parametrize("how", ["single-file client", "package"])
def test_the_units_exec_start_runs_the_rtun_that_wrote_it(how: str, world: World, agents: list) -> None:
    """`rtun tunnel install --dry-run` from the zipapp (no rtun module for `python3 -m rtun`) and
    from the package: the ExecStart it prints, run as systemd would, brings the tunnel up."""
    if how == "single-file client":
        app = world.root / "rtun.pyz"
        app.write_bytes(bundle.build())
        writer = [sys.executable, "-I", str(app)]
    else:
        writer = RTUN
    name = f"svc{len(how)}"
    args = [
        "tunnel",
        "install",
        "--dry-run",
        "pub",
        "--name",
        name,
        "--local-port",
        str(world.machine.port),
        "--registry",
        str(world.registry),
        "--machine-id",
        f"test-{name}-{os.getpid()}",
    ]
    printed = subprocess.run(
        writer + args,
        env=world.env(),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        cwd=str(world.root),
    )
    assert printed.returncode == 0, printed.stderr
    argv, env = _exec_start(printed.stdout)
    if how == "single-file client":
        assert argv[:2] == [sys.executable, str(app)]
    # systemd starts it with an environment of its own: no PYTHONPATH, no venv activated.
    started = subprocess.Popen(
        argv,
        env={"HOME": str(world.home), "PATH": "/usr/bin:/bin", **env},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd="/",
    )
    try:
        entry = wait_until(
            lambda: started.poll() is None and world.entry(name),
            timeout=30,
            what="the service's registry entry",
        )
        assert entry["port"] > 0
    finally:
        started.terminate()
        output = started.communicate(timeout=30)[0].decode(errors="replace")
    assert "No module named" not in output, output
