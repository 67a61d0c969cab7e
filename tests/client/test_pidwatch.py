"""rtun.client.pidwatch's pure parts: /proc/PID/stat parsed whatever the process's name holds,
and an exit status told only where the kernel really showed it."""

from __future__ import annotations

import pytest

from rtun.client.pidwatch import ProcStat, exit_code, parse_stat, status_from_stat


def _stat_line(name: bytes, state: bytes = b"S", arg_start: int = 140722, wait_status: int = 0) -> bytes:
    """A /proc/PID/stat line as Linux 6 writes it: 52 fields, 48 the arguments' address, 52 the
    exit code (the wait status)."""
    fields = [b"4242", b"(" + name + b")", state] + [b"0"] * 49
    fields[47] = str(arg_start).encode()
    fields[51] = str(wait_status).encode()
    return b" ".join(fields) + b"\n"


def test_a_name_with_spaces_and_parentheses_does_not_shift_the_fields():
    stat = parse_stat(_stat_line(b"a) b (c", state=b"Z", arg_start=77, wait_status=7 << 8))
    assert (stat.name, stat.state, stat.arg_start, stat.exit_code) == ("a) b (c", "Z", 77, 7 << 8)


def test_a_name_that_looks_like_fields_is_still_the_name():
    stat = parse_stat(_stat_line(b") R 1 2 3 (", state=b"S"))
    assert (stat.name, stat.state) == (") R 1 2 3 (", "S")


def test_an_older_kernels_shorter_line_has_no_exit_code():
    stat = parse_stat(b"12 (sh) S 1 12 12 0 -1")
    assert (stat.name, stat.state, stat.arg_start, stat.exit_code) == ("sh", "S", None, None)


@pytest.mark.parametrize("data", [b"", b"12 sh S 1", b"12 (sh)", b"12 )sh( S"])
def test_what_is_not_a_stat_line_is_refused(data):
    with pytest.raises(ValueError):
        parse_stat(data)


def test_a_wait_status_reads_as_a_shell_says_it():
    assert [exit_code(s) for s in (0, 7 << 8, 255 << 8, 15, 9 | 0x80)] == [0, 7, 255, 143, 137]


def _zombie(wait_status: int) -> ProcStat:
    return parse_stat(_stat_line(b"job", state=b"Z", arg_start=0, wait_status=wait_status))


def test_the_status_is_known_only_from_a_zombie_the_kernel_shows_us():
    assert status_from_stat(_zombie(0), permitted=True) == 0
    assert status_from_stat(_zombie(3 << 8), permitted=True) == 3
    assert status_from_stat(None, permitted=True) is None  # reaped already: nothing to read
    alive = parse_stat(_stat_line(b"job", state=b"S", wait_status=0))
    assert status_from_stat(alive, permitted=True) is None


def test_a_hidden_status_reads_0_and_is_not_taken_for_success():
    assert status_from_stat(_zombie(0), permitted=False) is None
    assert status_from_stat(_zombie(2 << 8), permitted=False) == 2  # only 0 hides anything
