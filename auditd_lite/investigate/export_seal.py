"""An export's seal: the digests its manifest carries of the tables the batch hashes do not
cover by themselves, the manifest read back, the file made read-only and renamed into place with
its ``.sha256``, and its signature (``--sign``, signing.py). export.py writes exports with these,
verify_export.py checks them.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path

from .. import chain, signing
from ..dbfiles import STREAM_COUNTERS, connect_ro
from ..durable import fsync_dir, write_whole


def _columns(conn: sqlite3.Connection, alias: str, table: str) -> list[str]:
    return [r[1] for r in conn.execute(f"PRAGMA {alias}.table_info({table})")]


FORMAT = "auditd-lite-export/2"


# the formats verify reads: 1 had one content digest, over fewer tables
FORMATS = ("auditd-lite-export/1", FORMAT)


LINK_COLUMNS = chain.BATCH_HEADER + ("prev_hash", "hash")  # chain_links's, and format 1's batches


# a batch's columns an export copies: from chain format 5, its header's evidence too, so that its
# hash can be recomputed (a source from before revision 0007 gives NULL)
BATCH_COLUMNS = LINK_COLUMNS + chain.EVIDENCE_COLUMNS


def file_sha256(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                return h.hexdigest()
            h.update(block)


def _digested(conn: sqlite3.Connection, fmt: str) -> list[tuple[str, tuple]]:
    """The tables (and their columns) an export's digests cover, in the manifest's ``fmt``."""
    run_cols = ("id", "boot_id", "host", "kernel", "version", "settings", "started_ns",
                "attached_ns", "stopped_ns", "lost_kernel", "lost_user", "events_written")
    # the stream's counters (revision 0004) where the export has them: an export made before
    # has not, and its digest stays what it was
    have = _columns(conn, "main", "runs")
    run_cols += tuple(c for c in STREAM_COUNTERS if c in have)
    if fmt == FORMATS[0]:
        return [("batches", LINK_COLUMNS), ("chain_links", LINK_COLUMNS),
                ("omitted_rows", ("event_id", "batch_id", "digest")), ("runs", run_cols)]
    batch_have = _columns(conn, "main", "batches")
    return [("batches", tuple(c for c in BATCH_COLUMNS if c in batch_have)), ("chain_links", LINK_COLUMNS),
            ("omitted_rows", ("event_id", "batch_id", "digest")), ("runs", run_cols),
            ("seen_processes", tuple(_columns(conn, "main", "seen_processes")))]


def table_sha256(conn: sqlite3.Connection, fmt: str = FORMAT) -> dict[str, str]:
    """The digest of each table the batch hashes do not cover by themselves (format 2)."""
    out = {}
    for table, cols in _digested(conn, fmt):
        h = hashlib.sha256()
        for row in conn.execute(f"SELECT {', '.join(cols)} FROM {table} ORDER BY 1"):
            h.update(repr(tuple(row)).encode())
        out[table] = h.hexdigest()
    return out


def content_sha256(conn: sqlite3.Connection, fmt: str = FORMAT) -> str:
    """The digest the manifest carries over what the batch hashes do not cover by themselves:
    in format 2 of its table_sha256, in format 1 of four tables in one."""
    if fmt != FORMATS[0]:
        return hashlib.sha256(json.dumps(table_sha256(conn, fmt), sort_keys=True).encode()).hexdigest()
    h = hashlib.sha256()
    for table, cols in _digested(conn, fmt):
        h.update(f"[{table}]".encode())
        for row in conn.execute(f"SELECT {', '.join(cols)} FROM {table} ORDER BY 1"):
            h.update(repr(tuple(row)).encode())
    return h.hexdigest()


def seal_file(tmp: Path, out: Path) -> str:
    """Make ``tmp`` read-only, rename it to ``out`` and write ``out.sha256`` beside it, all on
    disk before returning; the file's digest."""
    import threading

    def flush():  # to disk while the digest is computed from the page cache
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())

    flusher = threading.Thread(target=flush)
    flusher.start()
    digest = file_sha256(tmp)
    flusher.join()
    os.chmod(tmp, 0o444)
    os.replace(tmp, out)
    sidecar = Path(str(out) + ".sha256")
    write_whole(sidecar, f"{digest}  {out.name}\n".encode(), 0o444)
    try:  # the signature of the file this one replaced (--force) vouches for nothing now
        os.unlink(signing.signature_path(out))
    except FileNotFoundError:
        pass
    fsync_dir(out.parent)
    return digest


def read_manifest(conn: sqlite3.Connection) -> dict:
    """An export's manifest, each value decoded."""
    return {k: json.loads(v) for k, v in conn.execute("SELECT key, value FROM manifest")}


def sign(out: Path, fmt: str, key, force: bool, facts: dict | None = None) -> tuple[Path, str]:
    """Sign the export just written to ``out`` (--sign): the statement carries a SQLite export's
    manifest as read back from the file; (the .sig path, the key's fingerprint)."""
    if fmt == "sqlite":
        conn = connect_ro(out)
        try:
            facts = {"manifest": read_manifest(conn)}
        finally:
            conn.close()
    return signing.sign(out, fmt, file_sha256(out), key, facts or {}, force)
