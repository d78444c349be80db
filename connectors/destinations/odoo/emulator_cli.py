"""``docrelay emulate odoo``: run the Odoo emulator (JSON-2 and XML-RPC) in the foreground.

The common options (host, port, faults, rate limit) are the kit's
(``connectors.emulation.runner``); this adds the database, the API key and the login.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any, ClassVar

from connectors.destinations.odoo.emulator import EmulatorOptions, create_app
from connectors.emulation import runner


class OdooEmulator(runner.EmulatorCommand):
    """Odoo's external API on one port: a company in EUR, purchase taxes, journals."""

    kind: ClassVar[str] = "odoo"
    title: ClassVar[str] = "Odoo external API"
    description: ClassVar[str] = (
        "Run a local Odoo (JSON-2 and XML-RPC external API: partners, vendor bills, "
        "attachments) to try the odoo destination offline."
    )
    default_port: ClassVar[int] = 8069

    def defaults(self) -> EmulatorOptions:
        return EmulatorOptions()

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        defaults = self.defaults()
        parser.add_argument(
            "--database", default=defaults.database, help="database name (default: %(default)s)"
        )
        parser.add_argument(
            "--api-key",
            default=defaults.api_key,
            help="the admin's API key, also its XML-RPC password (default: %(default)s)",
        )
        parser.add_argument(
            "--username", default=defaults.username, help="the admin's login (default: %(default)s)"
        )
        parser.add_argument(
            "--no-vat-check",
            action="store_true",
            help="take any VAT id on partners (an Odoo without base_vat)",
        )

    def create_app(self, args: argparse.Namespace, common: dict[str, Any]) -> Any:
        return create_app(options_from(args, common))

    def banner(self, args: argparse.Namespace, root: str) -> list[tuple[str, str]]:
        key = args.api_key
        return [
            ("database", args.database),
            ("json-2", f"POST {root}/json/2/<model>/<method>  Authorization: bearer {key}"),
            ("xml-rpc", f"{root}/xmlrpc/2/common, /xmlrpc/2/object  {args.username} / {key}"),
            ("inspect", f"GET {root}/_emulator/records, GET {root}/_emulator/stats"),
            ("post", f"POST {root}/_emulator/moves/<id>/post (as a person in Odoo)"),
        ]


def options_from(args: argparse.Namespace, common: dict[str, Any] | None = None) -> EmulatorOptions:
    """EmulatorOptions from parsed arguments, or a usage error for impossible values."""
    common = runner.common_options(args) if common is None else common
    try:
        return EmulatorOptions(
            **common,
            database=args.database,
            api_key=args.api_key,
            username=args.username,
            check_vat=not args.no_vat_check,
        )
    except ValueError as exc:
        raise SystemExit(f"docrelay emulate odoo: {exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for ``docrelay emulate odoo`` (``python -m`` too)."""
    return runner.main(OdooEmulator(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
