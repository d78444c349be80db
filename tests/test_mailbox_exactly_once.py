"""Exactly-once intake from a real Dovecot through the real daemon, killed at random points.

500 messages with 1 to 3 PDF attachments each, among them exact duplicate deliveries and the same
attachment in different mails. The rule moves every message to ``Done`` once its attachments
are stored. Pass: every distinct attachment is accepted once (the others are recorded as
duplicates), every message part has one row, every message ends in ``Done`` exactly once.
"""

from __future__ import annotations

import hashlib
import random
import time
from email.message import EmailMessage

from sqlalchemy import create_engine, text

from tests.daemon_proc import DaemonProcess, wait_until, write_config
from tests.dovecot import dovecot  # noqa: F401
from tests.invoices import one_page_pdf


def batch(rng: random.Random, first: int, count: int, pool: list[bytes]) -> list[bytes]:
    """``count`` messages numbered from ``first``; about 5 % are delivered twice."""
    messages: list[bytes] = []
    for number in range(first, first + count):
        msg = EmailMessage()
        msg["From"] = f"billing{number % 7}@supplier.example"
        msg["To"] = "invoices@example.com"
        msg["Subject"] = f"Invoice {number}"
        msg["Message-ID"] = f"<once-{number}@supplier.example>"
        msg.set_content("Invoice attached.")
        for index, data in enumerate(rng.sample(pool, rng.randint(1, 3)), 1):
            msg.add_attachment(
                data, maintype="application", subtype="pdf", filename=f"inv-{number}-{index}.pdf"
            )
        raw = msg.as_bytes()
        messages.append(raw)
        if rng.random() < 0.05:
            messages.append(raw)  # the same mail delivered twice
    return messages


def test_exactly_once_with_duplicates_and_kills(tmp_path, dovecot):
    rng = random.Random(4)
    pool = [
        one_page_pdf(f"Invoice P{n}") for n in range(300)
    ]  # 500 mails drawing 1 to 3 each: many shared
    first = batch(rng, 0, 250, pool)
    second = batch(rng, 250, 250, pool)
    mailbox = (
        dovecot.source_toml(batch_size=20)
        + """
[[sources.mailbox.rules]]
post_action = "move"
move_to = "Done"

[[routes]]
match = { source = ["mail"] }
vendor = "local"
"""
    )
    config = write_config(tmp_path, extra=mailbox)
    dovecot.create_folder("alice", "Done")

    def finished(total: int) -> bool:
        return len(dovecot.uids("alice", "Done")) >= total and not dovecot.uids("alice", "INBOX")

    # Round 1: a clean run.
    dovecot.append_many("alice", "INBOX", first)
    daemon = DaemonProcess(config).start()
    wait_until(lambda: finished(len(first)), 60, interval=0.5, what="the first batch")
    assert daemon.stop() == 0

    # Round 2: killed after a commit (before the post-action), then at random moments.
    dovecot.append_many("alice", "INBOX", second)
    crashing = DaemonProcess(config, env={"DOCRELAY_CRASH_AT": "after_document_commit@37"})
    crashing.start(wait_ready=False)  # the crash may come before the ready check sees it
    assert crashing.wait_exit(60) != 0, "the planned crash happened"
    kills = 0
    for _ in range(4):
        victim = DaemonProcess(config).start()
        time.sleep(rng.uniform(0.3, 1.5))
        if finished(len(first) + len(second)):
            assert victim.stop() == 0
            break
        victim.kill()
        kills += 1
    final = DaemonProcess(config).start()
    wait_until(
        lambda: finished(len(first) + len(second)), 90, interval=0.5, what="the second batch"
    )
    assert final.stop() == 0

    messages = first + second
    distinct_messages = set(messages)
    assert len(dovecot.uids("alice", "Done")) == len(messages), "each message moved once"
    engine = create_engine(f"sqlite:///{tmp_path}/var/docrelay.db")
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT source_ref, sha256, intake_state FROM documents WHERE source = 'mail'")
        ).all()
    engine.dispose()
    refs = [r.source_ref for r in rows]
    assert len(refs) == len(set(refs)), "no message part was taken twice"
    expected_parts = sum(m.count(b"Content-Disposition: attachment") for m in distinct_messages)
    assert len(rows) == expected_parts
    accepted = [r.sha256 for r in rows if r.intake_state == "accepted"]
    assert len(accepted) == len(set(accepted)), "every distinct attachment accepted once"
    used = {hashlib.sha256(p).hexdigest() for p in pool} & {r.sha256 for r in rows}
    assert set(accepted) == used
    assert {r.intake_state for r in rows} <= {"accepted", "duplicate"}
    assert kills >= 1, "at least one run was killed mid-way"
