"""HTTP plumbing for the emulator: request bodies (JSON and forms; multipart and size caps are
the kit's ``connectors.emulation.forms``), DRF-style pagination and authentication. Throttling
and fault injection are the kit's (``connectors.emulation.faults``, with ``FAULTS`` in
``emulator``).
"""

from __future__ import annotations

import base64
import json
import math
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from starlette.requests import Request

from connectors.emulation import forms
from connectors.emulation.forms import FormPart, media_type
from connectors.vendors.rossum.emulator_model import ApiError

if TYPE_CHECKING:
    from connectors.vendors.rossum.emulator_state import EmulatorState

MAX_UPLOAD_BYTES = 40 * 1024 * 1024
"""Rossum's limit for one upload request (all files together)."""


# --------------------------------------------------------------------------- bodies


async def read_body(request: Request, limit: int = MAX_UPLOAD_BYTES) -> bytes:
    """The request body, or 413 when it is larger than ``limit``."""
    try:
        return await forms.read_body(
            request, limit, too_large="Request entity too large (at most 40 MB per upload)."
        )
    except forms.BodyError as exc:
        raise ApiError(exc.status, exc.message) from None


def parse_multipart(request: Request, body: bytes) -> list[FormPart]:
    """The parts of a ``multipart/form-data`` body (the kit's parser, Rossum's errors)."""
    try:
        return forms.parse_multipart(request, body)
    except forms.BodyError as exc:
        raise ApiError(exc.status, exc.message) from None


async def json_body(request: Request, *, forms: bool = False) -> Any:
    """A JSON request body ({} when empty). Other content types get 400: the reference warns
    that Rossum may answer 500 to them; 400 is what it says it will answer in future.
    ``forms`` also accepts urlencoded and multipart forms (DRF does; the SDK logs in so)."""
    body = await read_body(request, limit=4 * 1024 * 1024)
    if not body.strip():
        return {}
    kind = media_type(request)
    if kind == "application/json" or kind.endswith("+json"):
        try:
            return json.loads(body)
        except ValueError as exc:
            raise ApiError(400, f"JSON parse error - {exc}") from None
    if forms and kind == "application/x-www-form-urlencoded":
        return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    if forms and kind == "multipart/form-data":
        return {p.name: p.data.decode("utf-8", "replace") for p in parse_multipart(request, body)}
    shown = kind or "none"
    raise ApiError(400, f'Unsupported Content-Type "{shown}": send JSON (application/json).')


# --------------------------------------------------------------------------- pagination


def page_params(request: Request, *, default: int = 20, maximum: int = 100) -> tuple[int, int]:
    """``page`` and ``page_size`` (an over-large page size is cut to the maximum, as DRF does)."""
    try:
        page = int(request.query_params.get("page") or 1)
    except ValueError:
        raise ApiError(404, "Invalid page.") from None
    try:
        size = int(request.query_params.get("page_size") or default)
    except ValueError:
        size = default
    return page, max(1, min(size, maximum))


def paginate(
    request: Request, items: list[Any], *, default: int = 20, maximum: int = 100
) -> tuple[list[Any], dict[str, Any]]:
    """One page of ``items`` and the ``pagination`` object with absolute next/previous URLs."""
    page, size = page_params(request, default=default, maximum=maximum)
    total = len(items)
    pages = max(1, math.ceil(total / size))
    if page < 1 or page > pages:
        raise ApiError(404, "Invalid page.")
    url = request.url
    pagination = {
        "total": total,
        "total_pages": pages,
        "next": str(url.include_query_params(page=page + 1)) if page < pages else None,
        "previous": str(url.include_query_params(page=page - 1)) if page > 1 else None,
    }
    return items[(page - 1) * size : page * size], pagination


# --------------------------------------------------------------------------- auth


def authenticate(request: Request, state: EmulatorState, *, basic: bool = False) -> int:
    """The user id for the request's credentials, or 401 (DRF wording)."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    scheme, credentials = scheme.lower(), credentials.strip()
    challenge = {"WWW-Authenticate": 'Bearer realm="api"'}
    if scheme in ("bearer", "token") and credentials:
        user = state.user_for(credentials)
        if user is None:
            raise ApiError(401, "Invalid token.", challenge)
        return user
    if scheme == "basic" and basic and credentials:
        try:
            username, _, password = base64.b64decode(credentials).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            raise ApiError(401, "Invalid basic header.", challenge) from None
        if not state.check_basic(username, password):
            raise ApiError(401, "Invalid username/password.", challenge)
        return 1
    raise ApiError(401, "Authentication credentials were not provided.", challenge)
