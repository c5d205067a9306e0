"""The sha256 of a file's bytes: how records, packs, imports and weights name the files they depend on."""
from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["file_sha256"]

_CACHE: dict[tuple, str] = {}


def file_sha256(path, cache: bool = False) -> str:
    """The sha256 (hex) of the file at ``path``, read in 1 MiB blocks. ``cache=True`` remembers it per resolved
    path, size and modification time (for large files hashed again and again, such as a backbone's weights)."""
    path = Path(path)
    key = None
    if cache:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if key in _CACHE:
            return _CACHE[key]
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if key is not None:
        _CACHE[key] = digest.hexdigest()
    return digest.hexdigest()
