"""The client package runs on servers without pip (the single-file client bundles it): importing
any of its modules, in a fresh interpreter, pulls in the standard library and these rtun modules
only, and the modules every command starts with do not pay for `typing`."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

import rtun.client

MODULES = sorted(f"rtun.client.{m.name}" for m in pkgutil.iter_modules(rtun.client.__path__))

# rtun.paths besides the protocol, the errors and the client itself: the daemon and `rtun ssh`
# make the sockets that discovery looks for, so where they live and how they are named is said in
# one place both sides import (stdlib only, nothing read at import).
ALLOWED_RTUN = ("rtun", "rtun.client", "rtun.protocol", "rtun.errors", "rtun.paths")

# Started on every command that talks to the daemon: `typing` alone costs milliseconds.
WITHOUT_TYPING = (
    "rtun.client.pump",
    "rtun.client.discovery",
    "rtun.client.handshake",
    "rtun.client.requests",
    "rtun.client.options",
    "rtun.client.sources",
    "rtun.client.upload",
    "rtun.client.parallel",
    "rtun.client.edit",
    "rtun.client.outcome",
    "rtun.client.stream",
    "rtun.client.update",
    "rtun.client.forward",
    "rtun.client.pidwatch",
    "rtun.client.osc52",
)

# Isolated (-I: no environment, no user site), this tree's source first.
_PROBE = """
import sys
sys.path.insert(0, sys.argv[1])
before = set(sys.modules)
__import__(sys.argv[2])
new = sorted(set(sys.modules) - before)
import json
print(json.dumps(new))
"""
SRC = str(Path(rtun.client.__file__).resolve().parent.parent.parent)


def _imported(module: str) -> List[str]:
    done = subprocess.run([sys.executable, "-I", "-c", _PROBE, SRC, module], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result: List[str] = json.loads(done.stdout)
    return result


@pytest.fixture(scope="module")
def imported() -> Dict[str, List[str]]:
    return {module: _imported(module) for module in MODULES}


def test_every_module_of_the_package_is_probed() -> None:
    assert set(WITHOUT_TYPING) <= set(MODULES)
    assert len(MODULES) == len(WITHOUT_TYPING)  # a new module is added to the lists above


@pytest.mark.parametrize("module", MODULES)
def test_a_client_module_imports_only_the_stdlib_and_the_client_side_of_rtun(
    imported: Dict[str, List[str]], module: str
) -> None:
    names = imported[module]
    assert module in names  # the probe really imported it, fresh
    outside = [
        name
        for name in names
        if not (
            name.split(".")[0] in sys.stdlib_module_names
            or name in ALLOWED_RTUN
            or name.startswith(tuple(p + "." for p in ALLOWED_RTUN[1:]))
        )
    ]
    assert outside == []


@pytest.mark.parametrize("module", WITHOUT_TYPING)
def test_a_client_module_does_not_import_typing_or_dataclasses(
    imported: Dict[str, List[str]], module: str
) -> None:
    assert not {"typing", "dataclasses"} & set(imported[module])


def test_the_package_itself_imports_none_of_its_modules() -> None:
    names = _imported("rtun.client")
    assert [n for n in names if n.startswith("rtun.client.")] == []
