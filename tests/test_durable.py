"""durable.write_whole: a file is replaced whole or not at all, and never left with a temporary
name beside it (what keygen, export --sign, an export's sidecar and the sealing state rely on)."""

import os
import stat

import pytest

from auditd_lite.durable import write_whole
from conftest import tmpfs


def test_replace_gives_the_new_bytes_and_mode_and_leaves_nothing_else(tmp_path):
    """An existing file replaced: the new bytes, the mode asked for, and the directory holds
    that one name only."""
    path = tmp_path / "f"
    path.write_bytes(b"old")
    write_whole(path, b"new bytes", 0o444)
    assert path.read_bytes() == b"new bytes"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o444
    assert os.listdir(tmp_path) == ["f"]


def test_without_replace_an_existing_file_is_never_touched(tmp_path):
    """replace=False where the name exists: FileExistsError, the old bytes and inode kept, no
    temporary name left; where it does not exist the file is made."""
    path = tmp_path / "f"
    path.write_bytes(b"old")
    ino = os.stat(path).st_ino
    with pytest.raises(FileExistsError):
        write_whole(path, b"new", 0o600, replace=False)
    assert path.read_bytes() == b"old" and os.stat(path).st_ino == ino
    assert os.listdir(tmp_path) == ["f"]
    write_whole(tmp_path / "g", b"made", 0o600, replace=False)
    assert (tmp_path / "g").read_bytes() == b"made"
    assert sorted(os.listdir(tmp_path)) == ["f", "g"]


def test_full_filesystem_keeps_the_old_file_whole(tmp_path):
    """On a filesystem with no room for the new bytes: OSError, the old file is as it was, and
    no temporary file takes the room."""
    with tmpfs(tmp_path / "mnt", "64k") as mnt:
        path = mnt / "f"
        path.write_bytes(b"old" * 1000)
        with pytest.raises(OSError):
            write_whole(path, b"x" * (1 << 20), 0o600)
        assert path.read_bytes() == b"old" * 1000
        assert os.listdir(mnt) == ["f"]
