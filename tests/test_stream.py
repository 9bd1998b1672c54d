"""The live stream (run --stream PATH, daemon/stream.py): each committed record once, in commit
order, as the OCSF line query --format ocsf prints for it; rotated as Tetragon's export file; a
reader that does not read costs lines (counted in the run), never records."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest

from auditd_lite import dbfiles
from auditd_lite.daemon.stream import Stream, backup_name, backups
from auditd_lite.rows import F_PID
from conftest import CLI, REPO, Storm, log_events, run_cli
from faults.test_storm_faults import assert_all_captured, wait_until
from test_storage import all_files, plant_refusal, refuse_pid, rows, writer

# Tetragon's export file as lumberjack rotates it: NAME-<UTC 2006-01-02T15-04-05.000>.EXT
BACKUP = re.compile(r"^stream-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{3}\.jsonl$")


def key_of_line(obj: dict) -> tuple:
    """(event, pid, time_ns) of an OCSF line: what names a record within a boot."""
    return obj["unmapped"]["event"], obj["process"]["pid"], obj["unmapped"]["time_ns"]


def stream_files(path: Path) -> list[Path]:
    """The rotated files oldest first, then PATH: the order the lines were written in."""
    return backups(path) + ([path] if path.exists() else [])


def stream_lines(path: Path) -> list[str]:
    out = []
    for p in stream_files(path):
        data = p.read_bytes()
        assert not data or data.endswith(b"\n"), f"{p.name} ends in half a line"
        out += data.decode().splitlines()
    return out


def db_keys(db_dir: Path, with_aside: bool = False) -> list[tuple]:
    """(event, pid, time_ns) of every record in the directory's files in id order (= commit
    order), the set-aside files' (which every reader reads) only when asked."""
    paths = [p for p in all_files(db_dir) if with_aside or not dbfiles.is_set_aside(p)]
    out = []
    for p in paths:
        con = dbfiles.open_ro(p)
        out += [(r[0], r[1], r[2], r[3]) for r in con.execute("SELECT id, event, pid, time_ns FROM events")]
        con.close()
    return [k[1:] for k in sorted(out)]


def run_counts(db_dir: Path) -> tuple[int, int, int]:
    """(events_written, stream_lines_written, stream_lines_dropped) of the directory's one run,
    its copies in every file summed (dbfiles.merge_run)."""
    runs: dict = {}
    for p in all_files(db_dir):
        con = dbfiles.open_ro(p)
        for row in dbfiles.run_rows(con):
            dbfiles.merge_run(runs, row)
        con.close()
    (run,) = runs.values()
    return run["events_written"], run["stream_lines_written"], run["stream_lines_dropped"]


# --- the stream thread with the real batch writer (no kernel) -------------------------------


def streamed(target: Path, db: Path, **stream_kw):
    """A started Stream to ``target`` and the real BatchWriter on ``db`` handing it each
    committed batch and storing its counts, as the daemon wires them."""
    s = Stream(str(target), **stream_kw)
    s.start()
    return s, writer(db, on_commit=s.offer, stream_counts=s.counts)


def test_every_committed_batch_once_in_commit_order_across_a_set_aside(tmp_path):
    """Batches written through the real BatchWriter with the stream on: batch 5 (the fourth of
    records) is refused by the live file (set aside, written again in a new one) and a later batch by every file
    (dropped, counted lost_user). The stream holds each record the files hold (the set-aside
    one included) exactly once, in id order, and nothing of the batch no file took; the run
    rows count every line written and none dropped."""
    path = tmp_path / "stream.jsonl"
    db = tmp_path / "db"
    s, bw = streamed(path, db, max_size_mb=1, max_files=0)
    for k in range(3):
        bw.write(rows(100, start=k * 100))
    plant_refusal(db / "audit.db", batch_id=5)  # after the run's start and 3 batches
    bw.write(rows(100, start=300))
    bw.write(rows(100, start=400))
    s.close()
    bw.close()
    assert len(list(db.glob("audit-damaged-*.db.damaged"))) == 1
    got = [key_of_line(json.loads(line)) for line in stream_lines(path)]
    want = db_keys(db, with_aside=True)
    assert len(want) == 500 and got == want
    con = sqlite3.connect(db / "audit.db")
    aside = sqlite3.connect(next(db.glob("audit-damaged-*.db.damaged")))
    counts = [c.execute("SELECT stream_lines_written, stream_lines_dropped FROM runs").fetchone()
              for c in (aside, con)]
    # each file's copy counts what was stored while it was live; the stop carries the rest
    assert sum(c[0] for c in counts) == 500 and sum(c[1] for c in counts) == 0


def test_batch_no_file_takes_is_not_streamed(tmp_path, monkeypatch):
    """A batch no file accepts (dropped and counted lost_user) never reaches the stream: it
    shows no record the database does not have."""
    path = tmp_path / "stream.jsonl"
    db = tmp_path / "db"
    s, bw = streamed(path, db)
    bw.write(rows(100))
    refuse_pid(monkeypatch, 1000 + 75)
    bw.write(rows(100, start=100))  # pids 1050..1099: refused twice
    bw.write(rows(100, start=200))
    s.close()
    bw.close()
    assert bw.lost_user == 100
    got = [key_of_line(json.loads(line)) for line in stream_lines(path)]
    assert got == db_keys(db, with_aside=True) and len(got) == 200
    assert not any(pid == 1075 for _, pid, _ in got)


def test_rotation_names_bound_and_sizes(tmp_path):
    """At 1 MiB a file, 4 rotated files kept: every rotated file is named as lumberjack names
    Tetragon's (stream-<UTC ms>.jsonl beside PATH), none is over 1 MiB, no more than 4 are
    kept, and the lines left are the newest ones, whole, in order, PATH holding the last."""
    path = tmp_path / "stream.jsonl"
    db = tmp_path / "db"
    s, bw = streamed(path, db, max_size_mb=1, max_files=4)
    for k in range(10):
        bw.write(rows(1000, start=k * 1000))
    s.close()
    bw.close()
    kept = backups(path)
    assert s.target.rotations > 4 and len(kept) == 4
    assert all(BACKUP.match(p.name) for p in kept)
    assert sorted(os.listdir(tmp_path)) == sorted([p.name for p in kept] + ["stream.jsonl", "db"])
    assert all(p.stat().st_size <= 1024 * 1024 for p in kept + [path])
    got = [key_of_line(json.loads(line)) for line in stream_lines(path)]
    want = db_keys(db)
    assert len(got) < len(want) and got == want[-len(got):]
    assert s.counts() == (10_000, 0)  # rotated away is written, not dropped


def test_backup_name_is_never_one_taken(tmp_path):
    """Two rotations in one millisecond: the second name is the next millisecond's, so a rotated
    file is never replaced, and the names still sort in the order they were made."""
    path = tmp_path / "s.log"
    now = 1_796_220_000_123_456_789
    first = backup_name(path, now)
    assert first.name == "s-2026-12-02T14-00-00.123.log"
    first.write_text("x\n")
    second = backup_name(path, now)
    assert second.name == "s-2026-12-02T14-00-00.124.log"
    second.write_text("y\n")
    (tmp_path / "s-not-a-time.log").write_text("z\n")
    assert backups(path) == [first, second]


def test_fifo_without_reader_drops_and_counts_without_blocking(tmp_path):
    """A FIFO nobody opened: the open for writing would block; the stream opens it without
    waiting (ENXIO), drops every line and counts it, and the batch writer goes on."""
    fifo = tmp_path / "stream.fifo"
    os.mkfifo(fifo)
    db = tmp_path / "db"
    s, bw = streamed(fifo, db)
    for k in range(5):
        bw.write(rows(1000, start=k * 1000))
    assert s.close() == (0, 5000)
    bw.close()
    assert run_counts(db) == (5000, 0, 5000)


@pytest.mark.parametrize("sizes", [[1000] * 5, [3] + [1000] * 5], ids=["large", "small-first"])
def test_fifo_reader_that_stops_reading(tmp_path, sizes):
    """A reader that opened the FIFO and never reads: the pipe fills, the rest is dropped and
    counted; what the reader then finds is whole lines only, exactly as many as were counted
    written, the first records in order. Also with a small batch first (the order a daemon's
    first batches come in), so that the pipe fills part way into a write."""
    fifo = tmp_path / "stream.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    total = sum(sizes)
    try:
        db = tmp_path / "db"
        s, bw = streamed(fifo, db)
        start = 0
        for n in sizes:
            bw.write(rows(n, start=start))
            start += n
        written, dropped = s.close()
        bw.close()
        data = drain(reader)
    finally:
        os.close(reader)
    assert data.endswith(b"\n")
    got = [key_of_line(json.loads(line)) for line in data.decode().splitlines()]
    assert 0 < written == len(got) < total and written + dropped == total
    assert got == db_keys(db)[:written]
    assert run_counts(db) == (total, written, dropped)


def drain(fd: int) -> bytes:
    """All a non-blocking reader can take now."""
    data = b""
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return data
        if not chunk:
            return data
        data += chunk


def padded(big: set):
    """A render: the OCSF event, padded to over 20 KB (far past PIPE_BUF) when its pid is in
    ``big``."""
    from auditd_lite.formats import ocsf

    def render(record, source):
        event = ocsf.event(record, source)
        if record["pid"] in big:
            event["pad"] = "x" * 20_000
        return event
    return render


def with_pid(row: tuple, pid: int) -> tuple:
    return row[:F_PID] + (pid,) + row[F_PID + 1:]


def offer_and_wait(s: Stream, batch: list[tuple]) -> None:
    """Offer a batch and wait until the stream has written or dropped all of it."""
    before = sum(s.counts())
    s.offer(batch, {"id": 1, "boot_id": "b", "revision": "0004"})
    wait_until(lambda: sum(s.counts()) == before + len(batch), 10, "the stream took the batch")


LONG_PID = 999_999
SMALL = 400  # rows(SMALL) fill a pipe


@contextlib.contextmanager
def long_line_begun(tmp_path, after: list[tuple]):
    """A FIFO's pipe filled with short lines (some written, the rest dropped), 8 KiB of it read
    (room for a few pages, not for 20 KB), then a 20 KB line offered with ``after`` behind it:
    (stream, reader fd, the bytes read, how many short lines were written)."""
    fifo = tmp_path / "stream.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    s = Stream(str(fifo), render=padded({LONG_PID}))
    s.start()
    try:
        offer_and_wait(s, rows(SMALL))
        first, _ = s.counts()
        assert 0 < first < SMALL
        data = os.read(reader, 8192)
        offer_and_wait(s, [with_pid(rows(1, start=SMALL)[0], LONG_PID)] + after)
        assert s.counts()[0] == first + 1 and s.target.pending  # begun, not ended
        yield s, reader, data, first
    finally:
        s.close()
        os.close(reader)


def test_line_longer_than_pipe_buf_cut_by_full_pipe_is_ended_before_any_other(tmp_path):
    """A line longer than PIPE_BUF meets a pipe with only a little room: its beginning goes in,
    the rest of its batch is dropped, the next batch too while the pipe stays full; once the
    reader takes data the rest of that line goes first and the lines after it follow. The
    reader finds every line whole (each parses), in order: nothing of another line ever sits
    inside the long one."""
    with long_line_begun(tmp_path, rows(2, start=SMALL + 1)) as (s, reader, data, first):
        offer_and_wait(s, rows(2, start=SMALL + 3))  # pipe still full: dropped whole
        assert s.counts()[0] == first + 1
        data += drain(reader)
        offer_and_wait(s, rows(2, start=SMALL + 5))  # the rest of the long line, then these two
        assert s.counts()[0] == first + 3 and not s.target.pending
        data += drain(reader)
        written, dropped = s.close()
    lines = [json.loads(line) for line in data.decode().splitlines()]
    assert data.endswith(b"\n") and len(lines) == written == first + 3
    assert [o["process"]["pid"] for o in lines[first:]] == [
        LONG_PID, rows(1, start=SMALL + 5)[0][F_PID], rows(1, start=SMALL + 6)[0][F_PID]]
    assert len(lines[first]["pad"]) == 20_000
    assert written + dropped == SMALL + 7


def test_line_cut_at_the_stop_is_counted_dropped(tmp_path):
    """A long line begun in a full pipe whose reader never takes data again: the stop gives it
    a second and then counts it dropped (cut_at_stop), not written; the reader then finds
    exactly as many whole lines as counted written, and the half line after them."""
    with long_line_begun(tmp_path, []) as (s, reader, data, _):
        written, dropped = s.close()
        data += drain(reader)
    whole, _, half = data.rpartition(b"\n")
    assert half and len(whole.split(b"\n")) == written
    assert written + dropped == SMALL + 1


def test_queue_full_drops_whole_batches_and_counts(tmp_path):
    """A stream thread that cannot keep up (here: not started yet) never holds the writer: a
    batch that does not fit the bounded queue is dropped and counted at once; what fits is
    written once the thread runs."""
    path = tmp_path / "stream.jsonl"
    s = Stream(str(path), limit=2500)
    for k in range(5):
        s.offer(rows(1000, start=k * 1000), {"id": 1, "boot_id": "b", "revision": "0004"})
    assert s.counts() == (0, 3000)
    s.start()
    assert s.close() == (2000, 3000)
    assert len(stream_lines(path)) == 2000


def test_stream_and_print_both_on_stdout_refused(tmp_path):
    """--stream - with --print (both standard output), in flags or the config file: one line,
    exit 2, before anything is started or written."""
    p = run_cli("run", "--db-dir", tmp_path / "db", "--print", "--stream", "-")
    assert p.returncode == 2 and b"Traceback" not in p.stderr
    assert p.stderr.decode().count("\n") == 1 and "standard output" in p.stderr.decode()
    conf = tmp_path / "a.toml"
    conf.write_text('stream = "-"\nprint = true\n')
    p = run_cli("run", "--config", conf, "--db-dir", tmp_path / "db")
    assert p.returncode == 2 and "standard output" in p.stderr.decode()
    conf.write_text("stream_max_size_mb = 0\n")
    p = run_cli("run", "--config", conf, "--db-dir", tmp_path / "db")
    assert p.returncode == 2 and "stream_max_size_mb" in p.stderr.decode()
    assert not (tmp_path / "db").exists()


def test_stats_shows_the_stream_counts(tmp_path):
    """stats says, per run, the stream's lines written and dropped (JSON and table); a run
    without a stream has none (null), not zero."""
    fifo = tmp_path / "stream.fifo"
    os.mkfifo(fifo)
    db = tmp_path / "db"
    s, bw = streamed(fifo, db)
    bw.write(rows(300))
    s.close()
    bw.close()
    bw = writer(db)
    bw.write(rows(10, start=300))
    bw.close()
    out = json.loads(run_cli("stats", "--db-dir", db, "--format", "json", check=0).stdout)
    assert [(r["stream_lines_written"], r["stream_lines_dropped"]) for r in out["runs"]] == [
        (0, 300), (None, None)]
    table = run_cli("stats", "--db-dir", db, check=0).stdout.decode()
    assert "stream 0 lines, 300 dropped" in table


# --- the real daemon -------------------------------------------------------------------------

def storm_until(storm: Storm, n: int, timeout: float = 600) -> None:
    wait_until(lambda: storm.count() >= n, timeout, f"{n} children")


@pytest.mark.kernel
def test_storm_every_committed_record_once_across_rotations(daemon_factory, marker, tmp_path):
    """A 20,000-exec storm with the stream rotating at 1 MiB (files kept: all) and the database
    at 2 MiB: the stream files in rotation order hold every record of the database files
    exactly once, in id (commit) order; none dropped; the run counts every line; each line is
    byte for byte what query --format ocsf prints for that record (an exit's program and
    context joined from its exec, in another database file too); every storm child's exec and
    exit is in the database."""
    path = tmp_path / "out" / "stream.jsonl"
    d = daemon_factory("--stream", path, "--stream-max-size-mb", 1, "--stream-max-files", 0,
                       "--rotate-size-mb", 2)
    with Storm(marker) as storm:
        storm_until(storm, 20_000)
    time.sleep(0.3)
    d.stop()
    assert_all_captured(d.db_dir, marker, storm, d.log)
    lines = stream_lines(path)
    assert len(backups(path)) >= 5, "the stream should have rotated several times"
    assert len(all_files(d.db_dir)) >= 3, "the database should have rotated"
    got = [key_of_line(json.loads(line)) for line in lines]
    want = db_keys(d.db_dir)
    assert len(got) == len(set(got)) and got == want
    written, s_written, s_dropped = run_counts(d.db_dir)
    assert (s_written, s_dropped) == (written, 0) == (len(lines), 0)
    (stopped,) = log_events(d.log, "stream_stopped")
    assert (stopped["lines_written"], stopped["lines_dropped"]) == (len(lines), 0)
    # one owner of the mapping: the stream's line of a record is query --format ocsf's
    p = run_cli("query", "--db-dir", d.db_dir, "--format", "ocsf", check=0)
    queried = {json.loads(line)["metadata"]["uid"]: line for line in p.stdout.decode().splitlines()}
    mine = {json.loads(line)["metadata"]["uid"]: line for line in lines}
    assert mine.keys() == queried.keys()
    differ = [uid for uid in mine if mine[uid] != queried[uid]]
    assert not differ, (len(differ), mine[differ[0]], queried[differ[0]])


def test_rotation_never_leaves_more_than_max_files_even_for_a_moment(tmp_path):
    """The stream's file target rotating at 200 bytes, 2 rotated files kept, 2,000 rotations,
    while another thread lists the directory as fast as it can: it never sees a third rotated
    file (the oldest goes before the rename, not after it), and 2 are left."""
    from auditd_lite.daemon.stream import LineTarget

    path = tmp_path / "stream.jsonl"
    target = LineTarget(str(path), 200, 2)
    stop, seen = threading.Event(), []

    def watch():
        while not stop.is_set():
            seen.append(len(backups(path)))

    t = threading.Thread(target=watch)
    t.start()
    try:
        for i in range(2_000):
            target.deliver([b"x" * 150 + b"\n", b"y" * 150 + b"\n"])
    finally:
        stop.set()
        t.join()
        target.close()
    assert len(seen) > 1_000 and max(seen) <= 2 and len(backups(path)) == 2, (len(seen), max(seen))


@pytest.mark.kernel
def test_storm_rotated_files_bounded(daemon_factory, marker, tmp_path):
    """Rotating at 1 MiB with 2 rotated files kept under a storm: never more than 2 rotated
    files (checked while it runs and after), and what is left is the newest records, whole
    lines, once each, in commit order."""
    path = tmp_path / "stream.jsonl"
    d = daemon_factory("--stream", path, "--stream-max-size-mb", 1, "--stream-max-files", 2)
    seen = []
    with Storm(marker) as storm:
        while storm.count() < 8_000:
            seen.append(len(backups(path)))
            time.sleep(0.05)
    time.sleep(0.3)
    d.stop()
    rotations = len(log_events(d.log, "stream_rotated"))
    assert rotations > 2 and max(seen) <= 2 and len(backups(path)) == 2
    got = [key_of_line(json.loads(line)) for line in stream_lines(path)]
    want = db_keys(d.db_dir)
    assert 0 < len(got) < len(want) and got == want[-len(got):]


@pytest.mark.kernel
def test_storm_into_a_fifo_nobody_reads(daemon_factory, marker, tmp_path):
    """The stream to a FIFO no process has open, under a 20,000-exec storm: capture and the
    database lose nothing (every child's exec and exit), nothing is lost at all, and every
    line is counted dropped in the run (and logged, rate-limited)."""
    fifo = tmp_path / "stream.fifo"
    os.mkfifo(fifo)
    d = daemon_factory("--stream", fifo)
    with Storm(marker) as storm:
        storm_until(storm, 20_000)
    time.sleep(0.3)
    d.stop()
    assert_all_captured(d.db_dir, marker, storm, d.log)
    written, s_written, s_dropped = run_counts(d.db_dir)
    assert (s_written, s_dropped) == (0, written)
    assert not log_events(d.log, "events_lost")
    said = log_events(d.log, "stream_lines_dropped")
    assert said and sum(r["count"] for r in said) == written
    assert all(r["reasons"].keys() <= {"no_reader", "stopped"} for r in said)


@pytest.mark.kernel
def test_storm_into_a_fifo_whose_reader_stopped(daemon_factory, marker, tmp_path):
    """A reader that opened the FIFO and stopped reading (its pipe full), under a storm: every
    child is in the database; the reader then finds whole lines only, as many as the run counts
    written, the first committed records in order; the rest is counted dropped."""
    fifo = tmp_path / "stream.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        d = daemon_factory("--stream", fifo)
        with Storm(marker) as storm:
            storm_until(storm, 5_000)
        time.sleep(0.3)
        d.stop()
        data = b""
        while chunk := os.read(reader, 1 << 16):
            data += chunk
    finally:
        os.close(reader)
    assert_all_captured(d.db_dir, marker, storm, d.log)
    assert data.endswith(b"\n")
    got = [key_of_line(json.loads(line)) for line in data.decode().splitlines()]
    written, s_written, s_dropped = run_counts(d.db_dir)
    assert 0 < s_written == len(got) and s_written + s_dropped == written
    assert got == db_keys(d.db_dir)[:len(got)]


@pytest.mark.kernel
def test_stream_to_stdout(tmp_path, marker):
    """--stream - writes the lines to standard output (the daemon's log stays on stderr), read
    as they come (a pipe nobody reads would fill and drop them, counted): a process run while
    it captures appears there, as query --format ocsf prints it."""
    db = tmp_path / "db"
    log = open(tmp_path / "daemon.log", "wb")
    proc = subprocess.Popen([*CLI, "run", "--db-dir", str(db), "--stream", "-"],
                            stdout=subprocess.PIPE, stderr=log, cwd=REPO)
    out: list[bytes] = []
    reader = threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        wait_until(lambda: log_events((tmp_path / "daemon.log").read_text(), "programs_attached"),
                   120, "the programs to be attached")
        subprocess.run([str(marker)], check=True)
        time.sleep(1)
        proc.terminate()
        proc.wait(timeout=60)
        reader.join(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    assert proc.returncode == 0
    lines = b"".join(out).decode().splitlines()
    mine = [line for line in lines if f'"path":"{marker}"' in line]
    p = run_cli("query", "--db-dir", db, "--filename", marker, "--format", "ocsf", check=0)
    assert len(mine) == 2 and sorted(mine) == sorted(p.stdout.decode().splitlines())


def test_path_moved_away_is_begun_again(tmp_path):
    """Someone renames PATH away (a shipper's own rotation, an admin): the stream notices by
    the inode and begins PATH again, so the newest lines are in PATH; the moved file keeps what
    it had, whole, and no line is lost or written twice."""
    path = tmp_path / "stream.jsonl"
    db = tmp_path / "db"
    s, bw = streamed(path, db)
    bw.write(rows(100))
    wait_until(lambda: s.counts()[0] == 100, 30, "100 lines")
    path.rename(tmp_path / "moved.jsonl")
    bw.write(rows(100, start=100))
    s.close()
    bw.close()
    moved = (tmp_path / "moved.jsonl").read_text().splitlines()
    now = path.read_text().splitlines()
    got = [key_of_line(json.loads(line)) for line in moved + now]
    assert len(moved) == 100 and len(now) == 100 and got == db_keys(db)


@pytest.mark.kernel
def test_stream_path_that_cannot_be_written_refused(tmp_path):
    """--stream naming a directory: one line, exit 2, and no run is recorded."""
    (tmp_path / "adir").mkdir()
    p = run_cli("run", "--db-dir", tmp_path / "db", "--stream", tmp_path / "adir", timeout=120)
    err = p.stderr.decode()
    assert p.returncode == 2 and "is a directory" in err and "Traceback" not in err, err[-2000:]
    assert [line for line in err.splitlines() if not line.startswith("{")] == [
        line for line in err.splitlines() if "is a directory" in line]
    assert not (tmp_path / "db" / "audit.db").exists()
