"""The single-file client: a zipapp of this rtun package for servers without pip.

Built from the installed package itself. The daemon (``rtun.daemon``, which needs the desktop
extras) is left out; everything else is stdlib-only. Each module is also there compiled for this
computer's Python (an unchecked hash-based .pyc): a server with the same Python version starts
it faster, any other ignores it. Compiled code is not byte-for-byte reproducible, so the zip's
comment, ``rtun VERSION SHA256-OF-THE-SOURCES``, is what tells whether a copy is current.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import marshal
import os
import zipfile

import rtun

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Optional, Tuple

# Run directly, the file is a sh script that starts python3 on the rtun package inside it: a
# zip given to python3 (as `python3 FILE` still may) is started through runpy, whose imports
# (importlib.util, contextlib) are 2-3 ms of every command's start. sh stops reading at exec.
LAUNCHER = (
    b"#!/bin/sh\n"
    b"exec python3 -c 'import os, sys; sys.argv[0] = sys.argv.pop(1); "
    b"sys.path[0] = os.path.abspath(sys.argv[0]); from rtun.cli import main; sys.exit(main())' "
    b'"$0" "$@"\n'
)
EXCLUDED = ("daemon",)  # subpackages of rtun left out
# Pure-Python packages carried along when this computer has them (as shiv and pex carry
# dependencies): tqdm draws `rtun send`'s progress bar on the server, which has no pip.
VENDORED = ("tqdm",)
MAIN = b"import sys\nfrom rtun.cli import main\nsys.exit(main())\n"
_EPOCH = (1980, 1, 1, 0, 0, 0)


def _entry(name: str, compress: bool = True) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, _EPOCH)
    info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    return info


def _package(root: str, package: str, excluded: "Tuple[str, ...]" = ()) -> "List[Tuple[str, bytes]]":
    """The .py files below ``root``, named as the package ``package`` in the zip."""
    found = []
    for directory, subdirs, files in os.walk(root):
        relative = os.path.relpath(directory, root)
        top = relative.split(os.sep)[0]
        subdirs[:] = sorted(d for d in subdirs if d != "__pycache__")
        if top in excluded:
            subdirs[:] = []
            continue
        for name in sorted(files):
            if name.endswith(".py"):
                arcname = "/".join([package] + ([] if relative == "." else relative.split(os.sep)) + [name])
                with open(os.path.join(directory, name), "rb") as f:
                    found.append((arcname, f.read()))
    return found


def _vendored() -> "List[Tuple[str, bytes]]":
    """Each VENDORED package installed here: its modules, and its metadata and licence (its
    version is read from them) under its dist-info directory."""
    from importlib import metadata

    found = []
    for package in VENDORED:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        found += _package(list(spec.submodule_search_locations)[0], package)
        try:
            dist = metadata.distribution(package)
        except metadata.PackageNotFoundError:
            continue
        info = f"{package}-{dist.version}.dist-info"
        for file in dist.files or ():
            if file.name in ("METADATA", "LICENCE", "LICENSE") and ".dist-info" in str(file):
                found.append((f"{info}/{file.name}", file.read_text().encode()))
    return found


def _sources() -> "List[Tuple[str, bytes]]":
    root = os.path.dirname(os.path.abspath(rtun.__file__))
    return _package(root, "rtun", EXCLUDED) + _vendored()


def _pyc(source: bytes, arcname: str) -> bytes:
    """An unchecked hash-based .pyc (PEP 552): valid whatever the timestamps in the zip."""
    code = compile(source, arcname, "exec", dont_inherit=True)
    magic = importlib.util.MAGIC_NUMBER
    flags = (0b01).to_bytes(4, "little")  # hash-based, not checked against the source
    return magic + flags + importlib.util.source_hash(source) + marshal.dumps(code)


def identity(sources: "Optional[List[Tuple[str, bytes]]]" = None) -> bytes:
    """``rtun VERSION SHA256``: the version and a digest of every source file in the bundle."""
    digest = hashlib.sha256(LAUNCHER + MAIN)
    for arcname, source in sources if sources is not None else _sources():
        digest.update(b"%s\0%d\0" % (arcname.encode(), len(source)) + source)
    return f"rtun {rtun.__version__} {digest.hexdigest()}".encode()


def build(compiled: bool = True) -> bytes:
    """The zipapp: ``python3 rtun.pyz COMMAND``, or run it directly (its sh launcher)."""
    sources = _sources()
    buffer = io.BytesIO()
    buffer.write(LAUNCHER)
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.comment = identity(sources)
        archive.writestr(_entry("__main__.py"), MAIN)
        for arcname, source in sources:
            archive.writestr(_entry(arcname), source)
            if compiled and arcname.endswith(".py"):
                # Stored: zipimport then loads it without importing zlib and inflating each
                # module (1-1.5 ms of every start), for about 1 MiB more to copy once.
                archive.writestr(_entry(arcname + "c", compress=False), _pyc(source, arcname))
    return buffer.getvalue()
