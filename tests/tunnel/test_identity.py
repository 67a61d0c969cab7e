"""Who this machine is: the hashed machine id, its stable port, its default name."""

from __future__ import annotations

from rtun.tunnel import identity, registry


def test_machine_id_is_hashed_and_stable() -> None:
    assert identity.machine_id("abc") == identity.machine_id("abc") != identity.machine_id("abd")
    assert "abc" not in identity.machine_id("abc") and len(identity.machine_id("abc")) == 32


def test_preferred_port_is_stable_and_in_range() -> None:
    ports = {identity.preferred_port(identity.machine_id(str(n))) for n in range(200)}
    assert all(identity.PORT_BASE <= p < identity.PORT_BASE + identity.PORT_SPAN for p in ports)
    assert len(ports) > 150
    mid = identity.machine_id("x")
    assert identity.preferred_port(mid) == identity.preferred_port(mid)


def test_names_are_sanitized_into_registry_names() -> None:
    assert identity.sanitize_name("my laptop (2)") == "my-laptop-2"
    assert registry.NAME_RE.match(identity.default_name())
