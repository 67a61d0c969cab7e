"""Waiting for processes that are not rtun's children to end (`rtun done --pid`), and their exit
status where the system tells it.

Linux: a pidfd per process (``os.pidfd_open``), polled together, so a PID reused after its
process ended is never mistaken for it; the status is read from /proc/PID/stat (field 52) while
the ended process is a zombie its parent has not reaped yet. macOS and the BSDs: kqueue's
EVFILT_PROC/NOTE_EXIT (the status is given only to a parent there). Elsewhere: ``kill(pid, 0)``
every POLL_SECONDS. Stdlib only: this runs on servers.
"""

from __future__ import annotations

import errno
import os

from rtun.errors import RtunError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

POLL_SECONDS = 0.5  # the fallback's interval: a notification half a second late costs nothing
STAT_BYTES = 4096  # /proc/PID/stat is well under 1 KiB: 52 numbers and a 16-byte name
CMDLINE_BYTES = 16384  # enough to name the command; the notification shows 300 characters at most


class NoSuchProcessError(RtunError):
    """No process has this PID: it has ended already, or it was never there (`ps` lists them)."""


class ProcStat:
    """What rtun reads from one /proc/PID/stat line."""

    __slots__ = ("name", "state", "arg_start", "exit_code")

    def __init__(self, name: str, state: str, arg_start: "Optional[int]", exit_code: "Optional[int]") -> None:
        self.name = name  # field 2, the command's name (comm), as the kernel keeps it
        self.state = state  # field 3: Z is a zombie, ended and not yet reaped
        self.arg_start = arg_start  # field 48; 0 where the kernel hides it from us
        self.exit_code = exit_code  # field 52: the wait status, 0 where hidden from us


def parse_stat(data: bytes) -> ProcStat:
    """Parse /proc/PID/stat. The name sits between the first "(" and the *last* ")": it may hold
    spaces and parentheses of its own. ValueError when it is not such a line."""
    opened, closed = data.find(b"("), data.rfind(b")")
    if opened < 0 or closed < opened:
        raise ValueError("not a /proc/PID/stat line")
    name = data[opened + 1 : closed].decode("utf-8", "replace")
    fields = data[closed + 1 :].split()  # fields[0] is field 3
    if not fields:
        raise ValueError("not a /proc/PID/stat line")

    def field(number: int) -> "Optional[int]":
        index = number - 3
        return int(fields[index]) if index < len(fields) else None  # older kernels have fewer

    return ProcStat(name, fields[0].decode("ascii", "replace"), field(48), field(52))


def exit_code(wait_status: int) -> int:
    """A wait status as a shell says it: the exit code, or 128 + N when signal N ended it."""
    signum = wait_status & 0x7F
    return 128 + signum if signum else (wait_status >> 8) & 0xFF


def status_from_stat(stat: "Optional[ProcStat]", permitted: bool) -> "Optional[int]":
    """The exit code of an ended process from its stat read after its end, or None when not
    known: it was reaped already (no stat), or it reads 0 where the kernel may be hiding it from
    us (it shows 0 unless we may ptrace-read the process; any other value is the real one)."""
    if stat is None or stat.state not in ("Z", "X") or stat.exit_code is None:
        return None
    if stat.exit_code == 0 and not permitted:
        return None
    return exit_code(stat.exit_code)


def _read(directory: int, name: str, limit: int) -> bytes:
    fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=directory)
    try:
        return os.read(fd, limit)
    finally:
        os.close(fd)


class _Linux:
    """One pidfd and one /proc/PID directory per process, both opened while it held its PID."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.proc = self.pidfd = -1
        self.stat: Optional[ProcStat] = None
        self.permitted = False
        for _ in range(3):  # again if the process ended between the opens: its PID is free
            if self._open():
                return
        raise NoSuchProcessError(f"no process {pid}")

    def _open(self) -> bool:
        pid = self.pid
        try:
            self.proc = os.open(f"/proc/{pid}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:  # no /proc, or one that hides other users' processes: the pidfd alone
            self.proc = -1
        try:
            self.pidfd = os.pidfd_open(pid)
        except OSError as exc:
            self.close()
            if exc.errno == errno.ESRCH:
                raise NoSuchProcessError(f"no process {pid}") from None
            if exc.errno == errno.EINVAL:
                raise NoSuchProcessError(f"{pid} is a thread's ID, not a process's") from None
            raise
        if self.proc < 0:
            return True
        try:
            stat = parse_stat(_read(self.proc, "stat", STAT_BYTES))
        except (OSError, ValueError):  # reaped since the directory was opened
            self.close()
            return False
        # Read after both opens, the stat shows it alive or a zombie: it held the PID throughout,
        # so the directory and the pidfd are both this process's.
        self.stat = stat
        # Field 48 is hidden (0) unless we may ptrace-read the process, as field 52 will be. A
        # zombie has none to show; the kernel then checks only its user, the directory's owner.
        if stat.state in ("Z", "X"):
            owner = os.fstat(self.proc)
            ours = (owner.st_uid, owner.st_gid) == (os.geteuid(), os.getegid())
            self.permitted = os.geteuid() == 0 or ours
        else:
            self.permitted = bool(stat.arg_start)
        return True

    def command(self) -> "Optional[str]":
        """Its command line, else its name (a zombie has no command line any more)."""
        if self.proc < 0 or self.stat is None:
            return None
        try:
            words = _read(self.proc, "cmdline", CMDLINE_BYTES).split(b"\0")
        except OSError:
            words = []
        if words and words[-1] == b"":
            words.pop()
        if not words:
            return self.stat.name
        import shlex

        return shlex.join(w.decode("utf-8", "replace") for w in words)

    def status(self) -> "Optional[int]":
        if self.proc < 0:
            return None
        try:
            stat: Optional[ProcStat] = parse_stat(_read(self.proc, "stat", STAT_BYTES))
        except (OSError, ValueError):  # reaped already: the directory is empty now
            stat = None
        return status_from_stat(stat, self.permitted)

    def close(self) -> None:
        for fd in (self.proc, self.pidfd):
            if fd >= 0:
                os.close(fd)
        self.proc = self.pidfd = -1


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: it is there all the same
        pass
    return True


class Watch:
    """The processes watched, opened together up front (any PID that is not there: nothing is
    watched); ``ended()`` then gives each as it ends."""

    def __init__(self, pids: "Sequence[int]") -> None:
        self.pids: List[int] = list(dict.fromkeys(pids))
        self.linux: Dict[int, _Linux] = {}
        if hasattr(os, "pidfd_open"):
            try:
                for pid in self.pids:
                    self.linux[pid] = _Linux(pid)
            except OSError as exc:  # a kernel older than 5.3, or a sandbox that refuses pidfds
                self.close()
                if exc.errno not in (errno.ENOSYS, errno.EPERM):
                    raise
            except BaseException:
                self.close()
                raise
        if not self.linux:
            for pid in self.pids:
                if not _exists(pid):
                    raise NoSuchProcessError(f"no process {pid}")

    def command(self, pid: int) -> "Optional[str]":
        """How the process was started, where the system says: to name it in the notification."""
        return self.linux[pid].command() if pid in self.linux else None

    def ended(self) -> "Iterator[Tuple[int, Optional[int]]]":
        """Each PID as its process ends, with its exit code, or None where it is not known."""
        if self.linux:
            yield from self._pidfds()
        else:
            import select

            if hasattr(select, "kqueue") and hasattr(select, "KQ_FILTER_PROC"):
                yield from self._kqueue()
            else:
                yield from self._polled()

    def _pidfds(self) -> "Iterator[Tuple[int, Optional[int]]]":
        import select

        poller = select.poll()
        by_fd = {}
        for watched in self.linux.values():
            poller.register(watched.pidfd, select.POLLIN)
            by_fd[watched.pidfd] = watched
        while by_fd:
            for fd, _ in poller.poll():
                watched = by_fd.pop(fd)
                poller.unregister(fd)
                yield watched.pid, watched.status()  # read at once, before its parent reaps it

    def _kqueue(self) -> "Iterator[Tuple[int, Optional[int]]]":
        import select

        bsd: Any = select  # kqueue is not in Linux's select: mypy checks this module as Linux's
        kq = bsd.kqueue()
        try:
            left = set()
            for pid in self.pids:
                event = bsd.kevent(
                    pid,
                    filter=bsd.KQ_FILTER_PROC,
                    flags=bsd.KQ_EV_ADD | bsd.KQ_EV_ONESHOT,
                    fflags=bsd.KQ_NOTE_EXIT,
                )
                try:
                    kq.control([event], 0)
                except ProcessLookupError:  # ended since __init__: that is its end
                    yield pid, None
                    continue
                left.add(pid)
            while left:
                for event in kq.control(None, len(left)):
                    if event.ident in left:
                        left.discard(event.ident)
                        yield int(event.ident), None  # NOTE_EXITSTATUS is for parents only
        finally:
            kq.close()

    def _polled(self) -> "Iterator[Tuple[int, Optional[int]]]":
        import time

        left = list(self.pids)
        while left:
            for pid in [p for p in left if not _exists(p)]:
                left.remove(pid)
                yield pid, None
            if left:
                time.sleep(POLL_SECONDS)

    def close(self) -> None:
        for watched in self.linux.values():
            watched.close()
        self.linux = {}
