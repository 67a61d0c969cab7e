"""`rtun config`: the file's path, and every setting in effect as the file would write it."""

from __future__ import annotations

import sys
from pathlib import Path

from rtun.daemon import config
from support.rtun import run_rtun

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib


def test_path_is_the_xdg_config_file(tmp_path: Path) -> None:
    done = run_rtun(["config", "--path"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode() == f"{tmp_path}/.config/rtun/config.toml\n"


def test_the_effective_settings_parse_back_to_the_same_config(tmp_path: Path, monkeypatch) -> None:
    """What `rtun config` prints is a valid config file that loads to the config in effect:
    the file's settings (marked) merged with every default."""
    file = tmp_path / ".config" / "rtun" / "config.toml"
    file.parent.mkdir(parents=True)
    file.write_text(
        '[actions]\npaste = true\n[view]\nopener = "my-open --new \\"x y\\""\n[server]\nsave_dir = "~/in"\n'
    )
    done = run_rtun(["config"], tmp_path)
    assert done.returncode == 0, done.stderr
    text = done.stdout.decode()
    assert text.startswith(f"# {file}\n")
    assert "paste = true  # from the file" in text and "notify = true\n" in text
    monkeypatch.setenv("HOME", str(tmp_path))  # the defaults as the command saw them
    printed = tmp_path / "printed.toml"
    printed.write_text(text)
    tomllib.loads(text)  # valid TOML
    assert config.load(str(printed)) == config.load(str(file))
    assert config.load(str(printed)).view_opener == ("my-open", "--new", "x y")


def test_a_bad_file_is_one_error_line(tmp_path: Path) -> None:
    file = tmp_path / ".config" / "rtun" / "config.toml"
    file.parent.mkdir(parents=True)
    file.write_text('[actions]\n"pastе" = true\n')  # a Cyrillic "е"
    done = run_rtun(["config"], tmp_path)
    assert done.returncode == 1
    err = done.stderr.decode()
    assert err.count("\n") == 1 and err.startswith("rtun config: ") and "unknown setting" in err
