"""The ``docrelay`` command."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import date
from pathlib import Path
from typing import IO, Any

EXIT_CONFIG = 2

log = logging.getLogger("docrelay")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse takes a ``nargs="*"`` positional once, before any option that follows it
    # (``correct 7 --confirm a b=1``): commands that say so get the words left over.
    late = getattr(args, "late_positionals", None)
    if extra and late and not any(word.startswith("-") for word in extra):
        getattr(args, late).extend(extra)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_CONFIG
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `docrelay status | head`: the reader has what it wanted
        # Python would report the failed flush of stdout at exit: point it at /dev/null.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def build_parser() -> argparse.ArgumentParser:
    from daemon import __version__

    parser = argparse.ArgumentParser(
        prog="docrelay",
        description="Relay documents from folders and mailboxes to document-AI vendors and ERPs.",
    )
    parser.add_argument("--version", action="version", version=f"docrelay {__version__}")
    config_help = (
        "configuration file (default: $DOCRELAY_CONFIG, /etc/docrelay/config.toml if it "
        "exists, else ./config.toml)"
    )
    parser.add_argument("--config", type=Path, default=None, help=config_help)
    # ``docrelay status --config X`` too: every command takes it after its name, and a value
    # given there wins; SUPPRESS keeps one given before the command from being reset to None.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=config_help)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    def command(name: str, func: Any, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, parents=[common])
        p.set_defaults(func=func)
        return p

    command("run", cmd_run, "run the service in the foreground (what systemd starts)")
    command("check-config", cmd_check_config, "validate the configuration and exit")
    p = command("status", cmd_status, "counts per state and vendor, oldest waiting, last errors")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = command("submit", cmd_submit, "ingest files or folders once (source 'cli')")
    p.add_argument("paths", nargs="+", type=Path)
    p.add_argument("--source", default="cli", help="source name to record and route by")
    p.add_argument(
        "--wait",
        action="store_true",
        help="wait until every document is finished; processes them here if no daemon runs",
    )
    p = command("retry", cmd_retry, "retry dead or failed documents (by id or filter)")
    p.add_argument("documents", nargs="*", type=int, help="document ids")
    p.add_argument(
        "--state",
        choices=["dead", "failed", "rejected", "refused"],
        action="append",
        help="which items (refused: feedback the vendor refused)",
    )
    p.add_argument("--vendor", help="only this vendor profile")
    p.add_argument("--all", action="store_true", help="every dead and failed item")
    p = command("replay", cmd_replay, "send documents to a destination again, on purpose")
    p.add_argument("documents", nargs="+", type=int, help="document ids")
    p.add_argument("--destination", required=True, help="the destination's name in the config")
    p = command("history", cmd_history, "the event trail of one document")
    p.add_argument("document", type=int)
    p.add_argument("--json", action="store_true")
    p = command("db", None, "database maintenance")
    db = p.add_subparsers(title="db commands", metavar="DBCOMMAND")
    up = db.add_parser(
        "upgrade", help="migrate the store schema to the newest revision", parents=[common]
    )
    up.add_argument("--revision", default="head")
    up.set_defaults(func=cmd_db_upgrade)
    cur = db.add_parser("current", help="show the schema revision of the store", parents=[common])
    cur.set_defaults(func=cmd_db_current)
    p = command(
        "backup",
        cmd_backup,
        "copy the SQLite store and its blobs into a new directory (safe while the daemon runs)",
    )
    p.add_argument("path", type=Path, help="the backup directory to create")
    p = command(
        "restore", cmd_restore, "put a backup in place of the store (the daemon must be stopped)"
    )
    p.add_argument("path", type=Path, help="a directory `docrelay backup` made")
    p.add_argument("--force", action="store_true", help="replace a store that holds documents")
    p = command(
        "correct", cmd_correct, "correct fields of a document; the vendor gets them as feedback"
    )
    p.add_argument("document", type=int)
    p.add_argument(
        "values",
        nargs="*",
        metavar="FIELD=VALUE",
        help="the right value of a field; FIELD= (empty) says it is not in the document",
    )
    p.add_argument(
        "--confirm",
        action="append",
        default=[],
        metavar="FIELD",
        help="the extracted value of FIELD is right (repeatable)",
    )
    p.set_defaults(late_positionals="values")
    p = command("emulate", cmd_emulate, "run a vendor's or ERP's emulator to try a config offline")
    p.add_argument("vendor", help="vendor or destination kind, e.g. rossum, odoo")
    p.add_argument("args", nargs=argparse.REMAINDER, help="options of the emulator (--help)")
    command(
        "connectors", cmd_connectors, "list installed sources, vendors, destinations and emulators"
    )
    p = command(
        "check", cmd_check, "test a source, vendor profile or destination by name (read-only)"
    )
    p.add_argument("name", help="its name in the configuration")
    p = command("mailbox", None, "mailbox sources")
    mb = p.add_subparsers(title="mailbox commands", metavar="MAILBOXCOMMAND")
    test = mb.add_parser(
        "test",
        help="docrelay check for a mailbox: log in, list folders and count what the rules "
        "would take; changes nothing",
        parents=[common],
    )
    test.add_argument("name", help="the mailbox source's name")
    test.add_argument("--limit", type=int, default=200, help="newest messages examined per folder")
    test.set_defaults(func=cmd_mailbox_test)
    p = command("report", None, "reports over the store, as a table or CSV")
    reports = p.add_subparsers(title="reports", metavar="REPORT")

    def report(name: str, func: Any, help_text: str, since: str) -> argparse.ArgumentParser:
        """A report under ``docrelay report``; each takes ``--since DATE`` (``since`` says
        of what) and ``--csv``."""
        r = reports.add_parser(name, help=help_text, description=help_text, parents=[common])
        r.add_argument("--since", type=date.fromisoformat, metavar="DATE", help=since)
        r.add_argument("--csv", action="store_true", help="CSV on stdout instead of a table")
        r.set_defaults(func=func)
        return r

    report(
        "accuracy",
        cmd_report_accuracy,
        "share right, wrong and missed per vendor and field, against corrected or posted values",
        "only documents whose truth (a correction, posted in an ERP) came on or after DATE (UTC)",
    )
    cost = report(
        "cost",
        cmd_report_cost,
        "documents, pages and cost per vendor profile and UTC month (counted once each, when "
        "charged at upload), priced by [vendors.<profile>.budget] prices",
        "from this day (UTC)",
    )
    cost.add_argument(
        "--until", type=date.fromisoformat, metavar="DATE", help="through this day (included)"
    )
    return parser


# ---------------------------------------------------------------------- helpers


def load_config(args: argparse.Namespace, *, quiet: bool = False) -> Any:
    from daemon import config as config_mod

    path = args.config or config_mod.default_path()
    try:
        return config_mod.load(path)
    except config_mod.ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        if not quiet:
            print(f"{path}: {len(exc.problems)} problem(s); nothing started", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


EXIT_NO_STORE = 1


def open_store(config: Any, *, create: bool = False) -> Any:
    """The store's engine, migrated to the newest schema. Only a command that takes documents
    in (``create``) makes a store where there is none: the others say "no store at …" and
    exit, instead of reporting on an empty store made by mistake (a wrong --config)."""
    from daemon.store import engine as store_engine

    url = config.core.store.url
    file = store_engine.sqlite_file(url)
    if not create and file is not None and not file.is_file():
        _no_store(config, str(file.absolute()))
    engine = store_engine.make_engine(
        url, busy_timeout_ms=int(config.core.store.busy_timeout * 1000)
    )
    if not create and store_engine.current_revision(engine) is None:
        engine.dispose()
        _no_store(config, str(file.absolute()) if file else engine.url.render_as_string())
    store_engine.ensure_schema(engine)
    return engine


def _no_store(config: Any, where: str) -> None:
    print(
        f"no store at {where} (from {config.path}): nothing has been taken in with this "
        "configuration yet — is it the daemon's?",
        file=sys.stderr,
    )
    raise SystemExit(EXIT_NO_STORE)


def setup_logging(config: Any) -> None:
    from daemon import logs

    logs.setup(config.core.logging.level, config.core.logging.format, config.secrets)


# ---------------------------------------------------------------------- commands


def cmd_run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    config = load_config(args)
    setup_logging(config)
    from daemon import notify
    from daemon.runtime import CannotListen, Daemon, StoreLocked
    from daemon.store.blobs import NotTheStoresBlobs

    stop = threading.Event()
    reload = threading.Event()
    wake = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()
        wake.set()

    def on_hup(_signum: int, _frame: Any) -> None:
        reload.set()
        wake.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_hup)
    # Threads holding the store's write lock must get the GIL back quickly; the default 5 ms
    # switch interval lets a CPU-bound extractor thread convoy every writer behind it.
    sys.setswitchinterval(0.0002)
    daemon = Daemon(config)
    try:
        daemon.open()
    except (StoreLocked, CannotListen, NotTheStoresBlobs) as exc:
        log.error("%s", exc)
        return 1
    daemon.start()
    elapsed = time.monotonic() - started
    port = f", web on port {daemon.web.port}" if daemon.web else ""
    log.info("docrelay ready in %.2fs (config %s%s)", elapsed, config.path, port)
    notify.notify("READY=1", f"STATUS=ready in {elapsed:.2f}s")
    while not stop.is_set():
        wake.wait()
        wake.clear()
        if reload.is_set() and not stop.is_set():
            reload.clear()
            reload_config(daemon, args)
    notify.notify("STOPPING=1")
    daemon.stop()
    log.info("docrelay stopped")
    return 0


def reload_config(daemon: Any, args: argparse.Namespace) -> bool:
    """SIGHUP: read the configuration file again and run it; a file with problems is
    refused (each problem logged as ``check-config`` prints it) and the running
    configuration kept."""
    from daemon import config as config_mod
    from daemon import notify

    path = daemon.config.path
    log.info("received SIGHUP, reloading %s", path)
    try:
        new = config_mod.load(path)
    except config_mod.ConfigError as exc:
        for line in exc.render().splitlines():
            log.error("%s", line)
        log.error("%s: %d problem(s); reload refused, the running configuration stays",
                  path, len(exc.problems))  # fmt: skip
        return False
    from daemon import logs

    notify.notify("RELOADING=1", "WATCHDOG=1")  # the scheduler's pings pause meanwhile
    try:
        # The new secrets are redacted from here on, the old ones still (connectors closing).
        secrets = [*daemon.config.secrets, *new.secrets]
        logs.setup(new.core.logging.level, new.core.logging.format, secrets)
        summary = daemon.reload(new)
    except Exception:
        log.exception("reload failed")
        return False
    finally:
        notify.notify("READY=1", "WATCHDOG=1")
    log.info("reloaded: %s", summary)
    return True


def cmd_check_config(args: argparse.Namespace) -> int:
    config = load_config(args)
    routes = len(config.routes)
    print(
        f"{config.path}: OK — {len(config.sources)} source(s), {len(config.vendors)} vendor "
        f"profile(s), {len(config.destinations)} destination(s), {routes} route(s)"
    )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from daemon import status

    config = load_config(args)
    data = status.summary(open_store(config))
    data["daemon"] = status.live(config)
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(status.live_line(data["daemon"]))
    print("documents: " + (", ".join(f"{k} {v}" for k, v in data["documents"].items()) or "none"))
    if data["submissions"]:
        print("\nsubmissions:")
        for row in data["submissions"]:
            print(f"  {row['vendor']:<20} {row['state']:<12} {row['count']:>8}")
    if data["deliveries"]:
        print("\ndeliveries:")
        for row in data["deliveries"]:
            print(f"  {row['destination']:<20} {row['state']:<12} {row['count']:>8}")
    if data["outcomes"]:
        print("\ndownstream outcomes (what the ERP did with the records):")
        for row in data["outcomes"]:
            print(f"  {row['destination']:<20} {row['outcome']:<12} {row['count']:>8}")
    if data["delivery_problems"]:
        print(
            "\nexports refused or thrown out downstream (newest first; `docrelay replay` resends):"
        )
        for item in data["delivery_problems"]:
            print(
                f"  document {item['document_id']} to {item['destination']} v{item['version']}: "
                f"{item['state']}: {item['reason']}"
            )
    if waiting := data["oldest_waiting"]:
        print(
            f"\noldest waiting: document {waiting['document_id']} at {waiting['vendor']} "
            f"({waiting['state']}) for {waiting['age_seconds']:.0f}s"
        )
    for health in data["connectors"]:
        state = health["state"]
        if state == "auth_failed":
            state = "needs re-authentication (credentials refused)"
        print(f"\n{health['name']}: {state} since {health['since']}: {health['reason']}")
    if breakers := data.get("breakers"):
        print("\ncircuit breakers:")
        for item in breakers:
            line = f"  {item['vendor']:<20} {item['state']:<10} {item['failures']} failure(s)"
            if item["state"] != "closed":
                line += f", open since {item['opened_at']}, next probe {item['retry_at']}"
            print(line)
    if data.get("processes"):
        print("\nprocesses on this store (heartbeat age; what each holds):")
        for item in data["processes"]:
            held = ", ".join(item["holds"]) or "no source or job"
            rows = ", ".join(f"{n} {table}" for table, n in sorted(item["leased"].items()))
            line = (
                f"  {item['id']:<36} {item['state']:<8} {item['heartbeat_age_seconds']:>7.1f} s"
                f"  {held}"
            )
            print(line + (f"; in hand: {rows}" if rows else ""))
    if budget := [item for item in data.get("budgets", []) if item["of"] is not None]:
        print("\nbudgets (this UTC day / month):")
        for item in budget:
            line = f"  {item['vendor']:<20} {item['limit']:<20} {item['used']}/{item['of']}"
            if item["exhausted_at"]:
                line += f", used up since {item['exhausted_at']}: documents held"
            print(line)
    if data["in_review"]:
        print("\nwaiting for review at the vendor:")
        for item in data["in_review"]:
            print(
                f"  document {item['document_id']} at {item['vendor']} since {item['since']}: "
                f"{item['reason']} (gives up {item['deadline']})"
            )
    if data["feedback_problems"]:
        print("\nfeedback not taken (docrelay retry DOC --state refused|dead sends it again):")
        for item in data["feedback_problems"]:
            print(
                f"  document {item['document_id']} {item['field']} at {item['vendor']}: "
                f"{item['state']}: {item['reason']}"
            )
    if data["corrections_refused"]:
        print("\ncorrections refused (rows of docrelay_corrections, newest first):")
        for item in data["corrections_refused"]:
            print(
                f"  row {item['row']}: document {item['document_id']} {item['field']}: "
                f"{item['reason']}"
            )
    if data["last_errors"]:
        print("\nlast errors:")
        for err in data["last_errors"]:
            print(
                f"  document {err['document_id']} ({err['vendor'] or 'intake'}, {err['state']}): "
                f"{err['error']}"
            )
    return 0


class Progress:
    """A one-line progress bar on a terminal, occasional lines otherwise."""

    def __init__(self, total: int, label: str, stream: IO[str] = sys.stderr) -> None:
        self.total, self.label, self.stream = total, label, stream
        self.tty = stream.isatty()
        self.done = 0
        self._last = 0.0

    def update(self, done: int) -> None:
        self.done = done
        now = time.monotonic()
        if not self.tty and done < self.total and now - self._last < 5:
            return
        self._last = now
        width = 30
        filled = int(width * done / self.total) if self.total else width
        line = f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{self.total}"
        self.stream.write(("\r" + line) if self.tty else (line + "\n"))
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")


def _files(paths: Sequence[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(
                p for p in sorted(path.rglob("*")) if p.is_file() and not p.name.startswith(".")
            )
        elif path.is_file():
            found.append(path)
        else:
            print(f"{path}: no such file or directory", file=sys.stderr)
    return found


def cmd_submit(args: argparse.Namespace) -> int:
    from connectors.base import IngestStatus, IntakeItem
    from connectors.filecheck import check_file, sniff_mime
    from daemon.pipeline.intake import Intake
    from daemon.store.blobs import BlobStore

    config = load_config(args)
    setup_logging(config)
    files = _files(args.paths)
    if not files:
        return 1
    engine = open_store(config, create=True)
    blobs = BlobStore(config.core.store.blob_dir)
    blobs.tmp.mkdir(parents=True, exist_ok=True)
    intake = Intake(engine, blobs, config)
    progress = Progress(len(files), "ingest")
    counts: dict[str, int] = {}
    ids: list[int] = []
    for index, path in enumerate(files, 1):
        mime = sniff_mime(path)
        check = check_file(path, mime, max_bytes=intake.max_bytes)
        item = IntakeItem(
            source=args.source,
            source_ref=str(path.resolve()),
            filename=path.name,
            open=lambda path=path: _open(path),
            mime_type=mime,
            metadata={"path": str(path.resolve())},
            rejection=check.reason,
        )
        outcome = intake.ingest(item)
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
        if outcome.document_id is not None:
            intake.mark_released(outcome.document_id)
            if outcome.status == IngestStatus.INGESTED:
                ids.append(outcome.document_id)
        if outcome.status == IngestStatus.REJECTED:
            print(f"\n{path}: rejected: {outcome.reason}", file=sys.stderr)
        progress.update(index)
    intake.flush_releases()
    progress.close()
    print(", ".join(f"{n} {status}" for status, n in counts.items()))
    code = 1 if counts.get(IngestStatus.REJECTED) else 0  # a script must see it failed
    if args.wait and ids:
        return max(code, _wait_for(config, engine, ids))
    return code


def _open(path: Path) -> AbstractContextManager[IO[bytes]]:
    return path.open("rb")


def _wait_for(config: Any, engine: Any, ids: list[int]) -> int:
    """Wait until the documents are final; run the workers here when no daemon owns the store.
    Exit 1 when one ended without a result (rejected or dead at every vendor), with why."""
    from sqlalchemy import func, select

    from daemon.pipeline import ledger
    from daemon.pipeline.states import ACTIVE, FINAL
    from daemon.runtime import Daemon, StoreLocked
    from daemon.store import engine as store_engine

    local: Daemon | None = None
    try:
        core = config.core.model_copy(
            update={"web": config.core.web.model_copy(update={"enabled": False})}
        )
        candidate = Daemon(dataclasses.replace(config, core=core, sources=[]))
        candidate.open()
        local = candidate
        local.start()
    except StoreLocked:
        print("a running daemon will process them; waiting", file=sys.stderr)
    sub, dl = ledger.submissions, ledger.deliveries
    progress = Progress(len(ids), "process")
    try:
        while True:
            with store_engine.reader(engine).connect() as conn:
                finished = conn.execute(
                    select(func.count(func.distinct(sub.c.document_id))).where(
                        sub.c.document_id.in_(ids),
                        sub.c.state.in_(FINAL),
                        # a rejected primary is final while its fallback still works
                        ~sub.c.document_id.in_(
                            select(sub.c.document_id).where(sub.c.state.in_(ACTIVE))
                        ),
                        ~sub.c.document_id.in_(
                            select(dl.c.document_id).where(dl.c.state.in_(("pending", "failed")))
                        ),
                    )
                ).scalar_one()
            progress.update(finished)
            if finished >= len(ids):
                break
            time.sleep(0.25)
    finally:
        progress.close()
        if local is not None:
            local.stop()
    with store_engine.reader(engine).connect() as conn:
        ended = conn.execute(
            select(sub.c.document_id, sub.c.profile, sub.c.state, sub.c.error)
            .where(
                sub.c.document_id.in_(ids),
                ~sub.c.document_id.in_(select(sub.c.document_id).where(sub.c.state == "done")),
            )
            .order_by(sub.c.document_id, sub.c.id)
        ).all()
    for row in ended:
        print(f"document {row.document_id}: {row.state} at {row.profile}: {row.error}",
              file=sys.stderr)  # fmt: skip
    return 1 if ended else 0


def cmd_retry(args: argparse.Namespace) -> int:
    """Exit 1 when a document named by id was not taken, after saying why for each."""
    from daemon.pipeline.admin import not_retried, retry

    config = load_config(args)
    if not (args.documents or args.state or args.vendor or args.all):
        print("say which: document ids, --state, --vendor or --all", file=sys.stderr)
        return EXIT_CONFIG
    states = args.state or ["dead", "failed"]
    engine = open_store(config)
    skipped = not_retried(engine, args.documents, states=states, vendor=args.vendor)
    counts = retry(engine, documents=args.documents, states=states, vendor=args.vendor)
    for document_id, reason in skipped.items():
        print(f"document {document_id}: not retried: {reason}", file=sys.stderr)
    print(
        f"requeued {counts['submissions']} submission(s), {counts['deliveries']} delivery(ies), "
        f"{counts['feedback']} feedback item(s)"
    )
    return 1 if skipped else 0


def cmd_replay(args: argparse.Namespace) -> int:
    from daemon.pipeline.admin import replay

    config = load_config(args)
    if args.destination not in config.destinations:
        known = ", ".join(sorted(config.destinations)) or "none"
        print(f"no destination {args.destination!r} in {config.path} (configured: {known})",
              file=sys.stderr)  # fmt: skip
        return EXIT_CONFIG
    outcome = replay(open_store(config), args.documents, args.destination)
    for document_id, what in outcome.items():
        print(f"document {document_id}: {what}")
    return 0 if all(w.startswith("queued") for w in outcome.values()) else 1


def cmd_history(args: argparse.Namespace) -> int:
    from daemon.pipeline.admin import history

    config = load_config(args)
    rows = history(open_store(config), args.document)
    if not rows:
        print(f"no document {args.document}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    for row in rows:
        move = f"{row['from_state'] or ''}→{row['to_state'] or ''}" if row["to_state"] else ""
        shadow = "[shadow] " if row.get("role") == "shadow" else ""
        print(f"{row['at']:%Y-%m-%d %H:%M:%S} {row['kind']:<10} {move:<24} {row['actor']}: "
              f"{shadow}{row['message'] or ''}")  # fmt: skip
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from daemon.store import engine as store_engine

    config = load_config(args)
    engine = store_engine.make_engine(config.core.store.url)
    before = store_engine.current_revision(engine)
    store_engine.upgrade(engine, args.revision)
    print(f"store schema: {before or 'empty'} → {store_engine.current_revision(engine)}")
    return 0


def cmd_report_cost(args: argparse.Namespace) -> int:
    from daemon import cost
    from daemon.pipeline.budgets import budget_of

    config = load_config(args)
    prices = {name: budget_of(settings) for name, settings in config.vendors.items()}
    rows = cost.cost_rows(open_store(config), prices, since=args.since, until=args.until)
    print(cost.as_csv(rows) if args.csv else cost.as_table(rows), end="")
    return 0


def cmd_db_current(args: argparse.Namespace) -> int:
    from daemon.store import engine as store_engine

    config = load_config(args)
    file = store_engine.sqlite_file(config.core.store.url)
    if file is not None and not file.is_file():
        _no_store(config, str(file.absolute()))
    engine = store_engine.make_engine(config.core.store.url)
    current = store_engine.current_revision(engine)
    head = store_engine.head_revision(engine)
    print(f"current {current or 'empty'}, newest {head}")
    return 0 if current == head else 1


def cmd_backup(args: argparse.Namespace) -> int:
    """Exit 1, saying which tool to use, for a PostgreSQL or MariaDB store."""
    from daemon.store import backup

    config = load_config(args)
    store = config.core.store
    try:
        manifest = backup.backup(store.url, store.blob_dir, args.path)
    except backup.BackupError as exc:
        print(f"backup: {exc}; nothing written", file=sys.stderr)
        return 1
    counts = ", ".join(f"{n} {table}" for table, n in manifest.counts.items())
    print(f"{args.path}: {counts}, {manifest.blobs} blob(s), schema {manifest.revision}")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    """Everything is checked before anything changes; exit 1 with the reason otherwise."""
    from daemon.runtime import StoreLocked, lock_sqlite_store
    from daemon.store import backup

    config = load_config(args)
    store = config.core.store
    try:
        backup.sqlite_path(store.url)
        manifest = backup.verify(args.path)
    except backup.BackupError as exc:
        print(f"restore: {exc}; nothing changed", file=sys.stderr)
        return 1
    try:
        lock = lock_sqlite_store(store.url)  # held until the end: no daemon starts meanwhile
    except StoreLocked as exc:
        print(f"restore: {exc}: stop it first; nothing changed", file=sys.stderr)
        return 1
    try:
        if (found := backup.store_in_use(store.url, store.blob_dir)) and not args.force:
            print(f"restore: {'; '.join(found)}: give --force to replace it; nothing changed",
                  file=sys.stderr)  # fmt: skip
            return 1
        backup.restore(args.path, store.url, store.blob_dir, verified=manifest)
    finally:
        if lock is not None:
            lock.close()
    counts = ", ".join(f"{n} {table}" for table, n in manifest["counts"].items())
    print(f"restored {args.path} ({manifest['created_at']}): {counts}, {manifest['blobs']} blob(s)")
    return 0


def cmd_correct(args: argparse.Namespace) -> int:
    from connectors import registry
    from daemon.pipeline.feedback import CorrectionError, InvalidCorrection, correct

    config = load_config(args)
    values: dict[str, str] = {}
    for item in args.values:
        name, sep, value = item.partition("=")
        if not sep or not name:
            print(f"{item!r}: expected FIELD=VALUE", file=sys.stderr)
            return EXIT_CONFIG
        values[name.strip()] = value
    if not values and not args.confirm:
        print("say what is right: FIELD=VALUE or --confirm FIELD", file=sys.stderr)
        return EXIT_CONFIG
    vendors = {
        name: registry.load("vendor", settings.kind) for name, settings in config.vendors.items()
    }
    try:
        changed = correct(
            open_store(config), args.document, values, confirm=args.confirm, vendors=vendors
        )
    except InvalidCorrection as exc:
        print(f"document {args.document}: {exc}; nothing changed", file=sys.stderr)
        return EXIT_CONFIG
    except CorrectionError as exc:
        print(f"document {args.document}: {exc}", file=sys.stderr)
        return 1
    for line in changed:
        print(line)
    return 0


def cmd_report_accuracy(args: argparse.Namespace) -> int:
    from daemon import accuracy

    config = load_config(args)
    report = accuracy.accuracy(open_store(config), args.since)
    if args.csv:
        accuracy.write_csv(report, sys.stdout)
    if report.empty:
        print(accuracy.nothing_yet(report), file=sys.stderr)
        return 0
    if not args.csv:
        for line in accuracy.table_lines(report):
            print(line)
    return 0


def cmd_emulate(args: argparse.Namespace) -> int:
    from connectors import registry
    from connectors.emulation import runner

    try:
        command = registry.load("emulator", args.vendor)
    except registry.UnknownConnector as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    return runner.main(command, list(args.args))


def cmd_connectors(args: argparse.Namespace) -> int:
    """Every installed kind per role: sources, vendors, destinations and vendor emulators."""
    from connectors import registry

    for role, kinds in registry.available().items():
        for kind, target in sorted(kinds.items()):
            print(f"{role:<12} {kind:<14} {target}")
    return 0


EXIT_UNREACHABLE = 3
EXIT_REFUSED = 4


def cmd_check(args: argparse.Namespace) -> int:
    """Exit 0 when it works, 3 when it cannot be reached, 4 when credentials are refused."""
    return check_connector(load_config(args), args.name)


def cmd_mailbox_test(args: argparse.Namespace) -> int:
    """``docrelay check`` for a mailbox source, with how many messages to look at."""
    config = load_config(args)
    names = [s.name for s in config.sources if s.kind == "mailbox"]
    if args.name not in names:
        print(f"no mailbox source named {args.name!r} (mailboxes: {names or 'none'})",
              file=sys.stderr)  # fmt: skip
        return EXIT_CONFIG
    return check_connector(config, args.name, roles=("source",), probe_limit=args.limit)


def check_connector(
    config: Any,
    name: str,
    *,
    roles: Sequence[str] = ("source", "vendor", "destination"),
    probe_limit: int | None = None,
) -> int:
    """Build the connector(s) called ``name`` and run their read-only probe."""
    from connectors import registry
    from connectors.base import ConnectorContext
    from connectors.errors import AuthFailed, DocrelayError, TransientError

    found: list[tuple[str, Any]] = []
    if "source" in roles:
        found += [("source", s) for s in config.sources if s.name == name]
    if "vendor" in roles and name in config.vendors:
        found.append(("vendor", config.vendors[name]))
    if "destination" in roles and name in config.destinations:
        found.append(("destination", config.destinations[name]))
    if not found:
        known = sorted({*(s.name for s in config.sources), *config.vendors, *config.destinations})
        print(f"nothing called {name!r} in {config.path} (known: {', '.join(known) or 'none'})",
              file=sys.stderr)  # fmt: skip
        return EXIT_CONFIG
    state_dir = config.core.store.blob_dir.parent / "state"
    worst = 0
    for role, settings in found:
        context = ConnectorContext(
            name=name,
            data_dir=state_dir / name,
            clock=time.monotonic,
            public_url=config.core.web.callback_base(),
        )
        connector = registry.load(role, settings.kind)(settings, context)  # type: ignore[arg-type]
        if probe_limit is not None:
            connector.probe_limit = probe_limit
        label = f"{name} ({role} {settings.kind})"
        try:
            lines = connector.probe()
        except AuthFailed as exc:
            print(f"{label}: credentials refused: {exc}", file=sys.stderr)
            worst = max(worst, EXIT_REFUSED)
            continue
        except TransientError as exc:
            print(f"{label}: cannot be reached: {exc}", file=sys.stderr)
            worst = max(worst, EXIT_UNREACHABLE)
            continue
        except DocrelayError as exc:
            print(f"{label}: {exc}", file=sys.stderr)
            worst = max(worst, 1)
            continue
        finally:
            connector.close()
        print(f"{label}: ok")
        for line in lines:
            print(f"  {line}")
    return worst


if __name__ == "__main__":
    raise SystemExit(main())
