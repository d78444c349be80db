"""What each connector supplies to the conformance suite: a small factory that starts its
emulator or server and says how to configure it.

The suite is parametrised over ``connectors.registry.available()``: a kind registered without a
factory here makes ``test_every_registered_connector_has_a_factory`` fail, so no connector
ships unchecked.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from connectors import registry
from connectors.base import (
    ConnectorContext,
    DocumentRef,
    IngestOutcome,
    IngestStatus,
    IntakeItem,
    PollStatus,
    Vendor,
)
from connectors.emulation.faults import FaultInjector
from connectors.emulation.requestlog import RequestLog
from tests.invoices import random_spec, render_pdf
from tests.servers import serve
from tests.tryton_server import ON_ONE_WORKER


def context(name: str, tmp_path: Path) -> ConnectorContext:
    return ConnectorContext(
        name=name, data_dir=tmp_path / "state" / name, clock=time.monotonic, public_url=None
    )


def document(tmp_path: Path, seed: int = 7, *, document_id: int = 1) -> DocumentRef:
    """A generated invoice as the engine hands it to a vendor."""
    data = render_pdf(random_spec(seed))
    path = tmp_path / f"doc-{seed}-{document_id}.pdf"
    path.write_bytes(data)
    import hashlib

    return DocumentRef(
        id=document_id,
        sha256=hashlib.sha256(data).hexdigest(),
        filename=path.name,
        mime_type="application/pdf",
        size_bytes=len(data),
        pages=1,
        received_at=datetime.now(UTC),
        metadata={},
        path=path,
        page_sizes=((595.28, 841.89),),
    )


# --------------------------------------------------------------------------- vendors


@dataclasses.dataclass
class VendorRun:
    """A vendor's emulator (or nothing, for an offline vendor) running for one test."""

    kind: str
    settings: dict[str, Any]
    """A working profile's settings (what a ``[vendors.<name>]`` table holds)."""
    tmp_path: Path
    bad_credentials: dict[str, Any] | None = None
    """Overrides that make the vendor refuse us; None for a vendor without an account."""
    fast: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Overrides for checks that expect a failure: few retries, short waits."""
    requests: RequestLog | None = None
    faults: FaultInjector | None = None
    upload_path: str | None = None
    """The API path of the upload (where a hidden answer is planted)."""
    uploads: Callable[[], int] | None = None
    """How many documents the vendor holds."""
    document: Callable[..., DocumentRef] = document
    """Makes the generated invoice the vendor is given (``document``'s signature): a vendor
    that reads something else than the printed page (an embedded e-invoice) gets its own."""
    derived: frozenset[str] = frozenset()
    """Fields the vendor's answer or mapping fills from other values when its own is missing
    (Gini: the currency from the amounts'), so their outcome is not the engine's alone."""

    made: list[Vendor] = dataclasses.field(default_factory=list)

    def vendor(self, name: str = "p", **overrides: Any) -> Vendor:
        """A vendor for this run (closed when the run ends)."""
        cls = registry.load("vendor", self.kind)
        settings = cls.settings_model.model_validate({**self.settings, **overrides})
        made = cls(settings, context(name, self.tmp_path))
        self.made.append(made)
        return made

    def close(self) -> None:
        for made in self.made:
            made.close()

    @property
    def http(self) -> bool:
        return self.requests is not None


def ready(vendor: Vendor, ref: str, data: Mapping[str, Any], timeout: float = 20) -> tuple:
    """Poll until the vendor says READY; returns (ref, data) as the engine would hold them."""
    deadline = time.monotonic() + timeout
    data = dict(data)
    while True:
        result = vendor.poll(ref, data)
        if result.data is not None:
            data = dict(result.data)
        ref = result.vendor_ref or ref
        if result.status == PollStatus.READY:
            return ref, data
        assert result.status != PollStatus.REJECTED, result.reason
        assert time.monotonic() < deadline, f"not ready after {timeout}s"
        time.sleep(0.1)


@contextmanager
def local_vendor(tmp_path: Path) -> Iterator[VendorRun]:
    yield VendorRun(kind="local", settings={"kind": "local"}, tmp_path=tmp_path)


def einvoice_document(tmp_path: Path, seed: int = 7, *, document_id: int = 1) -> DocumentRef:
    """The generated invoice's PDF with its own UBL embedded as ``factur-x.xml``."""
    from tests.einvoices import einvoice_pdf

    printed = document(tmp_path, seed, document_id=document_id)
    data = einvoice_pdf(random_spec(seed))
    printed.path.write_bytes(data)
    import hashlib

    return dataclasses.replace(
        printed, sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data)
    )


@contextmanager
def einvoice_vendor(tmp_path: Path) -> Iterator[VendorRun]:
    yield VendorRun(
        kind="einvoice",
        settings={"kind": "einvoice"},
        tmp_path=tmp_path,
        document=einvoice_document,
    )


@contextmanager
def emulated(
    tmp_path: Path,
    kind: str,
    app: Any,
    settings: Callable[[str], dict[str, Any]],
    *,
    upload_path: str,
    uploads: Callable[[Any], int],
    derived: frozenset[str] = frozenset(),
) -> Iterator[VendorRun]:
    """A vendor emulator built on the kit, served on loopback for one test: ``settings`` maps
    its URL to a working profile, ``uploads`` its state to the documents it holds."""
    state = app.state.emulator
    with serve(app) as url:
        yield VendorRun(
            kind=kind,
            settings={"kind": kind, **settings(url)},
            tmp_path=tmp_path,
            bad_credentials={"password": "wrong"},
            fast={"max_retries": 1, "retry_after_max": 0.1},
            requests=app.state.requests,
            faults=app.state.faults,
            upload_path=upload_path,
            uploads=lambda: uploads(state),
            derived=derived,
        )


def rossum_vendor(tmp_path: Path) -> AbstractContextManager[VendorRun]:
    from connectors.vendors.rossum.emulator import EmulatorOptions, create_app

    return emulated(
        tmp_path,
        "rossum",
        create_app(EmulatorOptions(delay=0.2)),
        lambda url: {
            "base_url": f"{url}/api/v1",
            "username": "user@example.com",
            "password": "secret",
            "queue": 1,
            "poll_interval": 0.2,
        },
        upload_path="/api/v1/uploads",
        uploads=lambda state: len(state.uploads),
    )


@contextmanager
def testkit_vendor(tmp_path: Path) -> Iterator[VendorRun]:
    from tests.conformance.testkit.emulator import Options, create_app

    app = create_app(Options(delay=0.2))
    state = app.state.emulator
    with serve(app) as url:
        yield VendorRun(
            kind="testkit",
            settings={"kind": "testkit", "base_url": f"{url}/api", "password": "kit-secret"},
            tmp_path=tmp_path,
            bad_credentials={"password": "wrong"},
            fast={"max_retries": 1},
            requests=app.state.requests,
            faults=app.state.faults,
            upload_path="/api/documents",
            uploads=lambda: len(state.documents),
        )


def konfuzio_vendor(tmp_path: Path) -> AbstractContextManager[VendorRun]:
    from connectors.vendors.konfuzio.emulator import EmulatorOptions, create_app

    return emulated(
        tmp_path,
        "konfuzio",
        create_app(EmulatorOptions(delay=0.2)),
        lambda url: {
            "base_url": url,
            "username": "user@example.com",
            "password": "secret",
            "project": 1,
            "poll_interval": 0.2,
        },
        upload_path="/api/v3/documents/",
        uploads=lambda state: len(state.documents),
    )


def gini_vendor(tmp_path: Path) -> AbstractContextManager[VendorRun]:
    from connectors.vendors.gini.emulator import EmulatorOptions, create_app

    return emulated(
        tmp_path,
        "gini",
        create_app(EmulatorOptions(delay=0.2)),
        lambda url: {
            "base_url": url,
            "auth_url": url,  # the emulator's User Center shares its port
            "client_id": "client",
            "client_secret": "secret",
            "username": "user@example.com",
            "password": "secret",
            "poll_interval": 0.2,
        },
        upload_path="/documents",
        uploads=lambda state: len(state.documents),
        derived=frozenset({"currency", "payment_reference"}),  # amounts' currency; invoice no.
    )


def deepopinion_vendor(tmp_path: Path) -> AbstractContextManager[VendorRun]:
    """Synchronous: the answer comes with the upload. Every document goes to human review
    (``low_confidence_rate=1``, a HITL made by the connector), so there is something to poll."""
    from connectors.vendors.deepopinion.emulator import EmulatorOptions, create_app

    return emulated(
        tmp_path,
        "deepopinion",
        create_app(EmulatorOptions(delay=0.2, low_confidence_rate=1.0)),
        lambda url: {
            "base_url": url,
            "email": "user@example.com",
            "password": "secret",
            "organization_id": 1,
            "project_id": 1,
            "model_id": 1,
            "hitl": True,
            "poll_interval": 0.2,
        },
        upload_path="/organizations/1/projects/1/models/1/extract",
        uploads=lambda state: len(state.documents),
    )


VENDORS: dict[str, Callable[[Path], AbstractContextManager[VendorRun]]] = {
    "deepopinion": deepopinion_vendor,
    "einvoice": einvoice_vendor,
    "gini": gini_vendor,
    "konfuzio": konfuzio_vendor,
    "local": local_vendor,
    "rossum": rossum_vendor,
    "testkit": testkit_vendor,
}


# --------------------------------------------------------------------------- sources


class RecordingSink:
    """The engine side of intake as a source sees it: records what was offered and released,
    in order, and answers like the engine (duplicates by content)."""

    def __init__(self, *, commit_seconds: float = 0.0) -> None:
        self.commit_seconds = commit_seconds
        """How long each commit takes: a source must not release before it is over."""
        self.committed_at: list[float] = []
        self.lock = threading.Lock()
        self.events: list[tuple[str, str]] = []
        self.items: list[tuple[IntakeItem, bytes]] = []
        self._ids: dict[bytes, int] = {}
        self.state: dict[tuple[str, str], dict[str, Any]] = {}
        self.leases: set[str] = set()

    def ingest(self, item: IntakeItem) -> IngestOutcome:
        with item.open() as stream:
            data = stream.read()
        time.sleep(self.commit_seconds)
        with self.lock:
            self.committed_at.append(time.monotonic())
            self.items.append((item, data))
            self.events.append(("ingest", item.source_ref))
            if item.rejection:
                return IngestOutcome(IngestStatus.REJECTED, len(self.items), item.rejection)
            if data in self._ids:
                return IngestOutcome(IngestStatus.DUPLICATE, self._ids[data])
            self._ids[data] = len(self.items)
            return IngestOutcome(IngestStatus.INGESTED, len(self.items))

    def reject_unstored(self, item: IntakeItem, reason: str) -> IngestOutcome:
        with self.lock:
            self.events.append(("reject_unstored", item.source_ref))
        return IngestOutcome(IngestStatus.REJECTED, None, reason)

    def mark_released(self, document_id: int) -> None:
        with self.lock:
            ref = self.items[document_id - 1][0].source_ref
            self.events.append(("released", ref))

    def load_state(self, source: str, key: str) -> dict[str, Any] | None:
        return self.state.get((source, key))

    def save_state(self, source: str, key: str, value: Mapping[str, Any]) -> None:
        self.state[(source, key)] = dict(value)

    def hold_lease(self, name: str, seconds: float) -> bool:
        self.leases.add(name)
        return True

    def drop_lease(self, name: str) -> None:
        self.leases.discard(name)

    def report_health(self, name: str, state: str, reason: str | None = None) -> None:
        pass


@dataclasses.dataclass
class SourceRun:
    """A source's real server (a folder, a Dovecot) for one test."""

    kind: str
    settings: dict[str, Any]
    tmp_path: Path
    offer: Callable[[str, bytes], None]
    """Put one document where the source finds it (a file, a mail with one attachment)."""
    released: Callable[[str], bool]
    """The document is gone from where it was offered, as the source's settings say."""

    def source(self) -> Any:
        cls = registry.load("source", self.kind)
        settings = cls.settings_model.model_validate(self.settings)
        return cls(settings, context(self.settings["name"], self.tmp_path))


@contextmanager
def folder_source(tmp_path: Path) -> Iterator[SourceRun]:
    inbox = tmp_path / "inbox"
    yield SourceRun(
        kind="folder",
        settings={"kind": "folder", "name": "scans", "path": str(inbox), "settle_seconds": 0.2},
        tmp_path=tmp_path,
        offer=lambda name, data: (inbox.mkdir(exist_ok=True), (inbox / name).write_bytes(data)),
        released=lambda name: (inbox / "processed" / name).exists() and not (inbox / name).exists(),
    )


@contextmanager
def mailbox_source(tmp_path: Path) -> Iterator[SourceRun]:
    from email.message import EmailMessage

    from tests.dovecot import _servers

    with _servers(tmp_path) as make:
        server = make()
        number = iter(range(1, 10_000))

        def offer(name: str, data: bytes) -> None:
            msg = EmailMessage()
            msg["From"] = "billing@supplier.example"
            msg["To"] = "invoices@example.com"
            msg["Subject"] = f"Invoice {name}"
            msg["Message-ID"] = f"<conformance-{next(number)}@supplier.example>"
            msg.set_content("Please find the invoice attached.")
            msg.add_attachment(data, maintype="application", subtype="pdf", filename=name)
            server.append("alice", "INBOX", msg.as_bytes())

        def released(name: str) -> bool:
            flags = server.flags("alice", "INBOX").values()
            return bool(flags) and all("$DocrelayTaken" in f for f in flags)

        yield SourceRun(
            kind="mailbox",
            settings={
                "kind": "mailbox",
                "name": "mail",
                "host": server.host,
                "port": server.imaps_port,
                "tls": "implicit",
                "ca_file": str(server.cafile),
                "username": "alice",
                "password": "secret",
                "poll_interval": 0.5,
            },
            tmp_path=tmp_path,
            offer=offer,
            released=released,
        )


SOURCES: dict[str, Callable[[Path], AbstractContextManager[SourceRun]]] = {
    "folder": folder_source,
    "mailbox": mailbox_source,
}


# --------------------------------------------------------------------------- destinations


@dataclasses.dataclass
class DestinationRun:
    kind: str
    settings: dict[str, Any]
    tmp_path: Path
    records: Callable[[], list[dict[str, Any]]]
    """What the downstream system holds, one entry per record it made (not per push)."""
    made: list[Any] = dataclasses.field(default_factory=list)

    def destination(self) -> Any:
        """A destination for this run (closed when the run ends)."""
        cls = registry.load("destination", self.kind)
        settings = cls.settings_model.model_validate(self.settings)
        made = cls(settings, context("out", self.tmp_path))
        self.made.append(made)
        return made

    def close(self) -> None:
        for made in self.made:
            made.close()


@contextmanager
def folder_destination(tmp_path: Path) -> Iterator[DestinationRun]:
    import json

    out = tmp_path / "out"
    yield DestinationRun(
        kind="folder",
        settings={"kind": "folder", "path": str(out)},
        tmp_path=tmp_path,
        records=lambda: [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))],
    )


@contextmanager
def webhook_destination(tmp_path: Path) -> Iterator[DestinationRun]:
    """A real receiver under uvicorn that verifies the signature and upserts by the key."""
    from tests.webhook_receiver import SECRET, create_app

    app = create_app()
    with serve(app) as url:
        yield DestinationRun(
            kind="webhook",
            settings={"kind": "webhook", "url": f"{url}/hook", "secret": SECRET},
            tmp_path=tmp_path,
            records=app.state.receiver.bodies,
        )


@contextmanager
def sql_destination(tmp_path: Path) -> Iterator[DestinationRun]:
    """The SQL table destination on SQLite (tests/test_destination_sql.py covers the servers);
    a record is a row, read back as the folder's JSON shape: version and fields as text."""
    from sqlalchemy import MetaData, Table, create_engine, inspect, select

    from connectors.base import DOCUMENT_FIELDS
    from connectors.destinations.records import as_text

    url = f"sqlite:///{tmp_path}/out.db"

    def records() -> list[dict[str, Any]]:
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                if not inspect(conn).has_table("invoices"):
                    return []
                table = Table("invoices", MetaData(), autoload_with=conn)  # typed columns
                rows = conn.execute(select(table).order_by(table.c.document_id))
                return [
                    {
                        "document_id": row["document_id"],
                        "version": row["version"],
                        "fields": {name: as_text(row[name]) for name in DOCUMENT_FIELDS},
                    }
                    for row in rows.mappings()
                ]
        finally:
            engine.dispose()

    yield DestinationRun(
        kind="sql",
        settings={"kind": "sql", "url": url, "table": "invoices"},
        tmp_path=tmp_path,
        records=records,
    )


@contextmanager
def sftp_destination(tmp_path: Path) -> Iterator[DestinationRun]:
    """A throw-away OpenSSH server on loopback (tests/sshd.py) writing into the test's own
    directory; a record is a JSON file there."""
    import json

    from tests.sshd import sshd_servers

    out = tmp_path / "sftp-out"
    with sshd_servers(tmp_path) as make:
        server = make()
        yield DestinationRun(
            kind="sftp",
            settings=server.settings(out, create_dirs=True),
            tmp_path=tmp_path,
            records=lambda: [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))],
        )


@contextmanager
def tryton_destination(tmp_path: Path) -> Iterator[DestinationRun]:
    """The Tryton destination on the session's SQLite-backed trytond (tests/tryton_server.py;
    tests/test_destination_tryton.py covers PostgreSQL too). A record is a supplier invoice
    made during this run, read back as the folder's JSON shape."""
    from connectors.destinations.records import as_text
    from connectors.destinations.tryton import parse_comment
    from tests.tryton_server import server_or_skip

    server = server_or_skip("sqlite")
    rpc = server.rpc()
    invoices = rpc.get_proxy("account.invoice")
    before = invoices.search([], 0, 1, [("id", "DESC")], rpc.context)
    baseline = before[0] if before else 0

    def records() -> list[dict[str, Any]]:
        rows = invoices.search_read(
            [("id", ">", baseline), ("type", "=", "in")], 0, None, [("id", "ASC")],
            ["comment", "reference", "total_amount", "untaxed_amount"], rpc.context,
        )  # fmt: skip
        out = []
        for row in rows:
            marks = parse_comment(row["comment"] or "")
            if "key" not in marks:
                continue
            out.append(
                {
                    "key": marks["key"],
                    "version": int(marks["version"]),
                    "fields": {
                        "invoice_number": row["reference"],
                        "total_amount": as_text(row["total_amount"]),
                        "net_amount": as_text(row["untaxed_amount"]),
                    },
                }
            )
        return out

    yield DestinationRun(
        kind="tryton",
        settings=server.settings(fallback_party="Unknown supplier"),
        tmp_path=tmp_path,
        records=records,
    )


@contextmanager
def odoo_destination(tmp_path: Path) -> Iterator[DestinationRun]:
    """The Odoo destination on `docrelay emulate odoo`'s app under uvicorn (JSON-2; the
    XML-RPC side is in tests/test_destination_odoo.py). A record is a vendor bill carrying a
    docrelay key, read back as the folder's JSON shape."""
    from decimal import Decimal

    from connectors.destinations.odoo.emulator import create_app
    from connectors.destinations.odoo.mapping import parse_narration
    from connectors.destinations.records import as_text

    app = create_app()

    def records() -> list[dict[str, Any]]:
        out = []
        for move in app.state.emulator.snapshot("account.move")["account.move"]:
            marks = parse_narration(move["narration"])
            if move["move_type"] != "in_invoice" or "key" not in marks:
                continue
            out.append(
                {
                    "key": marks["key"],
                    "version": int(marks["version"]),
                    "fields": {
                        "invoice_number": move["ref"] or None,
                        "total_amount": as_text(Decimal(str(move["amount_total"]))),
                        "net_amount": as_text(Decimal(str(move["amount_untaxed"]))),
                    },
                }
            )
        return out

    with serve(app) as url:
        yield DestinationRun(
            kind="odoo",
            settings={
                "kind": "odoo",
                "url": url,
                "database": "odoo",
                "api_key": "secret",
                "fallback_partner": "Unknown supplier",
            },
            tmp_path=tmp_path,
            records=records,
        )


DESTINATIONS: dict[str, Callable[[Path], AbstractContextManager[DestinationRun]]] = {
    "folder": folder_destination,
    "sftp": sftp_destination,
    "webhook": webhook_destination,
    "sql": sql_destination,
    "tryton": tryton_destination,
    "odoo": odoo_destination,
}

DESTINATION_PARAMS = [
    pytest.param(name, marks=ON_ONE_WORKER) if name == "tryton" else name
    for name in sorted(DESTINATIONS)
]
"""``DESTINATIONS`` for ``parametrize``: Tryton's on the worker that has its server."""

HARNESSES: dict[str, dict[str, Any]] = {
    "vendor": VENDORS,
    "source": SOURCES,
    "destination": DESTINATIONS,
}
