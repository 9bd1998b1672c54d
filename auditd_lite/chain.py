"""The tamper-evidence hash chain over batches (DESIGN decision 7).

A batch's hash is

    SHA-256( prev_hash (32 bytes)
             || repr(batch header tuple).encode()
             || row_digest(event 1) || row_digest(event 2) || ... )

with events in id order, and ``row_digest(row) = SHA-256(repr(row tuple))``
where the row tuple holds every column of ``events`` in ``EVENT_COLUMNS``
order, as SQLite gives them back (ints, str, bytes, None; booleans as 0/1).
Hashing per-row digests rather than rows lets an export carry a subset of a
batch's rows and the digests of the others, and still be checked.

The chain runs across rotated files: the first batch of a file names the
last batch hash of the file before it. Standard library only: the analysis
side (verify, export) uses this without SQLAlchemy.
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass
from typing import Iterable

GENESIS = "0" * 64

EVENT_COLUMNS = (
    "id", "run_id", "batch_id", "event", "time_ns", "pid", "tid", "ppid", "uid", "gid", "comm",
    "start_ns", "old_pid", "euid", "auid", "sessionid", "cgroup_id", "filename", "argv", "argc",
    "args_truncated", "errno", "status", "exit_code", "signal", "core_dumped", "duration_ns",
)
BATCH_HEADER = ("id", "run_id", "written_ns", "first_event_id", "last_event_id", "count",
                "lost_kernel", "lost_user")

_sha256 = hashlib.sha256


def row_digest(row: tuple) -> bytes:
    return _sha256(repr(row).encode()).digest()


def row_digests(rows: list[tuple]) -> list[bytes]:
    """row_digest of each row; the writer's hot path, so without a call per row."""
    sha, rep = _sha256, repr
    return [sha(rep(r).encode()).digest() for r in rows]


def batch_hash(prev_hash: str, header: tuple, row_digests: Iterable[bytes]) -> str:
    h = _sha256(bytes.fromhex(prev_hash))
    h.update(repr(header).encode())
    for d in row_digests:
        h.update(d)
    return h.hexdigest()


@dataclass
class Problem:
    file: str
    batch_id: int | None
    reason: str

    def __str__(self) -> str:
        where = f" batch {self.batch_id}" if self.batch_id is not None else ""
        return f"{self.file}{where}: {self.reason}"


@dataclass
class FileChain:
    """What a file's chain looks like from the outside: where it starts and ends."""

    first_prev: str | None  # prev_hash of its first batch
    last_hash: str | None  # hash of its last batch
    batches: int


def check_file(conn: sqlite3.Connection, name: str, problems: list[Problem],
               omitted: dict[int, dict[int, bytes]] | None = None) -> FileChain:
    """Recompute every batch of one file; append what is wrong to ``problems``.

    ``omitted`` maps batch id -> {event id: row digest} for rows an export
    left out of a batch whose other rows it carries.
    """
    cols = ", ".join(EVENT_COLUMNS)
    batch_cols = {r[1] for r in conn.execute("PRAGMA table_info(batches)")}
    if "hash" not in batch_cols:
        problems.append(Problem(name, None, "written before the hash chain (schema revision 0001): "
                                "nothing to verify"))
        return FileChain(None, None, 0)
    batches = conn.execute(
        f"SELECT {', '.join(BATCH_HEADER)}, prev_hash, hash FROM batches ORDER BY id").fetchall()
    rows = conn.execute(f"SELECT {cols} FROM events ORDER BY id")
    pending = rows.fetchone()
    prev = None
    first_prev = None
    for b in batches:
        header, prev_hash, stored = tuple(b[:8]), b[8], b[9]
        batch_id, count, first, last = header[0], header[5], header[3], header[4]
        if stored is None:
            problems.append(Problem(name, batch_id, "batch has no hash (written before the chain)"))
            continue
        if first_prev is None:
            first_prev = prev_hash
        elif prev_hash != prev:
            problems.append(Problem(name, batch_id, "chain broken: previous batch missing or changed"))
        digests: dict[int, bytes] = dict((omitted or {}).get(batch_id, {}))
        while pending is not None and pending[2] == batch_id:
            digests[pending[0]] = row_digest(tuple(pending))
            pending = rows.fetchone()
        if count and (first is None or last is None or set(digests) != set(range(first, last + 1))):
            problems.append(Problem(
                name, batch_id, f"holds {len(digests)} of its {count} records: rows deleted or added"))
        elif batch_hash(prev_hash, header, (digests[i] for i in sorted(digests))) != stored:
            problems.append(Problem(name, batch_id, "hash mismatch: a record or the batch was edited"))
        prev = stored
    while pending is not None:
        problems.append(Problem(name, pending[2], f"record {pending[0]} belongs to no batch"))
        pending = rows.fetchone()
    return FileChain(first_prev, prev, len(batches))


def check_sequence(chains: list[tuple[str, FileChain]], problems: list[Problem]) -> None:
    """Files given oldest first: each must start where the one before ended."""
    for (older, a), (newer, b) in zip(chains, chains[1:]):
        if a.last_hash is None or b.first_prev is None:
            continue
        if b.first_prev != a.last_hash:
            problems.append(Problem(newer, None, f"does not continue the chain of {older}: "
                                    "a file between them is missing, or one is from elsewhere"))
