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
- from chain format 5, every other row an investigation reads: a file's runs,
  seen_processes and removed_files rows against the batches whose hashes
  cover them, each problem named by table, row and run (``evidence.check``);
- batches missing before the oldest file or between two files must be ones
  retention recorded removing (removed_files: the files, their batches and
  hashes), linked by their hashes: a retention cut is a note, batches no
  record accounts for were removed by someone else (a problem). Files
  written before such records existed fall back on the runs' settings: the
  chain may start late only if a run had retention on;
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
  that SQLite finds intact is checked with the others, as every reader reads
  it: the chain went on from its last batch (docs/design.md, "A live file that
  refuses a batch is set aside"). One that is not intact is damaged, and its
  batches count as missing.

With ``--verify-key``, a problem in a batch no seal covers yet says so (not yet sealed).

For an export (a file with a ``manifest``; verify_export.py): its sidecar ``.sha256``, the
manifest against the tables (format, counts per type, time range, chain
ends, content digest, and from export format 2 each table's digest), every batch recomputed
with the digests of the records left out, and the chain followed without a hole from the first
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
from . import evidence, seals
from ..dbfiles import (daemon_running, database_files, file_is_export, is_chain_file, is_set_aside, open_ro,
                       set_aside_files, set_aside_note)
from ..errors import BadInput
from ..rows import CONTEXT_FIELDS, LATER_FIELDS
from ..timeparse import format_time
from .query import context_columns



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
    keeps: list  # per run row: did it have retention on (its settings: retention, or keep > 0)
    seals: list  # its seals (seals.read), from the snapshot its chain was checked in
    found: evidence.Found = field(default_factory=evidence.Found)


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
            found = evidence.check(conn, name, report.problems, report.notes)
            lo, hi, n = conn.execute("SELECT (SELECT min(id) FROM batches), (SELECT max(id) FROM batches), "
                                     "(SELECT count(*) FROM batches)").fetchone()
            report.records += conn.execute("SELECT count(*) FROM events").fetchone()[0]
            report.batches += n
            _check_run_counters(conn, name, report, found.runs)
            keeps = []
            for (settings,) in conn.execute("SELECT settings FROM runs"):
                try:
                    s = json.loads(settings)
                    keeps.append(bool(s.get("retention", (s.get("keep") or 0) > 0)))
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
    return _ChainFile(path, name, fc, lo, hi, starts, keeps, file_seals, found)


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


def _check_run_counters(conn: sqlite3.Connection, name: str, report: Report, covered=()) -> None:
    """Runs written before chain format 5: their counters against their batches (evidence.py
    checks the ``covered`` runs, and every other column with them)."""
    rows = conn.execute(
        "SELECT r.id, r.events_written, r.lost_kernel, r.lost_user, "
        "coalesce(sum(b.count), 0), coalesce(sum(b.lost_kernel), 0), coalesce(sum(b.lost_user), 0) "
        "FROM runs r LEFT JOIN batches b ON b.run_id = r.id GROUP BY r.id ORDER BY r.id").fetchall()
    for rid, written, lost_k, lost_u, b_count, b_lost_k, b_lost_u in rows:
        if rid not in covered and (written, lost_k, lost_u) != (b_count, b_lost_k, b_lost_u):
            report.problems.append(chain.Problem(name, None, (
                f"run {rid} says it wrote {written} records (lost {lost_k}+{lost_u}) to this file, "
                f"its batches here hold {b_count} (lost {b_lost_k}+{b_lost_u}): batches removed or "
                "added, or the run edited")))
    orphans = conn.execute("SELECT DISTINCT run_id FROM batches WHERE run_id NOT IN (SELECT id FROM runs)"
                           ).fetchall()
    for (rid,) in orphans:
        report.problems.append(chain.Problem(name, None, f"batches of run {rid}, which has no run record"))


def _check_sequence(files: list[_ChainFile], report: Report) -> None:
    """Files oldest first by batch id: no batch twice, each file continuing the one before, and
    the batches missing before the first or between two told apart: removed by retention
    (recorded) or by someone else (docs/design.md, "Retention")."""
    with_batches = sorted((f for f in files if f.lo is not None), key=lambda f: (f.lo, f.hi))
    removed = evidence.Removed(r for f in files for r in f.found.removals)
    for a, b in zip(with_batches, with_batches[1:]):
        if b.lo <= a.hi:
            report.problems.append(chain.Problem(b.name, b.lo, (
                f"batches {b.lo}..{min(a.hi, b.hi)} are also in {a.name}: a copy, or a file from "
                "another directory")))
        elif b.lo > a.hi + 1:
            cut = removed.back_from(b.lo, b.fc.first_prev, stop=a.hi + 1)
            if cut and cut[0]["first_batch_id"] == a.hi + 1 and (
                    a.fc.last_hash is None or cut[0].get("first_prev_hash") == a.fc.last_hash):
                report.notes.append(f"batches {a.hi + 1}..{b.lo - 1}, between {a.name} and {b.name}, "
                                    f"were removed by retention (recorded: {evidence.removals_said(cut)})")
            else:
                report.problems.append(chain.Problem(b.name, b.lo, (
                    f"batches {a.hi + 1}..{b.lo - 1} are missing between {a.name} and this file, and "
                    "no record says retention removed them: a file was removed by someone else"
                    + _unread(removed))))
        else:
            chain.check_sequence([(a.name, a.fc), (b.name, b.fc)], report.problems)
    present = [(f.lo, f.hi) for f in with_batches]
    for r in removed.ranged:
        if any(lo <= r["last_batch_id"] and r["first_batch_id"] <= hi for lo, hi in present):
            report.notes.append(f"{r['name']} was recorded as removed by retention at "
                                f"{format_time(r['removed_ns'])}, but its batches "
                                f"{r['first_batch_id']}..{r['last_batch_id']} are still here: "
                                "the removal was cut short")
    if with_batches:
        first = with_batches[0]
        # the chain's span: from its first hashed batch (the batches before it are named in notes)
        chained = [f for f in with_batches if f.fc.first_hashed is not None]
        if chained:
            report.first_batch, report.last_batch = chained[0].fc.first_hashed, with_batches[-1].hi
        if not first.first_is_genesis:
            _check_start(first, files, removed, report)


def _unread(removed: evidence.Removed) -> str:
    if not removed.unread:
        return ""
    return (" (retention removed files it could not read, which may have held them: "
            + ", ".join(r["name"] for r in removed.unread) + ")")


def _check_start(first: _ChainFile, files: list[_ChainFile], removed: evidence.Removed,
                 report: Report) -> None:
    """The chain does not start in ``first``: the batches before it are a retention cut if the
    records of what retention removed account for them, linked by their hashes down to the
    chain's start, or down to a file written before such records existed."""
    cut = removed.back_from(first.lo, first.fc.first_prev)
    where = f"the chain starts at batch {first.lo} in {first.name}"
    if cut and (cut[0]["first_batch_id"] == 1 or cut[0].get("first_prev_hash") == chain.GENESIS):
        report.notes.append(f"{where}: batches {cut[0]['first_batch_id']}..{first.lo - 1} were removed by "
                            f"retention (recorded: {evidence.removals_said(cut[::-1])})")
        return
    # where what no record accounts for ends, and the hash of the batch before it
    top, before = (cut[0]["first_batch_id"], cut[0].get("first_prev_hash")) if cut else (first.lo, first.fc.first_prev)
    if before is not None and chain.hash_format(before) >= chain.EVIDENCE_FORMAT:
        recorded = f"; retention recorded removing batches {top}..{first.lo - 1}" if cut else ""
        report.problems.append(chain.Problem(first.name, first.lo, (
            f"{where}: batches before {top} are missing and no record says retention removed them "
            f"(they were written in chain format {chain.hash_format(before)}, which records every "
            f"removal){recorded}: removed by someone else" + _unread(removed))))
        return
    # written before removals were recorded: the runs' settings say whether retention was on
    keeps = [k for f in files for k in f.keeps]
    said = f"; then retention recorded removing {evidence.removals_said(cut[::-1])}" if cut else ""
    if keeps and not any(keeps):
        report.problems.append(chain.Problem(first.name, first.lo, (
            f"{where} (this batch follows one that is not in any file) although no run had "
            f"retention on: older files were removed{said}")))
    else:
        report.notes.append(f"{where}: older files were removed, before retention recorded its "
                            f"removals (a run had retention on){said}")


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
        damaged = [p for p in set_aside_files(db_dir) if p not in listed]
        report = _verify(list(reversed(listed)), True, damaged, seals_at=seals_at)  # oldest first
        if database_files(db_dir=db_dir) == listed:
            return report
    raise BadInput(f"the files in {db_dir} kept changing (rotating) during verification; try again")


def _verify(paths: list[Path], in_dir: bool, damaged: list[Path] = (), seals_at=None,
            pubkey=None) -> Report:
    from . import verify_export as exports  # only a run with exports needs it

    report = Report()
    chain_files: list[_ChainFile] = []
    for path in damaged:
        report.notes.append(f"{path}: a live file the writer set aside that SQLite does not find "
                            "intact: not read, and its batches count as missing")
    for path in paths:
        if not in_dir and not exports.is_sqlite(path):
            if pubkey is not None:
                exports.check_lines_export(path, pubkey, report)
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
                    manifest = exports.check_export(path, conn, report)
                finally:
                    conn.execute("ROLLBACK")
        finally:
            conn.close()
        if pubkey is not None and not export:
            raise BadInput(f"--pubkey checks exports: {path} is a file the daemon wrote "
                           "(verify it without --pubkey)")
        report.files += 1
        if export:
            from .export_seal import file_sha256

            report.exports += 1
            digest = file_sha256(path)
            exports.sidecar(path, report, digest)
            if pubkey is not None:
                exports.check_signature(path, digest, pubkey, report, manifest or {})
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
        if is_set_aside(path):
            report.notes.append(set_aside_note(path) + ": checked with them")
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
