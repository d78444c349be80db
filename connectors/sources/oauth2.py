"""The mailbox's OAuth2 glue: the providers' token endpoints and IMAP scopes, and the OAuth2
strategy (``connectors.auth.OAuth2``) configured from a mailbox's ``[oauth2]`` settings.

Refreshing before expiry, persisting rotated refresh tokens (Microsoft rotates them) and
telling a refusal (``invalid_grant`` → ``AuthFailed``, the source goes to "needs re-auth") from
network trouble (``TransientError``) are the auth module's, shared with every HTTP vendor.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from connectors.auth import OAuth2

if TYPE_CHECKING:
    from connectors.sources.mailbox import OAuth2Settings

PROVIDERS: dict[str, tuple[str, str]] = {
    "microsoft": (
        "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token",
        "https://outlook.office.com/IMAP.AccessAsUser.All offline_access",
    ),
    "google": ("https://oauth2.googleapis.com/token", "https://mail.google.com/"),
}
"""Token endpoint and IMAP scope per provider."""


def token_source(settings: OAuth2Settings, state_file: Path, *, timeout: float) -> OAuth2:
    """Access tokens for one mailbox: the refresh-token grant, the client id (and secret) in the
    form as the IMAP providers' public clients send them, rotations kept in ``state_file``."""
    url, scope = settings.endpoint()
    return OAuth2(
        url,
        grant="refresh_token",
        client_id=settings.client_id,
        client_secret=settings.client_secret,
        refresh_token=settings.refresh_token,
        scope=scope,
        client_auth="body",
        state_file=state_file,
        refresh_margin=settings.refresh_margin,
        name="the token endpoint",
        timeout=timeout,
    )


def xoauth2(username: str, token: str) -> str:
    """The SASL XOAUTH2 initial response (before base64), as Google and Microsoft define it."""
    return f"user={username}\x01auth=Bearer {token}\x01\x01"
