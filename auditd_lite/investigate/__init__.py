"""The analysis side: query, tree, sql, export, verify, gaps and stats over
the database files, read-only. It imports nothing from capture, daemon or
storage (tests/test_import_boundary.py), so it runs without root, bcc or
SQLAlchemy."""
