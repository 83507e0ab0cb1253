"""Structured JSON logs with trace ids, and a redaction processor that keeps personal data out.

Redaction is by allow-list: only keys known to carry no personal data (ids, codes, counts,
durations) pass through; every other value is replaced. Free text (the event message and
exception text) is additionally scrubbed of anything shaped like an e-mail address, phone
number, card number or date, because messages are where personal data slips in by accident.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog
from opentelemetry import trace

REDACTED = "[redacted]"

SAFE_KEYS = frozenset(
    {
        "event", "level", "timestamp", "logger", "service", "trace_id", "span_id",
        "rpc_method", "rpc_service", "grpc_code", "duration_ms", "caller", "peer_kind",
        "request_id", "person_id", "person", "persons", "account_count", "count", "batch", "line",
        "purpose", "purpose_id", "purpose_version", "channel", "decision", "reason", "status",
        "model_version", "port", "address", "graph_uri", "attempt", "max_attempts", "error_type",
        "records", "seconds", "sequence", "events", "checked", "valid", "kind", "method",
        "statement", "pid", "path", "version", "threshold", "source", "stack", "responses",
    }
)

_UNSCRUBBED = frozenset({"timestamp", "trace_id", "span_id", "level", "path", "graph_uri", "address",
                         "model_version", "version"})

_TEXT_PATTERNS = [
    re.compile(r"[^\s@'\"<>()]+@[^\s@'\"<>()]+\.[A-Za-z]{2,}"),  # e-mail
    re.compile(r"\+?\d[\d ()/.\-]{6,}\d"),  # phone / card numbers
    re.compile(r"\b\d{1,4}[./-]\d{1,2}[./-]\d{1,4}\b"),  # dates
]


def scrub_text(text: str) -> str:
    for pattern in _TEXT_PATTERNS:
        text = pattern.sub(REDACTED, text)
    return text


def redact(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: allow-listed keys pass, free text is scrubbed, the rest is replaced."""
    for key in list(event):
        value = event[key]
        if (key == "event" and isinstance(value, str)) or (key == "exception" and isinstance(value, str)):
            event[key] = scrub_text(value)
        elif key not in SAFE_KEYS:
            event[key] = REDACTED
        elif isinstance(value, str) and key not in _UNSCRUBBED:
            event[key] = scrub_text(value)
    return event


def add_trace_context(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event["trace_id"] = format(ctx.trace_id, "032x")
        event["span_id"] = format(ctx.span_id, "016x")
    return event


_min_level = logging.INFO


def info_enabled() -> bool:
    """Whether info lines are written. The per-call RPC line asks first: at a higher level the
    call through structlog's lazy logger costs a bound logger's creation only to be dropped."""
    return _min_level <= logging.INFO


def configure_logging(service: str, level: str = "info", fmt: str = "json", stream: Any = None) -> None:
    """Configures structlog and routes stdlib logging (grpc, neo4j, redis) through it."""
    global _min_level
    _min_level = logging.getLevelName(level.upper())
    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_trace_context,
        structlog.processors.format_exc_info,
        redact,
    ]
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(processor=renderer, foreign_pre_chain=shared))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(logging.getLevelName(level.upper()), logging.INFO))


def get_logger(name: str = "tessera") -> Any:
    return structlog.get_logger(name)
