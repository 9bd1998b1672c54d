"""`auditd-lite export` and `verify`: sealed copies, and tamper evidence across real database files.

Every database here is written by the real BatchWriter (hash chain, rotation,
run records) and every check goes through the command line entry point.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from auditd_lite.storage import store
from auditd_lite.dbfiles import connect_ro, database_files, set_aside_note
from auditd_lite.investigate.export import Progress
from auditd_lite.timeparse import format_time
from auditd_lite.storage.rotation import RotationPolicy
from auditd_lite.storage.batchwriter import BatchWriter

from conftest import SEC, T0, cli_in_process, second_rows as rows
from test_storage import at_first_revision


def write(db: Path, n=600, per_write=100, runs=2, rotate=True, settings=None, start=0) -> Path:
    """n records in batches of per_write (a rotation after each when rotate), over ``runs`` runs."""
    done = start
    for r in range(runs):
        bw = BatchWriter(db, settings or {"keep": 0},
                         rotation=RotationPolicy(size_mb=0.001) if rotate else RotationPolicy())
        bw.open()
        share = n // runs
        for k in range(0, share, per_write):
            bw.write(rows(per_write, start=done + k))
        done += share
        bw.close(clean=True)
    return db


def t(i: int) -> str:
    return format_time(T0 + i * SEC)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def rotated(tmp_path_factory) -> Path:
    """600 records in 6 batches of 100, each in its own rotated file with the batch that began
    its run there (chain format 5): batches 1..16, the records in 2, 4, 6 (run 1, stopped by 8)
    and 10, 12, 14 (run 2, begun by 9 in the file run 1 stopped in, stopped by 16); a live file
    with no records."""
    d = write(tmp_path_factory.mktemp("exp") / "db")
    assert len(list(d.glob("audit-*.db"))) == 6
    return d


@pytest.fixture
def case(rotated, tmp_path) -> Path:
    """An export of records 150..449 (ids 151..450)."""
    out = tmp_path / "case.db"
    status, text, err = cli_in_process("export", "--db-dir", rotated, "--since", t(150), "--until", t(450), "-o", out)
    assert status == 0, err
    return out


def manifest(path: Path) -> dict:
    conn = connect_ro(path)
    try:
        return {k: json.loads(v) for k, v in conn.execute("SELECT key, value FROM manifest")}
    finally:
        conn.close()


def writable_copy(src: Path, dst: Path) -> Path:
    shutil.copy(src, dst)
    shutil.copy(str(src) + ".sha256", str(dst) + ".sha256")
    dst.chmod(0o644)
    return dst


# --- export ----------------------------------------------------------------

def test_export_holds_the_window_with_batches_omitted_digests_and_manifest(rotated, case):
    """Records 151..450, their batches 4, 6, 10 and 12 whole in the chain (the batches between
    them, which hold no record, as chain links), the 100 records of batches 4 and 12 outside the
    window as digests, and a manifest that says so."""
    conn = sqlite3.connect(case)
    assert conn.execute("SELECT count(*), min(id), max(id) FROM events").fetchone() == (300, 151, 450)
    assert [r[0] for r in conn.execute("SELECT id FROM batches ORDER BY id")] == [4, 6, 10, 12]
    assert conn.execute("SELECT count(*), min(event_id), max(event_id) FROM omitted_rows").fetchone() == (100, 101, 500)
    assert [r[0] for r in conn.execute("SELECT id FROM chain_links ORDER BY id")] == [5, 7, 8, 9, 11]
    assert [r[0] for r in conn.execute("SELECT id FROM runs")] == [1, 2]
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()
    m = manifest(case)
    assert m["format"] == "auditd-lite-export/2"
    assert m["counts"] == {"exec": 150, "exec_failed": 0, "exit": 150, "total": 300}
    assert m["time_range"]["since"] == t(150) and m["time_range"]["until"] == t(450)
    assert (m["time_range"]["first_record"], m["time_range"]["last_record"]) == (t(150), t(449))
    assert m["tables"] == {"events": 300, "batches": 4, "omitted_rows": 100, "chain_links": 5, "runs": 2,
                           "seen_processes": 0}
    assert (m["chain"]["first_batch"], m["chain"]["last_batch"]) == (4, 12)
    assert sorted(m["table_sha256"]) == ["batches", "chain_links", "omitted_rows", "runs", "seen_processes"]
    sources = {s["name"]: s for s in m["sources"]}
    assert len(sources) == 5  # the four rotated files whose names overlap the window, the live one
    assert (sources["audit.db"]["live"], sources["audit.db"]["sha256"]) == (True, None)
    for name, s in sources.items():
        if name != "audit.db":
            assert s["sha256"] == sha(rotated / name) and s["size"] == (rotated / name).stat().st_size
    assert sorted(s["events_exported"] for s in sources.values()) == [0, 50, 50, 100, 100]
    assert {"host", "kernel", "tool_version", "exported_at", "content_sha256", "gaps"} <= m.keys()


def test_sidecar_is_sha256sum_format(case):
    """OUT.sha256 holds the file's digest and name as sha256sum writes them; the export is read-only."""
    assert Path(str(case) + ".sha256").read_text() == f"{sha(case)}  case.db\n"
    assert case.stat().st_mode & 0o222 == 0
    assert [p.name for p in case.parent.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_verify_export_ok(case):
    """An untouched export verifies: exit 0 and one summary line."""
    assert cli_in_process("verify", case) == (0, "ok: 1 file, 4 batches, 300 records; 1 export sealed and intact\n", "")


def test_query_on_export_matches_query_on_the_directory(rotated, case):
    """query --db OUT gives exactly what query over the directory gives for the window."""
    a = cli_in_process("query", "--db", case, "--format", "json")[1]
    b = cli_in_process("query", "--db-dir", rotated, "--since", t(150), "--until", t(450), "--format", "json")[1]
    assert a == b and len(a.splitlines()) == 300


def test_filtered_export_carries_chain_links_and_verifies(rotated, tmp_path):
    """--comm sh keeps a third of the records; the chain between their batches is still whole."""
    out = tmp_path / "sh.db"
    status, text, err = cli_in_process("export", "--db-dir", rotated, "--comm", "sh", "--event", "exit", "-o", out)
    assert status == 0, err
    want = sum(1 for i in range(600) if i % 2 and (1000 + i // 2) % 3 == 0)
    assert text.startswith(f"exported {want} records (0 exec, 0 exec_failed, {want} exit) in 6 batches")
    conn = sqlite3.connect(out)
    assert conn.execute("SELECT count(*) FROM omitted_rows").fetchone() == (600 - want,)
    conn.close()
    assert cli_in_process("verify", out)[0] == 0


def test_filtered_export_with_batches_between_uses_chain_links(tmp_path):
    """Records in batches 2 and 4 only (after the run's start, batch 1): batch 3 travels as a chain
    link, and removing it is found."""
    d = write(tmp_path / "db", n=400, per_write=100, runs=1, rotate=False)
    out = tmp_path / "two.db"
    status, _, err = cli_in_process("export", "--db-dir", d, "--pid", "1010", "-o", out)  # ids 21, 22
    assert status == 0, err
    status, _, err = cli_in_process("export", "--db-dir", d, "--pid", "1160", "-o", tmp_path / "other.db")
    conn = sqlite3.connect(out)
    assert conn.execute("SELECT id FROM batches").fetchall() == [(2,)]
    conn.close()
    out2 = tmp_path / "span.db"
    status, _, err = cli_in_process("export", "--db-dir", d, "--arg", "echo 20", "-o", out2)  # ids 21 and 201..210
    assert status == 0, err
    conn = sqlite3.connect(out2)
    assert conn.execute("SELECT id FROM batches").fetchall() == [(2,), (4,)]
    assert conn.execute("SELECT id FROM chain_links").fetchall() == [(3,)]
    conn.close()
    assert cli_in_process("verify", out2)[0] == 0
    bad = writable_copy(out2, tmp_path / "bad.db")
    conn = sqlite3.connect(bad)
    conn.execute("DELETE FROM chain_links")
    conn.commit()
    conn.close()
    status, text, _ = cli_in_process("verify", bad)
    assert status == 1
    assert f"{bad} batch 4: batches 3..3 missing from the chain" in text.splitlines()


def test_never_overwrites_without_force(rotated, case):
    """An existing OUT is left alone (exit 2) unless --force, which replaces it and its sidecar."""
    before = case.read_bytes()
    status, out, err = cli_in_process("export", "--db-dir", rotated, "--since", t(0), "-o", case)
    assert (status, out, err) == (2, "", f"auditd-lite: {case} exists: use --force to replace it\n")
    assert case.read_bytes() == before
    status, out, err = cli_in_process("export", "--db-dir", rotated, "--since", t(0), "-o", case, "--force")
    assert status == 0, err
    assert manifest(case)["counts"]["total"] == 600
    assert Path(str(case) + ".sha256").read_text() == f"{sha(case)}  case.db\n"
    assert cli_in_process("verify", case)[0] == 0


def test_nothing_to_export_is_exit_1_and_leaves_nothing(rotated, tmp_path):
    """No matching record: exit 1, no file, no sidecar, no temporary file."""
    out = tmp_path / "empty.db"
    status, text, err = cli_in_process("export", "--db-dir", rotated, "--comm", "nosuch", "-o", out)
    assert (status, text) == (1, "")
    assert err.splitlines()[-1] == "auditd-lite: no records match: nothing to export"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("target, message", [
    ("{db}/case.db", "refusing to write the export into the database directory {db}: it would be read as "
                     "evidence itself"),
    ("{tmp}/nodir/case.db", "no such directory for the export: {tmp}/nodir"),
    ("{tmp}", "{tmp} is a directory: give the export's file name with -o"),
])
def test_bad_targets_are_refused(rotated, tmp_path, target, message):
    """Exports into the evidence directory, into a missing directory or onto a directory exit 2."""
    fmt = {"db": rotated, "tmp": tmp_path}
    status, out, err = cli_in_process("export", "--db-dir", rotated, "-o", target.format(**fmt))
    assert (status, out, err) == (2, "", f"auditd-lite: {message.format(**fmt)}\n")


def test_progress_bar_only_on_a_terminal():
    """The bar is drawn (carriage returns, percent) on a TTY and nothing is written otherwise."""
    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty, plain = Tty(), io.StringIO()
    for stream in (tty, plain):
        p = Progress(stream)
        p.total = 200
        p.update(100, "audit.db", force=True)
        p.finish()
    assert plain.getvalue() == ""
    assert tty.getvalue().startswith("\r   50% [###############               ] 100 records  audit.db")
    assert tty.getvalue().endswith("\n")


def test_export_while_the_writer_writes(tmp_path):
    """Exports taken while a writer keeps adding batches are whole snapshots that verify."""
    d = tmp_path / "db"
    bw = BatchWriter(d, {"keep": 0})
    bw.open()
    bw.write(rows(200))
    stop = threading.Event()
    errors = []

    def keep_writing():
        i = 200
        try:
            while not stop.is_set() and i < 200_000:
                bw.write(rows(50, start=i))
                i += 50
                time.sleep(0.001)
        except BaseException as e:  # reported below
            errors.append(e)

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        totals = []
        for k in range(4):
            out = tmp_path / f"snap{k}.db"
            status, text, err = cli_in_process("export", "--db-dir", d, "-o", out)
            assert status == 0, err
            status, text, err = cli_in_process("verify", out)
            assert status == 0, text + err
            conn = sqlite3.connect(out)
            n, lo, hi = conn.execute("SELECT count(*), min(id), max(id) FROM events").fetchone()
            conn.close()
            assert (lo, n) == (1, hi)  # every record up to the snapshot, none missing
            totals.append(n)
    finally:
        stop.set()
        writer.join()
        bw.close()
    assert errors == []
    assert totals == sorted(totals) and totals[-1] > totals[0]


@pytest.mark.parametrize("at_call", [1, 2])
def test_rotation_between_listing_and_live_snapshot_loses_nothing(tmp_path, monkeypatch, at_call):
    """If the live file is rotated after the export listed the files (1: before it is reached, 2: while
    it is being opened for its snapshot), the renamed file is read too and nothing is lost."""
    from auditd_lite.investigate import export as export_module

    d = tmp_path / "db"
    bw = BatchWriter(d, {"keep": 0}, rotation=RotationPolicy(size_mb=0.001))
    bw.open()
    bw.write(rows(100))
    bw.write(rows(100, start=100))  # rotated after each write: the live file is empty now
    attach = export_module._Export._attach
    rotated_once = []

    calls = []

    def attach_after_a_rotation(self, conn, path):
        if path.name == "audit.db":
            calls.append(path)
            if len(calls) == at_call:
                rotated_once.append(True)
                bw.write(rows(100, start=200))  # written to audit.db, which is then rotated
        return attach(self, conn, path)

    monkeypatch.setattr(export_module._Export, "_attach", attach_after_a_rotation)
    out = tmp_path / "snap.db"
    status, text, err = cli_in_process("export", "--db-dir", d, "-o", out)
    bw.close()
    assert status == 0, err
    assert rotated_once and len(list(d.glob("audit-*.db"))) == 3
    conn = sqlite3.connect(out)
    assert conn.execute("SELECT count(*), min(id), max(id) FROM events").fetchone() == (300, 1, 300)
    conn.close()
    assert cli_in_process("verify", out)[0] == 0


# --- verify on the daemon's files ----------------------------------------

def fresh(tmp_path, **kw) -> Path:
    return write(tmp_path / "db", **kw)


def files_oldest_first(d: Path) -> list[Path]:
    """The directory's files in the readers' order, oldest first (the live file last)."""
    return list(reversed(database_files(db_dir=d)))


def edit(path: Path, *statements):
    path.chmod(0o640)
    conn = sqlite3.connect(path)
    for s in statements:
        conn.execute(s)
    conn.commit()
    conn.close()


def test_intact_directory_verifies(rotated):
    """The writer's own files: every batch recomputes and the chain runs across all seven files."""
    assert cli_in_process("verify", "--db-dir", rotated) == (
        0, "ok: 7 files, 16 batches, 600 records; chain intact from batch 1 to 16\n", "")


def test_edited_row_is_found(tmp_path):
    """A record changed in a rotated file: its batch's hash no longer matches."""
    d = fresh(tmp_path)
    victim = files_oldest_first(d)[2]
    edit(victim, "UPDATE events SET argv = CAST('cat -c rm -rf /' AS BLOB) WHERE id = 250")
    status, out, err = cli_in_process("verify", "--db-dir", d)
    assert status == 1
    assert out == f"{victim} batch 6: hash mismatch: a record or the batch was edited\n"
    assert err == "auditd-lite: verification failed: 1 problem\n"


def test_deleted_batch_in_a_file_is_found(tmp_path):
    """A batch and its records deleted from the middle of a file: the next batch's link breaks and
    the run's counter no longer adds up (named with the run's last batch, its stop)."""
    d = fresh(tmp_path, rotate=False)
    live = d / "audit.db"
    edit(live, "DELETE FROM events WHERE batch_id = 2", "DELETE FROM batches WHERE id = 2")
    status, out, _ = cli_in_process("verify", "--db-dir", d)
    assert status == 1
    assert out.splitlines() == [
        f"{live} batch 3: chain broken: previous batch missing or changed",
        f"{live} batch 5: runs row of run 1: events_written is 300, its batches here add up to 200: edited",
    ]


def test_deleted_last_batch_is_found_by_the_run_counters(tmp_path):
    """Cutting the newest batches off the live file (the last records and the stop after them)
    leaves no chain break; the run's row catches it: its count, and a stop no batch recorded."""
    d = fresh(tmp_path, rotate=False)
    live = d / "audit.db"
    edit(live, "DELETE FROM events WHERE batch_id = 9", "DELETE FROM batches WHERE id >= 9")
    status, out, _ = cli_in_process("verify", "--db-dir", d)
    lines = out.splitlines()
    assert status == 1 and len(lines) == 2
    assert lines[0].startswith(f"{live} batch 8: runs row of run 2: stopped_ns is ")
    assert lines[0].endswith(", which no batch recorded (the run has no recorded stop): put in afterwards")
    assert lines[1] == f"{live} batch 8: runs row of run 2: events_written is 300, its batches here add up to 200: edited"


def test_removed_middle_file_is_found(tmp_path):
    """A rotated file removed from between two others: its batch ids are missing."""
    d = fresh(tmp_path)
    files = files_oldest_first(d)
    files[3].unlink()
    status, out, _ = cli_in_process("verify", "--db-dir", d)
    assert (status, out) == (1, f"{files[4]} batch 11: batches 7..10 are missing between {files[2]} and this "
                                "file, and no record says retention removed them: a file was removed by "
                                "someone else\n")


def test_file_from_elsewhere_is_found(tmp_path):
    """A rotated file from another directory put in place of one: the chain breaks on both sides."""
    d = fresh(tmp_path)
    other = write(tmp_path / "other", start=1)  # the same shape, other records
    mine, theirs = files_oldest_first(d)[3], files_oldest_first(other)[3]
    mine.unlink()
    shutil.copy(theirs, mine)
    status, out, _ = cli_in_process("verify", "--db-dir", d)
    nxt, prev = files_oldest_first(d)[4], files_oldest_first(d)[2]
    assert (status, out.splitlines()) == (1, [
        f"{mine}: does not continue the chain of {prev}: a file between them is missing, or one is from elsewhere",
        f"{nxt}: does not continue the chain of {mine}: a file between them is missing, or one is from elsewhere",
    ])


def test_copy_of_a_file_is_found(tmp_path):
    """The same batches in two files (a copy under a rotated name) are reported."""
    d = fresh(tmp_path)
    first = files_oldest_first(d)[0]
    copy = d / first.name.replace(".db", "-1.db")
    shutil.copy(first, copy)
    status, out, _ = cli_in_process("verify", "--db-dir", d)
    assert (status, out) == (1, f"{copy} batch 1: batches 1..2 are also in {first}: a copy, or a file from "
                                "another directory\n")


@pytest.mark.parametrize("settings", [{"keep": 0}, {"keep": 3, "retention": True}])
def test_oldest_file_removed_by_hand_is_found(tmp_path, settings):
    """The oldest file removed by hand, whether or not retention was on: its batches were written
    in chain format 5, whose writer records every removal, and no record says retention removed
    them: a problem."""
    d = fresh(tmp_path, settings=settings)
    first, second = files_oldest_first(d)[:2]
    first.unlink()
    status, out, _ = cli_in_process("verify", "--db-dir", d)
    assert (status, out) == (1, f"{second} batch 3: the chain starts at batch 3 in {second}: batches before "
                                "3 are missing and no record says retention removed them (they were written "
                                "in chain format 5, which records every removal): removed by someone else\n")


def test_oldest_files_removed_by_retention_are_a_note(tmp_path):
    """With retention on (keep = 2) the writer removes the oldest rotated files itself and records
    each: verify passes, and says where the chain starts and which files retention removed; a
    file removed by hand after them is still found."""
    d = tmp_path / "db"
    bw = BatchWriter(d, {"retention": True, "keep": 2},
                     rotation=RotationPolicy(size_mb=0.001, retention=True, keep=2, max_size_mb=10**6,
                                             min_free_mb=1))
    bw.open()
    for k in range(6):
        bw.write(rows(100, start=k * 100))
    bw.close()
    files = files_oldest_first(d)
    assert len(files) == 3  # two rotated files and the live one
    status, out, err = cli_in_process("verify", "--db-dir", d)
    assert (status, out) == (0, "ok: 3 files, 9 batches, 200 records; chain intact from batch 10 to 18\n")
    assert err.startswith(f"auditd-lite: note: the chain starts at batch 10 in {files[0]}: batches 1..9 were "
                          "removed by retention (recorded: audit-")
    assert err.count("keep") == 3
    files[0].unlink()
    status, out, _ = cli_in_process("verify", "--db-dir", d)
    assert status == 1 and "no record says retention removed them" in out and "removed by someone else" in out


@pytest.mark.parametrize("settings, status", [({"keep": 0}, 1), ({"keep": 3}, 0), ({"retention": True}, 0)])
def test_oldest_file_of_a_release_before_the_records_removed(tmp_path, settings, status):
    """A file written before chain format 5 (revision 0002, format 2), removed while it was the
    oldest: no writer then recorded removals, so the runs' settings decide, as they did: with
    retention on (keep > 0, or retention) a note, else a problem."""
    from test_query import OLD_ROWS, second_revision_file

    d = tmp_path / "db"
    old = second_revision_file(d, OLD_ROWS)
    bw = BatchWriter(d, settings)
    bw.open()
    bw.write(rows(10, start=1000))
    bw.close()
    old.unlink()
    got, out, err = cli_in_process("verify", "--db-dir", d)
    assert got == status, out + err
    said = out if status else err
    assert "the chain starts at batch 2 in" in said and "older files were removed" in said


def test_foreign_files_in_the_directory_are_problems(rotated, case, tmp_path):
    """An export or another .db file inside the database directory is flagged: queries would read it."""
    d = tmp_path / "db"
    shutil.copytree(rotated, d)
    shutil.copy(case, d / "case.db")
    shutil.copy(str(case) + ".sha256", d / "case.db.sha256")
    status, out, _ = cli_in_process("verify", "--db-dir", d)
    assert (status, out) == (1, f"{d / 'case.db'}: an export inside the database directory: queries of the "
                                "directory read it as if the daemon wrote it\n")


def test_verify_files_in_any_order(rotated):
    """Files given on the command line are put in chain order (by batch id) before checking."""
    files = files_oldest_first(rotated)
    status, out, err = cli_in_process("verify", *reversed(files))
    assert (status, out, err) == (0, "ok: 7 files, 16 batches, 600 records; chain intact from batch 1 to 16\n", "")


# --- verify on files from before the chain, and on files the writer set aside ----------

def first_release(tmp_path) -> Path:
    """A directory whose audit.db is as the first release wrote it (revision 0001: 3 batches
    without hashes, 30 records)."""
    d = tmp_path / "db"
    d.mkdir()
    engine = store.engine_for(d / "audit.db")
    with engine.connect() as conn:
        at_first_revision(conn, 30, batches=3)
    engine.dispose()
    return d


def first_release_upgraded(tmp_path) -> Path:
    """audit.db as the first release wrote it (revision 0001: 3 batches without hashes, 30
    records), then upgraded and written on by the current writer: the run's start (batch 4),
    batches 5 and 6 of 100 records, its stop (batch 7)."""
    d = first_release(tmp_path)
    bw = BatchWriter(d, {"keep": 0})
    bw.open()
    bw.write(rows(100, start=30))
    bw.write(rows(100, start=130))
    bw.close()
    return d


def test_verify_names_batches_from_before_the_chain(tmp_path):
    """An upgraded first-release file: exit 0, the chain intact from batch 4, a note naming
    batches 1..3 and their 30 records as written before the hash chain, and one naming the run
    row that release wrote as covered by no hash."""
    d = first_release_upgraded(tmp_path)
    live = d / "audit.db"
    assert cli_in_process("verify", "--db-dir", d) == (
        0, "ok: 1 file, 7 batches, 230 records; chain intact from batch 4 to 7\n",
        f"auditd-lite: note: {live}: 1 run row written before chain format 5 (runs 1): no hash covers "
        f"them\nauditd-lite: note: {live}: batches 1..3 were written before the hash chain (schema revision "
        "0001): no hash vouches for their 30 records\n")


def test_edit_after_the_pre_chain_batches_is_still_found(tmp_path):
    """In the same upgraded file, a record of chained batch 6 edited: that batch is reported,
    and only it."""
    d = first_release_upgraded(tmp_path)
    live = d / "audit.db"
    edit(live, "UPDATE events SET exit_code = 99 WHERE id = 150")
    status, out, _ = cli_in_process("verify", "--db-dir", d)
    assert (status, out) == (1, f"{live} batch 6: hash mismatch: a record or the batch was edited\n")


@pytest.mark.parametrize("statement, batch, reason", [
    ("UPDATE batches SET hash = NULL, prev_hash = NULL WHERE id = 5", 5,
     "no hash, yet batch 4 before it has one: its hash was removed"),
    ("UPDATE batches SET hash = NULL, prev_hash = NULL WHERE id = 4", 5,
     "the chain begins here, after batches without a hash, but not at its start: hashes were removed"),
])
def test_hash_removed_from_a_chained_batch_is_found(tmp_path, statement, batch, reason):
    """A chained batch whose hash was removed does not pass as written before the chain: a batch
    without a hash after a hashed one, or a chain that does not begin at genesis after batches
    without hashes, is a problem."""
    d = first_release_upgraded(tmp_path)
    live = d / "audit.db"
    edit(live, statement)
    status, out, _ = cli_in_process("verify", "--db-dir", d)
    assert status == 1
    assert f"{live} batch {batch}: {reason}" in out.splitlines()


def test_file_at_the_first_revision_verifies_with_a_note(tmp_path):
    """A file still at revision 0001 (no hash columns): exit 0 and the note naming its batches."""
    live = first_release(tmp_path) / "audit.db"
    assert cli_in_process("verify", live) == (
        0, "ok: 1 file, 3 batches, 30 records\n",
        f"auditd-lite: note: {live}: written before chain format 5 (schema revision 0007): no hash covers "
        f"its 1 run row or 0 seen processes\nauditd-lite: note: {live}: batches 1..3 were written before "
        "the hash chain (schema revision 0001): no hash vouches for their 30 records\n")


def test_file_set_aside_by_the_writer_is_part_of_the_chain(tmp_path):
    """A live file the writer set aside after a batch it refused (here: a planted trigger): verify
    of the directory checks it with the others, exit 0, and a note names it as set aside and
    read with the others; an edit in it is found."""
    d = tmp_path / "db"
    bw = BatchWriter(d, {"keep": 0})
    bw.open()
    for k in range(3):
        bw.write(rows(100, start=k * 100))
    conn = sqlite3.connect(d / "audit.db")
    conn.execute("CREATE TRIGGER planted BEFORE INSERT ON batches WHEN NEW.id = 5 "
                 "BEGIN SELECT RAISE(ABORT, 'planted'); END")
    conn.commit()
    conn.close()
    bw.write(rows(100, start=300))
    bw.close()
    (aside,) = d.glob("audit-damaged-*.db.damaged")
    status, out, err = cli_in_process("verify", "--db-dir", d)
    assert (status, out) == (0, "ok: 2 files, 7 batches, 400 records; chain intact from batch 1 to 7\n")
    assert err == f"auditd-lite: note: {set_aside_note(aside)}: checked with them\n"
    edit(aside, "UPDATE events SET comm = 'x' WHERE id = 5")
    status, out, _ = cli_in_process("verify", "--db-dir", d)
    assert (status, out) == (1, f"{aside} batch 2: hash mismatch: a record or the batch was edited\n")


# --- verify on exports -------------------------------------------------------

def test_edited_export_record_is_found(case, tmp_path):
    """A record edited in an export: its batch fails, and the file no longer matches its sidecar."""
    bad = writable_copy(case, tmp_path / "bad.db")
    edit(bad, "UPDATE events SET comm = 'innocent' WHERE id = 300")
    status, out, _ = cli_in_process("verify", bad)
    assert (status, out.splitlines()) == (1, [
        f"{bad} batch 6: hash mismatch: a record or the batch was edited",
        f"{bad}: SHA-256 differs from bad.db.sha256: the file was changed",
    ])


def test_deleted_export_record_is_found(case, tmp_path):
    """A record deleted from an export: counts, table sizes, its batch and the digest all disagree."""
    bad = writable_copy(case, tmp_path / "bad.db")
    edit(bad, "DELETE FROM events WHERE id = 301")
    status, out, _ = cli_in_process("verify", bad)
    assert status == 1
    lines = out.splitlines()
    assert lines[0].startswith(f"{bad}: records per type {{'exec': 149, 'exec_failed': 0, 'exit': 150, "
                               "'total': 299} differ from the manifest's")
    assert f"{bad} batch 10: holds 99 of its 100 records: rows deleted or added" in lines
    assert lines[-1] == f"{bad}: SHA-256 differs from bad.db.sha256: the file was changed"


def test_edited_manifest_is_found(case, tmp_path):
    """A manifest claiming other counts is caught by comparing it with the tables."""
    bad = writable_copy(case, tmp_path / "bad.db")
    m = manifest(case)
    m["counts"]["exit"] = 10
    edit(bad, "UPDATE manifest SET value = '" + json.dumps(m["counts"]) + "' WHERE key = 'counts'")
    status, out, _ = cli_in_process("verify", bad)
    assert status == 1
    assert out.splitlines()[0] == (f"{bad}: records per type {{'exec': 150, 'exec_failed': 0, 'exit': 150, "
                                   "'total': 300} differ from the manifest's {'exec': 150, 'exec_failed': 0, "
                                   "'exit': 10, 'total': 300}")


def test_removed_export_batch_is_found(case, tmp_path):
    """A whole batch taken out of an export (records, header, digests) leaves a hole in the chain."""
    bad = writable_copy(case, tmp_path / "bad.db")
    edit(bad, "DELETE FROM events WHERE batch_id = 6", "DELETE FROM batches WHERE id = 6",
         "DELETE FROM omitted_rows WHERE batch_id = 6")
    status, out, _ = cli_in_process("verify", bad)
    assert status == 1
    assert f"{bad} batch 7: batches 6..6 missing from the chain" in out.splitlines()


def test_missing_or_wrong_sidecar(case, tmp_path):
    """Without its .sha256 the seal is incomplete: verification fails and says so."""
    lone = tmp_path / "lone.db"
    shutil.copy(case, lone)
    status, out, _ = cli_in_process("verify", lone)
    assert (status, out) == (1, f"{lone}: no digest file lone.db.sha256: the file's seal is missing\n")
    Path(str(lone) + ".sha256").write_text("0" * 64 + "  lone.db\n")
    assert cli_in_process("verify", lone)[1] == f"{lone}: SHA-256 differs from lone.db.sha256: the file was changed\n"


@pytest.mark.parametrize("make, status, message", [
    (lambda p: p.write_bytes(b"plain text, not SQLite" * 50), 2, "auditd-lite: not an auditd-lite database: {p}\n"),
    (lambda p: None, 2, "auditd-lite: no such database file: {p}\n"),
])
def test_verify_bad_input(tmp_path, make, status, message):
    """A non-database or missing file is bad input (exit 2), not a verification failure."""
    p = tmp_path / "x.db"
    make(p)
    assert cli_in_process("verify", p) == (status, "", message.format(p=p))


# --- sources from before the context columns (schema revision 0003) --------------------------

@pytest.mark.parametrize("selection, omitted", [
    ([], 0),  # every record, the 0002 file's whole
    (["--since", "2026-11-20T10:00:00.5Z"], 1),  # its batch cut: exec 500 travels as a digest
    (["--comm", "curl"], 5),  # a filter on both kinds of file
])
def test_export_from_a_second_revision_source_verifies(tmp_path, selection, omitted):
    """A directory whose oldest file is at revision 0002 (no context columns, chain format 2)
    exports: the export is at head, the old records' context NULL (unknown), the digests of
    the old records it leaves out taken over the columns that file has, and the export
    verifies; query on it gives the old records null context and the new ones theirs."""
    from test_query import CURL_SHA, revisions, write_mixed

    db = write_mixed(tmp_path / "db")
    assert revisions(db)[-1] == "0002"
    out = tmp_path / "case.db"
    status, _, err = cli_in_process("export", "--db-dir", db, *selection, "-o", out)
    assert status == 0, err
    conn = sqlite3.connect(out)
    assert conn.execute("SELECT version_num FROM alembic_version").fetchone()[0] == store.HEAD_REVISION
    assert conn.execute("SELECT count(*) FROM omitted_rows").fetchone()[0] == omitted
    conn.close()
    status, text, err = cli_in_process("verify", out)
    assert (status, err) == (0, ""), text
    status, text, err = cli_in_process("query", "--db", out, "--comm", "curl", "--format", "json")
    assert status == 0, err
    got = {(r["event"], r["pid"]): r for r in map(json.loads, text.splitlines())}
    assert (got[("exec", 600)]["sha256"], got[("exit", 600)]["unit"]) == (CURL_SHA, "ssh.service")
    if ("exec", 500) in got:
        assert (got[("exec", 500)]["sha256"], got[("exec", 500)]["unit"]) == (None, None)
    assert ("exit", 500) in got


def test_context_put_into_an_export_is_found(tmp_path):
    """In an export of files at two revisions: a unit changed on a record of the head file
    breaks its batch's hash (format 3 covers the context); a unit filled in on a record of the
    0002 file, whose batch hash (format 2) covers no context, is found as put in afterwards,
    also once the export is sealed again (its sidecar rewritten)."""
    from test_query import write_mixed

    db = write_mixed(tmp_path / "db")
    out = tmp_path / "case.db"
    assert cli_in_process("export", "--db-dir", db, "-o", out)[0] == 0
    for name, pid, unit, reason in [
            ("changed.db", 600, "other.service", "hash mismatch: a record or the batch was edited"),
            ("forged.db", 500, "ssh.service", "1 record with an exec context that the batch's hash "
                                              "(written before schema revision 0003) does not cover: "
                                              "put in afterwards")]:
        bad = writable_copy(out, tmp_path / name)
        conn = sqlite3.connect(bad)
        batch = conn.execute("SELECT batch_id FROM events WHERE pid = ? AND event = 'exec'", (pid,)).fetchone()[0]
        conn.execute("UPDATE events SET unit = ? WHERE pid = ? AND event = 'exec'", (unit, pid))
        conn.commit()
        conn.close()
        sidecar = Path(str(bad) + ".sha256")  # sealed again, as whoever changed it would
        sidecar.chmod(0o644)
        sidecar.write_text(f"{sha(bad)}  {bad.name}\n")
        status, text, _ = cli_in_process("verify", bad)
        assert (status, text.splitlines()) == (1, [f"{bad} batch {batch}: {reason}"]), name


def test_context_put_into_an_upgraded_file_is_found(tmp_path):
    """A live file written at 0002 and upgraded in place: its old records' context columns are
    NULL and no hash covers them; a value put into one is a problem naming its batch, and the
    untouched file verifies."""
    from test_storage import second_revision_dir

    d = second_revision_dir(tmp_path / "db", 40)
    bw = BatchWriter(d, {"keep": 0})
    bw.open()
    bw.write(rows(10, start=40))
    bw.close()
    assert cli_in_process("verify", "--db-dir", d)[0] == 0
    live = d / "audit.db"
    edit(live, "UPDATE events SET container_id = 'ab' WHERE id = 25")
    status, text, _ = cli_in_process("verify", "--db-dir", d)
    assert (status, text.splitlines()) == (1, [
        f"{live} batch 2: 1 record with an exec context that the batch's hash (written before schema "
        "revision 0003) does not cover: put in afterwards"])


def test_export_by_a_context_filter_selects_only_what_matches(tmp_path):
    """export() given a context filter (Filters.unit; the command has no such flag yet) copies
    only the matching records, none from the 0002 file, and takes no file whole however
    wholly it lies in the window; the export verifies."""
    from auditd_lite.investigate.export import export
    from auditd_lite.investigate.query import Filters
    from test_query import write_mixed

    db = write_mixed(tmp_path / "db")
    out = tmp_path / "ssh.db"
    m = export(db, out, Filters(unit="ssh.service"))
    assert m["counts"] == {"exec": 1, "exec_failed": 0, "exit": 1, "total": 2}
    conn = sqlite3.connect(out)
    assert conn.execute("SELECT event, pid FROM events ORDER BY id").fetchall() == [("exec", 600), ("exit", 600)]
    conn.close()
    assert cli_in_process("verify", out)[0] == 0
