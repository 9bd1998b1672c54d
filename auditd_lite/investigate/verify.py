"""`auditd-lite verify`: the hash chain of a database directory, or an export's seal.

For the daemon's files (``audit.db``, ``audit-*.db``), oldest first by
batch id:

- every batch is recomputed from its records (``chain.check_file``): an
  edited, added or deleted record, or an edited batch, is found;
- each file continues the chain of the one before (``chain.check_sequence``)
  and its batch ids follow on without a hole or an overlap: a removed middle
  file, a file from elsewhere, or a copy of a file is found;
- in each file, every run's counters (records written, loss) equal the sum
  of its batches there: the writer updates both in one transaction, so
  batches cut off the end of a file are found;
- the oldest file's chain must start at the beginning (batch 1's genesis)
  unless a run had retention on (``keep`` > 0), which removes old files;
- batches from before the chain (no hash: the first release) are checked for
  their records and named in a note, not taken for tampering; they can only
  come first, before a chain that begins at genesis (``chain.check_file``);
- a record of a batch whose hash does not cover the context (format 1 or 2,
  or none: written before schema revision 0003, its file upgraded in place
  since) must have none: its context columns came with the upgrade, NULL,
  and a value there was put in afterwards (``uncovered_context``);
- with ``--db-dir``, a ``.db`` file the daemon does not write is a problem
  (queries of the directory would read it as evidence);
- with ``--db-dir``, a live file the writer set aside (``audit-damaged-*``)
  that SQLite finds intact is checked with the others: the chain went on from
  its last batch (docs/design.md, "A live file that refuses a batch is set
  aside"). One that is not intact is damaged, and its batches count as missing.

For an export (a file with a ``manifest``): its sidecar ``.sha256``, the
manifest against the tables (format, counts per type, time range, chain
ends, content digest), every batch recomputed with the digests of the
records left out, and the chain followed without a hole from the first
exported batch to the last through ``chain_links``.

With ``--pubkey``, each export's signature too (``FILE.sig``, signing.py): good under the key,
over the file's SHA-256 and, for a SQLite export, the manifest it holds; a JSON-lines export
(ocsf, ecs), which has no manifest or chain, is checked by its signature and sidecar alone.
Without it, a signature beside an export is named in a note as not checked.

Each file is read inside one read transaction, so a live file the daemon is
writing is checked as one consistent snapshot. Standard library only, but for the signatures'
cryptography.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from .. import chain, signing
from . import seals
from ..dbfiles import daemon_running, database_files, file_is_export, is_chain_file, open_ro, set_aside_files
from ..errors import BadInput
from ..rows import CONTEXT_FIELDS, LATER_FIELDS
from .query import context_columns


REQUIRED_MANIFEST = ("format", "tool_version", "exported_at", "host", "kernel", "sources", "time_range",
                     "counts", "chain", "content_sha256", "tables")


@dataclass
class Report:
    problems: list = field(default_factory=list)  # chain.Problem
    notes: list = field(default_factory=list)
    files: int = 0
    batches: int = 0
    records: int = 0
    first_batch: int | None = None
    last_batch: int | None = None
    exports: int = 0
    seal_lines: list = field(default_factory=list)  # with --verify-key: one per file (seals.py)
    seals_checked: bool = False
    signed: int = 0  # exports whose signature was checked and holds
    key: str | None = None  # the fingerprint of the key they were checked with

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class _ChainFile:
    path: Path
    name: str
    fc: chain.FileChain
    lo: int | None
    hi: int | None
    first_is_genesis: bool
    keeps: list
    seals: list  # its seals (seals.read), from the snapshot its chain was checked in


def _read_transaction(conn: sqlite3.Connection) -> None:
    conn.isolation_level = None
    conn.execute("BEGIN")
    conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # take the snapshot now


def _check_chain_file(path: Path, report: Report) -> _ChainFile | None:
    name = str(path)
    conn = open_ro(path)
    try:
        _read_transaction(conn)
        try:
            fc = chain.check_file(conn, name, report.problems)
            uncovered_context(conn, name, report.problems)
            lo, hi, n = conn.execute("SELECT (SELECT min(id) FROM batches), (SELECT max(id) FROM batches), "
                                     "(SELECT count(*) FROM batches)").fetchone()
            report.records += conn.execute("SELECT count(*) FROM events").fetchone()[0]
            report.batches += n
            _check_run_counters(conn, name, report)
            keeps = []
            for (settings,) in conn.execute("SELECT settings FROM runs"):
                try:
                    keeps.append(json.loads(settings).get("keep"))
                except (TypeError, ValueError, AttributeError):
                    keeps.append(None)
            # in this snapshot: a seal read later could name a batch the chain check never saw
            file_seals = seals.read(conn, name)
        finally:
            conn.execute("ROLLBACK")
    except sqlite3.DatabaseError as exc:
        report.problems.append(chain.Problem(name, None, f"unreadable: {exc}"))
        return None
    finally:
        conn.close()
    note = chain.pre_chain_note(name, fc)
    if note:
        report.notes.append(note)
    # the first release numbered batches from 1, and batches from before the chain come first
    starts = lo == 1 if fc.pre_chain and fc.pre_chain[0] == lo else fc.first_prev == chain.GENESIS
    return _ChainFile(path, name, fc, lo, hi, starts, keeps, file_seals)


def uncovered_context(conn: sqlite3.Connection, name: str, problems: list) -> None:
    """A problem for each batch whose records have a value in a column its format does not
    cover (chain.FORMAT_COLUMNS: the context before format 3, the gate before format 4; every
    one without a hash): no hash vouches for it, and no writer put it there."""
    have = context_columns(conn)
    if not have:
        return  # a file from before the columns: nothing to put a value in
    # per format, the later columns it leaves uncovered, and the ids of such batches' records
    # (runs of batches merged)
    ranges: dict[tuple[str, ...], list[list[int]]] = {}
    for first, last, stored in conn.execute(
            "SELECT first_event_id, last_event_id, hash FROM batches ORDER BY id"):
        covered = chain.FORMAT_COLUMNS[chain.hash_format(stored)] if stored is not None else ()
        columns = tuple(c for c in LATER_FIELDS if c in have and c not in covered)
        if first is None or not columns:
            continue
        spans = ranges.setdefault(columns, [])
        if spans and first == spans[-1][1] + 1:
            spans[-1][1] = last
        else:
            spans.append([first, last])
    for columns, spans in ranges.items():
        anything = " OR ".join(f"{c} IS NOT NULL" for c in columns)
        what = ("an exec context" if set(columns) & set(CONTEXT_FIELDS) else "an exec gate (abi, "
                "parent_start_ns)")
        revision = "0003" if set(columns) & set(CONTEXT_FIELDS) else "0006"
        for lo, hi in spans:
            for batch_id, n in conn.execute(
                    f"SELECT batch_id, count(*) FROM events WHERE id BETWEEN ? AND ? AND ({anything}) "
                    "GROUP BY batch_id ORDER BY batch_id", (lo, hi)):
                problems.append(chain.Problem(name, batch_id, (
                    f"{n} record{'s' if n != 1 else ''} with {what} that the batch's hash "
                    f"(written before schema revision {revision}) does not cover: put in afterwards")))


def _check_run_counters(conn: sqlite3.Connection, name: str, report: Report) -> None:
    rows = conn.execute(
        "SELECT r.id, r.events_written, r.lost_kernel, r.lost_user, "
        "coalesce(sum(b.count), 0), coalesce(sum(b.lost_kernel), 0), coalesce(sum(b.lost_user), 0) "
        "FROM runs r LEFT JOIN batches b ON b.run_id = r.id GROUP BY r.id ORDER BY r.id").fetchall()
    for rid, written, lost_k, lost_u, b_count, b_lost_k, b_lost_u in rows:
        if (written, lost_k, lost_u) != (b_count, b_lost_k, b_lost_u):
            report.problems.append(chain.Problem(name, None, (
                f"run {rid} says it wrote {written} records (lost {lost_k}+{lost_u}) to this file, "
                f"its batches here hold {b_count} (lost {b_lost_k}+{b_lost_u}): batches removed or "
                "added, or the run edited")))
    orphans = conn.execute("SELECT DISTINCT run_id FROM batches WHERE run_id NOT IN (SELECT id FROM runs)"
                           ).fetchall()
    for (rid,) in orphans:
        report.problems.append(chain.Problem(name, None, f"batches of run {rid}, which has no run record"))


def _check_sequence(files: list[_ChainFile], report: Report) -> None:
    with_batches = sorted((f for f in files if f.lo is not None), key=lambda f: (f.lo, f.hi))
    for a, b in zip(with_batches, with_batches[1:]):
        if b.lo <= a.hi:
            report.problems.append(chain.Problem(b.name, b.lo, (
                f"batches {b.lo}..{min(a.hi, b.hi)} are also in {a.name}: a copy, or a file from "
                "another directory")))
        elif b.lo > a.hi + 1:
            report.problems.append(chain.Problem(b.name, b.lo, (
                f"batches {a.hi + 1}..{b.lo - 1} are missing between {a.name} and this file: "
                "a file was removed")))
        else:
            chain.check_sequence([(a.name, a.fc), (b.name, b.fc)], report.problems)
    if with_batches:
        first = with_batches[0]
        # the chain's span: from its first hashed batch (the batches before it are named in notes)
        chained = [f for f in with_batches if f.fc.first_hashed is not None]
        if chained:
            report.first_batch, report.last_batch = chained[0].fc.first_hashed, with_batches[-1].hi
        if not first.first_is_genesis:
            keeps = [k for f in files for k in f.keeps]
            if keeps and all(k == 0 for k in keeps):
                report.problems.append(chain.Problem(first.name, first.lo, (
                    "the chain does not start here (this batch follows one that is not in any file) "
                    "although no run had retention on (keep = 0): older files were removed")))
            else:
                known = sorted({k for k in keeps if k})
                report.notes.append(
                    f"the chain starts at batch {first.lo} in {first.name}: older files were removed"
                    + (f" (retention: keep = {', '.join(map(str, known))})" if known else ""))


# --- exports -----------------------------------------------------------------

def _sidecar(path: Path, report: Report, digest: str) -> None:
    side = Path(str(path) + ".sha256")
    name = str(path)
    try:
        text = side.read_text()
    except FileNotFoundError:
        report.problems.append(chain.Problem(name, None, f"no digest file {side.name}: the file's seal is missing"))
        return
    except (OSError, UnicodeDecodeError) as exc:
        report.problems.append(chain.Problem(name, None, f"cannot read {side.name}: {exc}"))
        return
    parts = text.split()
    if len(parts) < 1 or len(parts[0]) != 64:
        report.problems.append(chain.Problem(name, None, f"{side.name} is not in sha256sum format"))
        return
    if digest != parts[0].lower():
        report.problems.append(chain.Problem(name, None, f"SHA-256 differs from {side.name}: the file was changed"))
    if len(parts) >= 2 and parts[-1].lstrip("*") != path.name:
        report.notes.append(f"{side.name} names {parts[-1]!r}: the export was renamed")


def _check_export(path: Path, conn: sqlite3.Connection, report: Report) -> dict | None:
    """Check the export's tables against its manifest; the manifest, None if unreadable."""
    from .export import FORMAT, content_sha256, read_manifest

    name = str(path)
    bad = lambda reason, batch=None: report.problems.append(chain.Problem(name, batch, reason))  # noqa: E731
    try:
        manifest = read_manifest(conn)
    except (sqlite3.DatabaseError, ValueError, TypeError) as exc:
        bad(f"manifest unreadable: {exc}")
        return None
    missing = [k for k in REQUIRED_MANIFEST if k not in manifest]
    if missing:
        bad(f"manifest lacks {', '.join(missing)}")
        return manifest
    if manifest["format"] != FORMAT:
        bad(f"manifest format {manifest['format']!r} is not {FORMAT!r}")
    try:
        counts = {"exec": 0, "exec_failed": 0, "exit": 0}
        counts.update(dict(conn.execute("SELECT event, count(*) FROM events GROUP BY event")))
        counts["total"] = sum(counts.values())
        if counts != manifest["counts"]:
            bad(f"records per type {counts} differ from the manifest's {manifest['counts']}")
        tr = manifest["time_range"]
        first, last = conn.execute("SELECT (SELECT min(time_ns) FROM events), (SELECT max(time_ns) FROM events)").fetchone()
        if (first, last) != (tr.get("first_record_ns"), tr.get("last_record_ns")):
            bad("the records' time range differs from the manifest's")
        outside = conn.execute(
            "SELECT count(*) FROM events WHERE time_ns < coalesce(?, time_ns) OR time_ns >= coalesce(?, time_ns + 1)",
            (tr.get("since_ns"), tr.get("until_ns"))).fetchone()[0]
        if outside:
            bad(f"{outside} records lie outside the manifest's window")
        tables = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in manifest["tables"]}
        if tables != manifest["tables"]:
            bad(f"table sizes {tables} differ from the manifest's {manifest['tables']}")
        if content_sha256(conn) != manifest["content_sha256"]:
            bad("content digest differs from the manifest's: batches, chain links, omitted digests "
                "or runs were changed")

        omitted: dict[int, dict[int, bytes]] = {}
        exported_batches = {r[0] for r in conn.execute("SELECT id FROM batches")}
        for event_id, batch_id, digest in conn.execute("SELECT event_id, batch_id, digest FROM omitted_rows"):
            if batch_id not in exported_batches:
                bad(f"digest of record {event_id} for a batch that is not in the export", batch_id)
            omitted.setdefault(batch_id, {})[event_id] = bytes(digest)
        found: list[chain.Problem] = []
        note = chain.pre_chain_note(name, chain.check_file(conn, name, found, omitted))
        uncovered_context(conn, name, found)
        if note:
            report.notes.append(note)
        # links between batches are checked below, through chain_links as well
        report.problems.extend(p for p in found if not p.reason.startswith("chain broken"))
        links = conn.execute(
            "SELECT id, prev_hash, hash FROM batches UNION ALL SELECT id, prev_hash, hash FROM chain_links "
            "ORDER BY id").fetchall()
        prev = None
        for bid, prev_hash, stored in links:
            if prev is not None:
                if bid == prev[0]:
                    bad("batch is both exported and a chain link", bid)
                elif bid != prev[0] + 1:
                    bad(f"batches {prev[0] + 1}..{bid - 1} missing from the chain", bid)
                elif prev_hash != prev[1] and not (prev[1] is None and prev_hash == chain.GENESIS):
                    # (after a batch from before the chain, the chain begins at genesis)
                    bad("chain broken: previous batch missing or changed", bid)
            prev = (bid, stored)
        ch = manifest["chain"]
        ends = conn.execute("SELECT (SELECT min(id) FROM batches), (SELECT max(id) FROM batches)").fetchone()
        if ends != (ch.get("first_batch"), ch.get("last_batch")):
            bad("first or last batch differs from the manifest's chain")
        for table in ("events", "batches"):
            for (rid,) in conn.execute(f"SELECT DISTINCT run_id FROM {table} "
                                       "WHERE run_id NOT IN (SELECT id FROM runs)"):
                bad(f"{table} of run {rid}, which has no run record")
        report.records += counts["total"]
        report.batches += len(exported_batches)
    except sqlite3.DatabaseError as exc:
        bad(f"unreadable: {exc}")
    return manifest


def _check_signature(path: Path, digest: str, pubkey, report: Report, manifest: dict | None) -> dict | None:
    """Check the export's signature under ``pubkey`` and what its statement says of the file (a
    SQLite export when ``manifest`` is given, else JSON lines); the statement if all holds."""
    from .output import SCHEMA_FORMATS

    name = str(path)
    before = len(report.problems)
    bad = lambda reason: report.problems.append(chain.Problem(name, None, reason))  # noqa: E731
    try:
        statement = signing.check(path, pubkey)
    except signing.Unsigned as exc:
        bad(str(exc))
        return None
    sig = signing.signature_path(path).name
    if statement.get("sha256") != digest:
        bad(f"SHA-256 differs from the one signed in {sig}: the file was changed after it was signed")
    kind = statement.get("export_format")
    if (manifest is not None and kind != "sqlite") or (manifest is None and kind not in SCHEMA_FORMATS):
        bad(f"{sig} signs a {kind} export, and this file is {'SQLite' if manifest is not None else 'not SQLite'}")
    elif manifest is not None and statement.get("manifest") != manifest:
        bad(f"the manifest differs from the one signed in {sig}")
    if statement.get("file") != path.name:
        report.notes.append(f"{sig} names {statement.get('file')!r}: the export was renamed")
    if len(report.problems) > before:
        return None
    report.signed += 1
    report.key = statement["key"]
    return statement


def _is_sqlite(path: Path) -> bool:
    """Does the file start as SQLite files do? One that cannot be read counts as SQLite: opening
    it then says why in the usual words."""
    try:
        with open(path, "rb") as f:
            return f.read(16) in (b"SQLite format 3\x00", b"")
    except OSError:
        return True


def _check_lines_export(path: Path, pubkey, report: Report) -> None:
    """A JSON-lines export (ocsf, ecs): its sidecar and its signature."""
    from .export import file_sha256

    report.files += 1
    report.exports += 1
    digest = file_sha256(path)
    _sidecar(path, report, digest)
    statement = _check_signature(path, digest, pubkey, report, None)
    if statement is not None:
        report.records += (statement.get("counts") or {}).get("total", 0)


# --- entry -------------------------------------------------------------------

def verify(paths: list[Path] | None = None, db_dir=None, attempts: int = 3, verify_keys=(),
           now_ns: int | None = None, pubkey=None) -> Report:
    """Check files (or a directory's files); a directory rotated meanwhile is checked again.
    ``verify_keys`` (seal.VerifyKey): check the seals too (seals.py), at ``now_ns`` (now). With
    ``pubkey`` (files only), each file is an export whose signature is checked too."""
    seals_at = dict(keys=list(verify_keys), now_ns=now_ns, running=None)
    if paths is not None:
        return _verify([p for arg in paths for p in database_files(db_file=arg)], False,
                       seals_at=seals_at, pubkey=pubkey)
    for _ in range(attempts):
        listed = database_files(db_dir=db_dir)
        if not listed:
            raise BadInput(f"no database files in {db_dir}")
        seals_at["running"] = daemon_running(db_dir)
        report = _verify(list(reversed(listed)), True, set_aside_files(db_dir),  # oldest first
                         seals_at=seals_at)
        if database_files(db_dir=db_dir) == listed:
            return report
    raise BadInput(f"the files in {db_dir} kept changing (rotating) during verification; try again")


def _check_set_aside(path: Path, report: Report) -> _ChainFile | None:
    """A set-aside file that is intact joins the chain check; one that is not is left out."""
    try:
        conn = open_ro(path)
    except BadInput:
        return None  # not SQLite, or not ours: it was set aside for that, and holds no chain
    try:
        intact = conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    except sqlite3.DatabaseError:
        intact = False
    finally:
        conn.close()
    if not intact:
        return None
    report.files += 1
    report.notes.append(f"{path}: a live file the writer set aside: checked with the others, but "
                        "queries of the directory do not read it")
    return _check_chain_file(path, report)


def _verify(paths: list[Path], in_dir: bool, set_aside: list[Path] = (), seals_at=None,
            pubkey=None) -> Report:
    report = Report()
    chain_files: list[_ChainFile] = []
    for path in set_aside:
        checked = _check_set_aside(path, report)
        if checked is not None:
            chain_files.append(checked)
    for path in paths:
        if not in_dir and not _is_sqlite(path):
            if pubkey is not None:
                _check_lines_export(path, pubkey, report)
                continue
            if signing.signature_path(path).exists():
                raise BadInput(f"{path} is not SQLite: a JSON-lines export (ocsf, ecs) is checked by "
                               "its signature: give --pubkey")
        conn = open_ro(path)
        try:
            export = file_is_export(conn)
            if export:
                _read_transaction(conn)
                try:
                    manifest = _check_export(path, conn, report)
                finally:
                    conn.execute("ROLLBACK")
        finally:
            conn.close()
        if pubkey is not None and not export:
            raise BadInput(f"--pubkey checks exports: {path} is a file the daemon wrote "
                           "(verify it without --pubkey)")
        report.files += 1
        if export:
            from .export import file_sha256

            report.exports += 1
            digest = file_sha256(path)
            _sidecar(path, report, digest)
            if pubkey is not None:
                _check_signature(path, digest, pubkey, report, manifest or {})
            elif signing.signature_path(path).exists():
                report.notes.append(f"{path}: signed ({signing.signature_path(path).name}), but the "
                                    "signature was not checked: give --pubkey")
            if in_dir:
                report.problems.append(chain.Problem(str(path), None, (
                    "an export inside the database directory: queries of the directory read it "
                    "as if the daemon wrote it")))
            continue
        if in_dir and not is_chain_file(path):
            report.problems.append(chain.Problem(str(path), None, (
                "not a file the daemon writes (neither audit.db nor audit-*.db): queries of the "
                "directory read it as evidence")))
        checked = _check_chain_file(path, report)
        if checked is not None:
            chain_files.append(checked)
    _check_sequence(chain_files, report)
    _check_seals(chain_files, report, **(seals_at or {}))
    return report


def _check_seals(chain_files: list[_ChainFile], report: Report, keys=(), running=None,
                 now_ns=None) -> None:
    if keys:
        if report.exports:
            report.notes.append("exports carry no seals: --verify-key checks the daemon's files "
                                "(a signed export is checked with --pubkey)")
        if chain_files:
            seals.check(chain_files, keys, report, running=running, now_ns=now_ns)
            report.seals_checked = True
        return
    n = sum(len(f.seals) for f in chain_files)
    if n:
        report.notes.append(f"the {n} seal{'s' if n != 1 else ''} in these files "
                            f"{'were' if n != 1 else 'was'} not checked: give --verify-key")


def render(report: Report, out, err) -> int:
    for line in report.seal_lines:
        out.write(f"{line}\n")
    for p in report.problems:
        out.write(f"{p}\n")
    for n in report.notes:
        err.write(f"auditd-lite: note: {n}\n")
    if report.ok:
        span = (f"; chain intact from batch {report.first_batch} to {report.last_batch}"
                if report.first_batch is not None else "")
        out.write(f"ok: {report.files} file{'s' if report.files != 1 else ''}, {report.batches} batches, "
                  f"{report.records} records{span}"
                  + (f"; {report.exports} export{'s' if report.exports != 1 else ''} sealed and intact"
                     if report.exports else "")
                  + ("; seals hold" if report.seals_checked else "")
                  + (f"; {report.signed} signed by key {report.key}" if report.signed else "") + "\n")
        return 0
    err.write(f"auditd-lite: verification failed: {len(report.problems)} problem"
              f"{'s' if len(report.problems) != 1 else ''}\n")
    return 1
