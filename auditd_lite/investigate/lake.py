"""`auditd-lite export --format parquet -o DIR`: the selected records as a Parquet lake.

The records are the sealed export's (investigate/export.py selects them, reads each source
inside one snapshot and computes the manifest), reshaped as the existing engines read them:
DuckDB, Spark, Trino and Athena take a directory of Parquet files partitioned Hive-style as
one table, so files that many hosts export into one bucket are one table.

    DIR/host=<host>/day=<YYYY-MM-DD>/part-<export>-<n>.parquet

Columns (docs/design.md, "The Parquet lake"): the OCSF event of each record, its nested
objects as struct columns (the mapping is formats/ocsf.py's, our own fields in its
``unmapped``: ns times, the wait status whole, the raw ids), then OWN_COLUMNS (the row's id
and its batch in the hash chain). Partition values are not columns of the files (Spark refuses a column that
is in both), and every file's key-value metadata carries the manifest's facts.

pyarrow is an optional dependency (the ``lake`` extra); without it this says what to install.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..dbfiles import connect_ro
from ..durable import fsync_dir
from ..errors import BadInput
from . import export as sqlite_export
from .query import Filters, search

LAKE_FORMAT = "auditd-lite-lake/1"
PARTITIONS = ("host", "day")  # Hive partition keys, in path order
PART_NAME = "part-{export}-{n:04d}.parquet"
EXPORT_ID_CHARS = 16  # of the export's content_sha256: the same selection has the same names
ROWS_PER_GROUP = 64 * 1024  # rows of a row group: what a partition buffers (about 2 KiB a row in Arrow)
# records held as Python objects before they become Arrow columns: an OCSF event is a few KiB of
# dicts, its row in Arrow a few hundred bytes, so a row group is buffered as Arrow tables
CONVERT_ROWS = 16 * 1024
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


# our own columns: (column, Arrow type, the search record's key). The OCSF event carries the
# rest of what a record holds (our fields that OCSF has no attribute for in ``unmapped``): what
# it lacks are the row's ids in its file, the batch among them (its place in the hash chain).
OWN_COLUMNS = (
    ("record_id", "int64", "id"),
    ("batch_id", "int64", "batch_id"),
)


def arrow_type(pa, spec):
    """An Arrow type from the short names the column tables use (or an Arrow type as is)."""
    if not isinstance(spec, str):
        return spec
    if spec.startswith("list<") and spec.endswith(">"):
        return pa.list_(arrow_type(pa, spec[5:-1]))
    if spec == "timestamp_us":
        return pa.timestamp("us", tz="UTC")
    if spec == "fingerprint":  # OCSF's fingerprint object
        return pa.struct([("algorithm_id", pa.int64()), ("algorithm", pa.string()), ("value", pa.string())])
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
    rows: list = field(default_factory=list)  # events not yet converted
    tables: list = field(default_factory=list)  # converted, not yet written
    buffered: int = 0  # rows in tables
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
        own = [pa.field(c, arrow_type(pa, t)) for c, t, _ in OWN_COLUMNS]
        self.schema = pa.schema(columns.fields(pa) + own)
        self.input_schema = pa.schema(columns.input_fields(pa) + own)
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

    def convert(self, p: _Partition) -> None:
        """The partition's events so far as an Arrow table of the lake's schema."""
        if p.rows:
            p.tables.append(self.columns.finish(self.pa, self.pa.Table.from_pylist(p.rows, schema=self.input_schema)))
            p.buffered += len(p.rows)
            p.rows = []

    def flush(self, p: _Partition) -> None:
        """Write what the partition holds as one row group."""
        self.convert(p)
        if not p.tables:
            return
        if p.writer is None:
            import pyarrow.parquet as pq

            p.writer = pq.ParquetWriter(str(p.tmp), self.schema, compression=COMPRESSION)
        p.writer.write_table(self.pa.concat_tables(p.tables), row_group_size=ROWS_PER_GROUP)
        p.tables, p.buffered = [], 0

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

    def write(self, records) -> None:
        """Write ``records``, (record, formats.Source) pairs as search(sources=True) yields."""
        current = None
        for rec, src in records:
            host = src.host or NO_HOST
            p = self.part(host, day_of(rec["time_ns"]))
            if current is not None and p is not current:
                self.flush(current)  # records come newest first: a partition is seldom met again
            current = p
            row = self.columns.row(rec, src)
            row.update((c, rec.get(k)) for c, _, k in OWN_COLUMNS)
            p.add(rec, row)
            if len(p.rows) >= CONVERT_ROWS:
                self.convert(p)
                if p.buffered >= ROWS_PER_GROUP:
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
            fsync_dir(d)
        return sorted(done)


def _remove_empty_dirs(d: Path, top: Path) -> None:
    """Remove ``d`` and its parents up to (not including) ``top`` while they are empty."""
    while d != top and top in d.parents:
        try:
            d.rmdir()
        except OSError:
            return
        d = d.parent


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
        lake = _Lake(pa, out, columns, manifest, export_db)
        # each with its run's facts as the export holds them (the files' copies merged)
        lake.write(search([export_db], Filters(), sources=True, ids=True))
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

# Every attribute formats/ocsf.py's event() gives, as (dotted path, Arrow type): the types are
# OCSF's (integer_t, long_t and timestamp_t all int64; an *_dt datetime_t a timestamp, which
# every engine filters on as a time; ``unmapped`` our own fields, formats/common.OWN_FIELDS).
# tests/test_lake.py holds the paths to what event() gives and the types to the published
# JSON schema, so an attribute the mapping adds cannot be dropped on the way into Parquet.
DT = "timestamp_us"  # OCSF datetime_t: RFC 3339 text in the event, a UTC timestamp here
OCSF_LEAVES = (
    ("class_uid", "int64"), ("class_name", "string"),
    ("category_uid", "int64"), ("category_name", "string"),
    ("activity_id", "int64"), ("activity_name", "string"),
    ("type_uid", "int64"), ("type_name", "string"),
    ("severity_id", "int64"), ("severity", "string"),
    ("time", "int64"), ("time_dt", DT),
    ("status_id", "int64"), ("status", "string"), ("status_code", "string"), ("status_detail", "string"),
    ("exit_code", "int64"),
    ("metadata.version", "string"), ("metadata.profiles", "list<string>"),
    ("metadata.product.name", "string"), ("metadata.product.vendor_name", "string"),
    ("metadata.product.version", "string"),
    ("metadata.uid", "string"), ("metadata.event_code", "string"),
    ("metadata.log_provider", "string"), ("metadata.log_version", "string"),
    ("device.type_id", "int64"), ("device.type", "string"), ("device.hostname", "string"),
    ("device.name", "string"), ("device.boot_uid", "string"),
    ("device.os.name", "string"), ("device.os.type_id", "int64"), ("device.os.type", "string"),
    ("device.os.kernel_release", "string"),
    ("actor.process.pid", "int64"), ("actor.process.tid", "int64"), ("actor.process.uid", "string"),
    ("actor.process.name", "string"), ("actor.process.path", "string"), ("actor.process.cmd_line", "string"),
    ("actor.process.user.uid", "string"), ("actor.process.parent_process.pid", "int64"),
    ("actor.process.parent_process.uid", "string"),
    ("actor.user.uid", "string"),
    ("process.pid", "int64"), ("process.tid", "int64"), ("process.uid", "string"),
    ("process.name", "string"), ("process.path", "string"), ("process.cmd_line", "string"),
    ("process.file.name", "string"), ("process.file.path", "string"),
    ("process.file.type_id", "int64"), ("process.file.type", "string"),
    ("process.file.hashes", "list<fingerprint>"),
    ("process.created_time", "int64"), ("process.created_time_dt", DT),
    ("process.terminated_time", "int64"), ("process.terminated_time_dt", DT),
    ("process.user.uid", "string"), ("process.group.uid", "string"),
    ("process.euid", "int64"), ("process.auid", "int64"),
    ("process.session.uid", "string"), ("process.parent_process.pid", "int64"),
    ("process.parent_process.uid", "string"),
    ("process.working_directory", "string"), ("process.container.uid", "string"),
    ("unmapped.event", "string"), ("unmapped.time_ns", "int64"), ("unmapped.start_ns", "int64"),
    ("unmapped.old_pid", "int64"), ("unmapped.sessionid", "int64"), ("unmapped.cgroup_id", "int64"),
    ("unmapped.argc", "int64"), ("unmapped.args_truncated", "bool"), ("unmapped.errno", "int64"),
    ("unmapped.status", "int64"), ("unmapped.signal", "int64"), ("unmapped.core_dumped", "bool"),
    ("unmapped.duration_ns", "int64"), ("unmapped.cwd_status", "string"),
    ("unmapped.hash_status", "string"), ("unmapped.cgroup", "string"),
    ("unmapped.cgroup_status", "string"), ("unmapped.unit", "string"),
    ("unmapped.abi", "string"), ("unmapped.parent_start_ns", "int64"),
    ("unmapped.run_lost_kernel", "int64"), ("unmapped.run_lost_user", "int64"),
    ("unmapped.schema_revision", "string"), ("unmapped.run_id", "int64"),
    ("unmapped.start_tick_ns", "int64"), ("unmapped.argv", "list<string>"),
)


class OcsfColumns:
    """The OCSF part of a lake row: ``leaves`` (dotted OCSF path, type) give the schema and
    ``event(record, source)`` the nested values."""

    def __init__(self, leaves, event):
        self.leaves = tuple(leaves)
        self.event = event
        own = {c for c, _, _ in OWN_COLUMNS}
        clash = own & {path.split(".")[0] for path, _ in self.leaves}
        if clash:
            raise ValueError(f"OCSF columns named as our own: {sorted(clash)}")
        self.times = [path.split(".") for path, t in self.leaves if t == DT]

    def fields(self, pa) -> list:
        return nested_schema(pa, self.leaves)

    def input_fields(self, pa) -> list:
        """The fields as event() gives them: a datetime_t as its RFC 3339 text."""
        return nested_schema(pa, [(p, "string" if t == DT else t) for p, t in self.leaves])

    def row(self, rec: dict, src) -> dict:
        return self.event(rec, src)

    def finish(self, pa, table):
        """``table`` (input_fields) with each datetime_t text made a timestamp (the fields)."""
        import pyarrow.compute as pc

        def as_time(arr):
            # ns in the text: kept whole in unmapped.time_ns, microseconds here (Spark reads no finer)
            return pc.cast(arr, pa.timestamp("ns", "UTC")).cast(arrow_type(pa, DT), safe=False)

        for path in self.times:
            i = table.schema.get_field_index(path[0])
            col = _replace(pa, table.column(i).combine_chunks(), path[1:], as_time)
            table = table.set_column(i, pa.field(path[0], col.type), col)
        return table


def _replace(pa, arr, path: list[str], fn):
    """``arr`` with the leaf at ``path`` inside its structs replaced by ``fn`` of it."""
    if not path:
        return fn(arr)
    children, fields = [], []
    for f, child in zip(arr.type, arr.flatten()):
        if f.name == path[0]:
            child = _replace(pa, child, path[1:], fn)
            f = pa.field(f.name, child.type)
        children.append(child)
        fields.append(f)
    return pa.StructArray.from_arrays(children, fields=fields, mask=arr.is_null())


def default_columns() -> OcsfColumns:
    from ..formats import ocsf

    return OcsfColumns(OCSF_LEAVES, ocsf.event)
