"""Inside a VM guest, with only the package installed (/usr/bin/auditd-lite): a key made by
keygen where the package keeps its settings, an export of the running service's database
signed with it, and the signature checked by a user who is not root (issue #15)."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import stat
import subprocess
import tempfile
import uuid
from pathlib import Path

from guest_helpers import DB_DIR

CLI = "/usr/bin/auditd-lite"
PRIVATE = Path("/etc/auditd-lite/signing.key")
PUBLIC = Path("/etc/auditd-lite/signing.pub")
AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def run(*args, user: list[str] = ()) -> subprocess.CompletedProcess:
    return subprocess.run([*user, CLI, *map(str, args)], capture_output=True, text=True,
                          cwd="/", timeout=600)


def test_keygen_export_sign_and_verify_as_nobody():
    """keygen writes /etc/auditd-lite/signing.key (0600) and signing.pub (0644); an export of the
    service's live database with --sign verifies with `verify --pubkey` run as nobody (exit 0),
    and a copy with one record edited and its sidecar written again fails (exit 1, naming it)."""
    # --force: the guest's /etc is the host's under a throwaway overlay, which may hold a key
    p = run("keygen", "--force")
    assert p.returncode == 0, p.stderr
    assert stat.S_IMODE(PRIVATE.stat().st_mode) == 0o600 and stat.S_IMODE(PUBLIC.stat().st_mode) == 0o644
    subprocess.run(["/bin/true", "signed-export-" + uuid.uuid4().hex], check=True)
    out_dir = Path(tempfile.mkdtemp(prefix="signed-export-"))
    try:
        out_dir.chmod(0o755)  # nobody reads the export there, never the database directory
        case = out_dir / "case.db"
        p = run("export", "--db-dir", DB_DIR, "--since", "30m", "-o", case, "--sign", PRIVATE)
        assert p.returncode == 0, p.stderr
        assert "signed with key" in p.stdout and Path(f"{case}.sig").is_file()
        pub = out_dir / "signing.pub"
        shutil.copy(PUBLIC, pub)
        pub.chmod(0o644)
        p = run("verify", "--pubkey", pub, case, user=AS_NOBODY)
        assert (p.returncode, p.stderr) == (0, ""), p.stdout
        assert "1 signed by key" in p.stdout

        bad_dir = out_dir / "tampered"
        bad_dir.mkdir(mode=0o755)
        bad = bad_dir / "case.db"
        for suffix in ("", ".sha256", ".sig"):
            shutil.copy(f"{case}{suffix}", f"{bad}{suffix}")
        bad.chmod(0o644)
        conn = sqlite3.connect(bad)
        conn.execute("UPDATE events SET comm = 'innocent' WHERE id = (SELECT max(id) FROM events)")
        conn.commit()
        conn.close()
        Path(f"{bad}.sha256").write_text(f"{hashlib.sha256(bad.read_bytes()).hexdigest()}  case.db\n")
        p = run("verify", "--pubkey", pub, bad, user=AS_NOBODY)
        assert p.returncode == 1, (p.stdout, p.stderr)
        assert f"{bad}: SHA-256 differs from the one signed in case.db.sig" in p.stdout
    finally:
        shutil.rmtree(out_dir)
