"""Configuration: one TOML file, ``DOCRELAY_…`` environment overrides, secrets from ``*_file``.

Loading happens in two passes: the core sections are validated by pydantic-settings (TOML data
merged under environment variables), then every connector entry is validated by the settings
model of the connector its ``kind`` names. All problems are collected and reported together, each
with its key path, e.g. ``vendors.rossum_main.password: field required``.

A relative path written in the file — every setting typed ``Path``, a SQLite URL
(``DatabaseUrl``), a ``<key>_file`` secret — is relative to the file's directory, so a command
run from anywhere finds the same store and folders. Defaults and environment overrides are not
written in the file: they stay relative to the current directory (systemd's
``WorkingDirectory``).
"""

from __future__ import annotations

import os
import tomllib
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from connectors import registry
from connectors.base import DOCUMENT_FIELDS, ConnectorSettings, DatabaseUrl, SourceSettings

SYSTEM_CONFIG = Path("/etc/docrelay/config.toml")
ENV_PREFIX = "DOCRELAY_"

Section = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class StoreSettings(BaseModel):
    model_config = Section

    url: Annotated[str, DatabaseUrl()] = "sqlite:///var/docrelay.db"
    """SQLAlchemy URL: ``sqlite:///path`` (default) or ``postgresql+psycopg://user@host/db``.
    A relative SQLite path given in the file is relative to the file's directory; the default
    is relative to the current directory."""
    blob_dir: Path = Path("var/blobs")
    """Where document bytes are kept, content-addressed by SHA-256 (relative: as ``url``). The
    connectors' state (``state/``) lives beside it."""
    busy_timeout: float = Field(10.0, gt=0)
    """SQLite: seconds a writer waits for the lock before the step is retried."""
    pool_size: int = Field(8, ge=1)
    """Connections kept open to the database."""


def _one_token_per_line(value: Any) -> Any:
    """A ``*tokens_file``'s content as a list: one token per line, blank and ``#`` lines
    skipped."""
    if isinstance(value, str):
        lines = (line.strip() for line in value.splitlines())
        return [line for line in lines if line and not line.startswith("#")]
    return value


def _long_tokens(value: list[SecretStr]) -> list[SecretStr]:
    if any(len(token.get_secret_value().strip()) < 16 for token in value):
        raise ValueError("each token must have at least 16 characters")
    return value


BUILTIN_SOURCES = ("cli", "api")
"""Source names the engine gives documents itself: ``docrelay submit`` and ``POST
/api/v1/documents``. Routes may match them (``match = { source = "api" }``)."""


class ApiSettings(BaseModel):
    """The authenticated HTTP API: ``POST /api/v1/documents`` (intake), ``GET
    /api/v1/documents/{id}`` and ``POST /api/v1/documents/{id}/corrections``."""

    model_config = Section

    tokens: list[SecretStr] = []
    """Bearer tokens that may call the API; none (the default) turns the API off. With
    ``tokens_file`` the file holds one token per line (blank lines and ``#`` lines skipped)."""
    max_body_bytes: int = Field(65_536, ge=256)
    """Request bodies larger than this are refused (413) before they are parsed; also the limit
    for the ``route`` and ``metadata`` fields of an upload."""
    max_upload_bytes: int = Field(50 * 1024 * 1024, ge=1024)
    """``POST /api/v1/documents``: a request body larger than this is refused (413) and nothing
    of it is kept."""
    upload_timeout: float = Field(300.0, gt=0)
    """Seconds an upload may take to arrive in full; a slower one is answered 408 and dropped
    (``web.body_timeout`` is the limit for every other body)."""

    @field_validator("tokens", mode="before")
    @classmethod
    def _one_per_line(cls, value: Any) -> Any:
        return _one_token_per_line(value)

    @field_validator("tokens")
    @classmethod
    def _not_blank(cls, value: list[SecretStr]) -> list[SecretStr]:
        return _long_tokens(value)


class WebSettings(BaseModel):
    model_config = Section

    enabled: bool = True
    """Serve health, metrics and (for vendors that call back) webhooks."""
    listen: str = "127.0.0.1:8080"
    """``host:port`` to listen on; port 0 picks a free one (written to the log)."""
    webhook_listen: str | None = None
    """A second ``host:port`` that serves only the vendor webhooks (``/webhooks/…``); ``listen``
    then serves everything else and no webhook. Put this one where vendors can reach it and
    keep ``listen`` (status, metrics, API) on an internal address."""
    public_url: str | None = None
    """The address vendors call back, when it differs from ``webhook_listen`` (or ``listen``)."""
    max_body_bytes: int = Field(1_048_576, ge=1024)
    """Webhook bodies larger than this are refused before any signature check."""
    status_tokens: list[SecretStr] = []
    """Bearer tokens that may read ``/status``, ``/metrics`` and the status page (``/``, where a
    browser gives the token as the password of the login prompt, any user name); none (the
    default) leaves them open. ``status_tokens_file``: one token per line. ``/healthz`` and
    ``/readyz`` stay open."""
    body_timeout: float = Field(30.0, gt=0)
    """Seconds a request body (webhook, API call) may take to arrive in full; a slower client
    is answered 408 and disconnected."""
    limit_concurrency: int = Field(200, ge=1)
    """Connections and requests served at once per listener; more are answered 503."""
    keep_alive_timeout: float = Field(5.0, gt=0)
    """Seconds an idle keep-alive connection is kept open between requests."""
    header_timeout: float = Field(10.0, gt=0)
    """Seconds a connection may take to send a complete request line and headers (counted from
    its opening or its last response); a slower one is closed."""
    max_header_bytes: int = Field(16_384, ge=1024)
    """The largest request line plus headers accepted (h11's incomplete-event limit); more is
    answered 400."""
    api: ApiSettings = ApiSettings()
    """``[web.api]``: the HTTP API for ERPs, scanners and people (intake, corrections)."""

    def callback_base(self) -> str | None:
        """Where vendors reach the web app: ``public_url``, else the webhook listener's address
        (``webhook_listen``, else ``listen``; a wildcard host answers on loopback: right for
        emulators, not for a real vendor); None when the web app is off or listens on a port
        chosen at start."""
        if not self.enabled:
            return None
        if self.public_url:
            return self.public_url.rstrip("/")
        host, _, port = (self.webhook_listen or self.listen).rpartition(":")
        if port == "0":
            return None
        wildcard = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]"}  # noqa: S104
        return f"http://{wildcard.get(host, host)}:{port}"

    @field_validator("listen", "webhook_listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is None:
            return value
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("expected host:port, e.g. 127.0.0.1:8080")
        return value

    @field_validator("status_tokens", mode="before")
    @classmethod
    def _one_per_line(cls, value: Any) -> Any:
        return _one_token_per_line(value)

    @field_validator("status_tokens")
    @classmethod
    def _not_blank(cls, value: list[SecretStr]) -> list[SecretStr]:
        return _long_tokens(value)


class LoggingSettings(BaseModel):
    model_config = Section

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["console", "json"] = "console"
    """``json`` writes one object per line (for journald/Loki), ``console`` is for people."""


class PipelineSettings(BaseModel):
    model_config = Section

    duplicates: Literal["skip", "process"] = "skip"
    """Same bytes arriving again: record and skip (default), or send to the vendor again."""
    max_attempts: int = Field(8, ge=1)
    """Transient failures before a submission or delivery is declared dead; also the number
    of times a submission may crash the worker process (killed, out of memory) before it is
    declared dead as a poison pill ("crashed the worker")."""
    backoff_initial: float = Field(2.0, gt=0)
    """Seconds before the first retry; doubles per attempt (with jitter) up to backoff_max."""
    backoff_max: float = Field(900.0, gt=0)
    retry_after_max: float = Field(600.0, gt=0)
    """A vendor's Retry-After is honoured up to this many seconds."""
    lease_seconds: float = Field(300.0, ge=5)
    """A claimed item is picked up again by others after this long without progress."""
    processing_timeout: float = Field(86_400.0, gt=0)
    """Give up on a vendor that has not finished processing after this many seconds."""
    poll_backoff_max: float = Field(300.0, gt=0)
    """Longest gap between two status polls of one submission."""
    review_poll_max: float = Field(1800.0, gt=0)
    """Longest gap between two status polls of a document waiting for a person's review at
    the vendor (webhooks, where the vendor sends them, wake it sooner)."""
    sweep_interval: float = Field(30.0, gt=0)
    """Seconds between the retry/lease sweeps that run as scheduler jobs."""
    heartbeat_interval: float = Field(10.0, gt=0)
    """Seconds between two heartbeats of this process in the store. After three missed ones
    the other processes on the store take it for lost and take over its work, its sources
    and its periodic jobs."""
    delivery_concurrency: int = Field(2, ge=1)
    """Worker threads per destination."""
    corrections_interval: float = Field(10.0, ge=0)
    """Seconds between two pickups of the rows inserted into ``docrelay_corrections``; 0 turns
    the table intake off."""


FallbackTrigger = Literal["rejected", "dead", "deadline", "outage", "low_confidence", "budget"]
FALLBACK_TRIGGERS: tuple[FallbackTrigger, ...] = typing.get_args(FallbackTrigger)


class RouteMatch(BaseModel):
    model_config = Section

    source: str | list[str] | None = None
    """Source name(s) this route takes documents from; ``cli`` (``docrelay submit``) and
    ``api`` (``POST /api/v1/documents`` without a ``route`` field) are built in."""
    filename: str | list[str] | None = None
    """Glob pattern(s) on the original filename, case-insensitive (``*.pdf``)."""
    mime_type: str | list[str] | None = None
    """MIME type(s), ``image/*`` style wildcards allowed."""
    sender: str | list[str] | None = None
    """Glob pattern(s) on the sender address (mailbox sources)."""


class Route(BaseModel):
    model_config = Section

    name: str | None = None
    match: RouteMatch = RouteMatch()
    """All given conditions must hold; an empty match takes everything."""
    vendor: str
    """The vendor profile (a key of ``[vendors]``) documents go to."""
    fallback: list[str] = []
    """The fallback chain: profiles tried in this order when the one before hits one of the
    ``fallback_on`` triggers (one name or a list). A profile that already read the document as
    a shadow is not asked again: its result becomes the one that counts."""
    fallback_on: list[FallbackTrigger] = list(FALLBACK_TRIGGERS)
    """What moves a document on along the chain: ``rejected`` (the vendor refused it),
    ``dead`` (it finally failed), ``deadline`` (not done ``deadline`` seconds after it was
    queued at the profile), ``outage`` (the profile's circuit open, or paused for
    re-authentication, for longer than ``outage_after``), ``low_confidence`` (a ``required``
    field missing or below its ``min_confidence``), ``budget`` (the profile's budget is spent).
    Default: all of them. The last profile of the chain keeps what it has."""
    outage_after: float = Field(300.0, gt=0)
    """Seconds a profile may be out (its circuit open, or paused for re-authentication) before
    the documents it has not seen yet move on to the next of the chain. Documents the vendor
    may already have stay with it."""
    deadline: float | None = Field(None, gt=0)
    """Seconds a profile has to finish a document after it was queued there before the
    document moves on (the vendor's late answer is then ignored); unset: no deadline.
    Documents waiting for a person's review at the vendor are not timed (``review_timeout``)."""
    required: list[str] = []
    """Canonical fields the result must have; a result without one moves on (low_confidence)."""
    min_confidence: dict[str, float] = {}
    """Canonical field → the lowest confidence accepted for it (``"*"``: every field the
    result has); a value below moves the document on (low_confidence). A value without a
    confidence passes."""
    destinations: list[str] = []
    """Destinations (keys of ``[destinations]``) that receive each extraction."""
    shadow: list[str] = []
    """Profiles that get every document as well, to compare with ``vendor`` (the view
    ``docrelay_field_agreement``): their results are stored but never exported, never shown
    in the public views and never tell the source of a rejection."""
    shadow_feedback: bool = False
    """Send the corrections made to the primary's result to the ``shadow`` profiles too."""

    @field_validator("fallback", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("required")
    @classmethod
    def _known_fields(cls, value: list[str]) -> list[str]:
        for name in value:
            if name not in DOCUMENT_FIELDS:
                raise ValueError(
                    f"{name!r} is not a canonical field ({', '.join(DOCUMENT_FIELDS)})"
                )
        return value

    @field_validator("min_confidence")
    @classmethod
    def _thresholds(cls, value: dict[str, float]) -> dict[str, float]:
        for name, threshold in value.items():
            if name != "*" and name not in DOCUMENT_FIELDS:
                raise ValueError(f'{name!r} is neither a canonical field nor "*"')
            if not 0 <= threshold <= 1:
                raise ValueError(f"{name}: {threshold} is not a confidence between 0 and 1")
        return value


class CoreSettings(BaseSettings):
    """The sections the engine owns; connector sections stay raw until the second pass."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
    )

    store: StoreSettings = StoreSettings()
    web: WebSettings = WebSettings()
    logging: LoggingSettings = LoggingSettings()
    pipeline: PipelineSettings = PipelineSettings()
    sources: dict[str, list[dict[str, Any]]] = {}
    vendors: dict[str, dict[str, Any]] = {}
    destinations: dict[str, dict[str, Any]] = {}
    routes: list[Route] = []

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings, init_settings)  # environment overrides the file


@dataclass(frozen=True)
class Problem:
    key: str
    message: str


class ConfigError(Exception):
    """Every problem found in one configuration file."""

    def __init__(self, path: Path, problems: list[Problem]) -> None:
        self.path = path
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        return "\n".join(
            f"{self.path}: {p.key}: {p.message}" if p.key else f"{self.path}: {p.message}"
            for p in self.problems
        )


@dataclass(frozen=True)
class Config:
    """A validated configuration, ready for the engine."""

    path: Path
    core: CoreSettings
    sources: list[SourceSettings]
    vendors: dict[str, ConnectorSettings]
    destinations: dict[str, ConnectorSettings]
    secrets: list[str] = field(default_factory=list)
    """Every secret value, so the log filter can redact them."""

    @property
    def routes(self) -> list[Route]:
        return self.core.routes


def default_path() -> Path:
    if env := os.environ.get(f"{ENV_PREFIX}CONFIG"):
        return Path(env)
    return SYSTEM_CONFIG if SYSTEM_CONFIG.is_file() else Path("config.toml")


def load(path: Path) -> Config:
    """Read, merge and validate; raises ConfigError listing every problem."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(path, [Problem("", "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, [Problem("", f"cannot read: {exc}")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, [Problem("", f"invalid TOML: {exc}")]) from None
    return validate(raw, path)


def validate(raw: Mapping[str, Any], path: Path) -> Config:
    """Validate the file's data; relative paths in it are relative to ``path``'s directory."""
    problems: list[Problem] = []
    secrets: list[str] = []
    base = Path(os.path.abspath(path)).parent  # normalised: no "conf/../var" in messages
    data = _resolve_secret_files(dict(raw), CoreSettings, (), problems, secrets, base)
    data = _relative_to(data, CoreSettings, base)
    core: CoreSettings | None
    try:
        core = CoreSettings(**data)
        sections: Mapping[str, Any] = core.model_dump(
            include={"sources", "vendors", "destinations"}
        )
    except ValidationError as exc:
        problems.extend(_problems(exc, ()))
        core = None  # still check the connector sections, so one run reports every problem
        sections = data

    def table(name: str) -> dict[str, Any]:
        value = sections.get(name, {})
        return value if isinstance(value, dict) else {}

    sources: list[SourceSettings] = []
    for kind, entries in table("sources").items():
        for index, entry in enumerate(entries if isinstance(entries, list) else []):
            loc = ("sources", kind, str(index))
            model = _connector("source", kind, loc[:2], problems)
            if model is not None and isinstance(entry, dict):
                built = _build(model, {**entry, "kind": kind}, loc, problems, secrets, base)
                if isinstance(built, SourceSettings):
                    sources.append(built)
                elif built is not None:
                    problems.append(
                        Problem(
                            _key(loc[:2]), "this source's settings do not extend SourceSettings"
                        )
                    )
    vendors = _connectors("vendor", "vendors", table("vendors"), problems, secrets, base)
    destinations = _connectors(
        "destination", "destinations", table("destinations"), problems, secrets, base
    )
    if core is None:
        raise ConfigError(path, problems)
    _check_references(core, sources, vendors, destinations, problems)
    _collect_secrets(core, secrets)
    if problems:
        raise ConfigError(path, problems)
    return Config(path, core, sources, vendors, destinations, sorted(set(secrets), key=len))


def _connectors(
    role: registry.Role,
    section: str,
    entries: Mapping[str, Mapping[str, Any]],
    problems: list[Problem],
    secrets: list[str],
    base: Path,
) -> dict[str, ConnectorSettings]:
    built: dict[str, ConnectorSettings] = {}
    for name, entry in entries.items():
        loc = (section, name)
        kind = entry.get("kind") if isinstance(entry, dict) else None
        if not isinstance(kind, str):
            problems.append(Problem(_key((*loc, "kind")), "field required (the connector kind)"))
            continue
        model = _connector(role, kind, (*loc, "kind"), problems)
        if model is not None and (settings := _build(model, entry, loc, problems, secrets, base)):
            built[name] = settings
    return built


def _connector(
    role: registry.Role, kind: str, loc: tuple[str, ...], problems: list[Problem]
) -> type[ConnectorSettings] | None:
    try:
        return registry.load(role, kind).settings_model
    except registry.UnknownConnector as exc:
        problems.append(Problem(_key(loc), str(exc)))
        return None


def _build(
    model: type[ConnectorSettings],
    entry: Mapping[str, Any],
    loc: tuple[str, ...],
    problems: list[Problem],
    secrets: list[str],
    base: Path,
) -> ConnectorSettings | None:
    data = _resolve_secret_files(dict(entry), model, loc, problems, secrets, base)
    data = _relative_to(data, model, base)
    try:
        settings = model.model_validate(data)
    except ValidationError as exc:
        problems.extend(_problems(exc, loc))
        return None
    _collect_secrets(settings, secrets)
    return settings


def _resolve_secret_files(
    data: dict[str, Any],
    model: type[BaseModel],
    loc: tuple[str, ...],
    problems: list[Problem],
    secrets: list[str],
    base: Path,
) -> dict[str, Any]:
    """Replace ``<key>_file = "path"`` by the file's content under ``<key>``.

    A relative path is looked up in ``$CREDENTIALS_DIRECTORY`` first, so systemd's
    ``LoadCredential=`` works without absolute paths, then in ``base`` (the configuration
    file's directory).
    """
    for key, value in list(data.items()):
        info = model.model_fields.get(key)
        nested = _model_type(info.annotation) if info is not None else None
        if isinstance(value, dict) and nested is not None:
            data[key] = _resolve_secret_files(
                dict(value), nested, (*loc, key), problems, secrets, base
            )
    for key in [k for k in data if k.endswith("_file")]:
        target = key.removesuffix("_file")
        if target not in model.model_fields or key in model.model_fields:
            continue
        file_path = Path(str(data.pop(key)))
        creds = os.environ.get("CREDENTIALS_DIRECTORY")
        if not file_path.is_absolute() and creds and (Path(creds) / file_path).is_file():
            file_path = Path(creds) / file_path
        elif not file_path.is_absolute():
            file_path = base / file_path
        try:
            value = file_path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            problems.append(Problem(_key((*loc, key)), f"cannot read {file_path}: {exc.strerror}"))
            continue
        if target in data:
            problems.append(Problem(_key((*loc, key)), f"give either {target} or {key}, not both"))
            continue
        data[target] = value
        secrets.append(value)
    return data


def _relative_to(data: dict[str, Any], model: type[BaseModel], base: Path) -> dict[str, Any]:
    """Make the relative paths in ``data`` (as written in the file) relative to ``base``.

    Fields typed ``Path`` (also optional, or a list of them) and ``DatabaseUrl`` fields naming
    a SQLite file, in nested settings and lists of settings too. ``""`` and ``"."`` stay as
    they are, for the fields' own checks to refuse.
    """
    for key, value in data.items():
        info = model.model_fields.get(key)
        if info is None or typing.get_origin(info.annotation) is dict:
            continue
        if (nested := _model_type(info.annotation)) is not None:
            if isinstance(value, dict):
                data[key] = _relative_to(dict(value), nested, base)
            elif isinstance(value, list):
                data[key] = [
                    _relative_to(dict(v), nested, base) if isinstance(v, dict) else v for v in value
                ]
        elif any(isinstance(m, DatabaseUrl) for m in info.metadata):
            if isinstance(value, str):
                data[key] = _sqlite_relative_to(value, base)
        elif _holds_path(info.annotation):
            if isinstance(value, str):
                data[key] = _path_relative_to(value, base)
            elif isinstance(value, list):
                data[key] = [_path_relative_to(v, base) if isinstance(v, str) else v for v in value]
    return data


def _holds_path(annotation: Any) -> bool:
    if annotation is Path:
        return True
    return any(_holds_path(arg) for arg in typing.get_args(annotation))


def _path_relative_to(value: str, base: Path) -> str:
    path = Path(value)
    if path.is_absolute() or path == Path():
        return value
    return str(base / path)


def _sqlite_relative_to(url: str, base: Path) -> str:
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return url  # the field's own validation (or the engine) says what is wrong
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return url
    if database.startswith("file:") or Path(database).is_absolute():
        return url
    return parsed.set(database=str(base / database)).render_as_string(hide_password=False)


def _model_type(annotation: Any) -> type[BaseModel] | None:
    """The settings model a field holds (also when optional: ``OAuth2Settings | None``)."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _collect_secrets(model: BaseModel, secrets: list[str]) -> None:
    if isinstance(model, ConnectorSettings):
        secrets.extend(v for v in model.plain_secrets() if v)
    for value in model.__dict__.values():
        for item in value if isinstance(value, list | tuple) else [value]:
            if isinstance(item, SecretStr) and item.get_secret_value():
                secrets.append(item.get_secret_value())
            elif isinstance(item, BaseModel):
                _collect_secrets(item, secrets)


def _check_references(
    core: CoreSettings,
    sources: Iterable[SourceSettings],
    vendors: Mapping[str, ConnectorSettings],
    destinations: Mapping[str, ConnectorSettings],
    problems: list[Problem],
) -> None:
    names = [s.name for s in sources]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        problems.append(Problem("sources", f"source name {dup!r} is used more than once"))
    for index, route in enumerate(core.routes):
        loc = ("routes", str(index))
        for key, profile in [("vendor", route.vendor), *(("fallback", p) for p in route.fallback)]:
            if profile not in vendors and profile not in core.vendors:
                problems.append(Problem(_key((*loc, key)), f"no vendor profile named {profile!r}"))
        chain = [route.vendor, *route.fallback]
        for again in sorted({p for p in chain if chain.count(p) > 1}):
            problems.append(
                Problem(_key((*loc, "fallback")), f"profile {again!r} is in the chain twice")
            )
        for position, profile in enumerate(route.shadow):
            key = _key((*loc, "shadow"))
            if profile not in vendors and profile not in core.vendors:
                problems.append(Problem(key, f"no vendor profile named {profile!r}"))
            elif profile == route.vendor:
                problems.append(Problem(key, f"{profile!r} is the route's own vendor"))
            elif profile in route.shadow[:position]:
                problems.append(Problem(key, f"{profile!r} is named more than once"))
        for dest in route.destinations:
            if dest not in destinations and dest not in core.destinations:
                problems.append(
                    Problem(_key((*loc, "destinations")), f"no destination named {dest!r}")
                )
        wanted = route.match.source
        for source in [wanted] if isinstance(wanted, str) else wanted or []:
            if source not in names and source not in BUILTIN_SOURCES:
                problems.append(Problem(_key((*loc, "match", "source")), f"no source {source!r}"))
    route_names = {route.name or f"routes[{i}]" for i, route in enumerate(core.routes)}
    seen: dict[str, int] = {}
    for source in sources:  # a source's own rules may name the route their documents take
        index = seen[source.kind] = seen.get(source.kind, -1) + 1
        for where, chosen in source.routes_named():
            if chosen not in route_names:
                loc = ("sources", source.kind, str(index), *where)
                problems.append(Problem(_key(loc), f"no route named {chosen!r}"))


def _problems(exc: ValidationError, prefix: tuple[str, ...]) -> list[Problem]:
    found = []
    for error in exc.errors(include_url=False):
        loc = (*prefix, *(str(part) for part in error["loc"]))
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        elif error["type"] == "missing":
            message = "field required"
        elif error["type"] == "value_error":  # our validators' own words, without pydantic's
            message = message.removeprefix("Value error, ")
        found.append(Problem(_key(loc), message[:1].lower() + message[1:]))
    return found


def _key(loc: Iterable[str]) -> str:
    parts: list[str] = []
    for part in loc:
        if part.isdigit() and parts:
            parts[-1] += f"[{part}]"
        else:
            parts.append(part)
    return ".".join(parts)
