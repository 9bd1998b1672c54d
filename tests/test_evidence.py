"""Chain format 5 (issue #23): every row an investigation reads is under the batch hashes and the
seals: runs (each value as it is written), seen_processes (each row, in order), removed_files.

Real SQLite files written by the real batch writer (and its sealer), real edits with sqlite3;
the attacker of docs/sealing.md also rewrites what the chain's public definition lets them
(``forge``), which only the seals stand against. The real daemon's side is in
tests/faults/test_evidence_daemon.py.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import struct
import time
from pathlib import Path

import pytest

from auditd_lite import batch_evidence, chain, seal
from auditd_lite.dbfiles import database_files
from auditd_lite.investigate import verify
from auditd_lite.storage.batchwriter import BatchWriter
from auditd_lite.storage.rotation import RotationPolicy
from auditd_lite.storage.sealer import Sealer
from conftest import cli_in_process, second_rows
from test_seal import rechain

SEEDS = [{"pid": 1, "ppid": 0, "uid": 0, "comm": "init", "filename": "/sbin/init", "argv": b"/sbin/init",
          "start_ns": 10, "start_tick_ns": 10_000_000, "cwd": "/", "cwd_status": "ok"},
         {"pid": 400, "ppid": 1, "uid": 0, "comm": "sshd", "filename": "/usr/sbin/sshd",
          "argv": b"sshd: /usr/sbin/sshd -D", "start_ns": 20, "start_tick_ns": 10_000_000},
         {"pid": 401, "ppid": 400, "uid": 1000, "comm": "bash", "filename": "/bin/bash", "argv": b"-bash",
          "start_ns": 30, "start_tick_ns": 10_000_000}]


def files_oldest_first(d: Path) -> list[Path]:
    return list(reversed(database_files(db_dir=d)))


def a_run(db: Path, state: Path | None = None, stop: bool = True, **kw) -> BatchWriter:
    """One run as the daemon makes it: its start, the moment capture began, the processes seen
    at start, records with some loss counted, and (``stop``) a clean stop."""
    bw = BatchWriter(db, {"retention": False}, sealer=Sealer(state) if state is not None else None, **kw)
    bw.open()
    bw.set_attached(time.time_ns())
    bw.write_seeds([dict(p) for p in SEEDS])
    bw.write(second_rows(40))
    bw.note_lost_kernel(7)
    bw.write(second_rows(40, 40))
    if stop:
        bw.close()
    return bw


def check(db: Path, key=None, running=None) -> tuple[int, list[str], str]:
    """verify --db-dir (with ``key``): exit status, the problem lines, the notes."""
    report = verify.verify(db_dir=db, verify_keys=[key] if key else [])
    out, err = io.StringIO(), io.StringIO()
    status = verify.render(report, out, err)
    return status, out.getvalue().splitlines(), err.getvalue()


def sql(path: Path, *statements: str) -> None:
    """Edits as whoever became root makes them: the sqlite3 command, on the file itself."""
    os.chmod(path, 0o644)
    import subprocess

    p = subprocess.run(["sqlite3", str(path)], input=";\n".join(statements) + ";\n", text=True,
                       capture_output=True)
    assert p.returncode == 0 and not p.stderr, p.stderr


def writable(path: Path) -> sqlite3.Connection:
    os.chmod(path, 0o644)
    return sqlite3.connect(path)


def forge(db: Path) -> None:
    """The rest of the attack, with nothing but the chain's public definition: the run values of
    the batch that last set each column of a run's row made the value the row has now (a counter
    edited to 0: the batches' additions to it too), every batch's list of seen processes made the
    rows that name it now, every hash recomputed (test_seal.rechain)."""
    for path in files_oldest_first(db):
        con = writable(path)
        runs = {}
        cur = con.execute("SELECT * FROM runs")
        for r in cur:
            runs[r[0]] = dict(zip([d[0] for d in cur.description], r))
        for counter, column in batch_evidence.RUN_ADDS.items():
            for rid, row in runs.items():
                if row.get(counter) == 0 and column in ("lost_kernel", "lost_user"):
                    con.execute(f"UPDATE batches SET {column} = 0 WHERE run_id = ?", (rid,))
        cols = ", ".join(batch_evidence.SEEN_COLUMNS)
        batches = con.execute("SELECT id, run_id, run_values FROM batches ORDER BY id").fetchall()
        last = {}  # (run, column) -> the batch that last set it
        for bid, rid, values in batches:
            for c, _ in batch_evidence.unpack_values(values) if values is not None else ():
                last[rid, c] = bid
        for bid, rid, values in batches:
            if values is not None:
                pairs = [(c, runs[rid][c] if last[rid, c] == bid and c not in batch_evidence.RUN_ADDS else v)
                         for c, v in batch_evidence.unpack_values(values)]
                con.execute("UPDATE batches SET run_values = ? WHERE id = ?", (batch_evidence.pack_values(pairs), bid))
            listed = con.execute(f"SELECT {cols} FROM seen_processes WHERE batch_id = ? ORDER BY id", (bid,)).fetchall()
            con.execute("UPDATE batches SET seen_rows = ? WHERE id = ?", (
                batch_evidence.side_rows((r[0], batch_evidence.side_digest("seen_processes", tuple(r))) for r in listed), bid))
        con.commit()
        con.close()
    rechain(db)


# --- the format ---------------------------------------------------------------------------

def test_format_5_covers_these_columns_which_are_the_tables():
    """The columns of runs, seen_processes and removed_files that format 5 digests, in order, and
    the batches columns its header adds: pinned (a change is a new format), and the models'."""
    from auditd_lite.storage.schema import batches, removed_files, runs, seen_processes

    assert batch_evidence.RUN_COLUMNS == tuple(c.name for c in runs.columns)
    assert batch_evidence.SEEN_COLUMNS == tuple(c.name for c in seen_processes.columns)
    assert batch_evidence.REMOVAL_COLUMNS == tuple(c.name for c in removed_files.columns)
    assert chain.BATCH_HEADER5 == tuple(c.name for c in batches.columns if c.name not in ("prev_hash", "hash"))
    assert batch_evidence.RUN_ADDS == {"events_written": "count", "lost_kernel": "lost_kernel", "lost_user": "lost_user",
                              "stream_lines_written": "stream_written", "stream_lines_dropped": "stream_dropped"}


def test_run_values_and_side_rows_are_the_documented_bytes():
    """run_values: the number of pairs (uint32, little endian), then the names and values
    alternating in serialize()'s encoding; seen_rows and removal_rows: each row's id (int64)
    and SHA-256 of the table's name, NUL and the row serialized. Read back as written."""
    import hashlib

    blob = batch_evidence.pack_values([("stopped_ns", 5), ("host", "h")])
    assert blob == struct.pack("<I", 2) + chain.serialize(("stopped_ns", 5, "host", "h"))
    assert batch_evidence.unpack_values(blob) == [("stopped_ns", 5), ("host", "h")]
    row = (3, 1, 9, 400, 1, 0, "sshd", None, b"x", 20, 10) + (None,) * 8 + (2,)
    digest = batch_evidence.side_digest("seen_processes", row)
    assert digest == hashlib.sha256(b"seen_processes\0" + chain.serialize(row)).digest()
    assert batch_evidence.side_rows([(3, digest)]) == struct.pack("<q", 3) + digest
    assert batch_evidence.parse_side_rows(struct.pack("<q", 3) + digest) == [(3, digest)]
    for bad in (blob[:-1], b"\x05\x00\x00\x00TT"):
        with pytest.raises(ValueError):
            batch_evidence.unpack_values(bad)
    with pytest.raises(ValueError):
        batch_evidence.parse_side_rows(b"\x00" * 39)


def test_every_row_is_in_a_batch_and_the_run_row_is_their_fold(tmp_path):
    """After a run with its attach time, seen processes, loss and a stream: each write to the
    run's row is a batch's run values (start: every column as inserted; attached_ns with the
    settings; stopped_ns)
    or its additions (records, loss, stream lines), whose fold is the row; every seen process is
    listed, by id and digest, by the batch that inserted it; the directory verifies."""
    db = tmp_path / "db"
    counts = [0, 0]
    bw = BatchWriter(db, {"retention": False}, stream_counts=lambda: tuple(counts))
    bw.open()
    bw.set_attached(123)
    bw.write_seeds([dict(p) for p in SEEDS])
    bw.write(second_rows(40))
    counts[:] = [30, 10]
    bw.note_lost_kernel(7)
    bw.write(second_rows(40, 40))
    counts[:] = [75, 15]
    bw.close()
    con = sqlite3.connect(db / "audit.db")
    batches = con.execute("SELECT id, count, lost_kernel, stream_written, stream_dropped, run_values, seen_rows "
                          "FROM batches ORDER BY id").fetchall()
    values = [dict(batch_evidence.unpack_values(b[5])) if b[5] else None for b in batches]
    assert set(values[0]) == set(batch_evidence.RUN_COLUMNS) - {"id"} and values[0]["attached_ns"] is None
    # capture's start: its time, and the settings, which then say the capture mode
    assert values[1] == {"attached_ns": 123, "settings": '{"retention": false}'}
    assert "stopped_ns" in values[-1] and len(values[-1]) == 1
    assert [b[1] for b in batches] == [0, 0, 0, 40, 40, 0]
    assert sum(b[2] for b in batches) == 7 and sum(b[3] for b in batches) == 75 and sum(b[4] for b in batches) == 15
    listed = batch_evidence.parse_side_rows(batches[2][6])
    rows = con.execute(f"SELECT {', '.join(batch_evidence.SEEN_COLUMNS)} FROM seen_processes ORDER BY id").fetchall()
    assert listed == [(r[0], batch_evidence.side_digest("seen_processes", tuple(r))) for r in rows] and len(rows) == 3
    run = con.execute("SELECT attached_ns, lost_kernel, events_written, stream_lines_written, "
                      "stream_lines_dropped FROM runs").fetchone()
    assert run == (123, 7, 80, 75, 15)
    con.close()
    assert check(db) == (0, ["ok: 1 file, 6 batches, 80 records; chain intact from batch 1 to 6"], "")


# --- each edit found, with and without the key ----------------------------------------------

EDITS = {
    # the two edits of issue #23
    "seen edited": ("UPDATE seen_processes SET comm = 'innocent', argv = NULL WHERE pid = 400",
                    ["seen_processes row 2 (pid 400, run 1) differs from what this batch recorded: edited"]),
    "run edited": ("UPDATE runs SET host = 'elsewhere', lost_kernel = 0, stopped_ns = stopped_ns + 3600e9",
                   ["runs row of run 1: host is 'elsewhere', recorded as ",
                    "runs row of run 1: stopped_ns is ",
                    "runs row of run 1: lost_kernel is 0, its batches here add up to 7: edited"]),
    "seen deleted": ("DELETE FROM seen_processes WHERE pid = 401",
                     ["seen_processes row 3 (run 1), which this batch recorded, is missing: deleted"]),
    "seen inserted": ("INSERT INTO seen_processes (run_id, time_ns, pid, ppid, uid, comm, start_ns, "
                      "start_tick_ns, batch_id) VALUES (1, 1, 666, 1, 0, 'miner', 5, 10000000, 3)",
                      ["seen_processes row 4 (pid 666, run 1) is in no batch's record: put in afterwards"]),
    "stop edited": ("UPDATE runs SET stopped_ns = stopped_ns - 3600e9",
                    ["runs row of run 1: stopped_ns is "]),
    "run inserted": ("INSERT INTO runs (id, boot_id, host, kernel, version, settings, started_ns, attached_ns, "
                     "stopped_ns, lost_kernel, lost_user, events_written) SELECT 2, boot_id, host, kernel, "
                     "version, settings, started_ns - 7200e9, attached_ns - 7200e9, started_ns - 1e9, 0, 0, 0 "
                     "FROM runs WHERE id = 1",
                     ["runs row of run 2: no batch recorded it (chain format 5 records each run's row at its "
                      "start in a file): put in afterwards"]),
}


@pytest.fixture(scope="module")
def sealed_run(tmp_path_factory):
    """A directory of one sealed run (epochs of an hour: its start seal over the run's start, its
    stop seal over everything), its state and key."""
    root = tmp_path_factory.mktemp("sealed")
    key = seal.setup(root / "seal", 3600)
    a_run(root / "db", root / "seal")
    return root / "db", root / "seal", key


def copy_of(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("name", list(EDITS))
def test_each_edit_is_found_and_named_with_and_without_the_key(sealed_run, tmp_path, name):
    """Each edit, made with sqlite3 on a sealed directory, fails verify with and without the
    key, the lines naming the table, the row and the run (the stop time shown beside the one
    recorded at the stop)."""
    src, _, key = sealed_run
    db = copy_of(src, tmp_path / "db")
    statement, wanted = EDITS[name]
    sql(db / "audit.db", statement)
    for k in (None, key):
        status, lines, _ = check(db, k)
        assert status == 1, lines
        for want in wanted:
            assert any(want in line for line in lines), (k, want, lines)
        assert not any("NOT YET SEALED" in line for line in lines)


def test_stop_time_edit_shows_the_recorded_one(sealed_run, tmp_path):
    """An edited stop time is shown beside the one the stop recorded: the true end of coverage."""
    src, _, _ = sealed_run
    db = copy_of(src, tmp_path / "db")
    con = sqlite3.connect(db / "audit.db")
    stopped = con.execute("SELECT stopped_ns FROM runs").fetchone()[0]
    con.close()
    sql(db / "audit.db", "UPDATE runs SET stopped_ns = stopped_ns + 3600000000000")
    from auditd_lite.timeparse import format_time

    _, lines, _ = check(db)
    assert any(f"stopped_ns is {format_time(stopped + 3600 * 10**9)}, recorded as {format_time(stopped)} at the "
               "run's stop: edited" in line for line in lines), lines


@pytest.mark.parametrize("name", ["seen edited", "run edited", "seen deleted", "seen inserted", "stop edited"])
def test_forged_edits_pass_the_chain_and_fail_the_seals(sealed_run, tmp_path, name):
    """The same edits with the chain's evidence and hashes recomputed to match: verify without the
    key passes (that is the attack), with the key it fails, naming the first epoch whose seal no
    longer holds and, from the batches since the last seal that holds, the run's row or the
    seen processes the edit lies in."""
    src, _, key = sealed_run
    db = copy_of(src, tmp_path / "db")
    sql(db / "audit.db", EDITS[name][0])
    forge(db)
    assert check(db)[0] == 0, check(db)
    status, lines, _ = check(db, key)
    assert status == 1
    said = " ".join(lines)
    assert "is not what epoch" in said
    # (what the batches hold now: a forged list says 2 or 4 seen processes)
    part = {"seen edited": "3 seen processes of run 1", "seen deleted": "2 seen processes of run 1",
            "seen inserted": "4 seen processes of run 1", "run edited": "the start of run 1 (its runs row)",
            "stop edited": "run 1's stopped_ns"}[name]
    assert part in said, lines


def test_edits_in_the_open_epoch_are_said_not_yet_sealed(tmp_path):
    """While the writer runs (it holds the lock) and its epoch is open: the processes seen at
    start, the attach time and the records are after the start seal. Edits there are found by
    the chain, and with the key each such line says NOT YET SEALED; forged to match instead, they
    pass, and the file's line says those rows are not yet sealed."""
    key = seal.setup(tmp_path / "seal", 3600)
    db = tmp_path / "db"
    bw = a_run(db, tmp_path / "seal", stop=False)
    try:
        live = db / "audit.db"
        sql(live, "UPDATE seen_processes SET comm = 'innocent' WHERE pid = 400",
            "UPDATE runs SET attached_ns = attached_ns - 60e9, stopped_ns = attached_ns",
            "DELETE FROM seen_processes WHERE pid = 401")
        for k in (None, key):
            status, lines, _ = check(db, k)
            assert status == 1
            found = [line for line in lines if "seen_processes row" in line or "runs row" in line]
            assert len(found) == 4, lines  # seen 2, seen 3, attached_ns, stopped_ns
            assert all(line.endswith("; NOT YET SEALED (after the last seal)") == (k is not None)
                       for line in found), lines
    finally:
        bw.close(clean=False)
    db2 = tmp_path / "db2"
    bw = a_run(db2, tmp_path / "seal", stop=False)
    try:
        sql(db2 / "audit.db", "UPDATE seen_processes SET comm = 'innocent' WHERE pid = 400")
        forge(db2)
        status, lines, err = check(db2, key)
        assert status == 0, lines
        line = next(line for line in lines if line.startswith(f"{db2 / 'audit.db'}:"))
        assert "80 records, run 1's settings, attached_ns, 3 seen processes of run 1 in batches 2..5" in line, line
        assert "NOT YET SEALED" in line
    finally:
        bw.close(clean=False)


def test_files_before_format_5_are_named_as_not_covering_them(tmp_path):
    """A file written at revision 0002 (chain format 2, its run row and seen process uncovered),
    upgraded and written on: verify passes, and a note names the rows no hash covers; an edit of
    them is not found (nothing can find it), while the same edit of the new run is."""
    from test_query import OLD_ROWS, second_revision_file

    db = tmp_path / "db"
    second_revision_file(db, OLD_ROWS, seeds=[{"pid": 1, "ppid": 0, "uid": 0, "comm": "init", "start_ns": 1,
                                               "start_tick_ns": 1, "time_ns": 1, "filename": "/sbin/init",
                                               "argv": b"init"}])
    bw = BatchWriter(db, {})
    bw.open()
    bw.write_seeds([dict(SEEDS[0])])
    bw.write(second_rows(10, 100))
    bw.close()
    status, lines, err = check(db)
    assert status == 0, lines
    old = files_oldest_first(db)[0]
    assert f"{old}: written before chain format 5 (schema revision 0007): no hash covers its 1 run row or 1 seen process" in err
    sql(old, "UPDATE runs SET host = 'elsewhere'")
    assert check(db)[0] == 0
    sql(db / "audit.db", "UPDATE runs SET host = 'elsewhere'")
    assert check(db)[0] == 1


# --- retention -------------------------------------------------------------------------------

def test_plan_removes_oldest_first_for_each_reason(tmp_path):
    """retention.plan: beyond keep, the oldest rotated files (a set-aside file among them is not
    counted by keep); past the cap with the live file at its full room, the oldest rotated or
    set-aside files until it fits; below the floor, the oldest until enough is free; never the
    live file; nothing with retention off."""
    from auditd_lite.storage import retention, rotation

    d = tmp_path / "db"
    d.mkdir()
    names = ["audit-20261118T100000Z-20261118T100959Z.db", "audit-damaged-20261118T101500Z.db.damaged",
             "audit-20261118T101000Z-20261118T101959Z.db", "audit-20261118T102000Z-20261118T102959Z.db"]
    for n in names + ["audit.db"]:
        (d / n).write_bytes(b"\0" * 100_000)
    ordered = names  # by the second each stopped being written: 10:09:59, 10:15:00, 10:19:59, 10:29:59
    lim = rotation.Limits(max_bytes=10**9, floor_bytes=0, rotate_bytes=100_000, wal_pages=64)
    keep = retention.plan(d, RotationPolicy(retention=True, keep=1), lim)
    assert [(r.path.name, r.reason) for r in keep] == [(names[0], "keep"), (names[2], "keep")]
    room = lim.live_room(0)
    cap = rotation.Limits(max_bytes=room + 250_000, floor_bytes=0, rotate_bytes=100_000, wal_pages=64)
    got = retention.plan(d, RotationPolicy(retention=True), cap)
    assert [(r.path.name, r.reason) for r in got] == [(ordered[0], "max_size"), (ordered[1], "max_size")]
    free = rotation.free_bytes(d)
    floor = rotation.Limits(max_bytes=10**12, floor_bytes=free + 150_000, rotate_bytes=100_000, wal_pages=64)
    got = retention.plan(d, RotationPolicy(retention=True), floor)
    assert [(r.path.name, r.reason) for r in got] == [(ordered[0], "min_free"), (ordered[1], "min_free")]
    assert retention.plan(d, RotationPolicy(retention=False, keep=1), lim) == []
    everything = rotation.Limits(max_bytes=1, floor_bytes=0, rotate_bytes=1, wal_pages=64)
    assert "audit.db" not in [r.path.name for r in retention.plan(d, RotationPolicy(retention=True), everything)]


def test_defaults_are_journalds(tmp_path):
    """The defaults: 10% of the file system for the directory and 15% kept free, each at most
    4096 MiB; the live file rotates at an eighth of the cap (or sooner if rotate_size_mb says)."""
    from auditd_lite.storage import rotation

    st = os.statvfs(tmp_path)
    fs = st.f_blocks * st.f_frsize
    lim = rotation.limits(tmp_path, RotationPolicy(retention=True), 4096)
    mib = 1024 * 1024
    assert lim.max_bytes == int(min(fs * 0.10, 4096 * mib)) and lim.floor_bytes == int(min(fs * 0.15, 4096 * mib))
    assert lim.rotate_bytes == lim.max_bytes // 8
    assert rotation.limits(tmp_path, RotationPolicy(retention=True, size_mb=1), 4096).rotate_bytes == mib
    off = rotation.limits(tmp_path, RotationPolicy(size_mb=1), 4096)
    assert (off.max_bytes, off.floor_bytes, off.rotate_bytes) == (None, None, mib)


def retained(db: Path, n: int = 8, **policy) -> BatchWriter:
    bw = BatchWriter(db, {"retention": True}, rotation=RotationPolicy(
        size_mb=0.001, retention=True, **{"max_size_mb": 10**6, "min_free_mb": 1, **policy}))
    bw.open()
    for k in range(n):
        bw.write(second_rows(50, k * 50))
    bw.close()
    return bw


def test_each_removal_is_recorded_in_the_chain_with_its_history(tmp_path):
    """keep = 2 over 8 rotations: the 6 oldest rotated files are removed, each recorded in the
    live file of the moment (its name, why, its first and last batch and their hashes, its
    records and their span) by a batch whose hash covers it; a removed file's own records of
    earlier removals go on into the next file, so the directory keeps all six; verify passes."""
    db = tmp_path / "db"
    retained(db, keep=2)
    recorded = {}
    for path in files_oldest_first(db):
        con = sqlite3.connect(path)
        con.row_factory = sqlite3.Row
        for r in con.execute("SELECT * FROM removed_files"):
            recorded[r["name"]] = dict(r)
        con.close()
    assert len(recorded) == 6 and {r["reason"] for r in recorded.values()} == {"keep"}
    spans = sorted((r["first_batch_id"], r["last_batch_id"]) for r in recorded.values())
    assert spans[0][0] == 1 and all(b[0] == a[1] + 1 for a, b in zip(spans, spans[1:]))
    assert sum(r["records"] for r in recorded.values()) + sum(
        sqlite3.connect(p).execute("SELECT count(*) FROM events").fetchone()[0] for p in files_oldest_first(db)) == 400
    status, lines, err = check(db)
    assert status == 0 and "were removed by retention (recorded: " in err, lines


def test_gaps_and_stats_show_what_retention_removed(tmp_path):
    """gaps shows each removed file's span as removed by retention, with why; stats counts the
    files and records removed."""
    db = tmp_path / "db"
    retained(db, keep=2)
    status, out, _ = cli_in_process("gaps", "--db-dir", db, "--format", "json")
    assert status == 0
    removed = [g for g in map(json.loads, out.splitlines()) if g["kind"] == "removed_by_retention"]
    assert len(removed) == 6 and all("(keep: more than keep = 2 rotated files)" in g["detail"] for g in removed)
    assert not [g for g in map(json.loads, out.splitlines()) if g["kind"] == "missing_records"]
    status, out, _ = cli_in_process("gaps", "--db-dir", db)
    assert out.count("removed by retention at") == 6
    s = json.loads(cli_in_process("stats", "--db-dir", db, "--format", "json")[1])
    assert (s["retention"]["removed_files"], s["retention"]["removed_records"]) == (6, 300)


def test_a_file_removed_by_hand_after_retention_is_found(tmp_path):
    """After retention's removals, the oldest remaining file removed by hand, or one from the
    middle: verify fails, saying no record accounts for them; gaps says missing, not retention."""
    for which in (0, 1):
        db = tmp_path / f"db{which}"
        retained(db, keep=3)
        victim = files_oldest_first(db)[which]
        victim.unlink()
        status, lines, _ = check(db)
        assert status == 1 and any("removed by someone else" in line for line in lines), lines
    out = cli_in_process("gaps", "--db-dir", tmp_path / "db1")[1]
    assert "no record says retention removed them" in out


def test_removal_on_a_full_disk_is_recorded_with_the_next_batch(tmp_path):
    """A removal whose record the live file cannot take at once (here: it refuses it) is still
    made, and recorded with the next batch written."""
    db = tmp_path / "db"
    bw = BatchWriter(db, {"retention": True}, rotation=RotationPolicy(size_mb=0.001, retention=True, keep=1,
                                                                      max_size_mb=10**6, min_free_mb=1))
    bw.open()
    for k in range(2):
        bw.write(second_rows(50, k * 50))
    real = bw._insert_batch
    calls = []

    def refuse_empty(rows, evidence=None):
        if not rows and bw._retainer.pending and not calls:
            calls.append(1)
            raise sqlite3.OperationalError("database or disk is full")
        return real(rows, evidence)

    bw._insert_batch = refuse_empty
    bw.write(second_rows(50, 100))  # rotates, and retention removes the oldest
    assert calls and bw._retainer.pending
    bw.write(second_rows(50, 150))
    assert not bw._retainer.pending
    bw.close()
    assert check(db)[0] == 0


def test_retention_off_with_a_limit_is_refused():
    """retention = false keeps everything: keep, max_size_mb or min_free_mb with it is bad input."""
    status, out, err = cli_in_process("run", "--no-retention", "--keep", "3", "--db-dir", "/nonexistent")
    assert status == 2 and "keep removes files, and retention is off" in err and len(err.splitlines()) == 1
