"""The status page, in a real headless Chromium (Debian's ``chromium``) against the real daemon.

One daemon processes a handful of documents: generated invoices through the ``local``
extractor (no boxes) and through the Rossum emulator (boxes), a scan the local extractor
rejects, a truncated PDF rejected at intake, and an invoice for a Rossum profile whose
password is wrong (it needs re-authentication). The pages are read as Chromium builds them
(``--dump-dom``) and compared with the store; screenshots go to the run's artefacts:
``$DOCRELAY_ARTIFACTS/status-page/`` (default: a directory under pytest's tmp).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from lxml import html
from PIL import Image

from daemon import pageimage
from tests.conftest import require_service
from tests.daemon_proc import (
    RUNNING,
    DaemonProcess,
    EmulatorProcess,
    drop_invoices,
    query,
    wait_until,
    write_config,
)
from tests.invoices import random_spec, scanned_pdf_bytes, truncated_pdf_bytes

# One daemon and chromium profile serve the whole module: its tests stay on one pytest-xdist worker.
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("test_status_page")]

SCAN = "scan <script>alert(1).pdf"
"""A filename the page must show as text, never run."""
TRUNCATED = "truncated <b>bold.pdf"


@pytest.fixture(scope="module")
def chromium() -> str:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    require_service(binary is not None, "Debian's chromium is not installed (apt install chromium)")
    assert binary is not None
    return binary


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = os.environ.get("DOCRELAY_ARTIFACTS")
    root = Path(base) if base else tmp_path_factory.mktemp("artefacts")
    path = root / "status-page"
    path.mkdir(parents=True, exist_ok=True)
    return path


class Browser:
    """Headless Chromium, one process per page, each with a profile of its own (another
    Chromium on the machine must not share its lock)."""

    def __init__(self, binary: str, root: Path) -> None:
        self.binary = binary
        self.root = root
        self.calls = 0

    def _run(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        self.calls += 1
        profile = self.root / f"profile-{self.calls}"
        done = subprocess.run(
            [self.binary, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-dev-shm-usage", "--no-first-run", f"--user-data-dir={profile}",
             "--window-size=1280,1600", *args],
            capture_output=True,
            timeout=90,
            check=False,
        )  # fmt: skip
        shutil.rmtree(profile, ignore_errors=True)
        assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
        return done

    def dom(self, url: str) -> Any:
        """The page as Chromium built it, parsed."""
        return html.fromstring(self._run("--dump-dom", url).stdout)

    def screenshot(self, url: str, path: Path) -> Image.Image:
        self._run(f"--screenshot={path}", url)
        assert path.is_file(), f"no screenshot of {url}"
        return Image.open(path)


class Site:
    def __init__(self, root: Path, daemon: DaemonProcess, browser: Browser) -> None:
        self.root = root
        self.daemon = daemon
        self.browser = browser

    def rows(self, sql: str) -> list[Any]:
        return query(self.root, sql)

    def document_id(self, filename: str) -> int:
        rows = self.rows(f"SELECT id FROM documents WHERE filename = '{filename}'")
        return rows[0]["id"]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, chromium: str) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("status")
    emulator = EmulatorProcess("rossum", log=root / "emulator.log")
    # source → (vendor profile, destination); "archive" is a folder that cannot be made
    folders = {
        "boxed": ("rossum_main", "outbox"),
        "locked": ("rossum_locked", "outbox"),
        "unexported": ("local", "archive"),
    }
    (root / "not-a-folder").write_text("a file where the archive folder should be")
    extra = emulator.vendor_toml(poll_interval=0.3, timeout=5)
    extra += emulator.vendor_toml("rossum_locked", password="wrong", poll_interval=0.3, timeout=5)
    extra += f'[destinations.archive]\nkind = "folder"\npath = "{root}/not-a-folder/archive"\n'
    for source, (profile, destination) in folders.items():
        (root / source).mkdir()
        extra += f"""
[[sources.folder]]
name = "{source}"
path = "{root / source}"
after = "move"
settle_seconds = 0.2

[[routes]]
match = {{ source = "{source}" }}
vendor = "{profile}"
destinations = ["{destination}"]
"""
    config = write_config(root, extra=extra, local='ocr = "off"', settle=0.2)
    env = {"DOCRELAY_PIPELINE__MAX_ATTEMPTS": "3", "DOCRELAY_PIPELINE__CORRECTIONS_INTERVAL": "0.5"}
    daemon = DaemonProcess(config, env=env)  # dead sooner, docrelay_corrections read often
    try:
        daemon.start()
        RUNNING.remove(daemon)  # lives for the module, not one test (see conftest)
        inbox = root / "inbox"
        drop_invoices(inbox, 2, prefix="local", first_seed=40)
        (inbox / SCAN).write_bytes(scanned_pdf_bytes(random_spec(41), dpi=100))
        (inbox / TRUNCATED).write_bytes(truncated_pdf_bytes(random_spec(42)))
        drop_invoices(root / "boxed", 2, prefix="rossum", first_seed=43)
        drop_invoices(root / "locked", 1, prefix="locked", first_seed=45)
        drop_invoices(root / "unexported", 1, prefix="unexported", first_seed=46)
        finished = "SELECT 1 FROM docrelay_documents WHERE state IN ('done', 'rejected')"
        delivered = "SELECT 1 FROM deliveries WHERE state = 'delivered'"
        dead = "SELECT 1 FROM deliveries WHERE state = 'dead'"
        paused = "SELECT 1 FROM connector_health WHERE name = 'rossum_locked'"
        wait_until(
            lambda: (
                len(query(root, finished)) == 7
                and len(query(root, delivered)) == 4
                and len(query(root, dead)) == 1
                and query(root, paused)
            ),
            60,
            what=f"all finished, rossum_locked paused (log: {daemon.log_path})",
        )
        yield Site(root, daemon, Browser(chromium, root))
    finally:
        daemon.stop()
        emulator.stop()


def text_of(element: Any) -> str:
    return " ".join(element.text_content().split())


def test_overview_counts_are_the_stores(site: Site) -> None:
    page = site.browser.dom(f"{site.daemon.url}/")
    tiles = {
        tile.get("data-state"): int(tile.xpath('.//div[@class="n"]')[0].text_content())
        for tile in page.xpath('//section[@id="documents"]//div[@data-state]')
    }
    states = site.rows("SELECT state, COUNT(*) AS n FROM docrelay_documents GROUP BY state")
    assert tiles == {r["state"]: r["n"] for r in states}
    assert tiles["done"] == 5 and tiles["rejected"] == 2

    for section, table, key in (("submissions", "submissions", "profile"),
                                ("deliveries", "deliveries", "destination")):  # fmt: skip
        cells = {
            (cell.getparent().get("data-name"), cell.get("data-state")): int(cell.text_content())
            for cell in page.xpath(f'//section[@id="{section}"]//td[@data-state]')
        }
        stored = site.rows(
            f"SELECT {key} AS name, state, COUNT(*) AS n FROM {table} GROUP BY {key}, state"
        )
        assert {k: v for k, v in cells.items() if v} == {
            (r["name"], r["state"]): r["n"] for r in stored
        }, section
    vendors = {
        row.get("data-name"): text_of(row)
        for row in page.xpath('//section[@id="vendors"]//tr[@data-name]')
    }
    assert set(vendors) == {"local", "rossum_main", "rossum_locked"}
    assert "needs re-auth" in vendors["rossum_locked"]
    assert vendors["rossum_main"].split()[1] == "ok", vendors
    destinations = {
        row.get("data-name"): text_of(row)
        for row in page.xpath('//section[@id="destinations"]//tr[@data-name]')
    }
    assert destinations["outbox"].split()[1] == "ok"
    assert destinations["archive"].split()[1] == "errors"
    assert "not-a-folder" in destinations["archive"]  # its last error
    processes = {
        row.get("data-name"): text_of(row)
        for row in page.xpath('//section[@id="processes"]//tr[@data-name]')
    }
    members = site.rows("SELECT id FROM processes WHERE ended IS NULL")
    assert set(processes) == {r["id"] for r in members} and len(processes) == 1, processes
    assert "(this one) running" in next(iter(processes.values()))
    assert "folder:" in next(iter(processes.values()))  # the folder source's lease


def test_overview_says_what_needs_a_person_and_why(site: Site) -> None:
    page = site.browser.dom(f"{site.daemon.url}/")
    assert page.xpath("//script") == [], "a filename became markup"
    banner = text_of(page.get_element_by_id("attention"))
    assert "need" in banner and "a person" in banner and "Nothing" not in banner
    reauth = text_of(page.get_element_by_id("reauth"))
    reason = site.rows("SELECT reason FROM connector_health WHERE name = 'rossum_locked'")
    assert "rossum_locked" in reauth and reason[0]["reason"] in reauth

    dead = site.rows("SELECT document_id, error FROM deliveries WHERE state = 'dead'")
    problems = text_of(page.get_element_by_id("delivery-problems"))
    assert "archive" in problems and dead[0]["error"] in problems
    assert f"#{dead[0]['document_id']} unexported-0.pdf" in problems

    failures = {
        int(row.get("data-document")): text_of(row)
        for row in page.xpath('//section[@id="failures"]//tr[@data-document]')
    }
    rejected = site.rows("SELECT document_id, filename, error FROM docrelay_documents "
                         "WHERE state = 'rejected'")  # fmt: skip
    assert {r["document_id"] for r in rejected} <= set(failures)
    for row in rejected:
        shown = failures[row["document_id"]]
        assert row["filename"] in shown and row["error"] in shown, shown
    assert {r["filename"] for r in rejected} == {SCAN, TRUNCATED}
    assert any("OCR" in r["error"] for r in rejected)  # the vendor's rejection, with its reason


def test_document_page_shows_fields_history_and_boxes_on_the_page(site: Site) -> None:
    document_id = site.document_id("rossum-0.pdf")
    url = f"{site.daemon.url}/documents/{document_id}"
    page = site.browser.dom(url)
    assert text_of(page.get_element_by_id("filename")) == "rossum-0.pdf"
    row = site.rows(f"SELECT * FROM docrelay_documents WHERE document_id = {document_id}")[0]
    assert text_of(page.xpath("//h1")[0]).endswith(row["state"])  # as the public view has it
    facts = text_of(page.get_element_by_id("facts"))
    assert row["vendor"] in facts and row["vendor_ref"] in facts and row["sha256"] in facts
    assert str(row["exported_at"])[:19] in facts  # the store's UTC time, to the second

    fields = site.rows(f"SELECT * FROM docrelay_fields WHERE document_id = {document_id}")
    assert len(fields) >= 8
    shown = {
        row.get("data-field"): text_of(row)
        for row in page.xpath('//section[@id="fields"]//tr[@data-field]')
    }
    assert set(shown) == {f["field"] for f in fields}
    for field in fields:
        assert field["field"] in shown[field["field"]]
        assert (field["value_text"] or "absent") in shown[field["field"]], field

    history = page.xpath('//section[@id="history"]//tr[@data-kind]')
    events = site.rows(f"SELECT kind FROM events WHERE document_id = {document_id} ORDER BY id")
    assert [row.get("data-kind") for row in history] == [e["kind"] for e in events]

    images = page.xpath('//section[@id="page"]//img')
    assert len(images) == 1
    png = httpx.get(site.daemon.url + images[0].get("src"), timeout=30)
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(png.content))
    assert image.format == "PNG"
    assert 300 <= max(image.size) <= pageimage.MAX_SIDE, image.size
    assert image.size == (int(images[0].get("width")), int(images[0].get("height")))
    stored_size = site.rows(f"SELECT page_sizes FROM documents WHERE id = {document_id}")
    width, height = json.loads(stored_size[0]["page_sizes"])[0]
    assert abs(image.size[0] / image.size[1] - width / height) < 0.01  # the page, not a crop

    svg = page.xpath('//section[@id="page"]//*[local-name()="svg"]')[0]
    view = [float(v) for v in svg.get("viewbox", svg.get("viewBox", "")).split()]
    assert view[2:] == pytest.approx([width, height], abs=0.05)
    boxes = {g.get("data-field"): g for g in svg.xpath('.//*[local-name()="g"][@data-field]')}
    boxed = {f["field"] for f in fields if f["bbox"] and f["page"] in (None, 1)}
    assert boxed and set(boxes) == boxed
    for name, group in boxes.items():
        rect = group.xpath('./*[local-name()="rect"]')[0]
        x, y, w, h = (float(rect.get(k)) for k in ("x", "y", "width", "height"))
        left, top, right, bottom = (float(v) for v in next(
            f["bbox"] for f in fields if f["field"] == name).split(","))  # fmt: skip
        assert (x, y, x + w, y + h) == pytest.approx((left, top, right, bottom), abs=0.02)
        assert 0 <= x and x + w <= width + 0.5 and 0 <= y and y + h <= height + 0.5
        assert text_of(group.xpath('./*[local-name()="text"]')[0]) == name


def test_pages_of_rejected_and_unboxed_documents_say_so(site: Site) -> None:
    base = site.daemon.url
    scan = site.browser.dom(f"{base}/documents/{site.document_id(SCAN)}")
    assert scan.xpath("//script") == []
    assert text_of(scan.get_element_by_id("filename")) == SCAN
    error = site.rows(f"SELECT error FROM docrelay_documents WHERE filename = '{SCAN}'")
    assert error[0]["error"] in text_of(scan.get_element_by_id("error"))
    assert "no extracted fields" in text_of(scan.get_element_by_id("no-boxes"))
    assert len(scan.xpath('//section[@id="page"]//img')) == 1  # a scan still shows its page

    truncated = site.browser.dom(f"{base}/documents/{site.document_id(TRUNCATED)}")
    assert text_of(truncated.get_element_by_id("filename")) == TRUNCATED
    assert truncated.xpath("//b") == []
    assert "No picture of the page" in text_of(truncated.get_element_by_id("no-page"))
    assert truncated.xpath('//section[@id="page"]//img') == []

    local = site.browser.dom(f"{base}/documents/{site.document_id('local-0.pdf')}")
    assert "gave no positions" in text_of(local.get_element_by_id("no-boxes"))
    assert local.xpath('//section[@id="fields"]//tr[@data-field="invoice_number"]')

    assert httpx.get(f"{base}/documents/999999", timeout=10).status_code == 404
    assert httpx.get(f"{base}/documents/999999/page.png", timeout=10).status_code == 404


def test_screenshots_are_not_blank(site: Site, artefacts: Path) -> None:
    base = site.daemon.url
    shots = {
        "overview.png": f"{base}/",
        "document-boxes.png": f"{base}/documents/{site.document_id('rossum-0.pdf')}",
        "document-rejected.png": f"{base}/documents/{site.document_id(SCAN)}",
        "document-no-boxes.png": f"{base}/documents/{site.document_id('local-0.pdf')}",
    }
    for name, url in shots.items():
        image = site.browser.screenshot(url, artefacts / name).convert("RGB")
        assert image.size == (1280, 1600), name
        colours = image.getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 50, f"{name} is (almost) one colour"
        # Not only chrome around an empty middle: the upper half has dark text on it.
        dark = sum(n for n, (r, g, b) in colours if r + g + b < 200)
        assert dark > 500, f"{name}: hardly any text drawn"
    print(f"screenshots in {artefacts}")


def test_a_correction_shows_as_the_current_value(site: Site) -> None:
    """Runs after the others: a correction exports a new version (the counts change)."""
    import sys

    document_id = site.document_id("rossum-1.pdf")
    corrected = "CORR <i>1</i>"
    done = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "--config", str(site.daemon.config), "correct",
         str(document_id), f"invoice_number={corrected}"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    page = site.browser.dom(f"{site.daemon.url}/documents/{document_id}")
    row = text_of(page.xpath('//section[@id="fields"]//tr[@data-field="invoice_number"]')[0])
    assert corrected in row and "corrected" in row
    assert page.xpath("//i") == []
    assert page.xpath('//section[@id="history"]//tr[@data-kind="corrected"]')
    assert page.xpath('//*[local-name()="g"][@data-field="invoice_number"]')  # its box stays


def test_accuracy_chart_shows_the_views_shares_per_vendor_and_field(
    site: Site, artefacts: Path
) -> None:
    """Runs after the correction above: that document has a truth. ``/accuracy`` (linked from
    the overview) draws the ``docrelay_vendor_accuracy`` rows as SVG bars, server-side."""
    overview = site.browser.dom(f"{site.daemon.url}/")
    assert overview.xpath('//a[@id="accuracy-link"]/@href') == ["/accuracy"]
    url = f"{site.daemon.url}/accuracy"
    page = site.browser.dom(url)
    assert page.xpath("//script") == []
    rows = site.rows("SELECT * FROM docrelay_vendor_accuracy")
    assert rows and {r["profile"] for r in rows} == {"rossum_main"}
    by_field = {r["field"]: r for r in rows}
    assert by_field["invoice_number"]["wrong_count"] == 1  # corrected: the vendor was wrong
    svg = page.xpath('//*[local-name()="svg"][@id="accuracy-chart"]')[0]
    drawn = svg.xpath('.//*[local-name()="g"][@data-profile="rossum_main"]'
                      '/*[local-name()="g"][@data-field]')  # fmt: skip
    assert sorted(g.get("data-field") for g in drawn) == sorted(by_field)
    for g in drawn:
        row = by_field[g.get("data-field")]
        counts = {
            r.get("class"): int(r.get("data-count")) for r in g.xpath('*[local-name()="rect"]')
        }
        want = {k: row[f"{k}_count"] for k in ("right", "wrong", "missed") if row[f"{k}_count"]}
        assert counts == want, g.get("data-field")
    assert page.xpath('//table[@id="calibration"]//td[text()="rossum_main"]') or page.xpath(
        '//table[@id="calibration"]//strong[text()="rossum_main"]'
    )
    image = site.browser.screenshot(url, artefacts / "accuracy.png").convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50, "the accuracy page is (almost) one colour"
    red = sum(n for n, (r, g, b) in colours if (r, g, b) == (0xB4, 0x23, 0x18))
    assert red > 100, "the wrong bar is drawn"


def test_a_refused_correction_row_needs_a_person(site: Site) -> None:
    """An ERP's row in ``docrelay_corrections`` that the daemon refuses shows with its reason."""
    from sqlalchemy import create_engine, text

    document_id = site.document_id("rossum-0.pdf")
    engine = create_engine(f"sqlite:///{site.root}/var/docrelay.db")
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO docrelay_corrections (document_id, field, value, action) "
                 "VALUES (:id, 'total_amount', '1', 'shred')"),
            {"id": document_id},
        )  # fmt: skip
    engine.dispose()
    refused = "SELECT id, reason FROM docrelay_corrections WHERE state = 'refused'"
    row = wait_until(lambda: site.rows(refused), 30, what="the row refused")[0]
    page = site.browser.dom(f"{site.daemon.url}/")
    shown = text_of(page.get_element_by_id("corrections-refused"))
    assert row["reason"] in shown and "shred" in shown
    assert f"#{document_id} rossum-0.pdf" in shown


def test_page_rendering_is_bounded(tmp_path: Path) -> None:
    """A page claiming a huge size is drawn within the pixel caps; an image declaring more
    pixels than the preview's limit is refused from its header, before any decoding."""
    from fpdf import FPDF

    pdf = FPDF(unit="pt", format=(14400, 14400))  # PDF's largest page, 200 x 200 inches
    pdf.add_page()
    pdf.set_font("Helvetica", size=400)
    pdf.text(1000, 2000, "huge")
    path = tmp_path / "huge.pdf"
    path.write_bytes(bytes(pdf.output()))
    page = pageimage.first_page(path, "application/pdf")
    assert max(page.width, page.height) <= pageimage.MAX_SIDE
    assert page.width * page.height <= pageimage.MAX_PIXELS
    assert (page.page_width, page.page_height) == pytest.approx((14400, 14400))

    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    side = 7000  # 49 M pixels: over the preview's limit, under Pillow's bomb warning
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    with pytest.raises(pageimage.NoPage, match="limit"):
        pageimage.first_page(bomb, "image/png")
    scan = tmp_path / "scan.png"
    Image.new("RGB", (2480, 3508), "white").save(scan, dpi=(300, 300))  # A4 at 300 dpi
    page = pageimage.first_page(scan, "image/png")
    assert (page.width, page.height) == (990, 1400)  # scaled down, proportions kept
    assert (page.page_width, page.page_height) == pytest.approx((595.2, 841.92), abs=0.01)
    assert Image.open(io.BytesIO(page.png)).size == (990, 1400)
    with pytest.raises(pageimage.NoPage, match="not in the blob store"):
        pageimage.first_page(tmp_path / "gone", "application/pdf")
    with pytest.raises(pageimage.NoPage, match="no preview"):
        pageimage.first_page(path, "text/plain")


@pytest.mark.postgres
def test_the_pages_read_a_postgresql_store(tmp_path: Path, pg_url: str) -> None:
    """The same queries on PostgreSQL (typed timestamps, JSON columns as objects), read over
    plain HTTP (the browser's part is covered above), behind ``web.status_tokens``: the token
    as a Basic password (what a browser's prompt sends) or a bearer token."""
    import base64

    from sqlalchemy import create_engine, text

    token = "status-token-0123456789"
    config = write_config(tmp_path, store_url=pg_url, local='ocr = "off"')
    daemon = DaemonProcess(config, env={"DOCRELAY_WEB__STATUS_TOKENS": json.dumps([token])})
    daemon.start()
    basic = "Basic " + base64.b64encode(f"ops:{token}".encode()).decode()
    client = httpx.Client(base_url=daemon.url, headers={"authorization": basic}, timeout=30)
    inbox = tmp_path / "inbox"
    drop_invoices(inbox, 2, prefix="pg", first_seed=50)
    (inbox / SCAN).write_bytes(scanned_pdf_bytes(random_spec(51), dpi=100))
    engine = create_engine(pg_url)
    try:
        with engine.connect() as conn:

            def states() -> dict[str, int]:
                rows = conn.execute(
                    text("SELECT state, COUNT(*) FROM docrelay_documents GROUP BY state")
                )
                conn.rollback()  # the next poll sees the daemon's newer commits
                return dict(rows.all())

            wait_until(lambda: states() == {"done": 2, "rejected": 1}, 60, what="3 documents")
            ids = dict(conn.execute(text("SELECT filename, id FROM documents")).all())
        for path in (
            "/",
            f"/documents/{ids['pg-0.pdf']}",
            f"/documents/{ids['pg-0.pdf']}/page.png",
        ):
            refused = httpx.get(daemon.url + path, timeout=30)
            assert refused.status_code == 401 and "Basic" in refused.headers["www-authenticate"]
            wrong = "Basic " + base64.b64encode(b"ops:not-the-token-at-all").decode()
            assert httpx.get(daemon.url + path, headers={"authorization": wrong}).status_code == 401
        bearer = {"authorization": f"Bearer {token}"}
        assert httpx.get(f"{daemon.url}/", headers=bearer, timeout=30).status_code == 200
        overview = html.fromstring(client.get("/").text)
        tiles = {
            tile.get("data-state"): int(tile.xpath('.//div[@class="n"]')[0].text_content())
            for tile in overview.xpath('//section[@id="documents"]//div[@data-state]')
        }
        assert tiles == {"done": 2, "rejected": 1}
        failures = text_of(overview.get_element_by_id("failures"))
        assert SCAN in failures and "OCR" in failures
        assert "Nothing needs a person" in text_of(overview.get_element_by_id("attention"))
        answer = client.get(f"/documents/{ids['pg-0.pdf']}")
        assert answer.status_code == 200
        page = html.fromstring(answer.text)
        assert page.xpath('//section[@id="fields"]//tr[@data-field="invoice_number"]')
        assert page.xpath('//section[@id="history"]//tr[@data-kind="received"]')
        png = client.get(f"/documents/{ids['pg-0.pdf']}/page.png")
        assert Image.open(io.BytesIO(png.content)).size[1] == pageimage.MAX_SIDE  # A4: taller
    finally:
        client.close()
        engine.dispose()
        assert daemon.stop() == 0, daemon.log()


def test_every_needs_a_person_list_renders_escaped() -> None:
    """The lists the daemon above did not fill (a review, a dead submission, refused feedback),
    rendered from the shapes ``overview_data`` gives them: each is shown, with its reason, as
    text."""
    from datetime import UTC, datetime

    from daemon import statuspage

    at = datetime(2026, 12, 4, 3, 0, tzinfo=UTC)
    evil = "<script>x</script>"
    data = {
        "instance": {"host": "h", "pid": 1, "uptime": "1 min 0 s", "ready": True,
                     "healthy": False, "storage": {"state": "disk_full", "reason": "no space"}},
        "sources": [], "documents": {}, "documents_total": 0,
        "processes": [{"id": f"h:1:{evil}", "state": "lost", "heartbeat_age_seconds": 40.5,
                       "holds": [f"folder:/in/{evil}"], "leased": {"submissions": 2},
                       "this": False}],
        "budgets": [{"vendor": f"v{evil}", "limit": "documents_per_day", "used": 5, "of": 5,
                     "exhausted_at": "2026-12-04T03:00:00+00:00"}],
        "submission_states": {"columns": [], "rows": {}},
        "delivery_states": {"columns": [], "rows": {}},
        "vendors": [], "destinations": [], "oldest_waiting": None, "reauth": [],
        "in_review": [{"document_id": 1, "vendor": "v", "reason": f"split? {evil}",
                       "since": at.isoformat(), "deadline": None}],
        "dead": [{"id": 2, "document_id": 2, "profile": "v", "error": f"gave up {evil}",
                  "updated_at": at}],
        "delivery_problems": [],
        "feedback_problems": [{"document_id": 3, "vendor": "v", "field": "total_amount",
                               "state": "refused", "reason": f"no such id {evil}",
                               "at": at.isoformat()}],
        "corrections_refused": [], "attention": 42, "failures": [], "recent": [],
        "totals": {"in_review": 40, "dead": 1, "delivery_problems": 0, "feedback_problems": 1,
                   "corrections_refused": 0},
        "filenames": {1: f"a{evil}.pdf", 2: "b.pdf", 3: "c.pdf"},
    }  # fmt: skip
    response = statuspage._html("overview.html.j2", data)
    page = html.fromstring(response.body)
    assert page.xpath("//script") == []
    assert f"split? {evil}" in text_of(page.get_element_by_id("review"))
    assert f"a{evil}.pdf" in text_of(page.get_element_by_id("review"))
    assert f"gave up {evil}" in text_of(page.get_element_by_id("dead"))
    assert f"no such id {evil}" in text_of(page.get_element_by_id("feedback-problems"))
    assert "42 items need a person" in text_of(page.get_element_by_id("attention"))
    assert "In review (newest 1 of 40)" in text_of(page.get_element_by_id("needs-person"))
    assert "no space" in text_of(page.xpath("//main")[0])
    processes = text_of(page.get_element_by_id("processes"))
    assert f"h:1:{evil}" in processes and f"folder:/in/{evil}" in processes
    assert "lost" in processes and "submissions 2" in processes
    assert f"v{evil}" in text_of(page.get_element_by_id("budgets"))
    assert "default-src 'none'" in response.headers["content-security-policy"]
