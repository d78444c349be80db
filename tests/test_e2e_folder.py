"""End to end: the real daemon process, generated invoices dropped in the watched folder.

Checks the canonical values in the public SQL views and in the exported JSON, on SQLite and on a
real PostgreSQL server.
"""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.daemon_proc import DaemonProcess, wait_until, write_config
from tests.invoices import expected_fields, random_spec, write_invoice

pytestmark = pytest.mark.e2e


def readme_queries() -> list[str]:
    """The example queries of README.md: they must run as printed, on SQLite and PostgreSQL."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = readme.split("```sql\n", 1)[1].split("```", 1)[0]
    return [q.strip() for q in block.split(";") if q.strip()]


def drop(inbox: Path, name: str, writer) -> Path:
    """Write under a temporary name and rename, as scanners and copy tools do."""
    tmp = inbox / f"{name}.part"
    writer(tmp)
    final = inbox / name
    tmp.rename(final)
    return final


def exported(outbox: Path) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in outbox.glob("*.json")}


def as_python(value, like):
    if value is None:
        return None
    if isinstance(like, Decimal):
        return Decimal(str(value))
    if isinstance(like, date) and not isinstance(value, date):
        return date.fromisoformat(str(value)[:10])
    return value


def test_invoices_flow_to_sql_views_and_json_exports(tmp_path, store_url):
    config = write_config(tmp_path, store_url=store_url)
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    specs = {}
    for seed in range(8):
        lang = "de" if seed % 2 else "en"
        spec = random_spec(seed, lang=lang)
        name = f"invoice-{seed}-{lang}.pdf"
        specs[name] = spec
        drop(inbox, name, lambda p, spec=spec, lang=lang: write_invoice(p, spec, lang=lang))

    daemon = DaemonProcess(config).start()
    try:
        wait_until(lambda: len(exported(outbox)) == len(specs), 60, what="all exports")
        engine = create_engine(store_url)
        with engine.connect() as conn:
            wait_until(
                lambda: (
                    conn.execute(
                        text(
                            "SELECT COUNT(*) FROM docrelay_documents WHERE exported_at IS NOT NULL"
                        )
                    ).scalar()
                    == len(specs)
                ),
                30,
                what="exported_at in the view",
            )
            docs = {
                r.filename: r
                for r in conn.execute(text("SELECT * FROM docrelay_documents")).mappings()
            }
            invoices = {
                r["document_id"]: r
                for r in conn.execute(text("SELECT * FROM docrelay_invoices")).mappings()
            }
            lines = (
                conn.execute(
                    text("SELECT * FROM docrelay_line_items ORDER BY document_id, line_no")
                )
                .mappings()
                .all()
            )
            readme = {query: conn.execute(text(query)).all() for query in readme_queries()}
        engine.dispose()
        assert set(docs) == set(specs)
        ready, stuck, refused, report = readme.values()
        assert len(ready) == len(specs) and stuck == [] and refused == []
        assert len(report) == sum(len(spec.lines) for spec in specs.values())
        exports = exported(outbox)
        for name, spec in specs.items():
            doc = docs[name]
            assert doc["state"] == "done", doc
            assert doc["vendor"] == "local"
            assert doc["pages"] == 1
            row = invoices[doc["document_id"]]
            export = exports[f"{doc['document_id']}.json"]
            for field, want in expected_fields(spec).items():
                assert as_python(row[field], want) == want, (name, field, row[field], want)
                assert as_python(export["fields"].get(field), want) == want, (name, field)
            doc_lines = [li for li in lines if li["document_id"] == doc["document_id"]]
            assert len(doc_lines) == len(spec.lines)
            for got, (description, quantity, unit_price, _rate) in zip(
                doc_lines, spec.lines, strict=True
            ):
                assert got["description"] == description
                assert Decimal(str(got["quantity"])) == quantity
                assert Decimal(str(got["unit_price"])) == unit_price
            assert export["document"]["sha256"] == doc["sha256"]
            assert export["provenance"]["vendor"] == "local"
        assert sorted(p.name for p in (inbox / "processed").iterdir()) == sorted(specs)
        assert [p for p in inbox.iterdir() if p.is_file()] == []
    finally:
        assert daemon.stop() == 0, daemon.log()
    assert "Traceback" not in daemon.log()
