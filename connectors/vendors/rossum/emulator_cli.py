"""``docrelay emulate rossum``: run the Rossum API emulator in the foreground."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from connectors.vendors.rossum.emulator import EmulatorOptions, create_app


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The emulator's options (pass a subparser to add them to the ``docrelay`` CLI)."""
    parser = parser or argparse.ArgumentParser(
        prog="docrelay emulate rossum",
        description="Run a local Rossum API (queue 1 with an invoice schema) for offline tries.",
    )
    defaults = EmulatorOptions()
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s)"
    )
    parser.add_argument("--port", type=int, default=8765, help="port (default: %(default)s)")
    parser.add_argument(
        "--delay",
        type=float,
        default=defaults.delay,
        help="seconds from upload to to_review (default: %(default)s)",
    )
    parser.add_argument(
        "--fail-rate",
        type=float,
        default=defaults.fail_rate,
        help="share of API responses replaced by a fault, 0-1 (default: %(default)s)",
    )
    parser.add_argument(
        "--rate-limit",
        type=float,
        default=defaults.rate_limit,
        help="requests per second per token, 0 = unlimited (default: %(default)s)",
    )
    parser.add_argument("--webhook-url", default=None, help="create a hook posting events here")
    parser.add_argument(
        "--webhook-events",
        default=",".join(defaults.webhook_events),
        help="that hook's events, comma-separated (default: %(default)s; docrelay needs only "
        "annotation_status, annotation_content adds the interactive events and export)",
    )
    parser.add_argument(
        "--webhook-secret",
        default=defaults.webhook_secret,
        help="the hook's HMAC secret (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed for fault injection")
    parser.add_argument(
        "--ocr",
        action="store_true",
        help="OCR scans and images with tesseract (else they end in failed_import)",
    )
    return parser


def options_from(args: argparse.Namespace) -> EmulatorOptions:
    """EmulatorOptions from parsed arguments, or a usage error for impossible values."""
    if not 0 <= args.fail_rate <= 1:
        raise SystemExit("--fail-rate must be between 0 and 1")
    if args.delay < 0 or args.rate_limit < 0:
        raise SystemExit("--delay and --rate-limit must not be negative")
    return EmulatorOptions(
        delay=args.delay,
        fail_rate=args.fail_rate,
        rate_limit=args.rate_limit,
        webhook_url=args.webhook_url,
        webhook_events=tuple(e.strip() for e in args.webhook_events.split(",") if e.strip()),
        webhook_secret=args.webhook_secret,
        seed=args.seed,
        ocr=args.ocr,
    )


def run(args: argparse.Namespace) -> int:
    """Print where the API is and how to log in, then serve until interrupted."""
    import uvicorn

    options = options_from(args)
    app = create_app(options)
    base = f"http://{args.host}:{args.port}{options.base_path}/v1"
    print(f"Rossum API emulator at {base}")
    print(f"  login:      POST {base}/auth/login  {options.username} / {options.password}")
    print(f"  objects:    organization 1, workspace 1, queue 1 ({base}/queues/1), schema 1")
    print(f"  behaviour:  delay {options.delay} s, fail rate {options.fail_rate}, "
          f"rate limit {options.rate_limit}/s")  # fmt: skip
    if options.webhook_url:
        print(f"  webhook:    {options.webhook_url} (secret {options.webhook_secret!r})")
    print(f"  inspect:    GET http://{args.host}:{args.port}/_emulator/stats", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for ``docrelay emulate rossum``."""
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
