"""OCSF and ECS renderings of records (auditd_lite/formats/): every event type, odd arguments,
truncated records, files of the oldest revision, validated against OCSF 1.8.0's published schema
(tests/data/ocsf/, made by scripts/ocsf_schema.py); ECS fields and their types; the CLI."""

from __future__ import annotations

import copy
import hashlib
import json
import re
import sqlite3
from datetime import datetime
from pathlib import Path

import jsonschema
import pytest

from auditd_lite.dbfiles import database_files
from auditd_lite.formats import Source, ecs, ocsf, sources_of
from auditd_lite.investigate.query import Filters, row_to_record, search
from auditd_lite.rows import ROW_FIELDS
from conftest import EXEC_CONTEXT, cli_in_process
from test_query import SEC, at, dbdir, exec_row, exit_row, make_db  # noqa: F401  (dbdir: a fixture)

DATA = Path(__file__).resolve().parent / "data" / "ocsf"
SOURCE = json.loads((DATA / "SOURCE.json").read_text())
SCHEMA_FILE = DATA / SOURCE["classes"]["process_activity"]["schema_file"]


def schema_validator(path: Path) -> jsonschema.Draft202012Validator:
    """A validator of the JSON Schema in ``path`` (tests/data/ocsf/), itself checked first."""
    schema = json.loads(path.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


@pytest.fixture(scope="module")
def validator():
    return schema_validator(SCHEMA_FILE)


def problems(validator, event) -> list[str]:
    return sorted(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(event))


def sourced(db_dir, **filters) -> list[tuple[dict, Source]]:
    return list(search(database_files(db_dir=db_dir), Filters(**filters), sources=True))


def by(pairs, event, pid):
    return next((r, s) for r, s in pairs if r["event"] == event and r["pid"] == pid)


class TestSchemaData:
    def test_schema_file_is_what_the_script_wrote_for_this_version(self):
        """The JSON Schema in tests/data is the one SOURCE.json describes (same SHA-256), for the
        OCSF version, class and profiles the events declare."""
        mine = SOURCE["classes"]["process_activity"]
        assert hashlib.sha256(SCHEMA_FILE.read_bytes()).hexdigest() == mine["schema_sha256"]
        assert SOURCE["ocsf_version"] == ocsf.OCSF_VERSION == "1.8.0"
        assert mine["class_uid"] == ocsf.CLASS_UID
        assert SOURCE["profiles"] == sorted(ocsf.PROFILES)
        schema = json.loads(SCHEMA_FILE.read_text())
        assert schema["$id"].startswith("https://schema.ocsf.io/schema/1.8.0/classes/process_activity")


def holder(event: dict, path: tuple) -> dict:
    """The object of ``event`` that holds the attribute at ``path``."""
    for key in path[:-1]:
        event = event[key]
    return event


class TestValidatorCanFail:
    """The validation the other tests rely on rejects each kind of wrong event."""

    @pytest.fixture
    def good(self, dbdir):
        record, source = by(sourced(dbdir), "exec", 102)
        return ocsf.event(record, source)

    def test_the_event_it_starts_from_is_valid(self, validator, good):
        """The unaltered event has no problem (so each failure below is the alteration's)."""
        assert problems(validator, good) == []

    @pytest.mark.parametrize("where", [(), ("process",), ("metadata", "product"), ("unmapped",)])
    def test_unknown_attribute(self, validator, good, where):
        """An attribute the schema does not define is refused at the top and inside objects; but
        not inside ``unmapped``, whose object type is free-form (where our own fields go)."""
        target = good
        for key in where:
            target = target[key]
        target["not_an_ocsf_attribute"] = 1
        found = problems(validator, good)
        if where == ("unmapped",):
            assert found == []
        else:
            assert any("not_an_ocsf_attribute" in p for p in found), found

    @pytest.mark.parametrize("path, value", [
        (("process", "pid"), "102"),           # integer_t
        (("time",), "2026-11-20T10:30:00Z"),   # timestamp_t is a number of milliseconds
        (("process", "user", "uid"), 1000),    # string_t
        (("time_dt",), "yesterday"),           # datetime_t's pattern
        (("metadata", "profiles"), "datetime"),  # an array
    ])
    def test_wrong_type(self, validator, good, path, value):
        """A value of the wrong type (or a datetime_t that is not RFC 3339) is refused."""
        target = holder(good, path)
        target[path[-1]] = value
        assert any(p.startswith("/".join(path) + ":") for p in problems(validator, good))

    @pytest.mark.parametrize("path", [("class_uid",), ("time",), ("metadata", "version"),
                                      ("device", "type_id"), ("process",), ("actor",)])
    def test_missing_required(self, validator, good, path):
        """Leaving out a required attribute is refused."""
        target = holder(good, path)
        del target[path[-1]]
        assert any(f"'{path[-1]}' is a required property" in p for p in problems(validator, good))

    @pytest.mark.parametrize("path, value", [(("activity_id",), 6), (("class_uid",), 1001),
                                             (("status_id",), 3), (("device", "os", "type_id"), 7),
                                             (("type_uid",), 100706)])
    def test_out_of_enum(self, validator, good, path, value):
        """An id outside its enum is refused."""
        target = holder(good, path)
        target[path[-1]] = value
        assert any(p.startswith("/".join(path) + ":") for p in problems(validator, good))


class TestOcsfEvents:
    def test_every_record_validates(self, validator, dbdir):
        """Every record of the fixture (exec, exec_failed, exit; across a rotation and a reboot;
        control characters and bytes that are not UTF-8) is a valid 1.8.0 Process Activity event."""
        pairs = sourced(dbdir)
        assert {r["event"] for r, _ in pairs} == {"exec", "exec_failed", "exit"}
        for record, source in pairs:
            assert problems(validator, ocsf.event(record, source)) == [], record

    def test_exec_is_a_successful_launch(self, dbdir):
        """An exec: Launch (type 100701), Success, the program, its arguments and its parent;
        time in milliseconds and, to the nanosecond, in time_dt and unmapped.time_ns."""
        record, source = by(sourced(dbdir), "exec", 100)
        e = ocsf.event(record, source)
        assert (e["class_uid"], e["category_uid"], e["activity_id"], e["type_uid"]) == (1007, 1, 1, 100701)
        assert (e["status_id"], e["status"]) == (1, "Success")
        assert e["time"] == at(10, 10) // 10**6 and e["time_dt"] == "2026-11-20T10:10:00.000000000Z"
        p = e["process"]
        assert (p["pid"], p["name"], p["path"], p["cmd_line"]) == (100, "sh", "/bin/sh", "sh -c 'exit 3'")
        assert p["file"] == {"name": "sh", "path": "/bin/sh", "type_id": 1, "type": "Regular File"}
        assert p["parent_process"] == {"pid": 1} and e["actor"]["process"] == {"pid": 1}
        assert (p["user"], p["group"], p["euid"], p["auid"], p["session"]) == (
            {"uid": "1000"}, {"uid": "1000"}, 1000, 1000, {"uid": "3"})
        assert p["uid"] == "boot-a:100:5000"
        assert "exit_code" not in e  # how it ended is the exit's event
        assert e["unmapped"]["argv"] == ["sh", "-c", "exit 3"] and e["unmapped"]["time_ns"] == at(10, 10)
        assert "signal" not in e["unmapped"] and e["unmapped"]["cgroup_id"] == 77
        assert (e["device"]["hostname"], e["device"]["boot_uid"]) == ("host1", "boot-a")
        assert e["metadata"]["product"] == {"name": "auditd-lite", "vendor_name": "auditd-lite",
                                            "version": "0.1.0"}

    def test_exec_failed_is_a_failed_launch_with_the_errno(self, dbdir):
        """A failed exec: Launch, Failure, status_code the errno's name, status_detail its text,
        the number in unmapped.errno; the program it tried as the path."""
        record, source = by(sourced(dbdir), "exec_failed", 101)
        e = ocsf.event(record, source)
        assert (e["activity_id"], e["status_id"], e["status"]) == (1, 2, "Failure")
        assert (e["status_code"], e["status_detail"]) == ("ENOENT", "No such file or directory")
        assert e["unmapped"]["errno"] == 2
        assert e["process"]["path"] == "/usr/bin/nope" and e["actor"]["process"] == {"pid": 100}

    def test_exit_is_a_terminate_with_the_whole_status(self, dbdir):
        """An exit: Terminate (100702) with exit_code; the signal, core dump, raw status and
        duration in unmapped; created_time is the exit's time less the lifetime; the program is
        its exec's."""
        pairs = sourced(dbdir)
        e = ocsf.event(*by(pairs, "exit", 100))
        assert (e["activity_id"], e["type_uid"], e["exit_code"]) == (2, 100702, 3)
        assert e["process"]["cmd_line"] == "sh -c 'exit 3'"
        assert e["process"]["created_time_dt"] == "2026-11-20T10:10:00.000000000Z"
        assert e["process"]["terminated_time_dt"] == "2026-11-20T10:10:01.250000000Z"
        assert e["actor"]["process"]["pid"] == 100  # reflexive
        killed = ocsf.event(*by(pairs, "exit", 102))
        assert killed["exit_code"] == 0
        assert {k: killed["unmapped"][k] for k in ("signal", "core_dumped", "status", "duration_ns")} == {
            "signal": 9, "core_dumped": False, "status": 9, "duration_ns": 5 * SEC}
        core = ocsf.event(*by(pairs, "exit", 301))
        assert (core["unmapped"]["signal"], core["unmapped"]["core_dumped"], core["unmapped"]["status"]) == (
            11, True, 139)
        # another boot's exec of pid 300 is not this process's: nothing of it is shown
        other = ocsf.event(*by(pairs, "exit", 300))
        assert "path" not in other["process"] and "file" not in other["process"]

    def test_odd_arguments_kept_exactly(self, validator, tmp_path):
        """Arguments with spaces, newlines, bytes that are not UTF-8 and empty ones: unmapped.argv
        holds exactly what query's JSON holds, and cmd_line quotes each so none runs together."""
        argv = b"printf\0\0a b\0\xff\xfe\0x\ny\0"
        make_db(tmp_path / "audit.db", [dict(id=1, boot_id="b", started_ns=at(9, 0))],
                [exec_row(1, 1, 50, "printf", at(10, 0), 1, "/usr/bin/printf", argv)])
        record, source = sourced(tmp_path)[0]
        e = ocsf.event(record, source)
        assert problems(validator, e) == []
        assert e["unmapped"]["argv"] == record["argv"] == ["printf", "", "a b", "\\xff\\xfe", "x\ny", ""]
        assert e["process"]["cmd_line"] == "printf '' 'a b' '\\xff\\xfe' 'x\ny' ''"
        assert ecs.document(record, source)["process"]["args"] == record["argv"]

    def test_truncated_and_empty_argv(self, validator, tmp_path):
        """A record whose arguments were cut (args_truncated, argc above what was kept) and one
        with no arguments at all validate; the cut is said in unmapped, nothing is made up."""
        cut = exec_row(1, 1, 60, "big", at(10, 0), 1, "/bin/big", b"big\0a")
        cut.update(args_truncated=True, argc=5000)
        empty = exec_row(2, 1, 61, "none", at(10, 1), 2, "/bin/none", b"")
        make_db(tmp_path / "audit.db", [dict(id=1, boot_id="b", started_ns=at(9, 0))], [cut, empty])
        pairs = sourced(tmp_path)
        e = ocsf.event(*by(pairs, "exec", 60))
        assert problems(validator, e) == []
        assert (e["unmapped"]["args_truncated"], e["unmapped"]["argc"], e["unmapped"]["argv"]) == (
            True, 5000, ["big", "a"])
        n = ocsf.event(*by(pairs, "exec", 61))
        assert problems(validator, n) == []
        assert n["unmapped"]["argv"] == [] and "cmd_line" not in n["process"]

    def test_context_of_revision_0003(self, validator, tmp_path):
        """The context columns: working directory, SHA-256 as a file hash, the container; their
        statuses, the cgroup and the unit in unmapped; an exit gets its exec's."""
        cwd, cwd_status, sha, hash_status, cgroup, cgroup_status, unit, cid = EXEC_CONTEXT
        row = exec_row(1, 1, 70, "sh", at(10, 0), 1, "/bin/sh", b"sh")
        row.update(dict(zip(("cwd", "cwd_status", "sha256", "hash_status", "cgroup", "cgroup_status",
                             "unit", "container_id"), EXEC_CONTEXT)), container_id="c" * 64)
        make_db(tmp_path / "audit.db", [dict(id=1, boot_id="b", started_ns=at(9, 0))],
                [row, exit_row(2, 1, 70, "sh", at(10, 1), 1, 0)])
        for kind in ("exec", "exit"):
            e = ocsf.event(*by(sourced(tmp_path), kind, 70))
            assert problems(validator, e) == []
            p = e["process"]
            assert p["working_directory"] == cwd and p["container"] == {"uid": "c" * 64}
            if sha is not None:
                assert p["file"]["hashes"] == [{"algorithm_id": 3, "algorithm": "SHA-256", "value": sha}]
            assert e["unmapped"]["cwd_status"] == cwd_status and e["unmapped"]["unit"] == unit

    def test_oldest_revision_file(self, validator, tmp_path):
        """Records of a file at revision 0001 (no context, batches without hashes) validate; the
        revision is metadata.log_version."""
        from sqlalchemy import create_engine

        from test_storage import at_first_revision

        db = tmp_path / "db"
        db.mkdir()
        engine = create_engine(f"sqlite:///{db / 'audit.db'}")
        with engine.connect() as conn:
            at_first_revision(conn, 6)
        engine.dispose()
        pairs = sourced(db)
        assert len(pairs) == 6
        for record, source in pairs:
            e = ocsf.event(record, source)
            assert problems(validator, e) == []
            assert e["metadata"]["log_version"] == "0001" and e["unmapped"]["schema_revision"] == "0001"
            assert "working_directory" not in e["process"]

    def test_event_uid_is_stable_and_unique(self, dbdir):
        """metadata.uid (and ECS event.id) is the same from two searches and from the daemon's
        row (query.row_to_record, no boot id in it: the Source gives it), and differs between
        records."""
        first = [ocsf.event(r, s)["metadata"]["uid"] for r, s in sourced(dbdir)]
        again = [ecs.document(r, s)["event"]["id"] for r, s in sourced(dbdir)]
        assert first == again and len(set(first)) == len(first)
        conn = sqlite3.connect(dbdir / "audit.db")
        row = conn.execute(f"SELECT {', '.join(ROW_FIELDS)} FROM events WHERE id = 3").fetchone()
        source = sources_of(conn)[1]
        conn.close()
        streamed = ocsf.event(row_to_record(row), source)
        record, src = by(sourced(dbdir), "exec", 201)
        assert streamed["metadata"]["uid"] == ocsf.event(record, src)["metadata"]["uid"]
        assert streamed["process"]["uid"] == "boot-a:201:21000"

    def test_event_uid_is_uuid5_of_its_key(self, dbdir):
        """The event uid is RFC 4122's version-5 UUID of the record's key in the fixed namespace,
        as uuid.uuid5 makes it."""
        import uuid

        from auditd_lite.formats import common

        for record, source in sourced(dbdir):
            want = uuid.uuid5(common.EVENT_NAMESPACE, common.event_key(record, source))
            assert common.event_uid(record, source) == str(want)
            assert uuid.UUID(common.event_uid(record, source)).version == 5

    def test_source_from_the_run_row(self, dbdir):
        """The Source of a record is its own run's: after the reboot, boot-b's."""
        pairs = sourced(dbdir)
        assert by(pairs, "exit", 301)[1] == Source(host="host1", boot_id="boot-b", kernel="6.18.0",
                                                   version="0.1.0", revision=None, run_id=2,
                                                   lost_kernel=0, lost_user=0)
        assert by(pairs, "exec", 300)[1].boot_id == "boot-a"


# ECS types (ecs_flat.yml of ECS 8.11; user.audit.id is Auditbeat's auditd module's, a keyword)
# of every field the documents use, and what JSON value each must be: long an integer, date an
# RFC 3339 string, keyword (and wildcard, match_only_text) a string
ECS_TYPES = {
    "@timestamp": "date", "ecs.version": "keyword", "event.kind": "keyword",
    "event.category": "keyword[]", "event.type": "keyword[]", "event.action": "keyword",
    "event.outcome": "keyword", "event.id": "keyword", "event.module": "keyword",
    "event.dataset": "keyword", "event.duration": "long", "process.pid": "long",
    "process.entity_id": "keyword", "process.name": "keyword", "process.executable": "keyword",
    "process.args": "keyword[]", "process.args_count": "long", "process.command_line": "wildcard",
    "process.working_directory": "keyword", "process.parent.pid": "long",
    "process.parent.entity_id": "keyword",
    "process.thread.id": "long", "process.hash.sha256": "keyword", "process.start": "date",
    "process.end": "date", "process.exit_code": "long", "user.id": "keyword",
    "user.group.id": "keyword", "user.effective.id": "keyword", "user.audit.id": "keyword",
    "error.code": "keyword", "error.message": "match_only_text", "host.name": "keyword",
    "host.hostname": "keyword", "host.boot.id": "keyword", "host.os.type": "keyword",
    "host.os.family": "keyword", "host.os.kernel": "keyword", "agent.type": "keyword",
    "agent.version": "keyword", "container.id": "keyword",
}
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{9}Z$")


def flatten(doc: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in doc.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def ecs_type_problems(doc: dict) -> list[str]:
    bad = []
    for name, value in flatten(doc).items():
        if name.startswith("auditd_lite."):
            continue  # our custom field set
        kind = ECS_TYPES.get(name)
        if kind is None:
            bad.append(f"{name}: not a field of the table")
            continue
        values = value if kind.endswith("[]") else [value]
        if kind.endswith("[]") and not isinstance(value, list):
            bad.append(f"{name}: not an array")
        for v in values:
            base = kind.removesuffix("[]")
            ok = {"long": isinstance(v, int) and not isinstance(v, bool),
                  "date": isinstance(v, str) and bool(RFC3339.match(v)),
                  }.get(base, isinstance(v, str))
            if not ok:
                bad.append(f"{name}: {v!r} is not {kind}")
    return bad


class TestEcsDocuments:
    def test_type_check_can_fail(self, dbdir):
        """The type check finds a pid as a string, args not an array, a date not RFC 3339 and a
        field that is not in the table."""
        doc = ecs.document(*by(sourced(dbdir), "exec", 100))
        assert ecs_type_problems(doc) == []
        doc["process"]["pid"] = "100"
        doc["process"]["args"] = "sh -c"
        doc["@timestamp"] = 1795170000
        doc["process"]["bogus"] = 1
        assert len(ecs_type_problems(doc)) == 4

    def test_every_record_has_the_fields_with_their_types(self, dbdir):
        """Every document: @timestamp, event.kind event, category [process], type [start] for
        exec and exec_failed and [end] for exit, the outcome, process.pid, parent pid, user.id,
        host.name and host.boot.id; each field of the ECS type its table gives."""
        for record, source in sourced(dbdir):
            doc = ecs.document(record, source)
            assert ecs_type_problems(doc) == [], record
            ev = doc["event"]
            assert (ev["kind"], ev["category"]) == ("event", ["process"])
            assert ev["type"] == (["end"] if record["event"] == "exit" else ["start"])
            assert doc["process"]["pid"] == record["pid"] and doc["process"]["parent"]["pid"] == record["ppid"]
            assert doc["user"]["id"] == str(record["uid"]) and doc["host"]["boot"]["id"] == record["boot_id"]
            assert doc["host"]["name"] == "host1"
            assert datetime.fromisoformat(doc["@timestamp"][:26]) is not None

    def test_exit_and_failure_fields(self, dbdir):
        """An exit: process.exit_code, start, end, event.duration in ns, outcome failure when
        the code is not 0 or a signal killed it; a failed exec: outcome failure, error.code."""
        pairs = sourced(dbdir)
        doc = ecs.document(*by(pairs, "exit", 100))
        p = doc["process"]
        assert (p["exit_code"], doc["event"]["duration"], doc["event"]["outcome"]) == (3, 1250 * 10**6, "failure")
        assert (p["start"], p["end"]) == ("2026-11-20T10:10:00.000000000Z", "2026-11-20T10:10:01.250000000Z")
        assert p["args"] == ["sh", "-c", "exit 3"] and p["executable"] == "/bin/sh"
        assert ecs.document(*by(pairs, "exit", 102))["event"]["outcome"] == "failure"  # SIGKILL
        assert ecs.document(*by(pairs, "exit", 200))["event"]["outcome"] == "success"
        assert ecs.document(*by(pairs, "exit", 301))["auditd_lite"]["core_dumped"] is True
        failed = ecs.document(*by(pairs, "exec_failed", 101))
        assert (failed["event"]["outcome"], failed["error"]["code"]) == ("failure", "ENOENT")
        assert ecs.document(*by(pairs, "exec", 100))["event"]["outcome"] == "success"


class TestCommands:
    @pytest.mark.parametrize("fmt, render", [("ocsf", ocsf.event), ("ecs", ecs.document)])
    def test_query_format(self, dbdir, fmt, render):
        """`query --format ocsf|ecs` prints one object a line, the rendering of each record the
        same filters find, in query's order."""
        status, out, _ = cli_in_process("query", "--db-dir", dbdir, "--format", fmt, "--comm", "sh")
        assert status == 0
        lines = [json.loads(line) for line in out.splitlines()]
        assert lines == [render(r, s) for r, s in sourced(dbdir, comm="sh")] and len(lines) == 2

    def test_query_format_nothing_found_exits_1(self, dbdir):
        """No match in ocsf format: exit 1, nothing on stdout."""
        status, out, err = cli_in_process("query", "--db-dir", dbdir, "--format", "ocsf", "--pid", "9999")
        assert (status, out) == (1, "") and "no matching records" in err

    @pytest.mark.parametrize("cmd", [("query", "--format", "xml"), ("export", "-o", "x", "--format", "json")])
    def test_unknown_format_is_one_line_exit_2(self, dbdir, cmd):
        """An unknown format exits 2 with one line naming it."""
        status, out, err = cli_in_process(*cmd, "--db-dir", dbdir)
        assert status == 2 and out == ""
        assert len(err.strip().splitlines()) == 1 and "invalid choice" in err

    @pytest.mark.parametrize("fmt", ["ocsf", "ecs"])
    def test_export_lines(self, dbdir, tmp_path, fmt):
        """`export --format ocsf|ecs -o OUT` writes the lines query prints for the same filters,
        OUT.sha256 holds OUT's digest, OUT is not replaced without --force and is with it (no
        temporary file left)."""
        out = tmp_path / "out" / f"x.{fmt}.jsonl"
        out.parent.mkdir()
        status, said, err = cli_in_process("export", "--db-dir", dbdir, "--format", fmt, "-o", out,
                                           "--until", "2026-11-20T11:30:00Z")
        assert status == 0, err
        assert "exported 9 records (5 exec, 1 exec_failed, 3 exit)" in said
        _, printed, _ = cli_in_process("query", "--db-dir", dbdir, "--format", fmt,
                                       "--until", "2026-11-20T11:30:00Z")
        assert out.read_text() == printed
        digest = hashlib.sha256(out.read_bytes()).hexdigest()
        assert (out.parent / f"{out.name}.sha256").read_text() == f"{digest}  {out.name}\n"
        status, _, err = cli_in_process("export", "--db-dir", dbdir, "--format", fmt, "-o", out)
        assert status == 2 and "exists: use --force" in err
        assert out.read_text() == printed
        status, _, err = cli_in_process("export", "--db-dir", dbdir, "--format", fmt, "-o", out,
                                        "--force", "--comm", "sh")
        assert status == 0, err
        assert len(out.read_text().splitlines()) == 2
        digest = hashlib.sha256(out.read_bytes()).hexdigest()
        assert (out.parent / f"{out.name}.sha256").read_text() == f"{digest}  {out.name}\n"
        assert sorted(p.name for p in out.parent.iterdir()) == [out.name, f"{out.name}.sha256"]

    def test_export_lines_nothing_matches(self, dbdir, tmp_path):
        """An export in ocsf that matches nothing exits 1 and leaves no file behind."""
        out = tmp_path / "out" / "none.jsonl"  # tmp_path is the database directory
        out.parent.mkdir()
        status, _, err = cli_in_process("export", "--db-dir", dbdir, "--format", "ocsf", "-o", out,
                                        "--pid", "9999")
        assert status == 1 and "nothing to export" in err
        assert list(out.parent.iterdir()) == []

    def test_export_lines_refuses_the_database_directory(self, dbdir):
        """OUT inside the database directory is refused (exit 2): it would be read as evidence."""
        status, _, err = cli_in_process("export", "--db-dir", dbdir, "--format", "ecs", "-o",
                                        dbdir / "x.jsonl")
        assert status == 2 and "refusing to write the export into the database directory" in err
        assert not (dbdir / "x.jsonl").exists()


def add_seen(path: Path, run_id: int, pid: int, when: int, context: bool = True) -> None:
    """A seen_processes row (a process running when run ``run_id`` started) in ``path``."""
    conn = sqlite3.connect(path)
    cols = dict(run_id=run_id, time_ns=when, pid=pid, ppid=1, uid=0, comm="sshd",
                filename="/usr/sbin/sshd", argv=b"sshd: /usr/sbin/sshd -D", start_ns=777 * 10**7,
                start_tick_ns=10**7)
    if context:
        cols.update(cwd="/", cwd_status="ok", sha256="ab" * 32, hash_status="ok",
                    cgroup="/system.slice/ssh.service", cgroup_status="resolved", unit="ssh.service")
    conn.execute(f"INSERT INTO seen_processes ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                 list(cols.values()))
    conn.commit()
    conn.close()


class TestSeenAtStart:
    """Processes already running when a run started (seen_processes) are not events: query and
    its OCSF/ECS lines never show them; an export by time alone carries them as OCSF activity
    Other ("Running at start") and Auditbeat's ``existing_process``."""

    def test_rendering_of_a_seen_process(self, validator, dbdir):
        """A seen process validates as activity Other (100799) with no status and no process uid
        (its start is exact to a clock tick only), its program, hash and unit; in ECS an
        existing_process of type info."""
        add_seen(dbdir / "audit.db", 2, 42, at(11, 30, 0, 5))
        (record, source), = query_seen(dbdir)
        assert record["event"] == "seen" and source.boot_id == "boot-b"
        e = ocsf.event(record, source)
        assert problems(validator, e) == []
        assert (e["activity_id"], e["activity_name"], e["type_uid"]) == (99, "Running at start", 100799)
        assert "status_id" not in e and "uid" not in e["process"]
        assert (e["process"]["pid"], e["process"]["path"], e["process"]["cmd_line"]) == (
            42, "/usr/sbin/sshd", "'sshd: /usr/sbin/sshd -D'")
        assert e["process"]["file"]["hashes"][0]["value"] == "ab" * 32
        assert (e["unmapped"]["unit"], e["unmapped"]["start_tick_ns"]) == ("ssh.service", 10**7)
        doc = ecs.document(record, source)
        assert ecs_type_problems(doc) == []
        assert (doc["event"]["action"], doc["event"]["type"]) == ("existing_process", ["info"])
        assert "outcome" not in doc["event"] and "entity_id" not in doc["process"]

    def test_seen_from_a_file_without_context(self, validator, tmp_path):
        """A seen_processes row of a file at revision 0001 (no context columns) validates."""
        from sqlalchemy import create_engine

        from test_storage import at_first_revision

        db = tmp_path / "db"
        db.mkdir()
        engine = create_engine(f"sqlite:///{db / 'audit.db'}")
        with engine.connect() as conn:
            at_first_revision(conn, 2)
        engine.dispose()
        add_seen(db / "audit.db", 1, 43, 3, context=False)
        (record, source), = query_seen(db)
        assert record["cwd"] is None and source.revision == "0001"
        e = ocsf.event(record, source)
        assert problems(validator, e) == [] and "working_directory" not in e["process"]

    def test_query_never_shows_them(self, dbdir):
        """`query --format ocsf --pid` of a pid only seen at start finds nothing (exit 1)."""
        add_seen(dbdir / "audit.db", 2, 42, at(11, 30, 0, 5))
        status, out, _ = cli_in_process("query", "--db-dir", dbdir, "--format", "ocsf", "--pid", "42")
        assert (status, out) == (1, "")

    def test_export_by_time_carries_them_in_time_order(self, dbdir, tmp_path):
        """`export --format ocsf --since T` has the seen process among the records, newest first;
        with a filter on records' columns (--comm) it has none."""
        add_seen(dbdir / "audit.db", 2, 42, at(11, 30, 0, 5))
        out = tmp_path / "out" / "x.jsonl"
        out.parent.mkdir()
        status, said, err = cli_in_process("export", "--db-dir", dbdir, "--format", "ocsf", "-o", out,
                                           "--since", "2026-11-20T11:00:00Z")
        assert status == 0, err
        assert "1 seen at start" in said
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        assert [e["time"] for e in lines] == sorted((e["time"] for e in lines), reverse=True)
        assert [e["process"]["pid"] for e in lines if e["activity_id"] == 99] == [42]
        assert len(lines) == 7  # the 6 records of 11:00 on, and the seen process
        status, said, err = cli_in_process("export", "--db-dir", dbdir, "--format", "ocsf", "-o", out,
                                           "--force", "--since", "2026-11-20T11:00:00Z", "--comm", "sshd")
        assert status == 1 and "nothing to export" in err


def query_seen(db_dir) -> list:
    from auditd_lite.investigate.query import seen

    return list(seen(database_files(db_dir=db_dir)))


def test_a_copy_is_not_changed_by_rendering(dbdir):
    """Rendering leaves the record as it was (the daemon hands the same dict to other writers)."""
    for record, source in sourced(dbdir):
        before = copy.deepcopy(record)
        ocsf.event(record, source)
        ecs.document(record, source)
        assert record == before


@pytest.mark.kernel
def test_real_processes_render_valid_events(capture, marker, validator):
    """Real processes through the real daemon: odd arguments, too many arguments, a failed exec,
    `exit 3` and SIGKILL, read back with `query --format ocsf|ecs`: every line is a valid OCSF
    1.8.0 event and an ECS document of the right types, and says what Popen saw (pid, parent,
    exit code, signal); `export --format ocsf --since 1d` has this test's own process, running
    when the daemon started, as a seen process with its real parent and executable."""
    import os
    import signal
    import subprocess

    from conftest import run_cli

    odd = [os.fsencode(str(marker)), b"a b", b"", b"\xff\xfe ok"]
    many = [str(marker)] + [f"x{i}" for i in range(199)]
    subprocess.run(odd, check=True)
    subprocess.run(many, check=True)
    missing = str(marker) + "-missing"
    with pytest.raises(FileNotFoundError):
        subprocess.Popen([missing, "x"])
    three = subprocess.Popen(["sh", "-c", "exit 3"])
    killed = subprocess.Popen(["sh", "-c", "kill -9 $$"])
    assert (three.wait(), killed.wait()) == (3, -signal.SIGKILL)
    capture.flush()

    def lines(fmt, *filters):
        p = run_cli("query", "--db-dir", capture.db_dir, "--format", fmt, *filters)
        assert p.returncode == 0, p.stderr
        return [json.loads(line) for line in p.stdout.decode().splitlines()]

    events = lines("ocsf", "--filename", f"{marker}*") + lines("ocsf", "--pid", three.pid) + \
        lines("ocsf", "--pid", killed.pid)
    for e in events:
        assert problems(validator, e) == [], e
    launched = [e for e in events if e["unmapped"]["event"] == "exec"
                and e["process"]["path"] == str(marker)]
    argvs = [e["unmapped"]["argv"] for e in launched]
    assert [str(marker), "a b", "", "\\xff\\xfe ok"] in argvs
    cut = next(e for e in launched if e["unmapped"]["argc"] == 200)
    assert cut["unmapped"]["args_truncated"] is True and cut["unmapped"]["argv"] == many[:128]
    failed = next(e for e in events if e["unmapped"]["event"] == "exec_failed")
    assert (failed["status_code"], failed["process"]["parent_process"]["pid"]) == ("ENOENT", os.getpid())
    ends = {e["process"]["pid"]: e for e in events if e["activity_id"] == ocsf.TERMINATE}
    assert ends[three.pid]["exit_code"] == 3 and ends[three.pid]["unmapped"]["signal"] == 0
    assert (ends[killed.pid]["exit_code"], ends[killed.pid]["unmapped"]["signal"]) == (0, 9)
    assert ends[three.pid]["device"]["boot_uid"] == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    docs = lines("ecs", "--pid", three.pid)
    assert docs and all(ecs_type_problems(d) == [] for d in docs)
    assert {d["event"]["type"][0] for d in docs} == {"start", "end"}
    # this test's own process was running when the daemon started: the export by time has it
    out = Path(str(marker) + ".ocsf.jsonl")
    p = run_cli("export", "--db-dir", capture.db_dir, "--format", "ocsf", "-o", out, "--since", "1d")
    assert p.returncode == 0, p.stderr
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(problems(validator, e) == [] for e in exported)
    me = [e for e in exported if e["activity_id"] == ocsf.OTHER and e["process"]["pid"] == os.getpid()]
    assert len(me) == 1
    assert me[0]["process"]["parent_process"]["pid"] == os.getppid()
    assert me[0]["process"]["path"] == os.readlink(f"/proc/{os.getpid()}/exe")


def test_events_share_nothing(dbdir):
    """Changing one rendered event (its device, product, profiles, argv, ECS host) changes
    neither the record nor the next event of the same source: what one writer does to its copy
    (the lake flattens, the stream adds) cannot reach another's."""
    record, source = by(sourced(dbdir), "exec", 102)
    first, fresh = ocsf.event(record, source), ocsf.event(record, source)
    first["device"]["os"]["name"] = "x"
    first["metadata"]["product"]["name"] = "x"
    first["metadata"]["profiles"].append("x")
    first["unmapped"]["argv"].append("x")
    first["actor"]["user"]["uid"] = "x"
    assert ocsf.event(record, source) == fresh and record["argv"][-1] != "x"
    doc, again = ecs.document(record, source), ecs.document(record, source)
    doc["host"]["os"]["kernel"] = "x"
    doc["process"]["args"].append("x")
    doc["agent"]["type"] = "x"
    assert ecs.document(record, source) == again and record["argv"][-1] != "x"
