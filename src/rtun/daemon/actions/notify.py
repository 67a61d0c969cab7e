"""NOTIFY and NOTIFY2: a desktop notification where the daemon runs, with text that is shown, never run.

The notification goes through desktop-notifier (D-Bus ``org.freedesktop.Notifications`` on
Linux and the BSDs, the notification centre on macOS). That library only logs a warning when
nothing can show the notification, so on D-Bus desktops we first ask the notification service
for its capabilities ourselves: no session bus, no owner of ``org.freedesktop.Notifications``
and nothing that D-Bus could start for it all become a clear ``ERROR 111`` for the client.

Text from the remote side is cleaned before anyone sees it (see ``clean_title``/``clean_body``):
terminal escape sequences and control characters removed, bidirectional overrides removed,
length capped, and ``&``, ``<``, ``>`` escaped when the notification server interprets markup.
Nothing is ever passed through a shell. See docs/desktop.md.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from typing import Any, FrozenSet, List, Optional

from rtun.protocol import messages
from rtun.protocol.messages import Rejected

log = logging.getLogger("rtun.daemon")

APP_NAME = "rtun"
DEFAULT_TITLE = "rtun"
TITLE_MAX_CHARS = 200  # a title is one short line whatever notify_max_chars says
BUS_TIMEOUT = 10.0  # seconds for the bus and the service to answer (D-Bus may start the service)
NO_SERVICE = "no notification service on your computer's desktop: "

_BUS_NAME = "org.freedesktop.Notifications"
_OBJECT_PATH = "/org/freedesktop/Notifications"

# Terminal escape sequences, 7-bit and 8-bit forms (ECMA-48).
_ESCAPES = re.compile(
    # CSI: ESC [ or 0x9b, parameter bytes, intermediate bytes, one final byte
    "(?:\x1b\\[|\x9b)[0-?]*[ -/]*[@-~]"
    # OSC, DCS, SOS, PM, APC: a string up to BEL or ST (ESC \ or 0x9c), or to the end
    "|(?:\x1b[\\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\\\|\x9c)?"
    # any other escape sequence: ESC, intermediate bytes, one final byte
    "|\x1b[ -/]*[0-~]"
)
# What remains of the C0 and C1 controls (all but newline, tabs being spaces by then), DEL, and the
# bidirectional controls that can make text read differently from what it is.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_LINE_BREAKS = re.compile("\r\n|[\r\u2028\u2029\x85\x0b\x0c]")


def _strip(text: str) -> str:
    text = _ESCAPES.sub("", text)
    text = _LINE_BREAKS.sub("\n", text).replace("\t", " ")
    return _CONTROLS.sub("", text)


def cap(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, an ellipsis marking the cut (0: no limit)."""
    if limit <= 0 or len(text) <= limit:
        return text
    return text[: limit - 1].rstrip() + "\u2026"


def clean_title(text: str, limit: int) -> str:
    """One line of plain text: escapes and controls removed, spaces collapsed, capped."""
    title = " ".join(_strip(text).split())
    limit = min(limit, TITLE_MAX_CHARS) if limit > 0 else TITLE_MAX_CHARS
    return cap(title, limit) or DEFAULT_TITLE


def clean_body(text: str, limit: int) -> str:
    """Plain text that may span lines: escapes and controls removed, blank runs squeezed, capped."""
    lines = [line.rstrip() for line in _strip(text).split("\n")]
    body = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return cap(body, limit)


def escape_markup(text: str) -> str:
    """For servers with the body-markup capability: shown as text, not as tags or links."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class Notifier:
    """Shows notifications; one instance per daemon, created on the first NOTIFY."""

    def __init__(self, max_chars: int) -> None:
        self.max_chars = max_chars
        self._library: Any = None  # desktop_notifier.DesktopNotifier, imported on first use
        self._bus: Any = None  # our own dbus_fast connection for the capability check
        self._lock: Optional[asyncio.Lock] = None

    async def notify(self, title: str, body: str) -> None:
        title = clean_title(title, self.max_chars)
        body = clean_body(body, self.max_chars)
        # Sizes only: peer text never reaches the log.
        log.info("notification (title of %d characters, body of %d)", len(title), len(body))
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # one at a time: the library's failure report is per call
            if sys.platform == "darwin":
                await self._notify_macos(title, body)
            else:
                capabilities = await self._dbus_capabilities()
                shown = escape_markup(body) if "body-markup" in capabilities else body
                await self._send(title, shown)

    # ---- D-Bus: is anybody there? ----------------------------------------------------------

    async def _dbus_capabilities(self) -> FrozenSet[str]:
        """GetCapabilities of the notification service; D-Bus starts it if it is activatable."""
        try:
            from dbus_fast import Message, MessageType
            from dbus_fast.aio import MessageBus
        except ImportError as exc:
            raise Rejected(messages.E_NOTIFY, NO_SERVICE + f"the D-Bus library is missing ({exc})") from None
        try:
            if self._bus is None or not self._bus.connected:
                self._bus = await asyncio.wait_for(MessageBus().connect(), BUS_TIMEOUT)
            reply = await asyncio.wait_for(
                self._bus.call(
                    Message(
                        destination=_BUS_NAME,
                        path=_OBJECT_PATH,
                        interface=_BUS_NAME,
                        member="GetCapabilities",
                    )
                ),
                BUS_TIMEOUT,
            )
        except asyncio.TimeoutError:
            self._drop_bus()
            raise Rejected(
                messages.E_NOTIFY, NO_SERVICE + f"the session bus or {_BUS_NAME} did not answer"
            ) from None
        except Exception as exc:  # no bus address, connection refused, authentication...
            self._drop_bus()
            raise Rejected(messages.E_NOTIFY, NO_SERVICE + _bus_failure(exc)) from None
        if reply.message_type == MessageType.ERROR:
            detail = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
            raise Rejected(
                messages.E_NOTIFY,
                NO_SERVICE + f"nothing provides {_BUS_NAME} on the session bus "
                f"({reply.error_name}{': ' + detail if detail else ''})",
            )
        capabilities = reply.body[0] if reply.body else []
        return frozenset(c for c in capabilities if isinstance(c, str))

    def _drop_bus(self) -> None:
        if self._bus is not None:
            try:
                self._bus.disconnect()
            except Exception:
                pass
            self._bus = None

    # ---- sending through desktop-notifier --------------------------------------------------

    def _notifier(self) -> Any:
        if self._library is None:
            from desktop_notifier import DesktopNotifier

            self._library = DesktopNotifier(app_name=APP_NAME, app_icon=None)
        return self._library

    def _forget_notifier(self) -> None:
        """After a failure, start again with a fresh library object (and bus connection)."""
        backend = getattr(self._library, "_backend", None)
        bus = getattr(backend, "bus", None)
        if bus is not None:
            try:
                bus.disconnect()
            except Exception:
                pass
        self._library = None

    async def _send(self, title: str, body: str) -> None:
        """Send through the library and find out whether it worked (it does not raise)."""
        notifier = self._notifier()
        dispatched: List[bool] = []
        problems: List[str] = []
        catcher = _Catcher(problems)
        library_log = logging.getLogger("desktop_notifier")
        library_log.addHandler(catcher)
        try:
            await asyncio.wait_for(
                notifier.send(title, body, on_dispatched=lambda: dispatched.append(True)),
                BUS_TIMEOUT,
            )
        except asyncio.TimeoutError:
            problems.append("the notification service did not answer")
        except Exception as exc:
            problems.append(f"{type(exc).__name__}: {exc}")
        finally:
            library_log.removeHandler(catcher)
        if problems or not dispatched:
            self._forget_notifier()
            reason = "; ".join(problems) or "the notification was not delivered"
            raise Rejected(messages.E_NOTIFY, NO_SERVICE + reason)

    async def _notify_macos(self, title: str, body: str) -> None:
        from desktop_notifier.main import get_backend_class

        if get_backend_class().__name__ != "DummyNotificationCenter":
            notifier = self._notifier()
            if not await notifier.request_authorisation():
                raise Rejected(
                    messages.E_NOTIFY,
                    NO_SERVICE + "notifications are not allowed for this program "
                    "(System Settings > Notifications)",
                )
            await self._send(title, body)
            return
        # desktop-notifier needs an app bundle on macOS; outside one, Notification Center is
        # reached through osascript. The script text is constant: title and body travel as
        # separate argv elements, never inside the script or through a shell.
        await _run_osascript(title, body)


async def _run_osascript(title: str, body: str) -> None:
    argv = [
        "/usr/bin/osascript",
        "-e",
        "on run argv",
        "-e",
        "display notification (item 3 of argv) with title (item 2 of argv)",
        "-e",
        "end run",
        "rtun",
        title,
        body,  # a fixed first argument: nothing after it is read as an option
    ]
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), BUS_TIMEOUT)
    except OSError as exc:
        raise Rejected(messages.E_NOTIFY, NO_SERVICE + f"cannot run osascript: {exc.strerror}") from None
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise Rejected(messages.E_NOTIFY, NO_SERVICE + "osascript did not finish") from None
    if proc.returncode != 0:
        detail = " ".join(err.decode("utf-8", "replace").split())[:200]
        raise Rejected(messages.E_NOTIFY, NO_SERVICE + f"osascript failed: {detail}")


def _bus_failure(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if "DBUS_SESSION_BUS_ADDRESS" in text:
        return (
            "no D-Bus session bus (DBUS_SESSION_BUS_ADDRESS is not set): start the rtun daemon "
            "from your desktop session"
        )
    if isinstance(exc, OSError) and exc.strerror:
        return f"cannot reach the D-Bus session bus: {exc.strerror.lower()}"
    return f"cannot reach the D-Bus session bus: {text}"


class _Catcher(logging.Handler):
    """Collects the warnings desktop-notifier logs instead of raising."""

    def __init__(self, problems: List[str]) -> None:
        super().__init__(logging.WARNING)
        self.problems = problems

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            message = f"{message}: {type(exc).__name__}: {exc}"
        self.problems.append(message)
