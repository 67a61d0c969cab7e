"""paths.py: the default locations under a given HOME and XDG settings, the sun_path bound (checked
against real sockets), and socket discovery over real files (hostile names included)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtun import paths

HEX = "0123456789abcdef"
LAPTOP = "0123456789ab"


@pytest.fixture
def home(short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HOME points at a fresh directory; no XDG setting is inherited."""
    for name in ("XDG_CONFIG_HOME", "XDG_DOWNLOAD_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(short_tmp))
    return short_tmp


def test_locations_follow_home_and_xdg_config_home(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert paths.default_socket() == str(home / ".rtun" / "rtun.sock")
    assert paths.default_log() == str(home / ".rtun" / "rtun.log")
    assert paths.config_file() == str(home / ".config" / "rtun" / "config.toml")
    monkeypatch.setenv("XDG_CONFIG_HOME", "")  # set but empty means unset (XDG base directory spec)
    assert paths.config_file() == str(home / ".config" / "rtun" / "config.toml")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "cfg"))
    assert paths.config_file() == str(home / "cfg" / "rtun" / "config.toml")


def _user_dirs(home: Path, text: str) -> None:
    (home / ".config").mkdir(exist_ok=True)
    (home / ".config" / "user-dirs.dirs").write_text(text)


def test_save_dir_is_downloads_without_any_setting(home: Path) -> None:
    assert paths.default_save_dir() == str(home / "Downloads")


def test_save_dir_comes_from_user_dirs_with_home_expanded(home: Path) -> None:
    _user_dirs(
        home,
        '# written by xdg-user-dirs-update\nXDG_DESKTOP_DIR="$HOME/Desktop"\n'
        'XDG_DOWNLOAD_DIR="$HOME/Téléchargements"\n',
    )
    assert paths.default_save_dir() == str(home / "Téléchargements")
    _user_dirs(home, 'XDG_DOWNLOAD_DIR="/srv/incoming"\n')
    assert paths.default_save_dir() == "/srv/incoming"


@pytest.mark.parametrize(
    "line",
    [
        'XDG_DOWNLOAD_DIR="$HOME/"',
        'XDG_DOWNLOAD_DIR="$HOME"',
        "XDG_DOWNLOAD_DIR=",
        "XDG_DOWNLOAD_DIR",
        "# XDG_DOWNLOAD_DIR=/elsewhere",
    ],
)
def test_a_disabled_or_absent_download_dir_means_downloads(home: Path, line: str) -> None:
    # xdg-user-dirs writes the home itself to say "disabled": files must not land in ~ itself.
    _user_dirs(home, line + "\n")
    assert paths.default_save_dir() == str(home / "Downloads")


def test_the_environment_wins_over_user_dirs(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _user_dirs(home, 'XDG_DOWNLOAD_DIR="$HOME/FromFile"\n')
    monkeypatch.setenv("XDG_DOWNLOAD_DIR", str(home / "FromEnv"))
    assert paths.default_save_dir() == str(home / "FromEnv")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=300))
def test_any_user_dirs_text_gives_a_path(home: Path, text: str) -> None:
    # Whatever the file says, the daemon starts with some directory, never the home itself.
    (home / ".config").mkdir(exist_ok=True)
    (home / ".config" / "user-dirs.dirs").write_bytes(text.encode("utf-8"))
    found = paths.default_save_dir()
    assert found and found.rstrip("/") != str(home)


def test_a_user_dirs_file_in_another_encoding_still_gives_a_path(home: Path) -> None:
    _user_dirs(home, "")
    (home / ".config" / "user-dirs.dirs").write_bytes(b'XDG_DOWNLOAD_DIR="$HOME/T\xe9l\xe9chargements"\n')
    found = paths.default_save_dir()
    assert found.startswith(str(home) + "/T")


def _bindable(path: str) -> bool:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
    except OSError:
        return False
    finally:
        sock.close()
    os.unlink(path)
    return True


@pytest.mark.parametrize("letter", ["s", "é"])  # one byte or two: the bound counts bytes
def test_socket_path_fits_agrees_with_the_kernel(short_tmp: Path, letter: str) -> None:
    directory = str(short_tmp) + "/"
    for length in range(paths.SUN_PATH_MAX - 4, paths.SUN_PATH_MAX + 3):
        name = letter * ((length - len(directory)) // len(letter.encode()))
        path = directory + name
        assert paths.socket_path_fits(path) == _bindable(path), (len(os.fsencode(path)), path)


def _socket_file(path: Path, mtime: float) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.close()  # sshd leaves such files behind: discovery lists them all the same
    os.utime(path, (mtime, mtime), follow_symlinks=False)


def test_candidates_are_the_rtun_sockets_newest_first(home: Path) -> None:
    rtun = home / ".rtun"
    rtun.mkdir()
    old = paths.session_socket_name(LAPTOP, "node1", "aaaa")
    new = paths.session_socket_name("ba9876543210", "node1", "bbbb")
    _socket_file(rtun / old, 1_000_000)
    _socket_file(rtun / new, 2_000_000)
    _socket_file(rtun / "rtun.sock", 1_500_000)
    (rtun / "rtun.log").write_text("not a socket name")
    (rtun / "other.sock").write_text("")
    os.symlink(rtun / "gone", rtun / "rtun.sock.dangling")  # its stat fails: skipped, never removed
    assert paths.socket_candidates() == [str(rtun / new), str(rtun / "rtun.sock"), str(rtun / old)]
    assert os.path.lexists(rtun / "rtun.sock.dangling")


def test_no_rtun_directory_means_no_candidates(home: Path) -> None:
    assert paths.socket_candidates() == []
    (home / ".rtun").write_text("a file where the directory should be")
    assert paths.socket_candidates() == []


hosts = st.text(HEX + "ghijklmnopqrstuvwxyz-", min_size=1, max_size=30)
nonces = st.text(HEX, min_size=1, max_size=16)


@given(st.text(HEX, min_size=12, max_size=12), hosts, nonces)
def test_a_session_socket_name_gives_its_laptop_back(laptop: str, host: str, nonce: str) -> None:
    name = paths.session_socket_name(laptop, host, nonce)
    assert paths.laptop_of("/home/u/.rtun/" + name) == laptop


@pytest.mark.parametrize(
    "name",
    [
        "rtun.sock",
        "rtun.sock.0123456789ab",
        "rtun.sock.0123456789AB.h.n",
        "rtun.sock.0123456789a.h.n",
        "rtun.sock.0123456789abc.h.n",
        "rtun.sock.0123456789ag.h.n",
        "rtun.socket.0123456789ab.h.n",
        "xrtun.sock.0123456789ab.h.n",
        "rtun.sock..h.n",
        "rtun.sock.０１２３４５６７８９ab.h.n",
    ],
)
def test_names_that_are_not_session_sockets_have_no_laptop(name: str) -> None:
    assert paths.laptop_of("/home/u/.rtun/" + name) is None


@given(st.text(max_size=80))
def test_laptop_of_any_name_is_none_or_twelve_hex_digits_of_it(name: str) -> None:
    laptop = paths.laptop_of(name)
    assert laptop is None or (len(laptop) == 12 and set(laptop) <= set(HEX) and f".{laptop}." in name)


sockets = st.lists(
    st.one_of(
        st.builds(
            lambda laptop, n: paths.session_socket_name(laptop, "h", str(n)),
            st.sampled_from([LAPTOP, "ba9876543210", "ffffffffffff"]),
            st.integers(0, 99),
        ),
        st.text(max_size=20),
    ),
    max_size=12,
)


@given(sockets, st.none() | st.sampled_from([LAPTOP, "ba9876543210", "000000000000"]))
def test_same_laptop_first_is_a_stable_partition(candidates: list, laptop: object) -> None:
    ordered = paths.same_laptop_first(candidates, laptop)  # type: ignore[arg-type]
    assert sorted(ordered) == sorted(candidates)  # nothing added, nothing lost
    if laptop is None:
        assert ordered == candidates
        return
    mine = [c for c in candidates if paths.laptop_of(c) == laptop]
    assert ordered == mine + [c for c in candidates if paths.laptop_of(c) != laptop]


def test_tilde_shortens_only_what_is_in_the_home_directory(home: Path) -> None:
    assert paths.tilde(str(home / ".rtun" / "rtun.log")) == "~/.rtun/rtun.log"
    assert paths.tilde(str(home)) == "~"
    assert paths.tilde(str(home) + "x/file") == str(home) + "x/file"  # a sibling, not inside
    assert paths.tilde("/etc/passwd") == "/etc/passwd"
