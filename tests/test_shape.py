"""Checks that keep the package's shape: the remote commands need only the standard library, no
module imports another that imports it back, and every layer imports only the ones below it."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set

import pytest

from support.rtun import RtunDaemon, clean_env

SRC = Path(__file__).resolve().parent.parent / "src" / "rtun"

# Runs one command in this interpreter and reports every module it imported.
_PROBE = """
import sys
if sys.argv[2] == "--without-argcomplete":  # as on a server where it is not installed
    sys.modules["argcomplete"] = None
    del sys.argv[2]
from rtun.cli import main
code = main(sys.argv[2:])
modules = sorted(name for name, module in sys.modules.items() if module is not None)
import json
with open(sys.argv[1], "w") as f:
    json.dump({"code": code, "modules": modules}, f)
"""


def _imported_by(argv: List[str], home: Path, tmp: Path, **env: str) -> Dict[str, object]:
    report = tmp / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(report)] + argv,
        env=clean_env(home, **env),
        capture_output=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        cwd=str(tmp),
    )
    assert report.exists(), done.stderr
    result: Dict[str, object] = json.loads(report.read_text())
    return result


def _outside_stdlib_and_client(modules: List[str]) -> List[str]:
    client_side = ("rtun.daemon", "rtun.tunnel")
    bad = []
    for name in modules:
        top = name.split(".")[0]
        if name == "rtun" or (name.startswith("rtun.") and not name.startswith(client_side)):
            continue
        if top in sys.stdlib_module_names or top in ("__main__", "_distutils_hack"):
            continue
        bad.append(name)
    return bad


@pytest.fixture
def daemon(start_daemon) -> RtunDaemon:
    """Overrides tests/conftest.py's: its browser is /bin/true, so `rtun open URL` opens nothing."""
    return start_daemon(config='[open]\nbrowser = ["/bin/true"]\n[edit]\neditor = ["/bin/true"]\n')


# The commands of issue 10 whose modules others write (open, copy, paste, edit) are listed here
# too: each must import only the stdlib and the client, like the rest.
@pytest.mark.parametrize(
    "argv, code",
    [
        (["ping"], 0),
        (["ping", "--json"], 0),
        (["notify", "-t", "title", "body"], 4),  # no notification service here: the daemon refuses
        (["send", "-q", "payload.txt"], 0),
        (["send", "--json", "payload.txt"], 0),
        (["view", "payload.txt"], None),  # opens, or is refused for want of an opener
        (["open", "https://example.invalid/"], 0),  # the daemon's browser is /bin/true (below)
        (["copy"], None),  # empty standard input; copied, or refused for want of a clipboard
        (["paste"], None),  # refused: off unless allowed
        (["edit", "payload.txt"], None),  # refused for want of an editor
        (["done", "--", "true"], 0),  # the notification fails with a warning; true's 0 passes
        (["done", "--status", "3", "--seconds", "1"], 3),
    ],
)
def test_remote_commands_import_only_the_stdlib_and_the_client(
    daemon: RtunDaemon, short_tmp: Path, argv: List[str], code: object
) -> None:
    (short_tmp / "payload.txt").write_text("payload")
    result = _imported_by(argv[:1] + ["-s", str(daemon.socket)] + argv[1:], short_tmp, short_tmp)
    if code is not None:
        assert result["code"] == code
    modules = result["modules"]
    assert isinstance(modules, list)
    assert "rtun.client" in modules  # the command really talked to the daemon
    assert _outside_stdlib_and_client(modules) == []


def test_version_asks_the_daemon_with_the_stdlib_alone(daemon: RtunDaemon, short_tmp: Path) -> None:
    result = _imported_by(["--version"], short_tmp, short_tmp, RTUN_SOCK=str(daemon.socket))
    assert result["code"] == 0
    modules = result["modules"]
    assert isinstance(modules, list) and "rtun.client" in modules
    assert _outside_stdlib_and_client(modules) == []


@pytest.mark.parametrize("argv", [["completion", "bash"], ["ping"]])
def test_without_argcomplete_the_client_needs_only_the_stdlib(
    daemon: RtunDaemon, short_tmp: Path, argv: List[str]
) -> None:
    result = _imported_by(
        ["--without-argcomplete"] + argv + ["-s", str(daemon.socket)] * (argv[0] == "ping"),
        short_tmp,
        short_tmp,
    )
    assert result["code"] == (1 if argv[0] == "completion" else 0)  # completion says how to get it
    modules = result["modules"]
    assert isinstance(modules, list)
    assert _outside_stdlib_and_client(modules) == []


def test_ping_does_not_pay_for_what_it_does_not_use(daemon: RtunDaemon, short_tmp: Path) -> None:
    modules = _imported_by(["ping", "-s", str(daemon.socket)], short_tmp, short_tmp)["modules"]
    assert isinstance(modules, list)
    for slow in (
        "typing",
        "dataclasses",
        "json",
        "hashlib",
        "rtun.client.upload",
        "rtun.protocol.receiver",
        "argcomplete",
        "rtun.tunnel.commands",
        "rtun.tunnel.readers",
        "rtun.commands.send",
    ):  # nor every command's parser
        assert slow not in modules, slow


# ---- the static import graph -----------------------------------------------------------------


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _runtime_imports(path: Path, known: Set[str]) -> Set[str]:
    """rtun modules ``path`` imports when it runs (not those under ``if TYPE_CHECKING:``)."""
    tree = ast.parse(path.read_text())
    found: Set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for orelse in child.orelse:
                    visit(orelse)
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name.startswith("rtun"))
            elif isinstance(child, ast.ImportFrom) and child.module and child.module.startswith("rtun"):
                for alias in child.names:
                    full = f"{child.module}.{alias.name}"
                    found.add(full if full in known else child.module)
            visit(child)

    visit(tree)
    return {name for name in found if name in known}


def _graph() -> Dict[str, Set[str]]:
    files = {_module_name(p): p for p in SRC.rglob("*.py")}
    return {name: _runtime_imports(path, set(files)) - {name} for name, path in files.items()}


def test_the_package_has_no_import_cycles() -> None:
    graph = _graph()
    state: Dict[str, int] = {}
    cycles: List[List[str]] = []

    def walk(node: str, stack: List[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append(stack[stack.index(target) :] + [target] if target in stack else [node, target])
            elif target not in state:
                walk(target, stack + [target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            walk(node, [node])
    assert cycles == []


@pytest.mark.parametrize(
    "layer, may_import",
    [
        ("rtun.protocol", ("rtun.protocol",)),
        ("rtun.daemon.storage", ("rtun.daemon.storage", "rtun.protocol")),
        ("rtun.daemon.actions", ("rtun.daemon.actions", "rtun.daemon.storage", "rtun.protocol")),
        ("rtun.client", ("rtun.client", "rtun.protocol", "rtun.paths", "rtun.errors")),
        ("rtun.ssh", ("rtun.ssh", "rtun.protocol.peertext", "rtun.errors")),  # ssh, driven from one place
        ("rtun.client.pump", ("rtun.protocol", "rtun.paths", "rtun.errors")),
        ("rtun.client.sources", ("rtun.protocol", "rtun.errors")),
    ],
)
def test_each_layer_imports_only_the_layers_below(layer: str, may_import: tuple) -> None:
    graph = _graph()
    offenders = {
        module: sorted(t for t in targets if t != "rtun" and not t.startswith(may_import))
        for module, targets in graph.items()
        if module == layer or module.startswith(layer + ".")
    }
    assert {m: t for m, t in offenders.items() if t} == {}


def test_the_daemon_imports_nothing_of_the_remote_client() -> None:
    graph = _graph()
    for module, targets in graph.items():
        if module.startswith("rtun.daemon"):
            assert not [t for t in targets if t.startswith("rtun.client")], module


MAX_MODULE_LINES = 450


def test_no_module_is_over_the_size_limit() -> None:
    long = {
        str(p.relative_to(SRC)): n
        for p in SRC.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_only_the_ssh_package_builds_ssh_command_lines() -> None:
    """Every process that runs ssh gets its argv from rtun.ssh: nothing else spells the
    options that make a master or a client of one."""
    offenders = []
    for path in SRC.rglob("*.py"):
        module = _module_name(path)
        if module.startswith("rtun.ssh"):
            continue
        text = path.read_text()
        for needle in ('"-M"', '"ControlMaster=', "'-M'", '"-S"', '"-O"'):
            if needle in text:
                offenders.append(f"{module}: {needle}")
    assert offenders == []
