"""A hunt's finding as an OCSF 1.8.0 Detection Finding (class_uid 2004).

One event per finding (a Sigma rule that matched an exec): the rule as the analytic, its
ATT&CK tags as attacks, the exec's process (formats/ocsf.py's process object, its parent's
image and command line added) as the evidence, the device as in Process Activity events. The
event is a function of the finding and its record only (its time is the exec's, its uid a
UUID of rule and record), so the same record gives the same event from `hunt` over the history
and from `hunt --follow`. tests/test_hunt.py validates the events against the published schema
(tests/data/ocsf/, scripts/ocsf_schema.py). The mapping is docs/design.md, "Hunt: OCSF
Detection Finding".
"""

from __future__ import annotations

import uuid

from ..timeparse import format_time_ns
from . import common, ocsf
from .source import Source

CLASS_UID, CLASS_NAME = 2004, "Detection Finding"
CATEGORY_UID, CATEGORY_NAME = 2, "Findings"
CREATE = 1
STATUS_NEW = 1
ANALYTIC_RULE = 1
# Sigma's levels as OCSF's severity_id (Sigma has no "fatal")
SEVERITIES = {"informational": (1, "Informational"), "low": (2, "Low"), "medium": (3, "Medium"),
              "high": (4, "High"), "critical": (5, "Critical")}
UNKNOWN_SEVERITY = (0, "Unknown")
# Sigma: high and critical "should trigger an internal alert"; lower levels are for review
ALERT_LEVELS = frozenset(("high", "critical"))
# ATT&CK's enterprise tactics and their ids, by the short names Sigma's attack.* tags use; a
# tactic tag not here (ATT&CK keeps adding them: stealth, defense-impairment) goes by name alone
TACTICS = {
    "reconnaissance": ("TA0043", "Reconnaissance"), "resource-development": ("TA0042", "Resource Development"),
    "initial-access": ("TA0001", "Initial Access"), "execution": ("TA0002", "Execution"),
    "persistence": ("TA0003", "Persistence"), "privilege-escalation": ("TA0004", "Privilege Escalation"),
    "defense-evasion": ("TA0005", "Defense Evasion"), "credential-access": ("TA0006", "Credential Access"),
    "discovery": ("TA0007", "Discovery"), "lateral-movement": ("TA0008", "Lateral Movement"),
    "collection": ("TA0009", "Collection"), "command-and-control": ("TA0011", "Command and Control"),
    "exfiltration": ("TA0010", "Exfiltration"), "impact": ("TA0040", "Impact"),
}


def finding_uid(rule_id: str | None, record: dict, source: Source) -> str:
    """A UUID naming (rule, record) whoever renders it: the rule's id and the record's own key
    (formats/common.event_key), in the namespace of event uids."""
    return str(uuid.uuid5(common.EVENT_NAMESPACE, f"finding/{rule_id}/{common.event_key(record, source)}"))


def attacks(tags) -> list[dict]:
    """OCSF attack objects of a rule's ``attack.*`` tags: one per technique (a sub-technique
    with its technique), each with the rule's tactics; one per tactic when it names none."""
    tactics, techniques = [], []
    for tag in tags:
        ns, _, name = tag.partition(".")
        if ns != "attack" or not name:
            continue
        if name in TACTICS:
            uid, caption = TACTICS[name]
            tactics.append({"uid": uid, "name": caption})
        elif name[0] == "t" and name[1:].split(".")[0].isdigit():
            techniques.append(name.upper())
        elif all(c.isalpha() or c == "-" for c in name):  # not a group or software id (g0032)
            tactics.append({"name": name.replace("-", " ").title()})
    out = []
    for t in techniques:
        base, _, sub = t.partition(".")
        a = {"technique": {"uid": base}}
        if sub:
            a["sub_technique"] = {"uid": t}
        if tactics:
            a["tactics"] = [dict(x) for x in tactics]
        out.append(a)
    if not out:
        out = [{"tactic": dict(x), "tactics": [dict(x)]} for x in tactics]
    return out


def _parent(record: dict, source: Source, parent: dict) -> dict:
    """The parent as an OCSF process: its pid always, what its record gave when it was found."""
    p = {"pid": parent["pid"]}
    if parent.get("start_ns") is not None and parent.get("from") == "exec":
        p["uid"] = f"{common.boot_of(record, source)}:{parent['pid']}:{parent['start_ns']}"
    if parent.get("image"):
        p["path"] = parent["image"]
        p["file"] = {"name": common.basename(parent["image"]), "path": parent["image"],
                     "type_id": ocsf.FILE_TYPE_REGULAR, "type": "Regular File"}
    cmd = common.command_line(parent.get("argv"))
    if cmd:
        p["cmd_line"] = cmd
    return p


def event(finding: dict, record: dict, source: Source) -> dict:
    """The Detection Finding of ``finding`` (hunt/report.py's finding_json: rule, parent,
    record, unknown, incomplete) for the exec ``record`` (a query record) of ``source``."""
    rule = finding["rule"]
    level = rule.get("level")
    severity_id, severity = SEVERITIES.get(level, UNKNOWN_SEVERITY)
    uid = finding_uid(rule.get("id"), record, source)
    t = record["time_ns"]
    process = ocsf.process(record, source)
    process["parent_process"] = _parent(record, source, finding["parent"])
    analytic = {"type_id": ANALYTIC_RULE, "type": "Rule", "name": rule["title"], "category": "Sigma",
                "desc": f"Sigma rule by {rule.get('author') or 'an unnamed author'}, under the "
                        "Detection Rule License 1.1"}
    if rule.get("id"):
        analytic["uid"] = rule["id"]
    info = {"uid": uid, "title": rule["title"], "analytic": analytic, "types": ["Sigma"],
            "first_seen_time": t // 1_000_000, "first_seen_time_dt": format_time_ns(t),
            "last_seen_time": t // 1_000_000, "last_seen_time_dt": format_time_ns(t),
            "data_sources": ["auditd-lite exec records"]}
    if rule.get("description"):
        info["desc"] = rule["description"]
    found = attacks(rule.get("tags") or ())
    if found:
        info["attacks"] = found
    unmapped = {"rule_file": rule.get("file"), "rule_status": rule.get("status"),
                "rule_author": rule.get("author"), "rule_tags": list(rule.get("tags") or ()),
                "record_file": finding["record"]["file"], "record_id": finding["record"]["id"],
                "user": finding["process"].get("user"),
                "unknown_fields": list(finding.get("unknown") or ()),
                "incomplete_fields": list(finding.get("incomplete") or ()),
                "parent_from": finding["parent"].get("from"),
                "parent_unknown_because": finding["parent"].get("why")}
    return common.clean({
        "class_uid": CLASS_UID, "class_name": CLASS_NAME,
        "category_uid": CATEGORY_UID, "category_name": CATEGORY_NAME,
        "activity_id": CREATE, "activity_name": "Create",
        "type_uid": CLASS_UID * 100 + CREATE, "type_name": f"{CLASS_NAME}: Create",
        "severity_id": severity_id, "severity": severity,
        "status_id": STATUS_NEW, "status": "New",
        "is_alert": level in ALERT_LEVELS, "count": 1,
        "time": t // 1_000_000, "time_dt": format_time_ns(t),
        "message": f"{rule['title']}: {record.get('filename') or '?'} (pid {record['pid']})",
        "metadata": {
            "version": ocsf.OCSF_VERSION, "profiles": list(ocsf.PROFILES), "uid": uid,
            "product": {"name": common.PRODUCT, "vendor_name": common.PRODUCT, "version": source.version},
            "log_provider": common.PRODUCT, "log_version": source.revision, "event_code": "sigma",
        },
        "finding_info": info,
        "evidences": [{"process": process}],
        "device": ocsf.device(source),
        "unmapped": {k: v for k, v in unmapped.items() if v not in (None, [])},
    })
