"""`auditd-lite export --format parquet -o DIR`: the selected records as a Parquet lake.

The records are the sealed export's (investigate/export.py selects them, reads each source
inside one snapshot and computes the manifest), reshaped as the existing engines read them:
DuckDB, Spark, Trino and Athena take a directory of Parquet files partitioned Hive-style as
one table, so files that many hosts export into one bucket are one table.

    DIR/host=<host>/day=<YYYY-MM-DD>/part-<export>-<n>.parquet

Columns (docs/design.md, "The Parquet lake"): the OCSF event of each record, its nested
objects as struct columns (the mapping is formats/ocsf.py's), then our own columns
(OWN_COLUMNS: the raw ids, the record's nanosecond times, the wait status whole, the batch of
the hash chain). Partition values are not columns of the files (Spark refuses a column that
is in both), and every file's key-value metadata carries the manifest's facts.

pyarrow is an optional dependency (the ``lake`` extra); without it this says what to install.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..dbfiles import connect_ro
from ..errors import BadInput
from . import export as sqlite_export
from .query import Filters, search

LAKE_FORMAT = "auditd-lite-lake/1"
PARTITIONS = ("host", "day")  # Hive partition keys, in path order
PART_NAME = "part-{export}-{n:04d}.parquet"
EXPORT_ID_CHARS = 16  # of the export's content_sha256: the same selection has the same names
ROWS_PER_GROUP = 128 * 1024  # rows a partition buffers before writing a row group
COMPRESSION = "zstd"  # read by DuckDB, Spark 3, Trino and Athena (engine version 2 on)
META = "auditd_lite."  # the prefix of our key-value metadata keys
NO_HOST = "unknown"  # a run row without a host (never written by the daemon)

PYARROW_MISSING = ("Parquet needs pyarrow: pip install 'auditd-lite[lake]' "
                   "(Debian 12 has no python3-pyarrow package)")


def _pyarrow():
    """pyarrow and its parquet and dataset modules; BadInput saying what to install without it."""
    try:
        import pyarrow
        import pyarrow.dataset
        import pyarrow.parquet
    except ImportError:
        raise BadInput(PYARROW_MISSING) from None
    return pyarrow


# our own columns: (column, Arrow type, the search record's key). What OCSF has no place for
# or keeps in another shape: the row ids, the ns times (OCSF times are ms), the wait status
# whole (OCSF keeps exit_code), the raw numeric ids (OCSF user uids are strings).
OWN_COLUMNS = (
    ("record_id", "int64", "id"),
    ("run_id", "int64", "run_id"),
    ("batch_id", "int64", "batch_id"),
    ("boot_id", "string", "boot_id"),
    ("record_type", "string", "event"),
    ("time_ns", "int64", "time_ns"),
    ("start_ns", "int64", "start_ns"),
    ("duration_ns", "int64", "duration_ns"),
    ("wait_status", "int64", "status"),
    ("pid", "int64", "pid"),
    ("tid", "int64", "tid"),
    ("ppid", "int64", "ppid"),
    ("uid", "int64", "uid"),
    ("gid", "int64", "gid"),
    ("euid", "int64", "euid"),
    ("auid", "int64", "auid"),
    ("sessionid", "int64", "sessionid"),
    ("cgroup_id", "int64", "cgroup_id"),
    ("errno", "int64", "errno"),
    ("signal", "int64", "signal"),
    ("core_dumped", "bool", "core_dumped"),
    ("argv", "list<string>", "argv"),
)


def arrow_type(pa, spec):
    """An Arrow type from the short names the column tables use (or an Arrow type as is)."""
    if not isinstance(spec, str):
        return spec
    if spec.startswith("list<") and spec.endswith(">"):
        return pa.list_(arrow_type(pa, spec[5:-1]))
    if spec == "timestamp_ms":
        return pa.timestamp("ms", tz="UTC")
    return {"int64": pa.int64(), "int32": pa.int32(), "string": pa.string(), "bool": pa.bool_(),
            "float64": pa.float64()}[spec]


def nested_schema(pa, leaves) -> list:
    """Arrow fields from (dotted path, type) leaves: ``process.file.path`` becomes the struct
    column ``process`` with a struct ``file`` holding ``path``, in the order first named."""
    tree: dict = {}
    for path, spec in leaves:
        node = tree
        *parents, name = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"{path}: {p} is a leaf and an object")
        if name in node:
            raise ValueError(f"{path} named twice")
        node[name] = arrow_type(pa, spec)

    def fields(node):
        return [pa.field(k, pa.struct(fields(v)) if isinstance(v, dict) else v) for k, v in node.items()]

    return fields(tree)


def leaf_paths(value, prefix: str = "") -> set[str]:
    """The dotted paths of the non-null leaves of a nested dict (a list is a leaf)."""
    out: set[str] = set()
    for k, v in value.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict):
            out |= leaf_paths(v, path + ".")
        elif v is not None:
            out.add(path)
    return out


@dataclass
class _Partition:
    """One (host, day) of this export: its file being written and what its metadata says."""
    host: str
    day: str
    tmp: Path
    final: Path
    writer: object = None
    rows: list = field(default_factory=list)
    counts: dict = field(default_factory=dict)
    boots: set = field(default_factory=set)
    first_ns: int | None = None
    last_ns: int | None = None
    first_batch: int | None = None
    last_batch: int | None = None
    n: int = 0

    def add(self, rec: dict, row: dict) -> None:
        self.rows.append(row)
        self.n += 1
        self.counts[rec["event"]] = self.counts.get(rec["event"], 0) + 1
        self.boots.add(rec["boot_id"])
        t = rec["time_ns"]
        self.first_ns = t if self.first_ns is None else min(self.first_ns, t)
        self.last_ns = t if self.last_ns is None else max(self.last_ns, t)
        b = rec.get("batch_id")
        if b is not None:
            self.first_batch = b if self.first_batch is None else min(self.first_batch, b)
            self.last_batch = b if self.last_batch is None else max(self.last_batch, b)


def day_of(time_ns: int) -> str:
    """The UTC date of a record's time: its day partition."""
    return time.strftime("%Y-%m-%d", time.gmtime(time_ns // 10**9))


class _Lake:
    def __init__(self, pa, out: Path, columns, manifest: dict, export_db: Path):
        import pyarrow.dataset as ds

        self.pa = pa
        self.out = out
        self.columns = columns
        self.manifest = manifest
        self.export_id = manifest["content_sha256"][:EXPORT_ID_CHARS]
        self.partitioning = ds.partitioning(pa.schema([(k, pa.string()) for k in PARTITIONS]), flavor="hive")
        self.ds = ds
        self.schema = pa.schema(columns.fields(pa) + [pa.field(c, arrow_type(pa, t)) for c, t, _ in OWN_COLUMNS])
        conn = connect_ro(export_db)
        try:
            self.hash_of = dict(conn.execute("SELECT id, hash FROM batches"))
        finally:
            conn.close()
        self.parts: dict[tuple, _Partition] = {}

    def directory(self, host: str, day: str) -> Path:
        """The partition's directory, its values encoded by pyarrow's Hive partitioning (URI
        escapes: ``/`` is %2F and ``=`` %3D, which DuckDB, Hive, Spark and Trino decode)."""
        f = self.ds.field
        rel, _ = self.partitioning.format((f("host") == host) & (f("day") == day))
        return self.out / rel

    def part(self, host: str, day: str) -> _Partition:
        key = (host, day)
        if key not in self.parts:
            d = self.directory(host, day)
            d.mkdir(parents=True, exist_ok=True)
            final = d / PART_NAME.format(export=self.export_id, n=0)
            fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=d)
            os.close(fd)
            self.parts[key] = _Partition(host, day, Path(tmp), final)
        return self.parts[key]

    def flush(self, p: _Partition) -> None:
        if not p.rows:
            return
        table = self.pa.Table.from_pylist(p.rows, schema=self.schema)
        if p.writer is None:
            import pyarrow.parquet as pq

            p.writer = pq.ParquetWriter(str(p.tmp), self.schema, compression=COMPRESSION)
        p.writer.write_table(table, row_group_size=ROWS_PER_GROUP)
        p.rows = []

    def metadata(self, p: _Partition) -> dict:
        """The file's key-value metadata: its own facts, and the export's manifest."""
        from ..timeparse import format_time

        counts = {k: p.counts.get(k, 0) for k in ("exec", "exec_failed", "exit")}
        counts["total"] = p.n
        manifest = {k: v for k, v in self.manifest.items() if not k.startswith("_") and k != "sha256"}
        facts = {
            "format": LAKE_FORMAT,
            "host": p.host,
            "day": p.day,
            "boots": sorted(p.boots),
            "time_range": {"first_record": format_time(p.first_ns), "last_record": format_time(p.last_ns),
                           "first_record_ns": p.first_ns, "last_record_ns": p.last_ns},
            "counts": counts,
            "chain": {"first_batch": p.first_batch, "last_batch": p.last_batch,
                      "last_hash": self.hash_of.get(p.last_batch)},
            "export": manifest,
        }
        return {META + k: v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in facts.items()}

    def write(self, records, source_of) -> None:
        current = None
        for rec in records:
            src = source_of(rec["boot_id"])
            host = src["host"] or NO_HOST
            p = self.part(host, day_of(rec["time_ns"]))
            if current is not None and p is not current and len(current.rows):
                self.flush(current)  # records come newest first: a partition is seldom met again
            current = p
            row = self.columns.row(rec, src)
            row.update((c, rec.get(k)) for c, _, k in OWN_COLUMNS)
            if rec["event"] == "exit":
                row["argv"] = None  # search gives an exit [], which would read as an empty argv
            p.add(rec, row)
            if len(p.rows) >= ROWS_PER_GROUP:
                self.flush(p)
        for p in self.parts.values():
            self.flush(p)
            p.writer.add_key_value_metadata(self.metadata(p))
            p.writer.close()
            p.writer = None

    def discard(self) -> None:
        for p in self.parts.values():
            if p.writer is not None:
                try:
                    p.writer.close()
                except Exception:  # noqa: BLE001 - the export failed already; this is cleanup
                    pass
            try:
                p.tmp.unlink()
            except FileNotFoundError:
                pass
            _remove_empty_dirs(p.tmp.parent, self.out)

    def seal(self, force: bool) -> list[Path]:
        """Rename every file into place, all or none: refused (nothing renamed) where one exists."""
        taken = [p.final for p in self.parts.values() if p.final.exists() or p.final.is_symlink()]
        if taken and not force:
            raise BadInput(f"{taken[0]} exists: use --force to replace it")
        for p in self.parts.values():
            with open(p.tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.chmod(p.tmp, 0o444)
        done = []
        for p in self.parts.values():
            os.replace(p.tmp, p.final)
            done.append(p.final)
        for d in {p.final.parent for p in self.parts.values()}:
            fd = os.open(d, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        return sorted(done)


def _remove_empty_dirs(d: Path, top: Path) -> None:
    """Remove ``d`` and its parents up to (not including) ``top`` while they are empty."""
    while d != top and top in d.parents:
        try:
            d.rmdir()
        except OSError:
            return
        d = d.parent


def _sources(export_db: Path) -> dict:
    """Per boot id, the facts of the runs that recorded it: host, kernel, tool version."""
    conn = connect_ro(export_db)
    conn.row_factory = sqlite3.Row
    try:
        out = {}
        for r in conn.execute("SELECT boot_id, host, kernel, version FROM runs ORDER BY started_ns"):
            out.setdefault(r["boot_id"], {"boot_id": r["boot_id"], "host": r["host"], "kernel": r["kernel"],
                                          "version": r["version"]})
        return out
    finally:
        conn.close()


def _check_target(out: Path, db_dir: Path) -> None:
    if out.exists() and not out.is_dir():
        raise BadInput(f"{out} is not a directory: give the lake's directory with -o")
    parent = out.parent if str(out.parent) else Path(".")
    if not out.exists() and not parent.is_dir():
        raise BadInput(f"no such directory for the lake: {parent}")
    where = out if out.exists() else parent
    if not os.access(where, os.W_OK | os.X_OK):
        raise BadInput(f"cannot write in {where}")
    r, d = out.resolve(), db_dir.resolve()
    if r == d or d in r.parents:
        raise BadInput(f"refusing to write the lake into the database directory {db_dir}: "
                       "it would be read as evidence itself")


def export_lake(db_dir, out, filters: Filters, force: bool = False, argv: list[str] | None = None,
                progress_stream=None, note=None, columns=None) -> dict:
    """Write the selected records of ``db_dir`` into the lake ``out``; the export's manifest
    with ``files`` (the Parquet files written) and ``partitions``. BadInput/NotFound on failure."""
    pa = _pyarrow()
    db_dir, out = Path(db_dir), Path(out)
    _check_target(out, db_dir)
    columns = columns or default_columns()
    created = not out.exists()
    out.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".auditd-lite-lake-", dir=out))
    lake = None
    try:
        export_db = work / "export.db"
        manifest = sqlite_export.export(db_dir, export_db, filters, argv=argv,
                                        progress_stream=progress_stream, note=note)
        sources = _sources(export_db)
        unknown = {"boot_id": None, "host": None, "kernel": None, "version": None}
        lake = _Lake(pa, out, columns, manifest, export_db)
        lake.write(search([export_db], Filters(), ids=True), lambda boot: sources.get(boot, unknown))
        files = lake.seal(force)
        lake = None
        manifest["files"] = files
        manifest["partitions"] = sorted({(f.parent.parent.name, f.parent.name) for f in files})
        return manifest
    except BaseException:
        if lake is not None:
            lake.discard()
        if created:
            shutil.rmtree(work, ignore_errors=True)
            try:
                out.rmdir()
            except OSError:
                pass
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- the OCSF columns ---------------------------------------------------------------------

class OcsfColumns:
    """The OCSF part of a lake row: ``leaves`` (dotted OCSF path, type) give the schema and
    ``event(record, source)`` the nested values; a value at a path not in the schema would be
    dropped, which tests/test_lake.py holds against."""

    def __init__(self, leaves, event):
        self.leaves = tuple(leaves)
        self.event = event
        own = {c for c, _, _ in OWN_COLUMNS}
        clash = own & {path.split(".")[0] for path, _ in self.leaves}
        if clash:
            raise ValueError(f"OCSF columns named as our own: {sorted(clash)}")

    def fields(self, pa) -> list:
        return nested_schema(pa, self.leaves)

    def row(self, rec: dict, src: dict) -> dict:
        return self.event(rec, src)


def _ms(ns):
    return None if ns is None else ns // 10**6


def _cmd_line(rec):
    argv = rec.get("argv") if rec["event"] != "exit" else rec.get("exec_argv")
    return " ".join(argv) if argv else None


def _filename(rec):
    return rec.get("filename") if rec["event"] != "exit" else rec.get("exec_filename")


def _hashes(rec):
    return [{"algorithm_id": 3, "algorithm": "SHA-256", "value": rec["sha256"]}] if rec.get("sha256") else None


# OCSF 1.2 Process Activity (class 1007) from the record's own columns: (path, type, value).
# Used until formats/ocsf.py (the one owner of the mapping) is there.
_ACTIVITY = {"exec": (1, "Launch"), "exec_failed": (1, "Launch"), "exit": (2, "Terminate")}
FALLBACK_OCSF = (
    ("time", "timestamp_ms", lambda r, s: _ms(r["time_ns"])),
    ("activity_id", "int32", lambda r, s: _ACTIVITY[r["event"]][0]),
    ("activity_name", "string", lambda r, s: _ACTIVITY[r["event"]][1]),
    ("category_uid", "int32", lambda r, s: 1),
    ("category_name", "string", lambda r, s: "System Activity"),
    ("class_uid", "int32", lambda r, s: 1007),
    ("class_name", "string", lambda r, s: "Process Activity"),
    ("type_uid", "int64", lambda r, s: 100700 + _ACTIVITY[r["event"]][0]),
    ("type_name", "string", lambda r, s: "Process Activity: " + _ACTIVITY[r["event"]][1]),
    ("severity_id", "int32", lambda r, s: 1),
    ("severity", "string", lambda r, s: "Informational"),
    ("status_id", "int32", lambda r, s: 2 if r["event"] == "exec_failed" else 1),
    ("status", "string", lambda r, s: "Failure" if r["event"] == "exec_failed" else "Success"),
    ("status_code", "string", lambda r, s: r.get("errno_name") if r["event"] == "exec_failed" else None),
    ("exit_code", "int32", lambda r, s: r.get("exit_code")),
    ("metadata.version", "string", lambda r, s: "1.2.0"),
    ("metadata.product.name", "string", lambda r, s: "auditd-lite"),
    ("metadata.product.vendor_name", "string", lambda r, s: "auditd-lite"),
    ("metadata.product.version", "string", lambda r, s: s.get("version")),
    ("device.hostname", "string", lambda r, s: s.get("host")),
    ("device.os.name", "string", lambda r, s: "Linux"),
    ("device.os.type", "string", lambda r, s: "Linux"),
    ("device.os.type_id", "int32", lambda r, s: 200),
    ("device.os.version", "string", lambda r, s: s.get("kernel")),
    ("process.pid", "int32", lambda r, s: r["pid"]),
    ("process.tid", "int32", lambda r, s: r.get("tid")),
    ("process.uid", "string", lambda r, s: f"{r['boot_id']}:{r['pid']}:{r['start_ns']}"),
    ("process.name", "string", lambda r, s: r.get("comm")),
    ("process.cmd_line", "string", lambda r, s: _cmd_line(r)),
    ("process.file.path", "string", lambda r, s: _filename(r)),
    ("process.file.name", "string", lambda r, s: _filename(r).rsplit("/", 1)[-1] if _filename(r) else None),
    ("process.file.hashes", None, lambda r, s: _hashes(r)),
    ("process.created_time", "timestamp_ms", lambda r, s: _ms(r["time_ns"] - r["duration_ns"])
     if r["event"] == "exit" and r.get("duration_ns") is not None else None),
    ("process.terminated_time", "timestamp_ms", lambda r, s: _ms(r["time_ns"]) if r["event"] == "exit" else None),
    ("process.user.uid", "string", lambda r, s: None if r.get("uid") is None else str(r["uid"])),
    ("process.parent_process.pid", "int32", lambda r, s: r.get("ppid")),
    ("process.session.uid", "string", lambda r, s: None if r.get("sessionid") is None else str(r["sessionid"])),
)


def _fallback_event(rec: dict, src: dict) -> dict:
    out: dict = {}
    for path, _, value in FALLBACK_OCSF:
        v = value(rec, src)
        if v is None:
            continue
        node = out
        *parents, name = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[name] = v
    return out


def _fallback_leaves(pa) -> list:
    fingerprint = pa.list_(pa.struct([("algorithm_id", pa.int32()), ("algorithm", pa.string()),
                                      ("value", pa.string())]))
    return [(p, fingerprint if t is None else t) for p, t, _ in FALLBACK_OCSF]


def default_columns() -> OcsfColumns:
    pa = _pyarrow()
    return OcsfColumns(_fallback_leaves(pa), _fallback_event)


__all__ = ["export_lake", "LAKE_FORMAT", "OWN_COLUMNS", "PYARROW_MISSING", "day_of", "nested_schema", "leaf_paths"]
