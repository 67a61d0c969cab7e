"""Hostile and interrupted uploads, over raw v1 SEND and over the rtun/2 PUT stream.

Everything goes through the remote end of a real ssh -R forward, as an attacker on the remote
server (or a crashed client) would reach the daemon.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import List

import pytest

from support.raw import RawClient, v1_upload
from support.rtun import RTUN, RtunDaemon, answers_ping, clean_env
from support.sshd import Forward
from support.wait import wait_until

# Every path rule is tested in memory (tests/protocol/test_names.py); these go end to end.
ESCAPES = [
    "/tmp/rtun-escape-abs",
    "../escape",
    "a/b/../../../escape",
]


def everything_under(root: Path) -> List[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def put(client: RawClient, header: dict, entries: List[bytes]) -> List[bytes]:
    """A PUT with raw entries; returns every reply line until the daemon closes or answers."""
    replies = [client.command("PUT " + json.dumps(header))]
    if replies[0] != b"READY\r\n":
        return replies
    try:
        client.send(b"".join(entries))
    except OSError:
        pass  # the daemon may refuse and close before reading everything
    replies.append(client.line())
    return replies


def entry(**fields) -> bytes:
    return json.dumps(fields).encode() + b"\r\n"


def file_data(data: bytes) -> bytes:
    chunks = b"%d\r\n" % len(data) + data if data else b""
    return chunks + b"0\r\n" + hashlib.sha256(data).hexdigest().encode() + b"\r\n"


@pytest.mark.parametrize("path", ESCAPES)
def test_v1_send_cannot_write_outside_the_save_directory(forward, save_dir, short_tmp, path):
    with RawClient(forward.remote) as client:
        assert client.command("PING") == b"OK PONG\r\n"
        reply = v1_upload(client, "SEND", path, b"pwned")
    assert reply.startswith(b"ERROR 108 ") and reply.endswith(b"\r\n")
    assert not Path("/tmp/rtun-escape-abs").exists()
    assert not (save_dir.parent / "escape").exists() and not (short_tmp / "escape").exists()
    assert everything_under(save_dir) == []
    assert answers_ping(forward.remote)


@pytest.mark.parametrize("path", ESCAPES)
def test_put_entries_cannot_write_outside_the_save_directory(forward, save_dir, short_tmp, path):
    with RawClient(forward.remote) as client:
        replies = put(
            client,
            {"dest": "", "bytes": 5, "files": 1},
            [entry(type="file", path=path, mode=0o644, mtime=1), file_data(b"pwned"), entry(type="end")],
        )
    assert replies[-1].startswith(b"ERROR 108 ")
    assert not (save_dir.parent / "escape").exists() and not (short_tmp / "escape").exists()
    assert everything_under(save_dir) == []
    assert answers_ping(forward.remote)


@pytest.mark.parametrize("dest", ["../x", "a\x00b"])
def test_put_destination_cannot_escape(forward, save_dir, dest):
    with RawClient(forward.remote) as client:
        replies = put(client, {"dest": dest, "bytes": 0, "files": 0}, [entry(type="end")])
    assert replies[0].startswith(b"ERROR 108 ")
    assert answers_ping(forward.remote)


def test_links_out_of_the_transfer_are_not_made_so_later_files_stay_inside(forward, save_dir, short_tmp):
    outside = short_tmp / "outside"
    outside.mkdir()
    with RawClient(forward.remote) as client:
        replies = put(
            client,
            {"dest": "", "bytes": 5, "files": 1},
            [
                entry(type="dir", path="top", mode=0o755, mtime=1),
                entry(type="link", path="top/out", target=str(outside)),
                entry(type="link", path="top/up", target="../.."),
                entry(type="file", path="top/out/evil", mode=0o644, mtime=1),
                file_data(b"pwned"),
                entry(type="end"),
            ],
        )
    assert replies[-1].startswith(b"OK ")
    assert json.loads(replies[-1][3:])["skipped"] == [
        "top/out: symbolic link points outside the transfer",
        "top/up: symbolic link points outside the transfer",
    ]
    assert list(outside.iterdir()) == []
    assert not (save_dir / "top" / "out").is_symlink() and not os.path.lexists(save_dir / "top" / "up")
    assert (save_dir / "top" / "out" / "evil").read_bytes() == b"pwned"  # a plain directory inside


def test_a_file_is_never_written_through_a_link_the_transfer_made(forward, save_dir):
    with RawClient(forward.remote) as client:
        replies = put(
            client,
            {"dest": "", "bytes": 5, "files": 1},
            [
                entry(type="dir", path="top", mode=0o755, mtime=1),
                entry(type="link", path="top/here", target="."),
                entry(type="file", path="top/here/evil", mode=0o644, mtime=1),
                file_data(b"pwned"),
                entry(type="end"),
            ],
        )
    assert replies[-1].startswith(b"ERROR 108 ") and b"symbolic link" in replies[-1]
    assert everything_under(save_dir) == ["top", "top/here"]
    assert answers_ping(forward.remote)


def test_a_chain_of_links_cannot_point_out_of_the_transfer(forward, save_dir):
    with RawClient(forward.remote) as client:
        replies = put(
            client,
            {"dest": "", "bytes": 0, "files": 0},
            [
                entry(type="dir", path="top", mode=0o755, mtime=1),
                entry(type="dir", path="top/d1/d2/d3/d4", mode=0o755, mtime=1),
                entry(type="link", path="top/d1/d2/d3/d4/a", target="../../../.."),
                entry(type="link", path="top/d1/d2/d3/d4/b", target="a/../../../../../etc/passwd"),
                entry(type="end"),
            ],
        )
    assert replies[-1].startswith(b"OK ")
    assert os.readlink(save_dir / "top/d1/d2/d3/d4/a") == "../../../.."
    assert not os.path.lexists(save_dir / "top/d1/d2/d3/d4/b")
    assert json.loads(replies[-1][3:])["skipped"] == [
        "top/d1/d2/d3/d4/b: symbolic link points outside the transfer"
    ]


def test_directories_that_existed_keep_their_mode(forward, save_dir):
    (save_dir / "mine").mkdir(parents=True)
    (save_dir / "mine").chmod(0o700)
    with RawClient(forward.remote) as client:
        replies = put(
            client,
            {"dest": "", "bytes": 0, "files": 0},
            [entry(type="dir", path="mine", mode=0o777, mtime=1), entry(type="end")],
        )
    assert replies[-1].startswith(b"OK ")
    assert (save_dir / "mine").stat().st_mode & 0o7777 == 0o700


def test_a_tree_of_many_directories_needs_few_descriptors(forward, daemon, save_dir):
    entries = [entry(type="dir", path="many", mode=0o755, mtime=1)]
    entries += [entry(type="dir", path=f"many/d{i:04d}/sub", mode=0o755, mtime=1) for i in range(1500)]
    with RawClient(forward.remote) as client:
        replies = put(client, {"dest": "", "bytes": 0, "files": 0}, entries + [entry(type="end")])
    assert replies[-1].startswith(b"OK "), replies
    assert len(list((save_dir / "many").iterdir())) == 1500
    assert len(os.listdir(f"/proc/{daemon.process.pid}/fd")) < 100


def test_deeply_nested_json_is_refused_cleanly(forward, daemon):
    with RawClient(forward.remote) as client:
        client.send(b"PUT " + b"[" * 60000 + b"\r\n")
        assert client.line().startswith(b"ERROR 113 ")
    assert "Traceback" not in daemon.log_text()
    assert answers_ping(forward.remote)


def test_a_link_already_on_disk_is_never_written_through(forward, save_dir, short_tmp):
    outside = short_tmp / "outside"
    outside.mkdir()
    save_dir.mkdir(exist_ok=True)
    os.symlink(outside, save_dir / "trap")
    with RawClient(forward.remote) as client:
        assert client.command("PING") == b"OK PONG\r\n"
        reply = v1_upload(client, "SEND", "trap/evil", b"pwned")
    assert reply.startswith(b"ERROR 108 ") and b"symbolic link" in reply
    assert list(outside.iterdir()) == []
    with RawClient(forward.remote) as client:
        replies = put(
            client,
            {"dest": "trap", "bytes": 5, "files": 1},
            [entry(type="file", path="evil", mode=0o644, mtime=1), file_data(b"pwned"), entry(type="end")],
        )
    assert replies[-1].startswith(b"ERROR 108 ")
    assert list(outside.iterdir()) == []


def test_a_file_sent_over_an_existing_link_replaces_nothing_behind_it(forward, save_dir, short_tmp):
    target = short_tmp / "precious"
    target.write_text("keep me")
    save_dir.mkdir(exist_ok=True)
    os.symlink(target, save_dir / "name")
    with RawClient(forward.remote) as client:
        assert client.command("PING") == b"OK PONG\r\n"
        assert v1_upload(client, "SEND", "name", b"new") == b"OK\r\n"
    assert target.read_text() == "keep me"
    assert (save_dir / "name (1)").read_bytes() == b"new"


@pytest.mark.parametrize("header", [b"PUT {not json}", b'PUT {"bytes": -1}'])
def test_malformed_put_headers_get_an_error_line(forward, header):
    with RawClient(forward.remote) as client:
        client.send(header + b"\r\n")
        assert client.line().startswith(b"ERROR ")
    assert answers_ping(forward.remote)


# The core rejects each malformed entry (tests/protocol/test_receiver.py); end to end, a file
# already begun on disk must go too.
@pytest.mark.parametrize(
    "bad",
    [
        entry(type="file", path="f", mode=0o644, mtime=1, size=3) + b"2\r\nab2\r\nab",  # more than declared
        entry(type="file", path="f", mode=0o644, mtime=1) + b"3\r\nabc0\r\n" + b"0" * 64 + b"\r\n",  # bad sha
    ],
)
def test_malformed_entries_leave_no_file(forward, save_dir, bad):
    with RawClient(forward.remote) as client:
        replies = put(client, {"dest": "", "bytes": 3, "files": 1}, [bad, entry(type="end")])
    assert replies[-1].startswith(b"ERROR ")
    assert everything_under(save_dir) == []
    assert answers_ping(forward.remote)


def test_setuid_and_sticky_bits_are_dropped(forward, save_dir):
    with RawClient(forward.remote) as client:
        replies = put(
            client,
            {"dest": "", "bytes": 1, "files": 1},
            [entry(type="file", path="suid", mode=0o6755, mtime=1), file_data(b"x"), entry(type="end")],
        )
    assert replies[-1].startswith(b"OK ")
    assert (save_dir / "suid").stat().st_mode & 0o7777 == 0o755


def _start_slow_upload(forward: Forward, size: int) -> RawClient:
    client = RawClient(forward.remote)
    assert client.command("PUT " + json.dumps({"dest": "", "bytes": size, "files": 1})) == b"READY\r\n"
    client.send(entry(type="file", path="big.bin", mode=0o644, mtime=1, size=size))
    client.send(b"%d\r\n" % size + b"x" * (size // 2))
    return client


def _part_files(root: Path) -> List[Path]:
    return [p for p in root.rglob(".rtun-*.part")]


def test_a_daemon_killed_in_a_small_file_of_a_tree_leaves_nothing_to_sweep(forward, daemon, save_dir):
    """A tree's small files reach the disk only once verified: SIGKILL in the middle of one
    leaves neither a final name nor a temporary one, and the one before it whole."""
    assert daemon.process is not None
    first = os.urandom(1000)
    with RawClient(forward.remote) as client:
        assert client.command("PUT " + json.dumps({"dest": "", "bytes": 2000, "files": 2})) == b"READY\r\n"
        client.send(
            entry(type="dir", path="tree", mode=0o755, mtime=1)
            + entry(type="file", path="tree/first.txt", mode=0o644, mtime=1, size=1000)
            + file_data(first)
            + entry(type="file", path="tree/second.txt", mode=0o644, mtime=1, size=1000)
            + b"1000\r\n"
            + b"x" * 500
        )
        wait_until(lambda: (save_dir / "tree" / "first.txt").exists(), what="the first file to be placed")
        daemon.process.kill()
        daemon.process.wait(timeout=10)
    assert everything_under(save_dir) == ["tree", "tree/first.txt"]
    assert (save_dir / "tree" / "first.txt").read_bytes() == first


def test_the_small_files_verified_before_a_transfer_breaks_are_all_kept(forward, daemon, save_dir):
    """Written in batches, but as if one by one: every file whose SHA-256 matched before the
    client vanished is there, under its name, and nothing else."""
    files = {f"tree/f{i:03d}.txt": os.urandom(100 + i) for i in range(150)}
    stream = b"".join(
        entry(type="file", path=path, mode=0o644, mtime=1, size=len(data)) + file_data(data)
        for path, data in files.items()
    )
    client = RawClient(forward.remote)
    assert client.command("PUT " + json.dumps({"dest": "", "bytes": 10**6, "files": 151})) == b"READY\r\n"
    client.send(
        stream + entry(type="file", path="tree/last.txt", mode=0o644, mtime=1, size=100) + b"100\r\nab"
    )
    client.close()  # as a killed client would: the transfer fails in its last file
    expected = ["tree"] + sorted(files)
    wait_until(lambda: everything_under(save_dir) == expected, what="every verified file, and only those")
    assert all((save_dir / path).read_bytes() == data for path, data in files.items())
    assert answers_ping(forward.remote)


def test_client_killed_mid_stream_leaves_no_file_and_no_litter(forward, daemon, save_dir):
    client = _start_slow_upload(forward, 8 * 1024 * 1024)
    wait_until(lambda: _part_files(save_dir), what="the upload to start")
    client.close()  # as a killed client would
    wait_until(lambda: not _part_files(save_dir), what="the partial file to be removed")
    assert everything_under(save_dir) == []
    assert answers_ping(forward.remote)


def test_sending_client_process_killed_mid_transfer(forward, daemon, remote_home, save_dir, short_tmp):
    """A large file is kept under its temporary name only, for the next send to resume."""
    source = short_tmp / "big.bin"
    with open(source, "wb") as f:
        f.truncate(512 * 1024 * 1024)  # sparse: large enough to be still running when killed
    proc = subprocess.Popen(
        RTUN + ["send", "-q", str(source)],
        env=clean_env(remote_home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until(lambda: _part_files(save_dir), what="the upload to start")
    proc.kill()
    proc.wait()
    assert answers_ping(forward.remote)
    assert not (save_dir / "big.bin").exists() and len(_part_files(save_dir)) == 1
    again = subprocess.run(
        RTUN + ["send", "-q", str(source)],
        env=clean_env(remote_home),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr
    assert (save_dir / "big.bin").stat().st_size == 512 * 1024 * 1024 and not _part_files(save_dir)
    assert "resuming big.bin" in daemon.log_text()


def test_ssh_forward_killed_mid_stream_leaves_no_file(forward, daemon, save_dir):
    client = _start_slow_upload(forward, 8 * 1024 * 1024)
    wait_until(lambda: _part_files(save_dir), what="the upload to start")
    forward.process.kill()
    wait_until(lambda: not _part_files(save_dir), what="the partial file to be removed")
    assert everything_under(save_dir) == []
    client.close()
    assert answers_ping(daemon.socket)


def test_daemon_killed_mid_stream_leaves_no_litter_after_restart(sshd, local_home, remote_home, save_dir):
    daemon = RtunDaemon(local_home, save_dir).start()
    forward = Forward(sshd, remote_home / ".rtun" / "rtun.sock", daemon.socket).wait_up()
    try:
        client = _start_slow_upload(forward, 8 * 1024 * 1024)
        wait_until(lambda: _part_files(save_dir), what="the upload to start")
        daemon.stop(signal.SIGKILL)
        client.close()
        assert _part_files(save_dir)  # a killed daemon cannot clean up after itself...
        assert not (save_dir / "big.bin").exists()
        restarted = RtunDaemon(local_home, save_dir).start()
        try:
            wait_until(
                lambda: not _part_files(save_dir), what="the restarted daemon to sweep"
            )  # ...its successor does
            wait_until(lambda: "removed partial file" in restarted.log_text(), what="the sweep to be logged")
        finally:
            restarted.stop()
    finally:
        forward.close()
