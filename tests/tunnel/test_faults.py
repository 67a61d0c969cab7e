"""Faults, end to end, on a relay set up as docs/relay.md says: its sshd restarted 20 times in a
row (every session cut each time) and, after each, the tunnel and the registry are right again.
The network cut is in test_netns.py."""

from __future__ import annotations

from rtun.tunnel import identity
from support.sshd import banner
from support.tunnel import UP, RelayAccount, TunnelAgent
from support.wait import wait_until

RESTARTS = 20


def test_twenty_relay_restarts_in_a_row(account: RelayAccount, agents) -> None:
    world = account.world
    key = account.tunnel_key("pi")
    # The shortest backoff, so that the test spends its time on restarts, not on waiting.
    agent = TunnelAgent(world, "pi", machine_id=key.machine_id, env=key.env, extra=["--max-backoff", "0.05"])
    agents.append(agent)
    entry = agent.wait_up()
    preferred = identity.preferred_port(entry["machine_id"])
    assert entry["port"] == preferred
    for n in range(1, RESTARTS + 1):
        ups, before = agent.count(UP), world.entry("pi")
        world.server.stop()  # the listener and every session: the agent's ssh is cut
        world.restart_server()
        agent.wait_for(UP, times=ups + 1, timeout=20)

        def right_again() -> bool:
            now = world.entry("pi")
            return bool(
                now
                and now["connected_at"] >= before["connected_at"]
                and now["status"] == "online"
                and now["port"] == preferred
                and now["last_seen"] >= before["last_seen"]
            )

        wait_until(right_again, timeout=10, what=f"the registry right after restart {n}")
        assert banner(preferred).startswith(b"SSH-2.0-"), f"no tunnel after restart {n}"
        assert len(world.entries()) == 1
    assert agent.count(UP) == RESTARTS + 1 and agent.process.poll() is None
    assert agent.stop() == 0 and world.entry("pi")["status"] == "offline"
