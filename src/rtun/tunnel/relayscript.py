"""The relay's side of the registry: one POSIX sh program, ``rtun-relay`` (docs/relay.md).

The relay needs sshd and a POSIX shell with the usual utilities (``head -c``, ``wc``, ``sort``,
``awk``, ``xargs``, ``cat``, ``mv``, ``mktemp -d``); never Python or rtun. A listing costs a
handful of processes whatever the number of entries; on Linux it also says which ports have a
listener (``/proc/net/tcp``), so that rtun probes only those. The same text serves two ways:

- installed on the relay (``rtun tunnel authorize --print-script``) as the forced command of a
  tunnel key, ``command="sh .rtun/rtun-relay serve MACHINE_ID DIR"``: it then carries out only
  the request in ``SSH_ORIGINAL_COMMAND``, which must be exactly ``rtun-relay put MACHINE_ID``
  (the key's own machine; the entry on stdin) or ``rtun-relay list NONCE``;
- inline, for an account without a forced command: ``sh -c 'd=DIR; <script>' rtun-relay put ID``.

Every answer starts with one status line on stdout, ``rtun-relay 1 ok`` or
``rtun-relay 1 refused: REASON`` (exit 2) or ``rtun-relay 1 failed: REASON`` (exit 1), so rtun
can tell the relay's answer from a login shell's ``command not found``.
"""

from __future__ import annotations

MAX_ENTRY_BYTES = 16 * 1024  # one entry file, on the relay and in rtun
MAX_FILES = 10000  # entry files looked at per listing
MAX_LISTING_BYTES = 16 * 1024 * 1024  # entry bytes per listing, smallest files first
STATUS = b"rtun-relay 1 "
TOKEN = "rtun-relay"  # the first word of every request

_TEMPLATE = r"""# rtun-relay 1: the relay side of `rtun tunnel` (see rtun's docs/relay.md). POSIX sh.
# authorized_keys: restrict,port-forwarding,permitlisten=...,permitopen=...,
#                  command="sh .rtun/rtun-relay serve MACHINE_ID REGISTRY_DIR" KEY
# Requests (SSH_ORIGINAL_COMMAND): "rtun-relay put MACHINE_ID" (the entry on stdin) and
# "rtun-relay list NONCE"; nothing else runs.
set -f
IFS=' 	
'
LC_ALL=C
export LC_ALL
x='[0-9a-f]'
h=$x$x$x$x$x$x$x$x$x$x$x$x$x$x$x$x$x$x$x$x$x$x$x$x$x$x$x$x$x$x$x$x
say() { printf 'rtun-relay 1 %s\n' "$1"; }
refuse() { say "refused: $1"; exit 2; }
fail() { say "failed: $1"; exit 1; }
is_id() { case $1 in $h) return 0 ;; esac; return 1; }

put() {
  [ -d "$d" ] || mkdir -p -m 700 -- "$d" 2>/dev/null || [ -d "$d" ] ||
    fail "cannot create the registry directory"
  [ ! -d "$d/$1.json" ] || fail "$1.json is a directory"
  t="$d/.$1.json.$$.tmp"
  trap 'rm -f -- "$t"' 0
  trap 'exit 1' HUP INT TERM PIPE
  umask 022
  set -C
  head -c @MAX_PLUS_ONE@ > "$t" 2>/dev/null || fail "cannot write $1.json"
  set +C
  n=$(wc -c < "$t") || fail "cannot read back $1.json"
  [ "$n" -gt 0 ] || refuse "the entry is empty"
  [ "$n" -le @MAX_ENTRY@ ] || refuse "the entry is larger than @MAX_ENTRY@ bytes"
  mv -f -- "$t" "$d/$1.json" || fail "cannot rename into $1.json"
  trap - 0
  say ok
}

list() {
  if [ ! -e "$d" ] && [ ! -h "$d" ]; then say ok; printf 'N 0 0\nC\nE\n'; return 0; fi
  cd -- "$d" 2>/dev/null || fail "cannot enter the registry directory"
  w=$(mktemp -d /tmp/rtun-relay.XXXXXXXX 2>/dev/null) && [ -d "$w" ] ||
    fail "cannot make a temporary directory in /tmp"
  trap 'rm -rf -- "$w"' 0
  trap 'exit 1' HUP INT TERM PIPE
  printf '\n--rtun-%s--\n' "$1" > "$w/sep" ||
    fail "cannot write a temporary file"
  say ok
  exec 3>&1
  n=0 cut=0
  set +f
  for f in $h.json; do
    [ -e "$f" ] || [ -h "$f" ] || continue
    n=$((n + 1))
    if [ "$n" -gt @MAX_FILES@ ]; then cut=$((cut + 1)); continue; fi
    if [ -h "$f" ] || [ ! -f "$f" ]; then printf 'X %s\n' "$f" >&3; continue; fi
    printf '%s\n' "$f"
  done > "$w/names"
  set -f
  if [ -s "$w/names" ]; then
    xargs wc -c < "$w/names" 2>/dev/null | sort -n > "$w/sizes"
  else
    : > "$w/sizes"
  fi
  awk -v n="$n" -v cut="$cut" -v list="$w/listed" -v sep="$w/sep" '
    length($2) != 37 || $2 !~ /^[0-9a-f]+[.]json$/ { next }
    $1 > @MAX_ENTRY@ { print "B", $2, $1; next }
    { used += $1 }
    used > @MAX_LISTING@ { cut++; next }
    { print "S", $2; print $2 > list; print sep > list }
    END { printf "N %d %d\nC\n", n, cut }' "$w/sizes" || fail "awk failed"
  [ ! -s "$w/listed" ] || xargs cat -- < "$w/listed" 2>/dev/null
  printf 'E\n'
  if [ -r /proc/net/tcp ]; then  # Linux: the ports something listens on, so rtun need not
    printf 'P\n'                 # probe those nothing listens on
    awk 'FNR > 1 && $4 == "0A" { n = split($2, a, ":"); print "L", a[n] }' \
      /proc/net/tcp /proc/net/tcp6 2>/dev/null | sort -u
  fi
}

request() {
  [ "$#" -eq 2 ] || refuse "unknown request"
  case $1 in
    put) is_id "$2" || refuse "bad machine id"; put "$2" ;;
    list) is_id "$2" || refuse "bad nonce"; list "$2" ;;
    *) refuse "unknown request" ;;
  esac
}

if [ "${1-}" = serve ]; then
  [ "$#" -eq 3 ] && is_id "$2" && [ -n "$3" ] || refuse "bad forced command in authorized_keys"
  d=$3
  r=${SSH_ORIGINAL_COMMAND-}
  case $r in
    "rtun-relay put $2") put "$2" ;;
    "rtun-relay put "$h) refuse "this key may only write the entry of machine $2" ;;
    "rtun-relay list "$h) request list "${r#rtun-relay list }" ;;
    *) refuse "this key runs only 'rtun-relay put MACHINE_ID' and 'rtun-relay list NONCE'" ;;
  esac
else
  [ -n "${d-}" ] || refuse "no registry directory"
  request "$@"
fi
"""

SCRIPT = (
    _TEMPLATE.replace("@MAX_PLUS_ONE@", str(MAX_ENTRY_BYTES + 1))
    .replace("@MAX_ENTRY@", str(MAX_ENTRY_BYTES))
    .replace("@MAX_FILES@", str(MAX_FILES))
    .replace("@MAX_LISTING@", str(MAX_LISTING_BYTES))
)
