"""Structured logs: one JSON object per line (``AGL_LOG_FORMAT=json``) or plain text, both carrying the
correlation id of the request being served (the ``X-Correlation-ID`` that the events of that request carry)."""

from __future__ import annotations

import contextvars
import json
import logging
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["json", "text"]

#: The correlation id of the request this task serves (None outside requests or when the client sent none).
correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("agl_correlation_id", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(correlation_id)s]: %(message)s"

#: LogRecord attributes that are not ``extra=`` fields (and uvicorn's color_message, a copy of the message).
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "correlation_id",
    "taskName",
    "color_message",
}


class CorrelationFilter(logging.Filter):
    """Stamps every record with the current correlation id (``-`` when there is none)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.correlation_id = correlation_id.get() or "-"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, correlation_id, exception, extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "correlation_id": correlation_id.get(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")})
        return json.dumps(entry, default=str, ensure_ascii=False)


def log_handler(fmt: LogFormat) -> logging.Handler:
    handler = logging.StreamHandler()
    handler.addFilter(CorrelationFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    return handler


def configure_logging(fmt: LogFormat, level: str = "INFO") -> None:
    """Replace the root logger's handlers with one of ``fmt`` (a service process calls this once at start)."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(log_handler(fmt))
    root.setLevel(level.upper())
