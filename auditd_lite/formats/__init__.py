"""Records in other projects' schemas: OCSF (``ocsf.event``) and ECS (``ecs.document``).

Pure functions of a record (the dict ``investigate.query.search`` yields, the keys of
``query --format json``) and a ``Source`` (what the record's file and run know and the record
does not: host, boot id, version, schema revision). No file or database is touched per record,
so the daemon can render each record it has written (docs/design.md, "OCSF and ECS").

Imports nothing from capture/, daemon/, storage/ or investigate/ (tests/test_import_boundary.py).
"""

from __future__ import annotations

from .source import Source, sources_of

__all__ = ["Source", "sources_of"]
