"""The client on a server without pip: `rtun install HOST` and `rtun ssh HOST --install`.

The server's PATH holds nothing but a python3 (the system's, which has no rtun): no rtun, no
pip, no coreutils. The zipapp must run under that python3, as it would on such a server.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Iterator

import pytest

from rtun import __version__
from rtun.session import bundle, installer
from session.harness import HomeServer, Laptop
from support.rtun import RtunDaemon

SYSTEM_PYTHON = "/usr/bin/python3"
OLD_PYTHON = "/root/.pyenv/versions/3.8.18/bin/python3.8"
PY39 = next(
    (
        p
        for p in (
            "/root/.pyenv/versions/3.9.18/bin/python3.9",
            "/usr/bin/python3.9",
            "/usr/local/bin/python3.9",
        )
        if os.path.exists(p)
    ),
    "python3.9 (not here)",
)


def _bare_bin(directory: Path, python: str) -> Path:
    directory.mkdir()
    os.symlink(python, directory / "python3")
    return directory


@pytest.fixture
def bare(ssh_keys, short_tmp: Path, server_home: Path) -> Iterator[HomeServer]:
    if not os.path.exists(SYSTEM_PYTHON):
        pytest.skip("no system python3")
    check = subprocess.run([SYSTEM_PYTHON, "-c", "import rtun"], capture_output=True)
    if check.returncode == 0:
        pytest.skip(f"{SYSTEM_PYTHON} has rtun installed")
    path = _bare_bin(short_tmp / "bin", SYSTEM_PYTHON)
    srv = HomeServer(ssh_keys, short_tmp / "bare-sshd", server_home, path=str(path)).start()
    yield srv
    srv.stop()


@pytest.fixture
def bare_laptop(short_tmp: Path, bare: HomeServer) -> Iterator[Laptop]:
    laptop = Laptop(short_tmp / "laptop", bare)
    daemon = RtunDaemon(laptop.home, laptop.home / "Downloads").start()
    yield laptop
    daemon.stop()


def _fake_client(version: str) -> bytes:
    """A zipapp that says it is another version."""
    buffer = io.BytesIO()
    buffer.write(b"#!/usr/bin/env python3\n")
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("__main__.py", f"print('rtun {version}')\n")
    return buffer.getvalue()


def test_install_on_a_server_with_only_python3_then_use_it(bare_laptop, server_home):
    probe = bare_laptop.rtun(["ssh", "srv", "command -v rtun pip pip3 mkdir; python3 -c 'import rtun'"])
    assert probe.returncode != 0 and probe.stdout == b""  # nothing of the kind there
    assert b"No module named 'rtun'" in probe.stderr and b"no rtun client found on srv" in probe.stderr
    first = bare_laptop.rtun(["install", "srv"])
    assert first.returncode == 0, first.stderr
    said = first.stdout.decode().splitlines()
    assert (
        said[0]
        == f"installed rtun {__version__} on srv: ~/.rtun/bin/rtun (python3 {_version(SYSTEM_PYTHON)})"
    )
    assert "`rtun ssh srv` logins find it at the prompt" in said[1] and ".rtun/bin" in said[1]
    target = server_home / ".rtun" / "bin" / "rtun"
    assert target.stat().st_mode & 0o777 == 0o755
    with zipfile.ZipFile(target) as installed:
        assert installed.comment == bundle.identity()  # this version, these sources
        assert (
            installed.read("rtun/client/pump.py")
            == Path(bundle.rtun.__file__).with_name("client").joinpath("pump.py").read_bytes()
        )
    shim = target.with_name("rtun-open")  # `rtun open` under the one-word name BROWSER takes
    assert shim.read_text() == installer.open_shim(str(target)) and shim.stat().st_mode & 0o777 == 0o755
    mtime = target.stat().st_mtime_ns
    shim.unlink()  # as after an install by a version without it
    again = bare_laptop.rtun(["install", "srv"])
    assert (
        again.stdout.decode().splitlines()[0]
        == f"rtun {__version__} on srv is up to date: ~/.rtun/bin/rtun (python3 {_version(SYSTEM_PYTHON)})"
    )
    assert target.stat().st_mtime_ns == mtime  # left as it was
    assert shim.read_text() == installer.open_shim(str(target))  # put back
    # A session finds it on PATH (at the end), and it reaches the daemon through the forward.
    used = bare_laptop.rtun(["ssh", "srv", "rtun --version && rtun ping && command -v rtun"])
    assert used.returncode == 0, used.stderr
    assert used.stdout.decode().splitlines() == [
        f"rtun {__version__}",
        f"daemon {__version__}",
        "OK PONG",
        str(target),
    ]
    assert b"no rtun client" not in used.stderr
    # So is rtun-open, which runs it (here refusing a scheme, which it does before connecting).
    refused = bare_laptop.rtun(["ssh", "srv", "rtun-open vscode://x"])
    assert refused.returncode == 4
    assert refused.stderr.decode().endswith(
        "rtun open: refusing to open a URL of scheme 'vscode': only http, https and mailto open\n"
    )


def test_ssh_install_upgrades_an_old_client_in_the_same_login(bare_laptop, server_home):
    target = server_home / ".rtun" / "bin" / "rtun"
    target.parent.mkdir(parents=True)
    target.write_bytes(_fake_client("0.0.1"))
    target.chmod(0o755)
    result = bare_laptop.rtun(["ssh", "srv", "--install", "rtun", "--version"])
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"rtun {__version__}\ndaemon {__version__}\n".encode()
    assert f"rtun ssh: upgraded rtun on srv from 0.0.1 to {__version__}" in result.stderr.decode()


def test_no_python3_or_an_old_one_is_a_one_line_failure(ssh_keys, short_tmp, server_home):
    cases = [("empty", None, "no python3 on srv")]
    if os.path.exists(OLD_PYTHON):
        cases.append(("old", OLD_PYTHON, "needs Python 3.9 or newer"))
    for name, python, expected in cases:
        path = short_tmp / f"bin-{name}"
        if python is None:
            path.mkdir()
        else:
            _bare_bin(path, python)
        srv = HomeServer(ssh_keys, short_tmp / f"sshd-{name}", server_home, path=str(path)).start()
        try:
            result = Laptop(short_tmp / f"laptop-{name}", srv).rtun(["install", "srv"])
        finally:
            srv.stop()
        assert result.returncode == 1, result.stderr
        lines = result.stderr.decode().splitlines()
        assert len(lines) == 1 and lines[0].startswith("rtun install: ") and expected in lines[0], lines


def _version(python: str) -> str:
    return subprocess.run(
        [python, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"], capture_output=True, text=True
    ).stdout.strip()


@pytest.mark.parametrize("python", [SYSTEM_PYTHON, PY39, sys.executable])
def test_the_bundle_runs_under_each_python_and_reaches_a_daemon(python, daemon, short_tmp):
    if not os.path.exists(python):
        pytest.skip(f"no {python}")
    app = short_tmp / "rtun.pyz"
    app.write_bytes(bundle.build())
    done = subprocess.run(
        [python, "-I", str(app), "ping", "-s", str(daemon.socket)],
        capture_output=True,
        timeout=60,
        cwd=str(short_tmp),
    )
    assert (done.returncode, done.stdout) == (0, b"OK PONG\n"), done.stderr
    names = zipfile.ZipFile(app).namelist()
    assert "rtun/client/pump.py" in names and not any(n.startswith("rtun/daemon/") for n in names)


def test_the_bundle_run_directly_starts_the_cli_without_runpy(daemon, short_tmp):
    # runpy, which starts a zip given to python3, imports importlib.util and contextlib: 2-3 ms
    app = short_tmp / "rtun"
    app.write_bytes(bundle.build())
    app.chmod(0o755)
    env = {"PATH": os.path.dirname(SYSTEM_PYTHON), "PYTHONPROFILEIMPORTTIME": "1"}
    done = subprocess.run(
        ["./rtun", "ping", "-s", str(daemon.socket)],
        capture_output=True,
        timeout=60,
        cwd=str(short_tmp),
        env=env,
    )
    assert (done.returncode, done.stdout) == (0, b"OK PONG\n"), done.stderr
    imported = [line.rpartition("|")[2].strip() for line in done.stderr.decode().splitlines()]
    assert "rtun.client.pump" in imported and "runpy" not in imported
    if _version(SYSTEM_PYTHON).split(".")[:2] == [str(n) for n in sys.version_info[:2]]:
        assert "zlib" not in imported  # the compiled modules are stored, not deflated
