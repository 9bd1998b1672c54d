"""`stats` and `db current/upgrade` over real databases written by the BatchWriter."""

from __future__ import annotations

import json
import time

from conftest import run_cli
from test_storage import plant_refusal, rows, writer

from auditd_lite.storage import store
from auditd_lite.timeparse import parse_time


class TestStats:
    def test_counts_loss_files_runs(self, tmp_path):
        """JSON stats count each event type, losses with their time, files and an unclean run."""
        db = tmp_path / "db"
        bw = writer(db)
        bw.note_lost_kernel(7)
        bw.write(rows(10))
        bw.close(clean=False)
        bw = writer(db)
        bw.write(rows(4, start=10))
        bw.close()
        p = run_cli("stats", "--db-dir", db, "--format", "json", check=0)
        s = json.loads(p.stdout)
        assert s["events"] == {"exec": 7, "exec_failed": 0, "exit": 7}
        assert s["lost_events"] == 7 and s["lost_kernel"] == 7
        assert len(s["losses"]) == 1 and s["losses"][0]["lost_kernel"] == 7
        assert [f["events"] for f in s["files"]] == [14]
        assert len(s["runs"]) == 2 and s["unclean_runs"] == 1
        assert [r["clean"] for r in s["runs"]] == [False, True]
        assert s["runs"][0]["events_written"] == 10

    def test_running_daemon_is_not_unclean(self, tmp_path):
        """While a writer holds the directory lock, its open run is 'running', not unclean."""
        db = tmp_path / "db"
        bw = writer(db)
        bw.write(rows(2))
        try:
            s = json.loads(run_cli("stats", "--db-dir", db, "--format", "json", check=0).stdout)
        finally:
            bw.close()
        assert s["daemon_running"] is True
        assert s["unclean_runs"] == 0 and s["runs"][0]["running"] is True

    def test_table_flags_unclean(self, tmp_path):
        """The table names an unclean stop in words."""
        db = tmp_path / "db"
        writer(db).close(clean=False)
        out = run_cli("stats", "--db-dir", db, check=0).stdout.decode()
        assert "UNCLEAN STOP" in out and "unclean: 1" in out

    def test_set_aside_live_file_is_shown_with_its_time(self, tmp_path):
        """A live file the writer set aside (a batch it refused) is listed in JSON under
        set_aside with its path and the UTC second it was set aside, and in the table on a
        'set aside: 1' line followed by its path and time; its records are counted with the
        others (every reader reads it), and its file entry says set aside; a directory without
        one has an empty list and no such line."""
        db = tmp_path / "db"
        bw = writer(db)
        bw.write(rows(10))
        before = time.time_ns() // 10**9 * 10**9
        plant_refusal(db / "audit.db", batch_id=3)  # after the run's start and 10 records
        bw.write(rows(10, start=10))
        bw.close()
        after = time.time_ns()
        (aside,) = db.glob("audit-damaged-*.db.damaged")
        s = json.loads(run_cli("stats", "--db-dir", db, "--format", "json", check=0).stdout)
        assert [a["path"] for a in s["set_aside"]] == [str(aside)]
        assert before <= parse_time(s["set_aside"][0]["time"]) <= after
        table = run_cli("stats", "--db-dir", db, check=0).stdout.decode().splitlines()
        i = table.index("set aside: 1")
        assert table[i + 1].split()[:2] == [str(aside), s["set_aside"][0]["time"]]
        assert s["events"]["exec"] + s["events"]["exit"] == 20 and s["set_aside"][0]["read"]
        assert [f["set_aside"] for f in s["files"]] == [False, True]
        assert table[i + 1].endswith("(a live file the writer moved out of its way; read with the others)")

        other = tmp_path / "other"
        writer(other).close()
        s = json.loads(run_cli("stats", "--db-dir", other, "--format", "json", check=0).stdout)
        assert s["set_aside"] == []
        assert not any(line.startswith("set aside") for line in
                       run_cli("stats", "--db-dir", other, check=0).stdout.decode().splitlines())

    def test_missing_dir(self, tmp_path):
        """A missing directory is one line, exit 2."""
        p = run_cli("stats", "--db-dir", tmp_path / "nope")
        assert p.returncode == 2 and len(p.stderr.decode().strip().splitlines()) == 1

    def test_exec_context_is_counted_per_status_with_older_files_as_unknown(self, tmp_path):
        """Over the execs: how many per cwd_status, hash_status and cgroup_status, how many have a hash,
        a unit, a container, and how many lie in files from before revision 0003 (the 0002
        file's 2 execs), in JSON and in the table; the counts of the other execs add up."""
        from test_query import write_mixed

        db = write_mixed(tmp_path / "db")
        s = json.loads(run_cli("stats", "--db-dir", db, "--format", "json", check=0).stdout)
        c = s["exec_context"]
        assert s["events"] == {"exec": 5, "exec_failed": 1, "exit": 5}
        assert c == {"execs": 5, "before_context": {"files": 1, "execs": 2},
                     "cwd_status": {"ok": 2, "other_ns": 1},
                     "hash_status": {"ok": 2, "too_large": 1}, "cgroup_status": {"resolved": 3},
                     "with": {"sha256": 2, "unit": 3, "container_id": 1}}
        table = run_cli("stats", "--db-dir", db, check=0).stdout.decode().splitlines()
        i = table.index("exec context: 5 execs")
        assert table[i + 1:i + 6] == [
            "  cwd_status     ok 2, other_ns 1",
            "  hash_status    ok 2, too_large 1",
            "  cgroup_status  resolved 3",
            "  with           sha256 2, unit 3, container_id 1",
            "  unknown        2 (in 1 file from before schema revision 0003)",
        ]

    def test_execs_written_before_an_in_place_upgrade_are_unrecorded(self, tmp_path):
        """A live file written at revision 0002 and upgraded in place by the writer has the
        columns, but its 20 older execs no status: counted as 'unrecorded', not as a file
        from before the columns; the 10 written since have the writer's statuses."""
        from test_storage import second_revision_dir

        from auditd_lite.rows import CONTEXT_FIELDS
        from conftest import EXEC_CONTEXT

        db = second_revision_dir(tmp_path / "db", 40)
        bw = writer(db)
        bw.write(rows(20, start=40))
        bw.close()
        written = dict(zip(CONTEXT_FIELDS, EXEC_CONTEXT))
        c = json.loads(run_cli("stats", "--db-dir", db, "--format", "json", check=0).stdout)["exec_context"]
        assert c["execs"] == 30 and c["before_context"] == {"files": 0, "execs": 0}
        assert c["hash_status"] == {"unrecorded": 20, written["hash_status"]: 10}
        assert c["cgroup_status"] == {"unrecorded": 20, written["cgroup_status"]: 10}
        table = run_cli("stats", "--db-dir", db, check=0).stdout.decode()
        assert "unknown" not in table and f"  hash_status    unrecorded 20, {written['hash_status']} 10" in table


class TestDbCommands:
    def test_current_and_upgrade(self, tmp_path):
        """db current shows 0001 for an old file; db upgrade brings it to the head revision."""
        db = tmp_path / "db"
        db.mkdir()
        engine = store.engine_for(db / "audit.db")
        with engine.connect() as conn:
            store.upgrade(conn, "0001")
        engine.dispose()
        assert run_cli("db", "current", "--db-dir", db, check=0).stdout.decode().strip().endswith(": 0001")
        out = run_cli("db", "upgrade", "--db-dir", db, check=0).stdout.decode()
        assert f"0001 -> {store.HEAD_REVISION}" in out
        assert run_cli("db", "current", "--db-dir", db, check=0).stdout.decode().strip().endswith(f": {store.HEAD_REVISION}")

    def test_upgrade_refused_while_writing(self, tmp_path):
        """db upgrade while a writer holds the directory is refused with exit 2."""
        db = tmp_path / "db"
        bw = writer(db)
        try:
            p = run_cli("db", "upgrade", "--db-dir", db)
        finally:
            bw.close()
        assert p.returncode == 2 and "already writing" in p.stderr.decode()


class TestRunCopies:
    """A run's row is copied into every file it wrote to; every reader merges the copies by
    dbfiles.merge_run, so they agree on what the run wrote and when it stopped."""

    def test_merge_adds_each_copy_once_and_keeps_the_stop(self):
        from auditd_lite.dbfiles import merge_run

        runs: dict = {}
        copies = [  # newest file first, as the readers list them: only it has the stop
            {"id": 1, "started_ns": 5, "boot_id": "b", "attached_ns": 7, "stopped_ns": 90,
             "events_written": 3, "lost_kernel": 1, "lost_user": 0},
            {"id": 1, "started_ns": 5, "boot_id": "b", "attached_ns": 7, "stopped_ns": None,
             "events_written": 10, "lost_kernel": 2, "lost_user": 4},
            {"id": 1, "started_ns": 5, "boot_id": "b", "attached_ns": 7, "stopped_ns": None,
             "events_written": 10, "lost_kernel": 0, "lost_user": 0},
            {"id": 1, "started_ns": 6, "boot_id": "other", "stopped_ns": None,  # another run, same id
             "events_written": 99, "lost_kernel": 0, "lost_user": 0},
        ]
        for row in copies:
            merge_run(runs, row)
        assert runs[(1, 5)] == {"id": 1, "started_ns": 5, "boot_id": "b", "attached_ns": 7, "stopped_ns": 90,
                                "events_written": 23, "lost_kernel": 3, "lost_user": 4}
        assert runs[(1, 6)]["events_written"] == 99
        assert copies[0]["events_written"] == 3  # the caller's row is not changed

    def test_stats_sql_and_export_agree_on_a_run_across_rotated_files(self, tmp_path):
        from auditd_lite.storage.rotation import RotationPolicy

        db = tmp_path / "db"
        bw = writer(db, rotation=RotationPolicy(size_mb=0.001))
        for i in range(4):
            bw.write(rows(50, start=50 * i))
        bw.close()
        assert len(list(db.glob("audit-*.db"))) >= 2
        s = json.loads(run_cli("stats", "--db-dir", db, "--format", "json", check=0).stdout)
        assert [(r["events_written"], r["clean"]) for r in s["runs"]] == [(200, True)]
        p = run_cli("sql", "--db-dir", db, "--format", "json",
                    "SELECT events_written, stopped_ns IS NOT NULL AS stopped FROM runs", check=0)
        assert [json.loads(line) for line in p.stdout.decode().splitlines()] == [
            {"events_written": 200, "stopped": 1}]
        out = tmp_path / "case.db"
        run_cli("export", "--db-dir", db, "-o", out, check=0)
        p = run_cli("sql", "--db", out, "--format", "json",
                    "SELECT events_written, stopped_ns IS NOT NULL AS stopped FROM runs", check=0)
        assert [json.loads(line) for line in p.stdout.decode().splitlines()] == [
            {"events_written": 200, "stopped": 1}]
