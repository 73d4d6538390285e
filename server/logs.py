"""Logging for the server: structured JSON lines, or readable lines on a terminal.

One event per line on stderr with the standard fields ``time``, ``level``, ``event``,
``logger``, and, for access log lines, ``method``, ``code``, ``duration_ms`` and
``request_id`` (a random id per call, never derived from the request). What is logged is
chosen at the call sites: fixed texts, versions, field paths, codes. Never a request body.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any

ACCESS_FIELDS = ("method", "code", "duration_ms", "request_id", "peer_partner")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
            "logger": record.name,
        }
        for name in ACCESS_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info and record.exc_info[0] is not None:
            # The type only: an exception's message may quote a value.
            line["exception"] = record.exc_info[0].__name__
        return json.dumps(line, ensure_ascii=False)


class HumanFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(
            f"{name}={getattr(record, name)}"
            for name in ACCESS_FIELDS
            if getattr(record, name, None) is not None
        )
        when = dt.datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        text = f"{when} {record.levelname:<7} {record.name}: {record.getMessage()}"
        return f"{text} {extra}" if extra else text


def setup(level: str = "info", fmt: str = "auto") -> None:
    """Configure the root logger on stderr. ``fmt``: ``json``, ``text`` or ``auto`` (text on
    a terminal, JSON otherwise)."""
    handler = logging.StreamHandler(sys.stderr)
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler.setFormatter(JsonFormatter() if use_json else HumanFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper()))
    # gRPC's own "Exception calling application" lines would carry exception messages; our
    # handlers never let an exception escape, and this keeps it so if one ever did.
    logging.getLogger("grpc._server").setLevel(logging.CRITICAL)


def say(text: str, *, err: bool = False) -> None:
    """One line to stdout (or stderr) in a single write, so that lines printed by several
    threads or worker processes sharing the stream never interleave."""
    stream = sys.stderr if err else sys.stdout
    stream.write(text + "\n")
    stream.flush()
