"""`export --format parquet`: the Parquet lake, read back with DuckDB (a real engine, not ours).

Two hosts' histories are synthesized by bench/populate.py through the real BatchWriter (hash
chain, rotation, three runs over two boots, builds that make deep trees, curl piped into sh),
one host named with ``/``, ``=`` and a space; each is exported into the same lake directory by
the command line, and DuckDB's answers over the lake are held to `query`'s and `tree`'s on the
source databases, and to the rows of the SQLite files themselves.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

duckdb = pytest.importorskip("duckdb")
pa = pytest.importorskip("pyarrow")
import pyarrow.parquet as pq  # noqa: E402

from auditd_lite.chain import WRITE_FORMAT  # noqa: E402
from auditd_lite.dbfiles import connect_ro, database_files  # noqa: E402
from auditd_lite.investigate import lake  # noqa: E402
from auditd_lite.investigate.query import Filters, search  # noqa: E402

from conftest import REPO, cli_in_process, query_json, run_cli  # noqa: E402

HOSTS = {"web/01=a b": 118, "db-02": 7}  # host name -> populate's seed
RECORDS = 12_000
SHA_MAKE = hashlib.sha256(b"/usr/bin/make").hexdigest()  # populate hashes each path's name


def populate(d: Path, host: str, seed: int, records: int = RECORDS, days: float = 3) -> Path:
    subprocess.run([sys.executable, str(REPO / "bench" / "populate.py"), "--db-dir", str(d),
                    "--records", str(records), "--days", str(days), "--rotate-mb", "1", "--fast",
                    "--host", host, "--seed", str(seed), "--curl-sh", "4"],
                   check=True, capture_output=True, cwd=REPO)
    return d


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """{host: db dir} and the lake both were exported into."""
    top = tmp_path_factory.mktemp("lake")
    dirs = {h: populate(top / f"db{i}", h, seed) for i, (h, seed) in enumerate(HOSTS.items())}
    out = top / "lake"
    for d in dirs.values():
        status, text, err = cli_in_process("export", "--db-dir", d, "--format", "parquet", "-o", out)
        assert status == 0, err
    return dirs, out


def read(out: Path, select: str = "*", where: str = "true", params=()) -> list[tuple]:
    glob = str(out / "**" / "*.parquet")
    return duckdb.execute(f"SELECT {select} FROM read_parquet(?, hive_partitioning = true) WHERE {where}",
                          [glob, *params]).fetchall()


def source_rows(db_dir: Path) -> dict:
    """Every events row of the host's files, straight from SQLite: id -> column -> value."""
    out = {}
    for path in database_files(db_dir=db_dir):
        conn = connect_ro(path)
        conn.row_factory = sqlite3.Row
        conn.text_factory = lambda raw: raw.decode("utf-8", "backslashreplace")
        try:
            boots = dict(conn.execute("SELECT id, boot_id FROM runs"))
            for r in conn.execute("SELECT * FROM events"):
                out[r["id"]] = {**dict(r), "boot_id": boots[r["run_id"]]}
        finally:
            conn.close()
    return out


# --- layout and round trip ---------------------------------------------------------------

def test_layout_is_hive_partitioned_by_host_and_utc_day_with_names_escaped(fleet):
    """Every file is DIR/host=H/day=YYYY-MM-DD/part-*.parquet with the host percent-encoded
    (``/`` %2F, ``=`` %3D, space %20); DuckDB decodes the host back, and every row's day is the
    UTC date of its time_ns."""
    dirs, out = fleet
    files = sorted(out.rglob("*.parquet"))
    assert files and not list(out.rglob("*.tmp")) and not list(out.glob(".auditd-lite-lake-*"))
    hosts = {f.parent.parent.name for f in files}
    assert hosts == {"host=web%2F01%3Da%20b", "host=db-02"}
    for f in files:
        assert f.parent.name.startswith("day=") and f.name.startswith("part-")
    assert {h for (h,) in read(out, "DISTINCT host")} == set(HOSTS)
    # the day partition against the UTC date of each row's own nanoseconds
    for host, day, t in read(out, "host, day, unmapped.time_ns"):
        assert day == datetime.datetime.fromtimestamp(t // 10**9, datetime.timezone.utc).date(), (host, t)
    assert len({d for (d,) in read(out, "DISTINCT day")}) >= 3  # the 3 days span midnights


def test_round_trip_counts_and_every_record_field_by_field(fleet):
    """Per host: as many rows as records in the source files, per type; each row's ids, times,
    process identity and exit status equal to the SQLite row's, and every OCSF column equal to
    formats/ocsf.py's event of what `query`'s search yields for that record on the source
    directory (given the facts of its run, the files' copies of the run row merged)."""
    dirs, out = fleet
    columns = lake.default_columns()
    own = [pa.field(c, lake.arrow_type(pa, t)) for c, t, _ in lake.OWN_COLUMNS]
    names = [f.name for f in columns.fields(pa)] + [f.name for f in own]
    glob = str(out / "**" / "*.parquet")
    for host, d in dirs.items():
        raw = source_rows(d)
        counts = dict(read(out, "unmapped.event, count(*)", "host = ? GROUP BY 1", [host]))
        want = {}
        for r in raw.values():
            want[r["event"]] = want.get(r["event"], 0) + 1
        assert counts == want and sum(counts.values()) == len(raw) == RECORDS

        got = duckdb.execute("SELECT * EXCLUDE (host, day) FROM read_parquet(?, hive_partitioning = true) "
                             "WHERE host = ? ORDER BY record_id", [glob, host]).fetchall()
        got = [dict(zip(names, row)) for row in got]
        assert [g["record_id"] for g in got] == sorted(raw)
        for g in got:  # against the SQLite row itself
            r, u, p = raw[g["record_id"]], g["unmapped"], g["process"]
            assert (g["batch_id"], u["run_id"], g["device"]["boot_uid"], u["event"], u["time_ns"], u["start_ns"],
                    p["pid"], p["tid"], p["parent_process"]["pid"], p["user"]["uid"], u["errno"], u["cgroup_id"],
                    g["device"]["hostname"]) == \
                (r["batch_id"], r["run_id"], r["boot_id"], r["event"], r["time_ns"], r["start_ns"],
                 r["pid"], r["tid"], r["ppid"], str(r["uid"]), r["errno"], r["cgroup_id"], host), g["record_id"]
            assert g["time"] == r["time_ns"] // 10**6
            assert g["time_dt"] == datetime.datetime.fromtimestamp(r["time_ns"] // 1000 / 10**6, datetime.timezone.utc)
            if r["event"] == "exit":
                assert (u["status"], u["duration_ns"], u["signal"], g["exit_code"]) == \
                    (r["status"], r["duration_ns"], r["signal"], r["exit_code"]), g["record_id"]
                assert (r["status"] >> 8) & 0xFF == r["exit_code"]
            else:
                argv = [a.decode("utf-8", "backslashreplace") for a in r["argv"].split(b"\0")] if r["argv"] else []
                assert u["argv"] == argv, (host, g["record_id"])
        # every OCSF column: the mapping of the source directory's search results
        src = merged_sources(d)
        recs = sorted(search(database_files(db_dir=d), Filters(), ids=True), key=lambda r: r["id"])
        table = pa.Table.from_pylist([columns.row(r, src[r["run_id"]]) for r in recs],
                                     schema=pa.schema(columns.input_fields(pa)))
        want_ocsf = columns.finish(pa, table).to_pylist()
        ocsf_names = [f.name for f in columns.fields(pa)]
        for g, w, r in zip(got, want_ocsf, recs):
            assert {k: g[k] for k in ocsf_names} == w, (host, r["id"])


def merged_sources(d: Path) -> dict:
    """run id -> formats.Source of the run: its row's copies in every file of ``d`` merged, as
    the export carries it (the loss counters add up file by file)."""
    from auditd_lite.dbfiles import merge_run, run_rows
    from auditd_lite.formats import Source

    merged, revision = {}, None
    for path in database_files(db_dir=d):
        conn = connect_ro(path)
        try:
            revision = revision or conn.execute("SELECT version_num FROM alembic_version").fetchone()[0]
            for row in run_rows(conn):
                merge_run(merged, row)
        finally:
            conn.close()
    return {run["id"]: Source.from_run(run, revision) for run in merged.values()}


def test_every_attribute_the_mapping_gives_has_a_column(fleet):
    """No leaf of any record's OCSF event is missing from the lake's schema (pyarrow would drop
    it without a word), and every one of our own fields has its place under ``unmapped``."""
    from auditd_lite.formats import common

    dirs, out = fleet
    columns = lake.default_columns()
    known = {p for p, _ in columns.leaves}
    assert {f"unmapped.{f}" for f in common.OWN_FIELDS} <= known
    for d in dirs.values():
        src = merged_sources(d)
        seen = set()
        for r in search(database_files(db_dir=d), Filters(), ids=True):
            seen |= lake.leaf_paths(columns.row(r, src[r["run_id"]]))
        assert seen - known == set()
        assert {"process.file.hashes", "exit_code", "process.terminated_time_dt", "status_detail"} <= seen


def _json_type(schema: dict, node: dict, path: list[str]) -> dict:
    defs = schema["$defs"]
    for name in path:
        while "$ref" in node:
            node = defs[node["$ref"].rsplit("/", 1)[1]]
        node = node["properties"][name]
    while "$ref" in node:
        node = defs[node["$ref"].rsplit("/", 1)[1]]
    return node


def test_column_types_are_the_published_schemas():
    """Each OCSF column's Arrow type is what OCSF 1.8.0's JSON schema says of the attribute:
    integer as int64, string as string, an *_dt date-time as a timestamp, an array as a list
    (``unmapped``, an object OCSF leaves open, holds our own fields and is ours to type)."""
    from auditd_lite.formats import ocsf

    schema = json.loads((REPO / "tests" / "data" / "ocsf" / f"process_activity-{ocsf.OCSF_VERSION}.schema.json").read_text())
    expect = {"integer": pa.int64(), "string": pa.string(), "boolean": pa.bool_()}
    checked = 0
    for path, spec in lake.OCSF_LEAVES:
        if path.startswith("unmapped."):
            continue
        node = _json_type(schema, schema, path.split("."))
        t = lake.arrow_type(pa, spec)
        if node["type"] == "array":
            assert pa.types.is_list(t), path
            item = _json_type(schema, node["items"], [])
            if item.get("type") == "object":
                assert sorted(f.name for f in t.value_type) == sorted(set(item["properties"]) & {f.name for f in t.value_type}), path
                for f in t.value_type:
                    assert expect[item["properties"][f.name]["type"]] == f.type, (path, f.name)
            else:
                assert t.value_type == expect[item["type"]], path
        elif path.endswith("_dt"):
            assert node["type"] == "string" and "pattern" in node and pa.types.is_timestamp(t), path
        else:
            assert expect[node["type"]] == t, path
        checked += 1
    assert checked >= 60


# --- the same answers as query and tree ----------------------------------------------------

KEY = "device.boot_uid, unmapped.event, process.pid, unmapped.start_ns, unmapped.time_ns"


def _key(rec) -> tuple:
    return (rec["boot_id"], rec["event"], rec["pid"], rec["start_ns"], rec["time_ns"])


@pytest.mark.parametrize("flags, where", [
    (["--event", "exit", "--exit-code", "1"], "unmapped.event = 'exit' AND exit_code = 1"),
    (["--comm", "curl"], "process.name = 'curl'"),
    # execs only: query matches an exit through its exec only within one file, and the exit of
    # a process that lived across a rotation is in the next one (the lake's exits have it)
    (["--event", "exec", "--filename", "/usr/bin/*"], "unmapped.event = 'exec' AND process.file.path GLOB '/usr/bin/*'"),
    (["--event", "exec_failed"], "status_id = 2"),
    (["--signal", "9"], "unmapped.event = 'exit' AND unmapped.signal = 9"),
    (["--event", "exec", "--sha256", SHA_MAKE[:10]],
     f"unmapped.event = 'exec' AND starts_with(process.file.hashes[1].value, '{SHA_MAKE[:10]}')"),
    (["--arg", "install.sh"], "contains(process.cmd_line, 'install.sh')"),
])
def test_filters_give_what_query_gives(fleet, flags, where):
    """The records a DuckDB WHERE over the lake selects, per host, are the ones `query` with the
    matching flags prints for that host's database directory (exits matched through their exec)."""
    dirs, out = fleet
    for host, d in dirs.items():
        want = {_key(r) for r in query_json(d, *flags)}
        got = {tuple(row) for row in read(out, KEY,
                                          f"host = ? AND {where}", [host])}
        assert want and got == want, (host, flags, len(got), len(want))


def test_time_window_gives_what_query_gives(fleet):
    """--since/--until over the lake's time_ns equal `query --since --until` on the sources."""
    dirs, out = fleet
    for host, d in dirs.items():
        (lo, hi), = read(out, "min(unmapped.time_ns), max(unmapped.time_ns)", "host = ?", [host])
        a, b = lo + (hi - lo) // 3, lo + 2 * (hi - lo) // 3
        from auditd_lite.timeparse import format_time

        # query's times are microseconds: bound the lake's window the same way
        a, b = a // 1000 * 1000, b // 1000 * 1000
        want = {_key(r) for r in query_json(d, "--since", format_time(a), "--until", format_time(b))}
        got = {tuple(row) for row in read(out, KEY,
                                          "host = ? AND unmapped.time_ns >= ? AND unmapped.time_ns < ?", [host, a, b])}
        assert want and got == want


DESCENDANTS = """
WITH RECURSIVE rec AS (
    SELECT host, device.boot_uid AS boot_id, process.pid AS pid, process.parent_process.pid AS ppid,
           unmapped.start_ns AS start_ns, unmapped.duration_ns AS duration_ns FROM lake),
proc AS (
    SELECT host, boot_id, pid, start_ns, max(duration_ns) AS duration_ns FROM rec GROUP BY ALL),
edge AS (  -- a record names its parent: the process with that pid alive when it forked
    SELECT DISTINCT c.host, c.boot_id, p.pid AS ppid, p.start_ns AS pstart, c.pid, c.start_ns
    FROM rec c JOIN proc p ON p.host = c.host AND p.boot_id = c.boot_id AND p.pid = c.ppid
     AND p.start_ns <= c.start_ns AND (p.duration_ns IS NULL OR c.start_ns <= p.start_ns + p.duration_ns)),
tree AS (
    SELECT host, boot_id, pid, start_ns FROM proc
    WHERE host = $host AND boot_id = $boot AND pid = $pid AND start_ns = $start
    UNION
    SELECT e.host, e.boot_id, e.pid, e.start_ns FROM edge e
    JOIN tree t ON e.host = t.host AND e.boot_id = t.boot_id AND e.ppid = t.pid AND e.pstart = t.start_ns)
SELECT pid, start_ns FROM tree
"""


def _tree_descendants(node: dict, below: bool = False) -> set:
    found = {(node["pid"], node["start_ns"])} if below else set()
    for child in node.get("children", []):
        found |= _tree_descendants(child, True)
    return found


def _find_target(node: dict):
    if node.get("target"):
        return node
    for child in node.get("children", []):
        hit = _find_target(child)
        if hit is not None:
            return hit
    return None


def test_parent_child_join_gives_what_tree_gives(fleet):
    """The descendants of a build's root (recursive make: 8 to 16 levels) found by a recursive
    parent/child join over the lake are the ones `tree --format json` shows from the sources."""
    dirs, out = fleet
    con = duckdb.connect()
    glob = str(out / "**" / "*.parquet").replace("'", "''")
    con.execute(f"CREATE VIEW lake AS SELECT * FROM read_parquet('{glob}', hive_partitioning = true)")
    for host, d in dirs.items():
        info = json.loads((d / "populate.json").read_text())
        assert info["tree"] is not None
        p = run_cli("tree", str(info["tree"]["root_pid"]), "--db-dir", str(d), "--format", "json", check=0)
        doc = json.loads(p.stdout)
        target = _find_target(doc["tree"])
        want = _tree_descendants(target)
        assert len(want) >= 20
        got = {tuple(r) for r in con.execute(DESCENDANTS, {"host": host, "boot": target["boot_id"],
                                                           "pid": target["pid"], "start": target["start_ns"]}
                                             ).fetchall()} - {(target["pid"], target["start_ns"])}
        assert got == want, (host, len(got), len(want))


# --- metadata ---------------------------------------------------------------------------

def test_each_file_carries_the_manifest_facts(fleet):
    """Each file's key-value metadata: its host and day, the boots, time range and counts of its
    own rows (held to DuckDB's reading of that file), the hash of the last batch it covers (held
    to the source's batches table), and the export's manifest."""
    dirs, out = fleet
    hashes = {}
    for host, d in dirs.items():
        for path in database_files(db_dir=d):
            conn = connect_ro(path)
            try:
                hashes.update({(host, i): h for i, h in conn.execute("SELECT id, hash FROM batches")})
            finally:
                conn.close()
    for f in sorted(out.rglob("*.parquet")):
        md = {k.decode(): v.decode() for k, v in pq.read_metadata(f).metadata.items()
              if k.startswith(b"auditd_lite.")}
        host, day = md["auditd_lite.host"], md["auditd_lite.day"]
        assert md["auditd_lite.format"] == lake.LAKE_FORMAT and f.parent.name == f"day={day}"
        rows = duckdb.execute("SELECT unmapped.event, unmapped.time_ns, device.boot_uid, batch_id, host FROM read_parquet(?, "
                              "hive_partitioning = true)", [str(f)]).fetchall()
        assert {r[4] for r in rows} == {host}
        counts = json.loads(md["auditd_lite.counts"])
        assert counts["total"] == len(rows)
        for t in ("exec", "exec_failed", "exit"):
            assert counts[t] == sum(r[0] == t for r in rows)
        tr = json.loads(md["auditd_lite.time_range"])
        assert (tr["first_record_ns"], tr["last_record_ns"]) == (min(r[1] for r in rows), max(r[1] for r in rows))
        assert json.loads(md["auditd_lite.boots"]) == sorted({r[2] for r in rows})
        chain = json.loads(md["auditd_lite.chain"])
        assert chain["last_batch"] == max(r[3] for r in rows)
        assert chain["last_hash"] == hashes[(host, chain["last_batch"])] and chain["last_hash"].startswith(f"{WRITE_FORMAT}:")
        manifest = json.loads(md["auditd_lite.export"])
        assert manifest["format"] == "auditd-lite-export/2"
        assert [h for h, _ in manifest["recorded_hosts"]] == [host]
        assert manifest["counts"]["total"] == RECORDS


def test_manifest_is_the_sqlite_exports(fleet, tmp_path):
    """The manifest in the files is what `export` to SQLite computes for the same selection:
    counts, boots, chain ends, time range."""
    dirs, out = fleet
    host, d = next(iter(dirs.items()))
    status, _, err = cli_in_process("export", "--db-dir", d, "-o", tmp_path / "x.db")
    assert status == 0, err
    conn = connect_ro(tmp_path / "x.db")
    try:
        sealed = {k: json.loads(v) for k, v in conn.execute("SELECT key, value FROM manifest")}
    finally:
        conn.close()
    f = next(f for f in out.rglob("*.parquet") if pq.read_metadata(f).metadata[b"auditd_lite.host"] == host.encode())
    m = json.loads(pq.read_metadata(f).metadata[b"auditd_lite.export"])
    for k in ("counts", "recorded_boots", "chain", "time_range", "content_sha256", "gaps"):
        assert m[k] == sealed[k], k


# --- bad input and the optional dependency ---------------------------------------------------

def test_row_groups_buffered_as_arrow_lose_and_repeat_nothing(fleet, tmp_path, monkeypatch):
    """With events converted to Arrow every 700 and row groups of 3,000 rows, a host's lake
    holds each of its records once (the SQLite rows' ids), in files of several row groups of at
    most 3,000 rows."""
    dirs, _ = fleet
    host, d = next(iter(dirs.items()))
    monkeypatch.setattr(lake, "CONVERT_ROWS", 700)
    monkeypatch.setattr(lake, "ROWS_PER_GROUP", 3000)
    out = tmp_path / "groups"
    status, _, err = cli_in_process("export", "--db-dir", d, "--format", "parquet", "-o", out)
    assert status == 0, err
    ids = [i for (i,) in read(out, "record_id")]
    assert sorted(ids) == sorted(source_rows(d)) and len(ids) == len(set(ids)) == RECORDS
    groups = [pq.read_metadata(f) for f in out.rglob("*.parquet")]
    assert max(m.num_row_groups for m in groups) > 1
    assert all(m.row_group(i).num_rows <= 3000 for m in groups for i in range(m.num_row_groups))


def test_filtered_export_holds_only_the_selection(fleet, tmp_path):
    """export's own filters select for the lake too: --comm curl gives the curl records only,
    as many as `query --comm curl` finds."""
    dirs, _ = fleet
    host, d = next(iter(dirs.items()))
    out = tmp_path / "curl"
    status, text, err = cli_in_process("export", "--db-dir", d, "--format", "parquet", "--comm", "curl", "-o", out)
    assert status == 0, err
    got = {tuple(r) for r in read(out, KEY)}
    assert got == {_key(r) for r in query_json(d, "--comm", "curl")} and got


def test_existing_files_are_kept_without_force(fleet, tmp_path):
    """The same export again names the same files: refused (exit 2, files untouched) without
    --force, replaced with it; a failed export leaves no temporary file behind."""
    dirs, _ = fleet
    host, d = next(iter(dirs.items()))
    out = tmp_path / "l"
    assert cli_in_process("export", "--db-dir", d, "--format", "parquet", "-o", out)[0] == 0
    files = sorted(out.rglob("*.parquet"))
    before = {f: f.stat().st_mtime_ns for f in files}
    status, text, err = cli_in_process("export", "--db-dir", d, "--format", "parquet", "-o", out)
    assert status == 2 and "exists: use --force" in err and len(err.strip().splitlines()) == 1
    assert {f: f.stat().st_mtime_ns for f in sorted(out.rglob("*.parquet"))} == before
    assert not list(out.rglob("*.tmp")) and not list(out.glob(".auditd-lite-lake-*"))
    assert cli_in_process("export", "--db-dir", d, "--format", "parquet", "-o", out, "--force")[0] == 0
    assert sorted(out.rglob("*.parquet")) == files


@pytest.mark.parametrize("target, message", [("file", "is not a directory"), ("db", "database directory"),
                                             ("missing/lake", "no such directory")])
def test_bad_targets_are_refused(fleet, tmp_path, target, message):
    """A file, the database directory itself, or a directory under a missing one: exit 2 with one line."""
    dirs, _ = fleet
    d = next(iter(dirs.values()))
    (tmp_path / "file").write_text("x")
    out = d / "lake" if target == "db" else tmp_path / target
    status, _, err = cli_in_process("export", "--db-dir", d, "--format", "parquet", "-o", out)
    assert status == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (d / "lake").exists()


def test_nothing_to_export_is_exit_1_and_leaves_no_directory(fleet, tmp_path):
    """A selection with no record: exit 1, and the directory it would have made is not left."""
    dirs, _ = fleet
    d = next(iter(dirs.values()))
    out = tmp_path / "none"
    status, _, err = cli_in_process("export", "--db-dir", d, "--format", "parquet", "--comm", "no-such", "-o", out)
    assert status == 1 and "nothing to export" in err
    assert not out.exists()


BLOCK_PYARROW = ("import sys\n"
                 "class Block:\n"
                 "    def find_spec(self, name, path=None, target=None):\n"
                 "        if name == 'pyarrow' or name.startswith('pyarrow.'):\n"
                 "            raise ImportError('blocked: ' + name)\n"
                 "sys.meta_path.insert(0, Block())\n"
                 "from auditd_lite.cli import main\n"
                 "sys.exit(main(sys.argv[1:]))\n")


def test_without_pyarrow_parquet_says_what_to_install_and_sqlite_still_works(fleet, tmp_path):
    """With pyarrow not importable: --format parquet exits 2 with one line naming the extra to
    install (the package, or the extra in a checkout), and creates nothing; the SQLite export works as before."""
    dirs, _ = fleet
    d = next(iter(dirs.values()))
    out = tmp_path / "lake"
    p = subprocess.run([sys.executable, "-c", BLOCK_PYARROW, "export", "--db-dir", str(d), "--format",
                        "parquet", "-o", str(out)], capture_output=True, text=True, cwd=REPO)
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip() == f"auditd-lite: {lake.PYARROW_MISSING}"
    assert "apt install auditd-lite-lake" in p.stderr and not out.exists()
    p = subprocess.run([sys.executable, "-c", BLOCK_PYARROW, "export", "--db-dir", str(d), "-o",
                        str(tmp_path / "x.db")], capture_output=True, text=True, cwd=REPO)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "x.db").exists()


def test_bench_lake_runs_small(tmp_path):
    """bench/lake.py end to end at a small size: every record is a row of the lake, and the
    curl-piped-into-sh hunt finds the hosts populate.py put it on (its own exit status)."""
    p = subprocess.run([sys.executable, str(REPO / "bench" / "lake.py"), "--hosts", "3", "--records", "4000",
                        "--reps", "1", "--work", str(tmp_path / "w"), "--results", str(tmp_path / "r")],
                       capture_output=True, text=True, cwd=REPO, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    result = json.loads(next((tmp_path / "r").glob("*-lake.json")).read_text())
    assert result["rows"] == result["records_written"] == 12_000
    assert result["curl_sh"]["correct"] and "host-000.fleet.example" in result["curl_sh"]["hosts_found"]
    assert result["children"]["children"] > 0
