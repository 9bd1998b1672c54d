"""auditd-lite: a process audit logger built on eBPF tracepoints and SQLite."""

__version__ = "0.1.0"
