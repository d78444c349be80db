"""HTTP to one Gini account: the HTTP kit (``connectors.http``) configured for Gini.

What is Gini's here: every request carries ``Accept: application/vnd.gini.v1+json`` (feedback
bodies are sent as that type too); tokens come from the user centre (``<auth_url>/oauth/token``,
a separate host) through the kit's ``OAuth2`` strategy — password grant with the client's
id/secret as HTTP Basic, or client credentials — renewed ``refresh_margin`` seconds before
``expires_in`` runs out and once on a 401; a refresh token Gini hands out is used for later
tokens and a refused refresh falls back to the password. The trusted-backend mode sends Basic
client credentials and ``X-User-Identifier`` on every call instead (the kit's ``BasicAuth``).
The scheme is written ``Bearer`` (the seed's curls write ``BEARER``; schemes are
case-insensitive, RFC 7235). Retries, deadlines, guards and scrubbing are the kit's.

Document URIs are absolute (``Location``, ``_links``) and followed as given; the kit refuses
one outside ``base_url``'s origin, so credentials never go elsewhere.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping
from typing import IO, Any

import httpx

from connectors.auth import BasicAuth, OAuth2
from connectors.errors import TransientError
from connectors.http import HttpClient, connections_for
from connectors.retry import Backoff
from connectors.vendors.gini.settings import GiniSettings

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/vnd.gini.v1+json"
"""What Gini's API speaks (seed 004:29, 59, 113, 201)."""
BACKOFF_BASE = 0.5
BACKOFF_MAX = 30.0


class GiniClient(HttpClient):
    """HTTP to one Gini account: auth, retries, rate limit, the document list. Thread-safe."""

    def __init__(
        self,
        settings: GiniSettings,
        *,
        transport: httpx.BaseTransport | None = None,
        auth_transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self.session: OAuth2 | None = None
        secret = settings.client_secret
        if settings.auth == "trusted":
            assert settings.user_identifier is not None  # the settings validator says so
            auth: OAuth2 | BasicAuth = BasicAuth(
                settings.client_id,
                secret,
                extra={"X-User-Identifier": settings.user_identifier},
            )
        else:
            auth = self.session = OAuth2(
                settings.token_url,
                grant=settings.auth,
                client_id=settings.client_id,
                client_secret=secret,
                username=settings.username,
                password=settings.password,
                client_auth="basic",
                grant_in_query=True,
                refresh_margin=settings.refresh_margin,
                name="Gini's user centre",
                timeout=settings.timeout,
                max_retries=min(settings.max_retries, 2),
                transport=auth_transport if auth_transport is not None else transport,
                clock=clock,
                sleep=sleep,
                jitter=jitter,
            )
        super().__init__(
            settings.base_url,
            name="Gini",
            auth=auth,
            account=f"{settings.client_id}/{settings.username or settings.user_identifier or ''}",
            rate_limit=settings.rate_limit,
            timeout=settings.timeout,
            max_retries=settings.max_retries,
            backoff=Backoff(
                initial=BACKOFF_BASE,
                maximum=min(BACKOFF_MAX, settings.retry_after_max),
                retry_after_max=settings.retry_after_max,
            ),
            secrets=[settings.client_secret, settings.password],
            headers={"Accept": MEDIA_TYPE},
            max_connections=connections_for(settings.concurrency),
            transport=transport,
            clock=clock,
            sleep=sleep,
            jitter=jitter,
        )

    @property
    def tokens(self) -> int:
        """How many access tokens this client obtained (for health and tests)."""
        return self.session.obtained if self.session is not None else 0

    # ------------------------------------------------------------------ upload

    def upload(
        self,
        stream: IO[bytes],
        *,
        filename: str,
        mime_type: str,
        size: int,
        headers: Mapping[str, str],
        timeout: float,
    ) -> str:
        """``POST documents`` (raw body with ``?filename=``, or multipart as configured), the
        file streamed; returns the new document's URI from ``Location``. Never resent once it
        may have arrived."""
        if self.settings.upload == "multipart":
            response = self.request(
                "POST",
                "documents",
                files={"file": (filename, stream, mime_type)},
                headers=headers,
                replayable=False,
                timeout=timeout,
            )
        else:
            response = self.request(
                "POST",
                "documents",
                params={"filename": filename},
                content=_Rewinding(stream),
                headers={"Content-Type": mime_type, "Content-Length": str(size), **headers},
                replayable=False,
                timeout=timeout,
            )
        location = response.headers.get("Location")
        if not location:
            raise TransientError(
                f"Gini accepted the upload ({response.status_code}) but named no Location; "
                "the retry looks it up before uploading again"
            )
        return self.url(location)  # relative → absolute; a foreign host is refused here

    # ------------------------------------------------------------------ reads

    def document(self, url: str) -> dict[str, Any] | None:
        """The document information (``GET`` its URI), or None when Gini has none (404)."""
        response = self.request("GET", url, allow=(404,))
        if response.status_code == 404:
            return None
        return self.json_object(response, "GET", url)

    def extractions(self, url: str) -> dict[str, Any]:
        """``GET …/extractions``: ``{"extractions": {…}, "candidates": {…}}``."""
        return self.get_object(url)

    def layout(self, url: str) -> dict[str, Any]:
        """``GET …/layout``: ``{"pages": [{number, sizeX, sizeY, textZones, regions}, …]}``."""
        return self.get_object(url)

    def processed(self, url: str) -> tuple[bytes, str]:
        """``GET …/processed``: the file Gini read (deskewed, colour corrected; a native PDF as
        uploaded) and its content type."""
        response = self.request("GET", url, headers={"Accept": "*/*"})
        kind = response.headers.get("Content-Type", "application/octet-stream")
        return response.content, kind

    def list_documents(self, *, limit: int = 20, offset: int = 0) -> dict[str, Any]:
        """One page of ``GET documents?limit=&offset=``: ``{"totalCount", "documents"}``."""
        return self.get_object("documents", {"limit": limit, "offset": offset})

    def iter_documents(self, *, page_size: int, max_pages: int) -> Iterator[dict[str, Any]]:
        """The account's documents, page after page (offset by what each page held), at most
        ``max_pages`` pages."""
        offset = 0
        for _ in range(max_pages):
            page = self.list_documents(limit=page_size, offset=offset)
            documents = page.get("documents")
            if not isinstance(documents, list):
                raise TransientError("Gini's document list has no documents array")
            for item in documents:
                if isinstance(item, dict):
                    yield item
            offset += len(documents)
            total = page.get("totalCount")
            if not documents or (isinstance(total, int) and offset >= total):
                return
        log.warning("Gini's document list goes on beyond %d pages; the look-up stops", max_pages)

    # ------------------------------------------------------------------ feedback

    def put_feedback(self, url: str, feedback: Mapping[str, Any]) -> httpx.Response:
        """``PUT …/extractions`` with ``{"feedback": {label: {"value": …}}}``; 404 and 422
        are answered, not raised (the caller words the refusal)."""
        from connectors import jsonio

        return self.request(
            "PUT",
            url,
            content=jsonio.dumps_bytes({"feedback": dict(feedback)}),
            headers={"Content-Type": MEDIA_TYPE},
            allow=(400, 404, 409, 422),
        )

    def delete_extraction(self, url: str) -> httpx.Response:
        """``DELETE …/extractions/{label}``; 404 (already gone) is answered, not raised."""
        return self.request("DELETE", url, allow=(400, 404, 409, 422))


class _Rewinding:
    """The file in 64 kB chunks, from its start on every iteration: httpx streams it instead
    of reading it whole, and a resend (after a 429, or a 401 and a new token) sends it all
    again rather than what a first attempt left of a generator."""

    def __init__(self, stream: IO[bytes], size: int = 64 * 1024) -> None:
        self.stream = stream
        self.size = size

    def __iter__(self) -> Iterator[bytes]:
        self.stream.seek(0)
        while True:
            chunk = self.stream.read(self.size)
            if not chunk:
                return
            yield chunk
