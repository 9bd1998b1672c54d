"""Inside a VM guest, under a real systemd: what the service records of an exec's unit for
processes systemd itself placed (issue #13). The expected unit and cgroup come from systemd
(`systemctl show -p ControlGroup`), not from our parser."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
import uuid

from guest_helpers import DB_DIR, systemctl


def execs_of(path: str) -> list[dict]:
    p = subprocess.run(["/usr/bin/auditd-lite", "sql", f"SELECT * FROM events WHERE event = 'exec' "
                        f"AND filename = '{path}'", "--db-dir", str(DB_DIR), "--format", "json"],
                       capture_output=True, text=True)
    assert p.returncode in (0, 1), p.stderr
    return [json.loads(line) for line in p.stdout.splitlines() if line.strip()]


def test_systemd_run_scope_is_recorded_with_its_unit(tmp_path):
    """A program started with `systemd-run --scope --unit NAME` is recorded with the scope
    systemd made (NAME.scope), the cgroup systemd reports for it, and the SHA-256 of its file,
    hashed as the inode the kernel named (hash_status inode)."""
    name = "auditd-test-" + uuid.uuid4().hex[:10]
    program = tmp_path / ("s" + uuid.uuid4().hex[:10])
    program.write_bytes(open("/bin/sleep", "rb").read())
    program.chmod(0o755)
    tmp_path.chmod(0o755)
    p = subprocess.Popen(["systemd-run", "--quiet", "--scope", "--unit", name, str(program), "3"])
    deadline = time.monotonic() + 30
    cgroup = ""
    while not cgroup and time.monotonic() < deadline:
        cgroup = systemctl("show", "-p", "ControlGroup", "--value", f"{name}.scope", check=False).stdout.strip()
        time.sleep(0.1)
    assert p.wait() == 0
    assert cgroup.endswith(f"/{name}.scope"), cgroup
    deadline = time.monotonic() + 60
    while not (recs := execs_of(str(program))):
        assert time.monotonic() < deadline, "the service wrote no exec of the scope's program"
        time.sleep(0.3)
    [rec] = recs
    assert (rec["unit"], rec["cgroup"], rec["cgroup_status"]) == (f"{name}.scope", cgroup, "resolved"), rec
    assert (rec["hash_status"], rec["sha256"]) == ("inode", hashlib.sha256(program.read_bytes()).hexdigest()), rec
