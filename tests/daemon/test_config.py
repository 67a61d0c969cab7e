"""The daemon's settings: defaults, then the TOML file, then flags; bad input is one clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from rtun.daemon import config
from rtun.errors import RtunError


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return str(path)


def test_the_file_then_the_flags(tmp_path: Path) -> None:
    path = write(
        tmp_path, '[server]\nidle_timeout = 5\nsave_dir = "~/in"\n[view]\nopener = "my-open --new"\n'
    )
    settings = config.load(path, save_dir=str(tmp_path / "flag"), verbose=None)
    assert settings.idle_timeout == 5.0 and isinstance(settings.idle_timeout, float)
    assert settings.save_dir == str(tmp_path / "flag")  # the flag wins
    assert settings.view_opener == ("my-open", "--new")
    assert settings.verbose is False  # None means "not given"


def test_a_missing_file_means_the_defaults(tmp_path: Path) -> None:
    assert config.load(str(tmp_path / "none.toml")).max_connections == 256


@pytest.mark.parametrize(
    "text, message",
    [
        ("[server]\nport = 22\n", "unknown setting"),
        ("[server]\nidle_timeout = -1\n", "non-negative number"),
        ("[server]\nverbose = 1\n", "true or false"),
        ("[view]\nallow_types = [1]\n", "list of strings"),
        ("server = 1\n", "must be a table"),
        ("[server\n", "cannot read config file"),
    ],
)
def test_bad_settings_are_errors_that_say_where(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(RtunError, match=message):
        config.load(write(tmp_path, text))


def test_paths_are_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = config.load(str(tmp_path / "none.toml"), save_dir="rel")
    assert settings.save_dir == str(tmp_path / "rel")


def test_the_tunnel_commands_tables_are_left_to_them(tmp_path: Path) -> None:
    """[hosts] (rtun hosts' relays) and [tunnel] share the file; the daemon reads past them."""
    path = tmp_path / "config.toml"
    path.write_text(
        '[hosts]\nrelays = ["r1", "r2"]\n\n[tunnel]\nrelays = ["r1"]\n\n[server]\nverbose = true\n'
    )
    assert config.load(str(path)).verbose is True
