"""Map the local extractor's raw result (``rules.find_fields``) to the canonical model. Pure.

Confidence is always None: the rules either find a labelled value that passed validation or
find nothing, so there is no calibrated probability to report, and a made-up number would
mislead review thresholds downstream. ``vendor_label`` is the label text as printed (None for
inferred values such as a letterhead supplier name), ``raw_text`` the value as printed.

The mapping itself is ``connectors.extract.canonical``, which the emulators' extraction engine
shares; this module fixes the local vendor's one choice, the confidence.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connectors.base import CanonicalResult
from connectors.extract.canonical import to_canonical

CONFIDENCE: float | None = None
"""What every local value carries as confidence (see the module docstring)."""


def normalize(raw: Mapping[str, Any]) -> CanonicalResult:
    """The canonical result for a raw local-extractor result."""
    return to_canonical(raw, confidence=CONFIDENCE)
