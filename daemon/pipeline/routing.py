"""Routing: which vendor profile a document goes to, decided once at intake."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Any

from daemon.config import Route


def _patterns(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _any_glob(patterns: list[str], value: str | None) -> bool:
    if value is None:
        return False
    value = value.lower()
    return any(fnmatchcase(value, pattern.lower()) for pattern in patterns)


class Router:
    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = list(routes)

    def route(
        self, *, source: str, filename: str, mime_type: str, metadata: Mapping[str, Any]
    ) -> tuple[int, Route] | None:
        """The first route whose conditions all hold, with its index; None when none does."""
        for index, route in enumerate(self.routes):
            match = route.match
            if (sources := _patterns(match.source)) and source not in sources:
                continue
            if (names := _patterns(match.filename)) and not _any_glob(names, filename):
                continue
            if (types := _patterns(match.mime_type)) and not _any_glob(types, mime_type):
                continue
            sender = metadata.get("sender")
            if (senders := _patterns(match.sender)) and not _any_glob(senders, sender):
                continue
            return index, route
        return None

    def named(self, name: str) -> tuple[int, Route] | None:
        """The route a source's rule chose by name."""
        for index, route in enumerate(self.routes):
            if route_name(index, route) == name:
                return index, route
        return None


def route_name(index: int, route: Route) -> str:
    return route.name or f"routes[{index}]"
