"""README's install command, run as a new non-root user on the system's Python (on Debian 12 an
externally managed one, where plain `pip install` is refused), then `rtun` and `rtun-open`
found in a new login shell of that user."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from support.users import system_user

ROOT = Path(__file__).resolve().parent.parent


def readme_install_line() -> str:
    """The install command in README's "Install and run" block, as a user would copy it."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Install and run", 1)[1].split("\n## ", 1)[0]
    lines = [
        line.split("#", 1)[0].strip()
        for line in re.findall(r"```sh\n(.*?)```", section, re.S)[0].splitlines()
    ]
    found = [line for line in lines if "install" in line]
    assert len(found) == 1, found
    return found[0]


def checkout_for(user_home: Path, name: str) -> Path:
    """The source as the user would have it: a copy they own."""
    target = user_home / "rtun"
    shutil.copytree(
        ROOT,
        target,
        ignore=shutil.ignore_patterns(
            ".venv",
            ".git",
            "__pycache__",
            "*.egg-info",
            ".pytest_cache",
            ".mypy_cache",
            ".ruff_cache",
            "results",
        ),
    )
    shutil.chown(target, name, name)
    for path in target.rglob("*"):
        shutil.chown(path, name, name)
    return target


@pytest.mark.parametrize("shell", ["/bin/bash", "/usr/bin/zsh"])
def test_readme_install_puts_rtun_on_a_new_login_shells_path(shell: str) -> None:
    python = shutil.which("python3", path="/usr/bin")
    if python is None:
        pytest.skip("no system python3 in /usr/bin")
    line = readme_install_line()
    with system_user(shell) as user:
        checkout_for(user.home, user.name)
        installed = user.login(f"cd rtun && PYTHON={python} {line}")
        assert installed.returncode == 0, installed.stderr
        found = user.login("rtun --version && command -v rtun rtun-open && rtun-open --help && man -w rtun")
        assert found.returncode == 0, found.stderr
        assert found.stdout.splitlines()[0].startswith("rtun ")
        assert f"{user.home}/.local/bin/rtun\n" in found.stdout
        assert f"{user.home}/.local/bin/rtun-open\n" in found.stdout
        assert found.stdout.rstrip().endswith("/man1/rtun.1")  # `man rtun` finds the page
        again = user.login(f"cd rtun && PYTHON={python} {line}")  # an upgrade: the same command again
        assert again.returncode == 0, again.stderr
        assert user.login("rtun --version").returncode == 0


def test_system_python_refuses_plain_pip_install() -> None:
    """Why the install goes through a virtual environment: the baseline the test above beats."""
    marker = list(Path("/usr/lib").glob("python3*/EXTERNALLY-MANAGED"))
    if not marker:
        pytest.skip("the system Python here is not externally managed")
    with system_user() as user:
        checkout_for(user.home, user.name)
        refused = user.login("cd rtun && /usr/bin/python3 -m pip install --user .")
        assert refused.returncode != 0
        assert "externally-managed-environment" in refused.stdout + refused.stderr
