"""Documents on every interface: PDF text layers, word boxes, page orientation and the output
formats, through the engine, ``/ocr``, ``/ocr/batch``, async tasks and their callbacks, and
the CLI, on real files."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pypdfium2 as pdfium
import pytest
from PIL import Image

from ocrserve import Engine, OCROptions, Page, decode_bytes
from ocrserve.types import Box

from .conftest import FIXTURES, Receiver, client_for
from .test_api import settings
from .test_tasks import task_settings, wait_for, wait_until

PDF = (FIXTURES / "irs_f1040nr.pdf").read_bytes()
PHOTOTEST = FIXTURES / "phototest.tif"
PHOTOTEST_LINES = [
    "This is a lot of 12 point text to test the",
    "ocr code and see if it works on all types",
    "of file format.",
]


def png(image: np.ndarray[Any, Any]) -> bytes:
    ok, data = cv2.imencode(".png", image)
    assert ok
    return data.tobytes()


def phototest(turn: int | None = None) -> np.ndarray[Any, Any]:
    [page] = decode_bytes(PHOTOTEST.read_bytes()).pages
    image = page.image
    return image if turn is None else np.asarray(cv2.rotate(image, turn))


def scanned_pdf() -> bytes:
    """phototest.tif as an image-only PDF: a scan with no text layer."""
    out = io.BytesIO()
    Image.open(PHOTOTEST).convert("RGB").save(out, "PDF", resolution=200)
    return out.getvalue()


def pdf_text_of(data: bytes) -> list[str]:
    pdf = pdfium.PdfDocument(data)
    try:
        texts = []
        for page in pdf:
            textpage = page.get_textpage()
            texts.append(textpage.get_text_range())
            textpage.close()
            page.close()
        return texts
    finally:
        pdf.close()


def inside(inner: Box, outer: Box, slack: float) -> bool:
    xs, ys = [x for x, _ in outer], [y for _, y in outer]
    return all(
        min(xs) - slack <= x <= max(xs) + slack and min(ys) - slack <= y <= max(ys) + slack
        for x, y in inner
    )


# --- the engine ------------------------------------------------------------------------------


def test_words_make_up_each_line_and_lie_inside_it(engine: Engine) -> None:
    [result] = engine.run([Page(phototest())])
    assert [line.text for line in result.lines[:3]] == PHOTOTEST_LINES
    for line in result.lines:
        assert " ".join(w.text for w in line.words) == line.text
        assert all(inside(w.box, line.box, slack=2) for w in line.words)
        # left to right, not overlapping by more than a sliver
        lefts = [min(x for x, _ in w.box) for w in line.words]
        assert lefts == sorted(lefts)
        assert all(0 < w.confidence <= 1 for w in line.words)
    first = result.lines[0].words
    assert [w.text for w in first[:3]] == ["This", "is", "a"]
    # "This" starts at the line's first ink (x 41-43 at 640 px) and ends before "is" (x 107)
    this = [x for x, _ in first[0].box]
    assert 30 <= min(this) <= 50 and 88 <= max(this) <= 105


def test_a_born_digital_pdf_page_is_read_from_its_text_layer(engine: Engine) -> None:
    [page] = decode_bytes(PDF).pages[:1]
    [layer] = engine.run([page], OCROptions(pdf_text="auto"))
    [ocr] = engine.run([page], OCROptions(pdf_text="ocr"))
    assert layer.source == "pdf" and ocr.source == "ocr"
    assert (layer.width, layer.height) == (ocr.width, ocr.height) == (1700, 2200)
    assert "U.S. Nonresident Alien Income Tax Return" in layer.text.split("\n")
    assert all(line.confidence == 1.0 for line in layer.lines)

    # The same word where the recogniser found it, within a few pixels.
    def find(result: Any, text: str) -> Box:
        return next(w.box for line in result.lines for w in line.words if w.text == text)

    for word in ("Nonresident", "1040NR"):
        a, b = np.array(find(layer, word)), np.array(find(ocr, word))
        assert np.abs(a.mean(axis=0) - b.mean(axis=0)).max() < 8, (word, a, b)


def test_a_scanned_pdf_is_recognised_and_pdf_only_reads_nothing(engine: Engine) -> None:
    [page] = decode_bytes(scanned_pdf()).pages
    [auto] = engine.run([page], OCROptions(pdf_text="auto"))
    [only] = engine.run([page], OCROptions(pdf_text="pdf"))
    assert auto.source == "ocr" and auto.text.split("\n")[:3] == PHOTOTEST_LINES
    assert only.source == "pdf" and only.text == "" and only.lines == ()


@pytest.mark.parametrize(
    ("turn", "angle"),
    [
        (cv2.ROTATE_90_CLOCKWISE, 90),
        (cv2.ROTATE_180, 180),
        (cv2.ROTATE_90_COUNTERCLOCKWISE, 270),
    ],
)
def test_a_turned_page_is_read_upright_with_boxes_on_the_page_as_sent(
    engine: Engine, turn: int, angle: int
) -> None:
    [upright] = engine.run([Page(phototest())])
    image = phototest(turn)
    [turned] = engine.run([Page(image)])
    [off] = engine.run([Page(image)], OCROptions(orientation="off"))
    assert turned.angle == angle and off.angle == 0
    assert turned.text == upright.text
    assert (turned.width, turned.height) == (image.shape[1], image.shape[0])
    # Off, the lines come out of order (or not at all); on, as upright.
    assert off.text.split("\n")[:3] != PHOTOTEST_LINES
    # The first word's box covers dark pixels of the turned image.
    box = np.array(turned.lines[0].words[0].box)
    x0, y0 = np.floor(box.min(axis=0)).astype(int)
    x1, y1 = np.ceil(box.max(axis=0)).astype(int)
    assert (image[y0:y1, x0:x1] < 100).mean() > 0.1


# --- HTTP --------------------------------------------------------------------------------------


@pytest.fixture
async def client(engine: Engine) -> AsyncIterator[httpx.AsyncClient]:
    async for c in client_for(settings(), engine):
        yield c


@pytest.mark.anyio
async def test_ocr_answers_in_each_format(client: httpx.AsyncClient) -> None:
    files = {"image": ("irs.pdf", PDF, "application/pdf")}
    form = {"max_pages": "1"}
    r = await client.post("/ocr", files=files, data=form)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    page = r.json()["pages"][0]
    assert page["source"] == "pdf" and page["angle"] == 0
    assert all("words" in line for line in page["lines"])

    r = await client.post("/ocr", files=files, data=form, headers={"Accept": "text/plain"})
    assert r.headers["content-type"].startswith("text/plain")
    assert "U.S. Nonresident Alien Income Tax Return" in r.text.split("\n")

    r = await client.post("/ocr", files=files, data={**form, "format": "hocr"})
    assert r.headers["content-type"].startswith("text/vnd.hocr+html")
    assert 'class="ocrx_word"' in r.text and ">Nonresident<" in r.text

    accept = "application/alto+xml;q=0.9, application/json;q=0.5"
    r = await client.post("/ocr", files=files, data=form, headers={"Accept": accept})
    assert r.headers["content-type"].startswith("application/alto+xml")
    assert 'CONTENT="Nonresident"' in r.text

    r = await client.post("/ocr", files=files, data=form, params={"format": "pdf"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
    texts = pdf_text_of(r.content)
    assert len(texts) == 5  # the original document, every page kept
    assert "Nonresident Alien Income Tax Return" in texts[0]


@pytest.mark.anyio
async def test_a_searchable_pdf_of_an_image_carries_the_words(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/ocr", files={"image": ("p.png", png(phototest()), "image/png")},
        headers={"Accept": "application/pdf"},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    [text] = pdf_text_of(r.content)
    lines = [" ".join(line.split()) for line in text.splitlines()]
    assert lines[:3] == PHOTOTEST_LINES


@pytest.mark.anyio
async def test_format_refusals(client: httpx.AsyncClient) -> None:
    image = {"image": ("p.png", png(phototest()), "image/png")}
    r = await client.post("/ocr", files=image, headers={"Accept": "image/png"})
    assert r.status_code == 406 and r.json()["error"]["code"] == "not_acceptable"
    r = await client.post("/ocr", files=image, data={"format": "docx"})
    assert r.status_code == 422 and r.json()["error"]["option"] == "format"
    r = await client.post("/ocr", files=image, data={"orientation": "sideways"})
    assert r.status_code == 422 and r.json()["error"]["option"] == "orientation"
    r = await client.post("/ocr/batch", files={"images": image["image"]}, data={"format": "hocr"})
    assert r.status_code == 422 and r.json()["error"]["option"] == "format"


@pytest.mark.anyio
async def test_options_reach_the_batch(client: httpx.AsyncClient) -> None:
    files = [("images", ("irs.pdf", PDF)), ("images", ("scan.pdf", scanned_pdf()))]
    r = await client.post("/ocr/batch", files=files, data={"max_pages": "1"})
    assert [item["pages"][0]["source"] for item in r.json()] == ["pdf", "ocr"]
    r = await client.post("/ocr/batch", files=files[:1], data={"max_pages": "1", "pdf_text": "ocr"})
    assert r.json()[0]["pages"][0]["source"] == "ocr"


@pytest.mark.anyio
async def test_a_task_reads_a_turned_page_and_its_result_comes_in_a_format(
    engine: Engine, tmp_path: Path, receiver: Receiver
) -> None:
    turned = base64.b64encode(png(phototest(cv2.ROTATE_180))).decode()
    async for client in client_for(task_settings(tmp_path), engine):
        r = await client.post(
            "/ocr/async", json={"image_base64": turned, "callback_url": receiver.url}
        )
        assert r.status_code == 202, r.text
        task_id = r.json()["task_id"]
        done = await wait_for(client, task_id)
        assert done["status"] == "succeeded"
        page = done["result"]["pages"][0]
        assert page["angle"] == 180 and page["text"].split("\n")[:3] == PHOTOTEST_LINES
        await wait_until(lambda: receiver.delivered())
        event = receiver.delivered()[0]["event"]
        assert event["pages"][0]["angle"] == 180
        assert event["pages"][0]["lines"][0]["words"][0]["text"] == "This"

        r = await client.get(f"/task/{task_id}/result", params={"format": "hocr"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/vnd.hocr")
        assert ">This<" in r.text
        r = await client.get(f"/task/{task_id}/result", headers={"Accept": "text/plain"})
        assert r.text.split("\n")[:3] == PHOTOTEST_LINES
        r = await client.get(f"/task/{task_id}/result", headers={"Accept": "application/pdf"})
        assert r.status_code == 406
        r = await client.get("/task/nope/result")
        assert r.status_code == 404
        r = await client.post("/ocr/async", json={"image_base64": turned, "format": "hocr"})
        assert r.status_code == 422


# --- the CLI -----------------------------------------------------------------------------------


def cli(*args: str | Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "ocrserve", *map(str, args)],
        capture_output=True, timeout=300, check=False,
        env={**os.environ, "COLUMNS": "300"},  # rich wraps a usage error at the width
    )  # fmt: skip


def test_cli_writes_hocr_alto_and_a_searchable_pdf(tmp_path: Path) -> None:
    r = cli("ocr", PHOTOTEST, "--format", "hocr")
    assert r.returncode == 0, r.stderr
    assert b'class="ocrx_word"' in r.stdout and b">This<" in r.stdout

    out = tmp_path / "irs.pdf"
    r = cli("ocr", FIXTURES / "irs_f1040nr.pdf", "--max-pages", "1", "-f", "pdf", "-o", out)
    assert r.returncode == 0, r.stderr
    texts = pdf_text_of(out.read_bytes())
    assert len(texts) == 5 and "Nonresident Alien Income Tax Return" in texts[0]

    folder = tmp_path / "alto"
    folder.mkdir()
    r = cli("ocr", PHOTOTEST, FIXTURES / "en_doc_paragraph.jpg", "-f", "alto", "-o", folder)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["en_doc_paragraph.xml", "phototest.xml"]
    assert b'CONTENT="This"' in (folder / "phototest.xml").read_bytes()

    # several documents need a folder
    r = cli("ocr", PHOTOTEST, PHOTOTEST, "-f", "pdf", "-o", tmp_path / "one.pdf")
    assert r.returncode == 2 and b"is not a folder" in r.stderr


def test_cli_takes_the_pdf_text_and_orientation_options(tmp_path: Path) -> None:
    turned = tmp_path / "turned.png"
    turned.write_bytes(png(phototest(cv2.ROTATE_90_CLOCKWISE)))
    r = cli("ocr", turned, "-f", "json")
    assert r.returncode == 0, r.stderr
    page = json.loads(r.stdout)["pages"][0]
    assert page["angle"] == 90 and page["text"].split("\n")[:3] == PHOTOTEST_LINES
    r = cli("ocr", FIXTURES / "irs_f1040nr.pdf", "--max-pages", "1", "--pdf-text", "pdf", "-f",
            "jsonl")  # fmt: skip
    assert json.loads(r.stdout.splitlines()[0])["source"] == "pdf"
    r = cli("ocr", turned, "--orientation", "sideways")
    assert r.returncode == 2 and b"sideways" in r.stderr


def test_cli_json_lines_come_out_as_pages_are_read(tmp_path: Path) -> None:
    # Twelve recognised pages take tens of seconds: the first chunk's lines must be out while
    # the rest are still being read (before, nothing came out until the whole file was read).
    pdf = pdfium.PdfDocument.new()
    source = pdfium.PdfDocument(PDF)
    for _ in range(3):
        pdf.import_pages(source, [0, 1, 2, 3])
    long_pdf = tmp_path / "long.pdf"
    pdf.save(long_pdf)
    pdf.close()
    source.close()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ocrserve", "ocr", long_pdf, "-f", "jsonl", "--pdf-text", "ocr",
         "--no-cls", "--orientation", "off"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        fd, out = proc.stdout.fileno(), b""
        while out.count(b"\n") < 4:  # the first engine call's pages
            more = os.read(fd, 65536)
            assert more, "the CLI exited before writing four pages"
            out += more
        first = [json.loads(line) for line in out.splitlines()]
        assert [p["page"] for p in first] == [1, 2, 3, 4]  # and not a line more yet
        assert proc.poll() is None  # eight pages still to read
    finally:
        proc.kill()
        proc.communicate()


@pytest.mark.parametrize(
    ("turn", "angle"),
    [
        (None, 0),
        (cv2.ROTATE_90_CLOCKWISE, 90),
        (cv2.ROTATE_180, 180),
        (cv2.ROTATE_90_COUNTERCLOCKWISE, 270),
    ],
)
def test_a_page_of_a_short_word_is_turned_by_reading_it(
    engine: Engine, turn: int | None, angle: int
) -> None:
    # "of": a box no longer than it is high gives the classifier no line to vote on (the
    # votes alone left all three turns at 0); the turn is the one that reads best.
    word = np.ascontiguousarray(phototest()[150:195, 30:70])
    image = word if turn is None else np.ascontiguousarray(cv2.rotate(word, turn))
    [result] = engine.run([Page(image)])
    assert result.angle == angle
    assert result.text == "of"
