"""Sizes as people read them: ``10 MiB``, ``1.0 GiB``, ``512 bytes``. One function, used by
the daemon's messages (free space) and the client's (resumption), so both speak alike.

Stdlib only and nothing at import: the client runs it on the server.
"""

from __future__ import annotations

_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")


def size_text(count: int) -> str:
    """``count`` bytes in binary units, as ``df -h`` and ``ls -lh`` show them: three figures at
    most (``402 MiB``, ``1.5 GiB``, ``10 MiB``), bytes below 1 KiB."""
    if count < 1024:
        return "1 byte" if count == 1 else f"{max(count, 0)} bytes"
    value = float(count)
    for unit in _UNITS:
        value /= 1024
        if value < 1023.5 or unit == _UNITS[-1]:  # 1023.6 MiB reads as 1.0 GiB, not 1024 MiB
            # One decimal below 10 (1.0 GiB says the size is not just 1 GiB rounded down).
            return f"{value:.1f} {unit}" if value < 9.95 else f"{value:.0f} {unit}"
    raise AssertionError("unreachable: the loop returns")
