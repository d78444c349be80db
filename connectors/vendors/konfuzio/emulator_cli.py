"""``docrelay emulate konfuzio``: run the Konfuzio API emulator in the foreground.

The common options (host, port, delay, faults, rate limit) are the kit's
(``connectors.emulation.runner``); this adds the splitting, processing-error, callback and OCR
options of Konfuzio's.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any, ClassVar

from connectors.emulation import runner
from connectors.vendors.konfuzio.emulator import EmulatorOptions, create_app


class KonfuzioEmulator(runner.EmulatorCommand):
    """Project 1 with the invoice (1) and credit-note (2) categories, the demo login."""

    kind: ClassVar[str] = "konfuzio"
    title: ClassVar[str] = "Konfuzio API"
    description: ClassVar[str] = (
        "Run a local Konfuzio Server API v3 (project 1, category 1 Invoice) for offline tries."
    )

    def defaults(self) -> EmulatorOptions:
        return EmulatorOptions()

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--split-rate",
            type=float,
            default=0.0,
            help="share of uploads, 0-1, that go through splitting and wait in status 41 "
            "(default: %(default)s)",
        )
        parser.add_argument(
            "--error-rate",
            type=float,
            default=0.0,
            help="share of readable uploads, 0-1, that end in status 111 (default: %(default)s)",
        )
        parser.add_argument(
            "--callback-on-failure",
            action="store_true",
            help="also send the callback when a document ends in 111 (Konfuzio does not)",
        )
        parser.add_argument(
            "--ocr",
            action="store_true",
            help="OCR scans and images with tesseract (else they end in 111)",
        )

    def create_app(self, args: argparse.Namespace, common: dict[str, Any]) -> Any:
        return create_app(options_from(args, common))

    def api_url(self, root: str) -> str:
        return f"{root}/api/v3"

    def banner(self, args: argparse.Namespace, root: str) -> list[tuple[str, str]]:
        options = self.defaults()
        base = self.api_url(root)
        rows = [
            ("login", f"POST {base}/auth/  {options.username} / {options.password}"),
            ("host", f"KONFUZIO_HOST={root} (for konfuzio-sdk)"),
            ("objects", "project 1, categories 1 Invoice and 2 Credit note, label sets 1-3"),
            ("statuses", f"split rate {args.split_rate}, error rate {args.error_rate}"),
            ("inspect", f"GET {root}/_emulator/stats, GET {root}/_emulator/documents"),
        ]
        return rows


def options_from(args: argparse.Namespace, common: dict[str, Any] | None = None) -> EmulatorOptions:
    """EmulatorOptions from parsed arguments, or a usage error for impossible values."""
    common = runner.common_options(args) if common is None else common
    try:
        return EmulatorOptions(
            **common,
            split_rate=args.split_rate,
            error_rate=args.error_rate,
            callback_on_failure=args.callback_on_failure,
            ocr=args.ocr,
        )
    except ValueError as exc:
        raise SystemExit(f"docrelay emulate konfuzio: {exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for ``docrelay emulate konfuzio`` (``python -m`` too)."""
    return runner.main(KonfuzioEmulator(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
