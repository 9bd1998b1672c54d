"""`auditd-lite sql`: read-only SQL over the union of every file written by the real BatchWriter."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

import pytest

from auditd_lite import chain
from auditd_lite.rows import CONTEXT_FIELDS
from auditd_lite.storage.rotation import RotationPolicy
from auditd_lite.storage.batchwriter import BatchWriter

from conftest import EXEC_CONTEXT, EXEC_GATE, T0, cli_in_process, second_rows


def rows(n: int, start: int = 0) -> list[tuple]:
    """Every 7th process exits with code 1, the others with 0."""
    return second_rows(n, start, exit_code=lambda pid: 1 if pid % 7 == 0 else 0)


def write(db: Path, n: int, per_write: int, rotation=None, runs: int = 1) -> Path:
    """n records in writes of per_write records, over ``runs`` daemon runs."""
    done = 0
    for r in range(runs):
        bw = BatchWriter(db, {"keep": 0}, **({"rotation": rotation} if rotation else {}))
        bw.open()
        share = n // runs if r < runs - 1 else n - done
        for k in range(0, share, per_write):
            bw.write(rows(min(per_write, share - k), start=done + k))
        done += share
        bw.close(clean=True)
    return db


@pytest.fixture(scope="module")
def three(tmp_path_factory) -> Path:
    """300 records over several files (a rotation after every write of 100), two runs."""
    d = tmp_path_factory.mktemp("sql") / "db"
    write(d, 300, 100, rotation=RotationPolicy(size_mb=0.001), runs=2)
    assert len(list(d.glob("audit-*.db"))) >= 3
    return d


@pytest.fixture(scope="module")
def many(tmp_path_factory) -> Path:
    """130 records in 13 rotated files and the live one: more than SQLite attaches at once."""
    d = tmp_path_factory.mktemp("sqlmany") / "db"
    write(d, 130, 10, rotation=RotationPolicy(size_mb=0.001))
    assert len(list(d.glob("*.db"))) == 14
    return d


def sql(*argv):
    return cli_in_process("sql", *argv)


def digests(d: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir()) if p.is_file()}


def test_tables_are_the_union_of_every_file(three):
    """events holds every record of every file once; each file's rows are still there as f0.. f2."""
    status, out, err = sql("SELECT count(*), min(id), max(id), sum(event = 'exit') FROM events",
                           "--db-dir", three, "--format", "csv")
    assert (status, err) == (0, "")
    assert list(csv.reader(io.StringIO(out))) == [
        ["count(*)", "min(id)", "max(id)", "sum(event = 'exit')"], ["300", "1", "300", "150"]]
    status, out, _ = sql("SELECT alias, name FROM files ORDER BY alias", "--db-dir", three, "--format", "json")
    names = [json.loads(line)["name"] for line in out.splitlines()]
    files = sorted(p.name for p in three.glob("*.db"))
    assert names[0] == "audit.db" and sorted(names) == files
    assert names[1:] == sorted(names[1:], reverse=True)  # f0 newest
    per_file = sum(int(sql(f"SELECT count(*) FROM f{i}.events", "--db-dir", three, "--format", "csv")[1]
                       .splitlines()[1]) for i in range(len(files)))
    assert per_file == 300


def test_runs_has_one_row_per_run_with_merged_counters(three):
    """A run's row copied into each file it wrote to appears once, counters summed, stop kept."""
    status, out, _ = sql("SELECT id, events_written, stopped_ns IS NOT NULL AS stopped FROM runs",
                         "--db-dir", three, "--format", "csv")
    assert list(csv.reader(io.StringIO(out)))[1:] == [["1", "150", "1"], ["2", "150", "1"]]


def test_joins_filters_and_every_column(three):
    """A join across views, a filter and SELECT * return what one big file would."""
    status, out, _ = sql("SELECT e.pid, e.exit_code, r.id FROM events e JOIN runs r ON r.id = e.run_id "
                         "WHERE e.event = 'exit' AND e.exit_code = 1 ORDER BY e.pid", "--db-dir", three,
                         "--format", "csv")
    got = [tuple(map(int, r)) for r in list(csv.reader(io.StringIO(out)))[1:]]
    assert got == [(pid, 1, 1 if pid < 1075 else 2) for pid in range(1000, 1150) if pid % 7 == 0]
    status, out, _ = sql("SELECT * FROM events WHERE id = 7", "--db-dir", three, "--format", "json")
    rec = json.loads(out)
    assert len(rec) == len(chain.EVENT_COLUMNS)
    assert (rec["event"], rec["pid"], rec["comm"], rec["argv"], rec["batch_id"]) == (
        "exec", 1003, "cat", "cat\u0000-c\u0000echo 6", 2)  # batch 1 began the run


def test_count_of_a_whole_table_equals_the_general_plan(three):
    """The fast path for SELECT count(*) FROM t gives what SQLite's own plan gives."""
    fast = sql("select COUNT(*) from events;", "--db-dir", three, "--format", "csv")[1]
    slow = sql("SELECT COUNT(*) FROM events AS e", "--db-dir", three, "--format", "csv")[1]
    assert fast == "COUNT(*)\n300\n" and slow == "COUNT(*)\n300\n"
    batches = sql("SELECT count(*) FROM batches b", "--db-dir", three, "--format", "csv")[1]
    assert sql("SELECT count(*) FROM batches", "--db-dir", three, "--format", "csv")[1] == batches
    assert batches == "count(*)\n12\n"  # 4 of records, and each file's run start and each run's stop


def test_since_until_window_restricts_records(three):
    """--since/--until keep only records (and batches) in the window, and skip files outside it."""
    status, out, _ = sql("SELECT count(*), min(id), max(id) FROM events", "--db-dir", three, "--since",
                         "2026-11-18T11:08:20Z", "--until", "2026-11-18T11:10:00Z", "--format", "csv")
    assert out.splitlines()[1] == "100,101,200"


@pytest.mark.parametrize("statement", [
    "DELETE FROM events",
    "DELETE FROM f0.events",
    "UPDATE f1.events SET comm = 'x'",
    "INSERT INTO f0.runs (id) VALUES (99)",
    "DROP TABLE f0.events",
    "CREATE TABLE f0.t (x)",
    "CREATE TEMP TABLE t AS SELECT 1",
    "ATTACH DATABASE '/tmp/x.db' AS x",
    "VACUUM INTO '/tmp/stolen.db'",
    "PRAGMA query_only = 0",
    "PRAGMA f0.journal_mode = WAL",
    "REINDEX",
    "ANALYZE",
    "BEGIN",
    "SELECT fts3_tokenizer('simple')",
    "SELECT 1; DELETE FROM f0.events",
    "WITH x AS (SELECT 1) DELETE FROM f0.events",
])
def test_anything_that_writes_is_refused_and_nothing_changes(three, statement):
    """Writes, schema changes, attach, pragmas that set and multiple statements exit 2; files unchanged."""
    before = digests(three)
    status, out, err = sql(statement, "--db-dir", three)
    assert (status, out) == (2, "")
    assert err.startswith("auditd-lite: ") and err.count("\n") == 1
    assert digests(three) == before
    assert not Path("/tmp/stolen.db").exists()


def test_refusal_message_says_why(three):
    """A write is refused as such, a syntax error is named as bad SQL."""
    assert sql("DELETE FROM f0.events", "--db-dir", three)[2].startswith(
        "auditd-lite: refused: sql only reads (SELECT)")
    assert sql("SELEC 1", "--db-dir", three)[2] == 'auditd-lite: bad SQL: near "SELEC": syntax error\n'
    assert sql("   ", "--db-dir", three)[2] == "auditd-lite: empty SQL statement\n"


def test_read_only_pragmas_and_recursive_queries_work(three):
    """Describing tables and recursive CTEs are reading."""
    status, out, _ = sql("PRAGMA table_info(events)", "--db-dir", three, "--format", "csv")
    assert status == 0 and len(out.splitlines()) == len(chain.EVENT_COLUMNS) + 1
    status, out, _ = sql("WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 3) "
                         "SELECT sum(x) FROM n", "--db-dir", three, "--format", "csv")
    assert out == "sum(x)\n6\n"


def test_no_rows_is_exit_1(three):
    """A statement that returns no row exits 1 (nothing found), with a header-only CSV."""
    status, out, err = sql("SELECT id FROM events WHERE pid = -1", "--db-dir", three, "--format", "csv")
    assert (status, out, err) == (1, "id\n", "auditd-lite: no rows\n")


def test_table_output_escapes_control_characters(tmp_path):
    """Terminal output shows logged control characters escaped, NULs in argv as \\x00; NULL as NULL."""
    d = tmp_path / "db"
    bw = BatchWriter(d, {})
    bw.open()
    bw.write([("exec", T0, 5, 5, 1, 0, 0, "evil\x1b[2J", 1, 5, 0, 0, 1, 1, "/tmp/x", b"x\0\x1b]0;t\x07",
               2, 0, None, None, None, None, None, None) + EXEC_CONTEXT + EXEC_GATE])
    bw.close()
    status, out, _ = sql("SELECT comm, argv, errno FROM events", "--db", d / "audit.db")
    assert out.splitlines() == ["comm            argv                  errno",
                                "$'evil\\x1b[2J'  $'x\\x00\\x1b]0;t\\x07'   NULL"]
    assert "\x1b" not in out


def test_more_files_than_sqlite_attaches(many):
    """13 files: the oldest are copied into a temporary database, with a note; answers are whole."""
    status, out, err = sql("SELECT count(*), count(DISTINCT batch_id), sum(exit_code) FROM events",
                           "--db-dir", many, "--format", "csv")
    assert status == 0
    assert out.splitlines()[1] == f"130,13,{sum(1 for p in range(1000, 1065) if p % 7 == 0)}"
    assert err == ("auditd-lite: note: 14 files are more than SQLite attaches at once (10): copying "
                   "events of the 6 oldest files into a temporary database\n")
    status, out, _ = sql("SELECT id, events_written FROM runs", "--db-dir", many, "--format", "csv")
    assert out.splitlines()[1:] == ["1,130"]
    assert sql("SELECT count(*) FROM events", "--db-dir", many, "--format", "csv")[1] == "count(*)\n130\n"


def test_bad_sources_are_exit_2(tmp_path, three):
    """A missing directory, a missing file and a non-database file are one-line errors, exit 2."""
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    for args, message in [
        (["--db-dir", tmp_path / "nope"], f"auditd-lite: no such database directory: {tmp_path / 'nope'}\n"),
        (["--db", tmp_path / "gone.db"], f"auditd-lite: no such database file: {tmp_path / 'gone.db'}\n"),
        (["--db", junk], f"auditd-lite: not an auditd-lite database: {junk}\n"),
        (["--db-dir", three, "--since", "soonish"],
         "auditd-lite: bad time 'soonish': use ISO 8601 (2026-11-20T10:00) or an age like 10m, 2h, 3d\n"),
    ]:
        assert sql("SELECT 1", *args) == (2, "", message)


# --- files of different revisions (the context columns, schema revision 0003) ---------------

def test_views_over_files_of_mixed_revisions_read_missing_columns_as_null(tmp_path):
    """Over a 0002 file (no context columns) and head files, events has every column: the
    old file's records read NULL for the context, the new ones theirs, in SELECT * as in
    named columns and aggregates."""
    from test_query import CURL_SHA, DOCKER_ID, write_mixed

    db = write_mixed(tmp_path / "db")
    status, out, err = sql("SELECT pid, event, sha256, unit, container_id FROM events WHERE pid IN "
                           "(500, 600, 601) ORDER BY id", "--db-dir", db, "--format", "json")
    assert status == 0, err
    assert [json.loads(line) for line in out.splitlines()] == [
        {"pid": 500, "event": "exec", "sha256": None, "unit": None, "container_id": None},
        {"pid": 500, "event": "exit", "sha256": None, "unit": None, "container_id": None},
        {"pid": 600, "event": "exec", "sha256": CURL_SHA, "unit": "ssh.service", "container_id": None},
        {"pid": 601, "event": "exec", "sha256": "9e" * 32, "unit": f"docker-{DOCKER_ID}.scope",
         "container_id": DOCKER_ID},
        {"pid": 600, "event": "exit", "sha256": None, "unit": None, "container_id": None},
        {"pid": 601, "event": "exit", "sha256": None, "unit": None, "container_id": None},
    ]
    status, out, _ = sql("SELECT count(*), count(unit), count(DISTINCT hash_status) FROM events",
                         "--db-dir", db, "--format", "csv")
    assert out.splitlines()[1] == "11,4,2"
    status, out, _ = sql("SELECT * FROM events WHERE pid = 500 AND event = 'exec'", "--db-dir", db,
                         "--format", "json")
    old, new = json.loads(out), json.loads(sql("SELECT * FROM events WHERE pid = 600 AND event = 'exec'",
                                               "--db-dir", db, "--format", "json")[1])
    assert old.keys() == new.keys() and old["unit"] is None and new["unit"] == "ssh.service"


def test_a_file_from_before_the_context_columns_alone_still_has_them(tmp_path):
    """sql --db on a 0002 file: a statement naming the context columns of events and
    seen_processes runs (they read NULL, unknown) instead of failing on a missing column."""
    from test_query import OLD_ROWS, second_revision_file

    old = second_revision_file(tmp_path / "db", OLD_ROWS, seeds=[
        {"pid": 1, "ppid": 0, "uid": 0, "comm": "systemd", "filename": "/sbin/init", "argv": b"/sbin/init",
         "start_ns": 1, "start_tick_ns": 1}])
    status, out, err = sql("SELECT count(*), count(unit), count(sha256) FROM events", "--db", old,
                           "--format", "csv")
    assert (status, out.splitlines()[1], err) == (0, "3,0,0", "")
    status, out, err = sql("SELECT pid, container_id FROM seen_processes", "--db", old, "--format", "csv")
    assert (status, out, err) == (0, "pid,container_id\n1,\n", "")


def test_more_files_than_sqlite_attaches_with_an_old_one_among_those_copied(tmp_path):
    """With more files than SQLite attaches, the 0002 file among the oldest copied into the
    temporary database: its records come with NULL context, the others with theirs."""
    from test_query import CURL_SHA, SSH, ctx_exec, ctx_exit, second_revision_file

    db = tmp_path / "db"
    before = T0 - 3600 * 10**9  # older than every record written after it
    old = second_revision_file(db, [ctx_exec(before, 500, "/usr/bin/curl", CURL_SHA, SSH),
                                    ctx_exit(before + 10**9, 500, "curl", before)])
    write(db, 120, 10, rotation=RotationPolicy(size_mb=0.001))
    assert len(list(db.glob("*.db"))) > 10
    status, out, err = sql("SELECT name FROM files", "--db-dir", db, "--format", "csv")
    assert old.name not in out.splitlines() and "(merged)" in out
    status, out, err = sql("SELECT count(*), count(unit), count(hash_status) FROM events", "--db-dir", db,
                           "--format", "csv")
    assert status == 0 and "temporary database" in err
    # 120 records, half of them execs with EXEC_CONTEXT; the 2 old ones unknown
    execs_unit = 60 if dict(zip(CONTEXT_FIELDS, EXEC_CONTEXT))["unit"] else 0
    assert out.splitlines()[1] == f"122,{execs_unit},60"
