"""The protocol core: pure objects, no sockets, no files, no clock. See docs/protocol.md.

``messages`` holds the protocol's values (requests, the reply, error codes, the ``NEED_DATA``
and ``CLOSED`` markers), ``wire`` the codec that turns them into lines and back from one table
keyed by verb, ``framing`` the lines of an upload; ``sender`` is the client's side of a
connection and ``receiver`` the daemon's, each fed bytes and returning events or bytes to write;
``names`` turns paths from the peer into safe components; ``limits`` holds every bound, once.
"""
