"""Hunting: Sigma rules over the recorded execs, over the history (history) and as they are
committed (follow). rules reads and compiles the rules (pySigma), fields is the field mapping,
prefilter the index that spares most records most rules, parents the parent of an exec.
Nothing here imports capture/ or storage/ (tests/test_import_boundary.py): no root, bcc or
SQLAlchemy; follow, a daemon of its own, takes the live stream's file rotation from daemon/."""
