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


def test_bound_ids_are_on_every_line_of_the_thread_and_only_there():
    import threading

    from daemon import logs

    lines: list[dict[str, object]] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(json.loads(JsonFormatter(Redactor()).format(record)))

    handler = Collect()
    handler.addFilter(logs.IdsFilter())
    logger = logging.getLogger("docrelay.test.ids")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:

        def other_thread() -> None:
            logger.info("elsewhere")

        with logs.bound(submission_id=7):
            logs.bind(document_id=42)
            logger.info("in a connector")
            with logs.bound(delivery_id=3):
                logger.info("pushing", extra={"document_id": 9})  # named by the call: kept
            thread = threading.Thread(target=other_thread)
            thread.start()
            thread.join()
        logger.info("after")
    finally:
        logger.removeHandler(handler)
    by_msg = {line["msg"]: line for line in lines}
    assert by_msg["in a connector"]["submission_id"] == 7
    assert by_msg["in a connector"]["document_id"] == 42
    assert "delivery_id" not in by_msg["in a connector"]
    assert by_msg["pushing"]["delivery_id"] == 3
    assert by_msg["pushing"]["document_id"] == 9
    assert "document_id" not in by_msg["elsewhere"]
    assert "submission_id" not in by_msg["after"] and "document_id" not in by_msg["after"]


def test_daemon_json_log_names_each_document_it_extracts_and_exports(tmp_path):
    from tests.daemon_proc import DaemonProcess, drop_invoices, exported, wait_until, write_config

    config = write_config(tmp_path, log_format="json")
    daemon = DaemonProcess(config).start()
    drop_invoices(tmp_path / "inbox", 3, prefix="logged", first_seed=500)
    wait_until(lambda: exported(tmp_path) == 3, 60, what="three exports")
    assert daemon.stop() == 0
    entries = [json.loads(line) for line in daemon.log().splitlines() if line.strip()]
    extracted = [e for e in entries if "extracted by local" in str(e["msg"])]
    delivered = [e for e in entries if "exported to outbox" in str(e["msg"])]
    ids = {e["document_id"] for e in extracted}
    assert len(ids) == 3
    assert {e["document_id"] for e in delivered} == ids
    assert all(isinstance(e.get("submission_id"), int) for e in extracted + delivered)
    assert all(isinstance(e.get("delivery_id"), int) for e in delivered)
    for entry in extracted:
        assert entry["msg"].startswith(f"document {entry['document_id']} extracted by local: ")
