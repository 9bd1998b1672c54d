"""Storage that lasts: migrations, rotation, retention, the hash chain, locks, damage, disk full.

All against real SQLite files written through the real BatchWriter.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from auditd_lite import chain, dbfiles
from auditd_lite.storage import rotation, store
from conftest import EXEC_CONTEXT, EXEC_GATE, EXIT_GATE, NO_CONTEXT, fill_disk, tmpfs
from auditd_lite.errors import CannotCapture
from auditd_lite.storage.rotation import RotationPolicy
from auditd_lite.storage.batchwriter import BatchWriter

T0 = 1_795_000_000 * 10**9


def rows(n: int, start: int = 0, t0: int = T0, argbytes: int = 40, step: int = 1_000_000) -> list[tuple]:
    """n alternating exec/exit rows in rows.ROW_FIELDS order, row i at t0 + i * step ns."""
    out = []
    for i in range(start, start + n):
        t = t0 + i * step
        pid = 1000 + i // 2
        if i % 2 == 0:
            out.append(("exec", t, pid, pid, 1, 0, 0, "sh", t - 5, pid, 0, 4294967295, 4294967295, 1,
                        "/bin/sh", b"sh\0-c\0" + b"x" * argbytes, 3, 0, None,
                        None, None, None, None, None) + EXEC_CONTEXT + EXEC_GATE)
        else:
            out.append(("exit", t, pid, pid, 1, 0, 0, "sh", t - 1_000_005, None, None, None, None,
                        None, None, None, None, None, None, 256, 1, 0, 0, 1_000_000) + NO_CONTEXT + EXIT_GATE)
    return out


def writer(db_dir: Path, **kw) -> BatchWriter:
    bw = BatchWriter(db_dir, {"test": True}, **kw)
    bw.open()
    return bw


def refuse_pid(monkeypatch, pid: int) -> None:
    """From now on a batch holding a record of ``pid`` fails as it is digested, in whatever file
    it is written: a record no file accepts."""
    real = chain.row_digests

    def poison(rows_):
        if any(r[5] == pid for r in rows_):  # pid, after id, run_id, batch_id
            raise ValueError("a record no file accepts")
        return real(rows_)

    monkeypatch.setattr(chain, "row_digests", poison)


def all_files(db_dir: Path) -> list[Path]:
    """Oldest first, in the readers' order: rotated and set-aside files, then the live file."""
    return list(reversed(dbfiles.database_files(db_dir=db_dir)))


def rotated_files(db_dir: Path) -> list[Path]:
    """The rotated files, oldest first, in the readers' order."""
    return [p for p in all_files(db_dir) if dbfiles.rotated_range(p)]


def verify(db_dir: Path) -> list[chain.Problem]:
    problems: list[chain.Problem] = []
    seq = []
    for path in all_files(db_dir):
        con = dbfiles.open_ro(path)
        seq.append((path.name, chain.check_file(con, path.name, problems)))
        con.close()
    chain.check_sequence(seq, problems)
    return problems


def count_events(db_dir: Path) -> int:
    return len(event_ids(db_dir))


def event_ids(db_dir: Path) -> list[int]:
    """Every event id in the directory's files, oldest file first."""
    out = []
    for path in all_files(db_dir):
        con = dbfiles.open_ro(path)
        out += [r[0] for r in con.execute("SELECT id FROM events ORDER BY id")]
        con.close()
    return out


class Rotations:
    """Every file the writer's rotations made, in the order it made them."""

    def __init__(self, bw: BatchWriter):
        self.made: list[Path] = []
        rotate = bw.rotate

        def recorded():
            target = rotate()
            if target is not None:
                self.made.append(target)
            return target

        bw.rotate = recorded


def at_first_revision(conn, n: int, batches: int = 1) -> None:
    """The database on ``conn`` at revision 0001 as the first release wrote it: one stopped run,
    ``batches`` batches without hashes (none existed) sharing n records, ids from 1."""
    store.upgrade(conn, "0001")
    conn.exec_driver_sql(
        "INSERT INTO runs (id, boot_id, host, kernel, version, settings, started_ns, stopped_ns, "
        "lost_kernel, lost_user, events_written) VALUES (1, 'b', 'h', 'k', 'v', '{}', 1, 2, 0, 0, ?)", (n,))
    per = -(-n // batches)
    for b in range(batches):
        first, last = b * per + 1, min((b + 1) * per, n)
        conn.exec_driver_sql(
            "INSERT INTO batches (id, run_id, written_ns, first_event_id, last_event_id, count, "
            "lost_kernel, lost_user) VALUES (?, 1, ?, ?, ?, ?, 0, 0)",
            (b + 1, 5 + b, first, last, last - first + 1))
    conn.exec_driver_sql(f"INSERT INTO events VALUES ({', '.join('?' * 27)})",
                         [(i + 1, 1, i // per + 1) + r[:24] for i, r in enumerate(rows(n))])
    conn.commit()


def second_revision_dir(db: Path, n: int) -> Path:
    """A new directory ``db`` whose live file is at_second_revision's, with n records."""
    db.mkdir()
    engine = store.engine_for(db / "audit.db")
    with engine.connect() as conn:
        at_second_revision(conn, n)
    engine.dispose()
    return db


def at_second_revision(conn, n: int, batches: int = 2) -> None:
    """The database on ``conn`` at revision 0002 as that release wrote it: one stopped run,
    ``batches`` batches in chain format 2 sharing n records, ids from 1, no context columns."""
    store.upgrade(conn, "0002")
    conn.exec_driver_sql(
        "INSERT INTO runs (id, boot_id, host, kernel, version, settings, started_ns, stopped_ns, "
        "lost_kernel, lost_user, events_written) VALUES (1, 'b', 'h', 'k', 'v', '{}', 1, 2, 0, 0, ?)", (n,))
    per, prev = -(-n // batches), chain.GENESIS
    full = [(i + 1, 1, i // per + 1) + r[:24] for i, r in enumerate(rows(n))]
    for b in range(batches):
        first, last = b * per + 1, min((b + 1) * per, n)
        header = (b + 1, 1, 5 + b, first, last, last - first + 1, 0, 0)
        h = chain.batch_hash(prev, header, [chain.row_digest(r, 2) for r in full[first - 1:last]], fmt=2)
        conn.exec_driver_sql(
            "INSERT INTO batches (id, run_id, written_ns, first_event_id, last_event_id, count, "
            "lost_kernel, lost_user, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            header + (prev, h))
        prev = h
    conn.exec_driver_sql(f"INSERT INTO events VALUES ({', '.join('?' * 27)})", full)
    conn.commit()


class TestMigrations:
    def test_upgrade_from_first_revision_keeps_every_row(self, tmp_path):
        """A database at revision 0001 with rows is upgraded to head and every row is still there."""
        path = tmp_path / "audit.db"
        engine = store.engine_for(path)
        with engine.connect() as conn:
            at_first_revision(conn, 2)
            assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == "0001"
            store.upgrade(conn)
            assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == store.HEAD_REVISION
            got = conn.exec_driver_sql("SELECT id, event, argv FROM events ORDER BY id").fetchall()
            assert got == [(1, "exec", rows(1)[0][15]), (2, "exit", None)]
            indexes = {r[0] for r in conn.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE type='index'")}
            assert {"ix_events_comm_time", "ix_events_pid_start"} <= indexes
        engine.dispose()

    def test_writer_on_a_first_release_database_continues_after_it(self, tmp_path):
        """A live file at revision 0001 (3 batches without hashes, 30 records): the writer
        upgrades it before reading where the chain ends, so its records keep ids 1..30 unchanged
        and the new ones follow as 31..130 in batch 5, after the run's start in batch 4, the
        chain's first link (genesis)."""
        db = tmp_path / "db"
        db.mkdir()
        engine = store.engine_for(db / "audit.db")
        with engine.connect() as conn:
            at_first_revision(conn, 30, batches=3)
            old = conn.exec_driver_sql("SELECT * FROM events ORDER BY id").fetchall()
        engine.dispose()
        bw = writer(db)
        bw.write(rows(100, start=30))
        bw.close()
        assert ids_in(db / "audit.db") == list(range(1, 131))
        con = sqlite3.connect(db / "audit.db")
        assert con.execute("SELECT * FROM events WHERE id <= 30 ORDER BY id").fetchall() == [
            tuple(r) + (None,) * 10 for r in old]
        con.close()
        got = batches_of(db / "audit.db")
        assert [b[:2] for b in got[:4]] == [(1, None), (2, None), (3, None), (4, chain.GENESIS)]
        assert [(b[0], b[1]) for b in got[4:]] == [(5, got[3][2]), (6, got[4][2])]  # records, stop

    def test_new_database_is_at_head_with_modes(self, tmp_path):
        """A fresh live database is at the head revision, 0640 in a 0750 directory."""
        old = os.umask(0o027)
        try:
            bw = writer(tmp_path / "db")
            bw.close()
        finally:
            os.umask(old)
        live = tmp_path / "db" / "audit.db"
        assert stat.S_IMODE(live.stat().st_mode) == 0o640
        assert stat.S_IMODE((tmp_path / "db").stat().st_mode) == 0o750
        con = sqlite3.connect(live)
        assert con.execute("SELECT version_num FROM alembic_version").fetchone()[0] == store.HEAD_REVISION

    def test_writer_on_a_second_revision_file_goes_on_in_format_5(self, tmp_path):
        """A live file at revision 0002 (format-2 chain, no context columns) verifies; the
        writer upgrades it in place, its rows keep their values with the context and gate unknown
        (NULL), its new batches continue the chain in format 5, the whole file verifies, and
        an edit of an old row or of a new row's context is found."""
        db = tmp_path / "db"
        db.mkdir()
        engine = store.engine_for(db / "audit.db")
        with engine.connect() as conn:
            at_second_revision(conn, 40)
            old = conn.exec_driver_sql("SELECT * FROM events ORDER BY id").fetchall()
            assert len(old[0]) == 27
        engine.dispose()
        assert verify(db) == []
        bw = writer(db)
        bw.write(rows(20, start=40))
        bw.close()
        con = sqlite3.connect(db / "audit.db")
        assert con.execute("SELECT version_num FROM alembic_version").fetchone()[0] == store.HEAD_REVISION
        assert con.execute("SELECT * FROM events WHERE id <= 40 ORDER BY id").fetchall() == [
            tuple(r) + (None,) * 10 for r in old]
        assert [chain.hash_format(h) for (h,) in con.execute("SELECT hash FROM batches ORDER BY id")] == [
            2, 2, 5, 5, 5]
        assert con.execute("SELECT unit FROM events WHERE id = 41").fetchone()[0] == EXEC_CONTEXT[6]
        assert verify(db) == []
        con.execute("UPDATE events SET pid = pid + 1 WHERE id = 3")
        con.commit()
        assert [p.batch_id for p in verify(db)] == [1]
        con.execute("UPDATE events SET pid = pid - 1 WHERE id = 3")
        con.execute("UPDATE events SET unit = 'other.service' WHERE id = 41")
        con.commit()
        assert [p.batch_id for p in verify(db)] == [4]  # after the run's start (3)
        con.close()


def schema_of(path: Path) -> dict:
    """Every table's columns (name, type, not null, default, primary key), indexes (name,
    unique, columns) and foreign keys, as SQLite itself describes them."""
    con = sqlite3.connect(path)
    try:
        out = {}
        for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"):
            indexes = sorted((i[1], i[2], tuple(c[2] for c in con.execute(f"PRAGMA index_info('{i[1]}')")))
                             for i in con.execute(f"PRAGMA index_list('{name}')"))
            out[name] = (con.execute(f"PRAGMA table_info('{name}')").fetchall(), indexes,
                         sorted(con.execute(f"PRAGMA foreign_key_list('{name}')").fetchall()))
        return out
    finally:
        con.close()


class TestFreshFromModels:
    def test_head_revision_is_alembics(self):
        """store.HEAD_REVISION, which spares the daemon importing Alembic, is the head of
        migrations/ as Alembic reads it."""
        from alembic.config import Config
        from alembic.script import ScriptDirectory
        from auditd_lite.resources import resource_dir

        cfg = Config()
        cfg.set_main_option("script_location", str(resource_dir("migrations")))
        assert ScriptDirectory.from_config(cfg).get_current_head() == store.HEAD_REVISION

    def test_made_from_models_equals_migrated(self, tmp_path):
        """A file made by ensure_head (models, then stamped) has exactly the tables, columns,
        indexes, foreign keys and revision of one taken to head by Alembic's migrations."""
        made, migrated = tmp_path / "made.db", tmp_path / "migrated.db"
        for path, step in ((made, store.ensure_head), (migrated, store.upgrade)):
            engine = store.engine_for(path)
            with engine.connect() as conn:
                step(conn)
            engine.dispose()
        assert schema_of(made) == schema_of(migrated)
        assert "events" in schema_of(made)
        for path in (made, migrated):
            con = sqlite3.connect(path)
            assert con.execute("SELECT version_num FROM alembic_version").fetchall() == [(store.HEAD_REVISION,)]
            con.close()

    def test_writer_imports_alembic_only_to_upgrade(self, tmp_path):
        """In a fresh interpreter, the writer opening a new directory, writing, rotating and
        opening it again never imports alembic; opening a file at revision 0001 does."""
        code = (
            "import sys; from pathlib import Path; from test_storage import writer, rows, at_first_revision\n"
            "from auditd_lite.storage import store\n"
            "db = Path(sys.argv[1]); bw = writer(db); bw.write(rows(10)); bw.rotate(); bw.write(rows(10, start=10))\n"
            "bw.close(); bw = writer(db); bw.close()\n"
            "print('ALEMBIC', 'alembic' in sys.modules)\n"
            "old = Path(sys.argv[2]); old.mkdir(); e = store.engine_for(old / 'audit.db')\n"
            "c = e.connect(); at_first_revision(c, 2); c.close(); e.dispose()\n"
            "bw = writer(old); bw.close(); print('ALEMBIC', 'alembic' in sys.modules)\n")
        here = Path(__file__).parent
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "db"), str(tmp_path / "old")],
                             capture_output=True, text=True, cwd=here, check=True,
                             env={**os.environ, "PYTHONPATH": f"{here}:{here.parent}"}).stdout
        assert [line.split()[1] for line in out.splitlines() if line.startswith("ALEMBIC ")] == [
            "False", "True"]


class TestRotation:
    def test_size_rotation_loses_nothing_and_chains_across_files(self, tmp_path):
        """Rotating every 1 MiB: the files hold ids 1..30000 once each, oldest file first, the
        writer counted 30000 and the runs' counters in the files add up to it; files are 0440,
        read-only-journal, intact, each with its run, and the chain verifies."""
        db = tmp_path / "db"
        bw = writer(db, rotation=RotationPolicy(size_mb=1))
        total = 0
        for k in range(30):
            batch = rows(1000, start=total, argbytes=200)
            bw.write(batch)
            total += len(batch)
        bw.close()
        assert total == bw.events_written == 30000
        assert event_ids(db) == list(range(1, total + 1))
        rotated = rotated_files(db)
        assert len(rotated) >= 3
        counted = 0
        for p in all_files(db):
            con = dbfiles.open_ro(p)
            counted += con.execute("SELECT sum(events_written) FROM runs").fetchone()[0]
            if p in rotated:
                assert stat.S_IMODE(p.stat().st_mode) == 0o440
                assert p.name.startswith("audit-2026") and p.name.endswith("Z.db")
                assert con.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
                assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
                # each file carries the run its records belong to
                assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 1
            con.close()
        assert counted == total
        assert verify(db) == []

    @pytest.mark.parametrize("step", [1_000_000, 1_000], ids=["a-second-a-write", "all-in-one-second"])
    def test_retention_keeps_newest(self, tmp_path, step):
        """--keep 2 deletes, at each rotation, exactly the file rotated two before, also when
        every file's name gives the same second: the two files made last are what is left, and
        with the live file they hold the newest ids, 1..30000 without a gap."""
        db = tmp_path / "db"
        bw = writer(db, rotation=RotationPolicy(size_mb=1, retention=True, keep=2, max_size_mb=10**6,
                                                min_free_mb=1))
        made = Rotations(bw).made
        left = []
        for k in range(30):
            bw.write(rows(1000, start=k * 1000, argbytes=200, step=step))
            left.append((len(made), rotated_files(db)))
        bw.close()
        assert len(made) >= 5
        for n, listing in left:  # after each write: the newest two made so far
            assert listing == made[:n][-2:]
        assert rotated_files(db) == made[-2:]
        ids = event_ids(db)
        assert ids == list(range(ids[0], 30001))

    def test_rotated_names_sort_in_the_order_they_were_made(self, tmp_path):
        """Rotations whose records all fall in one second get distinct names that the readers
        order as they were made, also after the first of them was deleted (as retention does)."""
        db = tmp_path / "db"
        bw = writer(db)
        made = Rotations(bw).made
        for k in range(3):
            bw.write(rows(10, start=k * 10, step=1_000))
            bw.rotate()
        assert len({p.name for p in made}) == 3
        assert rotated_files(db) == made
        made[0].unlink()
        for k in range(3, 5):
            bw.write(rows(10, start=k * 10, step=1_000))
            bw.rotate()
        bw.close()
        assert len({p.name for p in made}) == 5
        assert rotated_files(db) == made[1:]
        assert event_ids(db) == list(range(11, 51))

    def test_restart_reads_the_chain_tail_from_the_newest_rotated_file(self, tmp_path):
        """Two files rotated within one second and an empty live file: a restart continues the
        ids and the chain from the newer of the two, so the whole directory verifies."""
        db = tmp_path / "db"
        bw = writer(db)
        for k in range(2):
            bw.write(rows(10, start=k * 10, step=1_000))
            bw.rotate()
        bw.close()
        bw = writer(db)
        bw.write(rows(10, start=20, step=1_000))
        bw.close()
        assert event_ids(db) == list(range(1, 31))
        assert verify(db) == []

    def test_interval_rotation(self, tmp_path):
        """A time-based policy rotates a non-empty live file once the interval has passed."""
        db = tmp_path / "db"
        bw = writer(db, rotation=RotationPolicy(interval_s=0.2))
        bw.write(rows(10))
        time.sleep(0.25)
        bw.maybe_rotate()
        bw.write(rows(10, start=10))
        bw.close()
        assert len(rotated_files(db)) == 1
        assert count_events(db) == 20
        assert verify(db) == []


class TestChain:
    def _filled(self, tmp_path, rotate=False) -> Path:
        db = tmp_path / "db"
        bw = writer(db, batch_size=100, rotation=RotationPolicy(size_mb=1 if rotate else None))
        for k in range(30 if rotate else 3):
            bw.write(rows(1000 if rotate else 300, start=k * 1000, argbytes=200))
        bw.close()
        return db

    def test_intact(self, tmp_path):
        """A freshly written directory verifies with no problem."""
        assert verify(self._filled(tmp_path)) == []

    def test_edited_row_detected(self, tmp_path):
        """Changing one exit code is reported with the file and batch."""
        db = self._filled(tmp_path)
        con = sqlite3.connect(db / "audit.db")
        con.execute("UPDATE events SET exit_code = 0 WHERE id = 250")
        con.commit()
        problems = verify(db)
        assert [(p.file, p.batch_id) for p in problems] == [("audit.db", 4)]  # after the run's start
        assert "hash mismatch" in problems[0].reason

    def test_deleted_batch_detected(self, tmp_path):
        """Deleting a batch and its rows breaks the chain at the next batch."""
        db = self._filled(tmp_path)
        con = sqlite3.connect(db / "audit.db")
        con.execute("DELETE FROM events WHERE batch_id = 4")
        con.execute("DELETE FROM batches WHERE id = 4")
        con.commit()
        problems = verify(db)
        assert any(p.batch_id == 5 and "chain broken" in p.reason for p in problems)

    def test_removed_middle_file_detected(self, tmp_path):
        """Removing a rotated file from the middle is reported on the file after the gap."""
        db = self._filled(tmp_path, rotate=True)
        rotated = rotated_files(db)
        assert len(rotated) >= 3
        rotated[1].unlink()
        problems = verify(db)
        assert [p.file for p in problems] == [rotated[2].name]
        assert "does not continue the chain" in problems[0].reason

    def test_restart_continues_chain(self, tmp_path):
        """A second run in the same directory links its first batch to the last of the first run."""
        db = tmp_path / "db"
        for k in range(2):
            bw = writer(db)
            bw.write(rows(50, start=k * 50))
            bw.close()
        assert verify(db) == []
        con = sqlite3.connect(db / "audit.db")
        assert con.execute("SELECT count(*) FROM runs WHERE stopped_ns IS NOT NULL").fetchone()[0] == 2


class TestSafety:
    def test_second_writer_refused(self, tmp_path):
        """Only one writer per directory: a second open is refused, naming the directory."""
        db = tmp_path / "db"
        bw = writer(db)
        with pytest.raises(CannotCapture, match="already writing"):
            writer(db)
        bw.close()

    def test_unclean_run_stays_visible(self, tmp_path):
        """A run that did not stop cleanly keeps stopped_ns NULL; the next run records cleanly."""
        db = tmp_path / "db"
        bw = writer(db)
        bw.write(rows(10))
        bw.close(clean=False)
        bw = writer(db)
        bw.close()
        con = sqlite3.connect(db / "audit.db")
        assert con.execute("SELECT id FROM runs WHERE stopped_ns IS NULL").fetchall() == [(1,)]

    @pytest.mark.parametrize("name", ["case #7", "what?now", "case %41"])
    def test_directory_name_with_uri_characters(self, tmp_path, name):
        """A database directory named with '#', '?' or '%': a second writer continues the ids
        and the chain of the first, nothing is set aside, and nothing appears beside the
        directory."""
        parent = tmp_path / "srv"
        db = parent / name
        for k in range(2):
            bw = writer(db)
            bw.write(rows(10, start=k * 10))
            bw.close()
        assert ids_in(db / "audit.db") == list(range(1, 21))
        assert verify(db) == []
        assert not list(db.glob("audit-damaged-*"))
        assert [p.name for p in parent.iterdir()] == [name]

    def test_damaged_live_file_moved_aside(self, tmp_path):
        """A live file that is not a database is moved aside and a new one started."""
        db = tmp_path / "db"
        db.mkdir()
        (db / "audit.db").write_bytes(b"this is not sqlite" * 100)
        bw = writer(db)
        bw.write(rows(4))
        bw.close()
        aside = list(db.glob("audit-damaged-*.db.damaged"))
        assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not sqlite")
        assert count_events(db) == 4

    def test_foreign_database_as_live_moved_aside(self, tmp_path):
        """A SQLite file of another application named audit.db is not written into."""
        db = tmp_path / "db"
        db.mkdir()
        con = sqlite3.connect(db / "audit.db")
        con.execute("CREATE TABLE customers (name TEXT)")
        con.commit()
        con.close()
        writer(db).close()
        assert len(list(db.glob("audit-damaged-*.db.damaged"))) == 1


def plant_refusal(live: Path, batch_id: int) -> None:
    """Make the live file refuse batch ``batch_id`` with a constraint error, as a planted
    conflicting row would, through a trigger written from another connection."""
    con = sqlite3.connect(live)
    con.execute(f"CREATE TRIGGER planted BEFORE INSERT ON batches WHEN NEW.id = {batch_id} "
                "BEGIN SELECT RAISE(ABORT, 'planted conflict'); END")
    con.commit()
    con.close()


def batches_of(path: Path) -> list[tuple]:
    """(id, prev_hash, hash) of every batch in one file."""
    con = sqlite3.connect(path)
    try:
        return con.execute("SELECT id, prev_hash, hash FROM batches ORDER BY id").fetchall()
    finally:
        con.close()


def ids_in(path: Path) -> list[int]:
    con = sqlite3.connect(path)
    try:
        return [r[0] for r in con.execute("SELECT id FROM events ORDER BY id")]
    finally:
        con.close()


class TestWriterNeverDies:
    def _refuse_once(self, how, db, monkeypatch):
        if how == "constraint":
            plant_refusal(db / "audit.db", batch_id=5)  # after the run's start and 3 batches
            return
        real = chain.row_digests
        calls = []

        def once(rows_):
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("something unexpected")
            return real(rows_)

        monkeypatch.setattr(chain, "row_digests", once)

    @pytest.mark.parametrize("how", ["constraint", "unexpected"])
    def test_refused_batch_is_written_in_a_new_file(self, tmp_path, monkeypatch, how):
        """Batch 5 cannot be written (a constraint error in the file, or an unexpected exception):
        the writer sets the live file aside as audit-damaged-*.db.damaged holding batches 1..4
        (the run's start, then records 1..300), begins the run in a new audit.db with batch 5,
        whose prev_hash is batch 4's hash, writes the refused records there as batch 6, and goes
        on; the new file's run row counts the 200 records it holds and is closed cleanly (batch
        8), and nothing is lost."""
        db = tmp_path / "db"
        bw = writer(db)
        for k in range(3):
            bw.write(rows(100, start=k * 100))
        self._refuse_once(how, db, monkeypatch)
        bw.write(rows(100, start=300))
        bw.write(rows(100, start=400))
        bw.close()
        (aside,) = db.glob("audit-damaged-*.db.damaged")
        old, new = batches_of(aside), batches_of(db / "audit.db")
        assert [b[0] for b in old] == [1, 2, 3, 4] and [b[0] for b in new] == [5, 6, 7, 8]
        assert new[0][1] == old[-1][2]
        assert ids_in(aside) == list(range(1, 301)) and ids_in(db / "audit.db") == list(range(301, 501))
        con = sqlite3.connect(db / "audit.db")
        assert con.execute("SELECT id, events_written, stopped_ns IS NOT NULL FROM runs").fetchall() == [
            (1, 200, 1)]
        con.close()
        assert (bw.events_written, bw.lost_user) == (500, 0)

    def test_batch_refused_by_the_new_file_too_is_counted_lost(self, tmp_path, monkeypatch):
        """A batch that fails again in the new file (a record no file accepts): it is dropped
        and counted (lost_user 100, stored with the next batch), only one file is set aside, and
        the batches after it are written."""
        db = tmp_path / "db"
        bw = writer(db)
        bw.write(rows(100))
        refuse_pid(monkeypatch, 1000 + 150)
        bw.write(rows(100, start=200))  # pids 1100..1149: fine
        bw.write(rows(100, start=300))  # pid 1150: refused twice
        bw.write(rows(100, start=400))
        bw.close()
        assert len(list(db.glob("audit-damaged-*.db.damaged"))) == 1
        assert bw.lost_user == 100
        con = sqlite3.connect(db / "audit.db")
        # the new file: the run's start, the next records with the loss, the stop
        assert con.execute("SELECT id, lost_user FROM batches ORDER BY id").fetchall() == [
            (4, 0), (5, 100), (6, 0)]
        con.close()
        assert ids_in(db / "audit.db") == list(range(201, 301))

    def test_run_refused_at_start_goes_to_a_new_file(self, tmp_path):
        """The live file refuses the run row at start (a planted trigger): it is set aside and
        the run, and its batches, begin in a new file that continues the chain."""
        db = tmp_path / "db"
        bw = writer(db)
        bw.write(rows(100))
        bw.close()
        con = sqlite3.connect(db / "audit.db")
        con.execute("CREATE TRIGGER planted BEFORE INSERT ON runs BEGIN SELECT RAISE(ABORT, 'no'); END")
        con.commit()
        con.close()
        bw = writer(db)
        bw.write(rows(100, start=100))
        bw.close()
        (aside,) = db.glob("audit-damaged-*.db.damaged")
        assert batches_of(db / "audit.db")[0][:2] == (4, batches_of(aside)[-1][2])  # after the stop
        assert ids_in(db / "audit.db") == list(range(101, 201))


@pytest.fixture
def tiny_fs(tmp_path):
    """A 3 MiB tmpfs: a disk that really fills."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    with tmpfs(tmp_path / "mnt", "3m") as mnt:
        yield mnt


class TestDiskFull:
    def test_full_disk_holds_then_resumes(self, tiny_fs):
        """With the disk full, records are held (bounded, the excess counted as lost) and written
        when space returns; the database stays intact."""
        db = tiny_fs / "db"
        bw = writer(db, hold_limit=3000)
        bw.write(rows(100))
        filler = fill_disk(tiny_fs / "filler")
        written_before = bw.events_written
        start = 100
        for _ in range(6):
            bw.write(rows(1000, start=start))
            start += 1000
        assert bw.events_written == written_before  # nothing could be written
        assert bw.lost_user == 6000 - 3000
        filler.unlink()
        time.sleep(1.1)  # the retry interval
        bw.write(rows(10, start=start))
        start += 10
        bw.close()
        assert bw.lost_user == 3000
        assert count_events(db) == 100 + 3000 + 10
        con = sqlite3.connect(db / "audit.db")
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert con.execute("SELECT sum(lost_user) FROM batches").fetchone()[0] == 3000
        assert con.execute("SELECT lost_user FROM runs").fetchone()[0] == 3000
        assert verify(db) == []

    @pytest.mark.parametrize("existing", [False, True], ids=["new-directory", "existing-database"])
    def test_full_at_start_holds_then_begins_the_run(self, tiny_fs, existing):
        """A disk already full when the writer starts: it starts anyway, holds records, and
        once space returns writes the run (with its attach time and seeds) and the records."""
        db = tiny_fs / "db"
        if existing:
            bw = writer(db)
            bw.write(rows(50))
            bw.close()
        filler = fill_disk(tiny_fs / "filler")
        bw = writer(db, hold_limit=2500)
        assert bw.run_id is None
        attached = time.time_ns()
        bw.set_attached(attached)
        bw.write_seeds([{"pid": 1, "ppid": 0, "uid": 0, "comm": "init", "filename": "/sbin/init",
                         "argv": b"init", "start_ns": 1, "start_tick_ns": 10_000_000}])
        start = 50 if existing else 0
        for _ in range(3):
            bw.write(rows(1000, start=start))
            start += 1000
        assert bw.events_written == 0
        assert bw.lost_user == 500
        filler.unlink()
        time.sleep(1.1)  # the retry interval
        bw.write(rows(10, start=start))
        bw.close()
        assert bw.run_id is not None
        assert count_events(db) == (50 if existing else 0) + 2500 + 10
        con = sqlite3.connect(db / "audit.db")
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        run = con.execute("SELECT attached_ns, stopped_ns, lost_user, events_written FROM runs "
                          "WHERE id = ?", (bw.run_id,)).fetchone()
        assert run[0] == attached and run[1] is not None and run[2:] == (500, 2510)
        assert con.execute("SELECT count(*) FROM seen_processes WHERE run_id = ?",
                           (bw.run_id,)).fetchone()[0] == 1
        assert os.stat(db / "audit.db").st_mode & 0o777 == 0o640
        assert verify(db) == []

    def test_rotation_into_a_full_disk_holds_records(self, tiny_fs):
        """A rotation whose new live file cannot be made (the disk filled): records are held,
        not the writer killed, and the new file begins once space returns."""
        db = tiny_fs / "db"
        bw = writer(db)
        bw.write(rows(100))
        bw._conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        filler = fill_disk(tiny_fs / "filler")
        assert bw.rotate() is not None
        assert rotated_files(db) and bw.run_id is not None
        bw.write(rows(50, start=100))
        assert bw.events_written == 100
        filler.unlink()
        time.sleep(1.1)  # the retry interval
        bw.write(rows(10, start=150))
        bw.close()
        assert bw.lost_user == 0
        assert count_events(db) == 160
        con = sqlite3.connect(db / "audit.db")
        assert con.execute("SELECT id, stopped_ns IS NOT NULL FROM runs").fetchall() == [(bw.run_id, 1)]
        con.close()
        assert verify(db) == []

    def test_migration_on_full_disk_is_all_or_nothing(self, tiny_fs):
        """An upgrade that runs out of space half-way leaves the file at its old revision with
        nothing of the new one (SQLite would otherwise commit each DDL statement on its own),
        so the upgrade succeeds once space returns."""
        path = tiny_fs / "audit.db"
        engine = store.engine_for(path)
        with engine.connect() as conn:
            at_first_revision(conn, 6000)
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            filler = fill_disk(tiny_fs / "filler")
            # room for the new columns, not for the new indexes
            with open(filler, "r+b") as f:
                f.truncate(filler.stat().st_size - 48 * 1024)
            with pytest.raises(OperationalError):
                store.upgrade(conn)
            conn.rollback()
            assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == "0001"
            columns = {r[1] for r in conn.exec_driver_sql("PRAGMA table_info(batches)")}
            assert "prev_hash" not in columns
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
            filler.unlink()
            store.upgrade(conn)
            assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == store.HEAD_REVISION
            assert conn.exec_driver_sql("SELECT count(*) FROM events").scalar() == 6000
        engine.dispose()

    def test_min_free_removes_oldest_rotated(self, tiny_fs):
        """Below --min-free-mb the oldest rotated files go first, also when
        their names give the same second: what is left is the files made last, some of them,
        and they hold the newest ids without a gap up to the last."""
        db = tiny_fs / "db"
        bw = writer(db, rotation=RotationPolicy(size_mb=0.25, retention=True, min_free_mb=2, max_size_mb=10**6))
        made = Rotations(bw).made
        for k in range(8):
            bw.write(rows(1000, start=k * 1000, argbytes=100, step=1_000))
        bw.close()
        assert rotation.free_mb(db) >= 1.5
        remaining = rotated_files(db)
        assert remaining and len(remaining) < len(made)
        assert remaining == made[len(made) - len(remaining):]
        ids = event_ids(db)
        assert ids == list(range(ids[0], 8001))


class TestDurability:
    def test_synchronous_setting_reaches_sqlite(self, tmp_path):
        """synchronous=FULL (auditd's flush) is what the writer's connection runs with; NORMAL by default."""
        for setting, expected in (("NORMAL", 1), ("FULL", 2)):
            bw = writer(tmp_path / setting, synchronous=setting)
            try:
                got = bw._conn.exec_driver_sql("PRAGMA synchronous").scalar()
                mode = bw._conn.exec_driver_sql("PRAGMA journal_mode").scalar()
                bw._conn.rollback()
            finally:
                bw.close()
            assert (got, mode) == (expected, "wal")


class TestDiskFullBookkeeping:
    def test_run_updates_on_full_disk_do_not_wedge_the_writer(self, tiny_fs):
        """A run-row update that hits a full disk leaves no transaction open: batches go on
        once space returns."""
        db = tiny_fs / "db"
        bw = writer(db)
        filler = fill_disk(tiny_fs / "filler")
        bw.set_attached(time.time_ns())
        bw.write_seeds([{"pid": 1, "ppid": 0, "uid": 0, "comm": "init", "filename": "/sbin/init",
                         "argv": b"init", "start_ns": 1, "start_tick_ns": 10_000_000}] * 2000)
        filler.unlink()
        time.sleep(1.1)
        bw.write(rows(10))
        bw.close()
        assert count_events(db) == 10
        assert verify(db) == []


class TestRotationWithReaders:
    def test_reader_holding_the_live_file_postpones_rotation(self, tmp_path):
        """A reader in the middle of a read makes rotation wait, never kills the writer."""
        db = tmp_path / "db"
        bw = writer(db, rotation=RotationPolicy(size_mb=0.3))
        bw.write(rows(100))
        assert rotated_files(db) == []
        reader = sqlite3.connect(db / "audit.db")
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM events").fetchone()
        bw.write(rows(2000, start=100, argbytes=200))
        assert rotated_files(db) == []  # postponed while the read is open
        reader.rollback()
        reader.close()
        time.sleep(1.1)
        bw.write(rows(10, start=2100))
        bw.close()
        assert len(rotated_files(db)) >= 1
        assert count_events(db) == 2110
        assert verify(db) == []
