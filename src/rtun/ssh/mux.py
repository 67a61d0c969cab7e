"""ssh's control socket, spoken directly (OpenSSH's PROTOCOL.mux): what ``ssh -O forward``
does, without starting an ssh for it (`rtun ssh` adds its forward this way, ~10 ms sooner).
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional

# Packets are a uint32 length and a payload; strings a uint32 length.
MUX_MSG_HELLO = 0x00000001
MUX_C_OPEN_FWD = 0x10000006
MUX_S_OK = 0x80000001
MUX_S_PERMISSION_DENIED = 0x80000002
MUX_S_FAILURE = 0x80000003
MUX_S_REMOTE_PORT = 0x80000007
MUX_FWD_REMOTE = 2
MUX_VERSION = 4
PORT_STREAMLOCAL = 0xFFFFFFFE  # the "port" that makes the host field a socket path


def mux_forward(control: str, remote_path: str, local_path: str, timeout: float = 60) -> "Optional[str]":
    """Ask the master at ``control`` for a remote streamlocal forward; None once the server has
    accepted it, else its reason. Raises OSError or ValueError if the exchange goes wrong."""
    import socket
    import struct

    def packet(*parts: bytes) -> bytes:
        body = b"".join(parts)
        return struct.pack(">I", len(body)) + body

    def string(text: str) -> bytes:
        data = os.fsencode(text)
        return struct.pack(">I", len(data)) + data

    def receive(sock: socket.socket) -> bytes:
        def exactly(count: int) -> bytes:
            data = b""
            while len(data) < count:
                chunk = sock.recv(count - len(data))
                if not chunk:
                    raise ValueError("the control socket closed")
                data += chunk
            return data

        return exactly(struct.unpack(">I", exactly(4))[0])

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(control)
        sock.sendall(packet(struct.pack(">II", MUX_MSG_HELLO, MUX_VERSION)))
        hello = receive(sock)
        if struct.unpack(">I", hello[:4])[0] != MUX_MSG_HELLO:
            raise ValueError("no hello from the master")
        request = struct.pack(">III", MUX_C_OPEN_FWD, 1, MUX_FWD_REMOTE)
        sock.sendall(
            packet(
                request,
                string(remote_path),
                struct.pack(">I", PORT_STREAMLOCAL),
                string(local_path),
                struct.pack(">I", PORT_STREAMLOCAL),
            )
        )
        reply = receive(sock)
    kind, _ = struct.unpack(">II", reply[:8])
    if kind in (MUX_S_OK, MUX_S_REMOTE_PORT):
        return None
    if kind in (MUX_S_FAILURE, MUX_S_PERMISSION_DENIED) and len(reply) >= 12:
        size = struct.unpack(">I", reply[8:12])[0]
        return reply[12 : 12 + size].decode("utf-8", "replace") or "refused"
    raise ValueError(f"unexpected reply {kind:#x} from the master")
