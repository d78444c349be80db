"""Structured logs and secret redaction."""

from __future__ import annotations

import json
import logging

from daemon.logs import ConsoleFormatter, JsonFormatter, Redactor


def record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("docrelay.test", logging.WARNING, __file__, 1, msg, args, None)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_json_lines_carry_extras_and_redact_secrets():
    redact = Redactor(["s3cr3t-token", "hunter22"])
    line = JsonFormatter(redact).format(
        record("login failed for %s with %s", "ap@example.com", "hunter22", url="x?t=s3cr3t-token")
    )
    entry = json.loads(line)
    assert entry["level"] == "warning"
    assert entry["msg"] == "login failed for ap@example.com with ***"
    assert entry["url"] == "x?t=***"
    assert "hunter22" not in line and "s3cr3t-token" not in line


def test_console_redacts_exception_text():
    redact = Redactor(["Bearer abcdef123456"])
    try:
        raise RuntimeError("upstream said: Authorization: Bearer abcdef123456")
    except RuntimeError:
        import sys

        rec = record("call failed")
        rec.exc_info = sys.exc_info()
    text = ConsoleFormatter(redact).format(rec)
    assert "abcdef123456" not in text
    assert "Authorization: ***" in text


def test_short_values_are_not_treated_as_secrets():
    assert Redactor(["ab"])("tab stop") == "tab stop"
