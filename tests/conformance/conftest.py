"""The conformance suite also runs over the test-only ``testkit`` vendor: it is registered for
each test here (and taken out again, so the rest of the suite sees the real registry)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from connectors import registry
from tests.conformance.testkit import VENDOR


@pytest.fixture(autouse=True)
def _testkit_registered(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(registry.BUILTIN["vendor"], "testkit", VENDOR)
    registry.available.cache_clear()
    yield
    monkeypatch.undo()
    registry.available.cache_clear()
