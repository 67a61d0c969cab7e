"""What the daemon does for a request: notify, receive files, view. Actions never touch the
socket: the handlers feed them the protocol core's events and send their replies."""
