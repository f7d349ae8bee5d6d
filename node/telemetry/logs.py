"""Structured logs: one JSON object per line per event, on stderr (docs/design.md §9).

    {"ts": "2026-01-01T00:00:00.123Z", "level": "INFO", "logger": "kledger.peer",
     "event": "peer_connected", "peer": "KOMCA"}

Code logs an event name and fields: `log_event(log, "peer_connected", peer=org)`. Plain
`log.info("text")` calls still work (the text becomes the event). Field values that JSON cannot
hold are written with repr(), so logging never raises.

What a hostile source can repeat at will (refused txs, throttled batches) is logged through a
`SummaryLog`: one line per source and interval with counts, never one line per event.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
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


# Sources a SummaryLog keeps counts for at once; beyond, the oldest is logged and forgotten.
MAX_SUMMARY_SOURCES = 1_024


@dataclass(slots=True)
class _Summary:
    last_logged_s: float
    counts: Counter[str] = field(default_factory=Counter)
    example: str = ""


class SummaryLog:
    """Rate-limited summary lines, one per source: the first event of a source is logged at
    once; later ones are counted and logged together (`counts` by cause, `example` the last
    message) once `interval_s` has passed since that source's last line, by the next event or
    by `flush` (called periodically). Memory is bounded by MAX_SUMMARY_SOURCES."""

    def __init__(
        self,
        logger: logging.Logger,
        event: str,
        source_field: str,
        interval_s: float,
        *,
        level: int = logging.WARNING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._event = event
        self._source_field = source_field
        self._interval_s = interval_s
        self._level = level
        self._clock = clock
        self._sources: dict[str, _Summary] = {}

    def note(self, source: str, cause: str, count: int = 1, example: str = "") -> None:
        now = self._clock()
        summary = self._sources.get(source)
        if summary is None:
            if len(self._sources) >= MAX_SUMMARY_SOURCES:
                oldest = next(iter(self._sources))
                self._emit(oldest, self._sources.pop(oldest), now)
            summary = self._sources[source] = _Summary(now - self._interval_s)
        summary.counts[cause] += count
        summary.example = example or summary.example
        if now - summary.last_logged_s >= self._interval_s:
            self._emit(source, summary, now)

    def flush(self) -> None:
        """Log every source whose interval has passed with counts waiting; forget quiet ones."""
        now = self._clock()
        for source, summary in list(self._sources.items()):
            if now - summary.last_logged_s < self._interval_s:
                continue
            if summary.counts:
                self._emit(source, summary, now)
            else:
                del self._sources[source]

    def _emit(self, source: str, summary: _Summary, now: float) -> None:
        if summary.counts:
            fields = {
                self._source_field: source,
                "counts": dict(sorted(summary.counts.items())),
                "example": summary.example,
            }
            log_event(self._logger, self._event, self._level, **fields)
        summary.counts.clear()
        summary.last_logged_s = now
