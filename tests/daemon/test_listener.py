"""daemon/listener.py in process, on real UNIX sockets: what bind() replaces and what it refuses,
the mode from the first moment, and removal only while the socket is still ours."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path
from typing import Iterator, List

import pytest

from rtun import paths
from rtun.daemon.listener import Listener, SocketInUseError, bind, prepare_directory
from rtun.errors import RtunError


@pytest.fixture
def private(short_tmp: Path) -> Path:
    directory = short_tmp / "p"
    directory.mkdir(mode=0o700)
    return directory


@pytest.fixture
def listeners() -> Iterator[List[Listener]]:
    made: List[Listener] = []
    yield made
    for listener in made:
        listener.sock.close()


def _accepts(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _stale(path: Path) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.close()


def test_bind_listens_with_mode_0600_and_leaves_nothing_beside_it(private: Path, listeners) -> None:
    old = os.umask(0)  # the widest umask: the mode must not come from it
    try:
        listener = bind(str(private / "rtun.sock"))
    finally:
        os.umask(old)
    listeners.append(listener)
    st = os.lstat(private / "rtun.sock")
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert (listener.inode, listener.device) == (st.st_ino, st.st_dev)
    assert [p.name for p in private.iterdir()] == ["rtun.sock"]
    assert _accepts(private / "rtun.sock")


def test_a_relative_path_is_made_absolute(private: Path, listeners, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(private)
    listener = bind("rel.sock")
    listeners.append(listener)
    assert listener.path == str(private / "rel.sock") and listener.is_still_ours()


def test_a_stale_socket_is_replaced(private: Path, listeners) -> None:
    _stale(private / "rtun.sock")
    before = os.lstat(private / "rtun.sock").st_ino
    assert not _accepts(private / "rtun.sock")
    listeners.append(bind(str(private / "rtun.sock")))
    assert os.lstat(private / "rtun.sock").st_ino != before
    assert _accepts(private / "rtun.sock")


def test_a_live_socket_is_never_replaced(private: Path, listeners) -> None:
    first = bind(str(private / "rtun.sock"))
    listeners.append(first)
    with pytest.raises(SocketInUseError, match="already in use"):
        bind(str(private / "rtun.sock"))
    assert first.is_still_ours() and _accepts(private / "rtun.sock")


@pytest.mark.parametrize("kind", ["file", "directory", "link to a live socket", "dangling link"])
def test_what_is_not_a_socket_is_refused_and_kept(private: Path, listeners, kind: str) -> None:
    target = private / "rtun.sock"
    if kind == "file":
        target.write_text("precious")
    elif kind == "directory":
        target.mkdir()
    elif kind == "link to a live socket":
        listeners.append(bind(str(private / "real.sock")))
        target.symlink_to(private / "real.sock")
    else:
        target.symlink_to(private / "nowhere")
    before = os.lstat(target)
    with pytest.raises(RtunError, match="not a socket"):
        bind(str(target))
    after = os.lstat(target)
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)


def test_a_path_too_long_for_sun_path_is_a_clear_error(private: Path) -> None:
    path = str(private / ("s" * paths.SUN_PATH_MAX))
    with pytest.raises(RtunError, match="too long"):
        bind(path)
    assert list(private.iterdir()) == []


def test_the_longest_path_that_fits_is_bound(private: Path, listeners) -> None:
    # Its temporary name would not fit: bind() falls back to a short one.
    directory = str(private) + "/"
    path = directory + "s" * (paths.SUN_PATH_MAX - 1 - len(os.fsencode(directory)))
    assert paths.socket_path_fits(path)
    listeners.append(bind(path))
    assert _accepts(Path(path)) and [p.name for p in private.iterdir()] == [os.path.basename(path)]


def test_a_short_name_at_the_longest_path_is_bound(short_tmp: Path, listeners) -> None:
    base = str(short_tmp) + "/"
    directory = base + "d" * (paths.SUN_PATH_MAX - 1 - len(os.fsencode(base)) - 2)  # room for "/s"
    os.mkdir(directory, 0o700)
    path = directory + "/s"
    assert paths.socket_path_fits(path)
    listeners.append(bind(path))
    assert _accepts(Path(path))


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o1777, 0o775])
def test_a_socket_directory_others_may_write_to_is_refused(short_tmp: Path, mode: int) -> None:
    directory = short_tmp / "shared"
    directory.mkdir()
    directory.chmod(mode)
    with pytest.raises(RtunError, match="writable by other users"):
        bind(str(directory / "rtun.sock"))
    assert list(directory.iterdir()) == []


def test_prepare_directory_refuses_what_is_missing_or_not_a_directory(short_tmp: Path) -> None:
    with pytest.raises(RtunError, match="socket directory"):
        prepare_directory(str(short_tmp / "missing"))  # only ~/.rtun is ever created
    assert not (short_tmp / "missing").exists()
    (short_tmp / "file").write_text("")
    with pytest.raises(RtunError, match="not a directory"):
        prepare_directory(str(short_tmp / "file"))


def test_the_rtun_directory_is_made_private(short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(short_tmp))
    old = os.umask(0)
    try:
        prepare_directory(paths.rtun_dir())
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(short_tmp / ".rtun").st_mode) == 0o700


def test_remove_unlinks_only_the_socket_that_is_still_ours(private: Path, listeners) -> None:
    path = private / "rtun.sock"
    first = bind(str(path))
    listeners.append(first)
    first.sock.close()
    # Another daemon took the path meanwhile (the first one's socket had gone stale).
    second = bind(str(path))
    listeners.append(second)
    assert not first.is_still_ours() and second.is_still_ours()
    first.remove()
    assert _accepts(path)
    second.remove()
    assert not os.path.lexists(path) and not second.is_still_ours()
    second.remove()  # a second removal of a gone socket is harmless
