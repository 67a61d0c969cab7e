"""The pure path rules the protocol core applies to every name a client sends."""

from __future__ import annotations

import pytest

from rtun.protocol import messages, names
from rtun.protocol.messages import Rejected


@pytest.mark.parametrize("path", ["a", "a/b/c.txt", "with space/ünïcødé ✓.txt", ".hidden", "a/..b", "...."])
def test_components_accepts_ordinary_relative_paths(path: str) -> None:
    assert names.components(path) == tuple(path.split("/"))


@pytest.mark.parametrize(
    "path",
    [
        "",
        "/etc/passwd",
        "../x",
        "a/../../x",
        "a/..",
        "..",
        ".",
        "./a",
        "a/./b",
        "a//b",
        "a/",
        "a\x00b",
        "a\nb",
        "\x1b[31mred",
        "x" * 256,
        "/".join(["d"] * 65),
        ("a/" * 2100) + "b",
        "\ud800",
        "a/.rtun-1-abc.part",
    ],
)
def test_components_refuses_paths_that_could_escape_or_mislead(path: str) -> None:
    with pytest.raises(Rejected) as caught:
        names.components(path)
    assert caught.value.code == messages.E_BAD_PATH


def test_join_refuses_escape_from_a_base() -> None:
    assert names.join(("dest",), "a/b") == ("dest", "a", "b")
    with pytest.raises(Rejected):
        names.join(("dest",), "../b")


@pytest.mark.parametrize(
    "link, target, inside",
    [
        (("top", "sub", "l"), "../a.txt", True),
        (("top", "l"), "sub/x", True),
        (("top", "l"), ".", True),
        (("top", "l"), "..", False),
        (("top", "sub", "l"), "../../outside", False),
        (("top", "l"), "/etc/passwd", False),
        (("top", "l"), "", False),
        # ".." after a name: the name may be a link, so text normalisation proves nothing.
        (("top", "sub", "l"), "../sub/../../top/a", False),
        (("top", "d1", "d2", "b"), "a/../../../etc/passwd", False),
        (("top", "d1", "d2", "a"), "../..", True),
        (("top", "d1", "d2", "a"), "../../..", False),
        (("top", "l"), "./x/./y", True),
    ],
)
def test_link_stays_inside_the_sent_directory(link: tuple, target: str, inside: bool) -> None:
    assert names.link_stays_inside(link, target, root_depth=1) is inside


def test_link_at_the_top_of_a_transfer_is_never_inside() -> None:
    assert not names.link_stays_inside(("l",), "x", root_depth=1)


@pytest.mark.parametrize("char", ["\x85", "\x9b", "\u202e", "\u2066", "\u200f", "\ufeff", "\x1b"])
def test_c1_controls_and_bidirectional_characters_are_refused(char: str) -> None:
    with pytest.raises(Rejected, match="control or bidirectional"):
        names.components(f"invoice{char}fdp.exe")
    with pytest.raises(Rejected, match="control or bidirectional"):
        names.check_link_target(f"target{char}")


def test_refusals_show_peer_text_escaped_as_ascii() -> None:
    with pytest.raises(Rejected) as info:
        names.components("a/../\u202eevil")
    assert info.value.text.isascii() and "\\u202e" in info.value.text


def test_ordinary_link_targets_pass() -> None:
    names.check_link_target("../sibling/ünï.txt")
    with pytest.raises(Rejected):
        names.check_link_target("x" * 5000)
