"""The compiled record digests (auditd_lite/_record_digests.c) against the Python reference and
the chain's definition: built and used, equal on generated rows of any values and on what a real
storm stored, and refusing what the definition refuses (docs/design.md, "The compiled record
digests")."""

from __future__ import annotations

import sqlite3
import subprocess
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditd_lite import _record_digests, chain

from conftest import CLI, Storm, log_events
from test_chain import decoded_records, definition

_int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_text = st.sampled_from(["sh", "\u20ac", "a\udcff", "\udc80\udcff", ""]) | st.text()
_value = st.one_of(st.none(), _int64, st.booleans(), st.floats(), _text, st.binary())
WIDTH = len(chain.EVENT_COLUMNS)


def compiled(rows: list[tuple]) -> list[bytes]:
    return _record_digests.record_digests(rows, chain._NCAPTURED, chain._NCONTEXT)


def test_the_compiled_digests_are_built_and_used():
    """Setup builds the module (setup.py), and the writer's row_digests is it: where it is
    missing the writer silently runs the slower reference, which this fails on."""
    assert chain.DIGESTS == "compiled"
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
    """What the daemon stored during a storm (its writer on the compiled digests, as it logs):
    each stored row's digest recomputed by the reference equals the compiled one, every batch's
    hash recomputes from them, and verify says the directory is intact."""
    d = daemon_factory()
    with Storm(marker) as storm:
        time.sleep(2)
    d.stop()
    assert storm.count() > 100
    assert log_events(d.log, "daemon_started")[0]["record_digests"] == "compiled"
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
