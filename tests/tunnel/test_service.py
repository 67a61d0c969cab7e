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

from rtun import paths
from rtun.session import bundle
from rtun.tunnel import service
from support.rtun import RTUN, answers_ping, run_rtun
from support.tunnel import World
from support.wait import wait_until


def test_systemd_user_unit_restarts_always_without_start_limit() -> None:
    job = service.tunnel_job(["pub"], ["--name", "pi"])
    text = service.render_systemd(job, {"RTUN_SSH_COMMAND": "ssh -i '/k ey'"}, system=False)
    assert "Restart=always" in text and "StartLimitIntervalSec=0" in text and "KillMode=mixed" in text
    assert "WantedBy=default.target" in text and "User=" not in text
    assert f"ExecStart={sys.executable} -m rtun tunnel --name pi pub" in text
    assert "Environment=\"RTUN_SSH_COMMAND=ssh -i '/k ey'\"" in text


def test_systemd_system_unit_waits_for_network_and_runs_as_the_user() -> None:
    text = service.render_systemd(service.tunnel_job(["pub"], []), {}, system=True, run_as="pi")
    assert "After=network-online.target" in text and "User=pi" in text
    assert "WantedBy=multi-user.target" in text


def test_systemd_quoting_escapes_specifiers_and_variables() -> None:
    assert service.systemd_quote("plain-word") == "plain-word"
    assert service.systemd_quote("100%") == '"100%%"'
    assert service.systemd_quote('a "b" $HOME') == '"a \\"b\\" $$HOME"'


def test_launchd_plist_keeps_the_agent_alive() -> None:
    text = service.render_launchd(service.tunnel_job(["pub"], []), {}, "/tmp/log", system=False)
    job = plistlib.loads(text.encode())
    assert job["KeepAlive"] is True and job["RunAtLoad"] is True and job["Label"] == service.LABEL
    assert job["ProgramArguments"] == paths.this_rtun()[0] + ["tunnel", "pub"]


def test_install_dry_run_prints_the_unit_and_writes_nothing(world: World) -> None:
    done = world.rtun(["tunnel", "install", "--dry-run", "pub", "--name", "pi", "--local-port", "2222"])
    assert done.returncode == 0, done.stderr
    assert "# would write " in done.stdout and "--local-port 2222" in done.stdout
    assert "enable-linger" in done.stdout
    assert not (world.home / ".config" / "systemd").exists()


def test_install_with_two_relays_writes_one_unit_that_runs_both(world: World) -> None:
    done = world.rtun(["tunnel", "install", "--dry-run", "--init", "systemd", "--name", "pi", "pub", "pub2"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("# would write ") == 1
    argv, _ = _exec_start(done.stdout)
    assert argv[-5:] == ["tunnel", "--name", "pi", "pub", "pub2"]  # one agent process, both relays
    assert "Description=rtun reverse SSH tunnel to pub, pub2" in done.stdout


def test_install_takes_the_relays_from_the_config_file(world: World) -> None:
    config = world.home / ".config" / "rtun" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('[server]\nverbose = true\n\n[tunnel]\nrelays = ["pub", "pub2"]\n')
    done = world.rtun(["tunnel", "install", "--dry-run", "--init", "systemd"])
    assert done.returncode == 0, done.stderr
    assert _exec_start(done.stdout)[0][-3:] == ["tunnel", "pub", "pub2"]
    # The daemon reads the same file and leaves the tunnel's table alone.
    shown = world.rtun(["config"])
    assert shown.returncode == 0 and "verbose = true  # from the file" in shown.stdout, shown.stderr


@pytest.mark.parametrize(
    "args, config, error",
    [
        (["pub", "pub"], "", "relay 'pub' is named twice"),
        ([], "", "name the relay: rtun tunnel RELAY [RELAY...]"),
        ([], '[tunnel]\nrelay = "pub"\n', "tunnel.relay: unknown setting (known: relays)"),
        ([], '[tunnel]\nrelays = "pub"\n', "tunnel.relays: expected a list of ssh destinations"),
        (
            [],
            '[tunnel]\nrelays = ["pub", "-oProxyCommand=x"]\n',
            "expected a list of ssh destinations ([user@]host",
        ),
    ],
)
def test_relays_that_make_no_sense_are_refused(
    world: World, args: List[str], config: str, error: str
) -> None:
    path = world.home / ".config" / "rtun" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config)
    for command in (["tunnel"], ["tunnel", "install", "--dry-run"]):
        done = world.rtun(command + args)
        assert done.returncode != 0 and error in done.stderr, (command, done.stderr)


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


# ---- the daemon's login service: `rtun server install` ------------------------------------------


def test_daemon_unit_starts_with_the_desktop_session_where_there_is_one(tmp_path: Path) -> None:
    (tmp_path / service.SESSION_TARGET).write_text("")
    assert service.desktop_target([str(tmp_path)]) == service.SESSION_TARGET
    assert service.desktop_target([str(tmp_path / "none")]) == "default.target"
    job = service.daemon_job(["--log", "/l"])
    text = service.render_systemd(
        job, {"RTUN_SERVICE": "systemd"}, system=False, target=service.SESSION_TARGET
    )
    assert "PartOf=graphical-session.target" in text and "WantedBy=graphical-session.target" in text
    assert "Restart=on-failure" in text and "ExecReload=kill -HUP $MAINPID" in text
    assert "StartLimitIntervalSec=0" not in text and "Environment=RTUN_SERVICE=systemd" in text
    bare = service.render_systemd(job, {}, system=False, target="default.target")
    assert "PartOf=" not in bare and "WantedBy=default.target" in bare


def test_daemon_launchd_agent_runs_in_the_gui_session_and_stays_stopped_when_stopped() -> None:
    text = service.render_launchd(service.daemon_job([]), {}, "/tmp/log", system=False)
    job = plistlib.loads(text.encode())
    assert job["Label"] == service.DAEMON_LABEL and job["LimitLoadToSessionType"] == "Aqua"
    assert job["KeepAlive"] == {"SuccessfulExit": False} and job["RunAtLoad"] is True
    assert job["ProgramArguments"][-1] == "server"


def test_server_install_dry_run_writes_nothing_and_no_start_writes_the_unit(local_home: Path) -> None:
    unit = local_home / ".config" / "systemd" / "user" / service.DAEMON_UNIT
    dry = run_rtun(["server", "install", "--dry-run", "--init", "systemd"], local_home)
    assert dry.returncode == 0, dry.stderr
    assert b"# would write " in dry.stdout and b"enable --now rtun-server.service" in dry.stdout
    assert not unit.exists()
    done = run_rtun(["server", "install", "--no-start", "--init", "systemd", "-D", "~/in"], local_home)
    assert done.returncode == 0, done.stderr
    text = unit.read_text()
    assert f"--dir {local_home}/in" in text and f"--log {local_home}/.rtun/rtun.log" in text
    assert run_rtun(["server", "uninstall", "--no-start", "--init", "systemd"], local_home).returncode == 0
    assert not unit.exists()
    again = run_rtun(["server", "uninstall", "--no-start", "--init", "systemd"], local_home)
    assert again.returncode == 1 and b"no rtun daemon service at" in again.stderr


def test_the_daemon_units_exec_start_runs_and_the_daemon_answers(local_home: Path) -> None:
    """The ExecStart `rtun server install --dry-run` prints, run as systemd would (a clean
    environment, from /): the daemon answers PING, and `rtun server status` and `stop` know it."""
    printed = run_rtun(["server", "install", "--dry-run", "--init", "systemd"], local_home)
    assert printed.returncode == 0, printed.stderr
    argv, env = _exec_start(printed.stdout.decode())
    assert env["RTUN_SERVICE"] == "systemd"
    started = subprocess.Popen(
        argv,
        env={"HOME": str(local_home), "PATH": "/usr/bin:/bin", **env},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd="/",
    )
    try:
        socket_path = local_home / ".rtun" / "rtun.sock"
        wait_until(lambda: started.poll() is None and answers_ping(socket_path), timeout=30, what="PING")
        shown = run_rtun(["server", "status"], local_home)
        assert shown.returncode == 0 and b"started by systemd" in shown.stdout
        assert run_rtun(["server", "stop"], local_home).returncode == 0
        assert started.wait(timeout=30) == 0
    finally:
        if started.poll() is None:
            started.terminate()
        output = started.communicate(timeout=30)[0].decode(errors="replace")
    assert "No module named" not in output, output
