"""Intake sources: where documents come from (watched folders, mailboxes)."""
