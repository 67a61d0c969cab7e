"""The client: what runs on the server and talks to the daemon through the forwarded socket.

Standard library only (the single-file client bundles this package without pip), and each
command imports only the modules it uses, since one starts on every `rtun` command a user types:
``pump`` (one connection: a blocking pump around the protocol's Sender), ``discovery`` (which
socket), ``handshake`` (HELLO, pipelined with the first request), ``requests`` (one function per
small request), ``sources`` (what a send reads), ``options`` (where and how it sends),
``upload`` (`send` and `view`), ``parallel`` (large files in ranges) and ``edit`` (`rtun edit`).
Nothing is imported here: importing ``rtun.client.pump`` must not import the rest.
"""
