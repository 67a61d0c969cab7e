"""Text from elsewhere shown safely: one line, bounded, nothing a terminal acts on."""

from __future__ import annotations

import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from rtun.protocol import peertext

# What a terminal acts on, or what makes text read as something it is not.
DANGEROUS = (
    {chr(c) for c in range(0x20)}
    | {chr(c) for c in range(0x7F, 0xA0)}
    | set(
        "\u061c\u200b\u200c\u200d\u200e\u200f\u2028\u2029\u202a\u202b\u202c\u202d\u202e"
        "\u2060\u2066\u2067\u2068\u2069\ufeff"
    )
)
hostile = st.text(
    alphabet=st.one_of(st.sampled_from(sorted(DANGEROUS) + ["\\", "x", " "]), st.characters()), max_size=400
)


def safe(text: str) -> bool:
    return not (set(text) & DANGEROUS) and all(
        unicodedata.category(ch)[0] not in "CZ" or ch == " " for ch in text
    )


@given(hostile, st.integers(min_value=0, max_value=120))
def test_every_form_is_one_safe_bounded_line(text, limit):
    for shown in (
        peertext.escaped(text, limit),
        peertext.ascii_escaped(text, limit),
        peertext.one_line(text, limit),
        peertext.last_line(text, limit),
    ):
        assert safe(shown), shown
        assert len(shown) <= limit + len(peertext.MORE)
    assert peertext.ascii_escaped(text, limit).isascii()
    assert len(peertext.quoted(text, limit)) <= limit + len(peertext.MORE) + 2


@given(st.text(max_size=200))
def test_escaping_keeps_everything_readable_and_is_unambiguous(text):
    # Unbounded, the escaped form reads back as the text itself (so "\\x1b" typed is not ESC).
    assert eval("'" + peertext.ascii_escaped(text, 10**6).replace("'", "\\'") + "'") == text


def test_the_forms():
    assert peertext.escaped("caf\u00e9 \u4e2d\x1b[2J\u202e\\") == "caf\u00e9 \u4e2d\\x1b[2J\\u202e\\\\"
    assert peertext.ascii_escaped("caf\u00e9") == "caf\\xe9"
    assert peertext.quoted("a\nb") == "'a\\nb'"
    assert peertext.one_line("  two\r\nlines\x1b \t ") == "two lines"
    assert peertext.one_line(None) == "" and peertext.one_line("x" * 20, 5) == "xxxxx..."
    assert peertext.escaped("x" * 20, 5) == "xxxxx..."
    assert (
        peertext.last_line("Warning: x\r\nPermission denied\x1b]0;t\x07\n\n")
        == "Permission denied\\x1b]0;t\\x07"
    )
    assert peertext.lines("a\rb\n\n c ") == ["a", "b", "c"]
