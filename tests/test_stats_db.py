"""`stats` and `db current/upgrade` over real databases written by the BatchWriter."""

from __future__ import annotations

import json

from conftest import run_cli
from test_storage import rows, writer

from auditd_lite import store


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

    def test_missing_dir(self, tmp_path):
        """A missing directory is one line, exit 2."""
        p = run_cli("stats", "--db-dir", tmp_path / "nope")
        assert p.returncode == 2 and len(p.stderr.decode().strip().splitlines()) == 1


class TestDbCommands:
    def test_current_and_upgrade(self, tmp_path):
        """db current shows 0001 for an old file; db upgrade brings it to 0002."""
        db = tmp_path / "db"
        db.mkdir()
        engine = store.engine_for(db / "audit.db")
        with engine.connect() as conn:
            store.upgrade(conn, "0001")
        engine.dispose()
        assert run_cli("db", "current", "--db-dir", db, check=0).stdout.decode().strip().endswith(": 0001")
        out = run_cli("db", "upgrade", "--db-dir", db, check=0).stdout.decode()
        assert "0001 -> 0002" in out
        assert run_cli("db", "current", "--db-dir", db, check=0).stdout.decode().strip().endswith(": 0002")

    def test_upgrade_refused_while_writing(self, tmp_path):
        """db upgrade while a writer holds the directory is refused with exit 2."""
        db = tmp_path / "db"
        bw = writer(db)
        try:
            p = run_cli("db", "upgrade", "--db-dir", db)
        finally:
            bw.close()
        assert p.returncode == 2 and "already writing" in p.stderr.decode()
