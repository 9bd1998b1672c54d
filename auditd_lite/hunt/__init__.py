"""Hunting: Sigma rules over the recorded execs, over the history (history) and as they are
committed (follow). rules reads the rules (pySigma), matcher compiles their conditions, fields
is the field mapping, prefilter the index that spares most records most rules, parents the
parent of an exec, hunter the one matcher over rows, report what a hunt prints. Nothing here
imports capture/ or storage/ (tests/test_import_boundary.py): no root, bcc or SQLAlchemy;
follow, a daemon of its own, takes the live stream's file rotation from daemon/."""
