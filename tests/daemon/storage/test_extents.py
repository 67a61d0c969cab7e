"""The written extents of a sparse file: what each write newly takes, against a plain set of
blocks, whatever the order, overlap and size of the writes; the bound on pieces."""

from __future__ import annotations

from typing import List, Set

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtun.daemon.storage import extents
from rtun.daemon.storage.extents import Extents, block_size
from rtun.protocol import messages

SIZE = 64 * 4096 + 100


def _blocks(offset: int, size: int, block: int) -> Set[int]:
    return set(range(offset // block, -(-(offset + size) // block))) if size else set()


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, SIZE - 1), st.integers(0, 40000)), max_size=80),
    st.sampled_from([512, 4096, 65536]),
)
def test_each_write_pays_exactly_for_the_blocks_it_newly_takes(writes, block) -> None:
    ext = Extents(SIZE, block)
    model: Set[int] = set()
    for offset, size in writes:
        size = min(size, SIZE - offset)
        paid: List[int] = []
        ext.add(offset, size, lambda new, pieces: paid.append(new))
        taken = _blocks(offset, size, block) - model
        model |= taken
        assert sum(paid) == len(taken) * block
        assert ext.covered == len(model)
        assert ext.left_bytes == (-(-SIZE // block) - len(model)) * block
        # the pieces are the model's runs of consecutive blocks
        runs = sum(1 for b in model if b - 1 not in model)
        assert len(ext) == runs


def test_contiguous_chunks_grow_one_piece() -> None:
    ext = Extents(10 * 1024 * 1024)
    for offset in range(0, 10 * 1024 * 1024, 100_000):
        ext.add(offset, min(100_000, 10 * 1024 * 1024 - offset), lambda new, pieces: None)
    assert len(ext) == 1 and ext.left_bytes == 0


def test_a_refusing_payment_changes_nothing() -> None:
    ext = Extents(SIZE)

    def refuse(new: int, pieces: int) -> None:
        raise messages.Rejected(messages.E_NO_SPACE, "no")

    with pytest.raises(messages.Rejected):
        ext.add(8192, 10, refuse)
    assert ext.covered == 0 and len(ext) == 0


def test_pieces_past_the_bound_are_refused(monkeypatch) -> None:
    monkeypatch.setattr(extents, "MAX_EXTENTS", 3)
    ext = Extents(SIZE)
    for i in range(3):
        ext.add(i * 2 * 4096, 1, lambda new, pieces: None)
    with pytest.raises(messages.Rejected) as info:
        ext.add(100 * 4096 // 2, 1, lambda new, pieces: None)
    assert info.value.code == messages.E_BAD_REQUEST
    ext.add(4096, 1, lambda new, pieces: None)  # joining two pieces is always allowed
    assert len(ext) == 2


def test_the_block_is_at_least_4_kib_and_at_most_1_mib() -> None:
    assert (block_size(512), block_size(65536), block_size(1 << 30)) == (4096, 65536, 1 << 20)
