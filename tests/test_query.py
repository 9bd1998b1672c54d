"""The read side of `auditd-lite query`: time parsing, file discovery, search and output."""

from __future__ import annotations

import calendar
import csv
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text

from auditd_lite.dbfiles import database_files, open_ro
from auditd_lite.errors import BadInput
from auditd_lite.investigate.output import TABLE_HEADER, format_event_line, quote, write_records
from auditd_lite.investigate.query import Filters, build_sql, search
from auditd_lite.storage.schema import metadata
from auditd_lite.timeparse import format_time, parse_duration, parse_time
from auditd_lite.rows import CONTEXT_FIELDS
from conftest import EXEC_CONTEXT, EXEC_GATE, EXIT_GATE, NO_CONTEXT, cli_in_process

ROOT = Path(__file__).resolve().parents[1]
ROTATED = "audit-20261120T100000Z-20261120T110000Z.db"
SEC = 10**9


def at(hour, minute, second=0, ms=0):
    """UTC nanoseconds for a time on 2026-11-20."""
    return (calendar.timegm((2026, 11, 20, hour, minute, second)) * 1000 + ms) * 10**6


EVENT_COLUMNS = [c.name for c in metadata.tables["events"].columns]


def exec_row(id, run, pid, comm, when, start, filename, argv, ppid=1, uid=1000, event="exec", errno=None):
    return dict(
        id=id, run_id=run, batch_id=run, event=event, time_ns=when, pid=pid, tid=pid, ppid=ppid,
        uid=uid, gid=uid, comm=comm, start_ns=start, old_pid=pid, euid=uid, auid=1000, sessionid=3,
        cgroup_id=77, filename=filename, argv=argv, argc=argv.count(b"\0") + 1,
        args_truncated=False, errno=errno,
    )


def exit_row(id, run, pid, comm, when, start, code, signal=0, core=False, duration=SEC, ppid=1, uid=1000):
    return dict(
        id=id, run_id=run, batch_id=run, event="exit", time_ns=when, pid=pid, tid=pid, ppid=ppid,
        uid=uid, gid=uid, comm=comm, start_ns=start, status=(code << 8) | (0x80 if core else 0) | signal,
        exit_code=code, signal=signal, core_dumped=core, duration_ns=duration,
    )


def make_db(path: Path, runs: list[dict], events: list[dict], wal: bool = False) -> Path:
    """A database built from the real models, the way the writer builds it."""
    engine = create_engine(f"sqlite:///{path}")
    metadata.create_all(engine)
    tables = metadata.tables
    with engine.begin() as conn:
        if wal:
            conn.execute(text("PRAGMA journal_mode=WAL"))
        for run in runs:
            conn.execute(tables["runs"].insert(), dict(
                id=run["id"], boot_id=run["boot_id"], host="host1", kernel="6.18.0", version="0.1.0",
                settings="{}", started_ns=run["started_ns"], lost_kernel=0, lost_user=0, events_written=0))
            mine = [e["id"] for e in events if e["run_id"] == run["id"]]
            conn.execute(tables["batches"].insert(), dict(
                id=run["id"], run_id=run["id"], written_ns=run["started_ns"] + SEC,
                first_event_id=min(mine), last_event_id=max(mine), count=len(mine), lost_kernel=0, lost_user=0))
        conn.execute(tables["events"].insert(), [{c: e.get(c) for c in EVENT_COLUMNS} for e in events])
    engine.dispose()
    return path


@pytest.fixture
def dbdir(tmp_path) -> Path:
    """A db dir with one rotated file (10:00-11:00) and the live file (11:00-)."""
    make_db(tmp_path / ROTATED, [dict(id=1, boot_id="boot-a", started_ns=at(9, 59))], [
        exec_row(1, 1, 100, "sh", at(10, 10), 5000, "/bin/sh", b"sh\0-c\0exit 3"),
        exit_row(2, 1, 100, "sh", at(10, 10, 1, 250), 5000, 3, duration=1250 * 10**6),
        exec_row(3, 1, 101, "bash", at(10, 20), 6000, "/usr/bin/nope", b"nope\0--help",
                 ppid=100, uid=0, event="exec_failed", errno=2),
        exec_row(4, 1, 102, "cat", at(10, 30), 9000, "/bin/cat", b"cat\0my file.txt\0\xff\xfe"),
        exit_row(5, 1, 102, "cat", at(10, 30, 5), 9000, 0, signal=9, duration=5 * SEC),
    ])
    make_db(tmp_path / "audit.db", [
        dict(id=1, boot_id="boot-a", started_ns=at(11, 0)),
        dict(id=2, boot_id="boot-b", started_ns=at(11, 30)),  # after a reboot
    ], [
        exec_row(1, 1, 200, "evil\x1b[31m", at(11, 5), 20000, "/tmp/x\x1b]0;pwn\x07", b"x\0a\nb", uid=1001),
        exit_row(2, 1, 200, "evil\x1b[31m", at(11, 5, 0, 500), 20000, 0, duration=500 * 10**6, uid=1001),
        exec_row(3, 1, 201, "sleep", at(11, 10), 21000, "/usr/bin/sleep", b"sleep\x001000"),
        exec_row(4, 1, 300, "python3", at(11, 20), 30000, "/usr/bin/python3", b"python3\0-V"),
        # same pid and start_ns as the exec above, but another boot: not that process
        exit_row(5, 2, 300, "python3", at(11, 40), 30000, 1, duration=30 * 60 * SEC),
        exit_row(6, 2, 301, "crashy", at(11, 45), 31000, 0, signal=11, core=True, duration=2 * 10**6),
    ], wal=True)
    return tmp_path


def keys(records):
    return [(r["event"], r["pid"]) for r in records]


def find(dbdir, **filters):
    return list(search(database_files(db_dir=dbdir), Filters(**filters)))


ALL = [("exit", 301), ("exit", 300), ("exec", 300), ("exec", 201), ("exit", 200), ("exec", 200),
       ("exit", 102), ("exec", 102), ("exec_failed", 101), ("exit", 100), ("exec", 100)]


# --- search ---------------------------------------------------------------

def test_no_filter_returns_everything_newest_first_across_files(dbdir):
    """Without filters every record of both files comes back, live file first, time descending."""
    records = find(dbdir)
    assert keys(records) == ALL
    times = [r["time_ns"] for r in records]
    assert times == sorted(times, reverse=True)


@pytest.mark.parametrize("filters, expected", [
    (dict(comm="sh"), [("exit", 100), ("exec", 100)]),
    (dict(exit_code=3), [("exit", 100)]),
    (dict(exit_code=0), [("exit", 301), ("exit", 200), ("exit", 102)]),
    (dict(signal=9), [("exit", 102)]),
    (dict(pid=102), [("exit", 102), ("exec", 102)]),
    (dict(ppid=100), [("exec_failed", 101)]),
    (dict(uid=1001), [("exit", 200), ("exec", 200)]),
    (dict(filename="/bin/*"), [("exit", 102), ("exec", 102), ("exit", 100), ("exec", 100)]),
    (dict(filename="/usr/bin/n?pe"), [("exec_failed", 101)]),
    (dict(arg="exit 3"), [("exit", 100), ("exec", 100)]),
    (dict(arg="my file"), [("exit", 102), ("exec", 102)]),
    (dict(since_ns=at(11, 0), until_ns=at(11, 30)), [("exec", 300), ("exec", 201), ("exit", 200), ("exec", 200)]),
    (dict(until_ns=at(10, 20)), [("exit", 100), ("exec", 100)]),
    (dict(min_duration_ns=SEC), [("exit", 300), ("exit", 102), ("exit", 100)]),
    (dict(event="exec_failed"), [("exec_failed", 101)]),
    (dict(event="exec", comm="sleep"), [("exec", 201)]),
    (dict(event="exec", exit_code=0), []),
    (dict(comm="x' OR 1=1 --"), []),
])
def test_each_filter_narrows_to_exactly_the_matching_records(dbdir, filters, expected):
    """Each filter (and a combination) returns exactly the records it describes, newest first."""
    assert keys(find(dbdir, **filters)) == expected


def test_bad_event_name_is_bad_input_before_any_file_is_read(dbdir):
    """An unknown --event value raises BadInput as soon as search is called."""
    with pytest.raises(BadInput, match="'fork'"):
        search([dbdir / "missing.db"], Filters(event="fork"))


def test_limit_stops_early_and_never_opens_older_files(dbdir):
    """limit N yields N records and does not open files it does not need."""
    live = dbdir / "audit.db"
    # a non-database second file would raise BadInput if it were opened
    (dbdir / "junk.db").write_bytes(b"not sqlite" * 100)
    assert keys(search([live, dbdir / "junk.db"], Filters(), limit=3)) == ALL[:3]
    assert keys(search([live, dbdir / "junk.db"], Filters(), limit=6)) == ALL[:6]
    assert list(search([live, dbdir / "junk.db"], Filters(), limit=0)) == []
    assert keys(search(database_files(db_file=live), Filters(), limit=7)) == ALL[:6]
    assert keys(search([live, dbdir / ROTATED], Filters(), limit=7)) == ALL[:7]


@pytest.mark.parametrize("filters, index", [
    (Filters(comm="sh", since_ns=1), "ix_events_comm_time"),
    (Filters(comm="sh", exit_code=1), "ix_events_comm_time"),
    (Filters(since_ns=1), "ix_events_time"),
    (Filters(), "ix_events_time"),
    (Filters(unit="ssh.service", sha256="c0ffee", container="3f4e"), "ix_events_time"),
])
def test_query_walks_an_index_in_time_order_without_sorting(dbdir, filters, index):
    """The outer loop reads rows in time order from an index (no sort of all matches), so --limit
    costs only what it yields; only the per-row exec/exit lookups sort their few candidates."""
    sql, params = build_sql(filters)
    conn = open_ro(dbdir / "audit.db")
    plan = conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
    conn.close()
    top = [row[3] for row in plan if row[1] == 0]
    assert top[0].startswith("S") and f"e USING INDEX {index}" in top[0]
    assert not any("TEMP B-TREE" in detail for detail in top)


def test_exit_record_carries_what_its_process_had_executed(dbdir):
    """An exit record gets exec_filename/exec_argv; its exec record gets exit_code, signal, duration_ns."""
    exit100, exec100 = find(dbdir, pid=100)
    assert exit100["exec_filename"] == "/bin/sh"
    assert exit100["exec_argv"] == ["sh", "-c", "exit 3"]
    assert exit100["filename"] is None and exit100["argv"] == []
    assert (exec100["exit_code"], exec100["signal"], exec100["duration_ns"]) == (3, 0, 1250 * 10**6)
    running = find(dbdir, pid=201)[0]
    assert (running["exit_code"], running["signal"], running["duration_ns"]) == (None, None, None)


def test_exec_and_exit_of_another_boot_are_not_joined(dbdir):
    """Same pid and start_ns under a different boot id is another process: no correlation."""
    exit300, exec300 = find(dbdir, pid=300)
    assert (exit300["exec_filename"], exit300["exec_argv"]) == (None, None)
    assert exec300["exit_code"] is None
    assert (exit300["boot_id"], exec300["boot_id"]) == ("boot-b", "boot-a")


def test_record_fields_for_each_event_type(dbdir):
    """Records carry decoded argv (non-UTF-8 escaped), exit status fields, errno and its name."""
    exit102, exec102 = find(dbdir, pid=102)
    assert exec102["argv"] == ["cat", "my file.txt", "\\xff\\xfe"]
    assert exec102["time"] == "2026-11-20T10:30:00.000000Z"
    assert (exec102["euid"], exec102["auid"], exec102["sessionid"], exec102["cgroup_id"]) == (1000, 1000, 3, 77)
    assert (exec102["argc"], exec102["args_truncated"], exec102["old_pid"]) == (3, False, 102)
    assert (exit102["exit_code"], exit102["signal"], exit102["status"], exit102["core_dumped"]) == (0, 9, 9, False)
    crashy = find(dbdir, pid=301)[0]
    assert (crashy["signal"], crashy["core_dumped"], crashy["status"]) == (11, True, 0x8B)
    failed = find(dbdir, event="exec_failed")[0]
    assert (failed["errno"], failed["errno_name"], failed["filename"]) == (2, "ENOENT", "/usr/bin/nope")


# --- output ---------------------------------------------------------------

REQUIRED_JSON_KEYS = {"event", "time", "pid", "ppid", "uid", "comm", "filename", "argv"}


def test_json_lines_have_the_contract_keys(dbdir):
    """json output is one object per line with the documented keys per event type."""
    out = io.StringIO()
    assert write_records(search(database_files(db_dir=dbdir), Filters()), "json", out) == len(ALL)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(r["event"], r["pid"]) for r in lines] == ALL
    for record in lines:
        assert REQUIRED_JSON_KEYS <= record.keys()
        extra = {"exit": {"exit_code", "signal", "duration_ns"}, "exec_failed": {"errno"}, "exec": set()}
        assert extra[record["event"]] <= record.keys()
    exit102 = lines[6]
    assert (exit102["time"], exit102["exit_code"], exit102["signal"], exit102["duration_ns"]) == (
        "2026-11-20T10:30:05.000000Z", 0, 9, 5 * SEC)
    assert exit102["exec_argv"] == ["cat", "my file.txt", "\\xff\\xfe"]
    assert lines[8]["errno"] == 2


def test_json_never_fails_on_odd_values():
    """Bytes and strings the output encoding cannot hold are escaped, not fatal."""
    ascii_out = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    record = {"event": "exec", "comm": "caf\u00e9", "raw": b"\xff", "argv": ["\udcff"]}
    assert write_records([record], "json", ascii_out) == 1
    ascii_out.seek(0)
    assert json.loads(ascii_out.read())["raw"] == "\\xff"


def test_csv_has_a_fixed_header_and_shell_quoted_argv(dbdir):
    """csv output starts with the fixed header; argv is joined with shell quoting."""
    out = io.StringIO()
    write_records(search(database_files(db_dir=dbdir), Filters(pid=102)), "csv", out)
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[0] == ["time", "event", "pid", "tid", "ppid", "uid", "gid", "comm", "filename", "argv",
                       "exit_code", "signal", "core_dumped", "duration_ns", "errno", "errno_name",
                       *CONTEXT_FIELDS, "abi", "parent_start_ns"]
    exit_row_, exec_row_ = rows[1], rows[2]
    assert exec_row_[:10] == ["2026-11-20T10:30:00.000000Z", "exec", "102", "102", "1", "1000", "1000",
                              "cat", "/bin/cat", "cat 'my file.txt' '\\xff\\xfe'"]
    assert exit_row_[8:14] == ["/bin/cat", "cat 'my file.txt' '\\xff\\xfe'", "0", "9", "0", "5000000000"]


def test_csv_header_is_written_even_when_nothing_matched():
    """An empty result is still valid CSV with its header, and counts zero records."""
    out = io.StringIO()
    assert write_records([], "csv", out) == 0
    assert out.getvalue().startswith("time,event,pid,")
    table = io.StringIO()
    assert write_records([], "table", table) == 0
    assert table.getvalue() == ""


@pytest.fixture
def utc_tz(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_table_lines_match_the_bootstrap_layout(dbdir, utc_tz):
    """Table output is the bootstrap header and columns, with command, exit status or errno last."""
    assert TABLE_HEADER == "TIME     EVENT COMM             PID     PPID    FILENAME/EXIT CODE"
    out = io.StringIO()
    write_records(search(database_files(db_dir=dbdir), Filters(), limit=None), "table", out)
    lines = out.getvalue().splitlines()
    assert lines[0] == TABLE_HEADER
    assert lines[1] == "11:45:00 EXIT  crashy           301     1       [0] signal 11 (core dumped) (2ms)"
    assert lines[7] == "10:30:05 EXIT  cat              102     1       [0] signal 9 (5000ms)"
    assert lines[8] == "10:30:00 EXEC  cat              102     1       /bin/cat cat 'my file.txt' '\\xff\\xfe'"
    assert lines[9] == "10:20:00 FAIL  bash             101     100     /usr/bin/nope nope --help [ENOENT]"
    assert len(lines) == 1 + len(ALL)


def test_table_escapes_control_characters_from_logged_data(dbdir, utc_tz):
    """Escape sequences in comm, filename and argv are shown as \\xNN inside $'...', never emitted."""
    exit200, exec200 = find(dbdir, pid=200)
    line = format_event_line(exec200)
    assert line == ("11:05:00 EXEC  $'evil\\x1b[31m'  200     1       "
                    "$'/tmp/x\\x1b]0;pwn\\x07' x $'a\\x0ab'")
    assert not any(ord(c) < 0x20 or c == "\x7f" for c in line)
    assert format_event_line(exit200) == "11:05:00 EXIT  $'evil\\x1b[31m'  200     1       [0] (500ms)"


def test_quote_is_shell_exact():
    """quote() output read back by bash gives the original string."""
    samples = ["plain", "with space", "it's", "", "tab\there", "esc\x1b[0m", "back\\slash\x01"]
    if not shutil.which("bash"):
        pytest.skip("no bash")
    for sample in samples:
        echoed = subprocess.run(["bash", "-c", "printf %s " + quote(sample)], capture_output=True, text=True)
        assert echoed.stdout == sample


# --- time -----------------------------------------------------------------

def test_parse_time_accepts_iso_and_ages(monkeypatch):
    """ISO 8601 with Z/offset/naive-local, dates, ages and 'now' give exact UTC nanoseconds."""
    monkeypatch.setenv("TZ", "EST5")  # UTC-5, no zoneinfo needed
    time.tzset()
    try:
        assert parse_time("2026-11-20T10:00Z") == at(10, 0)
        assert parse_time("2026-11-20 10:00:05+02:00") == at(8, 0, 5)
        assert parse_time("2026-11-20T10:00:05.123456Z") == at(10, 0, 5) + 123456000
        assert parse_time("2026-11-20T10:00") == at(15, 0)
        assert parse_time("2026-11-20") == at(5, 0)
    finally:
        monkeypatch.undo()
        time.tzset()
    now = at(12, 0)
    assert parse_time("now", now_ns=now) == now
    assert parse_time("30s", now_ns=now) == now - 30 * SEC
    assert parse_time("10m", now_ns=now) == at(11, 50)
    assert parse_time("2h", now_ns=now) == at(10, 0)
    assert parse_time("3d", now_ns=now) == now - 3 * 86400 * SEC
    assert parse_time("1w", now_ns=now) == now - 7 * 86400 * SEC


@pytest.mark.parametrize("bad", ["yesterday-ish", "", "10x", "-5m", "2026-13-01", "1.5h"])
def test_bad_time_is_bad_input_naming_the_value(bad):
    """Unparsable times raise BadInput with a one-line message quoting the value."""
    with pytest.raises(BadInput) as info:
        parse_time(bad)
    message = str(info.value)
    assert repr(bad) in message and "\n" not in message


def test_parse_duration():
    """Durations are positive seconds; zero, negative and unit-less values are BadInput."""
    assert (parse_duration("1h"), parse_duration("1d"), parse_duration("90s"), parse_duration("15m")) == (
        3600.0, 86400.0, 90.0, 900.0)
    assert parse_duration("1h30m") == 5400.0
    for bad in ["0s", "-1h", "90", "soon", ""]:
        with pytest.raises(BadInput):
            parse_duration(bad)


def test_format_time_is_utc_with_microseconds():
    """format_time prints ISO 8601 UTC with microseconds and Z."""
    assert format_time(at(10, 0, 5) + 123456789) == "2026-11-20T10:00:05.123456Z"
    assert format_time(0) == "1970-01-01T00:00:00.000000Z"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=-10**18, max_value=4 * 10**18), min_size=1, max_size=20))
def test_format_times_are_datetimes_whatever_came_before(times):
    """format_time and format_time_ns, called in any order on any times (the same second again,
    the second before, 1969's), each give what datetime says of its own time: the formatted
    second they reuse is never another time's."""
    from auditd_lite.timeparse import format_time_ns
    for ns in times + times[::-1]:
        seconds, rest = divmod(ns, 10**9)
        day = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=seconds)
        want = day.strftime("%Y-%m-%dT%H:%M:%S")
        assert format_time_ns(ns) == f"{want}.{rest:09d}Z"
        assert format_time(ns) == f"{want}.{rest // 1000:06d}Z"


# --- files ----------------------------------------------------------------

def test_database_files_lists_live_then_rotated_newest_first(tmp_path):
    """The live audit.db comes first, rotated files by name descending, other .db files last."""
    for name in ["audit-20261120T090000Z-20261120T100000Z.db", "audit.db", "case-118.db",
                 "audit-20261120T100000Z-20261120T110000Z.db", "notes.txt", ".tmp.db"]:
        con = sqlite3.connect(tmp_path / name)
        con.execute("CREATE TABLE events (id INTEGER PRIMARY KEY)")
        con.commit()
        con.close()
    (tmp_path / "dir.db").mkdir()
    (tmp_path / "empty.db").write_bytes(b"")  # not a database: skipped with a warning
    assert [p.name for p in database_files(db_dir=tmp_path)] == [
        "audit.db", "audit-20261120T100000Z-20261120T110000Z.db",
        "audit-20261120T090000Z-20261120T100000Z.db", "case-118.db"]


def test_missing_directory_or_file_is_bad_input(tmp_path):
    """A missing --db-dir or --db raises BadInput naming it."""
    with pytest.raises(BadInput, match="no such database directory: .*nowhere"):
        database_files(db_dir=tmp_path / "nowhere")
    with pytest.raises(BadInput, match="no such database file: .*gone.db"):
        database_files(db_file=tmp_path / "gone.db")
    with pytest.raises(BadInput, match="not a file"):
        database_files(db_file=tmp_path)


def test_non_database_file_is_bad_input(tmp_path):
    """A file that is not SQLite, or SQLite without an events table, is not an auditd-lite database."""
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database, just text " * 50)
    with pytest.raises(BadInput, match=f"not an auditd-lite database: {junk}"):
        open_ro(junk)
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(BadInput, match="not an auditd-lite database"):
        list(search([other], Filters()))


def test_open_ro_cannot_write(dbdir):
    """Connections from open_ro refuse writes, so a query can never modify evidence."""
    before = (dbdir / ROTATED).read_bytes()
    conn = open_ro(dbdir / ROTATED)
    with pytest.raises(sqlite3.OperationalError):
        conn.execute("DELETE FROM events")
    conn.close()
    assert (dbdir / ROTATED).read_bytes() == before


NOBODY_SCRIPT = textwrap.dedent("""
    import sys
    from auditd_lite.dbfiles import database_files
    from auditd_lite.errors import BadInput
    from auditd_lite.investigate.query import Filters, search
    print(len(list(search(database_files(db_dir=sys.argv[1]), Filters()))))
    for closed in sys.argv[2:]:
        try:
            database_files(db_dir=closed)
        except BadInput as exc:
            print(exc)
""")


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root to switch to nobody")
def test_unprivileged_reader_gets_wal_files_and_a_clear_permission_message(dbdir):
    """A user who may not create -shm files still reads WAL-mode files; an unreadable dir says why."""
    shared = Path(tempfile.mkdtemp())
    try:
        os.chmod(shared, 0o755)
        readable, closed = shared / "db", shared / "closed"
        shutil.copytree(dbdir, readable)
        readable.chmod(0o755)
        closed.mkdir(mode=0o700)
        for path in readable.iterdir():
            path.chmod(0o444)
        result = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
             sys.executable, "-c", NOBODY_SCRIPT, str(readable), str(closed), str(closed / "inner")],
            capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert result.returncode == 0, result.stderr
        count, message, inner = result.stdout.splitlines()
        assert int(count) == len(ALL)
        assert message == (f"cannot read {closed}: user nobody lacks read access; "
                           "run as root or as a member of the group root, which owns it")
        assert inner.startswith(f"cannot read {closed / 'inner'}: user nobody lacks read access; run as root")
    finally:
        shutil.rmtree(shared)


def test_exec_and_exit_join_across_a_rotation(tmp_path):
    """A process whose exec is in a rotated file and whose exit is in the next one is joined both ways."""
    from auditd_lite.storage.rotation import RotationPolicy
    from auditd_lite.storage.batchwriter import BatchWriter

    t = at(10, 0)
    exec_ = ("exec", t, 4242, 4242, 1, 0, 0, "make", 777, 4242, 0, 0, 1, 1, "/usr/bin/make",
             b"make\0-j2", 2, 0, None, None, None, None, None, None) + EXEC_CONTEXT + EXEC_GATE
    other = ("exec", t + SEC, 4243, 4243, 1, 0, 0, "cc", 778, 4243, 0, 0, 1, 1, "/usr/bin/cc",
             b"cc", 1, 0, None, None, None, None, None, None) + EXEC_CONTEXT + EXEC_GATE
    exit_ = ("exit", t + 90 * SEC, 4242, 4242, 1, 0, 0, "make", 777, None, None, None, None, None, None,
             None, None, None, None, 2 << 8, 2, 0, 0, 90 * SEC) + NO_CONTEXT + EXIT_GATE
    bw = BatchWriter(tmp_path / "db", {}, rotation=RotationPolicy(size_mb=0.001))
    bw.open()
    bw.write([exec_, other])  # rotated after this batch
    bw.write([exit_])
    bw.close()
    files = database_files(db_dir=tmp_path / "db")
    assert len(files) >= 2
    got = {(r["event"], r["pid"]): r for r in search(files, Filters())}
    ended, started = got[("exit", 4242)], got[("exec", 4242)]
    assert (ended["exec_filename"], ended["exec_argv"]) == ("/usr/bin/make", ["make", "-j2"])
    assert (started["exit_code"], started["signal"], started["duration_ns"]) == (2, 0, 90 * SEC)
    assert got[("exec", 4243)]["exit_code"] is None


# --- the exec context (issue #13): hash, cgroup, unit, container ----------------------------

CURL_SHA = "c0" + "ffee" * 15 + "42"
PY_SHA = "9e" * 32
DOCKER_ID = "3f4e5d6c7b8a" + "0123456789abcdef" * 3 + "0123"
# where a process ran: the working directory and cgroup parts of a context
SSH = dict(cwd="/", cwd_status="ok", cgroup="/system.slice/ssh.service", cgroup_status="resolved",
           unit="ssh.service")
SESSION = dict(cwd="/home/alice/src", cwd_status="ok", cgroup="/user.slice/user-1000.slice/session-3.scope",
               cgroup_status="resolved", unit="session-3.scope")
DOCKER = dict(cwd="/app", cwd_status="other_ns", cgroup=f"/system.slice/docker-{DOCKER_ID}.scope",
              cgroup_status="resolved", unit=f"docker-{DOCKER_ID}.scope", container_id=DOCKER_ID)


def context(**values) -> tuple:
    """rows.CONTEXT_FIELDS in order, from values by name; those not given unknown (None)."""
    assert set(values) <= set(CONTEXT_FIELDS), values
    return tuple(values.get(c) for c in CONTEXT_FIELDS)


def context_of(record: dict) -> tuple:
    return tuple(record[c] for c in CONTEXT_FIELDS)


# every fixture process is a child of pid 1, started at this monotonic time
INIT_START = 50


def ctx_exec(t, pid, filename, sha256, cgroup: dict, hash_status="ok", abi="x64"):
    """An exec in rows.ROW_FIELDS order with its context: the hash, and ``cgroup``; then its
    gate: ``abi``, and pid 1 as the parent."""
    comm = filename.rsplit("/", 1)[-1][:15]
    return (("exec", t, pid, pid, 1, 0, 0, comm, pid * 1000, pid, 0, 0, 1, 1,
             filename, comm.encode() + b"\0-v", 2, 0, None, None, None, None, None, None)
            + context(sha256=sha256, hash_status=hash_status, **cgroup) + (abi, INIT_START))


def ctx_failed(t, pid, filename, cgroup: dict, errno=2, abi="x64"):
    """A failed exec: a cgroup, and no hash (no image ran)."""
    comm = filename.rsplit("/", 1)[-1][:15]
    return (("exec_failed", t, pid, pid, 1, 0, 0, comm, pid * 1000, pid, 0, 0, 1, 1, filename,
             comm.encode(), 1, 0, errno, None, None, None, None, None) + context(**cgroup) + (abi, INIT_START))


def ctx_exit(t, pid, comm, exec_t, code=0):
    """The exit of the process that exec'd at ``exec_t`` (forked just before): no context."""
    return ("exit", t, pid, pid, 1, 0, 0, comm, pid * 1000, None, None, None,
            None, None, None, None, None, None, None, code << 8, code, 0, 0, t - exec_t + 5) + context(
        ) + (None, INIT_START)


def second_revision_file(db_dir: Path, rows: list[tuple], seeds: list[dict] = (), run_id: int = 7,
                         boot_id: str | None = None) -> Path:
    """A rotated file as a release at schema revision 0002 (before the context columns) wrote
    it: one stopped run ``run_id`` (of this boot unless ``boot_id``), one format-2 batch from
    genesis holding ``rows`` (rows.ROW_FIELDS tuples; their context dropped, as that release
    never had any) with ids from 1, and ``seeds`` in seen_processes. A BatchWriter of
    ``db_dir`` then goes on from its batch, as a daemon upgraded after a rotation does."""
    from auditd_lite import chain, dbfiles, hostinfo
    from auditd_lite.rows import CAPTURED_FIELDS
    from auditd_lite.storage import store

    db_dir.mkdir(parents=True, exist_ok=True)
    building = db_dir / "building.tmp"
    times = [r[1] for r in rows]
    engine = store.engine_for(building)
    with engine.connect() as conn:
        store.upgrade(conn, "0002")
        conn.exec_driver_sql(
            "INSERT INTO runs (id, boot_id, host, kernel, version, settings, started_ns, stopped_ns, "
            "lost_kernel, lost_user, events_written) VALUES (?, ?, 'h', 'k', '0.2', '{}', ?, ?, 0, 0, ?)",
            (run_id, boot_id or hostinfo.boot_id(), min(times) - SEC, max(times) + SEC, len(rows)))
        full = [(i + 1, run_id, 1) + r[:len(CAPTURED_FIELDS)] for i, r in enumerate(rows)]
        header = (1, run_id, max(times), 1, len(rows), len(rows), 0, 0)
        digest = chain.batch_hash(chain.GENESIS, header, [chain.row_digest(r, 2) for r in full], fmt=2)
        conn.exec_driver_sql(
            "INSERT INTO batches (id, run_id, written_ns, first_event_id, last_event_id, count, "
            "lost_kernel, lost_user, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            header + (chain.GENESIS, digest))
        conn.exec_driver_sql(f"INSERT INTO events VALUES ({', '.join('?' * len(full[0]))})", full)
        for s in seeds:
            conn.exec_driver_sql(
                "INSERT INTO seen_processes (run_id, time_ns, pid, ppid, uid, comm, filename, argv, "
                "start_ns, start_tick_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, min(times) - SEC, s["pid"], s["ppid"], s["uid"], s["comm"], s["filename"],
                 s["argv"], s["start_ns"], s["start_tick_ns"]))
        conn.commit()
        conn.exec_driver_sql("PRAGMA journal_mode=DELETE")  # as a rotation leaves it
    engine.dispose()
    path = dbfiles.rotated_path(db_dir, min(times), max(times))
    building.rename(path)
    path.chmod(0o440)
    return path


# the 0002 file: records that, had that release recorded a context, would match every filter
OLD_ROWS = [
    ctx_exec(at(10, 0), 500, "/usr/bin/curl", CURL_SHA, SSH),
    ctx_exit(at(10, 0, 1), 500, "curl", at(10, 0)),
    ctx_exec(at(10, 0, 30), 510, "/usr/bin/python3", PY_SHA, DOCKER),  # exits in the new files
]
# the new files: batch 1 (rotated after it), then batch 2
NEW_BATCH_1 = [
    ctx_exec(at(11, 0), 600, "/usr/bin/curl", CURL_SHA, SSH),
    ctx_exec(at(11, 0, 1), 601, "/usr/bin/python3", PY_SHA, DOCKER),
    ctx_failed(at(11, 0, 2), 602, "/usr/local/bin/nope", SESSION),
    ctx_exec(at(11, 0, 3), 603, "/usr/bin/make", None, SESSION, hash_status="too_large"),
    ctx_exit(at(11, 0, 4), 600, "curl", at(11, 0)),
    ctx_exit(at(11, 0, 5), 601, "python3", at(11, 0, 1), code=1),
]
NEW_BATCH_2 = [
    ctx_exit(at(11, 5), 603, "make", at(11, 0, 3)),  # its exec is in the file before
    ctx_exit(at(11, 5, 1), 510, "python3", at(10, 0, 30)),  # its exec is in the 0002 file
]


def write_mixed(db: Path) -> Path:
    """A directory whose oldest file is at revision 0002 (OLD_ROWS, no context columns) and
    whose newer files (NEW_BATCH_1 rotated, NEW_BATCH_2 in the next) are at head, the chain
    running on across them, all in this boot."""
    from auditd_lite.storage.batchwriter import BatchWriter
    from auditd_lite.storage.rotation import RotationPolicy

    second_revision_file(db, OLD_ROWS)
    bw = BatchWriter(db, {"keep": 0}, rotation=RotationPolicy(size_mb=0.001))
    bw.open()
    bw.write(NEW_BATCH_1)
    bw.write(NEW_BATCH_2)
    bw.close()
    return db


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    return write_mixed(tmp_path_factory.mktemp("mixed") / "db")


def revisions(db: Path) -> list[str]:
    out = []
    for path in database_files(db_dir=db):
        conn = open_ro(path)
        out.append(conn.execute("SELECT version_num FROM alembic_version").fetchone()[0])
        conn.close()
    return out


def test_mixed_directory_has_a_file_before_the_context_columns(mixed):
    """The fixture is what the context tests need: the oldest file at 0002 (no context columns),
    the newer ones at head (0003), the whole chain verifying across them."""
    from auditd_lite.storage import store

    got = revisions(mixed)
    assert got[-1] == "0002" and set(got[:-1]) == {store.HEAD_REVISION} and len(got) >= 3
    assert cli_in_process("verify", "--db-dir", mixed)[0] == 0


@pytest.mark.parametrize("filters, expected", [
    (dict(sha256=CURL_SHA[:8]), [("exit", 600), ("exec", 600)]),
    (dict(sha256=CURL_SHA[:8].upper()), [("exit", 600), ("exec", 600)]),
    (dict(sha256=CURL_SHA), [("exit", 600), ("exec", 600)]),
    (dict(sha256=CURL_SHA[1:9]), []),  # a prefix, not a substring
    (dict(sha256=CURL_SHA, event="exit"), [("exit", 600)]),
    (dict(unit="ssh.service"), [("exit", 600), ("exec", 600)]),
    # exit 603's exec is in the file before its own: it matches through it all the same
    (dict(unit="session-3.scope"), [("exit", 603), ("exec", 603), ("exec_failed", 602)]),
    (dict(unit="session-3"), []),  # exact, not a prefix
    (dict(unit="SSH.service"), []),
    (dict(container=DOCKER_ID[:12]), [("exit", 601), ("exec", 601)]),
    (dict(container=DOCKER_ID), [("exit", 601), ("exec", 601)]),
    (dict(container=DOCKER_ID[2:14]), []),
    (dict(container=DOCKER_ID[:12], exit_code=1), [("exit", 601)]),
    (dict(unit="ssh.service", container=DOCKER_ID[:4]), []),
    (dict(cwd="/home/alice/*"), [("exit", 603), ("exec", 603), ("exec_failed", 602)]),
    (dict(cwd="/"), [("exit", 600), ("exec", 600)]),  # a glob: "/" is that directory only
    (dict(cwd="/home"), []),
    (dict(cwd="/app", event="exit"), [("exit", 601)]),
])
def test_context_filters_match_exec_and_exit_in_files_that_have_them(mixed, filters, expected):
    """--cwd (a glob), --sha256 (a prefix, any case), --unit (exact) and --container (a prefix)
    select the execs and failed execs with that context and the exits of their processes
    (through the exec, in the same file or an older one), newest first; the 0002 file, whose
    records had the same programs but no context recorded, contributes none (nor does exit 510,
    whose exec lies there) and raises no SQL error."""
    assert keys(find(mixed, **filters)) == expected


def test_without_context_filters_every_file_is_read_and_unknown_is_null(mixed):
    """Without a context filter the 0002 file is searched as before; every record has the
    context keys (rows.CONTEXT_FIELDS): null for records of the 0002 file and for exits whose
    exec lies there, the exec's values for an exit (in its file or, joined, in the file
    before), a failed exec's cgroup without a hash."""
    records = {(r["event"], r["pid"]): r for r in find(mixed)}
    assert len(records) == len(OLD_ROWS) + len(NEW_BATCH_1) + len(NEW_BATCH_2)
    for key in [("exec", 500), ("exit", 500), ("exec", 510), ("exit", 510)]:
        assert context_of(records[key]) == context(), key
    assert context_of(records[("exec", 600)]) == context_of(records[("exit", 600)]) == context(
        sha256=CURL_SHA, hash_status="ok", **SSH)
    assert context_of(records[("exit", 601)]) == context(sha256=PY_SHA, hash_status="ok", **DOCKER)
    assert context_of(records[("exit", 603)]) == context(hash_status="too_large", **SESSION)
    assert records[("exit", 603)]["exec_filename"] == "/usr/bin/make"  # joined across the rotation
    assert context_of(records[("exec_failed", 602)]) == context(**SESSION)


def test_context_in_json_and_csv_output(mixed):
    """JSON lines carry the context keys (null when unknown); CSV has them as columns, the
    cgroup path, unit and container shell-quoted like comm, empty when unknown."""
    out = io.StringIO()
    write_records(search(database_files(db_dir=mixed), Filters(pid=601)), "json", out)
    exit601, exec601 = [json.loads(line) for line in out.getvalue().splitlines()]
    assert (exit601["unit"], exit601["container_id"], exit601["sha256"]) == (DOCKER["unit"], DOCKER_ID, PY_SHA)
    assert exec601["cgroup"] == DOCKER["cgroup"] and exec601["hash_status"] == "ok"
    out = io.StringIO()
    write_records(search(database_files(db_dir=mixed), Filters(pid=500)), "csv", out)
    header, exit500, exec500 = list(csv.reader(io.StringIO(out.getvalue())))
    cols = ["sha256", "hash_status", "cgroup", "cgroup_status", "unit", "container_id"]
    assert set(cols) <= set(header)
    at_ = [header.index(c) for c in cols]
    assert [exec500[i] for i in at_] == [exit500[i] for i in at_] == [""] * 6
    out = io.StringIO()
    write_records([{"event": "exec", "time_ns": 0, "unit": "evil\x1b[2J.service", "cgroup": "/a b"}],
                  "csv", out)
    row = dict(zip(header, list(csv.reader(io.StringIO(out.getvalue())))[1]))
    assert (row["cgroup"], row["unit"]) == ("'/a b'", "$'evil\\x1b[2J.service'")


def test_table_shows_the_container_else_the_unit_at_the_end_of_the_line(mixed, utc_tz):
    """A table line ends with [container ID] (12 characters of a runtime's id) or [UNIT], the
    exit's from its exec; a record without either (unknown, or a file from before them) keeps
    the bootstrap line unchanged, and the header is the same."""
    out = io.StringIO()
    write_records(search(database_files(db_dir=mixed), Filters(since_ns=at(10, 0, 30))), "table", out)
    lines = out.getvalue().splitlines()
    assert lines[0] == TABLE_HEADER
    assert lines[1:] == [
        "11:05:01 EXIT  python3          510     1       [0] (3871000ms)",
        "11:05:00 EXIT  make             603     1       [0] (297000ms) [session-3.scope]",
        "11:00:05 EXIT  python3          601     1       [1] (4000ms) [container 3f4e5d6c7b8a]",
        "11:00:04 EXIT  curl             600     1       [0] (4000ms) [ssh.service]",
        "11:00:03 EXEC  make             603     1       /usr/bin/make make -v [session-3.scope]",
        "11:00:02 FAIL  nope             602     1       /usr/local/bin/nope nope [ENOENT] [session-3.scope]",
        "11:00:01 EXEC  python3          601     1       /usr/bin/python3 python3 -v [container 3f4e5d6c7b8a]",
        "11:00:00 EXEC  curl             600     1       /usr/bin/curl curl -v [ssh.service]",
        "10:00:30 EXEC  python3          510     1       /usr/bin/python3 python3 -v",
    ]


def test_table_quotes_a_unit_and_keeps_a_machine_name_whole(utc_tz):
    """A unit or container name is logged data (a cgroup someone named): shell-quoted with
    control characters escaped; only a 64-hex runtime id is cut to 12."""
    base = {"event": "exec", "time_ns": at(10, 0), "comm": "sh", "pid": 1, "ppid": 0, "filename": "/bin/sh",
            "argv": ["sh"]}
    assert format_event_line({**base, "unit": "a\x1b]0;x\x07.service"}).endswith(
        "/bin/sh sh [$'a\\x1b]0;x\\x07.service']")
    assert format_event_line({**base, "unit": "systemd-nspawn@web.service", "container_id": "web"}).endswith(
        " [container web]")
    assert format_event_line({**base, "container_id": "ab" * 32}).endswith(f" [container {'ab' * 6}]")


def test_decoded_row_from_the_daemon_prints_with_its_context(utc_tz):
    """row_to_record takes a row as the daemon's writer hands it to --print (rows.ROW_FIELDS,
    the context last): its record has the context and its line shows the unit."""
    from auditd_lite.investigate.query import row_to_record
    from auditd_lite.rows import ROW_FIELDS

    row = ctx_exec(at(11, 0), 600, "/usr/bin/curl", CURL_SHA, SSH)
    assert len(row) == len(ROW_FIELDS)
    rec = row_to_record(row)
    assert (rec["sha256"], rec["unit"], rec["container_id"]) == (CURL_SHA, "ssh.service", None)
    assert format_event_line(rec) == (
        "11:00:00 EXEC  curl             600     1       /usr/bin/curl curl -v [ssh.service]")
    exit_rec = row_to_record(ctx_exit(at(11, 0, 4), 600, "curl", at(11, 0)))
    assert exit_rec["unit"] is None and format_event_line(exit_rec).endswith("[0] (4000ms)")


@pytest.mark.parametrize("argv, message", [
    (["--sha256", "c0ffeeZ"], "bad --sha256 'c0ffeeZ': give 1 to 64 hex digits (a prefix of the hash)"),
    (["--sha256", "a" * 65], f"bad --sha256 '{'a' * 65}': give 1 to 64 hex digits (a prefix of the hash)"),
    (["--sha256", ""], "bad --sha256 '': give 1 to 64 hex digits (a prefix of the hash)"),
    (["--sha256", "0x5e"], "bad --sha256 '0x5e': give 1 to 64 hex digits (a prefix of the hash)"),
    (["--container", ""], "bad --container '': give an id or its first characters"),
])
def test_bad_context_filter_is_one_line_exit_2(mixed, argv, message):
    """A --sha256 that is not 1 to 64 hex digits, or an empty --container prefix (it would
    match every container), is exit 2 with one line naming it, and nothing on stdout."""
    assert cli_in_process("query", "--db-dir", mixed, *argv) == (2, "", f"auditd-lite: {message}\n")


def test_query_command_filters_by_context(mixed):
    """The command's --sha256, --unit and --container reach the search: JSON lines of the
    matching records, and exit 1 when only the 0002 file could have matched."""
    status, out, err = cli_in_process("query", "--db-dir", mixed, "--container", DOCKER_ID[:12],
                                      "--format", "json")
    assert status == 0, err
    assert [(r["event"], r["pid"]) for r in map(json.loads, out.splitlines())] == [("exit", 601), ("exec", 601)]
    status, out, _ = cli_in_process("query", "--db-dir", mixed, "--unit", "ssh.service", "--until",
                                    "2026-11-20T10:30Z")
    assert (status, out) == (1, "")
    status, out, _ = cli_in_process("query", "--db-dir", mixed, "--sha256", CURL_SHA[:6], "--pid", "600")
    assert status == 0 and len(out.splitlines()) == 3


def test_open_all_reopens_when_a_rotation_renames_a_listed_file(dbdir, tmp_path_factory, capfd):
    """A file renamed or removed between open_all's listing and its open (a rotation: the live
    file gets a rotated name and a new live file appears; retention: the oldest rotated file
    goes) makes open_all list again, never fail, and warns of nothing (a file gone is not a
    foreign file to skip): with a thread rotating every 50 ms and keeping three rotated files,
    for two seconds, every open_all call returns the files."""
    import threading

    from auditd_lite.dbfiles import open_all

    live = dbdir / "audit.db"
    template = tmp_path_factory.mktemp("template") / "audit.db"
    shutil.copy(live, template)
    stop = threading.Event()
    rotated: list[str] = []

    def rotate():
        i = 0
        while not stop.is_set():
            name = time.strftime("audit-%Y%m%dT%H%M%SZ", time.gmtime(at(12, 0) // SEC + 2 * i))
            name += time.strftime("-%Y%m%dT%H%M%SZ.db", time.gmtime(at(12, 0) // SEC + 2 * i + 1))
            os.replace(live, dbdir / name)
            rotated.append(name)
            time.sleep(0.002)
            shutil.copy(template, dbdir / ".next")  # made whole, then given the live name at once
            os.replace(dbdir / ".next", live)
            if len(rotated) > 3:
                (dbdir / rotated[-4]).unlink()
            time.sleep(0.05)
            i += 1

    t = threading.Thread(target=rotate)
    t.start()
    failures, calls = [], 0
    try:
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            calls += 1
            try:
                for _, conn in open_all(db_dir=dbdir):
                    conn.close()
            except BadInput as e:
                failures.append(str(e))
    finally:
        stop.set()
        t.join()
    assert calls > 50 and len(rotated) > 20 and failures == [], (calls, len(rotated), failures[:3])
    warned = [line for line in capfd.readouterr().err.splitlines() if "warning" in line]
    assert warned == [], warned[:3]
