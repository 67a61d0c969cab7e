"""A throw-away rig for benchmarks: sshd on 127.0.0.1, an rtun daemon, and an ssh -R forward."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Optional

from support.rtun import RtunDaemon
from support.sshd import Forward, SshKeys, SshServer

RTUN_SCRIPT = str(Path(sys.executable).parent / "rtun")  # the installed console script


class Rig:
    def __init__(self, save_dir: Optional[Path] = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="rb", dir="/tmp"))
        self.sshd = SshServer(SshKeys(self.root / "keys"), self.root / "sshd").start()
        self.local_home = self.root / "local"
        self.remote_home = self.root / "remote"
        (self.remote_home / ".rtun").mkdir(parents=True, mode=0o700)
        self.save_dir = save_dir or self.local_home / "Downloads"
        self.daemon = RtunDaemon(self.local_home, self.save_dir).start()
        self.forward = Forward(self.sshd, self.remote_home / ".rtun" / "rtun.sock", self.daemon.socket).wait_up()

    def close(self) -> None:
        self.forward.close()
        if self.daemon.alive():
            self.daemon.stop()
        self.sshd.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "Rig":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
