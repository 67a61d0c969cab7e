"""The daemon's log file: private, and rotated by size (the standard library's handler)."""

from __future__ import annotations

import logging
import stat
from pathlib import Path
from typing import Iterator

import pytest

from rtun.daemon import start
from rtun.daemon.config import Config


@pytest.fixture
def rtun_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("rtun")
    before = list(logger.handlers)
    yield logger
    for handler in logger.handlers[len(before) :]:
        handler.close()
        logger.removeHandler(handler)


def test_the_log_is_capped_rotated_and_private(tmp_path: Path, monkeypatch, rtun_logger) -> None:
    monkeypatch.setattr(start, "LOG_MAX_BYTES", 4096)
    log = tmp_path / "logs" / "rtun.log"
    fd = start._configure_logging(Config(), str(log))
    assert fd is not None
    for n in range(400):  # about 40 KiB of lines: many rotations
        logging.getLogger("rtun.daemon").info("line %d %s", n, "x" * 60)
    files = sorted(p.name for p in log.parent.iterdir())
    assert files == ["rtun.log", "rtun.log.1", "rtun.log.2"]  # LOG_BACKUPS old ones, no more
    for path in log.parent.iterdir():
        assert path.stat().st_size <= 4096 + 200
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "line 399 " in log.read_text()
