"""SendOptions: the one value that says where and how `rtun send` puts files."""

from __future__ import annotations

import pytest

from rtun.client.options import SendOptions


def test_defaults_discover_the_socket_and_send_to_the_save_directory_resumably() -> None:
    options = SendOptions()
    assert (options.socket, options.dest, options.overwrite, options.channels, options.resume) == (
        None,
        "",
        False,
        0,
        True,
    )


def test_options_are_given_by_name_only() -> None:
    with pytest.raises(TypeError):
        SendOptions("/tmp/rtun.sock")  # type: ignore[misc]


def test_below_joins_directories_and_keeps_the_rest() -> None:
    options = SendOptions(socket="s", overwrite=True, channels=3, resume=False)
    assert options.below("a").dest == "a"
    assert options.below("a").below("b/c").below("") == SendOptions(
        socket="s", dest="a/b/c", overwrite=True, channels=3, resume=False
    )
    assert options.dest == ""  # not changed: a new value
