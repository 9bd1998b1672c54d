"""Inside a VM guest, last: the service has run through the capture tests;
now the watchdog, the journal, reload, kill -9 and stop, under a real systemd."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path

from guest_helpers import CONFIG, DB_DIR, STATE, UNIT, journal, journal_cursor, props, start_timeout_s, \
    systemctl, wait_for

REPO_CLI = ["/usr/bin/auditd-lite"]


def stats() -> dict:
    p = subprocess.run([*REPO_CLI, "stats", "--db-dir", str(DB_DIR), "--format", "json"],
                       capture_output=True, text=True, check=True)
    return json.loads(p.stdout)


def exits_of(pid: int) -> list[dict]:
    p = subprocess.run([*REPO_CLI, "query", "--db-dir", str(DB_DIR), "--pid", str(pid),
                        "--event", "exit", "--format", "json"], capture_output=True, text=True)
    assert p.returncode in (0, 1), p.stderr
    return [json.loads(l) for l in p.stdout.splitlines() if l.strip()]


def timespan_us(text: str) -> int:
    """systemd's rendering of a time span ("30s", "1min 30s", or plain µs) in µs."""
    if text.isdigit():
        return int(text)
    units = {"us": 1, "ms": 1000, "s": 10**6, "min": 60 * 10**6, "h": 3600 * 10**6}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)(us|ms|min|s|h)", text))


def test_watchdog_held_two_periods():
    """The daemon that became active before the capture tests is still the same process, never
    restarted, at least two watchdog periods later."""
    state = json.loads(STATE.read_text())
    period_us = timespan_us(props("WatchdogUSec")["WatchdogUSec"])
    assert period_us > 0
    now_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    wait = (state["active_at_us"] + 2 * period_us + 1_000_000 - now_us) / 1e6
    if wait > 0:
        time.sleep(wait)
    p = props("MainPID", "NRestarts", "ActiveState", "WatchdogTimestampMonotonic")
    assert p["ActiveState"] == "active", p
    assert int(p["MainPID"]) == state["pid"], (p, state)
    assert int(p["NRestarts"]) == state["restarts"], (p, state)
    # systemd saw a watchdog ping after the second period had begun
    assert int(p["WatchdogTimestampMonotonic"]) > state["active_at_us"] + period_us, p


def test_journal_has_our_json_lines():
    """journalctl -u auditd-lite shows the daemon's JSON log lines: its start, the attached
    programs and a once-a-minute summary, each with a level and a timestamp."""
    recs = journal()
    names = {r["event"] for r in recs}
    assert {"daemon_started", "programs_attached", "summary"} <= names, names
    assert all("level" in r and "timestamp" in r for r in recs)


def test_service_writes_through_the_compiled_path():
    """The packaged service, under the release's python3 and the unit's hardening, runs the
    compiled decoder and record digests (docs/design.md, "The compiled hot path") and writes JSON
    lines with the vendored orjson, as its daemon_started line says: the stable-ABI modules and
    the release's wheel load there, not the slower references."""
    pid = int(props("MainPID")["MainPID"])
    started = [r for r in journal() if r["event"] == "daemon_started" and r.get("pid") == pid]
    assert started, "no daemon_started line for the running daemon"
    got = started[-1]
    assert (got.get("decoder"), got.get("record_digests"), got.get("json_lines")) == \
        ("compiled", "compiled", "orjson"), got


def test_reload_applies_rotation():
    """systemctl reload with rotate_interval set in the config file: the daemon logs it applied,
    stays the same process, and the live file is rotated within that interval."""
    original = CONFIG.read_text()
    pid = int(props("MainPID")["MainPID"])
    cursor = journal_cursor()
    before = set(DB_DIR.glob("audit-*.db"))
    CONFIG.write_text(original + '\nrotate_interval = "5s"\n'
                      if "rotate_interval" not in original else
                      "\n".join(l for l in original.splitlines() if not l.startswith("rotate_interval"))
                      + '\nrotate_interval = "5s"\n')
    try:
        systemctl("reload", UNIT)
        wait_for(lambda: [r for r in journal(cursor) if r["event"] == "config_reloaded"], 60,
                 "config_reloaded in the journal")

        def rotated():
            subprocess.run(["/bin/true", "rotate-me"])
            return set(DB_DIR.glob("audit-*.db")) - before

        wait_for(rotated, 60, "a rotated file", every=1)
        assert int(props("MainPID")["MainPID"]) == pid
    finally:
        CONFIG.write_text(original)
        systemctl("reload", UNIT)


def test_kill9_restarted_and_unclean_run_visible():
    """kill -9 of the main process: systemd restarts it (Restart=on-failure), and stats shows
    the killed daemon's run as unclean."""
    p = props("MainPID", "NRestarts")
    pid, restarts = int(p["MainPID"]), int(p["NRestarts"])
    started = [r for r in journal() if r["event"] == "daemon_started" and r.get("pid") == pid]
    assert started, "no daemon_started line for the running daemon"
    run_id = started[-1]["run_id"]
    os.kill(pid, signal.SIGKILL)

    def back():
        q = props("MainPID", "NRestarts", "ActiveState")
        return q["ActiveState"] == "active" and int(q["MainPID"]) not in (0, pid) and q

    # RestartSec (5 s), then a start that systemd allows start_timeout_s() for
    q = wait_for(back, start_timeout_s() + 30, "systemd to restart the service")
    assert int(q["NRestarts"]) == restarts + 1, q
    s = stats()
    killed = [r for r in s["runs"] if r["id"] == run_id]
    assert killed and not killed[0]["clean"] and not killed[0]["running"], s["runs"]
    assert s["unclean_runs"] >= 1


def test_stop_is_clean_and_flushes():
    """systemctl stop right after a process exits with 42: the unit ends inactive (not failed),
    the daemon exited 0, and that exit is in the database. The process ran in a cgroup made
    after the daemon started (so not one seeded from /proc at start) that outlives the stop,
    and that cgroup was resolved exactly, by open_by_handle_at (the unit's capabilities and
    system call filter allow it), as the daemon's last log line of its context says."""
    cursor = journal_cursor()
    tag = uuid.uuid4().hex
    cg = Path("/sys/fs/cgroup") / f"auditd-stop-{tag[:10]}"
    cg.mkdir()
    try:
        child = subprocess.Popen(["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec sh -c "exit 42" "$1"',
                                  str(cg), tag])
        assert child.wait() == 42
        systemctl("stop", UNIT)
    finally:
        cg.rmdir()
    [stopped] = [r for r in journal(cursor) if r["event"] == "context_stopped"]
    assert stopped["cgroup"].get("handle", 0) >= 1 and "walks" not in stopped["cgroup"], json.dumps(stopped)
    p = props("ActiveState", "Result", "ExecMainStatus")
    assert (p["ActiveState"], p["Result"], p["ExecMainStatus"]) == ("inactive", "success", "0"), p
    got = exits_of(child.pid)
    assert [(r["exit_code"], r["signal"]) for r in got] == [(42, 0)], got
