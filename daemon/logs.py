"""Structured logging (console or one JSON object per line) with secret redaction.

Every configured secret is replaced by ``***`` in the final log line, whatever put it there: a
message, an argument, an exception text or a traceback.

The ids of what a thread works on (``document_id``, ``submission_id``, ``delivery_id``,
``feedback_id``) are fields of every line it logs while it does, connectors' lines included,
so ``jq 'select(.document_id == 42)'`` finds all there is about one document.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


_NONE: Mapping[str, int] = MappingProxyType({})
_ids: ContextVar[Mapping[str, int]] = ContextVar("docrelay_log_ids", default=_NONE)
"""The ids the current thread works on; each thread starts with none."""


@contextmanager
def bound(**ids: int) -> Iterator[None]:
    """Put ``ids`` on every line logged in this block (and what ``bind`` adds in it)."""
    token = _ids.set({**_ids.get(), **ids})
    try:
        yield
    finally:
        _ids.reset(token)


def bind(**ids: int) -> None:
    """Add ids learnt inside a ``bound`` block (the document of a claimed row); they go
    when the block ends."""
    _ids.set({**_ids.get(), **ids})


class IdsFilter(logging.Filter):
    """Copies the bound ids onto each record, unless the call named them itself (a group
    commit logs other threads' deliveries with their own ids in ``extra``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _ids.get().items():
            if key not in record.__dict__:
                setattr(record, key, value)
        return True


class Redactor:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret containing another is replaced whole.
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text


class JsonFormatter(logging.Formatter):
    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "thread": record.threadName,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return self.redact(json.dumps(entry, default=str, ensure_ascii=False))


class ConsoleFormatter(logging.Formatter):
    def __init__(self, redact: Redactor) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extras = {
            k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")
        }
        if extras:
            text += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return self.redact(text)


def setup(level: str = "info", fmt: str = "console", secrets: Iterable[str] = ()) -> None:
    """Configure the root logger once for the process."""
    redact = Redactor(secrets)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(redact) if fmt == "json" else ConsoleFormatter(redact))
    handler.addFilter(IdsFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("watchdog", "apscheduler.executors", "httpx", "httpcore", "alembic", "PIL"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    logging.getLogger("apscheduler.scheduler").setLevel(max(logging.WARNING, root.level))
