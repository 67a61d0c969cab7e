"""Faults, end to end through the real sshd and ``ssh -R`` forward: a transfer broken by the
forward, the client or the daemon dying; a save disk that fills, vanishes, is a link or turns
read-only; hundreds of stale sockets beside the live one.

Each time: nothing partial under a final name, no leftover once the daemon has had its chance
to clean up, a clear one-line refusal (never "internal error"), and the daemon still serving.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Callable, Iterator, List

import pytest

from support.load import (
    MIB,
    FreeSpaceWatch,
    StdinSend,
    Tmpfs,
    dead_socket,
    free_bytes,
    part_with_data,
    parts_below,
)
from support.raw import RawClient
from support.rtun import RtunDaemon, answers_ping, run_rtun
from support.sshd import Forward, SshServer
from support.wait import wait_until

HELD = 1 * MIB  # bytes a held transfer has written to its .part file before the fault

Daemons = Callable[..., RtunDaemon]
Forwards = Callable[..., Forward]
Senders = Callable[..., StdinSend]
Mounts = Callable[[Path, str], Tmpfs]


# ---- fixtures -------------------------------------------------------------------------------------


@pytest.fixture
def daemons(mounts: Mounts, start_daemon: Daemons) -> Daemons:
    """``daemons(config="toml", home=..., socket_path=...)``: tests/conftest.py's factory, asked
    for after ``mounts`` so that its daemons stop before a tmpfs of the test is unmounted."""
    return start_daemon


@pytest.fixture
def forwards(sshd: SshServer, remote_home: Path) -> Iterator[Forwards]:
    """``forwards(local_socket, name)``: an ``ssh -R`` of ~remote/.rtun/NAME to it, closed afterwards."""
    opened: List[Forward] = []

    def start(local: Path, name: str = "rtun.sock") -> Forward:
        fwd = Forward(sshd, remote_home / ".rtun" / name, local).wait_up()
        opened.append(fwd)
        return fwd

    yield start
    for fwd in opened:
        fwd.close()


@pytest.fixture
def senders() -> Iterator[Senders]:
    """``senders(remote_home, dest)``: a StdinSend, killed after the test if still running."""
    started: List[StdinSend] = []

    def start(remote_home: Path, dest: str) -> StdinSend:
        sender = StdinSend(remote_home, dest)
        started.append(sender)
        return sender

    yield start
    for sender in started:
        sender.kill()


# ---- helpers --------------------------------------------------------------------------------------


def hold_mid_transfer(sender: StdinSend, save_dir: Path) -> Path:
    """Feed the sender until the daemon has written ``HELD`` bytes of it; the .part file."""
    assert sender.feed(4 * MIB)  # the client sends stdin in chunks of up to 1 MiB
    return wait_until(
        lambda: part_with_data(save_dir, HELD),
        timeout=20,
        what="the daemon to write the held transfer's .part file",
    )


def send_file(remote_home: Path, path: Path, dest: str) -> "RunResult":
    result = run_rtun(["send", str(path), "--to", dest], remote_home, timeout=60)
    return RunResult(
        result.returncode, result.stdout.decode(errors="replace"), result.stderr.decode(errors="replace")
    )


class RunResult:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"exit {self.code}, stdout {self.out!r}, stderr {self.err!r}"


def assert_one_line_refusal(code: int, err: str, command: str = "send") -> None:
    assert code == 4, f"exit {code}: {err!r}"
    assert err.startswith(f"rtun {command}: ") and err.count("\n") == 1, err
    assert "internal error" not in err, err


def assert_serving(daemon: RtunDaemon, remote_home: Path) -> None:
    """Alive, answers at once locally and through the forward, and never logged a traceback."""
    assert daemon.alive(), daemon.log_text()[-3000:]
    assert answers_ping(daemon.socket)
    result = run_rtun(["ping"], remote_home, timeout=20)
    assert result.returncode == 0 and result.stdout == b"OK PONG\n", result.stderr
    assert "Traceback" not in daemon.log_text(), daemon.log_text()[-3000:]


def assert_next_send_works(remote_home: Path, save_dir: Path, name: str) -> None:
    source = remote_home / f"{name}.src"
    data = os.urandom(300_000)
    source.write_bytes(data)
    result = send_file(remote_home, source, f"after/{name}")
    assert result.code == 0, result
    assert (save_dir / "after" / name).read_bytes() == data


def nothing_partial(save_dir: Path, final: Path) -> bool:
    return not parts_below(save_dir) and not os.path.lexists(final)


def small_file(directory: Path, name: str, size: int) -> Path:
    path = directory / name
    path.write_bytes(os.urandom(size))
    return path


# ---- a transfer broken in the middle ------------------------------------------------------------


def test_forward_killed_mid_transfer(
    daemons: Daemons, forwards: Forwards, senders: Senders, remote_home: Path, save_dir: Path
) -> None:
    daemon = daemons()
    fwd = forwards(daemon.socket)
    sender = senders(remote_home, "held/by-forward.bin")
    hold_mid_transfer(sender, save_dir)

    fwd.process.kill()  # the ssh -R dies: every channel through it with it
    fwd.process.wait(timeout=10)
    sender.feed(1 * MIB)
    code, _, err = sender.finish()
    assert code == 5, f"exit {code}: {err!r}"  # the connection was lost in the middle
    assert err.count("\n") == 1, err

    wait_until(
        lambda: nothing_partial(save_dir, save_dir / "held" / "by-forward.bin"),
        timeout=15,
        what="the daemon to delete the broken transfer's .part file",
    )
    assert daemon.alive() and answers_ping(daemon.socket)
    # sshd leaves the dead forward's socket behind: log in again on a fresh name.
    forwards(daemon.socket, "rtun.sock.2")
    assert_serving(daemon, remote_home)
    assert_next_send_works(remote_home, save_dir, "after-forward.bin")


def test_client_killed_mid_transfer(
    daemons: Daemons, forwards: Forwards, senders: Senders, remote_home: Path, save_dir: Path
) -> None:
    daemon = daemons()
    forwards(daemon.socket)
    sender = senders(remote_home, "held/by-client.bin")
    hold_mid_transfer(sender, save_dir)

    sender.kill()  # SIGKILL: no goodbye from the client
    wait_until(
        lambda: nothing_partial(save_dir, save_dir / "held" / "by-client.bin"),
        timeout=15,
        what="the daemon to delete the broken transfer's .part file",
    )
    assert_serving(daemon, remote_home)
    assert_next_send_works(remote_home, save_dir, "after-client.bin")


def test_daemon_killed_mid_transfer_then_the_next_start_cleans_up(
    daemons: Daemons, forwards: Forwards, senders: Senders, remote_home: Path, save_dir: Path
) -> None:
    daemon = daemons()
    forwards(daemon.socket)
    sender = senders(remote_home, "held/by-daemon.bin")
    part = hold_mid_transfer(sender, save_dir)

    assert daemon.process is not None
    daemon.process.kill()
    daemon.process.wait(timeout=10)
    sender.feed(1 * MIB)
    code, _, err = sender.finish()
    assert code == 5, f"exit {code}: {err!r}"
    assert err.count("\n") == 1, err
    assert part.exists()  # what SIGKILL leaves: a temporary file, and no final name
    assert not (save_dir / "held" / "by-daemon.bin").exists()

    restarted = daemons()  # same socket path: the forward reaches it again
    wait_until(
        lambda: not parts_below(save_dir),
        timeout=15,
        what="the new daemon to remove the dead one's .part file",
    )
    assert not (save_dir / "held" / "by-daemon.bin").exists()
    assert_serving(restarted, remote_home)
    assert_next_send_works(remote_home, save_dir, "after-daemon.bin")


def test_a_leftover_named_with_a_live_unrelated_pid_is_removed_at_start(
    daemons: Daemons, forwards: Forwards, remote_home: Path, save_dir: Path
) -> None:
    """After a reboot the PID in a leftover's name may be any live process's. Leftovers are
    told apart by the lock a live daemon holds on its temporary files, not by the PID alone.
    (Fails while the daemon still goes by the PID in the name.)"""
    (save_dir / "sub").mkdir(parents=True)
    leftovers = [
        save_dir / f".rtun-{os.getpid()}-{os.urandom(6).hex()}.part",  # this test process: alive
        save_dir / "sub" / f".rtun-1-{os.urandom(6).hex()}.part",  # init: alive
    ]
    for path in leftovers:
        path.write_bytes(b"half a file")
    bystanders = [save_dir / ".rtun-notes.txt", save_dir / "sub" / "keep.part", save_dir / "a.part.txt"]
    for path in bystanders:
        path.write_bytes(b"mine")

    daemon = daemons()
    forwards(daemon.socket)
    try:
        wait_until(
            lambda: not any(p.exists() for p in leftovers),
            timeout=10,
            what="the daemon to remove leftovers named with live PIDs",
        )
    except AssertionError:
        raise AssertionError(
            f"still there: {[p.name for p in leftovers if p.exists()]} "
            "(leftovers recognised by PID, not by the daemon's lock?)"
        ) from None
    assert all(p.read_bytes() == b"mine" for p in bystanders)
    assert_serving(daemon, remote_home)


def test_a_second_daemon_leaves_a_live_transfer_alone(
    daemons: Daemons, forwards: Forwards, senders: Senders, remote_home: Path, save_dir: Path, short_tmp: Path
) -> None:
    """Another daemon started on the same save directory sweeps leftovers, but not the file
    a live daemon is writing: its transfer completes."""
    first = daemons()
    forwards(first.socket)
    sender = senders(remote_home, "live.bin")  # in the save directory itself
    part = hold_mid_transfer(sender, save_dir)
    # A real leftover one level down: the sweep walks top-down, so once this one is gone the
    # live file above it has been looked at.
    decoy = save_dir / "zz" / f".rtun-999999-{os.urandom(6).hex()}.part"
    decoy.parent.mkdir()
    decoy.write_bytes(b"dead")

    second_home = short_tmp / "second"
    second = daemons(home=second_home, socket_path=second_home / "s.sock")
    wait_until(lambda: not decoy.exists(), timeout=15, what="the second daemon's sweep")
    assert part.exists(), "the second daemon removed a live transfer's file"
    assert second.alive() and first.alive()

    assert sender.feed(2 * MIB)
    code, out, err = sender.finish()
    assert code == 0, f"exit {code}: {err!r}"
    saved = save_dir / "live.bin"
    assert out.strip() == str(saved)
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == sender.digest.hexdigest()
    assert not parts_below(save_dir)
    assert answers_ping(first.socket)


# ---- the save disk ------------------------------------------------------------------------------


def test_a_full_save_disk_is_a_clear_refusal(
    daemons: Daemons, forwards: Forwards, senders: Senders, mounts: Mounts, remote_home: Path, save_dir: Path
) -> None:
    mounts(save_dir, "8m")
    daemon = daemons(config="[send]\nmin_free_bytes = 1048576\n")
    forwards(daemon.socket)
    empty = free_bytes(save_dir)

    # Declared size: refused before the first byte.
    big = small_file(remote_home, "big.bin", 12 * MIB)
    result = send_file(remote_home, big, "big.bin")
    assert_one_line_refusal(result.code, result.err)
    assert "space" in result.err, result.err
    assert nothing_partial(save_dir, save_dir / "big.bin")

    # No size (standard input): the disk fills in the middle.
    sender = senders(remote_home, "stream.bin")
    for _ in range(6):
        if not sender.feed(2 * MIB):
            break
    code, _, err = sender.finish()
    assert_one_line_refusal(code, err)
    assert "space" in err, err
    wait_until(
        lambda: nothing_partial(save_dir, save_dir / "stream.bin"),
        timeout=15,
        what="the daemon to delete what it could not finish",
    )
    wait_until(
        lambda: free_bytes(save_dir) >= empty - 64 * 1024,
        timeout=10,
        what="the space of the broken file to be given back",
    )

    assert_serving(daemon, remote_home)
    assert_next_send_works(remote_home, save_dir, "fits.bin")  # the disk is usable again


def test_two_uploads_that_only_fit_one_at_a_time_keep_the_reserve(
    daemons: Daemons, forwards: Forwards, mounts: Mounts, remote_home: Path, save_dir: Path
) -> None:
    """Each passes the free-space check alone; together they would eat into the reserve. The
    daemon's accounting must refuse one of them. (Fails until space is accounted across
    concurrent transfers.)"""
    reserve = 2 * MIB
    size = 7 * MIB // 2  # 3.5 MiB: 3.5 + 2 fits in 8 MiB, 3.5 + 3.5 + 2 does not
    mounts(save_dir, "8m")
    daemon = daemons(config=f"[send]\nmin_free_bytes = {reserve}\n")
    fwd = forwards(daemon.socket)
    data_a = os.urandom(size)
    second = small_file(remote_home, "b.bin", size)

    with FreeSpaceWatch(save_dir) as watch:
        with RawClient(fwd.remote, timeout=30) as raw:  # upload A, held after its first MiB
            assert raw.request(b"PING\r\n") == b"OK PONG\r\n"
            ready = raw.request(b"SEND %d a.bin\r\n" % size)
            assert ready == b"READY\r\n", ready
            raw.send(data_a[:HELD])
            wait_until(lambda: part_with_data(save_dir, HELD), timeout=15, what="upload A to be written")

            result_b = send_file(remote_home, second, "b.bin")  # upload B, while A is held

            try:
                raw.send(data_a[HELD:] + hashlib.sha256(data_a).hexdigest().encode() + b"\r\n")
            except OSError:
                pass  # refused: its last line says why
            reply_a = raw.line()

    a_ok, b_ok = reply_a == b"OK\r\n", result_b.code == 0
    assert not (a_ok and b_ok), (
        f"both uploads accepted: free space fell to {watch.lowest} bytes, reserve {reserve}"
    )
    if not b_ok:
        assert_one_line_refusal(result_b.code, result_b.err)
        assert "space" in result_b.err, result_b
        assert not (save_dir / "b.bin").exists()
    if not a_ok:
        assert reply_a.startswith(b"ERROR 109 ") and reply_a.endswith(b"\r\n"), reply_a
        assert not (save_dir / "a.bin").exists()
    assert a_ok or b_ok, f"both refused: A {reply_a!r}, B {result_b}"
    assert watch.lowest >= reserve, f"free space fell to {watch.lowest} bytes, below the reserve {reserve}"
    wait_until(lambda: not parts_below(save_dir), timeout=10, what="no .part file left")
    assert_serving(daemon, remote_home)


def test_save_directory_removed_while_the_daemon_runs(
    daemons: Daemons, forwards: Forwards, remote_home: Path, save_dir: Path
) -> None:
    daemon = daemons()
    forwards(daemon.socket)
    assert_next_send_works(remote_home, save_dir, "before.bin")
    shutil.rmtree(save_dir)

    for attempt in range(2):  # the next send, and the one after it
        data = os.urandom(100_000)
        source = remote_home / f"gone{attempt}.bin"
        source.write_bytes(data)
        result = send_file(remote_home, source, f"gone{attempt}.bin")
        if result.code == 0:  # recovered: the save directory is back, with the file in it
            assert (save_dir / f"gone{attempt}.bin").read_bytes() == data
            assert result.out.strip() == str(save_dir / f"gone{attempt}.bin")
        else:
            assert_one_line_refusal(result.code, result.err)
        assert daemon.alive()
    assert not (save_dir.exists() and parts_below(save_dir))
    assert_serving(daemon, remote_home)


def test_save_directory_that_is_a_link_to_a_directory(
    daemons: Daemons, forwards: Forwards, remote_home: Path, save_dir: Path, local_home: Path
) -> None:
    target = local_home / "real-downloads"
    target.mkdir()
    save_dir.symlink_to(target, target_is_directory=True)
    daemon = daemons()
    fwd = forwards(daemon.socket)

    tree = remote_home / "tree"
    (tree / "sub").mkdir(parents=True)
    files = {"tree/a.bin": os.urandom(5000), "tree/sub/b.bin": os.urandom(70_000)}
    for rel, data in files.items():
        (remote_home / rel).write_bytes(data)
    result = run_rtun(["send", str(tree)], remote_home)
    assert result.returncode == 0, result.stderr
    single = small_file(remote_home, "single.bin", 123_456)
    assert send_file(remote_home, single, "x/single.bin").code == 0
    with RawClient(fwd.remote) as raw:  # and a v1 SEND
        assert raw.request(b"PING\r\n") == b"OK PONG\r\n"
        assert raw.request(b"SEND 3 v1.txt\r\n") == b"READY\r\n"
        raw.send(b"hi\n" + hashlib.sha256(b"hi\n").hexdigest().encode() + b"\r\n")
        assert raw.line() == b"OK\r\n"

    assert save_dir.is_symlink()  # still a link: nothing replaced it
    for rel, data in files.items():
        assert (target / rel).read_bytes() == data
    assert (target / "x" / "single.bin").read_bytes() == single.read_bytes()
    assert (target / "v1.txt").read_bytes() == b"hi\n"
    assert_serving(daemon, remote_home)


def test_read_only_save_disk_is_a_clear_refusal(
    daemons: Daemons, forwards: Forwards, mounts: Mounts, remote_home: Path, save_dir: Path
) -> None:
    disk = mounts(save_dir, "128m")  # room for the default 64 MiB reserve
    daemon = daemons()
    fwd = forwards(daemon.socket)
    assert_next_send_works(remote_home, save_dir, "while-rw.bin")
    disk.remount("ro")

    source = small_file(remote_home, "ro.bin", 200_000)
    for dest in ("ro.bin", "new/dir/ro.bin"):
        result = send_file(remote_home, source, dest)
        assert_one_line_refusal(result.code, result.err)
    with RawClient(fwd.remote) as raw:
        assert raw.request(b"PING\r\n") == b"OK PONG\r\n"
        reply = raw.request(b"SEND 3 v1.txt\r\n")
        if reply == b"READY\r\n":
            raw.send(b"hi\n" + hashlib.sha256(b"hi\n").hexdigest().encode() + b"\r\n")
            reply = raw.line()
        assert reply.startswith(b"ERROR ") and reply.endswith(b"\r\n"), reply
        assert not reply.startswith(b"ERROR 105 "), reply  # 105: internal error
    assert_serving(daemon, remote_home)

    disk.remount("rw")  # and once it is writable again, sends work
    assert_next_send_works(remote_home, save_dir, "rw-again.bin")


# ---- discovery ------------------------------------------------------------------------------------


def test_hundreds_of_stale_sockets_beside_the_live_forward(
    forward: Forward, daemon: RtunDaemon, remote_home: Path
) -> None:
    rtun_dir = remote_home / ".rtun"
    now = time.time()
    stale = [dead_socket(rtun_dir / f"rtun.sock.{n}") for n in range(300)]
    for n, path in enumerate(stale):  # every one newer than the live socket: tried first
        os.utime(path, (now + 10 + n, now + 10 + n), follow_symlinks=False)
    os.utime(forward.remote, (now - 100, now - 100), follow_symlinks=False)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:  # stale indeed
        with pytest.raises(ConnectionRefusedError):
            probe.connect(str(stale[0]))

    for _ in range(3):
        started = time.monotonic()
        result = run_rtun(["ping"], remote_home, timeout=30)
        elapsed = time.monotonic() - started
        assert result.returncode == 0 and result.stdout == b"OK PONG\n", result.stderr
        assert elapsed < 2.0, f"rtun ping took {elapsed:.2f}s past 300 stale sockets"
    source = remote_home / "through.bin"
    source.write_bytes(os.urandom(10_000))
    assert send_file(remote_home, source, "through.bin").code == 0
    assert all(os.path.lexists(p) for p in stale)  # the client never deletes a socket
