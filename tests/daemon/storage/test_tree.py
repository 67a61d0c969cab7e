"""Storage below a directory: free names, placing without replacing, modes under any umask,
nothing written through a link. Real files in a temporary directory."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from rtun.daemon.storage import tree
from rtun.protocol import wire
from rtun.protocol.wire import Rejected


@pytest.mark.parametrize(
    "name, attempt, expected",
    [
        ("report.pdf", 0, "report.pdf"),
        ("report.pdf", 1, "report (1).pdf"),
        ("data.tar.gz", 2, "data.tar (2).gz"),
        ("README", 3, "README (3)"),
        (".bashrc", 1, ".bashrc (1)"),
    ],
)
def test_free_name_scheme(name: str, attempt: int, expected: str) -> None:
    assert tree.free_name(name, attempt) == expected
