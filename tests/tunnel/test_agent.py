"""The agent against real sshds: registration, recovery, port fallback, signals (its decisions
alone are tested in test_supervisor.py)."""

from __future__ import annotations

import io
import signal
import socket

from rtun.tunnel import messages
from rtun.tunnel.agent import Agent
from rtun.tunnel.settings import Settings
from support.sshd import banner
from support.tunnel import TunnelAgent, World
from support.wait import wait_until


def test_agent_registers_with_its_real_port_and_probes_through_the_tunnel(world: World, agents) -> None:
    agent = TunnelAgent(world, "pi")
    agents.append(agent)
    entry = agent.wait_up()
    assert entry["status"] == "online" and entry["local_port"] == world.machine.port
    assert entry["schema"] == 1 and len(entry["machine_id"]) == 32
    # The port in the registry is the forward on the server's loopback, leading to the machine's sshd.
    assert banner(entry["port"]).startswith(b"SSH-2.0-")
    # last_seen is refreshed while connected (heartbeat 1 s in tests).
    first = entry["last_seen"]
    wait_until(lambda: world.entry("pi")["last_seen"] > first, timeout=10, what="last_seen to advance")


def test_agent_retries_while_server_is_down_and_recovers_on_the_same_port(world: World, agents) -> None:
    agent = TunnelAgent(world, "pi")
    agents.append(agent)
    before = agent.wait_up()
    world.server.stop()
    agent.wait_for("[lost]")
    agent.wait_for("[waiting]", times=2, timeout=20)  # it keeps retrying while the server is gone
    assert agent.process.poll() is None
    world.restart_server()
    after = agent.wait_up(times=2)
    wait_until(
        lambda: world.entry("pi")["last_seen"] > before["last_seen"],
        timeout=10,
        what="last_seen to advance after the reconnect",
    )
    # Back on its stable port (at once, or after the server dropped the old session's forward).
    wait_until(lambda: world.entry("pi")["port"] == before["port"], timeout=10, what="the same port")
    assert after["connected_at"] >= before["connected_at"]
    assert banner(before["port"]).startswith(b"SSH-2.0-")


def test_preferred_port_taken_falls_back_to_a_server_allocated_port(world: World, agents) -> None:
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen(1)
    taken = squatter.getsockname()[1]
    try:
        agent = TunnelAgent(world, "pi", extra=["--port", str(taken)])
        agents.append(agent)
        entry = agent.wait_up()
        assert f"port {taken} unavailable" in agent.log_text()
        assert entry["port"] != taken
        assert banner(entry["port"]).startswith(b"SSH-2.0-")
    finally:
        squatter.close()


def test_agent_moves_back_to_the_preferred_port_once_it_is_free(world: World, agents) -> None:
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen(1)
    preferred = squatter.getsockname()[1]
    agent = TunnelAgent(world, "pi", extra=["--port", str(preferred)])
    agents.append(agent)
    fallback = agent.wait_up()["port"]
    assert fallback != preferred
    squatter.close()
    agent.wait_for(f"moved back from port {fallback} to the preferred port {preferred}")
    wait_until(
        lambda: world.entry("pi")["port"] == preferred, timeout=10, what="registry on the preferred port"
    )
    assert banner(preferred).startswith(b"SSH-2.0-")
    wait_until(lambda: not banner(fallback), timeout=10, what="the fallback forward to be cancelled")


def test_sigterm_marks_the_entry_offline_and_exits_zero(world: World, agents) -> None:
    agent = TunnelAgent(world, "pi")
    agents.append(agent)
    entry = agent.wait_up()
    agent.signal(signal.SIGTERM)
    assert agent.process.wait(timeout=20) == 0
    stopped = world.entry("pi")
    assert stopped["status"] == "offline" and stopped["disconnected_at"] >= entry["connected_at"]
    listing = world.rtun(["hosts", "--registry", str(world.registry)])
    assert listing.returncode == 0
    row = [line for line in listing.stdout.splitlines() if line.startswith("pi ")]
    assert row and row[0].split()[-3] == "offline", listing.stdout
    assert not banner(entry["port"])  # the forward is gone with the agent's ssh


def test_sigusr1_reconnects_at_once(world: World, agents) -> None:
    agent = TunnelAgent(world, "pi", extra=["--max-backoff", "30"])
    agents.append(agent)
    agent.wait_up()
    agent.signal(signal.SIGUSR1)
    agent.wait_for("reconnect requested")
    agent.wait_up(times=2, timeout=10)
    assert "[waiting]" not in agent.log_text()  # no backoff before the requested reconnect


def test_two_machines_with_the_same_name_keep_separate_entries(world: World, agents) -> None:
    one = TunnelAgent(world, "lab", machine_id="machine-one")
    two = TunnelAgent(world, "lab", machine_id="machine-two")
    agents.extend([one, two])
    one.wait_up()
    two.wait_up()
    wait_until(lambda: len(world.entries()) == 2, timeout=10, what="two registry files")
    ports = {e["port"] for e in world.entries().values()}
    assert len(ports) == 2 and {e["name"] for e in world.entries().values()} == {"lab"}
    listing = world.rtun(["hosts", "--registry", str(world.registry)])
    names = sorted(line.split()[0] for line in listing.stdout.splitlines()[1:])
    assert len(names) == 2 and all(n.startswith("lab-") for n in names), listing.stdout


def test_unknown_server_key_fails_with_a_hint_and_keeps_retrying(world: World, agents) -> None:
    world.server.known_hosts.write_text("")
    agent = TunnelAgent(world, "pi")
    agents.append(agent)
    agent.wait_for("[waiting]", times=2)
    log = agent.log_text()
    assert "Host key verification failed" in log and "accept it once" in log
    assert agent.process.poll() is None


# -- the runner's own plumbing, without ssh ------------------------------------------------


def _runner() -> Agent:
    settings = Settings(server="pub", name="pi", machine_id="0" * 32, login_user="me", port=20000)
    return Agent(settings, ["ssh"], log=io.StringIO())


def test_signals_become_events_a_stop_first() -> None:
    runner = _runner()
    assert runner._take_signal() is None
    runner._on_signal(signal.SIGUSR1, None)
    runner._on_signal(signal.SIGTERM, None)
    assert runner._take_signal() == messages.StopRequested()
    assert runner._take_signal() == messages.ReconnectRequested()
    assert runner._take_signal() is None
    runner._on_signal(signal.SIGHUP, None)
    runner._on_signal(signal.SIGINT, None)
    assert [runner._take_signal(), runner._take_signal()] == [
        messages.StopRequested(),
        messages.ReconnectRequested(),
    ]


def test_a_wait_ends_at_its_deadline_or_at_a_signal() -> None:
    runner = _runner()
    assert runner._perform(messages.Wait(until=0.0)) == messages.TimePassed()
    runner._on_signal(signal.SIGUSR1, None)
    assert runner._perform(messages.Wait(until=runner.clock() + 60)) == messages.ReconnectRequested()


def test_log_lines_carry_the_state() -> None:
    runner = _runner()
    runner._do(messages.Log("up", "127.0.0.1:20000 on pub"))
    line = runner.out.getvalue()  # type: ignore[attr-defined]
    assert line.endswith(" rtun tunnel [up] 127.0.0.1:20000 on pub\n") and line.count("\n") == 1
