"""`rtun tunnel RELAY [RELAY...]`: one tunnel agent per relay, in one process.

Each relay gets a Supervisor and runner of its own (agent.py): its own ssh master, backoff,
registry entry and log prefix, so one relay down never touches the others; all carry the same
machine id and name. A thread per runner rather than one select loop over them all: the runner's
actions block (``ssh -O forward``, a registry write over the master, a probe: up to 15 s each),
and one loop would have to cut each into a state machine of its own; a thread keeps the runner
as it is and sleeps in select nearly all its life. The main thread takes the signals (Python
delivers them there alone) and hands each to every runner: SIGTERM stops them all, each marking
its entry offline, SIGUSR1 reconnects them all. The process runs while any runner does.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Dict, List, Sequence, TextIO

from rtun.tunnel.agent import Agent
from rtun.tunnel.settings import Settings

JOIN_POLL = 1.0  # seconds: the main thread wakes this often to see which runners ended


def run(settings: Sequence[Settings], ssh: List[str], log: TextIO = sys.stderr) -> int:
    """Run an agent for each relay until all have stopped; the worst exit code."""
    if len(settings) == 1:  # one relay: the runner as it always was, in this thread
        return Agent(settings[0], ssh, log).run()
    agents = [Agent(s, ssh, log, label=s.server) for s in settings]
    codes: Dict[int, int] = {}

    def body(index: int, agent: Agent) -> None:
        codes[index] = 1  # unless it returns
        try:
            codes[index] = agent.run(signals=False)
        except BaseException:
            # A runner that crashed would leave its relay without a tunnel while the others
            # keep the process (and so the service manager's restart) from ending: end them all.
            for other in agents:
                other.request_stop()
            raise  # threading's hook prints it

    def on_signal(signum: int, frame: object) -> None:
        for agent in agents:
            if signum in (signal.SIGTERM, signal.SIGINT):
                agent.request_stop()
            else:
                agent.request_reconnect()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGHUP):
        signal.signal(sig, on_signal)
    threads = [
        threading.Thread(target=body, args=(i, a), name=f"rtun tunnel {a.settings.server}", daemon=True)
        for i, a in enumerate(agents)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(JOIN_POLL)  # with a timeout: signal handlers run between the waits
    return max(codes.values(), default=0)
