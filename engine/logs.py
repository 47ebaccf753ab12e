"""Logging for the service: human-readable lines, or one JSON object per line for log shipping.

JSON lines carry ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message`` and any
``extra={...}`` fields the call passed; an exception adds ``exception`` (its traceback).
Nothing secret is ever logged by the engine (tokens, keys and secret tool arguments stay
out of messages), so the format needs no scrubbing of its own. Messages do carry text a
client chose (a subject, a tool name, an error from a tool): both formats show its control
characters escaped (``engine.printable``), so that an ANSI sequence or a newline in a
token's ``sub`` cannot forge or hide log lines. Tracebacks keep their newlines.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys

from .printable import printable

# Attributes every LogRecord has: anything else on a record came from `extra=`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": printable(record.getMessage()),
        }
        entry.update({key: value for key, value in vars(record).items() if key not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message``, the message's control characters escaped."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        record.message = printable(record.message)
        return super().formatMessage(record)


def configure(fmt: str = "text", level: int = logging.INFO) -> None:
    """Log to stderr (journald collects it under systemd) in ``text`` or ``json``."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
