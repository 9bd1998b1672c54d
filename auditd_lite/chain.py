"""The tamper-evidence hash chain over batches (docs/design.md, "Tamper evidence").

A batch's hash covers the previous batch's hash, the batch header and one
SHA-256 digest per record, in id order. Hashing per-record digests rather
than records lets an export carry a subset of a batch's records and the
digests of the others, and still be checked. The chain runs across rotated
files: the first batch of a file names the last batch hash of the file
before it.

Format 5 (hashes stored as ``"5:" + hex``), written since schema revision 0007: format 4's
records, and a header that also covers every other row an investigation reads
(docs/design.md, "Tamper evidence"):

    batch hash    = SHA-256("auditd-lite chain 5\0" || prev (32 bytes)
                            || serialize(header + evidence) || record digests ...)

where ``evidence`` is the batch's ``EVIDENCE_COLUMNS``, what else its transaction wrote:

- ``stream_written``, ``stream_dropped``: what it added to its run's stream counters (NULL for a
  run without a stream), as ``count``, ``lost_kernel`` and ``lost_user`` are what it added to
  ``events_written`` and the loss counters;
- ``run_values``: the columns of its run's row it set, with their values (batch_evidence.py's
  ``pack_values``): every
  column (but id) of the row it inserted (a run's start in a file), ``attached_ns`` when capture
  began, ``stopped_ns`` at a clean stop; NULL for none. So the row a file holds is the fold of
  its batches: each column as last set, each counter plus the batches' additions;
- ``seen_rows``, ``removal_rows``: the ``seen_processes`` and ``removed_files`` rows it inserted
  (batch_evidence.py's ``side_rows``): each its id (int64, little endian) and the SHA-256 of
  ``table name || NUL || serialize(row)`` (``SEEN_COLUMNS``, ``REMOVAL_COLUMNS``), in id order;
  NULL for none.

A run's start, the moment it attached, the processes seen at start, the stream's counts while
idle, a clean stop and a retention removal are each a batch of their own (no records) unless
they ride on a batch of records.

Format 4 (hashes stored as ``"4:" + hex``), written by schema revision 0006:

    record digest = SHA-256(serialize(captured) || serialize(context) || serialize(gate))
    batch hash    = SHA-256("auditd-lite chain 4\0" || prev (32 bytes)
                            || serialize(header) || record digests ...)

where ``gate`` is a record's ``rows.GATE_FIELDS`` (the ABI an exec came through, the parent's
start time): format 3's record with those after it.

Format 3 (hashes stored as ``"3:" + hex``), written by schema revisions 0003 to 0005:

    record digest = SHA-256(serialize(captured) || serialize(context))
    batch hash    = SHA-256("auditd-lite chain 3\0" || prev (32 bytes)
                            || serialize(header) || record digests ...)

where ``captured`` is a record's first ``len(CAPTURED_COLUMNS)`` columns
(format 2's record) and ``context`` its ``rows.CONTEXT_FIELDS`` (the
executable's hash, the cgroup, unit and container), NULL for an exit.

Format 2 (hashes stored as ``"2:" + hex``), written by schema revision 0002:

    record digest = SHA-256(serialize(captured))
    batch hash    = SHA-256("auditd-lite chain 2\0" || prev (32 bytes)
                            || serialize(header) || record digests ...)

where ``serialize`` of a tuple of SQLite values (a record: every column of
``events`` in ``EVENT_COLUMNS`` order; a header: ``BATCH_HEADER``) is

    one type byte per value: N (NULL), I (integer), R (real), T (text), B (blob)
    || each I as int64 and each R as float64, little endian, in order
    || each T and B length in bytes as uint32, little endian, in order
    || each T (UTF-8) and B value's bytes, in order

which any language can recompute from the database.

Format 1 (hashes stored as bare hex; files written before it): the same
structure with ``repr(tuple).encode()`` for ``serialize``, no domain prefix.
Python's repr of text depends on its Unicode tables, which is why it was
replaced. All five verify; a file keeps the revision it was written at, and
``file_event_columns`` says which columns of it there are to read.

Batches without a hash were written before the chain existed (the first
release, schema revision 0001): they are checked for their records only, and
named as such. They can only come first: the chain's first batch after them
links to GENESIS, and a batch without a hash after a hashed one is a hash
that was removed.

Standard library only: the analysis side (verify, export) uses this without
SQLAlchemy.
"""

from __future__ import annotations

import hashlib
import sqlite3
import struct
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Iterable

from .memo import Memo
from .rows import ABI_NAMES, CAPTURED_FIELDS, CONTEXT_FIELDS, GATE_FIELDS, ROW_FIELDS

GENESIS = "0" * 64
WRITE_FORMAT = 5
_PREFIX = {2: "2:", 3: "3:", 4: "4:", 5: "5:"}
_DOMAIN = {fmt: f"auditd-lite chain {fmt}\0".encode() for fmt in _PREFIX}

# every column of events, in the table's order (the columns of a record the decoder makes
# follow the three the writer adds). Formats 1 and 2 hash CAPTURED_COLUMNS, format 3
# CONTEXT_COLUMNS, format 4 all of EVENT_COLUMNS: a column added or moved is a new format, and
# tests/test_chain.py pins them so that it cannot happen unnoticed.
CAPTURED_COLUMNS = ("id", "run_id", "batch_id") + CAPTURED_FIELDS
CONTEXT_COLUMNS = CAPTURED_COLUMNS + CONTEXT_FIELDS
EVENT_COLUMNS = ("id", "run_id", "batch_id") + ROW_FIELDS
assert EVENT_COLUMNS == CONTEXT_COLUMNS + GATE_FIELDS
_NCAPTURED = len(CAPTURED_COLUMNS)
_NCONTEXT = len(CONTEXT_COLUMNS)
# the columns each format's record digest covers (those after them are not vouched for)
FORMAT_COLUMNS = {1: CAPTURED_COLUMNS, 2: CAPTURED_COLUMNS, 3: CONTEXT_COLUMNS, 4: EVENT_COLUMNS,
                  5: EVENT_COLUMNS}
BATCH_HEADER = ("id", "run_id", "written_ns", "first_event_id", "last_event_id", "count",
                "lost_kernel", "lost_user")
# format 5's header adds these batches columns (schema revision 0007; the module's text)
EVIDENCE_FORMAT = 5
EVIDENCE_COLUMNS = ("stream_written", "stream_dropped", "run_values", "seen_rows", "removal_rows")
BATCH_HEADER5 = BATCH_HEADER + EVIDENCE_COLUMNS

_sha256 = hashlib.sha256
_NONE = type(None)
_TAGS = {_NONE: "N", int: "I", bool: "I", float: "R", str: "T", bytes: "B"}


def serialize(values: tuple) -> bytes:
    """Format 2's serialization of one record or header (see the module's text)."""
    tags, fmt, nums, lens, data = [], ["<"], [], [], []
    for v in values:
        tag = _TAGS.get(type(v))
        if tag is None:
            raise TypeError(f"cannot serialize a {type(v).__name__} value")
        tags.append(tag)
        if tag == "I" or tag == "R":
            fmt.append("q" if tag == "I" else "d")
            nums.append(v)
        elif tag != "N":
            raw = v.encode("utf-8", "surrogatepass") if tag == "T" else v
            lens.append(len(raw))
            data.append(raw)
    fmt.append("I" * len(lens))
    return "".join(tags).encode() + struct.pack("".join(fmt), *nums, *lens) + b"".join(data)


def header_columns(fmt: int) -> tuple[str, ...]:
    """The batches columns a batch's hash covers in format ``fmt``, in order."""
    return BATCH_HEADER5 if fmt >= EVIDENCE_FORMAT else BATCH_HEADER


def _fast(signature: tuple) -> callable:
    """serialize() for records of one type signature, without its per-value loop.

    The writer's records come in three shapes (exec, exec_failed, exit); this
    is about half the cost of the general loop or of repr. It must give
    exactly serialize()'s bytes: tests compare the two.
    """
    tags = "".join(_TAGS[t] for t in signature).encode()
    nums = itemgetter(*[i for i, t in enumerate(signature) if t in (int, bool, float)])
    var = [i for i, t in enumerate(signature) if t in (str, bytes)]
    pack = struct.Struct("<%ds" % len(tags) + "".join(
        "d" if t is float else "q" for t in signature if t in (int, bool, float)) + "I" * len(var)).pack
    texts = tuple(signature[i] is str for i in var)
    if texts == (True, True, True, False):  # exec and exec_failed: event, comm, filename, argv
        i0, i1, i2, i3 = var

        def ser(r):
            e = r[i0].encode("utf-8", "surrogatepass")
            c = r[i1].encode("utf-8", "surrogatepass")
            f = r[i2].encode("utf-8", "surrogatepass")
            a = r[i3]
            return pack(tags, *nums(r), len(e), len(c), len(f), len(a)) + e + c + f + a
    elif texts == (True, True):  # exit: event, comm
        i0, i1 = var

        def ser(r):
            e = r[i0].encode("utf-8", "surrogatepass")
            c = r[i1].encode("utf-8", "surrogatepass")
            return pack(tags, *nums(r), len(e), len(c)) + e + c
    else:
        return serialize
    return ser


_I, _S, _B, _N = int, str, bytes, _NONE
_HEAD = (_I, _I, _I, _S, _I, _I, _I, _I, _I, _I, _S, _I)
EXEC_SIGNATURE = _HEAD + (_I,) * 5 + (_S, _B, _I, _I, _N) + (_N,) * 5
EXEC_FAILED_SIGNATURE = _HEAD + (_I,) * 5 + (_S, _B, _I, _I, _I) + (_N,) * 5
EXIT_SIGNATURE = _HEAD + (_N,) * 10 + (_I,) * 5
# rows.GATE_FIELDS of an exit: no ABI (an exec's is text, or NULL when the gate was not seen)
EXIT_GATE_SIGNATURE = (_N, _I)
_BY_SIGNATURE = {sig: _fast(sig) for sig in (EXEC_SIGNATURE, EXEC_FAILED_SIGNATURE, EXIT_SIGNATURE)}
_EVENT = EVENT_COLUMNS.index("event")


def hash_format(stored: str) -> int:
    for fmt, prefix in _PREFIX.items():
        if stored.startswith(prefix):
            return fmt
    return 1


def _hash_bytes(stored: str) -> bytes:
    fmt = hash_format(stored)
    return bytes.fromhex(stored[len(_PREFIX[fmt]):] if fmt > 1 else stored)


def file_event_columns(conn: sqlite3.Connection, schema: str = "main") -> tuple[str, ...]:
    """The columns of EVENT_COLUMNS a file's events table has, in order: all of them from
    revision 0006 on, CONTEXT_COLUMNS from 0003, CAPTURED_COLUMNS before it (what a file lacks
    is unknown, and no hash in it covers any). The one place that tells, for verify and export."""
    have = {r[1] for r in conn.execute(f"PRAGMA {schema}.table_info(events)")}
    if have.issuperset(GATE_FIELDS):
        return EVENT_COLUMNS
    return CONTEXT_COLUMNS if have.issuperset(CONTEXT_FIELDS) else CAPTURED_COLUMNS


def row_digest(row: tuple, fmt: int = WRITE_FORMAT) -> bytes:
    """The digest of one record as read back from SQLite (its file_event_columns, or more), in
    the batch's format: of the columns FORMAT_COLUMNS[fmt] names."""
    captured = tuple(row[:_NCAPTURED])
    if fmt == 1:
        return _sha256(repr(captured).encode()).digest()
    ser = _BY_SIGNATURE.get(tuple(map(type, captured)), serialize)
    if fmt == 2:
        return _sha256(ser(captured)).digest()
    context = serialize(tuple(row[_NCAPTURED:_NCONTEXT]))
    if fmt == 3:
        return _sha256(ser(captured) + context).digest()
    return _sha256(ser(captured) + context + serialize(tuple(row[_NCONTEXT:]))).digest()



def _shape(signature: tuple) -> tuple:
    """What row_digests needs of one shape: its type tags, a getter of its numbers in order,
    the struct packing them with the lengths, and the indexes of its text and blob values."""
    tags = "".join(_TAGS[t] for t in signature).encode()
    nums = [i for i, t in enumerate(signature) if t in (int, bool, float)]
    var = [i for i, t in enumerate(signature) if t in (str, bytes)]
    pack = struct.Struct("<%ds" % len(tags) + "".join(
        "d" if signature[i] is float else "q" for i in nums) + "I" * len(var)).pack
    return tags, itemgetter(*nums), pack, var


def row_digests(rows: list[tuple]) -> list[bytes]:
    """Format 4 digests of records as the writer makes them (decoded, then their context
    added: capture/context.py); the hot path. The compiled module's (DIGESTS says which runs:
    docs/design.md, "The compiled hot path") or row_digests_python's: the same bytes."""
    if _compiled is not None:
        return _compiled(rows, _NCAPTURED, _NCONTEXT)
    return row_digests_python(rows)


def row_digests_python(rows: list[tuple]) -> list[bytes]:
    """row_digests in Python: the reference the compiled module is held to.

    The shape is taken from the event name: the decoder makes exec and
    exec_failed records with every exec column filled (errno only for
    exec_failed) and exit records with every exit column (tests hold it to
    that). A record of another shape would be hashed wrongly and flagged by
    verify, never pass unnoticed. One loop for the batch, with the event
    name's bytes known per shape and comm and filename encoded once per
    distinct value, and the context's serialization once per distinct context; the gate's (an
    ABI and a parent's start time) is a pack with the ABI's bytes known: per record that leaves
    two packs, one join and one SHA-256.
    """
    sha, utf8, ev, ctx, n, m = _sha256, _UTF8, _EVENT, _CONTEXTS, _NCAPTURED, _NCONTEXT
    gate_abi, gate_none = _GATE_ABI, _GATE_NONE
    join = b"".join
    out = []
    append = out.append
    for r in rows:
        tags, nums, pack, event, c, f, a = _WRITER_SHAPES[r[ev]]
        comm = utf8[r[c]]
        context = ctx[r[n:m]]
        abi, started = r[m], r[m + 1]
        gate = ((gate_none if abi is None else gate_abi[abi])(started)
                if type(started) is int and (abi is None or abi in gate_abi) else serialize(r[m:]))
        if f:
            filename, args = utf8[r[f]], r[a]
            append(sha(join((pack(tags, *nums(r), len(event), len(comm), len(filename), len(args)),
                             event, comm, filename, args, context, gate))).digest())
        else:
            append(sha(join((pack(tags, *nums(r), len(event), len(comm)), event, comm,
                             context, gate))).digest())
    return out


def _gate_with(abi: str):
    """serialize((abi, parent_start_ns)) for this ABI, as a function of the start time."""
    raw = abi.encode()
    head, pack = b"TI", struct.Struct("<qI").pack
    return lambda start: head + pack(start, len(raw)) + raw




def _writer_shape(name: str, signature: tuple) -> tuple:
    tags, nums, pack, var = _shape(signature)
    # the text and blob columns in order: event and comm, then filename and argv for an exec
    assert [EVENT_COLUMNS[i] for i in var] == (["event", "comm", "filename", "argv"] if name != "exit"
                                               else ["event", "comm"])
    c, f, a = (var[1:] + [0, 0])[:3]
    return tags, nums, pack, name.encode(), c, f, a


# comm and filename, and contexts (one binary, one cgroup), repeat: each encoded once
_UTF8 = Memo(lambda text: text.encode("utf-8", "surrogatepass"))
_CONTEXTS = Memo(serialize)
# rows.ABI_NAMES's gates, and the gate of an exit or of an exec whose gate was not seen
_GATE_ABI = {abi: _gate_with(abi) for abi in ABI_NAMES}
_GATE_NONE = (lambda pack: lambda start: b"NI" + pack(start))(struct.Struct("<q").pack)
_WRITER_SHAPES = {"exec": _writer_shape("exec", EXEC_SIGNATURE),
                  "exec_failed": _writer_shape("exec_failed", EXEC_FAILED_SIGNATURE),
                  "exit": _writer_shape("exit", EXIT_SIGNATURE)}

try:  # auditd_lite/_record_digests.c, built with the package where a compiler was (setup.py)
    from ._record_digests import record_digests as _compiled
    DIGESTS = "compiled"
except ImportError as e:
    _compiled = None
    DIGESTS = f"python ({e})"


def batch_hash(prev_hash: str, header: tuple, row_digests: Iterable[bytes],
               fmt: int = WRITE_FORMAT) -> str:
    if fmt == 1:
        h = _sha256(bytes.fromhex(prev_hash))
        h.update(repr(header).encode())
    else:
        h = _sha256(_DOMAIN[fmt])
        h.update(_hash_bytes(prev_hash))
        h.update(serialize(header))
    h.update(b"".join(row_digests))  # one call: a batch has thousands
    return _PREFIX.get(fmt, "") + h.hexdigest()


def _recomputed(prev_hash, header: tuple, digests: list[bytes], fmt: int) -> str | None:
    """The batch hash, or None when the stored previous hash is not one (so it cannot match)."""
    try:
        return batch_hash(prev_hash, header, digests, fmt)
    except (ValueError, TypeError, AttributeError):
        return None


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

    first_prev: str | None  # prev_hash of its first batch with a hash
    last_hash: str | None  # hash of its last batch with a hash
    batches: int
    pre_chain: list = field(default_factory=list)  # ids of its batches from before the chain
    pre_chain_records: int = 0  # the records those batches hold
    first_hashed: int | None = None  # id of its first batch with a hash


def check_file(conn: sqlite3.Connection, name: str, problems: list[Problem],
               omitted: dict[int, dict[int, bytes]] | None = None) -> FileChain:
    """Recompute every batch of one file; append what is wrong to ``problems``.

    ``omitted`` maps batch id -> {event id: row digest} for rows an export
    left out of a batch whose other rows it carries.
    """
    cols = ", ".join(file_event_columns(conn))
    batch_cols = {r[1] for r in conn.execute("PRAGMA table_info(batches)")}
    # a file still at revision 0001 has no chain columns: all its batches are from before it
    links = "prev_hash, hash" if "hash" in batch_cols else "NULL, NULL"
    # format 5's header goes on (a file before revision 0007 has no such columns, nor format 5)
    evidence = ", ".join(c if c in batch_cols else "NULL" for c in EVIDENCE_COLUMNS)
    batches = conn.execute(
        f"SELECT {', '.join(BATCH_HEADER)}, {links}, {evidence} FROM batches ORDER BY id").fetchall()
    rows = conn.execute(f"SELECT {cols} FROM events ORDER BY id")
    pending = rows.fetchone()
    prev = None
    first_prev = None
    last_hashed = first_hashed = None  # ids of the last and first batches with a hash so far
    pre_chain: list[int] = []
    pre_chain_records = 0
    for b in batches:
        header, prev_hash, stored = tuple(b[:8]), b[8], b[9]
        batch_id, count, first, last = header[0], header[5], header[3], header[4]
        fmt = hash_format(stored) if stored is not None else None
        digests: dict[int, bytes] = dict((omitted or {}).get(batch_id, {}))
        while pending is not None and pending[2] == batch_id:
            digests[pending[0]] = row_digest(tuple(pending), fmt) if fmt else b""
            pending = rows.fetchone()
        whole = not count or (first is not None and last is not None
                              and set(digests) == set(range(first, last + 1)))
        if not whole:
            problems.append(Problem(
                name, batch_id, f"holds {len(digests)} of its {count} records: rows deleted or added"))
        if stored is None:
            if last_hashed is not None:
                problems.append(Problem(name, batch_id, f"no hash, yet batch {last_hashed} before it "
                                        "has one: its hash was removed"))
            else:
                pre_chain.append(batch_id)
                pre_chain_records += len(digests)
            continue
        if first_prev is None:
            first_prev, first_hashed = prev_hash, batch_id
            if pre_chain and prev_hash != GENESIS:
                problems.append(Problem(name, batch_id, "the chain begins here, after batches without "
                                        "a hash, but not at its start: hashes were removed"))
        elif prev_hash != prev:
            problems.append(Problem(name, batch_id, "chain broken: previous batch missing or changed"))
        if fmt >= EVIDENCE_FORMAT:
            header += tuple(b[10:])
        if whole and _recomputed(prev_hash, header, [digests[i] for i in sorted(digests)], fmt) != stored:
            problems.append(Problem(name, batch_id, "hash mismatch: a record or the batch was edited"))
        prev = stored
        last_hashed = batch_id
    while pending is not None:
        problems.append(Problem(name, pending[2], f"record {pending[0]} belongs to no batch"))
        pending = rows.fetchone()
    return FileChain(first_prev, prev, len(batches), pre_chain, pre_chain_records, first_hashed)


def pre_chain_note(name: str, fc: FileChain) -> str | None:
    """The line naming a file's batches from before the chain, or None if it has none."""
    ids = fc.pre_chain
    if not ids:
        return None
    which = f"batch {ids[0]} was" if len(ids) == 1 else f"batches {ids[0]}..{ids[-1]} were"
    their = "its" if len(ids) == 1 else "their"
    return (f"{name}: {which} written before the hash chain (schema revision 0001): no hash vouches "
            f"for {their} {fc.pre_chain_records} record{'s' if fc.pre_chain_records != 1 else ''}")


def check_sequence(chains: list[tuple[str, FileChain]], problems: list[Problem]) -> None:
    """Files given oldest first: each must start where the one before ended."""
    for (older, a), (newer, b) in zip(chains, chains[1:]):
        # after a file wholly from before the chain, the chain begins
        expected = a.last_hash if a.last_hash is not None or not a.pre_chain else GENESIS
        if expected is None or b.first_prev is None:
            continue
        if b.first_prev != expected:
            problems.append(Problem(newer, None, f"does not continue the chain of {older}: "
                                    "a file between them is missing, or one is from elsewhere"))
