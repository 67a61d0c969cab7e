"""Every bound the protocol enforces, in one place. Both sides read them from here."""

MAX_LINE = 64 * 1024  # longest request, header, entry or reply line (CRLF included)
MAX_PUT_REPLY = 256 * 1024 * 1024  # PUT's reply lists every saved path: one per file sent
MAX_CHUNK = 16 * 1024 * 1024  # largest data chunk inside a PUT file entry
MAX_CHUNK_DIGITS = 9  # a chunk length line: up to 999,999,999 before the MAX_CHUNK check
MAX_SIZE_DIGITS = 20  # a size field: past any disk; keeps int() clear of its digit limit
MAX_ENTRIES = 1_000_000  # entries in one PUT (the reply lists each file)
MAX_PATH_BYTES = 4000  # a relative path from the peer, UTF-8 encoded
MAX_COMPONENT_BYTES = 255  # NAME_MAX on Linux and macOS
MAX_DEPTH = 64  # components in one path, the PUT destination included
MAX_MTIME = 1e11  # seconds since the epoch; anything later is not a real file's mtime
MAX_REPLY_LISTING = 4 * 1024 * 1024  # bytes (with object overhead) of paths a PUT reply lists; then counts
MAX_TRACKED_DIRECTORIES = 4 * 1024 * 1024  # path bytes of new directories whose mtime waits for the end
SHA256_HEX_LEN = 64
RECEIVE_BUFFER = 1024 * 1024  # the daemon's receive buffer during an upload; > MAX_LINE
IDLE_BUFFER = 128 * 1024  # ... and between uploads: what every open connection costs; > MAX_LINE
MAX_PAYLOAD = 1024 * 1024 * 1024  # a payload reply (PASTE, an edit's save) the client accepts
MAX_URL = 8 * 1024  # bytes of a URL for OPEN; browsers and xdg-open take far less in practice
MAX_EARLY_DATA = 1024 * 1024  # upload data a client sends before READY; a daemon that refuses
# reads and discards up to this much (plus a line) before it closes
MAX_RANGES = 16384  # verified ranges one ranged file may hold (the daemon's bound)
MIN_RANGE = 64 * 1024  # the smallest range but a file's last: bounds the ranges of a file
MAX_RANGES_REPLY = 4 * 1024 * 1024  # RANGES' reply lists them (about 90 bytes each)
MAX_EXTENTS = 16384  # separate written pieces of one ranged file the daemon tracks (and pays for)
MAX_FORWARDS = 16  # local ports one daemon listens on for forwards at once
MAX_FORWARD_CONNECTIONS = 64  # connections open (or waiting to be dialled) through one forward
MAX_FORWARDED = 128  # ... through all forwards together: half the daemon's connections by default
DIAL_TIMEOUT = 10.0  # seconds a local connection waits for its forward's client to dial it
PORT_SEARCH = 16  # ports tried from the one asked for when it is taken (FORWARD without exact)
MIN_LOCAL_PORT = 1024  # a forward never listens below: those ports are the system's
FORWARD_BURST = 16  # FORWARD requests at once, then FORWARD_RATE a second (each binds ports)
FORWARD_RATE = 1.0
