"""The ``local`` vendor's optional layer of the user's own invoice2data supplier templates."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from connectors.extract.templates import SupplierTemplates
from connectors.vendors.local import LocalSettings
from tests.test_local_vendor import doc_ref, make_vendor, typed

TEMPLATE = """\
issuer: Nordwind Logistik
keywords:
  - Nordwind Logistik
  - Frachtbeleg
required_fields: [invoice_number, amount]  # invoice2data wants a date too by default
fields:
  invoice_number: Belegref\\.\\s+(NW-\\d+)
  amount: Offener Betrag\\s+([\\d.,]+)
  amount_untaxed: Fracht netto\\s+([\\d.,]+)
  partner_name: (Nordwind Logistik GmbH)
options:
  currency: EUR
  date_formats: ['%d.%m.%Y']
  decimal_separator: ','
"""

INVOICE = """\
Nordwind Logistik GmbH · Hafenstraße 4 · 20457 Hamburg
Frachtbeleg
Belegref. NW-20931
Rechnungsdatum: 14.10.2026
Zwischensumme: 100,00 EUR
Fracht netto 840,00
MwSt. 19 %: 159,60 EUR
Offener Betrag 999,60
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "nordwind.yml").write_text(TEMPLATE, encoding="utf-8")
    return templates


def read(tmp_path: Path, text: str, **settings: object) -> tuple[dict, dict]:
    path = tmp_path / "invoice.txt"
    path.write_text(text, encoding="utf-8")
    vendor = make_vendor(tmp_path, **settings)
    document = doc_ref(path, "text/plain")
    submitted = vendor.submit(document)
    raw = vendor.fetch(submitted.vendor_ref, submitted.data, document)
    result = vendor.normalize(raw)
    return raw, {f.name: typed(f) for f in result.fields}


def test_a_matching_template_gives_its_fields_and_the_rules_the_rest(tmp_path, folder):
    raw, fields = read(tmp_path, INVOICE, templates=folder)
    assert raw["template"] == "nordwind.yml"
    assert fields["invoice_number"] == "NW-20931"
    assert fields["total_amount"] == Decimal("999.60")
    assert fields["net_amount"] == Decimal("840.00")  # the rules' "Zwischensumme" is replaced
    assert fields["supplier_name"] == "Nordwind Logistik GmbH"
    assert fields["issue_date"] == date(2026, 10, 14)  # from the rules: the template has none
    assert fields["tax_amount"] == Decimal("159.60")
    labels = {f["name"]: f["label"] for f in raw["fields"]}
    assert labels["total_amount"] == "template nordwind.yml"
    assert labels["issue_date"] == "Rechnungsdatum"


def test_without_templates_the_rules_alone_read_it(tmp_path):
    raw, fields = read(tmp_path, INVOICE)
    assert "template" not in raw
    assert "total_amount" not in fields  # "Offener Betrag" is no label the rules know
    assert fields["net_amount"] == Decimal("100.00")


def test_a_document_the_keywords_do_not_match_is_left_to_the_rules(tmp_path, folder):
    raw, fields = read(tmp_path, INVOICE.replace("Frachtbeleg", "Lieferschein"), templates=folder)
    assert "template" not in raw
    assert fields["net_amount"] == Decimal("100.00")


def test_a_template_that_fails_keeps_the_rules_fields(tmp_path, folder):
    broken = TEMPLATE.replace("(NW-\\d+)", "(NW-[\\d+)")
    assert broken != TEMPLATE
    (folder / "nordwind.yml").write_text(broken, encoding="utf-8")  # "[" never closed
    raw, fields = read(tmp_path, INVOICE, templates=folder)
    assert "template" not in raw
    assert fields["net_amount"] == Decimal("100.00")


def test_invoice2datas_own_templates_stay_off_unless_asked_for(folder):
    ours = SupplierTemplates(folder)
    assert [t["template_name"] for t in ours.templates()] == ["nordwind.yml"]
    assert not SupplierTemplates(None).enabled
    bundled = SupplierTemplates(None, bundled=True).templates()
    assert len(bundled) > 100
    assert LocalSettings().bundled_templates is False


def test_a_templates_setting_that_is_no_folder_is_refused(tmp_path):
    with pytest.raises(ValidationError, match="is not a folder of invoice2data templates"):
        LocalSettings(templates=tmp_path / "missing")
