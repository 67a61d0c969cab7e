"""Resumption as a user sees it, through a real ssh -R forward: Ctrl-C (a real SIGINT to the
client process) in the middle of a large file says that the same command resumes it, and the
same command then says how much was already on your computer, sending only the rest."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
from pathlib import Path

from support.rtun import RTUN, clean_env, run_rtun
from support.sshd import Forward
from support.turns import TurnCounter
from support.wait import wait_until

MIB = 1024 * 1024


def test_ctrl_c_says_the_same_command_resumes_and_the_resumed_send_says_how_much_was_there(
    forward: Forward, remote_home: Path, short_tmp: Path, save_dir: Path
) -> None:
    source = short_tmp / "model.bin"
    source.write_bytes(os.urandom(24 * MIB))
    # The link stalls half way, as a slow or dead one does; the user presses Ctrl-C.
    counter = TurnCounter(short_tmp / "stall.sock", forward.remote, stall_after=12 * MIB)
    command = ["send", "--socket", str(counter.listen), str(source)]
    client = subprocess.Popen(
        RTUN + command,
        env=clean_env(remote_home),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until(counter.stalled.is_set, timeout=30, what="the link to stall")
        client.send_signal(signal.SIGINT)
        _, err = client.communicate(timeout=30)
    finally:
        if client.poll() is None:
            client.kill()
        counter.close()  # the dead link's connections end: the daemon keeps what arrived
    last = err.decode().strip().splitlines()[-1]
    assert client.returncode == 130, err
    assert "interrupted" in last and "run the same command again to resume" in last
    assert "--no-resume" in last and "file changes" in last
    assert not (save_dir / "model.bin").exists()

    again = TurnCounter(short_tmp / "again.sock", forward.remote)
    try:
        done = run_rtun(["send", "--json", "--socket", str(again.listen), str(source)], remote_home)
    finally:
        again.close()
    assert done.returncode == 0, done.stderr
    said = [line for line in done.stderr.decode().splitlines() if line.startswith("resumed: ")]
    assert len(said) == 1 and said[0].endswith("already on your computer (model.bin)"), said
    kept = json.loads(done.stdout)["resumed"][0]
    assert kept["path"] == "model.bin" and kept["of"] == 24 * MIB and 4 * MIB <= kept["bytes"] <= 12 * MIB
    assert said[0].startswith(f"resumed: {kept['bytes'] // MIB} MiB of 24 MiB")
    assert again.client_bytes < 24 * MIB - kept["bytes"] + MIB  # only the rest moved
    saved = save_dir / "model.bin"
    assert hashlib.sha256(saved.read_bytes()).digest() == hashlib.sha256(source.read_bytes()).digest()

    # -q: nothing on stderr, the same document.
    quiet = run_rtun(["send", "-q", str(source)], remote_home)
    assert quiet.returncode == 0 and quiet.stderr == b""
