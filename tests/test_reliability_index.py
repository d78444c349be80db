"""Every scenario of RELIABILITY.md has a test named after its number, or a reason here.

A test of scenario N is a function or method named ``test_rNN_<what it checks>`` anywhere
under tests/. The scenario list is read from ``../shared/RELIABILITY.md`` beside the checkout
when it is there, else from the copy in tests/fixtures/reliability_scenarios.txt (a clean
clone has no ../shared); while both are there they must agree, so the copy stays current.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
SHARED = TESTS.parent.parent / "shared" / "RELIABILITY.md"
COPY = TESTS / "fixtures" / "reliability_scenarios.txt"
PREFIX = re.compile(r"^test_r(\d\d)_")

CANNOT_RUN_HERE: dict[int, str] = {
    26: "the power-loss variant: it needs a VM with a fault-injecting block device or file "
    "system (dm-flakey, LazyFS) to drop what was written but not synced; a SIGKILL cannot lose "
    "what the kernel accepted, so only the SIGKILL variant runs here (test_r26_*)",
    27: "jumping the real wall clock under a running daemon process: it needs CAP_SYS_TIME "
    "and a machine of its own (the test machine is shared); here the jump is made on the "
    "clock the pipeline and store read (test_r27_*)",
    28: "a real 10-minute suspend: too slow for the suite; test_r28_* SIGSTOPs the daemon for "
    "several scheduler intervals instead, which is the same misfire",
}
"""Scenarios, or parts of them, that cannot run on this machine or in this suite, and why.
A partial entry names the part; the rest of the scenario has its ``test_rNN_`` tests."""

NOT_COVERED_YET: dict[int, str] = {
    5: "READY=1 only after the DB and migrations succeed (the config half is test_r29_*)",
    8: "the inotify queue overflowed by 20 000 creates (event loss is simulated: test_r08_*)",
    10: "an audit of every open() path while hostile names are dropped",
    17: "connect and read timeouts through the real daemon; the loop-lag monitor",
    18: "no partly written extraction row after a malformed answer (rollback)",
    27: "DST transitions in a non-UTC zone; scheduled polls counted per day",
}
"""Parts of scenarios that could run here but have no test yet: a to-do list, which does not
count as coverage."""


def scenarios() -> dict[int, str]:
    """Scenario number → title, from RELIABILITY.md if present, else from the copy."""
    if SHARED.exists():
        return parse_reliability(SHARED.read_text(encoding="utf-8"))
    return parse_copy(COPY.read_text(encoding="utf-8"))


def parse_reliability(text: str) -> dict[int, str]:
    """The numbered items (``N. *Title* ...``) of RELIABILITY.md."""
    return {
        int(number): title.strip().rstrip(" :.")
        for number, title in re.findall(r"^(\d+)\. \*([^*]+)\*", text, re.MULTILINE)
    }


def parse_copy(text: str) -> dict[int, str]:
    """The ``number<TAB>title`` lines of the fixture copy."""
    found = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            number, title = line.split("\t", 1)
            found[int(number)] = title.strip()
    return found


def numbered_tests() -> dict[int, list[str]]:
    """Scenario number → ``file::name`` of each ``test_rNN_`` function or method."""
    found: dict[int, list[str]] = {}
    for path in sorted(TESTS.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                match = PREFIX.match(node.name)
                if match:
                    where = f"{path.relative_to(TESTS.parent)}::{node.name}"
                    found.setdefault(int(match.group(1)), []).append(where)
    return found


def test_every_scenario_has_a_numbered_test_or_a_reason_it_cannot_run_here():
    listed = scenarios()
    assert sorted(listed) == list(range(1, 33)), sorted(listed)
    tested = numbered_tests()
    missing = {
        n: title for n, title in listed.items() if n not in tested and n not in CANNOT_RUN_HERE
    }
    assert missing == {}, f"scenarios with neither a test_rNN_ test nor a reason: {missing}"


def test_numbered_tests_and_reasons_name_real_scenarios():
    listed = scenarios()
    stray = {n: names for n, names in numbered_tests().items() if n not in listed}
    assert stray == {}, "test_rNN_ names for scenarios RELIABILITY.md does not have"
    assert set(CANNOT_RUN_HERE) <= set(listed) and set(NOT_COVERED_YET) <= set(listed)
    assert all(reason.strip() for reason in [*CANNOT_RUN_HERE.values(), *NOT_COVERED_YET.values()])


def test_the_copy_of_the_scenario_list_matches_reliability_md():
    import pytest

    if not SHARED.exists():
        pytest.skip(f"{SHARED} is not beside this checkout; the copy is used as it is")
    assert parse_copy(COPY.read_text(encoding="utf-8")) == parse_reliability(
        SHARED.read_text(encoding="utf-8")
    ), f"update {COPY.name} from {SHARED}"


def test_the_index_sees_a_scenario_lose_its_test(tmp_path, monkeypatch):
    """The check is not vacuous: a tree without test_r04_ names reports scenario 4."""
    import sys

    module = sys.modules[__name__]
    (tmp_path / "test_x.py").write_text(
        "".join(f"def test_r{n:02d}_x():\n    pass\n" for n in range(1, 33) if n != 4)
        + "class TestY:\n    def test_r04x_not_a_match(self):\n        pass\n"
    )
    monkeypatch.setattr(module, "TESTS", tmp_path)
    assert 4 not in numbered_tests() and len(numbered_tests()) == 31
    monkeypatch.setattr(module, "CANNOT_RUN_HERE", {})
    try:
        test_every_scenario_has_a_numbered_test_or_a_reason_it_cannot_run_here()
    except AssertionError as failed:
        assert "4: " in str(failed)
    else:
        raise AssertionError("scenario 4 without a test went unnoticed")
