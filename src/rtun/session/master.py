"""One ssh connection to a server, as `rtun ssh`, `rtun install` and `rtun doctor` use it.

rtun starts a control master of its own (``ssh -M -S PATH``, so the user's ssh_config,
ProxyJump, keys and prompts all apply), or `rtun ssh` joins the one another login to the same
destination holds (rtun.session.shared). Either way each login has a *control session*: it makes
``~/.rtun`` private, reports the remote home (which decides the socket's path, and which only
the server knows), sweeps stale sockets in the background, and removes the session's socket
when rtun closes its standard input, or when the connection goes away. The forward is added
to the running master (what ``ssh -O forward`` does, spoken directly on its control socket)
and the user's session runs as a client of it.
"""

from __future__ import annotations

import os
import signal
import sys

from rtun import paths
from rtun.errors import RtunError
from rtun.protocol import peertext
from rtun.session import remote, shared, spawn, sshopts
from rtun.ssh import argv as sshargv

TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess
    from typing import Dict, Optional, Sequence, Tuple

    from rtun.ssh import mux


JOIN_WAIT = 15.0  # seconds a login joined to a shared master waits for its report: no prompt is
# involved, so a longer wait means the shared connection is dead (a laptop that slept)


class LoginFailedError(RtunError):
    """ssh could not log in (or lost the connection before the session started): ssh's own
    message is above; the exit code is ssh's 255."""

    exit_code = 255


def control_path() -> str:
    """A private path for the master's control socket, short enough for sun_path."""
    name = f"ssh-{os.getpid()}-{os.urandom(4).hex()}.ctl"
    path = os.path.join(paths.rtun_dir(), name)
    if len(os.fsencode(path)) + 20 < paths.SUN_PATH_MAX:  # ssh binds PATH.XXXXXXXXXXXXXXXX first
        os.makedirs(paths.rtun_dir(), mode=0o700, exist_ok=True)
        return path
    import tempfile

    return os.path.join(tempfile.mkdtemp(prefix="rtun-"), "ctl")


class Login:
    """One login to ``inv.host``: a master of rtun's own whose session is the control session,
    started at once so that it logs in while rtun does the rest of its work. (The tunnel's
    background master, with no control session, is :class:`rtun.ssh.process.Master`.)"""

    def __init__(
        self, base: "Sequence[str]", inv: sshopts.Invocation, quiet: bool = False, share: bool = False
    ) -> None:
        self.base = list(base)
        self.inv = inv
        self.quiet = quiet
        self.report: Dict[str, str] = {}
        self.joined: Optional[int] = None  # the PID of the shared master this login is a client of
        self.lock: Optional[shared.Lock] = None
        self.forwarded: Optional[Tuple[str, str]] = None
        self._pending: Optional[mux.PendingForward] = None
        found = None
        self._resolving: Optional[shared.Resolving] = None
        self.private_master = False  # a master started shared whose ssh_config adds forwards
        if share and inv.shareable:  # -v is left out: a -v login may join, not start, one
            words = inv.words(sshopts.SESSION_ONLY + "Nv")
            found = shared.control_path(self.base, words, inv.host)
            if found is not None:  # what ssh_config makes of it, found while ssh logs in
                self._resolving = shared.Resolving(self.base, words, inv.host)
        self.sharing = found is not None
        self.control = found if found is not None else control_path()
        self._start()

    def _start(self) -> None:
        """Join the live shared master if there is one; else start a master (shared: under the
        lock, which :meth:`prelude` releases once it listens)."""
        persist = 0
        if self.sharing:
            self.lock = shared.Lock(self.control, say)
            self.joined = shared.find(self.control) if self.lock.held else None
            if self.joined is not None:
                self._unlock()
                assert self._resolving is not None
                mine = self._resolving.signature()
                if mine == shared.PRIVATE or shared.read_signature(self.control) != mine:
                    # Another configuration (a -F file of this directory, a Match exec, ...):
                    # perhaps another server, another key. A connection of this login's own.
                    self.joined = None
                    self.sharing = False
                    self.control = control_path()
            elif self.inv.has("v") or not self.lock.held:
                # ssh -v's master would write to this terminal after the login; a lock held
                # this long is another login at a prompt: a master of this login's own.
                self._unlock()
                self.sharing = False
                self.control = control_path()
            else:
                persist = shared.linger()
        if self.joined is not None:  # the control session as one more client of that master
            options = sshopts.session_options(None)
            argv = sshargv.mux_argv(self.base, self.control, self.host, options, remote.CONTROL_COMMAND)
        else:
            options = sshopts.master_options(self.inv)
            if persist and not any(o[:1] == "o" and "serveralive" in o.lower() for o in options):
                # A shared master outlives this login: a dead connection must end it, or every
                # later login would join it and wait for ever.
                options += ["-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=3"]
            argv = sshargv.master_argv(
                self.base, self.control, self.host, options, remote.CONTROL_COMMAND, persist=persist
            )
        # SIGINT ignored, which ssh keeps: a Ctrl-C meant for the session must not cut the
        # connection before the control session has removed the socket. It stays in this
        # terminal's session, so that it can still ask for a passphrase or a host key.
        try:
            self.process = spawn.Child(argv, capture_stderr=self.quiet, ignore_sigint=True)
        except OSError:
            self._unlock()
            raise sshargv.missing(argv[0]) from None
        if persist:  # said before the lock is let go: a login that finds the master reads it
            assert self._resolving is not None
            mine = self._resolving.signature()
            shared.write_signature(self.control, mine)
            self.private_master = mine == shared.PRIVATE
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(remote.control_input())
        except OSError:
            pass  # ssh has already exited: prelude() says why

    def _unlock(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    @property
    def host(self) -> str:
        return self.inv.host

    def stderr_text(self) -> str:
        """What ssh said (only when started ``quiet``, once it has exited)."""
        if self.process.stderr is None or self.process.poll() is None:
            return ""
        return self.process.stderr.read().decode("utf-8", "replace")

    def prelude(self) -> "Dict[str, str]":
        """Wait for the control session's report: the master is then ready for sessions."""
        found = self._read_report(JOIN_WAIT if self.joined is not None else None)
        if found is None and self.joined is not None:
            if self.process.poll() is None:  # the shared connection does not answer: a dead link
                say(f"the shared connection to {self.host} does not answer; logging in afresh")
                self.process.stop()
                self.sharing = False
                self.control = control_path()
            elif self.process.wait() != 255:
                self.joined = None  # not the shared master's doing: said below
            if self.joined is not None:
                # The shared master ended between the check and this login's request (or does
                # not answer): a fresh one.
                self.process.close_streams()
                self.joined = None
                self._start()
                found = self._read_report()
        self._unlock()  # a master started here listens by now (or failed)
        if found is not None:
            self.report = found
        else:
            code = self.process.wait() or 0
            if code == 255 or code < 0:
                said = peertext.last_line(self.stderr_text())
                raise LoginFailedError(
                    f"cannot log in to {self.host}" + (f": {said}" if said else f" (ssh exited {code})")
                )
            raise RtunError(
                f"{self.host} did not run rtun's set-up (exit {code}): its login shell must "
                "run commands (sh, bash, zsh, fish or csh; no ForceCommand or restricted shell)"
            )
        # Everything in the report is the server's choice: checked, and escaped when shown.
        problem = remote.home_problem(self.home)
        if problem is not None:
            raise RtunError(
                f"{self.host} reports a home directory rtun cannot use "
                f"({problem}): {peertext.escaped(self.home)}"
            )
        if self.report.get("error"):
            raise RtunError(
                f"cannot make ~/.rtun private on {self.host} "
                f"({peertext.escaped(self.report['error'], 20)} failed): "
                f"{peertext.escaped(self.home)}/.rtun must be a directory of yours"
            )
        return self.report

    def _read_report(self, timeout: "Optional[float]" = None) -> "Optional[Dict[str, str]]":
        """The control session's report; None if it ended without one (or, with ``timeout``,
        sent none in that many seconds)."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        if timeout is not None:
            import select
            import time

            deadline = time.monotonic() + timeout
        pending = b""
        while True:
            if timeout is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([fd], [], [], left)[0]:
                    return None
            data = os.read(fd, 65536)
            if not data:
                return None
            lines = (pending + data).split(b"\n")
            pending = lines.pop()
            for raw in lines:
                report = remote.parse_prelude(raw.decode("utf-8", "replace"))
                if report is not None:
                    return report

    @property
    def home(self) -> str:
        return self.report.get("home", "")

    def remove_at_end(self, path: str) -> None:
        """The control session removes ``path`` when it ends (sent before the forward exists)."""
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(path.encode() + b"\n")
        except OSError:
            pass  # the connection is gone: the forward below will say so

    def forward(self, remote_path: str, local_path: str) -> None:
        """``-R remote_path:local_path``, added to the running master."""
        self.ask_forward(remote_path, local_path)
        self.confirm_forward()

    def ask_forward(self, remote_path: str, local_path: str) -> None:
        """Ask the running master for ``-R remote_path:local_path``; :meth:`confirm_forward` reads
        the server's answer (the session may start in between: see :meth:`session`)."""
        from rtun.ssh import mux

        sshargv.socket_forward_spec(remote_path, local_path)  # checks both paths
        self.forwarded = (remote_path, local_path)
        try:
            self._pending = mux.PendingForward(self.control, remote_path, local_path)
        except (OSError, ValueError):  # not the protocol expected: ssh itself asks, at once
            self._pending = None
            self._refuse(self._forward_by_ssh(remote_path, local_path))

    def confirm_forward(self) -> None:
        """The server's answer to :meth:`ask_forward`: RtunError with its reason if it refused."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        try:
            refused = pending.answer()
        except (OSError, ValueError):  # the master went away meanwhile: so did the forward
            refused = "the connection's master did not answer"
        self._refuse(refused)

    def _forward_by_ssh(self, remote_path: str, local_path: str) -> "Optional[str]":
        import subprocess

        spec = sshargv.socket_forward_spec(remote_path, local_path)
        argv = sshargv.control_argv(self.base, self.control, self.host, "forward", spec)
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        if done.returncode == 0:
            return None
        return peertext.last_line(done.stderr.decode("utf-8", "replace")) or "no reason given"

    def _refuse(self, refused: "Optional[str]") -> None:
        if refused is None:
            return
        remote_path = self.forwarded[0] if self.forwarded else ""
        self.forwarded = None
        raise RtunError(  # the server's words
            f"{self.host} refused to forward {remote_path}: {peertext.escaped(refused)} "
            "(is AllowStreamLocalForwarding off in its sshd_config?)"
        )

    def session(self, extra: "Sequence[str]", command: str) -> int:
        """The user's session over the master, on this terminal; its exit code. A forward still
        unanswered (:meth:`ask_forward`) is answered while the session's ssh starts: ``command``
        must then refuse to run unless the socket is there (rtun.session.remote's
        ``require_socket``). On a refusal, the session (which then ran nothing) is let end on its
        own, so that ssh gives the terminal back as it found it, and the refusal is raised."""
        argv = sshargv.mux_argv(
            self.base, self.control, self.host, sshopts.session_options(self.inv, extra), command
        )
        try:
            pid = spawn.start(argv)
        except OSError:
            raise sshargv.missing(argv[0]) from None
        # Ctrl-C is the session's: ssh passes it on (or ends); rtun waits to clean up after it.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            try:
                self.confirm_forward()
            finally:
                code = spawn.wait(pid)
        finally:
            signal.signal(signal.SIGINT, previous)
        return 128 - code if code < 0 else code

    def run(
        self, command: str, data: bytes = b"", timeout: float = 120
    ) -> "subprocess.CompletedProcess[bytes]":
        """A command over the master, its output captured (no configuration, no terminal)."""
        import subprocess

        argv = sshargv.mux_argv(self.base, self.control, self.host, sshopts.session_options(None), command)
        try:
            return subprocess.run(argv, input=data, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(argv, -1, b"", f"timed out after {timeout:.0f}s".encode())

    def wait(self) -> int:
        """Until the connection ends (``-N``)."""
        return self.process.wait() or 0

    def close(self, timeout: float = 10, linger: bool = False) -> None:
        """End the control session, which removes the socket and says so; then the master.
        With ``linger`` (rtun is about to exit), leave both to end on their own: closing the
        control session's input is what makes it remove the socket, whether or not rtun is still
        there to read its last word (and ssh, which ignores SIGPIPE, outlives a closed pipe), so
        the user has the session's exit status without waiting for that round trip. A shared
        master outlives the login: only this login's forward and control session end (the
        forward first, so that nothing new connects to the socket being removed)."""
        if self._pending is not None:  # its answer first: a cancel must find the forward
            try:
                self.confirm_forward()
            except RtunError:
                pass
        if self.sharing and self.forwarded is not None:
            from rtun.ssh import mux

            try:
                mux.mux_cancel(self.control, *self.forwarded)
            except (OSError, ValueError):
                pass  # the master is gone, and the forward with it
            self.forwarded = None
        self._unlock()
        if self.process.stdin is not None:
            try:
                self.process.stdin.close()
            except OSError:
                pass
        # The control session runs: it removes the socket (a master that must not outlive
        # the login is ended once that is done).
        keep = bool(self.report) and linger and not self.private_master
        try:
            if self.report and not keep:
                self.process.wait(timeout)
        finally:
            if not keep:
                self.process.stop()  # nothing to do if it has ended
            self.process.close_streams()
            if self.private_master:  # its forwards from ssh_config end with this login
                from rtun.ssh import mux

                mux.terminate(self.control)
            self._release()

    def _release(self) -> None:
        if self.sharing:  # the master's own, for as long as it lives
            return
        if os.path.lexists(self.control):  # ssh removes it; a killed ssh does not
            try:
                os.unlink(self.control)
            except OSError:
                pass
        if not self.control.startswith(paths.rtun_dir() + os.sep):
            try:
                os.rmdir(os.path.dirname(self.control))
            except OSError:
                pass

    def __enter__(self) -> "Login":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def say(message: str) -> None:
    """A line of rtun's own on stderr (escaped: it may quote what the server reported)."""
    sys.stderr.write(f"rtun ssh: {peertext.escaped(message, 2000)}\n")
    sys.stderr.flush()
