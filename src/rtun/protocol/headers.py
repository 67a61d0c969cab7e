"""The fields of rtun/2's JSON headers: how each is read (checked, or refused with
``Rejected``) and written. No I/O and no state; ``wire``'s table names which request has which.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # importing typing costs start-up time the client cannot spare
    from typing import Any, Callable, Dict, Optional, Tuple

from rtun.protocol.limits import MAX_MTIME, MAX_SIZE_DIGITS
from rtun.protocol.messages import (
    CLIPBOARD_TYPES,
    E_BAD_PATH,
    E_BAD_REQUEST,
    E_BAD_SIZE,
    EDIT_RESULTS,
    UPDATE_MODES,
    Rejected,
)

_loads: "Optional[Any]" = None  # json.loads, imported on first use: v1 requests and the
# client's PING never need it


def json_object(text: str) -> Dict[str, Any]:
    global _loads
    if _loads is None:
        import json

        _loads = json.loads
    try:
        value = _loads(text)
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested past the stack
        raise Rejected(E_BAD_REQUEST, "malformed JSON header") from None
    if not isinstance(value, dict):
        raise Rejected(E_BAD_REQUEST, "JSON header must be an object")
    return value


def json_field(obj: Dict[str, Any], key: str, kind: type, default: Any = None) -> Any:
    value = obj.get(key, default)
    # bool is an int subclass; a size of true is not a size.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise Rejected(E_BAD_REQUEST, f"field {key!r} must be {kind.__name__}")
    if isinstance(value, str):
        try:
            value.encode("utf-8")  # a JSON "\ud800" escape is a lone surrogate: not text
        except UnicodeEncodeError:
            raise Rejected(E_BAD_REQUEST, f"field {key!r} is not valid Unicode") from None
    return value


def dumps(obj: Any) -> str:
    import json

    # ensure_ascii keeps every header on one line whatever the names contain.
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True)


# ---- the fields of rtun/2's JSON headers: each reader checks one, or raises Rejected --------


def plain(kind: type, default: Any = None) -> Callable[[Dict[str, Any], str], Any]:
    """A field of ``kind``, required unless it has a default."""
    return lambda obj, key: json_field(obj, key, kind, default)


text, text_or_empty, false, true = plain(str), plain(str, ""), plain(bool, False), plain(bool, True)


def name(obj: Dict[str, Any], key: str) -> str:
    value: str = json_field(obj, key, str)
    if not value:
        raise Rejected(E_BAD_PATH, "missing file name")
    return value


def size(obj: Dict[str, Any], key: str) -> int:
    value: int = json_field(obj, key, int)
    if value < 0 or len(str(value)) > MAX_SIZE_DIGITS:
        raise Rejected(E_BAD_SIZE, f"field {key!r} is not a size")
    return value


def total(obj: Dict[str, Any], key: str) -> int:
    value: int = json_field(obj, key, int, 0)
    if value < 0:
        raise Rejected(E_BAD_SIZE, "negative totals")
    return value


def mode(obj: Dict[str, Any], key: str) -> int:
    value: int = json_field(obj, key, int, 0o644)
    if not 0 <= value <= 0o7777:
        raise Rejected(E_BAD_REQUEST, f"field {key!r} must be a file mode")
    return value


def mtime(obj: Dict[str, Any], key: str) -> float:
    value = obj.get(key, 0.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_MTIME:
        raise Rejected(E_BAD_REQUEST, f"field {key!r} must be a time")
    return float(value)


def hex_digest(obj: Dict[str, Any], key: str) -> str:
    value: str = json_field(obj, key, str)
    if not 16 <= len(value) <= 64 or value.strip("0123456789abcdef"):
        raise Rejected(E_BAD_REQUEST, f"field {key!r} must be 16 to 64 lowercase hex digits")
    return value


def update(obj: Dict[str, Any], key: str) -> str:
    value: str = json_field(obj, key, str, "")
    if value not in UPDATE_MODES:
        raise Rejected(E_BAD_REQUEST, f"unknown update mode {value[:40]!r}")
    return value


def clipboard_type(obj: Dict[str, Any], key: str) -> str:
    value: str = json_field(obj, key, str, "")
    if value not in CLIPBOARD_TYPES:  # never passed on: only the fixed list reaches a tool
        raise Rejected(E_BAD_REQUEST, f"unknown clipboard type {value[:40]!r}")
    return value


def edit_result(obj: Dict[str, Any], key: str) -> str:
    result: str = json_field(obj, key, str, "")
    if result not in EDIT_RESULTS:
        raise Rejected(E_BAD_REQUEST, f"unknown edit result {result[:40]!r}")
    return result


def port(obj: Dict[str, Any], key: str) -> int:
    value: int = json_field(obj, key, int, 0)
    if not 0 <= value <= 65535:
        raise Rejected(E_BAD_REQUEST, f"field {key!r} must be a TCP port")
    return value


def count(obj: Dict[str, Any], key: str) -> int:
    value: int = json_field(obj, key, int)
    if not 0 <= value < 2**63:
        raise Rejected(E_BAD_REQUEST, f"field {key!r} must be a count")
    return value


if TYPE_CHECKING:
    # A JSON field: its key, its reader, the value's attribute, and whether it is left out of
    # the header while it holds its default (so older daemons never see it).
    Field = Tuple[str, Callable[[Dict[str, Any], str], Any], str, bool]


def field(
    key: str, read: Callable[[Dict[str, Any], str], Any], attr: str = "", omit_default: bool = False
) -> Field:
    return (key, read, attr or key, omit_default)
