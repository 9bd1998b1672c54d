"""Domain errors, turned into one-line messages and exit statuses at the CLI edge only."""


class AuditdLiteError(Exception):
    """Base class; ``exit_status`` is what the CLI exits with."""

    exit_status = 2


class BadInput(AuditdLiteError):
    """A bad argument, file, directory or value: exit status 2."""


class NotFound(AuditdLiteError):
    """A well-formed request that matched nothing: exit status 1."""

    exit_status = 1


class CannotCapture(AuditdLiteError):
    """This host or user cannot load the programs (no root, no BPF, no bcc)."""
