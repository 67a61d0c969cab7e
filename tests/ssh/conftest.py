"""The ssh driver's tests use the tunnel's real sshd fixtures (a machine's sshd, a public server)."""

from tunnel.conftest import machine_sshd, world  # noqa: F401  (fixtures, found by name)
