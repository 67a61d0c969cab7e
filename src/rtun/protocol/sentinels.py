"""The markers ``next_event`` returns besides events, shared by the sender and the receiver.

One object per meaning, compared with ``is``: a pump written against the sender and one written
against the receiver test for the very same ``NEED_DATA`` (two look-alike objects once let a
pump compare with the wrong one and wait forever). In the manner of h11's ``_util.Sentinel``.
"""

from __future__ import annotations


class Sentinel:
    """A named marker: equal only to itself, shown by its name."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name

    def __copy__(self) -> Sentinel:
        return self  # a copy would not be the marker any more

    def __deepcopy__(self, memo: object) -> Sentinel:
        return self

    def __reduce__(self) -> str:
        return self._name  # pickled by name: unpickling gives this module's object


NEED_DATA = Sentinel("NEED_DATA")  # feed more bytes, then call next_event again
CLOSED = Sentinel("CLOSED")  # the peer ended the connection cleanly, between requests
