"""Property tests of what a hostile peer controls: the wire decoders and the path rules.

- every message the encoders can produce parses back to itself;
- any bytes at all make the decoders return or raise ``Rejected``, nothing else;
- ``names.components``/``join`` either refuse a path or give components that stay below the
  root; ``link_stays_inside`` never keeps a link whose target resolves outside the transfer;
- the coverage-guided fuzz target (fuzz/fuzz_receiver.py) holds under hypothesis's inputs and
  its seeds, and atheris runs it for a few seconds without a crash.
"""

from __future__ import annotations

import importlib.util
import json
import os
import posixpath
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, List, Tuple

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rtun.protocol import limits, messages, names, wire
from rtun.protocol.messages import Rejected

try:
    from rtun.protocol import framing
except ImportError:  # before the split, the upload framing lived in wire
    framing = wire

FUZZ_TARGET = Path(__file__).resolve().parents[2] / "fuzz" / "fuzz_receiver.py"
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _load_target() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_receiver", FUZZ_TARGET)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TARGET = _load_target()

# ---- strategies -----------------------------------------------------------------------------

# Text a line can carry: valid Unicode (no lone surrogates: they have no UTF-8), no line break.
line_text = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=60)
word = st.text(st.characters(codec="utf-8").filter(lambda c: not c.isspace()), min_size=1, max_size=12)
any_text = st.text(max_size=60)
sizes = st.integers(min_value=0, max_value=10**limits.MAX_SIZE_DIGITS - 1)
counts = st.integers(min_value=0, max_value=2**63)
modes = st.integers(min_value=0, max_value=0o7777)
mtimes = st.floats(min_value=0, max_value=limits.MAX_MTIME, exclude_max=True, allow_nan=False)

requests = st.one_of(
    st.just(messages.Ping()),
    st.just(messages.Pid()),
    st.just(messages.Shutdown()),
    st.builds(messages.Echo, line_text),
    st.builds(messages.Notify, line_text.filter(lambda t: " " not in t), line_text),
    st.builds(messages.Send, sizes, line_text.filter(bool)),
    st.builds(messages.View, sizes, line_text.filter(bool)),
    st.builds(messages.Hello, st.lists(word, max_size=4).map(tuple)),
    st.builds(messages.Notify2, any_text, any_text),
    st.builds(messages.Put, any_text, st.booleans(), counts, counts),
)
entries = st.one_of(
    st.builds(framing.DirEntry, any_text, modes, mtimes),
    st.builds(framing.FileEntry, any_text, modes, mtimes, st.none() | counts),
    st.builds(framing.LinkEntry, any_text, any_text),
    st.just(framing.EndEntry()),
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
json_objects = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["dir", "file", "link", "end", "fifo"]) | json_values,
        "path": st.sampled_from(["a", "a/b", "../x", "/etc", ""]) | json_values,
        "mode": json_values,
        "mtime": json_values,
        "size": json_values,
        "target": json_values,
        "dest": json_values,
        "bytes": json_values,
        "files": json_values,
        "overwrite": json_values,
        "title": json_values,
        "body": json_values,
    },
)
PREFIXES = [
    b"",
    b"PING",
    b"PID",
    b"ECHO",
    b"SHUTDOWN",
    b"NOTIFY",
    b"NOTIFY2",
    b"SEND",
    b"VIEW",
    b"PUT",
    b"SEND RTUN/2",
    b"OK",
    b"READY",
    b"ERROR",
    b"ERROR 1",
    b"OK {",
]
EOLS = [b"", b"\r\n", b"\n", b"\r", b"\n\n"]
hostile_lines = st.one_of(
    st.binary(max_size=200),
    st.tuples(
        st.sampled_from(PREFIXES),
        st.sampled_from([b"", b" ", b"  "]),
        st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")),
        st.sampled_from(EOLS),
    ).map(b"".join),
    st.tuples(
        st.sampled_from([b"", b"PUT ", b"NOTIFY2 "]),
        json_objects.map(lambda o: json.dumps(o).encode()),
        st.sampled_from(EOLS),
    ).map(b"".join),
    st.tuples(
        st.sampled_from([b"ERROR ", b"SEND ", b"VIEW ", b""]),
        st.text(st.characters(categories=["Nd", "No"]), min_size=1, max_size=3).map(str.encode),
        st.sampled_from([b" x", b"", b" "]),
        st.sampled_from(EOLS),
    ).map(b"".join),
    st.from_regex(rb"\A[0-9a-fA-F]{0,70}(\r\n|\n)?\Z"),
)
DECODERS: List[Tuple[str, Callable[[bytes], Any]]] = [
    ("parse_request", wire.parse_request),
    ("parse_reply", wire.parse_reply),
    ("parse_entry", framing.parse_entry),
    ("parse_chunk_header", framing.parse_chunk_header),
    ("parse_checksum", framing.parse_checksum),
]

# Paths: mostly made of the pieces that matter, sometimes anything.
path_pieces = st.sampled_from(
    [
        "a",
        "b",
        ".",
        "..",
        "",
        "/",
        "\x00",
        "...",
        ".rtun-1-ab.part",
        "\u202e",
        " ",
        "\\",
        "\u00e9",
        "x" * 256,
        "\udc80",
        "\x85",
    ]
)
paths = st.one_of(
    st.lists(path_pieces, max_size=8).map("".join),
    st.text(max_size=80),
    st.lists(st.sampled_from(["a", "..", "."]), min_size=60, max_size=70).map("/".join),
)


# ---- round trips ------------------------------------------------------------------------------


@FAST
@given(requests)
def test_every_request_parses_back_to_itself(request: Any) -> None:
    line = wire.encode_request(request)
    assert line.endswith(b"\r\n") and line.count(b"\n") == 1
    assert wire.parse_request(line) == request
    assert wire.parse_request(line[:-2]) == request  # without its line ending
    assert wire.parse_request(line[:-2] + b"\n") == request  # or with a bare LF


@FAST
@given(entries)
def test_every_entry_parses_back_to_itself(entry: Any) -> None:
    line = framing.encode_entry(entry)
    assert line.endswith(b"\r\n") and line.count(b"\n") == 1
    assert framing.parse_entry(line) == entry


def _outcome(parse: Callable[[bytes], Any], line: bytes) -> Any:
    try:
        return parse(line)
    except Rejected as exc:
        return ("rejected", exc.code)


file_lines = st.one_of(
    st.builds(
        lambda e: framing.encode_entry(e),
        st.builds(  # as rtun writes them: the fast path
            framing.FileEntry,
            st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40),
            st.integers(min_value=0, max_value=0o20000),
            st.floats(min_value=0, max_value=2e11) | st.integers(0, 10**12),
            st.integers(min_value=0, max_value=2**70),
        ),
    ),
    st.builds(
        lambda e: framing.encode_entry(e),
        st.builds(
            framing.FileEntry,
            any_text,
            st.integers(min_value=-5, max_value=0o20000),
            st.floats(allow_nan=False) | st.integers(min_value=-10, max_value=10**12),
            st.none() | st.integers(min_value=-3),
        ),
    ),
    st.builds(
        lambda mode, mtime, size, path, end: (
            b'{"type":"file","path":"%s","mode":%s,"mtime":%s,"size":%s}%s' % (path, mode, mtime, size, end)
        ),
        st.from_regex(rb"\A-?[0-9]{1,12}\Z"),
        st.from_regex(rb"\A-?[0-9]{1,25}(\.[0-9]{0,32})?([eE][-+]?[0-9]{0,4})?\Z"),
        st.from_regex(rb"\A-?[0-9]{1,22}\Z"),
        st.binary(max_size=12),
        st.sampled_from([b"\r\n", b"\n", b"\r", b"", b" \n"]),
    ),
)


@FAST
@given(file_lines)
@example(b'{"type":"file","path":"a","mode":0,"mtime":0,"size":0}\r\n')
@example(b'{"type":"file","path":"a","mode":4096,"mtime":1e999,"size":1}\n')
@example(b'{"type":"file","path":"a","mode":01,"mtime":1,"size":1}\n')
def test_the_fast_file_entry_parser_reads_what_json_does(line: bytes) -> None:
    """File entries as rtun writes them skip json.loads: same entries, same refusals."""
    assert _outcome(framing.parse_entry, line) == _outcome(framing._parse_entry_json, line)


@FAST
@given(
    st.one_of(
        st.builds(framing.DirEntry, any_text, st.integers(), st.floats() | st.integers()),
        st.builds(
            framing.FileEntry, any_text, st.integers(), st.floats() | st.integers(), st.none() | st.integers()
        ),
    )
)
def test_the_fast_entry_encoder_writes_what_json_dumps_does(entry: Any) -> None:
    """Files and directories skip json.dumps; any text, number, NaN or infinity encodes the same."""
    assert framing.encode_entry(entry) == framing._encode_entry_json(entry)


@FAST
@given(st.integers(min_value=0, max_value=limits.MAX_CHUNK), st.binary(min_size=32, max_size=32))
def test_chunk_headers_and_checksums_parse_back(length: int, digest: bytes) -> None:
    assert framing.parse_chunk_header(framing.encode_chunk_header(length)) == length
    assert framing.parse_checksum(framing.encode_checksum(digest.hex())) == digest.hex()


@FAST
@given(line_text, st.integers(min_value=100, max_value=999), line_text)
def test_replies_parse_back(text: str, code: int, message: str) -> None:
    assert wire.parse_reply(wire.ok(text)) == messages.Reply(True, text, None)
    assert wire.parse_reply(wire.READY) == messages.Reply(True, "READY", None)
    line = wire.error(code, message)
    assert line.endswith(b"\r\n") and line.count(b"\n") == 1
    reply = wire.parse_reply(line)
    assert not reply.ok and reply.code == code
    flat = " ".join(message.split())
    if flat:
        assert reply.text == flat


# ---- hostile bytes ------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(hostile_lines)
@example(b"ERROR \xc2\xb2 superscript two is a digit to str.isdigit, not to int\r\n")
@example(b'PUT {"bytes": 1e400}\r\n')
@example(b'{"type":"file","path":"f","mtime":NaN}\r\n')
@example(b'{"type":"file","path":"f","size":' + b"9" * 5000 + b"}\r\n")
@example(b"PUT " + b"[" * 50_000 + b"\r\n")
def test_any_bytes_make_the_decoders_answer_or_reject_nothing_else(line: bytes) -> None:
    for name, decode in DECODERS:
        try:
            decode(line)
        except Rejected as exc:
            assert 100 <= exc.code <= 999, (name, exc.code)
            assert isinstance(exc.text, str)
        except Exception as exc:  # a finding: report the input
            pytest.fail(f"{name}({line[:120]!r}) raised {type(exc).__name__}: {exc}")


# ---- path confinement ---------------------------------------------------------------------------

ROOT = "/srv/save"


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root + "/")


@settings(max_examples=300, deadline=None)
@given(paths)
@example("a/../../etc")
@example("a\x00b")
@example("./a")
@example("a/")
def test_components_refuse_or_stay_inside_the_root(path: str) -> None:
    try:
        parts = names.components(path)
    except Rejected as exc:
        assert exc.code == messages.E_BAD_PATH
        return
    assert parts and len(parts) <= limits.MAX_DEPTH
    for part in parts:
        assert part not in ("", ".", "..") and "/" not in part and "\x00" not in part
        assert not names.is_part_name(part)
    joined = posixpath.normpath(os.path.join(ROOT, *parts))
    assert _inside(joined, ROOT) and joined != ROOT
    assert joined == os.path.join(ROOT, *parts)  # nothing for normalisation to take away


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["in", "d", "e\u00e9"]), max_size=3).map(tuple), paths)
def test_join_refuses_or_stays_inside_the_root(base: Tuple[str, ...], path: str) -> None:
    try:
        parts = names.join(base, path)
    except Rejected as exc:
        assert exc.code == messages.E_BAD_PATH
        return
    assert parts[: len(base)] == base and len(parts) <= limits.MAX_DEPTH
    assert all(p not in ("", ".", "..") and "/" not in p and "\x00" not in p for p in parts)
    assert _inside(posixpath.normpath(os.path.join(ROOT, *parts)), os.path.join(ROOT, *base))


link_names = st.lists(st.sampled_from(["a", "b", "c", "..x"]), min_size=1, max_size=6).map(tuple)
targets = st.one_of(
    st.lists(st.sampled_from(["..", ".", "a", "b", "", "x.so"]), max_size=8).map("/".join),
    st.lists(st.sampled_from(["..", ".", "a", ""]), max_size=6).map(lambda p: "/" + "/".join(p)),
    st.text(max_size=20),
)


@settings(max_examples=400, deadline=None)
@given(link_names, st.integers(min_value=0, max_value=7), targets)
@example(("t", "lib", "app", "run"), 1, "../x.so")
@example(("t", "lib", "app", "run"), 1, "a/../../../x")
@example(("t", "l"), 1, "../../x")
def test_link_stays_inside_never_keeps_a_link_that_leaves(
    link: Tuple[str, ...], root_depth: int, target: str
) -> None:
    kept = names.link_stays_inside(link, target, root_depth)
    if not kept:
        return
    assert not target.startswith("/") and 1 <= root_depth < len(link)
    root = posixpath.join(ROOT, *link[:root_depth])
    directory = posixpath.dirname(posixpath.join(ROOT, *link))
    resolved = posixpath.normpath(posixpath.join(directory, target))
    assert _inside(resolved, root), f"{'/'.join(link)} -> {target!r} resolves to {resolved}, outside {root}"


@FAST
@given(link_names, st.lists(st.sampled_from(["a", "b", "x.so"]), min_size=1, max_size=4).map("/".join))
def test_a_link_to_plain_names_below_its_own_directory_is_kept(link: Tuple[str, ...], target: str) -> None:
    for depth in range(1, len(link)):
        assert names.link_stays_inside(link, target, depth)
    assert not names.link_stays_inside(link, target, len(link))  # a link directly in dest


# ---- the fuzz target ----------------------------------------------------------------------------


def test_the_fuzz_target_accepts_its_own_seeds() -> None:
    for seed in TARGET.seeds():
        TARGET.one_input(seed)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=600),
        st.tuples(
            st.integers(0, 255), st.sampled_from(TARGET.seeds()), st.binary(max_size=20), st.integers(0, 400)
        ).map(lambda t: bytes([t[0]]) + t[1][1 : t[3]] + t[2] + t[1][t[3] :]),
    )
)
def test_the_fuzz_target_under_hypothesis(data: bytes) -> None:
    TARGET.one_input(data)


UNIT = limits.MIN_RANGE
ranged_files = st.tuples(
    st.integers(1, 8 * UNIT),  # the file's size (the counted disk holds 7 MiB above its reserve)
    st.lists(
        st.tuples(st.integers(0, 8 * UNIT), st.integers(1, 3 * UNIT), st.integers(0, 255), st.booleans()),
        max_size=8,
    ),
    st.booleans(),
    st.booleans(),
    st.sampled_from(["ab" * 16, "cd" * 16]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ranged_files, min_size=1, max_size=3), st.binary(max_size=6))
def test_any_ranges_range_commit_sequence_keeps_the_disk_account(files: List[Any], cuts: bytes) -> None:
    """RANGES/RANGE/COMMIT in any order, overlap and size, joins and resumptions, fed to the
    daemon's ranged files through the fuzz target: no part file takes more of the disk than it
    paid for, the disk never goes past its reserve, and nothing stays claimed."""
    stream = b"SEND RTUN/2 ranges\r\n"
    for size, ranges, commit, join, key in files:
        fitted = [(min(o, size - 1), min(n, size - min(o, size - 1)), f, ok) for o, n, f, ok in ranges]
        stream += TARGET.ranged_stream(size, fitted, commit, join, key)
    TARGET.one_input(bytes([0]) + stream + (b"\xff\xff" + cuts if cuts else b""))


def test_a_short_atheris_run_finds_no_crash(tmp_path: Path) -> None:
    if importlib.util.find_spec("atheris") is None:
        pytest.skip("atheris is not installed (pip install atheris)")
    corpus = tmp_path / "corpus"
    subprocess.run([sys.executable, str(FUZZ_TARGET), "--write-corpus", str(corpus)], check=True)
    result = subprocess.run(
        [
            sys.executable,
            str(FUZZ_TARGET),
            str(corpus),
            "-max_total_time=6",
            "-print_final_stats=1",
            "-rss_limit_mb=1024",
            "-timeout=10",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    runs = re.search(r"stat::number_of_executed_units:\s*(\d+)", output)
    assert runs and int(runs.group(1)) > 1000, output[-2000:]
    assert not list(tmp_path.glob("crash-*")) and not list(tmp_path.glob("timeout-*"))
