"""This computer's laptop id: 12 random hex digits kept in ~/.rtun/laptop-id.

The id is in the name of every socket `rtun ssh` forwards, so that a shell on the server (in a
tmux started by an earlier login) finds this laptop's live socket again. Random rather than
derived from /etc/machine-id: cloned VMs and containers share machine ids, and two people's
laptops must never collide. It is created once, atomically (two `rtun ssh` at once agree).
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional

from rtun import paths

FILE_NAME = "laptop-id"


def _valid(text: str) -> bool:
    return len(text) == paths.LAPTOP_ID_LENGTH and all(c in "0123456789abcdef" for c in text)


def laptop_id(directory: "Optional[str]" = None) -> str:
    directory = directory or paths.rtun_dir()
    path = os.path.join(directory, FILE_NAME)
    try:
        with open(path, encoding="ascii") as f:
            value = f.read().strip()
        if _valid(value):
            return value
    except (OSError, UnicodeDecodeError):
        pass
    os.makedirs(directory, mode=0o700, exist_ok=True)
    value = os.urandom(paths.LAPTOP_ID_LENGTH // 2).hex()
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w", encoding="ascii") as f:
        f.write(value + "\n")
    try:
        os.link(temporary, path)  # fails if another rtun made it first: then use theirs
    except FileExistsError:
        with open(path, encoding="ascii") as f:
            existing = f.read().strip()
        if not _valid(existing):  # a damaged file: replace it
            os.replace(temporary, path)
            return value
        value = existing
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return value
