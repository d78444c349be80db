"""The emulators' "AI engine": what a document-AI vendor would find in a document, read from its
text layer with the shared rules (``connectors.extract``), and where each value is printed.

It belongs to no vendor. ``extract(data, mime_type)`` returns canonical fields and line items,
each value with the text as printed, its normalised form (ISO date, plain decimal, compact id),
its page and its box in **PDF points, origin top-left** (``connectors.base.BBox``), plus every
page's size in points and text. Each emulator renders that in its vendor's format and units
(Rossum: pixels at 144 dpi; Gini: points with width/height; DeepOpinion: fractions of the
page). A test that generates an invoice (``tests/invoices.py``) therefore knows what every
emulator must return.

``extract(..., read_pages=N)`` reads only a PDF's first N pages, as vendors that process part of
a long document do (Gini: the first 10). ``pdf_facts`` says how many pages a PDF has and whether
it is protected; ``pdf_words`` gives every word on a PDF's pages with its box and font, for
vendors that return a document's layout.

``extract(..., wrongness=options)`` makes fields wrong or missed on purpose as the emulator's
options say (``wrongness``: per document and field, fixed by the file's SHA-256), so every
emulator that reads through here supports the error and miss rates.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from connectors import pdfium as pdfium_lock
from connectors.base import BBox, FieldValue, LineItem
from connectors.emulation.wrongness import WrongnessSettings
from connectors.emulation.wrongness import apply as apply_wrongness
from connectors.errors import TerminalError
from connectors.extract import canonical, rules
from connectors.extract import text as text_layer

DEFAULT_MAX_PAGES = 200
"""Documents with more pages fail (vendors cap pages too; Rossum reads the first 32)."""

LINE_CELLS = ("description", "item_code", "quantity", "unit_price", "total_amount", "tax_rate")
"""The line-item columns the rules read, by their ``connectors.base.LINE_ITEM_FIELDS`` names."""


@dataclass(frozen=True, slots=True)
class PageInfo:
    """One page: its number (from 1), size in PDF points (None for images and text files),
    and its text as read."""

    number: int
    width: float | None
    height: float | None
    text: str


@dataclass(slots=True)
class FoundValue:
    """One value found, as a vendor would report it."""

    name: str
    """Canonical field name (``DOCUMENT_FIELDS``), or a ``LINE_CELLS`` name in a line item."""
    text: str
    """As printed. For a tax amount read from several printed per-rate lines, which is printed
    nowhere as such, the amount in plain notation."""
    value: str | None
    """Normalised: ISO 8601 date, plain decimal (``"1234.50"``), validated compact id, upper-case
    currency code, else the text; None when the text does not parse."""
    page: int | None
    box: BBox | None = None
    """Where ``text`` is printed on ``page``, in points from the top-left; None if not found."""
    label: str | None = None
    """The label printed next to it; None for cells and inferred values."""
    inferred: str | None = None
    """How a value without a label was found (``letterhead``, ``date``, ``checksum``, the
    amount its currency came from …); None when a label stood next to it."""
    canonical: FieldValue | None = None
    """The canonical value behind it (number, date, currency) for document fields."""
    confidence: float | None = None
    """The engine's confidence, set only when wrongness is on (``wrongness.confidence``: lower
    for wrong values); None lets the vendor's emulator give its own."""


@dataclass(slots=True)
class FoundItem:
    """One invoice line: the cells found (by ``LINE_CELLS`` name) and the canonical line."""

    line_no: int
    page: int | None
    cells: dict[str, FoundValue]
    canonical: LineItem


@dataclass(slots=True)
class Extraction:
    """What the engine read, or why it could not read the document."""

    error: str | None = None
    """Why nothing could be read (unsupported type, encrypted, truncated, no text …)."""
    method: str | None = None
    """``text-layer``, ``ocr`` or ``plain``."""
    pages: list[PageInfo] = field(default_factory=list)
    fields: dict[str, FoundValue] = field(default_factory=dict)
    """By canonical name, in ``DOCUMENT_FIELDS`` order."""
    line_items: list[FoundItem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None

    def get(self, name: str) -> FoundValue | None:
        return self.fields.get(name)


def plain_number(value: Decimal | None) -> str | None:
    """``Decimal("1E+3")`` → ``"1000"``: no exponent, as APIs print numbers."""
    return None if value is None else format(value, "f")


def extract(
    data: bytes,
    mime_type: str,
    *,
    ocr: bool = False,
    max_pages: int = DEFAULT_MAX_PAGES,
    ocr_timeout: float = 60.0,
    read_pages: int | None = None,
    wrongness: WrongnessSettings | None = None,
) -> Extraction:
    """Read a document (PDF, PNG, JPEG, TIFF or plain text). OCR (tesseract) only when ``ocr``
    is set: without it scans and images fail with a reason, as they do at a vendor that
    rejects them. ``read_pages`` (PDFs only): read the first pages only, ignore the rest.
    ``wrongness`` (the emulator's options): fields wrong or missed on purpose, drawn by the
    SHA-256 of ``data`` as given (``wrongness.verdict``)."""
    document_hash = hashlib.sha256(data).hexdigest()
    kind = text_layer.base_mime_type(mime_type)
    if kind not in text_layer.SUPPORTED_TYPES:
        return Extraction(error=f"unsupported file type {mime_type or 'unknown'}")
    if kind == "application/pdf" and read_pages is not None:
        data = first_pages(data, read_pages)
    suffix = {"application/pdf": ".pdf", "text/plain": ".txt"}.get(kind, ".img")
    with tempfile.TemporaryDirectory(prefix="docrelay-emulator-") as tmp:
        path = Path(tmp) / f"document{suffix}"
        path.write_bytes(data)
        try:
            read = text_layer.extract_text(
                path,
                kind,
                ocr="auto" if ocr else "off",
                max_pages=max_pages,
                ocr_timeout=ocr_timeout,
            )
        except TerminalError as exc:
            return Extraction(
                error=str(exc).replace("switched off for this profile", "off in the emulator")
            )
        raw = rules.find_fields(read.pages, method=read.method)
        result = _found(raw)
        result.method = read.method
        if kind == "application/pdf":
            sizes = _locate(path, result)
        else:
            sizes = [(None, None)] * len(read.pages)
    result.pages = [
        PageInfo(number, width, height, page_text)
        for number, ((width, height), page_text) in enumerate(
            zip(sizes, read.pages, strict=False), start=1
        )
    ]
    if wrongness is not None:
        apply_wrongness(result, wrongness, document_hash)
    return result


def _found(raw: dict[str, Any]) -> Extraction:
    """The rules' raw result as found values (boxes come later, from the PDF)."""
    result = Extraction()
    entries = {e["name"]: e for e in raw.get("fields") or []}
    tax_lines = sum(1 for e in raw.get("fields") or [] if e["name"] == "tax_amount")
    mapped = canonical.to_canonical(raw)
    for value in mapped.fields:
        if value.value_text is None:
            continue
        normalized: str | None = value.value_text
        if value.value_number is not None:
            normalized = plain_number(value.value_number)
        elif value.value_date is not None:
            normalized = value.value_date.isoformat()
        printed = value.raw_text or value.value_text
        if value.name == "tax_amount" and tax_lines > 1:
            printed = normalized or printed  # several per-rate lines: the amount is not printed
        entry = entries.get(value.name, {})
        inferred = None
        if value.name != "tax_amount" and entry.get("label") is None:
            inferred = str(entry.get("inferred") or "unlabelled")
        result.fields[value.name] = FoundValue(
            name=value.name,
            text=printed,
            value=normalized,
            page=value.page,
            label=value.vendor_label,
            inferred=inferred,
            canonical=value,
        )
    for raw_item, item in zip(raw.get("line_items") or [], mapped.line_items, strict=False):
        page = raw_item.get("page")
        cells: dict[str, FoundValue] = {}
        for name in LINE_CELLS:
            printed_cell = raw_item.get(name)
            if printed_cell is None:
                continue
            normalized_cell = getattr(item, name)
            if isinstance(normalized_cell, Decimal):
                normalized_cell = plain_number(normalized_cell)
            cells[name] = FoundValue(
                name=name, text=str(printed_cell), value=normalized_cell, page=page
            )
        result.line_items.append(
            FoundItem(line_no=item.line_no, page=page, cells=cells, canonical=item)
        )
    return result


def _locate(path: Path, result: Extraction) -> list[tuple[float | None, float | None]]:
    """Every page's size in points, and a box for every value whose text is on its page."""
    import pypdfium2 as pdfium

    wanted: dict[int, list[FoundValue]] = {}
    cells = (cell for item in result.line_items for cell in item.cells.values())
    for found in [*result.fields.values(), *cells]:
        if found.page and found.text:
            wanted.setdefault(found.page, []).append(found)
    sizes: list[tuple[float | None, float | None]] = []
    with pdfium_lock.LOCK:
        document = pdfium.PdfDocument(path)
        try:
            for index in range(len(document)):
                page = document[index]
                try:
                    width, height = page.get_size()
                    sizes.append((width, height))
                    values = wanted.get(index + 1)
                    if values:
                        textpage = page.get_textpage()
                        try:
                            for found in values:
                                found.box = _box(textpage, found.text, height)
                        finally:
                            textpage.close()
                finally:
                    page.close()
        finally:
            document.close()
    return sizes


def _box(textpage: Any, text: str, page_height: float) -> BBox | None:
    """The box around the first occurrence of ``text`` (a whole word first, so ``"2"`` does
    not land inside ``"INV-2…"``), turned from PDF's bottom-left origin to top-left."""
    text = " ".join(text.split())
    if not text:
        return None
    hit = None
    for whole_word in (True, False):
        searcher = textpage.search(text, match_case=True, match_whole_word=whole_word)
        try:
            hit = searcher.get_next()
        finally:
            searcher.close()
        if hit:
            break
    if not hit:
        return None
    start, count = hit
    boxes = [textpage.get_charbox(i) for i in range(start, start + count)]
    left = min(b[0] for b in boxes)
    bottom = min(b[1] for b in boxes)
    right = max(b[2] for b in boxes)
    top = max(b[3] for b in boxes)
    return BBox(left=left, top=page_height - top, right=right, bottom=page_height - bottom)


# --------------------------------------------------------------------------- PDF facts and words


@dataclass(frozen=True, slots=True)
class PdfFacts:
    """What a vendor checks of a PDF at upload."""

    pages: int | None
    """Its page count; None when it cannot be opened."""
    protection: str | None
    """``password`` (it needs one to open), ``restrictions`` (a security handler without a
    user password: owner restrictions such as no printing or copying), else None."""
    error: str | None = None
    """Why it could not be opened, when not for a password."""


def pdf_facts(data: bytes) -> PdfFacts:
    """Page count and protection of a PDF (``error`` set when PDFium cannot open it)."""
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    with pdfium_lock.LOCK:
        try:
            document = pdfium.PdfDocument(data)
        except pdfium.PdfiumError as exc:
            if getattr(exc, "err_code", None) == 4:  # FPDF_ERR_PASSWORD
                return PdfFacts(None, "password")
            return PdfFacts(None, None, f"PDF is unreadable or corrupt ({exc})")
        try:
            restricted = pdfium_c.FPDF_GetSecurityHandlerRevision(document.raw) != -1
            return PdfFacts(len(document), "restrictions" if restricted else None)
        finally:
            document.close()


def first_pages(data: bytes, count: int) -> bytes:
    """A PDF of the first ``count`` pages of ``data`` (``data`` itself when it has no more, or
    when PDFium cannot open it: the reader then reports why)."""
    import io

    import pypdfium2 as pdfium

    with pdfium_lock.LOCK:
        try:
            source = pdfium.PdfDocument(data)
        except pdfium.PdfiumError:
            return data
        try:
            if len(source) <= count:
                return data
            target = pdfium.PdfDocument.new()
            try:
                target.import_pages(source, list(range(count)))
                buffer = io.BytesIO()
                target.save(buffer)
                return buffer.getvalue()
            finally:
                target.close()
        finally:
            source.close()


@dataclass(frozen=True, slots=True)
class Word:
    """One word as printed: its text, box (points from the top-left) and font."""

    text: str
    box: BBox
    font_size: float
    font_name: str
    bold: bool


@dataclass(slots=True)
class PageWords:
    """A page's size in points and its words, line by line in reading order."""

    number: int
    width: float
    height: float
    lines: list[list[Word]] = field(default_factory=list)


def pdf_words(data: bytes, *, max_pages: int | None = None) -> list[PageWords]:
    """Every word of the text layer of a PDF's first ``max_pages`` pages (all when None);
    ``[]`` when PDFium cannot open it. Lines break where the text layer breaks them; words at
    whitespace."""
    import pypdfium2 as pdfium

    pages: list[PageWords] = []
    with pdfium_lock.LOCK:
        try:
            document = pdfium.PdfDocument(data)
        except pdfium.PdfiumError:
            return []
        try:
            count = len(document) if max_pages is None else min(len(document), max_pages)
            for index in range(count):
                page = document[index]
                try:
                    width, height = page.get_size()
                    textpage = page.get_textpage()
                    try:
                        lines = _page_lines(textpage, height)
                    finally:
                        textpage.close()
                finally:
                    page.close()
                pages.append(PageWords(index + 1, width, height, lines))
        finally:
            document.close()
    return pages


def _page_lines(textpage: Any, page_height: float) -> list[list[Word]]:
    import ctypes

    import pypdfium2.raw as pdfium_c

    lines: list[list[Word]] = []
    line: list[Word] = []
    chars: list[int] = []
    name = ctypes.create_string_buffer(256)

    def end_word() -> None:
        if not chars:
            return
        boxes = [textpage.get_charbox(i) for i in chars]
        first = chars[0]
        size = float(pdfium_c.FPDFText_GetFontSize(textpage.raw, first))
        flags = ctypes.c_int()
        pdfium_c.FPDFText_GetFontInfo(textpage.raw, first, name, len(name), ctypes.byref(flags))
        font = name.value.decode("utf-8", "replace")
        weight = pdfium_c.FPDFText_GetFontWeight(textpage.raw, first)
        line.append(
            Word(
                text="".join(chr(pdfium_c.FPDFText_GetUnicode(textpage.raw, i)) for i in chars),
                box=BBox(
                    left=min(b[0] for b in boxes),
                    top=page_height - max(b[3] for b in boxes),
                    right=max(b[2] for b in boxes),
                    bottom=page_height - min(b[1] for b in boxes),
                ),
                font_size=size,
                font_name=font,
                bold=weight >= 600 or "bold" in font.lower(),
            )
        )
        chars.clear()

    for index in range(textpage.count_chars()):
        char = chr(pdfium_c.FPDFText_GetUnicode(textpage.raw, index))
        if char in "\r\n":
            end_word()
            if line:
                lines.append(line)
                line = []
        elif char.isspace() or char == "\x00":
            end_word()
        else:
            chars.append(index)
    end_word()
    if line:
        lines.append(line)
    return lines
