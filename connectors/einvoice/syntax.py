"""Which EN 16931 syntax an XML root is: CII (UN/CEFACT CrossIndustryInvoice) or UBL 2.1
(Invoice or CreditNote), told by the root's namespace and name, never by the file name."""

from __future__ import annotations

from typing import Final, Literal

from lxml import etree

Syntax = Literal["cii", "ubl"]

NS_CII: Final = "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100"
NS_UBL_INVOICE: Final = "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"
NS_UBL_CREDIT_NOTE: Final = "urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2"

ROOTS: Final[dict[tuple[str, str], Syntax]] = {
    (NS_CII, "CrossIndustryInvoice"): "cii",
    (NS_UBL_INVOICE, "Invoice"): "ubl",
    (NS_UBL_CREDIT_NOTE, "CreditNote"): "ubl",
}


def detect(root: etree._Element) -> Syntax | None:
    """``cii`` or ``ubl`` for an e-invoice root, None for any other XML (ZUGFeRD 1.0's
    ``CrossIndustryDocument`` included: it predates EN 16931)."""
    if not isinstance(root.tag, str):
        return None
    name = etree.QName(root)
    return ROOTS.get((name.namespace or "", name.localname))


def describe(root: etree._Element) -> str:
    """The root as ``{namespace}name``, for a refusal that says what the XML was instead."""
    return str(root.tag)
