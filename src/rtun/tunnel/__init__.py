"""The reverse tunnel agent (`rtun tunnel`), its registry, and the commands that use it (hosts, connect, ssh-config)."""
