"""`auditd-lite export --format ocsf|ecs`: the selected records as JSON lines, one OCSF event or
ECS document each (formats/), for a SIEM or a data lake.

The same records as the SQLite export selects (its filters, the same chain files) in query's
order, newest first, written as query writes them (output.write_records); when only --since and
--until select, also the processes seen running when each run started (seen_processes: OCSF
activity Other, ECS ``existing_process``) listed in the window, in time order among the records. Written under a
temporary name beside OUT and renamed into place when complete, with ``OUT.sha256``
(``sha256sum`` format) as the SQLite export has. No manifest and no hash chain: the lines are a
rendering, and the databases they came from are the evidence (``auditd-lite verify``). If the
directory's file list changes while the lines are written (a rotation), they are written again.
"""

from __future__ import annotations

import heapq
import os
import tempfile
from collections import Counter
from pathlib import Path

from ..dbfiles import database_files, is_chain_file, is_set_aside, set_aside_note
from ..errors import BadInput, NotFound
from . import gaps, output, query
from .export import ATTEMPTS, check_request
from .export_copy import _only_time_selects
from .export_seal import seal_file
from .query import Filters


def export(db_dir, out, filters: Filters, fmt: str, force: bool = False, note=None) -> dict:
    """Write the lines; return counts per record type (and ``total``), ``files`` read,
    ``sha256`` of OUT and ``_gaps``. BadInput or NotFound on failure, OUT untouched. ``note`` is
    told of each set-aside file records came from."""
    if fmt not in output.SCHEMA_FORMATS:
        raise BadInput(f"bad format {fmt!r}: use {' or '.join(output.SCHEMA_FORMATS)}")
    db_dir, out = Path(db_dir), Path(out)
    check_request(out, db_dir, force, filters)
    for _ in range(ATTEMPTS):
        before = database_files(db_dir=db_dir)
        # newest first, as query reads (it skips files that hold none of the window, and finds an
        # exit's exec in any of them)
        files = [p for p in before if is_chain_file(p)]
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=str(out.parent) or ".")
        counts: Counter = Counter()
        per_file: dict = {}

        def counted(items):
            for item in items:
                counts[item[0]["event"]] += 1
                yield item

        try:
            try:
                items = query.search(files, filters, sources=True, per_file=per_file)
                if _only_time_selects(filters):
                    # what was running when each run started: there is no filter it could match
                    # but time, so only a window by time alone has them
                    seeds = query.seen(files, filters.since_ns, filters.until_ns, per_file)
                    items = heapq.merge(items, seeds, key=lambda pair: -pair[0]["time_ns"])
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    output.write_records(counted(items), fmt, f)
            except BadInput:
                if database_files(db_dir=db_dir) == before:
                    raise
            if database_files(db_dir=db_dir) != before:
                continue  # a rotation renamed a file while it was read: start over
            if not counts:
                raise NotFound("no records match: nothing to export")
            digest = seal_file(Path(tmp), out)
            tmp = None
            for path, n in per_file.items():
                if note is not None and is_set_aside(path):
                    note(f"{n} record{'s' if n != 1 else ''} from {set_aside_note(path)}")
        finally:
            if tmp is not None:
                os.unlink(tmp)
        total = {"exec": 0, "exec_failed": 0, "exit": 0, "seen": 0, **counts}
        total["total"] = sum(counts.values())
        return {"counts": total, "files": len(files), "sha256": digest,
                "_gaps": gaps.window_gaps(db_dir=db_dir, since_ns=filters.since_ns,
                                          until_ns=filters.until_ns)}
    raise BadInput(f"the files in {db_dir} kept changing during the export; try again")
