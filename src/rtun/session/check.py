"""One result of `rtun doctor`: a :class:`Check` is ``ok``, ``warn`` (works, but worth knowing)
or ``fail`` (something rtun does will not work), with a one-line detail and what to do."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict

OK, WARN, FAIL = "ok", "warn", "fail"


class Check:
    def __init__(self, name: str, status: str, detail: str, fix: str = "") -> None:
        self.name = name
        self.status = status
        self.detail = detail
        self.fix = fix

    def as_dict(self) -> "Dict[str, str]":
        return {"name": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}
