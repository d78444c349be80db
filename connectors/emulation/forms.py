"""Request bodies for emulators: size-capped reads, ``multipart/form-data`` and
``Content-Disposition`` file names, without python-multipart (not a dependency).

Problems raise ``BodyError`` (status + message); each emulator turns it into its vendor's error
body.
"""

from __future__ import annotations

from dataclasses import dataclass
from email import policy
from email.parser import BytesHeaderParser

from starlette.requests import Request


class BodyError(Exception):
    """A request body an API would refuse: ``status`` (400, 413) and what to say."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def read_body(request: Request, limit: int, *, too_large: str | None = None) -> bytes:
    """The request body, or ``BodyError(413)`` as soon as it is larger than ``limit``."""
    message = too_large or f"Request entity too large (at most {limit} bytes)."
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyError(413, message)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyError(413, message)
        chunks.append(chunk)
    return b"".join(chunks)


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


@dataclass
class FormPart:
    name: str
    filename: str | None
    content_type: str | None
    data: bytes

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


def parse_multipart(request: Request, body: bytes) -> list[FormPart]:
    """The parts of a ``multipart/form-data`` body."""
    header = request.headers.get("content-type", "")
    boundary = next(
        (
            p.split("=", 1)[1].strip().strip('"')
            for p in header.split(";")[1:]
            if p.strip().lower().startswith("boundary=")
        ),
        None,
    )
    if not boundary:
        raise BodyError(400, "Multipart body without a boundary.")
    delimiter = b"--" + boundary.encode("latin-1")
    parts = []
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk.removeprefix(b"\r\n")
        head, separator, data = chunk.partition(b"\r\n\r\n")
        if not separator:
            raise BodyError(400, "Malformed multipart body.")
        headers = BytesHeaderParser(policy=policy.HTTP).parsebytes(head + b"\r\n\r\n")
        name = headers.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        parts.append(
            FormPart(
                name=name,
                filename=headers.get_filename() or None,
                content_type=headers.get("content-type"),
                data=data.removesuffix(b"\r\n"),
            )
        )
    return parts


def disposition_filename(value: str) -> str | None:
    """The file name in a ``Content-Disposition`` header (``filename*=utf-8''…`` too)."""
    if not value:
        return None
    headers = BytesHeaderParser(policy=policy.HTTP).parsebytes(
        b"Content-Disposition: " + value.encode("utf-8") + b"\r\n\r\n"
    )
    return headers.get_filename() or None
