"""The hash chain's serialization: its definition, the writer's fast path against it, and the
files written in the first format, which must go on verifying."""

from __future__ import annotations

import sqlite3
import struct
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from auditd_lite import chain, rows
from auditd_lite.rows import ABI_NAMES
from auditd_lite.capture import records as R
from auditd_lite.storage.batchwriter import BatchWriter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from writer_throughput import synthetic  # noqa: E402

from conftest import NO_CONTEXT, cli_in_process, second_rows  # noqa: E402
from test_records import exec_raw  # noqa: E402
from test_storage import verify  # noqa: E402


def test_serialization_is_the_documented_one():
    """Pinned bytes, so that a reimplementation in any language can be checked against it."""
    got = chain.serialize((1, None, "é", b"\x00\xff", -2.5, -1))
    want = (b"INTBRI" + struct.pack("<qdq", 1, -2.5, -1) + struct.pack("<II", 2, 2)
            + "é".encode() + b"\x00\xff")
    assert got == want
    assert chain.row_digest((1, None), 2) == __import__("hashlib").sha256(b"IN" + struct.pack("<q", 1)).digest()


def test_formats_hash_these_columns_which_are_the_tables():
    """Formats 1 and 2 serialize the captured columns, format 3 those and the context, formats 4
    and 5 those and the gate, in this order; changing them would make every file written so far
    fail to verify, so they are pinned here as the bytes are above. They are also the models'
    columns (schema.py, the one description), and the batch header is the batches table's
    columns before the chain's two, format 5's the header and the evidence after them."""
    from auditd_lite.storage.schema import batches, events

    assert chain.CAPTURED_COLUMNS == (
        "id", "run_id", "batch_id", "event", "time_ns", "pid", "tid", "ppid", "uid", "gid", "comm",
        "start_ns", "old_pid", "euid", "auid", "sessionid", "cgroup_id", "filename", "argv", "argc",
        "args_truncated", "errno", "status", "exit_code", "signal", "core_dumped", "duration_ns")
    assert chain.CONTEXT_COLUMNS == chain.CAPTURED_COLUMNS + (
        "cwd", "cwd_status", "sha256", "hash_status", "cgroup", "cgroup_status", "unit", "container_id")
    assert chain.EVENT_COLUMNS == chain.CONTEXT_COLUMNS + ("abi", "parent_start_ns")
    assert chain.FORMAT_COLUMNS == {1: chain.CAPTURED_COLUMNS, 2: chain.CAPTURED_COLUMNS,
                                    3: chain.CONTEXT_COLUMNS, 4: chain.EVENT_COLUMNS, 5: chain.EVENT_COLUMNS}
    assert chain.EVENT_COLUMNS == tuple(c.name for c in events.columns)
    assert chain.EVIDENCE_COLUMNS == ("stream_written", "stream_dropped", "run_values", "seen_rows",
                                      "removal_rows")
    assert chain.BATCH_HEADER + ("prev_hash", "hash") + chain.EVIDENCE_COLUMNS == tuple(
        c.name for c in batches.columns)


def decoded_records() -> list[tuple]:
    """What the decoder makes of every kind of record, edge cases included, as stored rows."""
    d = R.Decoder(4, realtime_offset_ns=10**18)
    raws = synthetic(3000) + [
        exec_raw(b""),  # no arguments at all
        exec_raw(b"", flags=R.FLAG_NO_STASH),
        exec_raw(b"x\0\xff\xfe\0", filename=b"/bin/\xff\0"),  # not UTF-8
        exec_raw(b"a\0b\0c\0d\0e\0f\0", argc=6),  # cut to max_args
        exec_raw(b"x\0", kind=R.EV_EXEC_FAILED, err=-2),
        exec_raw(b"", kind=R.EV_EXEC_FAILED, err=-13, flags=R.FLAG_NO_STASH),
        R.EXIT_EVENT.pack(R.EV_EXIT, 5, 6, 1, 2_000, 1_000, 10, 0, 0, b"\xe2\x82\xac\0", 1_000, 0x86, 0),
        exec_raw(b"y\0", abi=R.ABI_IA32),
        exec_raw(b"y\0", abi=R.ABI_X32, kind=R.EV_EXEC_FAILED, err=-2),
        exec_raw(b"y\0", abi=R.ABI_UNKNOWN, flags=R.FLAG_NO_STASH),
    ]
    contexts = [("ab" * 32, "ok", "/system.slice/x.service", "resolved", "x.service", None),
                (None, "gone", None, "gone", None, None),
                ("cd" * 32, "by_path", "/docker/\u20ac\udcff", "removed", None, "ef" * 32),
                (None, "late", "/", "resolved", None, None)]
    out = []
    for i, raw in enumerate(raws):
        row = d.decode(raw)
        if row[0] == "exit":
            context = (None,) * len(rows.SYSTEM_FIELDS)
        elif row[0] == "exec_failed":
            context = (None, None) + contexts[i % 4][2:]
        else:
            context = contexts[i % 4]
        out.append((i + 1, 3, 9) + row[:rows.CONTEXT_AT] + context + row[rows.CONTEXT_AT:])
    return out


def definition(row: tuple, fmt: int = chain.WRITE_FORMAT) -> bytes:
    """A stored row's digest as the module's text defines it."""
    n, m = len(chain.CAPTURED_COLUMNS), len(chain.CONTEXT_COLUMNS)
    captured = chain.serialize(row[:n])
    if fmt == 2:
        return chain._sha256(captured).digest()
    if fmt == 3:
        return chain._sha256(captured + chain.serialize(row[n:m])).digest()
    return chain._sha256(captured + chain.serialize(row[n:m]) + chain.serialize(row[m:])).digest()


def test_writer_fast_path_is_the_definition():
    """For every shape the decoder makes, the writer's digests equal the documented
    serialization's, and the shapes are the three the fast path knows."""
    rows = decoded_records()
    n = len(chain.CAPTURED_COLUMNS)
    shapes = {r[3]: tuple(map(type, r[:n])) for r in rows}
    assert shapes == {"exec": chain.EXEC_SIGNATURE, "exec_failed": chain.EXEC_FAILED_SIGNATURE,
                      "exit": chain.EXIT_SIGNATURE}
    expected = [definition(r) for r in rows]
    assert chain.row_digests(rows) == expected
    assert chain.row_digests_python(rows) == expected
    assert [chain.row_digest(r, 4) for r in rows] == expected
    for fmt in (2, 3):
        assert [chain.row_digest(r, fmt) for r in rows] == [definition(r, fmt) for r in rows]
    assert {r[len(chain.CONTEXT_COLUMNS)] for r in rows} == {"x64", "ia32", "x32", None}


_int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_value = st.one_of(st.none(), _int64, st.floats(allow_nan=False), st.text(), st.binary())


@settings(max_examples=300, deadline=None)
@given(st.lists(_value, min_size=37, max_size=37))
def test_any_row_serializes_the_same_both_ways(values):
    """Whatever a database holds (an edited row too), verify's per-shape path gives the
    definition's bytes, in formats 2, 3 and 4."""
    row = tuple(values)
    for fmt in (2, 3, 4):
        assert chain.row_digest(row, fmt) == definition(row, fmt)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([chain.EXEC_SIGNATURE, chain.EXEC_FAILED_SIGNATURE, chain.EXIT_SIGNATURE]),
       st.data())
def test_fast_shapes_with_any_values(signature, data):
    strategy = {int: _int64, str: st.text(), bytes: st.binary(), type(None): st.none()}
    row = tuple(data.draw(strategy[t]) for t in signature)
    assert chain._BY_SIGNATURE[signature](row) == chain.serialize(row)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["exec", "exec_failed", "exit"]), st.data()), max_size=6))
def test_writer_digests_with_any_values(shapes):
    """The writer's batch loop, compiled and in Python (the reference: event name's bytes per
    shape, comm and filename encoded once per distinct value), gives the definition's digests
    for any values of the decoder's shapes, text that is not ASCII or holds lone surrogates and
    repeated values included."""
    sig = {"exec": chain.EXEC_SIGNATURE, "exec_failed": chain.EXEC_FAILED_SIGNATURE,
           "exit": chain.EXIT_SIGNATURE}
    text = st.sampled_from(["sh", "\u20ac", "a\udcff", ""]) | st.text()
    strategy = {int: _int64, str: text, bytes: st.binary(), type(None): st.none()}
    context = st.tuples(*[st.none() | text] * 8)
    abi = st.sampled_from((None,) + ABI_NAMES)
    out = []
    for event, data in shapes:
        row = [data.draw(strategy[t]) for t in sig[event]]
        row[chain._EVENT] = event
        gate = (data.draw(abi) if event != "exit" else None, data.draw(_int64))
        out.append(tuple(row) + (data.draw(context) if event != "exit" else NO_CONTEXT) + gate)
    expected = [definition(r) for r in out]
    assert chain.row_digests(out) == expected
    assert chain.row_digests_python(out) == expected


def _rewrite_as_format(path: Path, prev: str, fmt: int, before: str = "") -> str:
    """Recompute a file's chain in format ``fmt``, as that version wrote it, after the SQL
    ``before`` (what that version could not have written); returns its last hash."""
    con = sqlite3.connect(path)
    if before:
        con.execute(before)
    cols = ", ".join(chain.EVENT_COLUMNS)
    for b in con.execute(f"SELECT {', '.join(chain.BATCH_HEADER)} FROM batches ORDER BY id").fetchall():
        rows = con.execute(f"SELECT {cols} FROM events WHERE batch_id = ? ORDER BY id", (b[0],)).fetchall()
        h = chain.batch_hash(prev, tuple(b), [chain.row_digest(tuple(r), fmt) for r in rows], fmt=fmt)
        con.execute("UPDATE batches SET prev_hash = ?, hash = ? WHERE id = ?", (prev, h, b[0]))
        prev = h
    con.commit()
    con.close()
    return prev


def test_format_1_files_verify_and_the_chain_goes_on_in_format_5(tmp_path):
    """A directory whose older file was written in format 1: it verifies, the writer's next
    batches (format 5: the run's start, its records, its stop) continue its chain, and an edit
    in either format is found."""
    db = tmp_path / "db"
    bw = BatchWriter(db, {})
    bw.open()
    bw.write(second_rows(300))
    bw.close()
    old = db / "audit.db"
    last = _rewrite_as_format(old, chain.GENESIS, 1)
    assert chain.hash_format(last) == 1
    assert verify(db) == []
    bw = BatchWriter(db, {})
    bw.open()
    bw.write(second_rows(300, start=300))
    bw.close()
    con = sqlite3.connect(old)
    hashes = [r[0] for r in con.execute("SELECT hash FROM batches ORDER BY id")]
    assert [chain.hash_format(h) for h in hashes] == [1, 1, 1, 5, 5, 5]
    assert con.execute("SELECT prev_hash FROM batches WHERE id = 4").fetchone()[0] == last
    assert verify(db) == []
    for batch_id in (2, 5):  # the records of each run
        con.execute("UPDATE events SET pid = pid + 1 WHERE id = (SELECT min(id) FROM events "
                    "WHERE batch_id = ?)", (batch_id,))
        con.commit()
        assert [p.batch_id for p in verify(db)] == [batch_id]
        con.execute("UPDATE events SET pid = pid - 1 WHERE id = (SELECT min(id) FROM events "
                    "WHERE batch_id = ?)", (batch_id,))
        con.commit()
    # a format-5 hash passed off as format 1 (its prefix dropped) does not verify
    con.execute("UPDATE batches SET hash = substr(hash, 3) WHERE id = 5")
    con.commit()
    con.close()
    assert [p.batch_id for p in verify(db)] == [5, 6]  # and the next batch no longer follows it


def test_a_previous_hash_that_is_no_hash_is_a_problem_not_a_crash(tmp_path):
    db = tmp_path / "db"
    bw = BatchWriter(db, {})
    bw.open()
    bw.write(second_rows(10))
    bw.close()
    con = sqlite3.connect(db / "audit.db")
    con.execute("UPDATE batches SET prev_hash = 'not hex' WHERE id = 1")
    con.commit()
    con.close()
    assert [p.batch_id for p in verify(db)] == [1]


def test_a_gate_put_into_a_format_3_batch_is_found(tmp_path):
    """A file whose batches are in format 3 (written before revision 0006, upgraded since: the
    gate columns NULL) verifies; an ABI or a parent start time written into one of its records
    afterwards is reported as no hash covering it, naming that batch, and the format-3 hash
    itself still holds (it never covered the column)."""
    db = tmp_path / "db"
    bw = BatchWriter(db, {})
    bw.open()
    for start in (0, 100, 200):
        bw.write(second_rows(100, start=start))
    bw.close()
    _rewrite_as_format(db / "audit.db", chain.GENESIS, 3, "UPDATE events SET abi = NULL, parent_start_ns = NULL")
    assert verify(db) == []
    con = sqlite3.connect(db / "audit.db")
    for column, value in (("abi", "ia32"), ("parent_start_ns", 1)):
        con.execute(f"UPDATE events SET {column} = ? WHERE id = 150", (value,))
        con.commit()
        assert verify(db) == []  # the chain alone: format 3 never covered the column
        status, out, _ = cli_in_process("verify", "--db-dir", db)
        assert status == 1
        assert [line for line in out.splitlines() if "audit.db" in line] == [
            f"{db / 'audit.db'} batch 3: 1 record with an exec gate (abi, parent_start_ns) that the "
            "batch's hash (written before schema revision 0006) does not cover: put in afterwards"]
        con.execute(f"UPDATE events SET {column} = NULL WHERE id = 150")
        con.commit()
    con.close()
    assert cli_in_process("verify", "--db-dir", db)[0] == 0
