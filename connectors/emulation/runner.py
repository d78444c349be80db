"""``docrelay emulate <kind>``: run one vendor's emulator in the foreground under uvicorn.

A vendor's emulator is an ``EmulatorCommand``, registered in ``connectors.registry`` (role
``emulator``; third-party packages add ``emulator.<kind>`` entry points). ``main(command,
argv)`` parses the common options below and the vendor's own (``add_arguments``), builds the
app, prints the base URL and the ready account, and serves until interrupted:

    --host 127.0.0.1 --port 8765 --delay S --fail-rate 0-1 --faults KIND[=WEIGHT],...
    --seed N --rate-limit PER_SECOND --slow S
    --wrong-rate 0-1 --miss-rate 0-1 --field-wrong-rate FIELD=RATE --field-miss-rate FIELD=RATE
    --wrong-seed N

The last ones make the engine wrong on purpose (``wrongness``): a share of document fields
comes back with a wrong value or not at all, fixed per document and field by ``--wrong-seed``
and the file's SHA-256, so a test re-computes which with ``wrongness.verdict``. The per-field
flags may be repeated and override the global rate for that canonical field.

The common options become ``CommonOptions`` fields (``common_options``), which the vendor's
options dataclass inherits.
"""

from __future__ import annotations

import abc
import argparse
from collections.abc import Sequence
from typing import Any, ClassVar

from connectors.emulation.faults import KINDS, parse_mix
from connectors.emulation.options import CommonOptions

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


class EmulatorCommand(abc.ABC):
    """One vendor's ``docrelay emulate <kind>``: its options on top of the common ones, its
    app, and what to print about its ready account."""

    kind: ClassVar[str]
    """The vendor kind, as in ``[vendors.<name>] kind = ...``."""
    title: ClassVar[str]
    """What it emulates, e.g. ``Rossum API`` (first banner line: "<title> emulator at …")."""
    description: ClassVar[str] = ""
    """The ``--help`` description."""
    default_port: ClassVar[int] = DEFAULT_PORT

    def defaults(self) -> CommonOptions:
        """The vendor's options with their defaults (the common options' defaults come from
        here, e.g. Rossum's rate limit of 10/s)."""
        return CommonOptions()

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the vendor's own options."""

    @abc.abstractmethod
    def create_app(self, args: argparse.Namespace, common: dict[str, Any]) -> Any:
        """The ASGI app for parsed ``args``; ``common`` holds the ``CommonOptions`` fields."""

    def api_url(self, root: str) -> str:
        """The API's base URL for a server at ``root`` (``http://host:port``)."""
        return root

    def banner(self, args: argparse.Namespace, root: str) -> list[tuple[str, str]]:
        """``(label, text)`` lines about the ready account: login, objects, webhooks."""
        return []


def add_common_arguments(
    parser: argparse.ArgumentParser,
    defaults: CommonOptions | None = None,
    *,
    default_port: int = DEFAULT_PORT,
) -> None:
    """The options every emulator has (see the module docstring)."""
    defaults = defaults or CommonOptions()
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help="address to bind (default: %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=default_port, help="port (default: %(default)s)"
    )
    parser.add_argument(
        "--delay",
        type=float,
        default=defaults.delay,
        help="seconds from upload to result (default: %(default)s)",
    )
    parser.add_argument(
        "--fail-rate",
        type=float,
        default=defaults.fail_rate,
        help="share of API requests that get a fault, 0-1 (default: %(default)s)",
    )
    parser.add_argument(
        "--faults",
        default=",".join(f"{kind}={weight:g}" for kind, weight in defaults.fault_mix),
        metavar="KIND[=WEIGHT],...",
        help=f"the faults to draw from and their weights; kinds: {', '.join(KINDS)} "
        "(default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed for fault injection")
    parser.add_argument(
        "--rate-limit",
        type=float,
        default=defaults.rate_limit,
        help="requests per second per client (credentials, else address) before 429; "
        "0 = unlimited (default: %(default)s)",
    )
    parser.add_argument(
        "--slow",
        type=float,
        default=defaults.slow_seconds,
        help="seconds a 'slow' fault holds a request (default: %(default)s)",
    )
    parser.add_argument(
        "--wrong-rate",
        type=float,
        default=defaults.wrong_rate,
        help="share of document fields, 0-1, read wrong on purpose (default: %(default)s)",
    )
    parser.add_argument(
        "--miss-rate",
        type=float,
        default=defaults.miss_rate,
        help="share of document fields, 0-1, left out on purpose (default: %(default)s)",
    )
    for flag, what in (("--field-wrong-rate", "wrong"), ("--field-miss-rate", "miss")):
        parser.add_argument(
            flag,
            action="append",
            default=[],
            metavar="FIELD=RATE",
            help=f"{what} rate of one canonical field instead of --{what}-rate (repeatable)",
        )
    parser.add_argument(
        "--wrong-seed",
        type=int,
        default=defaults.wrong_seed,
        help="seed of which fields are wrong or missed, with each file's SHA-256 "
        "(default: %(default)s)",
    )


def common_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``CommonOptions`` fields from parsed arguments; a usage error (SystemExit) for
    impossible values."""
    try:
        values = {
            "delay": args.delay,
            "fail_rate": args.fail_rate,
            "fault_mix": parse_mix(args.faults),
            "seed": args.seed,
            "rate_limit": args.rate_limit,
            "slow_seconds": args.slow,
            "wrong_rate": args.wrong_rate,
            "miss_rate": args.miss_rate,
            "field_wrong_rates": parse_field_rates(args.field_wrong_rate),
            "field_miss_rates": parse_field_rates(args.field_miss_rate),
            "wrong_seed": args.wrong_seed,
        }
        CommonOptions(**values)  # validates
    except ValueError as exc:
        raise SystemExit(f"docrelay emulate: {exc}") from None
    return values


def parse_field_rates(items: Sequence[str]) -> dict[str, float]:
    """``["total_amount=0.3", ...]`` → ``{"total_amount": 0.3}``; ValueError for a bad item or
    a name that is not a canonical document field."""
    from connectors.base import DOCUMENT_FIELDS

    rates: dict[str, float] = {}
    for item in items:
        name, sep, rate = item.partition("=")
        name = name.strip()
        if not sep or name not in DOCUMENT_FIELDS:
            raise ValueError(f"{item!r}: give FIELD=RATE with a canonical field name")
        try:
            rates[name] = float(rate)
        except ValueError:
            raise ValueError(f"{item!r}: the rate is not a number") from None
    return rates


def build_parser(command: EmulatorCommand) -> argparse.ArgumentParser:
    """The command line of ``docrelay emulate <command.kind>``."""
    parser = argparse.ArgumentParser(
        prog=f"docrelay emulate {command.kind}", description=command.description or None
    )
    add_common_arguments(parser, command.defaults(), default_port=command.default_port)
    command.add_arguments(parser)
    return parser


def banner(command: EmulatorCommand, args: argparse.Namespace, common: dict[str, Any]) -> str:
    """What ``main`` prints before serving: where the API is, the account, the behaviour."""
    root = f"http://{args.host}:{args.port}"
    lines = [f"{command.title} emulator at {command.api_url(root)}"]
    behaviour = (
        f"delay {common['delay']} s, fail rate {common['fail_rate']}, "
        f"rate limit {common['rate_limit']}/s"
    )
    if common["seed"] is not None:
        behaviour += f", seed {common['seed']}"
    if common.get("wrong_rate") or common.get("miss_rate"):
        behaviour += f", wrong rate {common['wrong_rate']}, miss rate {common['miss_rate']}"
    if common.get("field_wrong_rates") or common.get("field_miss_rates"):
        behaviour += ", per-field rates"
    rows = [
        *command.banner(args, root),
        ("behaviour", behaviour),
        ("requests", f"GET {root}/_emulator/requests"),
        ("faults", f"GET/POST {root}/_emulator/faults"),
    ]
    lines += [f"  {label + ':':<11} {text}" for label, text in rows]
    return "\n".join(lines)


def serve(app: Any, *, host: str, port: int, log_level: str = "info") -> None:
    """Serve ``app`` with uvicorn (lifespan on) until interrupted."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level, lifespan="on")


def main(
    command: EmulatorCommand | type[EmulatorCommand], argv: Sequence[str] | None = None
) -> int:
    """Parse ``argv``, print the banner, serve. The entry of ``docrelay emulate``."""
    if isinstance(command, type):
        command = command()
    args = build_parser(command).parse_args(argv)
    common = common_options(args)
    app = command.create_app(args, common)
    print(banner(command, args, common), flush=True)
    serve(app, host=args.host, port=args.port)
    return 0
