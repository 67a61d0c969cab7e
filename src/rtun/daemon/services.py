"""What every request handler shares: the actions (made on first use), the rate limits, the
upload slots, the ``[actions]`` policy and the notification coalescer.

One Services object lives as long as the daemon; the handler table and the edit session are
handed it, so neither reaches into the other. Actions are imported and made on first use: the
daemon starts small and fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from typing import TYPE_CHECKING, AsyncIterator, Callable, Dict, List, Optional, Set, Tuple

from rtun.daemon.actions.advice import setting as change
from rtun.daemon.actions.files import Uploads
from rtun.daemon.actions.forwards import Forwards
from rtun.daemon.actions.ranges import RangedFiles
from rtun.daemon.actions.ratelimit import RateLimit
from rtun.daemon.config import Config
from rtun.daemon.connection import Connection
from rtun.protocol import messages
from rtun.protocol.limits import FORWARD_BURST, FORWARD_RATE
from rtun.protocol.messages import Rejected

if TYPE_CHECKING:
    from rtun.daemon.actions.browser import Browser
    from rtun.daemon.actions.clipboard import Clipboard
    from rtun.daemon.actions.edit import Editors
    from rtun.daemon.actions.notify import Notifier
    from rtun.daemon.actions.view import Viewer

log = logging.getLogger("rtun.daemon")

# Each action made on first use, and the settings it is made with: a reload that changes one of
# them drops the action, so that the next request makes it anew.
_ACTION_SETTINGS: Dict[str, Tuple[str, ...]] = {
    "_notifier": ("notify_max_chars",),
    "_viewer": ("view_opener", "view_allow_types", "view_max_age", "min_free_bytes"),
    "_browser": ("open_browser",),
    "_clipboard": ("clipboard_copy", "clipboard_paste", "clipboard_max_bytes"),
    "_editors": ("edit_editor", "edit_max_bytes", "edit_max_open", "min_free_bytes"),
}

SUMMARY_TITLES = 3  # titles of notifications that came too fast, named in the one shown for them
SUMMARY_TITLE_CHARS = 40

# What a rate limit let through, in its refusal: (plural, singular) by kind.
_KINDS = {
    "view": ("files viewed", "file viewed"),
    "page": ("pages opened", "page opened"),
    "edit": ("edits started", "edit started"),
    "copy": ("copies", "copy"),
    "paste": ("pastes", "paste"),
    "forward": ("forwards started", "forward started"),
}


class Services:
    def __init__(self, config: Config, umask: int) -> None:
        self.config = config
        self.umask = umask
        self.uploads = Uploads(config.save_dir, config.min_free_bytes, umask)
        self.ranged = RangedFiles(self.uploads.save_dir, self.uploads.space, umask, self.uploads.workers)
        self._upload_slots = asyncio.Semaphore(max(config.max_uploads, 1))
        self.transfers = 0  # upload slots held now, for the status file
        self._limits(config)
        self.forwards = Forwards()
        self.forward_limit = RateLimit(FORWARD_RATE, FORWARD_BURST)
        self._retired: List[Callable[[], None]] = []  # what a reload replaced, closed at stop
        self._notifier: Optional[Notifier] = None
        self._viewer: Optional[Viewer] = None
        self._browser: Optional[Browser] = None
        self._clipboard: Optional[Clipboard] = None
        self._editors: Optional[Editors] = None
        self._coalesced = 0  # notifications that came too fast, shown as one later
        self._coalesced_titles: List[str] = []  # the first few of their titles, for that one
        self._summary: Optional[asyncio.TimerHandle] = None
        self._notes: "Set[asyncio.Future[None]]" = set()  # notifications in flight, kept from collection

    def _limits(self, config: Config) -> None:
        self.notify_limit = RateLimit(config.notify_rate, config.notify_burst)
        # Files viewed, pages opened and edits started share one rate: each starts a program.
        self.view_limit = RateLimit(config.view_rate, config.view_burst)
        self.clipboard_limit = RateLimit(config.view_rate * 5, config.view_burst * 2)

    def reconfigure(self, config: Config) -> None:
        """New settings, for new requests. A request in flight keeps what it holds (its storage,
        its slot, its action) under the settings it started with; what is replaced here is
        closed when the daemon stops."""
        old, self.config = self.config, config
        if old.allow_forward and not config.allow_forward:
            self.forwards.close()  # turned off: the ports close now, not when their clients go
        if (old.save_dir, old.min_free_bytes) != (config.save_dir, config.min_free_bytes):
            self._retired += [self.ranged.close, self.uploads.close]
            self.uploads = Uploads(config.save_dir, config.min_free_bytes, self.umask)
            self.ranged = RangedFiles(
                self.uploads.save_dir, self.uploads.space, self.umask, self.uploads.workers
            )
        if old.max_uploads != config.max_uploads:
            self._upload_slots = asyncio.Semaphore(max(config.max_uploads, 1))
        rates = ("notify_rate", "notify_burst", "view_rate", "view_burst")
        if any(getattr(old, name) != getattr(config, name) for name in rates):
            self._limits(config)
        for attribute, names in _ACTION_SETTINGS.items():
            action = getattr(self, attribute)
            if action is not None and any(getattr(old, n) != getattr(config, n) for n in names):
                closing = getattr(action, "close", None)
                if closing is not None:
                    self._retired.append(closing)
                setattr(self, attribute, None)

    def close(self) -> None:
        self.forwards.close()
        for retired in reversed(self._retired):
            retired()
        self.ranged.close()
        self.uploads.close()  # the storage helper threads finish what they write, then end
        if self._summary is not None:
            self._summary.cancel()
        if self._viewer is not None:
            self._viewer.close()

    # ---- the [actions] policy, slots and rate limits ------------------------------------------

    def check_allowed(self, action: str) -> None:
        """``ERROR 116`` naming the setting, unless ``[actions] action`` is on."""
        if getattr(self.config, f"allow_{action}"):
            return
        if action == "paste":
            why = (
                "paste is off unless you turn it on: anyone with root on a server you log in to "
                f"could read your clipboard; to turn it on, {change('[actions] paste', 'true')}"
            )
        else:
            why = f"{action} is turned off on your computer; to turn it on, {change(f'[actions] {action}', 'true')}"
        raise Rejected(messages.E_DENIED, why)

    @staticmethod
    def may_upload(conn: Connection) -> None:
        if conn.control_only:
            raise Rejected(
                messages.E_BUSY, "too many connections busy with transfers: only ping and notify now"
            )

    def opens_program(self, conn: object, kind: str) -> None:
        """A turn of the one rate that VIEW, OPEN and EDIT share (``kind`` "view", "page" or
        "edit"), worded the same for each."""
        if not self.view_limit.allow(conn, kind):
            c = self.config
            settings = (
                f"[view] burst = {c.view_burst} sets how many may open at once, [view] rate = "
                f"{c.view_rate:g} how many a second after that"
            )
            raise Rejected(messages.E_BUSY, self._too_many(self.view_limit, conn, "files opened", settings))

    def may_forward(self, conn: object) -> None:
        """A turn of the forwards' rate: each FORWARD binds ports here."""
        if not self.forward_limit.allow(conn, "forward"):
            settings = f"Forwards may start {FORWARD_BURST} at once and {FORWARD_RATE:g} a second after that"
            raise Rejected(
                messages.E_BUSY, self._too_many(self.forward_limit, conn, "forwards", settings, fixed=True)
            )

    def uses_clipboard(self, conn: object, kind: str) -> None:
        """A turn of the clipboard's rate (``kind`` "copy" or "paste")."""
        if not self.clipboard_limit.allow(conn, kind):
            c = self.config
            settings = (
                f"Copies and pastes together may come {c.view_burst * 2} at once (twice [view] "
                f"burst) and {c.view_rate * 5:g} a second after that (five times [view] rate)"
            )
            raise Rejected(
                messages.E_BUSY, self._too_many(self.clipboard_limit, conn, "clipboard requests", settings)
            )

    @staticmethod
    def _too_many(limit: RateLimit, conn: object, what: str, settings: str, fixed: bool = False) -> str:
        """What used the limit up (how many of each kind, over how long; never names or URLs,
        which may have come from another server), when to retry, and which settings decide."""
        first, kinds = limit.recent()
        listed = ", ".join(f"{n} {_KINDS.get(kind, ('', kind))[n == 1]}" for kind, n in kinds.most_common())
        done = f": {sum(kinds.values())} in the last {max(math.ceil(first), 1)} s ({listed})" if kinds else ""
        again = (
            f"too many {what} in a short time{done}; try again in {max(math.ceil(limit.wait(conn)), 1)} s. "
        )
        if fixed:  # a bound of rtun's own, not a setting
            return again + f"{settings}, one connection half of each"
        return again + f"{settings}, one connection half of each; to change them, {change('them')}"

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """One of max_uploads transfer slots (the rest wait their turn: memory stays bounded),
        waited for no longer than a silent connection may last. Replies go after it is
        released: a client that does not read them must not hold it."""
        slots = self._upload_slots  # released to the one it came from, if a reload replaces it
        try:
            await asyncio.wait_for(slots.acquire(), self.config.idle_timeout)
        except asyncio.TimeoutError:
            raise Rejected(messages.E_BUSY, "every transfer slot stayed busy: try again later") from None
        self.transfers += 1
        try:
            yield
        finally:
            self.transfers -= 1
            slots.release()

    # ---- actions, made on first use -------------------------------------------------------------

    def notifier(self) -> "Notifier":
        if self._notifier is None:
            from rtun.daemon.actions.notify import Notifier

            self._notifier = Notifier(self.config.notify_max_chars)
        return self._notifier

    def viewer(self) -> "Viewer":
        if self._viewer is None:
            from rtun.daemon.actions.view import Viewer

            c = self.config
            self._viewer = Viewer(
                c.view_opener, c.view_allow_types, c.view_max_age, self.umask, c.min_free_bytes
            )
        return self._viewer

    def browser(self) -> "Browser":
        if self._browser is None:
            from rtun.daemon.actions.browser import Browser

            self._browser = Browser(self.config.open_browser)
        return self._browser

    def clipboard(self) -> "Clipboard":
        if self._clipboard is None:
            from rtun.daemon.actions.clipboard import Clipboard

            c = self.config
            self._clipboard = Clipboard(c.clipboard_copy, c.clipboard_paste, c.clipboard_max_bytes)
        return self._clipboard

    def editors(self) -> "Editors":
        if self._editors is None:
            from rtun.daemon.actions.edit import Editors

            c = self.config
            self._editors = Editors(
                c.edit_editor, c.edit_max_bytes, c.edit_max_open, self.umask, c.min_free_bytes
            )
        return self._editors

    # ---- notifications ------------------------------------------------------------------------

    async def notify(self, conn: object, title: str, body: str) -> None:
        """A peer's notification, within its rate; a burst is counted and shown as one later."""
        notifier = self.notifier()
        if self.notify_limit.allow(conn):
            await notifier.notify(title, body)
            return
        self._coalesced += 1
        if len(self._coalesced_titles) < SUMMARY_TITLES:
            self._coalesced_titles.append(" ".join(title.split())[:SUMMARY_TITLE_CHARS])
        if self._summary is None:
            delay = max(self.notify_limit.daemon.wait(), 1.0)
            self._summary = asyncio.get_running_loop().call_later(delay, self._show_summary)

    def _show_summary(self) -> None:
        self._summary = None
        count, self._coalesced = self._coalesced, 0
        titles, self._coalesced_titles = self._coalesced_titles, []
        if not count:
            return
        log.info("%d notifications came too fast and were coalesced into one", count)
        self.notify_limit.daemon.take()
        c = self.config
        more = ", ..." if count > len(titles) else ""
        self.tell(
            "rtun",
            f"{count} more notifications came too fast to show ({', '.join(titles)}{more}). "
            f"[notify] burst = {c.notify_burst} sets how many show at once, [notify] rate = "
            f"{c.notify_rate:g} how many a second after that, in rtun's config file "
            "(`rtun config --path`; `rtun server reload` applies a change)",
        )

    def tell(self, title: str, body: str) -> None:
        """A notification of the daemon's own for the user here, without holding anyone up."""

        async def show() -> None:
            try:
                await self.notifier().notify(title, body)
            except Rejected as exc:
                log.info("could not show a notification: %s", exc.text)
            except Exception:  # a broken notification must not end what it reports on
                log.exception("could not show a notification")

        task = asyncio.ensure_future(show())
        self._notes.add(task)
        task.add_done_callback(self._notes.discard)
