"""structlog set-up shared by every Pushline process: JSON off a terminal, readable on one."""

from __future__ import annotations

import logging
import re
import sys
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import structlog

from schemas import jsontext


def shorten_token(token: str) -> str:
    """Tokens are credentials of a sort: logs carry only enough to tell them apart."""
    return token if len(token) <= 12 else f"{token[:6]}…{token[-4:]}"


# Query parameters whose values are never logged.
SECRET_PARAM = re.compile(r"key|token|secret|password|auth|sig", re.IGNORECASE)


def safe_url(url: str) -> str:
    """A URL as it may be logged: no user:password, secret-looking query values masked."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    query = urlencode(
        [
            (k, "***" if SECRET_PARAM.search(k) else v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
        ]
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def configure_logging(level: str = "INFO", json_logs: bool | None = None) -> None:
    if json_logs is None:
        json_logs = not sys.stderr.isatty()
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        # orjson: the accept line is written once per push, and the standard library's
        # encoder was a tenth of the API's CPU for a single-device push.
        structlog.processors.JSONRenderer(serializer=jsontext.dumps)
        if json_logs
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        # One write per line (PrintLogger writes the line and its newline apart, so a line
        # could be split by what another thread prints meanwhile).
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Libraries that log through the standard library (uvicorn, celery, aioapns) render
    # through the same processors: one JSON object per line off a terminal, a traceback
    # as one field of it.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    logging.captureWarnings(True)  # Python warnings (Celery's root warning) as log lines
    root.setLevel(logging.WARNING)  # quiet unless something is wrong
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery"):
        lib = logging.getLogger(name)
        lib.handlers[:] = []
        lib.propagate = True
    logging.getLogger("uvicorn.error").setLevel(logging.INFO)  # start and stop lines
    logging.getLogger("uvicorn.access").disabled = True  # producer/observe.py logs requests
