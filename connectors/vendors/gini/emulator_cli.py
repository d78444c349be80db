"""``docrelay emulate gini``: run the Gini API emulator in the foreground.

The common options (host, port, delay, faults, rate limit) are the kit's
(``connectors.emulation.runner``); this adds the token lifetime, processing-error, refresh-token,
OCR and metadata options of Gini's.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any, ClassVar

from connectors.emulation import runner
from connectors.vendors.gini.emulator import EmulatorOptions, create_app


class GiniEmulator(runner.EmulatorCommand):
    """The documents API and the User Center on one port, with the demo client and user."""

    kind: ClassVar[str] = "gini"
    title: ClassVar[str] = "Gini API"
    description: ClassVar[str] = (
        "Run a local Gini API (documents, extractions, feedback) and User Center for offline tries."
    )

    def defaults(self) -> EmulatorOptions:
        return EmulatorOptions()

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        defaults = self.defaults()
        parser.add_argument(
            "--token-lifetime",
            type=float,
            default=defaults.token_lifetime,
            help="seconds an access token lives (expires_in; default: %(default)s)",
        )
        parser.add_argument(
            "--error-rate",
            type=float,
            default=defaults.error_rate,
            help="share of readable uploads, 0-1, that end in ERROR (default: %(default)s)",
        )
        parser.add_argument(
            "--no-refresh-tokens",
            action="store_true",
            help="password grants issue no refresh token (a client not configured for them)",
        )
        parser.add_argument(
            "--hide-metadata",
            action="store_true",
            help="document info without the emulator's metadata key (Gini's exact shape)",
        )
        parser.add_argument(
            "--ocr",
            action="store_true",
            help="OCR scans and images with tesseract (else they end in ERROR)",
        )

    def create_app(self, args: argparse.Namespace, common: dict[str, Any]) -> Any:
        return create_app(options_from(args, common))

    def banner(self, args: argparse.Namespace, root: str) -> list[tuple[str, str]]:
        options = self.defaults()
        return [
            (
                "client",
                f"{options.client_id} / {options.client_secret} (Basic auth on /oauth/token)",
            ),
            (
                "login",
                f"POST {root}/oauth/token?grant_type=password  "
                f"{options.username} / {options.password}",
            ),
            ("trusted", "Basic client auth + X-User-Identifier: <user id>"),
            (
                "documents",
                f"{root}/documents  token lifetime {args.token_lifetime} s, "
                f"error rate {args.error_rate}",
            ),
            ("inspect", f"GET {root}/_emulator/stats, GET {root}/_emulator/documents"),
        ]


def options_from(args: argparse.Namespace, common: dict[str, Any] | None = None) -> EmulatorOptions:
    """EmulatorOptions from parsed arguments, or a usage error for impossible values."""
    common = runner.common_options(args) if common is None else common
    try:
        return EmulatorOptions(
            **common,
            token_lifetime=args.token_lifetime,
            error_rate=args.error_rate,
            refresh_tokens=not args.no_refresh_tokens,
            show_metadata=not args.hide_metadata,
            ocr=args.ocr,
        )
    except ValueError as exc:
        raise SystemExit(f"docrelay emulate gini: {exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for ``docrelay emulate gini`` (``python -m`` too)."""
    return runner.main(GiniEmulator(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
