"""verify's checks of exports (auditd_lite.investigate.export, export_lines): a SQLite export's
sidecar, its manifest against its tables, its batches recomputed with the digests of the records
left out and followed through chain_links; a JSON-lines export's sidecar; and with a public key,
each export's signature (signing.py). What verify.py says of them is in its docstring.

Standard library only, but for the signatures' cryptography.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from .. import chain, signing
from . import verify as daemon_files

REQUIRED_MANIFEST = ("format", "tool_version", "exported_at", "host", "kernel", "sources", "time_range",
                     "counts", "chain", "content_sha256", "tables")


def sidecar(path: Path, report, digest: str) -> None:
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


def check_export(path: Path, conn: sqlite3.Connection, report) -> dict | None:
    """Check the export's tables against its manifest; the manifest, None if unreadable."""
    from .export_seal import FORMATS, content_sha256, read_manifest, table_sha256

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
    fmt = manifest["format"]
    if fmt not in FORMATS:
        bad(f"manifest format {fmt!r} is not one of {', '.join(map(repr, FORMATS))}")
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
        if fmt == FORMATS[0]:
            if content_sha256(conn, fmt) != manifest["content_sha256"]:
                bad("content digest differs from the manifest's: batches, chain links, omitted digests "
                    "or runs were changed")
        else:
            _tables_digests(conn, manifest, bad, table_sha256, content_sha256)

        omitted: dict[int, dict[int, bytes]] = {}
        exported_batches = {r[0] for r in conn.execute("SELECT id FROM batches")}
        for event_id, batch_id, digest in conn.execute("SELECT event_id, batch_id, digest FROM omitted_rows"):
            if batch_id not in exported_batches:
                bad(f"digest of record {event_id} for a batch that is not in the export", batch_id)
            omitted.setdefault(batch_id, {})[event_id] = bytes(digest)
        found: list[chain.Problem] = []
        note = chain.pre_chain_note(name, chain.check_file(conn, name, found, omitted))
        daemon_files.uncovered_context(conn, name, found)
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


def _tables_digests(conn, manifest: dict, bad, table_sha256, content_sha256) -> None:
    """Format 2: each table's digest (naming a table that differs) and the content digest over
    them."""
    said = manifest.get("table_sha256")
    if not isinstance(said, dict):
        bad("manifest lacks table_sha256")
        return
    have = table_sha256(conn, manifest["format"])
    for table in sorted(set(have) | set(said)):
        if have.get(table) != said.get(table):
            bad(f"the {table} table differs from the manifest's digest of it: its rows were changed")
    if content_sha256(conn, manifest["format"]) != manifest["content_sha256"]:
        bad("content digest differs from the manifest's: the tables' digests were changed")


def check_signature(path: Path, digest: str, pubkey, report, manifest: dict | None) -> dict | None:
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


def is_sqlite(path: Path) -> bool:
    """Does the file start as SQLite files do? One that cannot be read counts as SQLite: opening
    it then says why in the usual words."""
    try:
        with open(path, "rb") as f:
            return f.read(16) in (b"SQLite format 3\x00", b"")
    except OSError:
        return True


def check_lines_export(path: Path, pubkey, report) -> None:
    """A JSON-lines export (ocsf, ecs): its sidecar and its signature."""
    from .export_seal import file_sha256

    report.files += 1
    report.exports += 1
    digest = file_sha256(path)
    sidecar(path, report, digest)
    statement = check_signature(path, digest, pubkey, report, None)
    if statement is not None:
        report.records += (statement.get("counts") or {}).get("total", 0)
