"""``docrelay emulate rossum``: run the Rossum API emulator in the foreground.

The common options (host, port, delay, faults, rate limit) are the kit's
(``connectors.emulation.runner``); this adds Rossum's webhook and OCR options.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any, ClassVar

from connectors.emulation import runner
from connectors.vendors.rossum.emulator import EmulatorOptions, create_app


class RossumEmulator(runner.EmulatorCommand):
    """Queue 1 with an invoice schema, the demo login, optional webhooks."""

    kind: ClassVar[str] = "rossum"
    title: ClassVar[str] = "Rossum API"
    description: ClassVar[str] = (
        "Run a local Rossum API (queue 1 with an invoice schema) for offline tries."
    )

    def defaults(self) -> EmulatorOptions:
        return EmulatorOptions()

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        defaults = self.defaults()
        parser.add_argument("--webhook-url", default=None, help="create a hook posting events here")
        parser.add_argument(
            "--webhook-events",
            default=",".join(defaults.webhook_events),
            help="that hook's events, comma-separated (default: %(default)s; docrelay needs "
            "only annotation_status, annotation_content adds the interactive events and export)",
        )
        parser.add_argument(
            "--webhook-secret",
            default=defaults.webhook_secret,
            help="the hook's HMAC secret (default: %(default)s)",
        )
        parser.add_argument(
            "--ocr",
            action="store_true",
            help="OCR scans and images with tesseract (else they end in failed_import)",
        )

    def create_app(self, args: argparse.Namespace, common: dict[str, Any]) -> Any:
        return create_app(options_from(args, common))

    def api_url(self, root: str) -> str:
        return f"{root}{self.defaults().base_path}/v1"

    def banner(self, args: argparse.Namespace, root: str) -> list[tuple[str, str]]:
        options = self.defaults()
        base = self.api_url(root)
        rows = [
            ("login", f"POST {base}/auth/login  {options.username} / {options.password}"),
            ("objects", f"organization 1, workspace 1, queue 1 ({base}/queues/1), schema 1"),
        ]
        if args.webhook_url:
            rows.append(("webhook", f"{args.webhook_url} (secret {args.webhook_secret!r})"))
        rows.append(("inspect", f"GET {root}/_emulator/stats"))
        return rows


def options_from(args: argparse.Namespace, common: dict[str, Any] | None = None) -> EmulatorOptions:
    """EmulatorOptions from parsed arguments, or a usage error for impossible values."""
    common = runner.common_options(args) if common is None else common
    return EmulatorOptions(
        **common,
        webhook_url=args.webhook_url,
        webhook_events=tuple(e.strip() for e in args.webhook_events.split(",") if e.strip()),
        webhook_secret=args.webhook_secret,
        ocr=args.ocr,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for ``docrelay emulate rossum`` (``python -m`` too)."""
    return runner.main(RossumEmulator(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
