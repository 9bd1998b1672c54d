"""Loss-aware answers: coverage gaps found in real database files and reported by query, tree, export.

The files are made by hand here (the real schema from the models, hashes from
auditd_lite.chain, run counters kept as the writer keeps them) because gaps
depend on the exact times of runs and batches, which the writer takes from
the clock.
"""

from __future__ import annotations

import calendar
import fcntl
import io
import json
import os
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from auditd_lite import chain
from auditd_lite.investigate import gaps
from auditd_lite.dbfiles import open_all
from auditd_lite.storage.schema import metadata

from conftest import EXEC_CONTEXT, EXEC_GATE, EXIT_GATE, NO_CONTEXT, cli_in_process

SEC = 10**9
MIN = 60 * SEC


def at(hour, minute, second=0):
    """UTC ns on 2026-11-20."""
    return calendar.timegm((2026, 11, 20, hour, minute, second)) * SEC


def iso(ns):
    from auditd_lite.timeparse import format_time
    return format_time(ns)


def exec_row(t, pid, comm="sh", ppid=1, start=None, filename="/bin/sh", argv=b"sh"):
    start = start if start is not None else t - 1000
    return ("exec", t, pid, pid, ppid, 0, 0, comm, start, pid, 0, 0, 1, 1, filename, argv,
            argv.count(b"\0") + 1, 0, None, None, None, None, None, None) + EXEC_CONTEXT + EXEC_GATE


def exit_row(t, pid, comm="sh", ppid=1, start=None, code=0, sig=0, dur=SEC):
    start = start if start is not None else t - dur
    return ("exit", t, pid, pid, ppid, 0, 0, comm, start, None, None, None, None, None, None, None,
            None, None, None, (code << 8) | sig, code, sig, 0, dur) + NO_CONTEXT + EXIT_GATE


class History:
    """Writes chain-correct database files with every time chosen by the test."""

    def __init__(self, db_dir: Path):
        self.dir = db_dir
        db_dir.mkdir(exist_ok=True)
        self.prev = chain.GENESIS
        self.next_event = 1
        self.next_batch = 1
        self.conn = None
        self.path = None

    def file(self, name: str) -> "History":
        self.close()
        self.path = self.dir / name
        engine = create_engine(f"sqlite:///{self.path}")
        metadata.create_all(engine)
        engine.dispose()
        self.conn = sqlite3.connect(self.path)
        return self

    def run(self, rid, started, attached=None, stopped=None, boot="boot-a", settings=None) -> "History":
        self.conn.execute(
            "INSERT INTO runs (id, boot_id, host, kernel, version, settings, started_ns, attached_ns, "
            "stopped_ns, lost_kernel, lost_user, events_written) VALUES (?,?,?,?,?,?,?,?,?,0,0,0)",
            (rid, boot, "host1", "6.18.0", "0.1.0", json.dumps(settings or {"keep": 0}), started,
             attached if attached is not None else started + SEC, stopped))
        return self

    def batch(self, rid, written, rows=(), lost_k=0, lost_u=0) -> int:
        bid = self.next_batch
        first = self.next_event if rows else None
        last = self.next_event + len(rows) - 1 if rows else None
        full = [(self.next_event + i, rid, bid) + tuple(r) for i, r in enumerate(rows)]
        header = (bid, rid, written, first, last, len(rows), lost_k, lost_u)
        digest = chain.batch_hash(self.prev, header, chain.row_digests(full))
        self.conn.execute("INSERT INTO batches (id, run_id, written_ns, first_event_id, last_event_id, "
                          "count, lost_kernel, lost_user, prev_hash, hash) VALUES (?,?,?,?,?,?,?,?,?,?)",
                          header + (self.prev, digest))
        self.conn.executemany(f"INSERT INTO events ({', '.join(chain.EVENT_COLUMNS)}) VALUES "
                              f"({', '.join('?' * len(chain.EVENT_COLUMNS))})", full)
        self.conn.execute("UPDATE runs SET events_written = events_written + ?, lost_kernel = lost_kernel + ?, "
                          "lost_user = lost_user + ? WHERE id = ?", (len(rows), lost_k, lost_u, rid))
        self.conn.commit()
        self.prev = digest
        self.next_batch += 1
        self.next_event += len(rows)
        return bid

    def stop(self, rid, stopped) -> None:
        self.conn.execute("UPDATE runs SET stopped_ns = ? WHERE id = ?", (stopped, rid))
        self.conn.commit()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.commit()
            self.conn.close()
            self.conn = None


ROTATED = "audit-20261120T100000Z-20261120T104500Z.db"


@pytest.fixture
def hist(tmp_path) -> Path:
    """run 1 (10:00-10:30, clean) in a rotated file; run 2 (10:40-, killed after 10:45, with loss)
    spanning into the live file; run 3 (11:00-11:30, clean) in the live file."""
    d = tmp_path / "db"
    h = History(d).file(ROTATED)
    h.run(1, at(10, 0), attached=at(10, 0, 2), stopped=at(10, 30))
    h.batch(1, at(10, 5), [exec_row(at(10, 4), 100), exit_row(at(10, 4, 30), 100, code=1)])
    h.batch(1, at(10, 29), [exec_row(at(10, 28), 101)])
    h.run(2, at(10, 40), attached=at(10, 40, 2))
    h.batch(2, at(10, 41), [exec_row(at(10, 41), 200)])
    h.batch(2, at(10, 42), [exec_row(at(10, 42), 201)], lost_k=40)
    h.batch(2, at(10, 42, 30), [exec_row(at(10, 42, 20), 202)], lost_k=2, lost_u=3)  # merged with the above
    h.file("audit.db")
    h.run(2, at(10, 40), attached=at(10, 40, 2))  # the writer copies the run row into the new file
    h.batch(2, at(10, 45), [exec_row(at(10, 44), 203), exit_row(at(10, 44, 50), 203)])
    h.run(3, at(11, 0), attached=at(11, 0, 2), stopped=at(11, 30), boot="boot-b")
    h.batch(3, at(11, 10), [exec_row(at(11, 9), 300), exit_row(at(11, 9, 30), 300, code=1)])
    h.batch(3, at(11, 29), [exec_row(at(11, 28), 301, comm="cat")])
    h.close()
    return d


def collect(d: Path) -> list[gaps.Gap]:
    conns = open_all(db_dir=d)
    try:
        return gaps.collect(conns, d, now_ns=at(12, 0))
    finally:
        for _, c in conns:
            c.close()


def summary(found):
    return [(g.kind, g.start_ns, g.end_ns, g.lost_kernel, g.lost_user, g.runs) for g in found]


def test_history_gaps_are_found_with_their_times_and_counts(hist):
    """Not running between runs, an unclean stop, merged loss and the time since the last stop."""
    assert summary(collect(hist)) == [
        ("not_running", at(10, 30), at(10, 40, 2), 0, 0, [1, 2]),
        ("lost", at(10, 41), at(10, 42, 30), 42, 3, [2]),
        ("unclean_stop", at(10, 45), at(11, 0, 2), 0, 0, [2, 3]),
        ("not_running", at(11, 30), None, 0, 0, [3]),
    ]


def test_gap_messages_name_times_counts_and_runs(hist):
    """Each gap reads as one line with ISO times, the cause and the counts."""
    lines = [g.message() for g in collect(hist)]
    assert lines[0] == ("coverage gap 2026-11-20T10:30:00.000000Z .. 2026-11-20T10:40:02.000000Z: "
                        "no daemon running: run 1 stopped, nothing recorded until run 2 started capturing")
    assert lines[1] == ("coverage gap 2026-11-20T10:41:00.000000Z .. 2026-11-20T10:42:30.000000Z: "
                        "45 records lost (kernel 42, user 3) in run 2")
    assert lines[2] == ("coverage gap 2026-11-20T10:45:00.000000Z .. 2026-11-20T11:00:02.000000Z: "
                        "run 2 stopped uncleanly after its last batch (no stop recorded): "
                        "nothing recorded until run 3 started capturing")
    assert lines[3] == ("coverage gap 2026-11-20T11:30:00.000000Z .. now: no daemon running: "
                        "run 3 stopped, nothing recorded until now")


def test_a_running_daemon_is_no_gap(hist):
    """With the directory lock held (a daemon running), the last run without a stop covers until now."""
    conn = sqlite3.connect(hist / "audit.db")
    conn.execute("UPDATE runs SET stopped_ns = NULL WHERE id = 3")
    conn.commit()
    conn.close()
    assert [g.kind for g in collect(hist)][-1] == "unclean_stop"  # no lock: it died
    fd = os.open(hist / "audit.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert [g.kind for g in collect(hist)] == ["not_running", "lost", "unclean_stop"]
    finally:
        os.close(fd)


def test_window_selects_the_gaps_it_overlaps(hist):
    """Only gaps touching [since, until) are kept; a window before the first run gets before_first."""
    found = collect(hist)
    assert [g.kind for g in gaps.in_window(found, at(10, 0), at(10, 35))] == ["not_running"]
    assert [g.kind for g in gaps.in_window(found, at(10, 42, 10), at(10, 43))] == ["lost"]
    assert gaps.in_window(found, at(11, 5), at(11, 25)) == []
    early = gaps.in_window(found, at(9, 0), at(10, 10), first_covered_ns=at(10, 0, 2))
    assert summary(early) == [("before_first", at(9, 0), at(10, 0, 2), 0, 0, [])]


def test_missing_batches_between_files_are_a_gap(tmp_path):
    """Batch ids that jump between two files (a file removed) make a missing_records gap."""
    d = tmp_path / "db"
    h = History(d).file("audit-20261120T100000Z-20261120T100500Z.db")
    h.run(1, at(10, 0), stopped=None)
    h.batch(1, at(10, 1), [exec_row(at(10, 1), 1)])
    h.file("audit-20261120T100500Z-20261120T101000Z.db").run(1, at(10, 0))
    h.batch(1, at(10, 6), [exec_row(at(10, 6), 2)])
    h.file("audit.db").run(1, at(10, 0))
    h.batch(1, at(10, 11), [exec_row(at(10, 11), 3)])
    h.stop(1, at(10, 12))
    h.close()
    (d / "audit-20261120T100500Z-20261120T101000Z.db").unlink()
    found = [g for g in collect(d) if g.kind == "missing_records"]
    assert summary(found) == [("missing_records", at(10, 1), at(10, 11), 0, 0, [])]
    assert "batches 2..2 are missing between audit-20261120T100000Z-20261120T100500Z.db and audit.db" \
        in found[0].detail


def test_exits_only_run_is_partial_coverage(tmp_path):
    """A run with min_duration_ms recorded no successful execs: its whole span is reported."""
    d = tmp_path / "db"
    h = History(d).file("audit.db")
    h.run(1, at(10, 0), attached=at(10, 0, 1), stopped=at(10, 30), settings={"min_duration_ms": 500})
    h.batch(1, at(10, 5), [exit_row(at(10, 5), 5, dur=2 * SEC)])
    h.close()
    found = [g for g in collect(d) if g.kind == "exits_only"]
    assert summary(found) == [("exits_only", at(10, 0, 1), at(10, 30), 0, 0, [1])]
    assert "only exits of processes that lived at least 500 ms" in found[0].detail


def test_query_warns_on_stderr_for_gaps_in_its_window(hist):
    """query prints one warning line per gap overlapping --since/--until, results stay on stdout."""
    status, out, err = cli_in_process("query", "--db-dir", hist, "--since", iso(at(10, 20)),
                               "--until", iso(at(10, 50)), "--format", "json")
    assert status == 0
    assert [json.loads(line)["pid"] for line in out.splitlines()] == [203, 203, 202, 201, 200, 101]
    assert err.splitlines() == [
        "auditd-lite: warning: coverage gap 2026-11-20T10:30:00.000000Z .. 2026-11-20T10:40:02.000000Z: "
        "no daemon running: run 1 stopped, nothing recorded until run 2 started capturing",
        "auditd-lite: warning: coverage gap 2026-11-20T10:41:00.000000Z .. 2026-11-20T10:42:30.000000Z: "
        "45 records lost (kernel 42, user 3) in run 2",
        "auditd-lite: warning: coverage gap 2026-11-20T10:45:00.000000Z .. 2026-11-20T11:00:02.000000Z: "
        "run 2 stopped uncleanly after its last batch (no stop recorded): nothing recorded until run 3 "
        "started capturing",
    ]


def test_nothing_found_still_warns(hist):
    """An empty answer over a gap says so: exit 1, and the gap on stderr."""
    status, out, err = cli_in_process("query", "--db-dir", hist, "--comm", "nosuch", "--since", iso(at(10, 50)),
                               "--until", iso(at(10, 55)))
    assert (status, out) == (1, "")
    assert err.splitlines()[0].startswith("auditd-lite: warning: coverage gap 2026-11-20T10:45:00.000000Z")
    assert err.splitlines()[-1] == "auditd-lite: no matching records"


def test_limit_narrows_the_window_to_what_was_answered(hist):
    """With --limit reached, only gaps newer than the oldest record returned are relevant."""
    status, out, err = cli_in_process("query", "--db-dir", hist, "--until", iso(at(11, 20)), "--limit", "2")
    assert status == 0 and len(out.splitlines()) == 3  # header and two records (11:09:30, 11:09)
    assert err == ""
    status, out, err = cli_in_process("query", "--db-dir", hist, "--until", iso(at(11, 20)), "--limit", "4")
    assert [line.split(": ", 2)[1] for line in err.splitlines()] == ["warning"]  # 10:44:50 reached
    assert "run 2 stopped uncleanly" in err


def test_query_since_before_first_run_warns(hist):
    """Asking about a time before anything was recorded says nothing was recorded then."""
    status, _, err = cli_in_process("query", "--db-dir", hist, "--since", iso(at(9, 0)), "--until", iso(at(10, 10)))
    assert status == 0
    assert err.splitlines()[0] == (
        "auditd-lite: warning: coverage gap 2026-11-20T09:00:00.000000Z .. 2026-11-20T10:00:02.000000Z: "
        "nothing recorded before this (no daemon running, or older files removed)")


def test_export_manifest_carries_the_gaps_and_query_on_it_reports_them(hist, tmp_path):
    """export puts the window's gaps in its manifest; query --db on the export warns from it."""
    out = tmp_path / "case.db"
    status, text, err = cli_in_process("export", "--db-dir", hist, "--since", iso(at(10, 20)), "--until",
                                iso(at(10, 50)), "-o", out)
    assert status == 0, err
    assert err.count("warning: coverage gap") == 3
    conn = sqlite3.connect(out)
    manifest_gaps = json.loads(conn.execute("SELECT value FROM manifest WHERE key = 'gaps'").fetchone()[0])
    conn.close()
    assert [(g["kind"], g["start_ns"], g["end_ns"], g["lost_kernel"], g["lost_user"]) for g in manifest_gaps] == [
        ("not_running", at(10, 30), at(10, 40, 2), 0, 0), ("lost", at(10, 41), at(10, 42, 30), 42, 3),
        ("unclean_stop", at(10, 45), at(11, 0, 2), 0, 0)]
    status, _, err = cli_in_process("query", "--db", out, "--pid", "201")
    assert status == 0
    assert [line.split(": ", 2)[2][:40] for line in err.splitlines()] == [
        "coverage gap 2026-11-20T10:30:00.000000Z", "coverage gap 2026-11-20T10:41:00.000000Z",
        "coverage gap 2026-11-20T10:45:00.000000Z"]


def test_warnings_are_capped_with_a_count_of_the_rest(tmp_path):
    """More than ten gaps print ten lines and one line counting the others and their losses."""
    d = tmp_path / "db"
    h = History(d).file("audit.db")
    h.run(1, at(10, 0), stopped=at(11, 0))
    for i in range(14):  # a lossy batch, then a clean one two minutes later: separate gaps
        h.batch(1, at(10, 2 + 4 * i), [exec_row(at(10, 2 + 4 * i), 10 + i)], lost_k=i + 1)
        h.batch(1, at(10, 4 + 4 * i), [exec_row(at(10, 4 + 4 * i), 50 + i)])
    h.close()
    err = io.StringIO()
    found = [g for g in collect(d) if g.kind == "lost"]
    assert [(g.start_ns, g.end_ns) for g in found[:2]] == [(at(10, 0, 1), at(10, 2)), (at(10, 4), at(10, 6))]
    assert len(found) == 14
    gaps.warn(found, err)
    lines = err.getvalue().splitlines()
    assert len(lines) == 11
    assert lines[-1] == "auditd-lite: warning: ... and 4 more coverage gaps (50 more records lost)"
