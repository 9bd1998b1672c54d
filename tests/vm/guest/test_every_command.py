"""Inside a VM guest, with the packages installed: every command they ship runs from the
installed files (tests/pkgsmoke.py), `run` being the service itself."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pkgsmoke
from guest_helpers import DB_DIR


def test_every_command(tmp_path):
    """Each command the installed CLI's parsers name runs and does its job from the installed
    files under the release's python3: the service (`run`) records `sh -c
    'exit 3'`, query, tree, sql, stats, db, verify, export in every format (Parquet, the
    lake not being installed in a guest, saying to install auditd-lite-lake), keygen and a
    signed export, seal setup and status. doctor is test_service_start's, run from the installed
    files earlier in this guest: not compiled a second time."""
    report = pkgsmoke.Smoke(tmp_path, service_db=DB_DIR, ran_elsewhere={
        "doctor": "tests/vm/guest/test_service_start.py::test_doctor_passes_for_the_service"}).run_all()
    assert report["lake"] is False, "a guest installs auditd-lite alone (tests/vm/test_matrix.py)"
    (Path(os.environ.get("VMTEST_RESULTS", tmp_path)) / "pkgsmoke.json").write_text(json.dumps(report, indent=1))
