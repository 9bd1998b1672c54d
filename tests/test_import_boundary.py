"""The analysis side must start fast and run without bcc: it never imports the capture stack."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("bcc", "sqlalchemy")

# The rule, in one line: investigate/ imports nothing from capture/, daemon/ or storage/; formats/
# (what the daemon and the readers both render records with) nothing from any of them; hunt/
# nothing from capture/ or storage/ (its --follow is a daemon of its own: it takes the live
# stream's file rotation, log set-up and systemd notification from daemon/); and nothing
# imports the command, cli/ (doctor reads a unit's run flags with runflags.py, as cli/ does).
RULE = {"investigate": {"capture", "daemon", "storage", "cli"},
        "formats": {"capture", "daemon", "storage", "investigate", "cli"},
        "hunt": {"capture", "storage", "cli"},
        "capture": {"cli"}, "daemon": {"cli"}, "storage": {"cli"}}


def package_imports(path: Path, top: int = 2) -> set[str]:
    """The auditd_lite subpackages a module imports (relative or absolute); ``top`` is the relative
    level that names auditd_lite itself: 2 in auditd_lite/<pkg>/, 3 in auditd_lite/<pkg>/<sub>/."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == top:  # from ..capture.x import / from .. import capture
                names = [node.module] if node.module else [a.name for a in node.names]
            elif node.level == 0 and node.module and node.module.startswith("auditd_lite."):
                names = [node.module.split(".", 1)[1]]
            else:
                continue
            found.update(n.split(".")[0] for n in names if n)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("auditd_lite."))
    return found


def test_packages_keep_the_import_rule():
    """No module of a package imports a package the rule forbids it (checked on the source,
    so a lazy import inside a function counts too)."""
    broken = []
    for pkg, forbidden in RULE.items():
        modules = sorted((ROOT / "auditd_lite" / pkg).rglob("*.py"))
        assert modules, pkg
        for path in modules:
            bad = package_imports(path, len(path.relative_to(ROOT / "auditd_lite").parts)) & forbidden
            if bad:
                broken.append(f"{path.relative_to(ROOT)} imports {', '.join(sorted(bad))}")
    assert broken == []


def test_import_rule_check_sees_a_violation(tmp_path):
    """The rule's check finds a relative and an absolute import of a forbidden package, and in
    a subpackage's module (capture/doctor/) a relative import one level further up, lazy or not."""
    bad = tmp_path / "m.py"
    bad.write_text("from ..capture import loader\nimport auditd_lite.daemon.main\n")
    assert package_imports(bad) == {"capture", "daemon"}
    bad.write_text("from ..kernel import x\ndef f():\n    from ...cli import build_parser\n")
    assert package_imports(bad, 3) == {"cli"}


def test_query_modules_import_neither_bcc_nor_sqlalchemy():
    """Importing query, output, dbfiles, timeparse, the formats and the lines export pulls in no bcc
    or sqlalchemy module."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c",
         "import auditd_lite.investigate.query, auditd_lite.investigate.output, auditd_lite.dbfiles, auditd_lite.timeparse, "
         "auditd_lite.formats.ocsf, auditd_lite.formats.ecs, auditd_lite.investigate.export_lines"],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    # lines look like "import time:       123 |        456 |   package.module"
    modules = [line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines()
               if line.startswith("import time:") and "|" in line]
    assert "auditd_lite.investigate.query" in modules  # the check really saw the imports
    leaked = [m for m in modules if m.split(".")[0] in FORBIDDEN]
    assert leaked == []


def test_investigation_modules_import_no_capture_stack():
    """tree, sql, export, verify and gaps pull in no bcc, sqlalchemy or structlog module."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c",
         "import auditd_lite.investigate.tree, auditd_lite.investigate.sqlcmd, auditd_lite.investigate.export, auditd_lite.investigate.verify, "
         "auditd_lite.investigate.gaps"],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    modules = [line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines()
               if line.startswith("import time:") and "|" in line]
    assert {"auditd_lite.investigate.tree", "auditd_lite.investigate.sqlcmd", "auditd_lite.investigate.export", "auditd_lite.investigate.verify",
            "auditd_lite.investigate.gaps"} <= set(modules)
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
