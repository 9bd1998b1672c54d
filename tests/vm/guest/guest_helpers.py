"""Helpers for the tests that run inside a VM guest under a real systemd
(tests/vm/guest.sh runs them; tests/vm/test_matrix.py boots the guests).
They read what systemd and the journal say, never what the daemon believes."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

UNIT = "auditd-lite.service"
DB_DIR = Path("/var/lib/auditd-lite")
CONFIG = Path("/etc/auditd-lite/auditd-lite.toml")
# what the first guest test saw of the service, for the last ones to compare
STATE = Path("/run/vmtest/service-start.json")


def systemctl(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["systemctl", *args], capture_output=True, text=True, check=check)


def start_timeout_s() -> float:
    """How long systemd lets the service start (TimeoutStartSec, as systemd read it): a test
    waiting for a start waits as long, since under TCG on a loaded host a start's compile takes
    minutes, and only systemd's own timeout makes a start a failure."""
    out = subprocess.run(["systemd-analyze", "timespan", props("TimeoutStartUSec")["TimeoutStartUSec"]],
                         capture_output=True, text=True, check=True).stdout
    return int(next(l for l in out.splitlines() if l.strip().startswith("μs:")).split(":")[1]) / 1e6


def props(*names: str) -> dict[str, str]:
    out = systemctl("show", UNIT, "-p", ",".join(names)).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def journal(since_cursor: str | None = None) -> list[dict]:
    """The unit's journal lines that are our JSON log records, in order."""
    cmd = ["journalctl", "-u", UNIT, "-o", "cat", "--no-pager"]
    if since_cursor:
        cmd += ["--after-cursor", since_cursor]
    lines = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()
    out = []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and "event" in rec:
            out.append(rec)
    return out


def journal_cursor() -> str:
    out = subprocess.run(["journalctl", "-u", UNIT, "-n", "1", "--show-cursor", "-o", "cat",
                          "--no-pager"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("-- cursor: "):
            return line[len("-- cursor: "):]
    return ""


def wait_for(predicate, timeout: float, what: str, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def usec(value: str) -> int:
    """A systemd *TimestampMonotonic property (µs since boot)."""
    return int(value)
