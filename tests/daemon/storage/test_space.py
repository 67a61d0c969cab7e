"""Shared free-space accounting: claims across transfers, data past a claim, the reserve."""

from __future__ import annotations

from pathlib import Path

import pytest

from rtun.daemon.storage.space import CLAIM_STEP, Claim, Space
from rtun.protocol import messages
from rtun.protocol.messages import Rejected

MIB = 1024 * 1024


class Disk:
    """A disk whose free space drops as bytes are written, as statvfs reports it."""

    def __init__(self, free: int) -> None:
        self.free = free

    def __call__(self, directory: str) -> int:
        return self.free


def test_two_transfers_that_each_fit_cannot_both_pass_the_reserve() -> None:
    disk = Disk(100 * MIB)
    space = Space("/d", reserve=20 * MIB, free=disk)
    first = Claim(space, 50 * MIB)
    with pytest.raises(Rejected) as info:
        Claim(space, 50 * MIB)  # 100 free - 50 claimed - 20 reserve = 30 available
    assert info.value.code == messages.E_NO_SPACE and "30 MiB available" in info.value.text
    first.close()
    Claim(space, 50 * MIB).close()


def test_a_refusal_speaks_in_units_and_names_the_reserve_that_df_does_not_show() -> None:
    space = Space("/d", reserve=64 * MIB, free=Disk(50 * MIB))
    with pytest.raises(Rejected) as info:
        Claim(space, 0)  # a PUT that declared nothing: "0 bytes needed, 0 available" once
    text = info.value.text
    assert "0 bytes needed" not in text and "no space left for this transfer" in text
    assert "50 MiB free, as df shows" in text and "64 MiB rtun keeps free" in text
    assert "[send] min_free_bytes in your computer's rtun config" in text


def test_a_write_past_its_claim_is_refused_for_its_own_size_not_the_claim_step() -> None:
    space = Space("/d", reserve=0, free=Disk(2 * MIB))
    claim = Claim(space, 0)
    claim.written(MIB)  # the 16 MiB step does not fit; the 1 MiB write does
    with pytest.raises(Rejected) as info:
        claim.written(3 * MIB)
    assert "3.0 MiB needed" in info.value.text


def test_data_past_a_lying_claim_is_claimed_as_it_arrives() -> None:
    disk = Disk(40 * MIB)
    space = Space("/d", reserve=8 * MIB, free=disk)
    claim = Claim(space, 0)  # declared nothing
    written = 0
    with pytest.raises(Rejected):
        while True:
            claim.written(MIB)
            disk.free -= MIB
            written += MIB
    assert disk.free >= 8 * MIB  # the reserve held
    assert written <= 32 * MIB
    claim.close()
    assert space.outstanding == 0


def test_a_claim_gives_back_what_it_did_not_use() -> None:
    space = Space("/d", reserve=0, free=Disk(100 * MIB))
    claim = Claim(space, 10 * MIB)
    claim.written(4 * MIB)
    assert space.outstanding == 6 * MIB
    claim.written(7 * MIB)  # past the claim: one more step
    assert claim.left == CLAIM_STEP - 1 * MIB
    claim.close()
    assert space.outstanding == 0


def test_a_real_directory(tmp_path: Path) -> None:
    space = Space(str(tmp_path), reserve=0)
    Claim(space, 1).close()
    with pytest.raises(Rejected):
        Claim(space, 1 << 62)
