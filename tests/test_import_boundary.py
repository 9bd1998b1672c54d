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


def test_investigation_modules_import_no_capture_stack():
    """tree, sql, export, verify and gaps pull in no bcc, sqlalchemy or structlog module."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c",
         "import auditd_lite.tree, auditd_lite.sqlcmd, auditd_lite.export, auditd_lite.verify, "
         "auditd_lite.gaps"],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    modules = [line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines()
               if line.startswith("import time:") and "|" in line]
    assert {"auditd_lite.tree", "auditd_lite.sqlcmd", "auditd_lite.export", "auditd_lite.verify",
            "auditd_lite.gaps"} <= set(modules)
    leaked = [m for m in modules if m.split(".")[0] in FORBIDDEN + ("structlog",)]
    assert leaked == []


def test_read_commands_run_without_the_capture_stack(tmp_path):
    """Whole query, tree, sql, export and verify commands never import bcc, sqlalchemy or structlog."""
    probe = (
        "import sys, runpy\n"
        "sys.argv = ['auditd-lite'] + sys.argv[1:]\n"
        "try:\n"
        "    runpy.run_module('auditd_lite.cli', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('bcc', 'sqlalchemy', 'structlog'))\n"
        "print('LEAKED', bad, file=sys.stderr)\n"
    )
    empty = tmp_path / "db"
    empty.mkdir()
    for argv in (["query", "--db-dir", empty], ["tree", "1", "--db-dir", empty],
                 ["sql", "SELECT 1", "--db-dir", empty], ["export", "--db-dir", empty, "-o", tmp_path / "x.db"],
                 ["verify", "--db-dir", empty]):
        result = subprocess.run([sys.executable, "-c", probe, *map(str, argv)], capture_output=True,
                                text=True, cwd=ROOT)
        assert "LEAKED []" in result.stderr, (argv, result.stderr)
