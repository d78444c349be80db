"""Chaos across processes (issue 17): three daemons on one PostgreSQL store, a Rossum emulator
and a downstream receiver that each fail a fifth of the calls (the emulator also answers 429
past its rate limit), 30 SIGKILLs at random with restarts. Nothing is lost, nothing is exported
twice, and an upload made twice is rare and ends as one document."""

from __future__ import annotations

import os

from tests.chaos import run_chaos

DOCS = int(os.environ.get("DOCRELAY_CHAOS_DOCS", "1000"))
KILLS = int(os.environ.get("DOCRELAY_CHAOS_KILLS", "30"))


def test_three_processes_killed_thirty_times_lose_nothing_and_export_once(tmp_path, pg_url):
    result = run_chaos(tmp_path, pg_url, docs=DOCS, processes=3, kills=KILLS, timeout=240)
    print(result.summary())
    assert result.documents == DOCS, result.summary()
    assert result.lost == [] and result.duplicate_exports == 0, result.summary()
    assert result.not_done == [], result.summary()
    assert len(result.duplicate_uploads) <= DOCS // 1000, result.summary()
    assert result.unreconciled == [], result.summary()
    assert result.faults["receiver"]["before"] + result.faults["receiver"]["after"] > 0
    assert result.faults["throttled"] > 0 and sum(result.faults["emulator"].values()) > 0
