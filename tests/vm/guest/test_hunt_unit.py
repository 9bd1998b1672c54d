"""Inside a VM guest, with the service running: auditd-lite-hunt.service as the package ships it
(installed disabled, its sandbox, its LogsDirectory): started, it follows the service's
database; an exec that a SigmaHQ rule names is a finding in its journal, with the rule's level
as the syslog priority, and an OCSF Detection Finding line in its findings file; stopped, it
exits 0."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

from guest_helpers import systemctl, wait_for

HUNT = "auditd-lite-hunt.service"
FINDINGS = Path("/var/log/auditd-lite/findings.jsonl")
RULE = "42df45e7-e6e9-43b5-8f26-bec5b39cc239"  # System Information Discovery (level informational)


def hunt_props(*names: str) -> dict[str, str]:
    out = systemctl("show", HUNT, "-p", ",".join(names)).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def unit_log(lines: int = 40) -> str:
    """The unit's last journal lines with their times: what it did before a stop went wrong."""
    return subprocess.run(["journalctl", "-u", HUNT, "-o", "short-precise", "--no-pager", "-n", str(lines)],
                          capture_output=True, text=True).stdout


def journal_findings() -> list[dict]:
    """The unit's journal entries that are findings (JSON with a rule), with their priority."""
    out = subprocess.run(["journalctl", "-u", HUNT, "-o", "json", "--no-pager"], capture_output=True,
                         text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        entry = json.loads(line)
        try:
            doc = json.loads(entry.get("MESSAGE") or "")
        except (TypeError, ValueError):
            continue
        if isinstance(doc, dict) and "rule" in doc:
            found.append({"priority": entry.get("PRIORITY"), **doc})
    return found


def test_hunt_unit_follows_the_service_and_reports_findings():
    """Disabled after installation; `systemctl start` gets READY; `uname -a` with a unique
    argument is a finding of System Information Discovery in the journal (PRIORITY 6, the
    rule's informational) and in /var/log/auditd-lite/findings.jsonl as a Detection Finding
    of the same process; `systemctl stop` ends it with status 0."""
    assert systemctl("is-enabled", HUNT, check=False).stdout.strip() == "disabled"
    systemctl("start", HUNT)
    st = hunt_props("ActiveState", "SubState")
    assert (st["ActiveState"], st["SubState"]) == ("active", "running"), st
    marker = uuid.uuid4().hex
    p = subprocess.Popen(["uname", "-a", marker], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    p.wait()
    mine = wait_for(lambda: [f for f in journal_findings() if f["process"]["pid"] == p.pid
                             and f["rule"]["id"] == RULE], 60, "the finding in the journal")
    assert mine[0]["priority"] == "6" and mine[0]["process"]["argv"][-1] == marker
    line = wait_for(lambda: FINDINGS.exists() and [json.loads(x) for x in FINDINGS.read_text().splitlines()
                                                   if marker in x], 30, "the OCSF line")
    assert line[0]["class_uid"] == 2004 and line[0]["finding_info"]["analytic"]["uid"] == RULE
    systemctl("stop", HUNT)
    st = hunt_props("ActiveState", "Result", "ExecMainStatus")
    assert (st["ActiveState"], st["Result"], st["ExecMainStatus"]) == ("inactive", "success", "0"), \
        (st, unit_log())
