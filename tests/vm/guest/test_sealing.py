"""Inside a VM guest, after the service checks: sealing under the real unit (its sandbox, its
StateDirectory, the package's python3-cryptography), from `seal setup` to a stop seal."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess

from guest_helpers import DB_DIR, UNIT, journal, journal_cursor, props, systemctl, wait_for

CLI = "/usr/bin/auditd-lite"
STATE_DIR = DB_DIR / "seal"  # the default: under the unit's StateDirectory


def keys(seed: bytes, n: int) -> list[bytes]:
    """K(0..n-1) as docs/sealing.md defines them, recomputed here with hashlib."""
    out, k = [], seed
    for _ in range(n):
        out.append(k)
        k = hashlib.sha256(b"auditd-lite seal evolve 1\0" + k).digest()
    return out


def seals() -> list[tuple]:
    out = []
    for path in sorted(DB_DIR.glob("*.db")):
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            out += con.execute("SELECT epoch, reason FROM seals").fetchall()
        finally:
            con.close()
    return sorted(out)


def test_service_seals_from_setup_to_stop():
    """`auditd-lite seal setup --interval 2s` makes a 0600 state in a 0700 directory under
    /var/lib/auditd-lite and prints the key; the service started after it logs sealing_on,
    seals its start and then an epoch every 2 s under its sandbox; systemctl stop ends with a
    stop seal and an exit of 0; verify --verify-key passes with every file sealed and nothing
    left open; doctor's sealing line says on, with the key id seal status gives and the stop
    seal last; no key of any epoch is in the unit's journal."""
    if props("ActiveState")["ActiveState"] == "active":
        systemctl("stop", UNIT)
    p = subprocess.run([CLI, "seal", "setup", "--interval", "2s"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    key = p.stdout.strip()
    assert os.stat(STATE_DIR).st_mode & 0o777 == 0o700
    assert os.stat(STATE_DIR / "state").st_mode & 0o777 == 0o600
    cursor = journal_cursor()
    systemctl("start", UNIT)
    wait_for(lambda: sum(1 for r in journal(cursor) if r["event"] == "sealed" and r["reason"] == "epoch") >= 2,
             120, "two epoch seals in the journal")
    subprocess.run(["/bin/true"], check=True)
    systemctl("stop", UNIT)
    st = props("ActiveState", "Result", "ExecMainStatus")
    assert (st["ActiveState"], st["Result"], st["ExecMainStatus"]) == ("inactive", "success", "0"), st
    logged = journal(cursor)
    on = [r for r in logged if r["event"] == "sealing_on"]
    assert on and on[0]["state"] == str(STATE_DIR), on
    made = seals()
    reasons = [r for _, r in made]
    assert "start" in reasons and reasons[-1] == "stop" and reasons.count("epoch") >= 2, made
    p = subprocess.run([CLI, "verify", "--db-dir", str(DB_DIR), "--verify-key", key],
                       capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.rstrip().endswith("seals hold"), p.stdout + p.stderr
    assert "NOT YET SEALED" not in p.stdout
    status = subprocess.run([CLI, "seal", "status"], capture_output=True, text=True, check=True).stdout
    key_id = next(l.split()[2] for l in status.splitlines() if l.startswith("key id"))
    doctor = subprocess.run([CLI, "doctor", "--no-compile"], capture_output=True, text=True).stdout
    line = next(l for l in doctor.splitlines() if l.split()[1] == "sealing")
    assert line.startswith("ok") and f"on: key id {key_id}," in line and line.endswith("(stop)"), line
    seed = bytes.fromhex(key.split(":")[2])
    text = "\n".join(str(r) for r in logged)
    for k in keys(seed, made[-1][0] + 2):
        assert k.hex() not in text
