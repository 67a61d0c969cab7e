"""`rtun send --update`: ask the daemon which files are already on your computer, then send
only the others, replacing the changed ones in place.

The question is a PUT with ``update: "check"`` whose file entries carry no data: the daemon
compares each with what is on its disk (size and mtime, as rsync does by default; a link by its
target) and lists the entries unchanged and changed. A daemon from before ``--update`` is never
asked: without the "update" feature the send stops before any entry is written.
Stdlib only: it runs on the server.
"""

from __future__ import annotations

from rtun.client.handshake import pipelined
from rtun.client.sources import SendPlan
from rtun.errors import RtunError
from rtun.protocol import framing, messages

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: every send would pay
    from typing import Dict, List, Sequence, Tuple

    from rtun.client.options import SendOptions
    from rtun.client.pump import ClientConnection

TOO_OLD = (
    "the rtun daemon on your computer is too old for --update: nothing was sent "
    "(update rtun there, or send without --update)"
)


def check(options: SendOptions, work: SendPlan) -> "Tuple[ClientConnection, SendPlan, List[str], List[str]]":
    """Open a connection and ask which of ``work``'s files and links are already there.
    Returns the connection (features known, ready for the next request), what is left to send,
    the daemon's paths of the files unchanged and of those that will be replaced."""
    asked = [i for i in work.items if isinstance(i.entry, (framing.FileEntry, framing.LinkEntry))]
    request = messages.Put(options.dest, False, 0, 0, "", False, messages.UPDATE_CHECK)
    conn = pipelined(options.socket, lambda c: c.write(c.sender.send(request)))
    try:
        if not conn.features or "update" not in conn.features:
            raise RtunError(TOO_OLD)  # an older daemon would take the entries as files: not one goes
        conn.expect_ok()  # READY
        for item in asked:
            conn.write(conn.sender.entry(item.entry))
        conn.write(conn.sender.end())
        reply = conn.expect_ok().data
    except BaseException:
        conn.close()
        raise
    unchanged = _listed(reply.get("unchanged"), asked)
    changed = _listed(reply.get("changed"), asked)
    skip = {id(asked[i]) for i in unchanged}
    left = [item for item in work.items if id(item) not in skip]
    sizes = [i.entry.size or 0 for i in left if isinstance(i.entry, framing.FileEntry)]
    rest = SendPlan(left, total_bytes=sum(sizes), total_files=len(sizes), warnings=work.warnings)
    return conn, rest, list(unchanged.values()), list(changed.values())


def _listed(value: object, asked: "Sequence[object]") -> "Dict[int, str]":
    """The daemon's ``[[index, path], ...]`` as {index: path}; its path, or the entry's own
    when the daemon's listing ran out. Anything malformed or out of range is left out."""
    found: Dict[int, str] = {}
    if not isinstance(value, list):
        return found
    for pair in value:
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[1], str)):
            continue
        index = pair[0]
        if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(asked):
            entry = getattr(asked[index], "entry", None)
            found[index] = pair[1] or getattr(entry, "path", "")
    return found
