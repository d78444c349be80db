"""HTTP plumbing of the Konfuzio emulator, Django REST framework style as Konfuzio's API v3 is:
request bodies (JSON or forms; multipart and size caps are the kit's ``forms``), token and basic
authentication, ``limit``/``offset`` pagination with ``count/next/previous/results``, and the
``fields``, ``ordering`` and ``created_at_after/before`` parameters every list shares.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from starlette.requests import Request

from connectors.emulation import forms
from connectors.emulation.forms import FormPart, media_type
from connectors.vendors.konfuzio.emulator_model import ApiError

if TYPE_CHECKING:
    from connectors.vendors.konfuzio.emulator_state import KonfuzioState

MAX_UPLOAD_BYTES = 100 * 1024 * 1024
"""Konfuzio says the file size is "not limited"; the emulator caps one request at 100 MB."""
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
"""``limit`` when none is given, and the most one page holds (a larger one is cut to it)."""

CHALLENGE = {"WWW-Authenticate": 'Token realm="api"'}


# --------------------------------------------------------------------------- bodies


async def read_body(request: Request, limit: int = MAX_UPLOAD_BYTES) -> bytes:
    try:
        return await forms.read_body(request, limit)
    except forms.BodyError as exc:
        raise ApiError(exc.status, exc.message) from None


def parse_multipart(request: Request, body: bytes) -> list[FormPart]:
    try:
        return forms.parse_multipart(request, body)
    except forms.BodyError as exc:
        raise ApiError(exc.status, exc.message) from None


async def body_data(request: Request) -> Any:
    """A JSON, urlencoded or multipart (text fields only) body; ``{}`` when empty. DRF's
    parsers accept all three on every endpoint; anything else is 415."""
    body = await read_body(request, limit=4 * 1024 * 1024)
    if not body.strip():
        return {}
    kind = media_type(request)
    if kind == "application/json" or kind.endswith("+json"):
        try:
            return json.loads(body)
        except ValueError as exc:
            raise ApiError(400, f"JSON parse error - {exc}") from None
    if kind == "application/x-www-form-urlencoded":
        return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    if kind == "multipart/form-data":
        return {p.name: p.text for p in parse_multipart(request, body) if p.filename is None}
    raise ApiError(415, f'Unsupported media type "{kind or "none"}" in request.')


def json_object(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ApiError(400, {"non_field_errors": ["Invalid data. Expected a dictionary."]})
    return data


# --------------------------------------------------------------------------- auth


def authenticate(request: Request, state: KonfuzioState) -> str:
    """The user (e-mail) behind the request's credentials, or 401 with DRF's wording:
    ``Authorization: Token <key>`` (the documented way) or ``Basic`` (discouraged, accepted)."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    scheme, credentials = scheme.lower(), credentials.strip()
    if scheme == "token":
        if not credentials or " " in credentials:
            raise ApiError(401, "Invalid token header. No credentials provided.", CHALLENGE)
        user = state.user_for_token(credentials)
        if user is None:
            raise ApiError(401, "Invalid token.", CHALLENGE)
        return user
    if scheme == "basic" and credentials:
        try:
            username, _, password = base64.b64decode(credentials).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            raise ApiError(401, "Invalid basic header.", CHALLENGE) from None
        if not state.check_password(username, password):
            raise ApiError(401, "Invalid username/password.", CHALLENGE)
        return username
    raise ApiError(401, "Authentication credentials were not provided.", CHALLENGE)


# --------------------------------------------------------------------------- lists


def _sort_key(value: Any) -> tuple[int, Any]:
    """None first, then numbers, then everything else as text (lists by their JSON)."""
    if value is None:
        return (0, 0)
    if isinstance(value, bool | int | float):
        return (1, value)
    if isinstance(value, list | dict):
        return (2, json.dumps(value, sort_keys=True))
    return (2, str(value))


def order(
    items: list[dict[str, Any]], ordering: str | None, default: str = "id"
) -> list[dict[str, Any]]:
    """``ordering=a,-b``: sort by shown fields; names no item has are ignored (as DRF's
    ``OrderingFilter`` ignores invalid fields)."""
    keys = [k.strip() for k in (ordering or default).split(",") if k.strip()]
    known = set().union(*(item.keys() for item in items)) if items else set()
    for key in reversed(keys):
        name = key.lstrip("-")
        if name not in known:
            continue
        items = sorted(
            items, key=lambda item: _sort_key(item.get(name)), reverse=key.startswith("-")
        )
    return items


def _parse_when(text: str, name: str) -> float:
    cleaned = text.strip().replace(" ", "T").replace("Z", "+00:00")
    try:
        parsed = datetime.fromisoformat(cleaned)
    except ValueError:
        raise ApiError(400, {name: ["Enter a valid date."]}) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def created_between(
    request: Request, created: Callable[[Any], float], items: list[Any]
) -> list[Any]:
    """``created_at_after`` / ``created_at_before``: the dates given are excluded, as the seed
    says (a bare date means its midnight, UTC)."""
    params = request.query_params
    if params.get("created_at_after"):
        after = _parse_when(params["created_at_after"], "created_at_after")
        items = [i for i in items if created(i) > after]
    if params.get("created_at_before"):
        before = _parse_when(params["created_at_before"], "created_at_before")
        items = [i for i in items if created(i) < before]
    return items


def select_fields(shown: dict[str, Any], fields: Iterable[str]) -> dict[str, Any]:
    """``fields=id,created_at``; a dotted name (``pages.id``) selects inside a nested object or
    list of objects. Unknown names are ignored."""
    top: dict[str, list[str]] = {}
    for name in fields:
        head, _, rest = name.partition(".")
        top.setdefault(head, [])
        if rest:
            top[head].append(rest)
    result: dict[str, Any] = {}
    for name, inner in top.items():
        if name not in shown:
            continue
        value = shown[name]
        if inner and isinstance(value, dict):
            value = select_fields(value, inner)
        elif inner and isinstance(value, list):
            value = [select_fields(v, inner) if isinstance(v, dict) else v for v in value]
        result[name] = value
    return result


def fields_param(request: Request) -> list[str]:
    return [f.strip() for f in request.query_params.get("fields", "").split(",") if f.strip()]


def shape(request: Request, shown: dict[str, Any]) -> dict[str, Any]:
    """One object as the client asked for it (``fields``)."""
    wanted = fields_param(request)
    return select_fields(shown, wanted) if wanted else shown


def _limit_offset(request: Request) -> tuple[int, int]:
    params = request.query_params

    def number(name: str, default: int) -> int:
        try:
            value = int(params.get(name) or default)
        except ValueError:
            return default
        return value if value >= 0 else default

    limit = number("limit", DEFAULT_LIMIT) or DEFAULT_LIMIT
    return min(limit, MAX_LIMIT), number("offset", 0)


def paginate(request: Request, items: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"count", "next", "previous", "results"}`` for ``limit``/``offset`` (DRF's
    ``LimitOffsetPagination``: absolute URLs with every other parameter kept, ``previous``
    without ``offset`` when it is the first page, null at the ends), items ordered first."""
    items = order(items, request.query_params.get("ordering"))
    limit, offset = _limit_offset(request)
    count = len(items)
    url = request.url
    next_url = None
    if offset + limit < count:
        next_url = str(url.include_query_params(limit=limit, offset=offset + limit))
    previous = None
    if offset > 0:
        if offset - limit <= 0:
            previous = str(url.include_query_params(limit=limit).remove_query_params("offset"))
        else:
            previous = str(url.include_query_params(limit=limit, offset=offset - limit))
    wanted = fields_param(request)
    page = items[offset : offset + limit]
    results = [select_fields(i, wanted) for i in page] if wanted else page
    return {"count": count, "next": next_url, "previous": previous, "results": results}
