"""The OpenAPI 3 document of the web app's own API, served at ``GET /api/v1/openapi.json``.

Built in code from the handlers' real answers (``daemon.web``, ``daemon.webintake``), so an ERP
or a scanner integration can generate a client and a fuzzer can hold the daemon to it
(``tests/test_web_fuzz.py``; ``tests/test_openapi.py`` checks that each path and method here is a
route of the app and each API route is here). The vendor webhooks (``/webhooks/…``: each
vendor's own format) and the HTML status page are not part of it.
"""

from __future__ import annotations

from typing import Any

from daemon import __version__
from daemon.webintake import DOCUMENT_KEYS

PATH = "/api/v1/openapi.json"

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(description: str, schema: Schema, **headers: str) -> Schema:
    answer: Schema = {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }
    if headers:
        answer["headers"] = {
            name: {"description": text, "schema": {"type": "string"}}
            for name, text in headers.items()
        }
    return answer


def _error(description: str, **headers: str) -> Schema:
    return _json(description, _ref("Error"), **headers)


UNAUTHORIZED = _error("No valid bearer token.", **{"WWW-Authenticate": 'Bearer realm="docrelay"'})
API_OFF = "the API is off (no `[web.api]` tokens: answered as if there were no such address)"
TOO_SLOW = _error(
    "The body did not arrive in time (`web.body_timeout`); the connection is closed.",
    Connection="close",
)
DOCUMENT_ID = {
    "name": "document_id",
    "in": "path",
    "required": True,
    "description": "The document's id (digits only).",
    "schema": {"type": "integer", "minimum": 0},
}
NULLABLE_TEXT = {"type": ["string", "null"]}


def _schemas() -> dict[str, Schema]:
    field = {
        "type": "object",
        "properties": {
            "value": NULLABLE_TEXT,
            "number": {**NULLABLE_TEXT, "description": "An amount: an exact decimal string."},
            "date": {**NULLABLE_TEXT, "format": "date"},
            "currency": NULLABLE_TEXT,
            "confidence": {"type": ["number", "null"]},
            "page": {"type": ["integer", "null"]},
            "corrected": {"type": "boolean"},
        },
    }
    document: Schema = {
        "type": "object",
        "description": "The document as the `docrelay_documents` and `docrelay_fields` views "
        "show it.",
        "required": ["document_id", "state", "fields", "url"],
        "properties": {
            **{key: {} for key in DOCUMENT_KEYS},
            "document_id": {"type": "integer"},
            "state": {"type": "string"},
            "metadata": {"type": ["object", "string", "null"]},
            "fields": {"type": "object", "additionalProperties": field},
            "url": {"type": "string"},
        },
    }
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string"}},
        },
        "Health": {
            "type": "object",
            "required": ["status", "ready"],
            "properties": {
                "status": {"enum": ["ok", "unhealthy"]},
                "ready": {"type": "boolean"},
                "sources": {"type": "object"},
                "paused_vendors": {},
                "storage": {"type": "object"},
                "instance": {
                    "type": "object",
                    "description": "The daemon's pid, an id new at every start, a hash naming "
                    "its store.",
                },
            },
        },
        "Ready": {
            "type": "object",
            "required": ["ready"],
            "properties": {"ready": {"type": "boolean"}},
        },
        "Status": {
            "type": "object",
            "description": "What `docrelay status` reports: documents, submissions and "
            "deliveries by state, the last errors, the circuit breakers.",
        },
        "Document": document,
        "Taken": {
            "type": "object",
            "required": ["document_id", "url"],
            "properties": {
                "document_id": {"type": "integer"},
                "state": NULLABLE_TEXT,
                "url": {"type": "string"},
                "reason": {
                    "type": "string",
                    "description": "Why it waits (`unrouted`) or was rejected.",
                },
                "duplicate": {"const": True},
                "recorded_as": {
                    "type": "integer",
                    "description": "The id the repeat is recorded under (a duplicate).",
                },
            },
        },
        "Upload": {
            "type": "object",
            "required": ["file"],
            "additionalProperties": False,
            "properties": {
                "file": {"type": "string", "format": "binary", "description": "The document."},
                "route": {"type": "string", "description": "The name of a `[[routes]]` entry."},
                "metadata": {
                    "type": "string",
                    "description": "A JSON object kept with the document (`uploaded_by` is "
                    "set by docrelay).",
                },
            },
        },
        "Correction": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "values": {
                    "type": "object",
                    "description": "Field → its right value (null or empty: not in the document).",
                    "additionalProperties": {"type": ["string", "number", "null"]},
                },
                "confirm": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "Fields whose extracted value is right.",
                },
                "note": {"type": "string", "description": "Kept in the history (500 chars)."},
            },
        },
        "Corrected": {
            "type": "object",
            "required": ["document_id", "changed"],
            "properties": {
                "document_id": {"type": "integer"},
                "changed": {"type": "array", "items": {"type": "string"}},
            },
        },
        "CorrectionRefused": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "document_id": {"type": "integer"},
                "error": {"type": "string"},
                "field": {"type": "string", "description": "The field refused (422)."},
            },
        },
    }


def _paths() -> dict[str, Schema]:
    api = [{"apiToken": []}]
    refused = _ref("CorrectionRefused")
    status_auth = [{"statusToken": []}, {}]  # open when no `web.status_tokens` are set
    return {
        "/healthz": {
            "get": {
                "summary": "Liveness: the store, the sources, the event loop.",
                "security": [],
                "responses": {
                    "200": _json("Healthy.", _ref("Health")),
                    "503": _json("Unhealthy (the body says what).", _ref("Health")),
                },
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: started and serving.",
                "security": [],
                "responses": {
                    "200": _json("Ready.", _ref("Ready")),
                    "503": _json("Not ready yet.", _ref("Ready")),
                },
            }
        },
        "/status": {
            "get": {
                "summary": "What `docrelay status` shows, as JSON.",
                "security": status_auth,
                "responses": {
                    "200": _json("The summary.", _ref("Status")),
                    "401": UNAUTHORIZED,
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (text format).",
                "security": status_auth,
                "responses": {
                    "200": {
                        "description": "The metrics.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "401": UNAUTHORIZED,
                },
            }
        },
        PATH: {
            "get": {
                "summary": "This document.",
                "security": [],
                "responses": {
                    "200": {
                        "description": "The OpenAPI document.",
                        "content": {"application/json": {}},
                    }
                },
            }
        },
        "/api/v1/documents": {
            "post": {
                "summary": "Take a document in; answered after the commit.",
                "security": api,
                "requestBody": {
                    "required": True,
                    "content": {"multipart/form-data": {"schema": _ref("Upload")}},
                },
                "responses": {
                    "201": _json(
                        "A new document (`state` `unrouted` with a `reason` when no "
                        "route takes it).",
                        _ref("Taken"),
                    ),
                    "200": _json(
                        "Bytes taken before: the original's id, `duplicate`.", _ref("Taken")
                    ),
                    "400": _error(
                        "Not a form of that shape, an unknown route, or metadata "
                        "that is not a JSON object; nothing stored."
                    ),
                    "401": UNAUTHORIZED,
                    "404": _error(API_OFF),
                    "408": _error(
                        "The upload took longer than `upload_timeout`; nothing kept.",
                        Connection="close",
                    ),
                    "413": _error("Over `max_upload_bytes`; nothing kept."),
                    "422": _json(
                        "Not a usable document: stored as rejected with the reason.", _ref("Taken")
                    ),
                    "503": _error(
                        "Not ready, the store busy or its disk full; nothing "
                        "committed, send it again.",
                        **{"Retry-After": "seconds"},
                    ),
                },
            }
        },
        "/api/v1/documents/{document_id}": {
            "get": {
                "summary": "A document's state, route and latest fields.",
                "security": api,
                "parameters": [DOCUMENT_ID],
                "responses": {
                    "200": _json("The document.", _ref("Document")),
                    "401": UNAUTHORIZED,
                    "404": _error(f"No such document, or {API_OFF}."),
                },
            }
        },
        "/api/v1/documents/{document_id}/corrections": {
            "post": {
                "summary": 'Correct or confirm fields (README "Corrections").',
                "security": api,
                "parameters": [DOCUMENT_ID],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("Correction")}},
                },
                "responses": {
                    "200": _json("Applied: what changed.", _ref("Corrected")),
                    "400": _error("The body is not JSON of that shape."),
                    "401": UNAUTHORIZED,
                    "404": _json(f"No such document, or {API_OFF}.", refused),
                    "408": TOO_SLOW,
                    "409": _json("The document has no result to correct yet.", refused),
                    "413": _error("Over `[web.api] max_body_bytes`."),
                    "422": _json(
                        "Nothing to do, or a field or value refused (with the "
                        "`field`); nothing changed.",
                        refused,
                    ),
                    "503": _json(
                        "The store is busy; nothing changed, try again.",
                        refused,
                        **{"Retry-After": "seconds"},
                    ),
                },
            }
        },
    }


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (plain JSON types, ready for ``JSONResponse``)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "docrelay",
            "version": __version__,
            "description": "The docrelay daemon's HTTP API: intake, document state and "
            "corrections (`/api/v1`, bearer tokens from `[web.api]`), plus health, readiness, "
            "status and metrics (`web.status_tokens`). See the README.",
        },
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "apiToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "One of `[web.api] tokens`.",
                },
                "statusToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "One of `web.status_tokens`; without any configured, "
                    "`/status` and `/metrics` are open.",
                },
            },
        },
    }
