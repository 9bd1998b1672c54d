"""The analysis side must start fast and run without bcc: it never imports the capture stack."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("bcc", "sqlalchemy")


def test_query_modules_import_neither_bcc_nor_sqlalchemy():
    """Importing query, output, dbfiles and timeparse pulls in no bcc or sqlalchemy module."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c",
         "import auditd_lite.query, auditd_lite.output, auditd_lite.dbfiles, auditd_lite.timeparse"],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    # lines look like "import time:       123 |        456 |   package.module"
    modules = [line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines()
               if line.startswith("import time:") and "|" in line]
    assert "auditd_lite.query" in modules  # the check really saw the imports
    leaked = [m for m in modules if m.split(".")[0] in FORBIDDEN]
    assert leaked == []
