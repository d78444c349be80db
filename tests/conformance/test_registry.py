"""Every registered connector takes part, and every one documents its settings."""

from __future__ import annotations

import subprocess
import sys
import typing

import pytest
from pydantic import BaseModel

from connectors import registry
from connectors.base import (
    ConnectorSettings,
    Destination,
    DestinationSettings,
    Source,
    SourceSettings,
    Vendor,
    VendorSettings,
)
from tests.conformance.harness import HARNESSES

CONNECTOR_ROLES = ("source", "vendor", "destination")
BASES = {
    "source": (Source, SourceSettings),
    "vendor": (Vendor, VendorSettings),
    "destination": (Destination, DestinationSettings),
}


def registered() -> list[tuple[str, str]]:
    kinds = registry.available()
    return [(role, kind) for role in CONNECTOR_ROLES for kind in sorted(kinds[role])]


def test_every_registered_connector_has_a_factory():
    missing = [f"{role} {kind}" for role, kind in registered() if kind not in HARNESSES[role]]
    assert missing == [], "registered without a conformance factory (tests/conformance/harness.py)"


def test_every_emulator_belongs_to_a_registered_vendor_or_destination():
    kinds = registry.available()
    assert set(kinds["emulator"]) <= set(kinds["vendor"]) | set(kinds["destination"])


@pytest.mark.parametrize(("role", "kind"), registered())
def test_the_connector_extends_its_role_and_settings_bases(role, kind):
    cls = registry.load(role, kind)
    connector_base, settings_base = BASES[role]
    assert issubclass(cls, connector_base)
    assert issubclass(cls.settings_model, settings_base)
    assert cls.kind == kind


def _undocumented(model: type[BaseModel], prefix: str = "") -> list[str]:
    missing = []
    for name, info in model.model_fields.items():
        if not (info.description or "").strip():
            missing.append(prefix + name)
        for candidate in (info.annotation, *typing.get_args(info.annotation)):
            inner = typing.get_args(candidate) or (candidate,)
            for item in inner:
                if isinstance(item, type) and issubclass(item, BaseModel):
                    missing += _undocumented(item, f"{prefix}{name}.")
    return missing


@pytest.mark.parametrize(("role", "kind"), registered())
def test_every_settings_field_has_a_docstring(role, kind):
    model = registry.load(role, kind).settings_model
    assert issubclass(model, ConnectorSettings)
    assert _undocumented(model) == [], "document each field with an attribute docstring"


def test_the_docstring_check_would_catch_one():
    class Bare(VendorSettings):
        kind: typing.Literal["bare"] = "bare"
        """Documented."""
        secret_sauce: int = 1

    assert _undocumented(Bare) == ["secret_sauce"]


def test_importing_the_registry_imports_no_connector_code():
    code = (
        "import sys, connectors.registry as r\n"
        "r.available()\n"
        "print(sorted(m for m in sys.modules if m.startswith(("
        "'connectors.vendors.', 'connectors.sources.', 'connectors.destinations.', "
        "'connectors.emulation'))))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "[]"
