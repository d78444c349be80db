"""``docrelay emulate deepopinion``: run the DeepOpinion API emulator in the foreground.

The common options (host, port, delay, faults, rate limit) are the kit's
(``connectors.emulation.runner``); this adds the token lifetime, the confidence threshold and
the share of low-confidence documents.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any, ClassVar

from connectors.emulation import runner
from connectors.vendors.deepopinion.emulator import EmulatorOptions, create_app


class DeepOpinionEmulator(runner.EmulatorCommand):
    """Auth, the seeded model, the synchronous extraction and HITL reviews on one port."""

    kind: ClassVar[str] = "deepopinion"
    title: ClassVar[str] = "DeepOpinion API"
    description: ClassVar[str] = (
        "Run a local DeepOpinion API (login, synchronous extraction, HITL reviews, webhooks) "
        "for offline tries."
    )

    def defaults(self) -> EmulatorOptions:
        return EmulatorOptions()

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        defaults = self.defaults()
        parser.add_argument(
            "--token-lifetime",
            type=float,
            default=defaults.token_lifetime,
            help="seconds from a token's iat to its exp (default: %(default)s)",
        )
        parser.add_argument(
            "--threshold",
            type=float,
            default=defaults.threshold,
            help="every label's expected confidence in percent (default: %(default)s)",
        )
        parser.add_argument(
            "--low-confidence-rate",
            type=float,
            default=defaults.low_confidence_rate,
            help="share of files, 0-1, with one or two values under the threshold "
            "(default: %(default)s)",
        )

    def create_app(self, args: argparse.Namespace, common: dict[str, Any]) -> Any:
        return create_app(options_from(args, common))

    def banner(self, args: argparse.Namespace, root: str) -> list[tuple[str, str]]:
        options = self.defaults()
        return [
            ("login", f"POST {root}/auth/login  {options.username} / {options.password}"),
            (
                "extract",
                f"POST {root}/organizations/1/projects/1/models/1/extract  "
                f"token lifetime {args.token_lifetime} s",
            ),
            (
                "reviews",
                f"threshold {args.threshold} %, low-confidence rate {args.low_confidence_rate}; "
                f"POST {root}/_emulator/reviews/complete",
            ),
            ("inspect", f"GET {root}/_emulator/stats, GET {root}/_emulator/documents"),
        ]


def options_from(args: argparse.Namespace, common: dict[str, Any] | None = None) -> EmulatorOptions:
    """EmulatorOptions from parsed arguments, or a usage error for impossible values."""
    common = runner.common_options(args) if common is None else common
    try:
        options = EmulatorOptions(
            **common,
            token_lifetime=args.token_lifetime,
            threshold=args.threshold,
            low_confidence_rate=args.low_confidence_rate,
        )
        options.check()
    except ValueError as exc:
        raise SystemExit(f"docrelay emulate deepopinion: {exc}") from None
    return options


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for ``docrelay emulate deepopinion`` (``python -m`` too)."""
    return runner.main(DeepOpinionEmulator(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
