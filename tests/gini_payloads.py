"""Gini answers as the seed (004) prints them, made strict JSON, for the unit tests."""

from __future__ import annotations

import copy
from typing import Any

DOC_ID = "626626a0-749f-11e2-bfd6-000000000000"

SEED_DOCUMENT: dict[str, Any] = {  # 004:86-100
    "id": DOC_ID,
    "creationDate": 1360623867402,
    "name": "scanned.jpg",
    "progress": "COMPLETED",
    "origin": "UPLOAD",
    "sourceClassification": "SCANNED",
    "pageCount": 1,
    "_links": {
        "extractions": f"https://api.gini.net/documents/{DOC_ID}/extractions",
        "layout": f"https://api.gini.net/documents/{DOC_ID}/layout",
        "document": f"https://api.gini.net/documents/{DOC_ID}",
        "processed": f"https://api.gini.net/documents/{DOC_ID}/processed",
    },
}

SEED_EXTRACTIONS: dict[str, Any] = {  # 004:131-173, without the "..."
    "extractions": {
        "amountToPay": {
            "box": {"height": 9.0, "left": 516.0, "page": 1, "top": 588.0, "width": 42.0},
            "entity": "amount",
            "value": "24.99:EUR",
            "candidates": "amounts",
        }
    },
    "candidates": {
        "amounts": [
            {
                "box": {"height": 9.0, "left": 516.0, "page": 1, "top": 588.0, "width": 42.0},
                "entity": "amount",
                "value": "24.99:EUR",
            },
            {
                "box": {"height": 9.0, "left": 241.0, "page": 1, "top": 588.0, "width": 42.0},
                "entity": "amount",
                "value": "21.0:EUR",
            },
        ]
    },
}

FEEDBACK_EXTRACTIONS: dict[str, Any] = {  # 004:209-244: the feedback chapter's scenario
    "candidates": {},
    "extractions": {
        "amountToPay": {
            "box": {"height": 8.0, "left": 545.0, "page": 1, "top": 586.0, "width": 17.0},
            "candidates": "amounts",
            "entity": "amount",
            "value": "5.60:EUR",
        },
        "iban": {
            "box": {"height": 7.0, "left": 447.0, "page": 1, "top": 746.0, "width": 100.0},
            "candidates": "ibans",
            "entity": "iban",
            "value": "DE68130300000017850360",
        },
        "paymentReference": {"entity": "reference", "value": "ReNr 123, KdNr 32"},
    },
}

SEED_FEEDBACK: dict[str, Any] = {  # 004:245-260, the trailing comma dropped
    "feedback": {
        "amountToPay": {"value": "5.60:EUR"},
        "iban": {"value": "DE68130300000017850360"},
        "paymentReference": {"value": "ReNr 1735, KdNr 37"},
        "paymentRecipient": {"value": "Zalando SE"},
    }
}

SEED_LAYOUT_PAGE: dict[str, Any] = {  # 004:330-456, one word kept
    "number": 1,
    "sizeX": 595.3,
    "sizeY": 841.9,
    "textZones": [
        {
            "paragraphs": [
                {
                    "w": 80.0,
                    "h": 9.0,
                    "t": 588.0,
                    "l": 480.0,
                    "lines": [
                        {
                            "w": 80.0,
                            "h": 9.0,
                            "t": 588.0,
                            "l": 480.0,
                            "wds": [
                                {
                                    "h": 9.0,
                                    "w": 42.0,
                                    "l": 516.0,
                                    "t": 588.0,
                                    "fontSize": 9.0,
                                    "fontFamily": "Arial",
                                    "bold": False,
                                    "text": "24,99",
                                }
                            ],
                        }
                    ],
                }
            ]
        }
    ],
    "regions": [{"h": 300.0, "w": 595.3, "l": 0.0, "t": 541.9, "type": "RemittanceSlip"}],
}


def document_info(doc_id: str, base: str, **fields: Any) -> dict[str, Any]:
    """The document information of ``doc_id`` with links below ``base``."""
    info = copy.deepcopy(SEED_DOCUMENT)
    url = f"{base}/documents/{doc_id}"
    info.update(
        id=doc_id,
        _links={
            "extractions": f"{url}/extractions",
            "layout": f"{url}/layout",
            "document": url,
            "processed": f"{url}/processed",
        },
        **fields,
    )
    return info
