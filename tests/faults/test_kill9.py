"""kill -9 of the daemon in the middle of an exec storm: nothing corrupt, the gap visible."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import threading
import time

import pytest

from conftest import run_cli
from test_storage import verify

pytestmark = pytest.mark.kernel


def written(db_dir) -> int:
    try:
        con = sqlite3.connect(f"file:{db_dir / 'audit.db'}?mode=ro", uri=True)
        try:
            return con.execute("SELECT count(*) FROM events").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def storm(program, stop: threading.Event):
    while not stop.is_set():
        subprocess.run([str(program)])


@pytest.mark.parametrize("transport", ["ringbuf", "perfbuf"])
def test_kill9_mid_storm(daemon_factory, marker, transport):
    """After SIGKILL mid-storm (rotating every 1 MiB, either transport) every file passes
    integrity_check and the chain, and stats shows the unclean run."""
    d = daemon_factory("--rotate-size-mb", "1", "--transport", transport)
    stop = threading.Event()
    workers = [threading.Thread(target=storm, args=(marker, stop)) for _ in range(2)]
    for w in workers:
        w.start()
    # kill only once batches are landing, whatever the load on the machine
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not written(d.db_dir):
        time.sleep(0.2)
    time.sleep(1.0)
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait()
    stop.set()
    for w in workers:
        w.join()
    files = sorted(d.db_dir.glob("*.db"))
    assert files
    for f in files:
        con = sqlite3.connect(f)
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok", f
        con.close()
    assert verify(d.db_dir) == []
    s = json.loads(run_cli("stats", "--db-dir", d.db_dir, "--format", "json", check=0).stdout)
    assert s["unclean_runs"] == 1
    assert s["events"]["exec"] > 0


def test_restart_after_kill9_in_same_dir(tmp_path, marker):
    """A daemon started on the directory of a killed one logs previous_run_unclean and continues the chain."""
    from conftest import Daemon

    db = tmp_path / "db"
    first = Daemon(db, tmp_path / "a.log").start()
    subprocess.run([str(marker)])
    time.sleep(0.5)
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait()
    first._log.close()
    second = Daemon(db, tmp_path / "b.log").start()
    subprocess.run([str(marker)])
    second.stop()
    assert "previous_run_unclean" in second.log
    assert verify(db) == []
    s = json.loads(run_cli("stats", "--db-dir", db, "--format", "json", check=0).stdout)
    assert s["unclean_runs"] == 1 and len(s["runs"]) == 2
