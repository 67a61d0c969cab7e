"""Talking to the relay's ``rtun-relay`` script (relayscript.py) over an ssh connection, and the
authorized_keys line that confines a tunnel key to it.

A request goes first as the forced command's grammar (``rtun-relay put ID``, ``rtun-relay list
NONCE``), which is all a tunnel key may run; when no forced command answers (a plain account,
where the login shell says ``rtun-relay: not found``), the same script goes inline in
``sh -c``. Either way the answer starts with the script's status line, so a login shell's
complaint is never taken for an answer. The mode that answered is kept for the connection.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import shlex
import struct
from dataclasses import dataclass
from typing import Callable, FrozenSet, List, Optional, Tuple

from rtun.errors import RtunError
from rtun.protocol import peertext
from rtun.ssh.hints import exit_reason
from rtun.ssh.process import Done
from rtun.tunnel import registry
from rtun.tunnel.relayscript import MAX_ENTRY_BYTES, MAX_LISTING_BYTES, SCRIPT, STATUS, TOKEN

# What a listing may send back at most: the entries' budget, plus one header line per file.
LISTING_LIMIT = MAX_LISTING_BYTES + 4 * 1024 * 1024

DEFAULT_SCRIPT = ".rtun/rtun-relay"  # relative paths are from the relay account's home
DEFAULT_RELAY_DIR = ".rtun/hosts"
PATH_RE = re.compile(r"[A-Za-z0-9_./][A-Za-z0-9_./-]{0,199}")
BLOB_RE = re.compile(r"[A-Za-z0-9+/]{16,16384}={0,2}")
KEY_TYPES = (
    "ssh-ed25519",
    "sk-ssh-ed25519@openssh.com",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-rsa",
)


class RelayError(RtunError):
    """The relay refused or failed a registry request, or nothing on it answered as rtun-relay."""


# (command, stdin, timeout, stdout limit) -> Done
Runner = Callable[[str, bytes, float, Optional[int]], Done]


@dataclass
class Reply:
    status: str  # "ok", "refused" or "failed"
    detail: str
    body: bytes


def remote_dir(directory: str) -> str:
    """The directory as a shell word on the relay, with ``~/`` meaning the login's home."""
    if directory == "~":
        return '"$HOME"'
    if directory.startswith("~/"):
        return '"$HOME"/' + shlex.quote(directory[2:])
    return shlex.quote(directory)


def forced_request(verb: str, argument: str) -> str:
    return f"{TOKEN} {verb} {argument}"


def inline_request(directory: str, verb: str, argument: str) -> str:
    script = f"d={remote_dir(directory)}\n{SCRIPT}"
    return f"sh -c {shlex.quote(script)} {TOKEN} {verb} {argument}"


def parse_reply(stdout: bytes) -> Optional[Reply]:
    """The script's answer, or None when what came back is not one."""
    if not stdout.startswith(STATUS):
        return None
    line, _, body = stdout.partition(b"\n")
    status, _, detail = line[len(STATUS) :].decode("ascii", "replace").partition(": ")
    if status not in ("ok", "refused", "failed"):
        return None
    return Reply(status, peertext.ascii_escaped(detail), body)


def _no_answer(done: Optional[Done]) -> str:
    if done is None:
        return "no request was made"
    said = peertext.last_line(done.stderr.decode("utf-8", "replace"))
    if done.returncode == 255:
        return exit_reason(255, done.stderr.decode("utf-8", "replace"))
    return (
        f"the relay did not answer as rtun-relay (exit {done.returncode}"
        + (f": {said}" if said else "")
        + "); if this key has a forced command, is the relay "
        "script installed where it points? (`rtun tunnel authorize --print-script`, docs/relay.md)"
    )


class Relay:
    """Registry requests over one ssh connection (``run`` sends a command over it)."""

    FORCED, INLINE = "forced", "inline"

    def __init__(self, run: Runner, directory: str) -> None:
        self.run = run
        self.directory = directory
        self.mode: Optional[str] = None

    def request(
        self, verb: str, argument: str, data: bytes = b"", timeout: float = 15, limit: Optional[int] = None
    ) -> Tuple[Reply, Done]:
        last: Optional[Done] = None
        for mode in [self.mode] if self.mode else [self.FORCED, self.INLINE]:
            command = (
                forced_request(verb, argument)
                if mode == self.FORCED
                else inline_request(self.directory, verb, argument)
            )
            done = self.run(command, data, timeout, limit)
            reply = parse_reply(done.stdout)
            if reply is not None:
                self.mode = mode
                return reply, done
            last = done
            if done.returncode == 255:
                break  # ssh itself failed: the other form would fail the same way
        raise RelayError(_no_answer(last))

    def put(self, entry: registry.Entry, timeout: float = 15) -> None:
        """Write this machine's entry; raises RelayError with the relay's reason."""
        reply, _ = self.request("put", entry.machine_id, entry.to_json(), timeout)
        if reply.status != "ok":
            raise RelayError(f"the relay {reply.status} the entry: {reply.detail}")

    def list(self, timeout: float = 60) -> registry.Files:
        nonce = secrets.token_hex(16)
        reply, done = self.request("list", nonce, timeout=timeout, limit=LISTING_LIMIT)
        if reply.status != "ok":
            raise RelayError(f"the relay {reply.status} the listing: {reply.detail}")
        return parse_listing(reply.body, nonce, done.truncated)


def parse_listing(body: bytes, nonce: str, truncated: bool = False) -> registry.Files:
    """The script's listing: header lines (``S``, ``B``, ``X`` per file, ``N seen unread``),
    ``C``, then each listed file's bytes followed by a separator holding this request's random
    nonce (unknown to whoever wrote the files), then ``E``; then, on Linux, ``P`` and an
    ``L <hex port>`` line per listening port."""
    result = registry.Files()
    listed: List[str] = []
    seen = unread = 0
    pos = 0
    while True:
        end = body.find(b"\n", pos)
        if end < 0:
            result.problems.append("the relay's listing ended early or is garbled; stopped reading")
            return result
        kind, _, rest = body[pos:end].decode("ascii", "replace").partition(" ")
        pos = end + 1
        words = rest.split(" ")
        if kind == "C" and not rest:
            break
        name = words[0]
        if kind in ("S", "B", "X") and not registry.valid(registry.FILE_RE, name):
            kind = "?"
        if kind == "S" and len(words) == 1:
            listed.append(name)
        elif kind == "B" and len(words) == 2 and words[1].isdigit():
            result.problems.append(f"skipped {name}: larger than {MAX_ENTRY_BYTES} bytes")
        elif kind == "X" and len(words) == 1:
            result.problems.append(f"skipped {name}: not a regular file")
        elif kind == "N" and len(words) == 2 and all(w.isdigit() for w in words):
            seen, unread = int(words[0]), int(words[1])
        else:
            result.problems.append("the relay's listing is garbled; stopped reading")
            return result
    chunks = body[pos:].split(b"\n--rtun-" + nonce.encode("ascii") + b"--\n")
    complete, tail = chunks[:-1], chunks[-1]
    result.files = list(zip(listed, complete))
    result.cut = registry.cut_note(seen, unread)
    if tail.startswith(b"E\nP\n"):
        result.listening = _listeners(tail[4:])
        tail = b"E\n" if result.listening is not None else tail
    if len(complete) != len(listed) or tail != b"E\n":
        if truncated or len(complete) < len(listed):
            missing = len(listed) - min(len(complete), len(listed))
            result.cut = (
                f"listing cut: the relay's answer stopped after {len(body)} bytes; "
                f"{missing} of {len(listed)} listed entries not read"
            )
        else:
            result.problems.append("the relay's listing is garbled at its end")
    return result


def _listeners(text: bytes) -> Optional[FrozenSet[int]]:
    """``L <hex port>`` lines (from /proc/net/tcp on the relay) as ports; None if garbled."""
    if not text:
        return frozenset()  # nothing listens at all
    ports = set()
    for line in text.split(b"\n")[:-1] if text.endswith(b"\n") else [b"?"]:
        kind, _, port = line.partition(b" ")
        if kind != b"L" or not 1 <= len(port) <= 4 or port.strip(b"0123456789ABCDEFabcdef"):
            return None
        ports.add(int(port, 16))
    return frozenset(ports)


# -- authorized_keys -----------------------------------------------------------------------


def parse_public_key(text: str) -> Tuple[str, str]:
    """(type, base64 blob) of an OpenSSH public key line ``TYPE BLOB [COMMENT]``; the blob must
    decode and name the same type. Raises ValueError."""
    words = text.strip().split()
    if len(words) < 2 or words[0] not in KEY_TYPES:
        raise ValueError(
            f"not an OpenSSH public key (expected one of {', '.join(KEY_TYPES)} followed by the key)"
        )
    kind, blob = words[0], words[1]
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the key is not valid base64") from None
    if len(raw) < 4:
        raise ValueError("the key is truncated")
    (length,) = struct.unpack(">I", raw[:4])
    if raw[4 : 4 + length] != kind.encode("ascii"):
        raise ValueError(f"the key's data does not say {kind}")
    return kind, blob


def relay_path(flag: str, value: str) -> str:
    """A path on the relay for the forced command: one plain shell word; ``~/`` means the
    account's home, as a relative path does (sshd runs commands in the home directory)."""
    if value.startswith("~/"):
        value = value[2:]
    if not registry.valid(PATH_RE, value) or "/../" in f"/{value}/":
        raise ValueError(
            f"{flag} {peertext.quoted(value)}: use letters, digits, '.', '_', '-' and '/', without '..'"
        )
    return value


def authorized_line(
    key_type: str,
    blob: str,
    machine_id: str,
    name: str,
    port: Optional[int],
    script: str = DEFAULT_SCRIPT,
    directory: str = DEFAULT_RELAY_DIR,
) -> str:
    """The authorized_keys line of a machine's tunnel key: listen on and connect to only its
    own port on the relay's loopback (any port with ``port=None``), and run only the relay
    script, bound to this machine id. No pty, agent or X11 forwarding, no ~/.ssh/rc."""
    if (
        key_type not in KEY_TYPES
        or not registry.valid(BLOB_RE, blob)
        or not registry.valid(registry.MACHINE_ID_RE, machine_id)
        or not registry.valid(registry.NAME_RE, name)
        or not all(registry.valid(PATH_RE, p) for p in (script, directory))
        or (port is not None and not 1 <= port <= 65535)
    ):
        raise ValueError("not a key, machine id, name, port or path that fits in the line")
    where = f"127.0.0.1:{port if port is not None else '*'}"
    options = [
        "restrict",
        "port-forwarding",
        f'permitlisten="{where}"',
        f'permitopen="{where}"',
        f'command="sh {script} serve {machine_id} {directory}"',
    ]
    return f"{','.join(options)} {key_type} {blob} rtun-tunnel:{name}"
