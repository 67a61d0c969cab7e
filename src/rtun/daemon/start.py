"""`rtun server`: bind the socket, set up logging, and run in the foreground or as a daemon."""

from __future__ import annotations

import io
import logging
import logging.handlers
import os
import sys
from typing import Optional

from rtun import paths
from rtun.daemon import server
from rtun.daemon.config import Config
from rtun.daemon.listener import Listener, bind
from rtun.daemon.status import Launch
from rtun.daemon.storage.tree import current_umask
from rtun.errors import RtunError

LOG_FORMAT = "%(asctime)s rtun[%(process)d] %(levelname)s %(message)s"


LOG_MAX_BYTES = 4 * 1024 * 1024  # the log file is rotated past this size ...
LOG_BACKUPS = 2  # ... keeping this many older ones (rtun.log.1, rtun.log.2)


class _PrivateRotatingLog(logging.handlers.RotatingFileHandler):
    """The standard size-capped, rotated log, whose files (the new one after each rotation
    too) are created 0600: they name the files and hosts of your transfers."""

    def _open(self) -> "io.TextIOWrapper":
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return io.TextIOWrapper(io.FileIO(fd, "a"), encoding="utf-8", line_buffering=True)


def _configure_logging(config: Config, log_path: Optional[str]) -> Optional[int]:
    """Log to ``log_path`` (rotated by size) or stderr; returns the log file's fd, if any."""
    level = logging.DEBUG if config.verbose else logging.INFO
    root = logging.getLogger("rtun")
    root.setLevel(level)
    if log_path is None:
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        fd = None
    else:
        try:
            os.makedirs(os.path.dirname(log_path) or ".", mode=0o700, exist_ok=True)
            rotating = _PrivateRotatingLog(
                log_path, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8"
            )
        except OSError as exc:
            raise RtunError(f"cannot open the log file {log_path}: {exc.strerror or exc}") from None
        fd = rotating.stream.fileno() if rotating.stream is not None else None
        handler = rotating
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    return fd


def _raise_descriptor_limit() -> None:
    """Every connection holds a descriptor; macOS starts processes with a soft limit of 256."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    if soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):
            pass  # keep the limit we have


def serve(config: Config, detach: bool, launch: Optional[Launch] = None) -> int:
    """Run the daemon; with ``detach``, print its PID once the socket accepts connections.
    ``launch`` (how it was started) lets it reload its config file and keep a status file."""
    _raise_descriptor_limit()
    try:
        os.makedirs(config.save_dir, exist_ok=True)
    except OSError as exc:
        raise RtunError(
            f"cannot create the save directory {config.save_dir}: {exc.strerror or exc}"
        ) from None
    if not detach:
        _configure_logging(config, config.log)
        listener = bind(config.socket)
        server.run(config, listener, launch=launch)
        return 0

    # Open the log, then bind, before detaching: errors reach the user's terminal as one line
    # (a log that cannot be opened leaves no socket behind), and the listening socket already
    # accepts (queues) connections when this command returns.
    log_fd = _configure_logging(config, config.log or paths.default_log())
    listener = bind(config.socket)
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the detached process, checked end to end
        os.close(read_end)
        _run_detached(config, listener, write_end, log_fd, launch)
        os._exit(0)
    os.close(write_end)
    listener.sock.close()
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read().decode("utf-8", "replace").strip()
    os.waitpid(child, 0)
    if not message.isdigit():
        raise RtunError(f"the daemon did not start: {message or 'it exited early'}")
    print(message)
    return 0


def _run_detached(
    config: Config, listener: Listener, ready_fd: int, log_fd: Optional[int], launch: Optional[Launch]
) -> None:  # pragma: no cover
    import daemon  # python-daemon: the double fork, setsid, closed fds, chdir /

    context = daemon.DaemonContext(
        umask=current_umask(),  # the user's: it decides the modes of received files
        files_preserve=[listener.sock.fileno(), ready_fd] + ([log_fd] if log_fd else []),
        detach_process=True,
    )

    def ready() -> None:
        os.write(ready_fd, str(os.getpid()).encode())
        os.close(ready_fd)

    try:
        with context:
            server.run(config, listener, on_ready=ready, launch=launch)
    except Exception as exc:  # report to the waiting parent instead of dying silently
        logging.getLogger("rtun.daemon").exception("daemon failed")
        try:
            os.write(ready_fd, str(exc).encode())
        except OSError:
            pass
