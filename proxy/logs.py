"""The proxy's log lines on stderr: ``text`` for people, ``json`` for log pipelines.

``json`` writes one JSON object per line::

    {"time": "2024-05-01T12:00:00.123Z", "level": "warning", "logger": "durable_proxy.invoker",
     "message": "attempt 2 of inv_... failed: ...", "invocation_id": "inv_...", "attempt": 2}

``time`` is UTC with milliseconds. Whatever a log call passes in ``extra=`` (the proxy
passes ``invocation_id`` and ``attempt`` where it knows them) becomes a field of its own;
an exception's traceback is the ``exception`` field, a stack the ``stack`` field, so a
record never spans several lines.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

__all__ = ["TEXT_FORMAT", "JsonFormatter", "configure_logging", "uvicorn_log_config"]

LogFormat = Literal["text", "json"]

#: The ``text`` format.
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: The attributes every ``LogRecord`` has: anything else came from ``extra=``. Also left out:
#: ``color_message``, the copy of its message with terminal colours that uvicorn adds.
_STANDARD_ATTRIBUTES = frozenset(
    [*vars(logging.LogRecord("", 0, "", 0, "", None, None)), "message", "asctime", "taskName", "color_message"]
)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRIBUTES and not key.startswith("_") and key not in payload:
                payload[key] = value
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            payload["exception"] = record.exc_text
        if record.stack_info:
            payload["stack"] = self.formatStack(record.stack_info)
        return json.dumps(payload, ensure_ascii=False, default=str)


def formatter_for(fmt: LogFormat | str) -> logging.Formatter:
    if fmt == "json":
        return JsonFormatter()
    if fmt == "text":
        return logging.Formatter(TEXT_FORMAT)
    raise ValueError(f"log format must be text or json, got {fmt!r}")


def configure_logging(level: str, fmt: LogFormat | str = "text", stream: TextIO | None = None) -> None:
    """Log records of ``level`` and above to ``stream`` (stderr) in format ``fmt``.

    Like ``logging.basicConfig``: nothing changes if the root logger already has handlers.
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter_for(fmt))
    logging.basicConfig(level=level.upper(), handlers=[handler])


def uvicorn_log_config(fmt: LogFormat | str) -> dict[str, Any] | None:
    """What to pass as ``uvicorn.Config(log_config=...)``: in ``json``, None, so that uvicorn leaves
    logging alone and its own records reach the root logger's JSON handler; in ``text``, uvicorn's
    default configuration."""
    if fmt == "json":
        return None
    from uvicorn.config import LOGGING_CONFIG

    return LOGGING_CONFIG
