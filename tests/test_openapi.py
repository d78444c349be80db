"""The OpenAPI document (``daemon.openapi``) is held to the app it describes: each path and
method in it is a route of ``create_app``, each route of the API is in it, and it is a valid
OpenAPI document (its meta-schema). The daemon serving it is fuzzed in ``test_web_fuzz``."""

from __future__ import annotations

import re

import pytest
import schemathesis
from starlette.routing import Route

from daemon import config as config_mod
from daemon import openapi, web
from daemon.runtime import Daemon

UNDESCRIBED = {
    ("/", "GET"),  # the status page (HTML for people)
    ("/accuracy", "GET"),
    ("/documents/{document_id}", "GET"),
    ("/documents/{document_id}/page.png", "GET"),
    ("/webhooks/{profile}", "POST"),  # each vendor's own format
    ("/webhooks/{profile}/{tail}", "POST"),
}


@pytest.fixture
def routes(tmp_path) -> set[tuple[str, str]]:
    """(path, method) of every route the app serves, path parameters without converters."""
    raw = {"store": {"url": f"sqlite:///{tmp_path}/d.db", "blob_dir": str(tmp_path / "b")},
           "web": {"api": {"tokens": ["api-token-0123456789abcdef"]}}}  # fmt: skip
    app = web.create_app(Daemon(config_mod.validate(raw, tmp_path / "c.toml")))
    found = set()
    for route in app.routes:
        assert isinstance(route, Route)
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)
        found |= {(path, method) for method in route.methods or () if method != "HEAD"}
    return found


def test_every_operation_is_a_route_and_every_route_is_described(routes):
    described = {
        (path, method.upper())
        for path, operations in openapi.document()["paths"].items()
        for method in operations
    }
    assert described - routes == set()  # nothing is described that the app does not serve
    assert routes - described == UNDESCRIBED  # a new route is described, or listed here


def test_the_document_is_valid_openapi_and_says_how_each_operation_is_authenticated():
    document = openapi.document()
    schemathesis.openapi.from_dict(document).validate()
    schemes = document["components"]["securitySchemes"]
    for path, operations in document["paths"].items():
        for operation in operations.values():
            assert "security" in operation, path
            for requirement in operation["security"]:
                assert set(requirement) <= set(schemes), path
            api = path.startswith("/api/v1/documents")
            assert ({"apiToken": []} in operation["security"]) == api, path
            assert "401" in operation["responses"] or not operation["security"], path
