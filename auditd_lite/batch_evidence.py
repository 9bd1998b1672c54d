"""What a batch's header says besides its records in chain format 5 (chain.py's text; docs/design.md,
"Tamper evidence"): the columns of its run's row it set (``run_values``) and the seen_processes and
removed_files rows it inserted (``seen_rows``, ``removal_rows``), their encodings and the columns
they cover. The batch writer makes them (storage/batches.py), verify checks the rows against them
(investigate/evidence.py).

Standard library only (the analysis side uses this without SQLAlchemy).
"""

from __future__ import annotations

import hashlib
import struct

from .chain import serialize
from .rows import CONTEXT_FIELDS

# the columns of runs, seen_processes and removed_files, in their tables' order (copies of
# storage/schema.py's, which tests/test_evidence.py holds them to): what format 5 covers
RUN_COLUMNS = ("id", "boot_id", "host", "kernel", "version", "settings", "started_ns", "attached_ns",
               "stopped_ns", "lost_kernel", "lost_user", "events_written", "stream_lines_written",
               "stream_lines_dropped")
# each counter of a run's row and the batch column that adds to it
RUN_ADDS = {"events_written": "count", "lost_kernel": "lost_kernel", "lost_user": "lost_user",
            "stream_lines_written": "stream_written", "stream_lines_dropped": "stream_dropped"}
SEEN_COLUMNS = ("id", "run_id", "time_ns", "pid", "ppid", "uid", "comm", "filename", "argv", "start_ns",
                "start_tick_ns") + CONTEXT_FIELDS + ("batch_id",)
REMOVAL_COLUMNS = ("id", "batch_id", "removed_ns", "name", "reason", "detail", "size", "first_batch_id",
                   "first_prev_hash", "last_batch_id", "last_hash", "records", "first_ns", "last_ns")
SIDE_TABLES = {"seen_processes": SEEN_COLUMNS, "removed_files": REMOVAL_COLUMNS}
# the batches column listing each side table's rows
SIDE_COLUMN = {"seen_processes": "seen_rows", "removed_files": "removal_rows"}
_SIDE_ENTRY = struct.Struct("<q32s")


def deserialize(data: bytes, n: int) -> tuple:
    """The ``n`` values serialize() made ``data`` of; ValueError if it is not that."""
    tags = data[:n].decode("ascii")
    if len(tags) != n or set(tags) - set("NIRTB"):
        raise ValueError("not a serialized tuple")
    nums = [t for t in tags if t in "IR"]
    var = [t for t in tags if t in "TB"]
    head = struct.Struct("<" + "".join("q" if t == "I" else "d" for t in nums) + "I" * len(var))
    fields = head.unpack_from(data, n)
    at = n + head.size
    numbers, lengths = iter(fields[:len(nums)]), iter(fields[len(nums):])
    out = []
    for t in tags:
        if t == "N":
            out.append(None)
        elif t in "IR":
            out.append(next(numbers))
        else:
            size = next(lengths)
            raw = data[at:at + size]
            if len(raw) != size:
                raise ValueError("a serialized tuple cut short")
            at += size
            out.append(raw.decode("utf-8", "surrogatepass") if t == "T" else bytes(raw))
    if at != len(data):
        raise ValueError("bytes after a serialized tuple")
    return tuple(out)


def pack_values(pairs) -> bytes:
    """A batch's ``run_values``: the count of (column, value) pairs as uint32, little endian, then
    serialize() of the names and values alternating."""
    flat = tuple(x for pair in pairs for x in pair)
    return struct.pack("<I", len(flat) // 2) + serialize(flat)


def unpack_values(blob) -> list[tuple[str, object]]:
    """pack_values' pairs; ValueError if the blob is not such."""
    blob = bytes(blob)
    if len(blob) < 4:
        raise ValueError("run values cut short")
    (n,) = struct.unpack_from("<I", blob)
    flat = deserialize(blob[4:], 2 * n)
    names = flat[0::2]
    if not all(isinstance(c, str) for c in names):
        raise ValueError("run values without their column names")
    return list(zip(names, flat[1::2]))


def side_digest(table: str, row: tuple) -> bytes:
    """The digest of one seen_processes or removed_files row (its SIDE_TABLES columns)."""
    return hashlib.sha256(table.encode() + b"\0" + serialize(tuple(row))).digest()


def side_rows(entries) -> bytes | None:
    """A batch's seen_rows or removal_rows of (id, digest) pairs; None for none."""
    return b"".join(_SIDE_ENTRY.pack(i, d) for i, d in entries) or None


def parse_side_rows(blob) -> list[tuple[int, bytes]]:
    """side_rows' (id, digest) pairs; ValueError if the blob is not such."""
    blob = bytes(blob or b"")
    if len(blob) % _SIDE_ENTRY.size:
        raise ValueError("side rows cut short")
    return [_SIDE_ENTRY.unpack_from(blob, at) for at in range(0, len(blob), _SIDE_ENTRY.size)]
