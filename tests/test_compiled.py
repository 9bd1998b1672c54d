"""The compiled hot path (docs/design.md, "The compiled hot path") against the Python references:
the decoder (auditd_lite/capture/_decode.c), the record digests (auditd_lite/_record_digests.c)
and the inserts (auditd_lite/storage/_insert.c) are built and used, equal the references on
generated records of any values and on what a real storm stored, and refuse what the references
refuse."""

from __future__ import annotations

import sqlite3
import subprocess
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqlalchemy.exc import DBAPIError

from auditd_lite import _record_digests, chain
from auditd_lite.capture import _decode, records as R
from auditd_lite.storage import _insert, batches, livefile, store

from conftest import CLI, Storm, log_events
from test_chain import decoded_records, definition, synthetic
from test_records import exec_raw

_int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_text = st.sampled_from(["sh", "\u20ac", "a\udcff", "\udc80\udcff", ""]) | st.text()
_value = st.one_of(st.none(), _int64, st.booleans(), st.floats(), _text, st.binary())
WIDTH = len(chain.EVENT_COLUMNS)


def compiled(rows: list[tuple]) -> list[bytes]:
    return _record_digests.record_digests(rows, chain._NCAPTURED, chain._NCONTEXT)


def test_the_compiled_path_is_built_and_used():
    """Setup builds both modules (setup.py), and the writer's decode_all and row_digests are
    them: where one is missing the writer silently runs the slower reference, which this fails
    on."""
    assert (R.DECODER, chain.DIGESTS, batches.INSERTS) == ("compiled",) * 3
    assert R._compiled is _decode.decode_all
    assert batches._compiled is _insert.insert
    rows = decoded_records()[:5]
    calls = []
    real = chain._compiled
    try:
        chain._compiled = lambda *a: calls.append(a) or real(*a)
        chain.row_digests(rows)
    finally:
        chain._compiled = real
    assert len(calls) == 1


def test_decoded_records_both_ways():
    """Every kind of record the decoder makes, edge cases included (not UTF-8, lone surrogates
    in a cgroup path, every ABI, failures): compiled, reference and definition agree."""
    rows = decoded_records()
    expected = [definition(r) for r in rows]
    assert compiled(rows) == expected
    assert chain.row_digests_python(rows) == expected


@settings(max_examples=400, deadline=None)
@given(st.lists(st.lists(_value, min_size=chain._NCONTEXT, max_size=WIDTH + 3).map(tuple), max_size=5))
def test_any_rows_digest_as_defined(rows):
    """Rows of any values SQLite can hold (and Python's bool, NaN and infinities, text no
    encoder but surrogatepass takes), of any width from the context on: the definition's
    digests."""
    assert compiled(rows) == [definition(r) for r in rows]


@pytest.mark.parametrize("bad, error", [
    ((2**63,), OverflowError),
    ((-(2**63) - 1,), OverflowError),
    (([1],), TypeError),
    ((1.5j,), TypeError),
    ((bytearray(b"x"),), TypeError),
])
def test_what_the_definition_refuses_is_refused(bad, error):
    """A value serialize cannot write (an integer past int64, a type SQLite has not) raises, as
    in the reference, and gives no digest."""
    row = (None,) * chain._NCONTEXT + bad
    with pytest.raises(error):
        compiled([row])
    with pytest.raises(Exception):
        definition(row)


def test_rows_that_are_not_records_are_refused():
    with pytest.raises(TypeError):
        compiled([[None] * WIDTH])
    with pytest.raises(ValueError):
        compiled([(None,) * (chain._NCONTEXT - 1)])


def test_a_real_storm_stores_digests_both_ways_agree_on(daemon_factory, marker, tmp_path):
    """What the daemon stored during a storm (its writer on the compiled path, as it logs):
    each stored row's digest recomputed by the reference equals the compiled one, every batch's
    hash recomputes from them, and verify says the directory is intact."""
    d = daemon_factory()
    with Storm(marker) as storm:
        time.sleep(2)
    d.stop()
    assert storm.count() > 100
    started = log_events(d.log, "daemon_started")[0]
    assert (started["decoder"], started["record_digests"], started["inserts"]) == ("compiled",) * 3
    checked = 0
    for path in sorted(d.db_dir.glob("*.db")):
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        cols = ", ".join(chain.EVENT_COLUMNS)
        header = ", ".join(chain.header_columns(chain.WRITE_FORMAT))
        for batch in con.execute(f"SELECT {header}, prev_hash, hash FROM batches ORDER BY id").fetchall():
            rows = con.execute(f"SELECT {cols} FROM events WHERE batch_id = ? ORDER BY id",
                               (batch[0],)).fetchall()
            ours = compiled(rows)
            assert ours == chain.row_digests_python(rows) == [chain.row_digest(r, 4) for r in rows]
            assert chain.batch_hash(batch[-2], batch[:-2], ours) == batch[-1]
            checked += len(rows)
        con.close()
    assert checked >= 2 * storm.count()
    p = subprocess.run([*CLI, "verify", "--db-dir", str(d.db_dir)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    # the rows it stored, inserted again both ways: each file holds them exactly
    con = sqlite3.connect(f"file:{d.db_dir / 'audit.db'}?mode=ro", uri=True)
    stored = con.execute(f"SELECT {', '.join(chain.EVENT_COLUMNS)} FROM events ORDER BY id").fetchall()
    con.close()
    assert len(stored) >= 2 * storm.count()
    for name, insert in (("compiled", batches.insert_rows), ("python", batches.insert_rows_python)):
        _, conn = store.open_live(tmp_path / name)
        with conn.begin():
            insert(conn, stored)
        assert stored_rows(conn) == [(r, typed(r)) for r in stored]
        conn.close()


# ---------------------------------------------------------------- the decoder

_u32 = st.integers(0, 2**32 - 1)
_u64 = st.integers(0, 2**64 - 1)
_i32 = st.integers(-(2**31), 2**31 - 1)
# names, arguments and directories: NULs, bytes that are not UTF-8, what the kernel writes
_piece = st.binary(max_size=24) | st.sampled_from([b"", b"\0", b"a\0b\0", b"x\0y\0z\0\0", b"\xff\xfe\0",
                                                    b"src\0alice\0home\0", "\u20ac".encode()])
_head = st.tuples(_u32, _u32, _u32, _u64, _u64, _u64, _u32, _u32, st.binary(min_size=16, max_size=16))


@st.composite
def raw_records(draw) -> bytes:
    """A raw record as the ring buffer hands it over: an exit, or an exec or failed exec whose
    lengths may say more or less than the bytes after the struct (the reference slices as
    Python does), any flags, ABI numbers past the known ones; now and then a record no decoder
    takes (short, of an unknown type)."""
    pid, tid, ppid, ts, start, pstart, uid, gid, comm = draw(_head)
    kind = draw(st.sampled_from([R.EV_EXEC, R.EV_EXEC, R.EV_EXEC_FAILED, R.EV_EXIT, R.EV_EXIT]))
    if kind == R.EV_EXIT:
        raw = R.EXIT_EVENT.pack(kind, pid, tid, ppid, ts, start, pstart, uid, gid, comm, draw(_u64),
                                draw(_u32), draw(_u32))
    else:
        name, args, cwd = draw(_piece), draw(_piece), draw(_piece)
        lengths = draw(st.sampled_from(["exact", "any"]))
        fl, al, cl = ((len(name), len(args), len(cwd)) if lengths == "exact"
                      else draw(st.tuples(*[st.integers(0, 40)] * 3)))
        flags = draw(st.integers(0, 1023) | st.sampled_from([R.FLAG_EXE_ID, 0, R.FLAG_NO_STASH]))
        raw = R.EXEC_EVENT.pack(kind, pid, tid, ppid, ts, start, pstart, uid, gid, comm, draw(_u64),
                                draw(_u32), draw(_u32), draw(_u32), draw(_i32), draw(_i32), draw(_u32),
                                flags, fl, al, cl, draw(st.integers(0, 6)), draw(_u32), draw(_u32), 0,
                                draw(_u64), draw(_u64), draw(_u64), draw(_u64)) + name + args + cwd
    broken = draw(st.sampled_from([None] * 12 + ["short", "type"]))
    if broken == "short":
        raw = raw[:draw(st.integers(0, len(raw) - 1))]
    elif broken == "type":
        raw = bytes([draw(st.sampled_from([0, 4, 255]))]) + raw[1:]
    return raw


def decoded_both_ways(raws, max_args, offset, host_mntns):
    """(rows, identities) or the error's type, by each path, each with a decoder of its own"""
    out = []
    for compiled_path in (True, False):
        d = R.Decoder(max_args, realtime_offset_ns=offset, host_mntns=host_mntns)
        named: list = []
        try:
            rows = d.decode_all(raws, named) if compiled_path else d.decode_all_python(raws, named)
            out.append((rows, named))
        except Exception as e:  # noqa: BLE001 - the two must fail alike, below
            out.append(type(e))
    return out


@settings(max_examples=500, deadline=None)
@given(st.lists(raw_records(), max_size=8), st.integers(1, 6),
       st.integers(-(2**64), 2**64) | st.integers(-(2**40), 2**62), st.none() | _u32)
def test_any_records_decode_as_the_reference_does(raws, max_args, offset, host_mntns):
    """Records of any field values, with the kernel's lengths right or wrong, arguments cut to
    max_args, any offset (past int64 too) and host namespace: the compiled decoder gives the
    reference's rows and identities, value for value and type for type; a record the reference
    cannot decode (short, of an unknown type) makes both fail."""
    ours, ref = decoded_both_ways(raws, max_args, offset, host_mntns)
    if isinstance(ref, type):
        assert isinstance(ours, type), ours
        return
    assert ours == ref
    assert [tuple(map(type, r)) for r in ours[0]] == [tuple(map(type, r)) for r in ref[0]]


def test_storm_records_decode_as_the_reference_does():
    """The bench's synthetic storm (every program, failures, signals, working directories, the
    kernel's file identities) and the chain tests' edge cases: the same rows and identities."""
    raws = synthetic(20000) + [exec_raw(b""), exec_raw(b"", flags=R.FLAG_NO_STASH),
                               exec_raw(b"x\0\xff\xfe\0", filename=b"/bin/\xff\0"),
                               exec_raw(b"a\0b\0c\0d\0e\0f\0", argc=6),
                               exec_raw(b"", kind=R.EV_EXEC_FAILED, err=-13, flags=R.FLAG_NO_STASH)]
    ours, ref = decoded_both_ways(raws, 4, 10**18, 4026531841)
    assert ours == ref
    assert len(ref[1]) > 1000


# ---------------------------------------------------------------- the inserts

_COLUMNS = ", ".join(chain.EVENT_COLUMNS)
_TYPES = ", ".join(f"typeof({c})" for c in chain.EVENT_COLUMNS)
_SQLITE_TYPE = {type(None): "null", int: "integer", bool: "integer", float: "real", str: "text",
                bytes: "blob"}


def typed(row: tuple) -> tuple:
    return tuple(_SQLITE_TYPE[type(v)] for v in row)


def stored_rows(conn) -> list[tuple]:
    """Every events row with SQLite's type of each of its values, in id order."""
    return [(tuple(r[:len(chain.EVENT_COLUMNS)]), tuple(r[len(chain.EVENT_COLUMNS):])) for r in
            conn.exec_driver_sql(f"SELECT {_COLUMNS}, {_TYPES} FROM events ORDER BY id").fetchall()]


def attempt(conn, insert, rows: list[tuple]):
    """``insert`` of ``rows`` in a transaction rolled back after: the rows stored, or the error
    (SQLAlchemy's class, the sqlite3 module's class, its result code and name, its message)."""
    trans = conn.begin()
    try:
        insert(conn, rows)
        return stored_rows(conn)
    except DBAPIError as e:
        return (type(e), type(e.orig), e.orig.sqlite_errorcode, e.orig.sqlite_errorname, str(e.orig))
    except Exception as e:  # noqa: BLE001 - what the module raises before SQLite, compared as such
        return (type(e), str(e))
    finally:
        trans.rollback()


def bindable(rows: list[tuple]) -> list[tuple]:
    """The rows with no lone surrogate: the module cannot bind one (the test above holds the
    compiled path to refusing it alike)."""
    return [r for r in rows if not any(isinstance(v, str) and "\udcff" in v for v in r)]


@pytest.fixture(scope="module", autouse=True)
def every_batch_compiled():
    """The compiled inserts for a batch of any size: the writer's take COMPILED_FROM rows on."""
    was, batches.COMPILED_FROM = batches.COMPILED_FROM, 1
    yield
    batches.COMPILED_FROM = was


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    _, conn = store.open_live(tmp_path_factory.mktemp("inserts"))
    yield conn
    conn.close()


# text the sqlite3 module can bind (a lone surrogate it refuses, and so must the compiled path)
_bindable = st.one_of(st.none(), _int64, st.booleans(), st.floats(allow_nan=False), st.text(), st.binary(),
                      st.just("a\udcff"), st.integers(2**63, 2**64))
_event = st.sampled_from(["exit", "exec", "exec_failed", "", "exits"]) | st.text(max_size=5)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 4) | _bindable, _event,
                          st.lists(_bindable, min_size=WIDTH - 4, max_size=WIDTH - 4)), max_size=6))
def test_any_rows_insert_as_the_module_does(live, rows):
    """Rows of any values in any column (ids repeated or not integers, NULLs where the table
    says NOT NULL, text and integers the module cannot bind, any event word), inserted through
    the compiled path and through the sqlite3 module's executemany into the same live file: the
    same rows stored with the same SQLite types, or the same error (classes, result code and
    name, message)."""
    rows = [(rid, 1, 1, event, *values) for rid, event, values in rows]
    assert batches._compiled_handle(live) is not None
    assert attempt(live, batches.insert_rows, rows) == attempt(live, batches.insert_rows_python, rows)


def test_decoded_records_insert_both_ways(live):
    """Every kind of record the decoder makes, with ids: stored alike both ways, and as the
    rows are (every value read back with its type)."""
    rows = bindable(decoded_records())
    got = attempt(live, batches.insert_rows, rows)
    assert got == attempt(live, batches.insert_rows_python, rows)
    assert got == [(r, typed(r)) for r in rows]


def test_a_short_row_is_refused_both_ways(live):
    """A row without every column its statement binds: the same IndexError from either path,
    and nothing stored."""
    rows = bindable(decoded_records())
    short = [rows[0], rows[1][:-1]]
    for insert in (batches.insert_rows, batches.insert_rows_python):
        assert attempt(live, insert, short) == (IndexError, "tuple index out of range")
    assert live.exec_driver_sql("SELECT count(*) FROM events").scalar() == 0
    live.rollback()


def test_a_full_disk_fails_the_compiled_inserts_as_the_module(tmp_path):
    """SQLite's SQLITE_FULL (the file may not grow: max_page_count) in the middle of a batch:
    the compiled path raises what the module's executemany raises, which the writer takes for
    a full disk (livefile.storage_error) and holds the records for; nothing of the batch is
    stored."""
    _, conn = store.open_live(tmp_path)
    pages = conn.exec_driver_sql("PRAGMA page_count").scalar()
    conn.exec_driver_sql(f"PRAGMA max_page_count = {pages + 2}")
    conn.commit()
    rows = bindable(decoded_records()[:400])
    errors = []
    for insert in (batches.insert_rows, batches.insert_rows_python):
        with pytest.raises(DBAPIError) as e:
            with conn.begin():
                insert(conn, rows)
        assert livefile.storage_error(e.value)
        errors.append((type(e.value), type(e.value.orig), e.value.orig.sqlite_errorcode,
                       e.value.orig.sqlite_errorname, str(e.value.orig)))
        assert conn.exec_driver_sql("SELECT count(*) FROM events").scalar() == 0
        conn.rollback()
    assert errors[0] == errors[1]
    assert errors[0][2] & 0xFF == sqlite3.SQLITE_FULL
    conn.close()


def test_the_compiled_inserts_refuse_without_a_transaction(live):
    """Outside a transaction each row would be committed on its own: refused, nothing stored."""
    raw = live.connection.dbapi_connection
    live.rollback()
    assert not raw.in_transaction
    row = (1, 1, 1) + decoded_records()[0]
    with pytest.raises(RuntimeError, match="transaction"):
        _insert.insert(raw, [row], batches._EVENT, batches.INSERT_EXIT, batches._EXIT_COLUMNS,
                       batches.INSERT_EXEC, batches._EXEC_COLUMNS)
    assert live.exec_driver_sql("SELECT count(*) FROM events").scalar() == 0
    live.rollback()


def test_small_batches_go_through_the_module(tmp_path, monkeypatch):
    """A batch of fewer than COMPILED_FROM rows is the module's (the compiled inserts prepare
    their statements each batch), one of COMPILED_FROM the compiled path's: both store it."""
    monkeypatch.setattr(batches, "COMPILED_FROM", 32)
    calls = []
    real = batches._compiled
    monkeypatch.setattr(batches, "_compiled", lambda *a: calls.append(len(a[1])) or real(*a))
    rows = bindable(decoded_records())[:63]
    _, conn = store.open_live(tmp_path)
    with conn.begin():
        batches.insert_rows(conn, rows[:31])
    with conn.begin():
        batches.insert_rows(conn, rows[31:])
    assert calls == [32]
    assert stored_rows(conn) == [(r, typed(r)) for r in rows]
    conn.close()


def test_a_statement_that_gives_rows_is_not_taken_for_done(live):
    """A step that gives a row (here an INSERT ... RETURNING) is no row stored as asked: the
    compiled inserts stop and say so, where taking it for done would skip the rest."""
    raw = live.connection.dbapi_connection
    raw.execute("BEGIN")
    rows = [r for r in bindable(decoded_records()) if r[batches._EVENT] == "exec"][:3]
    failed = _insert.insert(raw, rows, batches._EVENT, batches.INSERT_EXIT, batches._EXIT_COLUMNS,
                            batches.INSERT_EXEC + " RETURNING id", batches._EXEC_COLUMNS)
    assert failed is not None and failed[0] & 0xFF == sqlite3.SQLITE_ROW
    raw.rollback()
    assert live.exec_driver_sql("SELECT count(*) FROM events").scalar() == 0
    live.rollback()


def test_the_handle_is_the_connections():
    """The handle read out of a sqlite3 connection names the file SQLite has open for it, for
    files and for a connection in memory; a closed connection and anything else are refused."""
    con = sqlite3.connect(":memory:")
    assert _insert.filename(con) == ""
    con.close()
    with pytest.raises(ValueError):
        _insert.filename(con)
    with pytest.raises(TypeError):
        _insert.filename(object())
