"""The local side: the daemon that listens on the UNIX socket and the actions it performs."""
