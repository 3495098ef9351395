"""The page at ``/``, in a real browser: Playwright drives Debian's chromium (``make
browser-deps``; no browser is downloaded) against a real server with API keys on.

Every host name but the loopback address resolves to nothing, so the page can only work from
what the server serves. A screenshot of the read image is saved under the test's tmp folder,
and under ``$OCRSERVE_TEST_ARTIFACTS`` when that is set.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pikepdf
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from .conftest import FIXTURES, free_port, start_serve

CHROMIUM = shutil.which("chromium")
KEY = "page-test-key-0123456789"
IMAGE = FIXTURES / "en_doc_paragraph.jpg"

pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"), reason="needs chromium: make browser-deps"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("page")
    port = free_port()
    env = os.environ | {
        "OCRSERVE_DATA_DIR": str(tmp / "data"),
        "OCRSERVE_LANES": "1",
        "OCRSERVE_API_KEYS": json.dumps([KEY]),
    }
    proc = start_serve(env, port, tmp / "server.log")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM is not None, "CI runs this test: make browser-deps"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, server: str) -> Iterator[Page]:
    """A fresh tab on ``/``. The page's own errors fail the test, CSP refusals included
    (Chromium reports those on the console)."""
    context = browser.new_context(base_url=server, viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda error: problems.append(str(error)))

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            problems.append(message.text)

    tab.on("console", on_console)
    tab.goto("/")
    # The language list comes from the server: the page is ready once it has arrived.
    expect(tab.locator("#lang option[value='en']")).to_have_count(1)
    yield tab
    context.close()
    assert problems == []


def read(page: Page, path: Path, key: str = KEY) -> None:
    page.fill("#key", key)
    page.set_input_files("#file", path)
    page.click("#submit")


def screenshot(page: Page, tmp_path: Path, name: str) -> None:
    """The whole page, under the test's tmp folder and ``$OCRSERVE_TEST_ARTIFACTS`` if set."""
    shot = tmp_path / name
    page.screenshot(path=shot, full_page=True)
    if artifacts := os.environ.get("OCRSERVE_TEST_ARTIFACTS"):
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(artifacts) / name)


def ocr(server: str, path: Path, **options: str) -> dict[str, Any]:
    """The result the page should show, straight from the API."""
    with path.open("rb") as f:
        r = httpx.post(
            f"{server}/ocr",
            files={"image": (path.name, f)},
            data=options,
            headers={"X-API-Key": KEY},
            timeout=60,
        )
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


def test_the_page_is_static_and_locked_down(server: str) -> None:
    r = httpx.get(f"{server}/")  # no key: the page itself is not guarded
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    assert "unsafe-inline" not in csp
    assert not re.search(r"<script(?![^>]*\ssrc=)", r.text), "no inline script"
    assert re.findall(r"https?://", r.text) == [], "nothing from outside the server"

    types = {"/page/app.js": "text/javascript", "/page/style.css": "text/css"}
    for path, media in types.items():
        asset = httpx.get(f"{server}{path}")
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(media)
        assert asset.headers["x-content-type-options"] == "nosniff"
        again = httpx.get(f"{server}{path}", headers={"If-None-Match": asset.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
    assert httpx.get(f"{server}/page/nope.js").json()["error"]["code"] == "not_found"

    langs = httpx.get(f"{server}/languages").json()
    assert "en" in langs["langs"] and langs["default"] in langs["langs"]
    assert "en" in langs["engines"]["ppocr"] and "ko" in langs["engines"]["tesseract"]
    assert langs["models"]["tesseract"].startswith("tesseract-") and "stable" in langs["models"]
    paths = httpx.get(f"{server}/openapi.json").json()["paths"]
    assert "/languages" in paths
    assert not [p for p in paths if p == "/" or p.startswith("/page")]


def test_an_image_is_read_and_its_boxes_drawn(page: Page, server: str, tmp_path: Path) -> None:
    page.select_option("#lang", "en")
    read(page, IMAGE)
    boxes = page.locator("#pages .page svg polygon.box")
    expect(boxes.first).to_be_visible()

    result = ocr(server, IMAGE, lang="en")
    (only,) = result["pages"]
    assert len(only["lines"]) > 0
    expect(boxes).to_have_count(len(only["lines"]))
    expect(page.locator("#pages .lines li")).to_have_count(len(only["lines"]))
    # The uploaded image itself, under the boxes, from an object URL.
    expect(page.locator("svg image")).to_have_attribute("href", re.compile(r"^blob:"))
    expect(page.locator("#sheet-note")).to_be_hidden()

    words = set(re.findall(r"[A-Za-z]{6,}", only["text"]))
    assert words, only["text"]
    expect(page.locator("#pages .lines")).to_contain_text(sorted(words)[0])
    expect(page.locator(".page-meta")).to_contain_text(f"read by {only['engine']}")
    expect(page.locator(".page-model")).to_contain_text(only["model"])

    boxes.first.hover()
    expect(page.locator(".hover-info")).to_have_text(re.compile(r"Line 1: confidence \d+\.\d%"))
    expect(boxes.first.locator("title")).to_have_text(re.compile(r"confidence \d+\.\d%"))
    screenshot(page, tmp_path, "page.png")  # the first box lit by the pointer

    # The confidence filter hides boxes and lines below it, and brings them back.
    shown = page.locator("#pages [data-confidence]:not(.filtered)")
    page.fill("#min_confidence", "1")
    expect(shown).to_have_count(0)
    page.fill("#min_confidence", "0")
    expect(shown).to_have_count(2 * len(only["lines"]))

    # hOCR and the searchable PDF are the same file sent again with a format.
    for fmt, start in (("hocr", b"<?xml"), ("pdf", b"%PDF")):
        with page.expect_download() as download:
            page.click(f".downloads button[data-format='{fmt}']")
        saved = tmp_path / download.value.suggested_filename
        download.value.save_as(saved)
        assert saved.read_bytes().startswith(start), fmt
    expect(page.locator("#error")).to_be_hidden()


def test_a_pdf_page_is_drawn_as_a_sheet_of_its_text(page: Page, tmp_path: Path) -> None:
    # One page of a born-digital PDF: its text layer is read, no recognition needed.
    pdf = tmp_path / "form.pdf"
    with pikepdf.open(FIXTURES / "irs_f1040nr.pdf") as form:
        del form.pages[1:]
        form.save(pdf)
    read(page, pdf)
    boxes = page.locator("#pages .page svg polygon.box")
    expect(boxes.first).to_be_visible()
    expect(page.locator("#sheet-note")).to_be_visible()
    expect(page.locator("#pages .page")).to_have_count(1)
    expect(page.locator("svg rect.paper")).to_have_count(1)
    assert page.locator("svg text.sheet-text").count() == boxes.count() > 10
    expect(page.locator(".page-meta")).to_contain_text("from the PDF's text layer")
    expect(page.locator("#pages .lines")).to_contain_text("Nonresident Alien")
    screenshot(page, tmp_path, "page-pdf.png")


def test_a_wrong_key_shows_the_401(page: Page) -> None:
    read(page, IMAGE, key="not-the-key")
    error = page.locator("#error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("401")
    expect(error).to_contain_text("the API key is not valid")
    expect(page.locator("#result")).to_be_hidden()

    # No key at all: no header is sent, and the server says one is needed.
    read(page, IMAGE, key="")
    expect(error).to_contain_text("an API key is required")

    # The key lives in this tab's sessionStorage: a reload keeps it.
    page.fill("#key", KEY)
    page.reload()
    expect(page.locator("#key")).to_have_value(KEY)
