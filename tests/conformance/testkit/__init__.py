"""The test-only ``testkit`` vendor (``vendor.py``) and its emulator (``emulator.py``)."""

from __future__ import annotations

VENDOR = "tests.conformance.testkit.vendor:TestkitVendor"


def register() -> None:
    """Make ``kind = "testkit"`` known to the registry of this process."""
    from connectors import registry

    registry.BUILTIN["vendor"]["testkit"] = VENDOR
    registry.available.cache_clear()
