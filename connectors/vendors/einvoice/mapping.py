"""Map the ``einvoice`` vendor's raw result to the canonical model. Pure.

The mapping is ``connectors.einvoice.canonical`` (exact values, business-term labels, the VAT
breakdown as extras); confidence is 1.0 for an invoice whose checks passed and None for one
passed on despite problems (``on_inconsistent = "trust"``), see that module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connectors.base import CanonicalResult
from connectors.einvoice.canonical import to_canonical


def normalize(raw: Mapping[str, Any]) -> CanonicalResult:
    """The canonical result for a raw e-invoice result."""
    return to_canonical(raw)
