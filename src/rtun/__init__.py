"""rtun: reach back to your own computer from a remote SSH session, and keep machines behind NAT reachable."""

__version__ = "0.2.0"
