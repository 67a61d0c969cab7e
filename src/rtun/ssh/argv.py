"""ssh command lines and what ``ssh -G`` says: pure functions, no processes.

Every ssh rtun runs (`rtun ssh`'s control master and sessions, the tunnel agent's master and its
requests, `rtun connect`) starts from ``RTUN_SSH_COMMAND`` (a shell-quoted command line, default
``ssh``), so the user's keys, agent, ssh_config and known_hosts apply, and gets its command line
here. Light to import: `rtun ssh` pays for every import before ssh starts.
"""

from __future__ import annotations

import os

from rtun.errors import RtunError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, List, Mapping, Optional, Sequence

# Safe defaults for the tunnel's connection. Host key checking is never turned off: BatchMode
# makes an unknown server key a failure, reported with a hint to accept it once by hand.
SERVER_ALIVE_INTERVAL = 3  # with CountMax 2, a silent server is noticed within ~9 s
SERVER_ALIVE_COUNT_MAX = 2
CONNECT_TIMEOUT = 10


class SshNotFoundError(RtunError):
    """The ssh client is missing: install OpenSSH's client, or point RTUN_SSH_COMMAND at it."""

    exit_code = 127


class SshFailedError(RtunError):
    """ssh could not do what rtun asked; the message carries ssh's own words and a hint."""


def split_command(line: str) -> "List[str]":
    """``RTUN_SSH_COMMAND`` as an argv prefix (plain ``ssh`` when empty)."""
    if not line.strip():
        return ["ssh"]  # the usual case, without loading shlex (and `rtun ssh` waits for it)
    import shlex

    try:
        argv = shlex.split(line)
    except ValueError as exc:
        raise SshFailedError(f"RTUN_SSH_COMMAND is not a valid command line: {exc}") from None
    return argv or ["ssh"]


def ssh_base(
    environ: "Optional[Mapping[str, str]]" = None, check: bool = True, identity: "Optional[str]" = None
) -> "List[str]":
    """The user's ssh command line (``RTUN_SSH_COMMAND``, default ``ssh``) as an argv prefix,
    with ``identity``'s options (`--identity KEY`); with ``check``, SshNotFoundError at once if
    it is not there (`rtun ssh` does not check: it learns that when it starts ssh, and says it
    with :func:`missing`)."""
    argv = split_command((os.environ if environ is None else environ).get("RTUN_SSH_COMMAND", ""))
    if check:
        import shutil

        if shutil.which(argv[0]) is None:
            raise missing(argv[0])
    return argv + identity_options(identity)


def identity_options(key: "Optional[str]") -> "List[str]":
    """``-i KEY`` offered alone (IdentitiesOnly: not after every key of the agent, which could
    use up the server's MaxAuthTries or log in with another key than the one meant)."""
    if key is None:
        return []
    return ["-i", escape_tokens(key), "-o", "IdentitiesOnly=yes"]


def missing(program: str) -> SshNotFoundError:
    return SshNotFoundError(
        f"ssh client {program!r} not found: install openssh-client or set RTUN_SSH_COMMAND"
    )


def tunnel_options(
    alive_interval: int = SERVER_ALIVE_INTERVAL,
    alive_count: int = SERVER_ALIVE_COUNT_MAX,
    connect_timeout: int = CONNECT_TIMEOUT,
) -> "List[str]":
    """The ``-o`` options of the agent's connection (command-line options beat ssh_config)."""
    options = {
        "BatchMode": "yes",
        "ExitOnForwardFailure": "yes",
        "ServerAliveInterval": str(alive_interval),
        "ServerAliveCountMax": str(alive_count),
        "ConnectTimeout": str(connect_timeout),
        "ClearAllForwardings": "yes",  # forwards from ssh_config would clash between restarts
        "RequestTTY": "no",
        "PermitLocalCommand": "no",
        "LogLevel": "ERROR",
    }
    return [arg for key, value in options.items() for arg in ("-o", f"{key}={value}")]


def escape_tokens(path: str) -> str:
    """ssh expands %-tokens in forward and control paths (OpenSSH 8.3+): keep a path literal."""
    return path.replace("%", "%%")


def master_argv(
    base: "Sequence[str]",
    control: str,
    destination: str,
    options: "Sequence[str]",
    command: "Optional[str]" = None,
    persist: int = 0,
) -> "List[str]":
    """``ssh -M``: the one authenticated connection every later request rides on; its own session
    runs ``command`` (`rtun ssh`'s control session), or none (``-N``). rtun's options come
    before ``options``: for ssh the first value given wins. With ``persist`` seconds, ssh puts
    the master in the background once logged in (its own session, no terminal) and runs the
    session as a client of it; the master ends that long after its last client."""
    own = ["-N"] if command is None else ["-T", "-o", "RemoteCommand=none"]
    lifetime = f"ControlPersist={persist}s" if persist > 0 else "ControlPersist=no"
    argv = list(base) + ["-M", "-S", escape_tokens(control), "-o", lifetime] + own
    return argv + list(options) + ["--", destination] + ([command] if command is not None else [])


def mux_argv(
    base: "Sequence[str]",
    control: str,
    destination: str,
    options: "Sequence[str]" = (),
    command: "Optional[str]" = None,
) -> "List[str]":
    """A client of the master. ``ProxyCommand=false`` makes it fail, rather than log in on its
    own, when the master is gone."""
    argv = list(base) + ["-S", escape_tokens(control), "-o", "ControlMaster=no", "-o", "ProxyCommand=false"]
    return argv + list(options) + ["--", destination] + ([command] if command is not None else [])


def control_argv(
    base: "Sequence[str]", control: str, destination: str, operation: str, forward: "Optional[str]" = None
) -> "List[str]":
    """``ssh -O forward|cancel|exit``. ``-F /dev/null``: forwards from ssh_config must not be
    asked a second time."""
    argv = list(base) + ["-F", "/dev/null", "-S", escape_tokens(control), "-O", operation]
    if forward is not None:
        argv += ["-R", forward]
    return argv + ["--", destination]


def socket_forward_spec(remote: str, local: str) -> str:
    """``-R REMOTE:LOCAL`` for two socket paths; raises ValueError for a path ssh cannot take."""
    for path in (remote, local):
        if ":" in path or not path.startswith("/") or any(ord(c) < 32 for c in path):
            raise ValueError(f"ssh cannot forward the socket path {path!r}")
    return f"{escape_tokens(remote)}:{escape_tokens(local)}"


def remote_forward_spec(port: int, local_host: str, local_port: int) -> str:
    """``-R`` bound to the server's loopback only, to the machine's own sshd."""
    host = f"[{local_host}]" if ":" in local_host else local_host
    return f"127.0.0.1:{port}:{host}:{local_port}"


def forwarded_port(spec: str, printed: str) -> int:
    """The server port of a forward just added: what ``-O forward`` printed for port 0 (the
    server's choice), else the port asked for."""
    printed = printed.strip()
    return int(printed) if printed.isdigit() else int(spec.split(":")[1])


def config_argv(base: "Sequence[str]", destination: str, options: "Sequence[str]" = ()) -> "List[str]":
    """``ssh -G``: what ssh_config says for ``destination`` with these options."""
    return list(base) + list(options) + ["-G", "--", destination]


def parse_config(text: str) -> "Dict[str, str]":
    """The output of ``ssh -G`` as a dict (keys lower-case, the first value of a key wins)."""
    config: Dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        config.setdefault(key.lower(), value.strip())
    return config


def stream_argv(base: "Sequence[str]", via: str, host: str, port: int, connect_timeout: int) -> "List[str]":
    """``ssh -W host:port``: that port as seen from the relay ``via`` (the last hop of a comma
    chain, the others jumped through), as this process's stdin and stdout: a ProxyCommand."""
    hops = via.split(",")
    last = hops[-1]
    argv = list(base) + ["-o", f"ConnectTimeout={connect_timeout}", "-o", "ClearAllForwardings=yes"]
    if len(hops) > 1:
        argv += ["-J", ",".join(hops[:-1])]
    if not last.endswith("]") and ":" in last.rpartition("@")[2]:
        last = f"ssh://{last}"  # a destination takes host:port only as a URI
    return argv + ["-W", f"{host}:{port}", "--", last]
