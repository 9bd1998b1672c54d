"""structlog set-up: JSON lines for journald, a console renderer on a terminal."""

from __future__ import annotations

import logging
import sys

import structlog


def _fallback(obj):
    # logging must never crash its host: anything odd is logged as its repr
    return repr(obj)


def configure(level: str = "info", stream=None) -> None:
    stream = stream or sys.stderr
    processors = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if stream.isatty():
        processors.append(structlog.dev.ConsoleRenderer(colors=False))
    else:
        processors.append(structlog.processors.JSONRenderer(default=_fallback))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
