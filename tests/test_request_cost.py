"""What one request may cost: hostile shapes refused from their headers, long documents read
one page at a time, and the memory both take, measured (peak resident memory, never time).

The files are made here: a 1-pixel strip is a few hundred bytes of PNG, and a page at the
pixel limit a few KB of blank TIFF or PDF.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import io
import struct
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pypdfium2 as pdfium
import pytest
from PIL import Image

from ocrserve import Engine, Page, Settings
from ocrserve.decode import DecodeLimits, decode_bytes
from ocrserve.jobs.store import TaskStore

from .conftest import client_for

pytestmark = pytest.mark.anyio

MB = 2**20
#: 5000 x 8000: a page of exactly the default per-page limit (40 M pixels).
AT_LIMIT = (5000, 8000)
STRIPS = [(w, 1) for w in (20_000, 100_000, 300_000)] + [(1, h) for h in (20_000, 100_000, 300_000)]


# ---------------------------------------------------------------------------- the files


def strip_png(size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("L", size, 255).save(out, "PNG")
    return out.getvalue()


def blank_tiff(size: tuple[int, int], pages: int) -> bytes:
    """A TIFF of blank 1-bit pages whose directories all point at one CCITT G4 strip (made by
    Pillow): every page decodes to a full white page, and the file is a few KB."""
    one = io.BytesIO()
    Image.new("1", size, 1).save(one, "TIFF", compression="group4", strip_size=2**31 - 1)
    with Image.open(one) as img:
        (offset,), (count,) = img.tag_v2[273], img.tag_v2[279]
        photometric = int(img.tag_v2[262])
    strip = one.getvalue()[offset : offset + count]
    strip += b"\x00" * (len(strip) % 2)  # directories start on a word boundary
    width, height = size
    entries = [  # (tag, type: 3 SHORT or 4 LONG, value), in tag order
        (256, 4, width), (257, 4, height), (258, 3, 1), (259, 3, 4), (262, 3, photometric),
        (273, 4, 8), (277, 3, 1), (278, 4, height), (279, 4, count),
    ]  # fmt: skip
    first = 8 + len(strip)
    ifd_size = 2 + 12 * len(entries) + 4
    out = bytearray(b"II*\x00" + struct.pack("<I", first) + strip)
    for n in range(pages):
        out += struct.pack("<H", len(entries))
        for tag, kind, value in entries:
            packed = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
            out += struct.pack("<HHI", tag, kind, 1) + packed
        out += struct.pack("<I", first + ifd_size * (n + 1) if n + 1 < pages else 0)
    return bytes(out)


def blank_pdf(size_pt: tuple[float, float], pages: int) -> bytes:
    pdf = pdfium.PdfDocument.new()
    try:
        for _ in range(pages):
            pdf.new_page(*size_pt).close()
        out = io.BytesIO()
        pdf.save(out)
    finally:
        pdf.close()
    return out.getvalue()


#: At 200 dpi, 1800 x 2880 points render to exactly 5000 x 8000 pixels.
PDF_PAGE_AT_LIMIT = (1800.0, 2880.0)


# ---------------------------------------------------------------------------- measuring


class PeakRSS:
    """Peak resident memory of this process inside a ``with`` block, in MB above its start.

    Linux's high-water mark (VmHWM), reset on entry through ``/proc/self/clear_refs``, sees
    every allocation however short; psutil, sampling each millisecond, is there besides (and
    alone where the kernel refuses the reset).
    """

    def __init__(self) -> None:
        self.growth_mb = 0.0
        self._proc = psutil.Process()
        self._samples: list[int] = []
        self._stop = threading.Event()

    def __enter__(self) -> PeakRSS:
        gc.collect()
        self._start = self._proc.memory_info().rss
        self._hwm = _reset_high_water_mark()
        self._samples = [self._start]
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self._samples.append(self._proc.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        peak = max(self._samples)
        if self._hwm:
            peak = max(peak, _high_water_mark())
        self.growth_mb = (peak - self._start) / MB


def _reset_high_water_mark() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _high_water_mark() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


# ---------------------------------------------------------------------------- the app


def settings(tmp_path: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "data_dir": tmp_path, "lanes": 1, "cache_max_entries": 0, "log_json": False,
    }  # fmt: skip
    return Settings(**(base | overrides))


@pytest.fixture
async def client(engine: Engine, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async for c in client_for(settings(tmp_path), engine):
        yield c


async def finished(client: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        task: dict[str, Any] = (await client.get(f"/task/{task_id}")).json()
        if task["status"] not in ("queued", "running"):
            return task
        await asyncio.sleep(0.05)
    raise AssertionError(f"task {task_id} did not finish")


def assert_413(r: httpx.Response, code: str) -> dict[str, Any]:
    assert r.status_code == 413, r.text
    error: dict[str, Any] = r.json()["error"]
    assert error["code"] == code, error
    assert error["value"] > error["limit"]  # the figures: what came, and the limit
    return error


# ---------------------------------------------------------------------------- strips


@pytest.mark.parametrize("size", STRIPS, ids=lambda s: f"{s[0]}x{s[1]}")
async def test_a_one_pixel_strip_is_413_from_its_header(
    client: httpx.AsyncClient, size: tuple[int, int]
) -> None:
    data = strip_png(size)
    assert len(data) < 1000
    with PeakRSS() as peak:
        r = await client.post("/ocr", files={"image": ("strip.png", data, "image/png")})
    error = assert_413(r, "aspect_ratio_too_large")
    assert (error["limit"], error["value"]) == (100, max(size))
    assert f"{size[0]}x{size[1]}" in error["message"]
    assert peak.growth_mb < 200, peak.growth_mb


@pytest.mark.parametrize("size", [STRIPS[0], STRIPS[2], STRIPS[5]], ids=lambda s: f"{s[0]}x{s[1]}")
async def test_a_one_pixel_strip_sent_async_fails_at_once_with_the_same_code(
    engine: Engine, tmp_path: Path, size: tuple[int, int]
) -> None:
    body = {"image_base64": base64.b64encode(strip_png(size)).decode()}
    async for client in client_for(settings(tmp_path), engine):
        with PeakRSS() as peak:
            r = await client.post("/ocr/async", json=body)
            if r.status_code == 413:  # refused at submit, from the same header check
                assert_413(r, "aspect_ratio_too_large")
                return
            assert r.status_code == 202, r.text
            task = await finished(client, r.json()["task_id"])
        assert task["status"] == "failed", task
        assert task["error"]["code"] == "aspect_ratio_too_large", task
        assert peak.growth_mb < 200, peak.growth_mb
    store = TaskStore(f"sqlite:///{tmp_path / 'tasks.db'}")
    try:
        row = store.get(task["task_id"])
        assert row is not None and row.runs == 1  # failed on its first run: never retried
    finally:
        store.close()


def test_the_detector_never_pads_a_strip_at_its_own_resolution(engine: Engine) -> None:
    # Past decoding (the Python API takes any array): the detector pads a flat page to a
    # taller canvas, which at a 1 x 300,000 strip's own resolution would be 67 GB. Scaled
    # first, a strip is a 608 x 2400 input, as a 600 x 2400 page is, and costs what it costs.
    page = Page(np.full((600, 2400, 3), 255, np.uint8))
    engine.run([page])
    with PeakRSS() as normal:
        engine.run([page])
    for width in (20_000, 300_000):
        strip = Page(np.full((1, width, 3), 255, np.uint8))
        with PeakRSS() as peak:
            [result] = engine.run([strip])
        assert (result.width, result.height, result.lines) == (width, 1, ())
        assert peak.growth_mb < normal.growth_mb + 50, (width, normal.growth_mb, peak.growth_mb)


# ---------------------------------------------------------------------------- long documents


async def test_a_30_page_tiff_at_the_pixel_limit_is_413_before_any_page_is_decoded(
    client: httpx.AsyncClient,
) -> None:
    # 30 x 40 M = 1.2 G pixels, over the default 500 M a request may read.
    data = blank_tiff(AT_LIMIT, 30)
    assert len(data) < 10_000
    with PeakRSS() as peak:
        r = await client.post("/ocr", files={"image": ("scan.tif", data, "image/tiff")})
    error = assert_413(r, "pixel_budget_exceeded")
    assert (error["limit"], error["value"]) == (500_000_000, 30 * 40_000_000)
    assert "30 pages" in error["message"]
    assert peak.growth_mb < 200, peak.growth_mb


async def test_a_batch_is_one_request_for_the_pixel_budget(client: httpx.AsyncClient) -> None:
    # Each file is under the budget alone (10 pages at the limit: 400 M); together, 800 M.
    data = blank_tiff(AT_LIMIT, 10)
    files = [("images", (f"scan{n}.tif", data, "image/tiff")) for n in range(2)]
    r = await client.post("/ocr/batch", files=files)
    assert_413(r, "pixel_budget_exceeded")


def test_a_long_document_is_read_one_page_at_a_time() -> None:
    # Decoding reads headers; each page is rendered when read, and let go after.
    data = blank_pdf(PDF_PAGE_AT_LIMIT, 10)
    with PeakRSS() as decoding:
        doc = decode_bytes(data, DecodeLimits())
    assert [(p.width, p.height) for p in doc.pages] == [AT_LIMIT] * 10
    assert decoding.growth_mb < 50, decoding.growth_mb
    with PeakRSS() as one:
        assert doc.pages[0].image.shape == (8000, 5000, 3)
    with PeakRSS() as ten:
        for page in doc.pages:
            assert page.image.shape == (8000, 5000, 3)
    # One page is 114 MB as BGR; all ten held at once would be 1.1 GB.
    assert ten.growth_mb < one.growth_mb + 60, (one.growth_mb, ten.growth_mb)


@pytest.mark.slow
async def test_a_10_page_pdf_at_the_pixel_limit_is_read_with_the_memory_of_one_page(
    client: httpx.AsyncClient,
) -> None:
    # 10 x 40 M = 400 M pixels: within the request budget, so it is read, one page at a time.
    one, ten = blank_pdf(PDF_PAGE_AT_LIMIT, 1), blank_pdf(PDF_PAGE_AT_LIMIT, 10)
    r = await client.post("/ocr", files={"image": ("warm.pdf", one, "application/pdf")})
    assert r.status_code == 200, r.text  # the detector's buffers at this size, once
    with PeakRSS() as one_page:
        r = await client.post("/ocr", files={"image": ("one.pdf", one, "application/pdf")})
    assert r.status_code == 200, r.text
    with PeakRSS() as ten_pages:
        r = await client.post("/ocr", files={"image": ("ten.pdf", ten, "application/pdf")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["page_count"], body["pages_total"], body["truncated"]) == (10, 10, False)
    assert {(p["width"], p["height"]) for p in body["pages"]} == {AT_LIMIT}
    # Ten pages held at once would add ~1 GB (114 MB each as BGR) to one page's peak.
    assert ten_pages.growth_mb < one_page.growth_mb + 150, (one_page.growth_mb, ten_pages.growth_mb)
    assert ten_pages.growth_mb < 800, ten_pages.growth_mb
