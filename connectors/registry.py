"""Which connector implements which ``kind``.

Built-in connectors are listed here by import path so that importing the registry imports no
connector code; third-party packages add their own through the ``docrelay.connectors`` entry-point
group, named ``<role>.<kind>`` (e.g. ``vendor.acme = "acme_docrelay:AcmeVendor"``).

Emulators are registered the same way, role ``emulator``: the kind is the vendor's (or the
destination's, ``odoo``) and the class an ``connectors.emulation.runner.EmulatorCommand``
(``docrelay emulate <kind>``), e.g.
``emulator.acme = "acme_docrelay.emulator:AcmeEmulator"``.
"""

from __future__ import annotations

import importlib
from functools import cache
from importlib.metadata import entry_points
from typing import Any, Literal

Role = Literal["source", "vendor", "destination", "emulator"]
ROLES: tuple[Role, ...] = ("source", "vendor", "destination", "emulator")

BUILTIN: dict[Role, dict[str, str]] = {
    "source": {
        "folder": "connectors.sources.folder:FolderSource",
        "mailbox": "connectors.sources.mailbox:MailboxSource",
    },
    "vendor": {
        "local": "connectors.vendors.local:LocalVendor",
        "einvoice": "connectors.vendors.einvoice:EInvoiceVendor",
        "deepopinion": "connectors.vendors.deepopinion.vendor:DeepOpinionVendor",
        "gini": "connectors.vendors.gini.vendor:GiniVendor",
        "konfuzio": "connectors.vendors.konfuzio.vendor:KonfuzioVendor",
        "rossum": "connectors.vendors.rossum.vendor:RossumVendor",
    },
    "destination": {
        "folder": "connectors.destinations.folder:FolderDestination",
        "webhook": "connectors.destinations.webhook:WebhookDestination",
        "sql": "connectors.destinations.sql:SqlDestination",
        "sftp": "connectors.destinations.sftp:SftpDestination",
        "tryton": "connectors.destinations.tryton:TrytonDestination",
        "odoo": "connectors.destinations.odoo.destination:OdooDestination",
    },
    "emulator": {
        "rossum": "connectors.vendors.rossum.emulator_cli:RossumEmulator",
        "konfuzio": "connectors.vendors.konfuzio.emulator_cli:KonfuzioEmulator",
        "gini": "connectors.vendors.gini.emulator_cli:GiniEmulator",
        "deepopinion": "connectors.vendors.deepopinion.emulator_cli:DeepOpinionEmulator",
        "odoo": "connectors.destinations.odoo.emulator_cli:OdooEmulator",
    },
}

ENTRY_POINT_GROUP = "docrelay.connectors"


@cache
def available() -> dict[Role, dict[str, str]]:
    """Every known kind per role, built-ins first; a plugin cannot shadow a built-in."""
    found: dict[Role, dict[str, str]] = {role: dict(kinds) for role, kinds in BUILTIN.items()}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        role, _, kind = ep.name.partition(".")
        if role in found and kind and kind not in found[role]:  # type: ignore[comparison-overlap]
            found[role][kind] = ep.value  # type: ignore[index]
    return found


class UnknownConnector(LookupError):
    pass


def load(role: Role, kind: str) -> type:
    """Import and return the connector (or emulator command) class for ``kind``."""
    kinds = available()[role]
    target = kinds.get(kind)
    if target is None:
        known = ", ".join(sorted(kinds)) or "none"
        raise UnknownConnector(f"unknown {role} kind {kind!r} (installed: {known})")
    return _import(target)


def _import(target: str) -> Any:
    """``"package.module:attr"`` → the attribute, importing the module only now."""
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)
