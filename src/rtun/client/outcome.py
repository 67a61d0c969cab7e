"""What a `rtun send` did, and how it ended when it could not finish: the files saved,
replaced and unchanged (--update), the resumptions, and the error that names what failed,
with what was saved before it and advice on running it again.

Stdlib only: it runs on the server.
"""

from __future__ import annotations

from rtun.errors import ConnectionLostError, RtunError
from rtun.protocol import messages, wire

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: every send would pay
    from typing import Dict, List, Optional


class SendResult:
    """The daemon's paths of the files saved (new or replaced), of those replaced and those
    unchanged (--update); resumptions (``{"path", "bytes", "of"}``); warnings; after a
    failure, the files not saved."""

    def __init__(
        self,
        saved: List[str],
        warnings: List[str],
        *,
        replaced: Optional[List[str]] = None,
        unchanged: Optional[List[str]] = None,
    ) -> None:
        self.saved = saved
        self.warnings = warnings
        self.replaced = replaced or []
        self.unchanged = unchanged or []
        self.resumed: List[Dict[str, object]] = []
        self.not_saved: List[str] = []  # after a failure: files, as the send named them, not saved

    def document(self) -> Dict[str, object]:
        """The --json document (README.md, JSON output)."""
        replaced = set(self.replaced)
        return {
            "saved": self.saved,
            "replaced": [p for p in self.saved if p in replaced],
            "unchanged": self.unchanged,
            "resumed": self.resumed,
            "warnings": self.warnings,
        }


class Interrupted(RtunError):
    """Ctrl-C (SIGINT) stopped the send."""

    exit_code = 130


RESUME_HINT = (
    "run the same command again to resume: what arrived is kept on your computer for an hour "
    "(not with --no-resume, nor once the file changes)"
)
UPDATE_HINT = "the files saved so far stay: the same command with --update sends only the rest"


def with_hint(exc: RtunError, *, ranged: bool, resume: bool, tree: bool) -> RtunError:
    """An interruption or a lost connection, with what running the command again does:
    resume a large file (``ranged``, ``resume``), or skip a tree's saved files (``tree``)."""
    if not isinstance(exc, (Interrupted, ConnectionLostError)):
        return exc
    if ranged and resume:
        hint = RESUME_HINT
    elif ranged:
        hint = "--no-resume was given: running it again sends the file whole"
    elif tree:
        hint = UPDATE_HINT
    else:
        return exc
    made = type(exc)(f"{exc.message}; {hint}")
    return made


def put_reply(reply: messages.Reply, warnings: List[str]) -> List[str]:
    """A PUT's saved paths; what it skipped, and what its listing left out, as warnings."""
    skipped = reply.data.get("skipped", [])
    warnings.extend(s for s in skipped if isinstance(s, str))
    warnings.extend(_unlisted(reply.data.get("unlisted")))
    return wire.saved_paths(reply)


def _unlisted(counts: object) -> List[str]:
    """What the daemon saved or skipped past the length of its reply's listing."""
    if not isinstance(counts, dict):
        return []
    said = []
    for key, what in (("saved", "saved"), ("skipped", "skipped")):
        n = counts.get(key)
        if isinstance(n, int) and not isinstance(n, bool) and n > 0:
            said.append(f"{n} more files {what}, too many to list")
    return said
