"""ssh's control socket, spoken directly (OpenSSH's PROTOCOL.mux): what ``ssh -O check``,
``ssh -O forward`` and ``ssh -O cancel`` do, without starting an ssh for each (`rtun ssh` adds
and cancels its forward this way, and finds a master it can share, ~10 ms sooner each).
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from typing import Optional

# Packets are a uint32 length and a payload; strings a uint32 length.
MUX_MSG_HELLO = 0x00000001
MUX_C_ALIVE_CHECK = 0x10000004
MUX_C_TERMINATE = 0x10000005
MUX_C_OPEN_FWD = 0x10000006
MUX_C_CLOSE_FWD = 0x10000007
MUX_S_OK = 0x80000001
MUX_S_PERMISSION_DENIED = 0x80000002
MUX_S_FAILURE = 0x80000003
MUX_S_ALIVE = 0x80000005
MUX_S_REMOTE_PORT = 0x80000007
MUX_FWD_REMOTE = 2
MUX_VERSION = 4
PORT_STREAMLOCAL = 0xFFFFFFFE  # the "port" that makes the host field a socket path


def _packet(*parts: bytes) -> bytes:
    import struct

    body = b"".join(parts)
    return struct.pack(">I", len(body)) + body


def _string(text: str) -> bytes:
    import struct

    data = os.fsencode(text)
    return struct.pack(">I", len(data)) + data


def _receive(sock: "socket.socket") -> bytes:
    import struct

    def exactly(count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = sock.recv(count - len(data))
            if not chunk:
                raise ValueError("the control socket closed")
            data += chunk
        return data

    return exactly(struct.unpack(">I", exactly(4))[0])


def _send(control: str, request: bytes, timeout: float) -> "socket.socket":
    """The hello and ``request`` in one write: the connection, the master's hello and its
    reply still to come (:func:`_reply`). The master reads one packet at a time and answers
    the hello before it looks at the request, so rtun need not wait for its hello first.
    Raises OSError if the master cannot be reached."""
    import socket
    import struct

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(control)
        sock.sendall(_packet(struct.pack(">II", MUX_MSG_HELLO, MUX_VERSION)) + request)
    except BaseException:
        sock.close()
        raise
    return sock


def _reply(sock: "socket.socket") -> bytes:
    """The master's hello, then the reply's payload to the request :func:`_send` sent; the
    connection is closed. Raises OSError or ValueError if the exchange goes wrong."""
    import struct

    with sock:
        hello = _receive(sock)
        if len(hello) < 4 or struct.unpack(">I", hello[:4])[0] != MUX_MSG_HELLO:
            raise ValueError("no hello from the master")
        reply = _receive(sock)
    if len(reply) < 8:
        raise ValueError("a short reply from the master")
    return reply


def _exchange(control: str, request: bytes, timeout: float) -> bytes:
    """Hello both ways, then one request and its reply (the reply's payload). Raises OSError or
    ValueError if the exchange goes wrong."""
    return _reply(_send(control, request, timeout))


def _forward_request(kind: int, remote_path: str, local_path: str) -> bytes:
    import struct

    return _packet(
        struct.pack(">III", kind, 1, MUX_FWD_REMOTE),
        _string(remote_path),
        struct.pack(">I", PORT_STREAMLOCAL),
        _string(local_path),
        struct.pack(">I", PORT_STREAMLOCAL),
    )


def _refusal(reply: bytes) -> "Optional[str]":
    """None for an OK, else the master's (or the server's) reason."""
    import struct

    kind = struct.unpack(">I", reply[:4])[0]
    if kind in (MUX_S_OK, MUX_S_REMOTE_PORT):
        return None
    if kind in (MUX_S_FAILURE, MUX_S_PERMISSION_DENIED) and len(reply) >= 12:
        size = struct.unpack(">I", reply[8:12])[0]
        return reply[12 : 12 + size].decode("utf-8", "replace") or "refused"
    raise ValueError(f"unexpected reply {kind:#x} from the master")


class PendingForward:
    """A remote streamlocal forward asked of the master at ``control``, its answer not read yet:
    what follows may start meanwhile (the master sends the request to the server at once, and
    the server handles it before anything asked after it on the same connection). Raises
    OSError or ValueError if the exchange goes wrong."""

    def __init__(self, control: str, remote_path: str, local_path: str, timeout: float = 60) -> None:
        request = _forward_request(MUX_C_OPEN_FWD, remote_path, local_path)
        self.sock: Optional[socket.socket] = _send(control, request, timeout)

    def answer(self) -> "Optional[str]":
        """None once the server has accepted the forward, else its reason. Raises OSError or
        ValueError if the exchange goes wrong."""
        sock, self.sock = self.sock, None
        if sock is None:
            raise ValueError("the answer was read already")
        return _refusal(_reply(sock))

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def mux_forward(control: str, remote_path: str, local_path: str, timeout: float = 60) -> "Optional[str]":
    """Ask the master at ``control`` for a remote streamlocal forward; None once the server has
    accepted it, else its reason. Raises OSError or ValueError if the exchange goes wrong."""
    return PendingForward(control, remote_path, local_path, timeout).answer()


def mux_cancel(control: str, remote_path: str, local_path: str, timeout: float = 10) -> "Optional[str]":
    """Cancel that forward (``ssh -O cancel``): None once done, else the master's reason.
    Raises OSError or ValueError if the exchange goes wrong."""
    return _refusal(_exchange(control, _forward_request(MUX_C_CLOSE_FWD, remote_path, local_path), timeout))


def alive(control: str, timeout: float = 5) -> "Optional[int]":
    """The PID of the master listening at ``control`` (``ssh -O check``), or None if none
    answers there as a master should."""
    import struct

    try:
        reply = _exchange(control, _packet(struct.pack(">II", MUX_C_ALIVE_CHECK, 1)), timeout)
    except (OSError, ValueError):
        return None
    if len(reply) < 12 or struct.unpack(">I", reply[:4])[0] != MUX_S_ALIVE:
        return None
    return struct.unpack(">I", reply[8:12])[0] or None


def terminate(control: str, timeout: float = 5) -> None:
    """End the master at ``control`` and every session over it (``ssh -O exit``); nothing if
    none answers there."""
    import struct

    try:
        _exchange(control, _packet(struct.pack(">II", MUX_C_TERMINATE, 1)), timeout)
    except (OSError, ValueError):
        pass
