"""Logging set-up: one JSON object per line, with the request id of the request being served."""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar

#: The id of the HTTP request this code runs for ("-" outside one); set by the API middleware.
request_id: ContextVar[str] = ContextVar("request_id", default="-")

#: Libraries whose INFO and DEBUG lines print secrets: kept at WARNING whatever the level.
QUIET_LOGGERS = ("httpx", "httpcore")

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JSONFormatter(logging.Formatter):
    """A dozen lines rather than a dependency: ``json.dumps`` of the record and its extras."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": request_id.get(),
        }
        out.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def configure(level: str = "info", *, json_lines: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request's full URL at INFO (httpcore its connections at DEBUG): the
    # image_url and callback URLs of clients, with their passwords and presigned signatures.
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
