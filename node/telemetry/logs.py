"""Structured logs: one JSON object per line per event, on stderr (docs/design.md §9).

    {"ts": "2026-01-01T00:00:00.123Z", "level": "INFO", "logger": "kledger.peer",
     "event": "peer_connected", "peer": "KOMCA"}

Code logs an event name and fields: `log_event(log, "peer_connected", peer=org)`. Plain
`log.info("text")` calls still work (the text becomes the event). Field values that JSON cannot
hold are written with repr(), so logging never raises.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

_FIELDS_ATTR = "kledger_fields"


class JsonLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        created = time.gmtime(record.created)
        millis = int(record.msecs)
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", created) + f".{millis:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
        }
        line.update(getattr(record, _FIELDS_ATTR, {}))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=repr, separators=(",", ":"), ensure_ascii=False)


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event with its fields as one JSON line."""
    if logger.isEnabledFor(level):
        logger.log(level, event, extra={_FIELDS_ATTR: fields})


def configure_logging(level: str = "INFO", stream: TextIO | None = None) -> logging.Handler:
    """Route the `kledger` loggers to one JSON-lines handler; returns the handler."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonLineFormatter())
    root = logging.getLogger("kledger")
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
    return handler
