"""Files written whole or not at all, and renames a crash does not undo.

One owner for the order keygen, ``export --sign``, an export's sidecar, the lake and the sealing
state all need: a temporary name beside the file, its bytes fsynced, the rename (or link) into
place, then the directory fsynced, so that after a crash the name holds the old bytes or the new
ones, never part of either, and a rename already reported is not undone.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["fsync_dir", "write_whole"]


def fsync_dir(path: Path | str) -> None:
    """The directory's entries (a rename, a link, an unlink in it) on disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_whole(path: Path, data: bytes, mode: int, replace: bool = True) -> None:
    """Write ``data`` to ``path`` whole or not at all: under a temporary name beside it (mkstemp:
    O_EXCL, O_NOFOLLOW, 0600 until its bytes are on disk), given ``mode``, renamed into place,
    and the directory fsynced. Without ``replace`` it is linked instead, which fails
    (FileExistsError) where ``path`` exists, even one made meanwhile, and leaves that one as it
    is. OSError otherwise; the temporary name never stays behind."""
    path = Path(path)
    parent = path.parent  # "." for a bare name: Path never gives an empty parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if path exists, where a rename would replace it
            os.unlink(tmp)
        tmp = None
        fsync_dir(parent)
    finally:
        if tmp is not None:
            os.unlink(tmp)
