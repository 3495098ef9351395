"""The HTTP API in-process, through httpx.ASGITransport, with the app's real lifespan."""

from __future__ import annotations

import asyncio
import base64
import io
import tempfile
import threading
import zlib
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from PIL import Image

from ocrserve import Engine, OCROptions, Page, PageResult, Settings

from .conftest import FIXTURES, client_for, free_port

pytestmark = pytest.mark.anyio

PHOTOTEST = (FIXTURES / "phototest.tif").read_bytes()
PARAGRAPH = (FIXTURES / "en_doc_paragraph.jpg").read_bytes()
LONG_LINE = (FIXTURES / "en_line_long_text.jpg").read_bytes()
PDF = (FIXTURES / "irs_f1040nr.pdf").read_bytes()


#: Task database and webhook secret of these apps: never the user's own data folder.
DATA_DIR = Path(tempfile.mkdtemp(prefix="ocrserve-test-api-"))


def settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "lanes": 2, "cache_max_entries": 64, "log_json": False, "data_dir": DATA_DIR,
    }  # fmt: skip
    return Settings(**(base | overrides))


@pytest.fixture
async def client(engine: Engine) -> AsyncIterator[httpx.AsyncClient]:
    async for c in client_for(settings(), engine):
        yield c


def png_of(path: Path) -> bytes:
    out = io.BytesIO()
    Image.open(path).convert("RGB").save(out, "PNG")
    return out.getvalue()


def assert_error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert body["error"]["message"]
    return body["error"]


# --- /ocr ------------------------------------------------------------------------------------


async def test_ocr_returns_text_pages_lines_and_boxes(client: httpx.AsyncClient) -> None:
    r = await client.post("/ocr", files={"image": ("paragraph.jpg", PARAGRAPH, "image/jpeg")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {
        "text", "avg_confidence", "pages", "page_count", "pages_total", "truncated", "model",
        "timings",
    }  # fmt: skip
    assert body["text"].endswith("of this dataset are specified as follows.")
    assert body["page_count"] == body["pages_total"] == 1 and body["truncated"] is False
    page = body["pages"][0]
    assert (page["page"], page["width"], page["height"]) == (1, 709, 132)
    assert all(len(line["box"]) == 4 and 0.5 <= line["confidence"] <= 1 for line in page["lines"])
    assert 0.5 < body["avg_confidence"] <= 1
    assert "PP-OCRv6_rec_small" in body["model"]


async def test_the_result_cache_answers_the_same_bytes_and_options(
    client: httpx.AsyncClient,
) -> None:
    first = await client.post("/ocr", files={"image": ("a.jpg", LONG_LINE)})
    again = await client.post("/ocr", files={"image": ("b.jpg", LONG_LINE)})
    other = await client.post("/ocr", files={"image": ("a.jpg", LONG_LINE)}, data={"cls": "false"})
    assert (first.headers["x-cache"], again.headers["x-cache"]) == ("miss", "hit")
    assert other.headers["x-cache"] == "miss"  # other options, other entry
    assert (
        again.json()["text"]
        == first.json()["text"]
        == "采用高端宝石制作镜片，更有效保护眼睛，避免辐射"
    )


async def test_the_file_field_json_base64_and_v1_paths(client: httpx.AsyncClient) -> None:
    a = await client.post("/v1/ocr", files={"file": ("x.jpg", LONG_LINE)})
    b = await client.post("/ocr", json={"image_base64": base64.b64encode(LONG_LINE).decode()})
    assert a.status_code == b.status_code == 200
    assert a.json()["text"] == b.json()["text"]
    bad = await client.post("/ocr", json={"image_base64": "@@not base64@@"})
    assert_error(bad, 422, "invalid_input")
    empty = await client.post("/ocr", json={"lang": "en"})
    assert "image_base64 or image_url" in assert_error(empty, 422, "invalid_input")["message"]


async def test_request_ids_are_echoed_or_made(client: httpx.AsyncClient) -> None:
    r = await client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    made = (await client.get("/health")).headers["x-request-id"]
    assert len(made) == 32


# --- guard rails -----------------------------------------------------------------------------


async def test_bad_input_is_a_4xx_with_a_code_never_a_500(client: httpx.AsyncClient) -> None:
    r = await client.post("/ocr", files={"image": ("notes.txt", b"just some text\n")})
    assert_error(r, 415, "unsupported_format")
    r = await client.post(
        "/ocr", files={"image": ("x.png", PARAGRAPH[:0] + b"\x89PNG\r\n\x1a\n" + b"x" * 50)}
    )
    assert_error(r, 422, "corrupt_file")
    r = await client.post("/ocr", files={"image": ("cut.jpg", PARAGRAPH[: len(PARAGRAPH) // 2])})
    assert_error(r, 422, "corrupt_file")
    r = await client.post("/ocr", files={"nothing": ("x.jpg", LONG_LINE)})
    assert "'image'" in assert_error(r, 422, "invalid_input")["message"]
    r = await client.post("/ocr", content=b"raw", headers={"content-type": "image/jpeg"})
    assert_error(r, 415, "unsupported_media_type")
    r = await client.get("/nowhere")
    assert_error(r, 404, "not_found")


async def test_bad_options_are_422(client: httpx.AsyncClient) -> None:
    f = {"image": ("x.jpg", LONG_LINE)}
    err = assert_error(
        await client.post("/ocr", files=f, data={"lang": "klingon"}), 422, "language_not_installed"
    )
    assert "chinese_cht" in err["message"] and err["option"] == "lang"
    assert_error(
        await client.post("/ocr", files=f, data={"precision": "fp8"}), 422, "invalid_option"
    )
    assert_error(await client.post("/ocr", files=f, data={"cls": "maybe"}), 422, "invalid_option")
    assert_error(await client.post("/ocr", files=f, data={"max_pages": "0"}), 422, "invalid_option")
    assert_error(await client.post("/ocr?max_pages=x", files=f), 422, "invalid_option")
    ok = await client.post("/ocr?lang=en&cls=false", files=f)
    assert ok.status_code == 200


async def test_limits(engine: Engine) -> None:
    s = settings(max_file_bytes=200_000, max_pixels=2_000_000, max_request_bytes=400_000)
    async for client in client_for(s, engine):
        r = await client.post("/ocr", files={"image": ("p.tif", PHOTOTEST + b"\0" * 200_000)})
        err = assert_error(r, 413, "file_too_large")
        assert err["limit"] == 200_000 and err["value"] > 200_000
        r = await client.post("/ocr", files={"image": ("big.bin", b"\0" * 500_000)})
        assert_error(r, 413, "file_too_large")  # refused on Content-Length, before parsing
        bomb = bomb_png(12_000, 12_000)
        err = assert_error(
            await client.post("/ocr", files={"image": ("b.png", bomb)}), 413, "too_many_pixels"
        )
        assert err["value"] == 144_000_000
        r = await client.post("/ocr", files={"image": ("f.pdf", PDF)}, data={"max_pages": "2"})
        assert_error(r, 413, "file_too_large")  # the 655 kB PDF is over 200 kB


async def test_a_long_pdf_is_read_up_to_the_page_limit_and_says_so(engine: Engine) -> None:
    async for client in client_for(settings(max_pages=2), engine):
        r = await client.post("/ocr", files={"image": ("f1040nr.pdf", PDF)})
        body = r.json()
        assert (body["page_count"], body["pages_total"], body["truncated"]) == (2, 5, True)
        assert "Nonresident Alien Income Tax Return" in body["pages"][0]["text"]


def bomb_png(width: int, height: int) -> bytes:
    """A real PNG of width x height grey pixels that compresses to a few kilobytes."""
    import struct

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    raw = zlib.compress(b"\0" * ((width + 1) * height), 9)
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


async def test_api_keys_when_configured(engine: Engine) -> None:
    async for client in client_for(settings(api_keys=("k1", "k2")), engine):
        f = {"image": ("x.jpg", LONG_LINE)}
        r = await client.post("/ocr", files=f)
        assert_error(r, 401, "unauthorized")
        assert r.headers["www-authenticate"] == "Bearer"
        assert_error(
            await client.post("/ocr", files=f, headers={"X-API-Key": "nope"}), 401, "unauthorized"
        )
        assert (
            await client.post("/ocr", files=f, headers={"Authorization": "Bearer k2"})
        ).status_code == 200
        assert (await client.post("/ocr", files=f, headers={"X-API-Key": "k1"})).status_code == 200
        assert (await client.get("/health")).status_code == 200  # probes need no key


async def test_rate_limit_per_key(engine: Engine) -> None:
    s = settings(api_keys=("a", "b"), rate_limit_rps=0.5, rate_limit_burst=2)
    async for client in client_for(s, engine):
        f = {"image": ("x.jpg", LONG_LINE)}
        codes = [
            (await client.post("/ocr", files=f, headers={"X-API-Key": "a"})).status_code
            for _ in range(2)
        ]
        assert codes == [200, 200]
        r = await client.post("/ocr", files=f, headers={"X-API-Key": "a"})
        assert_error(r, 429, "rate_limited")
        assert 1 <= int(r.headers["retry-after"]) <= 2
        other = await client.post("/ocr", files=f, headers={"X-API-Key": "b"})
        assert other.status_code == 200  # each key has its own bucket
        metrics = (await client.get("/metrics")).text
        assert 'ocrserve_rejections_total{reason="rate_limited"} 1.0' in metrics


async def test_a_full_queue_is_503_with_retry_after(engine: Engine) -> None:
    s = settings(lanes=1, max_batch_size=1, queue_max_pages=2, cache_max_entries=0)
    async for client in client_for(s, engine):
        first = asyncio.create_task(
            client.post("/ocr", files={"image": ("f.pdf", PDF)}, data={"pdf_text": "ocr"})
        )
        for _ in range(500):  # until the PDF's pages are queued behind the busy lane
            await asyncio.sleep(0.02)
            if await queued_pages(client) >= 2:
                break
        r = await client.post("/ocr", files={"image": ("x.jpg", LONG_LINE)})
        assert_error(r, 503, "queue_full")
        assert int(r.headers["retry-after"]) >= 1
        assert (await first).status_code == 200  # what was accepted still finishes


async def test_past_the_deadline_504(engine: Engine) -> None:
    s = settings(lanes=1, max_batch_size=1, request_timeout_s=0.05, cache_max_entries=0)
    async for client in client_for(s, engine):
        r = await client.post("/ocr", files={"image": ("f.pdf", PDF)}, data={"pdf_text": "ocr"})
        assert_error(r, 504, "deadline_exceeded")
        metrics = (await client.get("/metrics")).text
        assert 'ocrserve_rejections_total{reason="deadline"} 1.0' in metrics


# --- image_url -------------------------------------------------------------------------------


async def test_image_url_refuses_private_addresses_by_default(
    client: httpx.AsyncClient, file_server: str
) -> None:
    for url in (f"{file_server}/en_line_long_text.jpg", "http://169.254.169.254/latest/meta-data",
                "http://10.0.0.1/x.png", "http://[::1]/x.png", "file:///etc/passwd"):  # fmt: skip
        r = await client.post("/ocr", json={"image_url": url})
        assert_error(r, 422, "url_not_allowed")


async def test_image_url_when_private_addresses_are_allowed(
    engine: Engine, file_server: str
) -> None:
    async for client in client_for(
        settings(allow_private_urls=True, max_file_bytes=100_000), engine
    ):
        r = await client.post("/ocr", json={"image_url": f"{file_server}/en_line_long_text.jpg"})
        assert r.status_code == 200 and r.json()["text"].startswith("采用高端宝石")
        r = await client.post("/ocr", json={"image_url": f"{file_server}/missing.jpg"})
        assert_error(r, 422, "url_fetch_failed")
        r = await client.post("/ocr", json={"image_url": f"{file_server}/irs_f1040nr.pdf"})
        assert_error(r, 413, "file_too_large")


# --- /ocr/batch ------------------------------------------------------------------------------


async def test_batch_of_mixed_files_in_input_order_one_bad_file_fails_alone(
    client: httpx.AsyncClient,
) -> None:
    files = [
        ("images", ("paragraph.jpg", PARAGRAPH, "image/jpeg")),
        ("images", ("broken.png", b"\x89PNG\r\n\x1a\nnot really", "image/png")),
        ("images", ("phototest.png", png_of(FIXTURES / "phototest.tif"), "image/png")),
        ("images", ("form.pdf", PDF, "application/pdf")),
        ("images", ("phototest.tif", PHOTOTEST, "image/tiff")),
    ]
    r = await client.post("/ocr/batch", files=files, data={"max_pages": "2"}, timeout=120)
    assert r.status_code == 200, r.text
    items = r.json()
    assert [i["filename"] for i in items] == [f[1][0] for f in files]
    assert items[0]["text"].endswith("specified as follows.")
    assert items[1]["error"]["code"] == "corrupt_file" and "text" not in items[1]
    assert "quick brown dog" in items[2]["text"]
    assert (items[3]["page_count"], items[3]["pages_total"], items[3]["truncated"]) == (2, 5, True)
    assert [p["page"] for p in items[3]["pages"]] == [1, 2]
    assert items[4]["text"] == items[2]["text"]


async def test_batch_needs_files(client: httpx.AsyncClient) -> None:
    r = await client.post("/ocr/batch", data={"lang": "en"}, files={"other": ("x", b"x")})
    assert_error(r, 422, "invalid_input")
    r = await client.post("/ocr/batch", json={"images": []})
    assert_error(r, 415, "unsupported_media_type")


class Faulty:
    """The real engine with two seams: calls wait at ``gate`` (open unless ``gated``), and a
    page of the ``poison`` shape makes its call raise. Records the page heights of each call."""

    def __init__(
        self, engine: Engine, *, gated: bool = False, poison: tuple[int, ...] | None = None
    ) -> None:
        self.engine = engine
        self.poison = poison
        self.gate = threading.Event()
        if not gated:
            self.gate.set()
        self.entered = threading.Event()
        self.calls: list[list[int]] = []

    def run(self, pages: Sequence[Page], options: OCROptions | None = None) -> list[PageResult]:
        self.calls.append([p.height for p in pages])
        self.entered.set()
        if not self.gate.wait(60):
            raise AssertionError("the test never opened the gate")
        if any(p.image.shape == self.poison for p in pages):
            raise RuntimeError("poison page")
        return self.engine.run(pages, options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)


async def queued_pages(client: httpx.AsyncClient) -> int:
    pages: int = (await client.get("/ready")).json()["queued_pages"]
    return pages


async def test_a_batch_that_does_not_fit_the_queue_is_503_with_nothing_queued(
    engine: Engine,
) -> None:
    faulty = Faulty(engine, gated=True)
    s = settings(lanes=1, max_batch_size=1, queue_max_pages=3, cache_max_entries=0)
    async for client in client_for(s, faulty):  # type: ignore[arg-type]
        try:
            # Two files admitted together: the lane holds the first at the gate, the second
            # waits in the queue.
            first = asyncio.create_task(
                client.post(
                    "/ocr/batch",
                    files=[
                        ("images", ("line.jpg", LONG_LINE, "image/jpeg")),
                        ("images", ("paragraph.jpg", PARAGRAPH, "image/jpeg")),
                    ],
                )
            )
            assert await asyncio.to_thread(faulty.entered.wait, 60)
            assert await queued_pages(client) == 1
            # Room for two more pages: each file would fit alone, the three together do not.
            files = [
                ("images", ("phototest.tif", PHOTOTEST, "image/tiff")),
                ("images", ("line.jpg", LONG_LINE, "image/jpeg")),
                ("images", ("paragraph.jpg", PARAGRAPH, "image/jpeg")),
            ]
            r = await client.post("/ocr/batch", files=files)
            assert_error(r, 503, "queue_full")
            assert int(r.headers["retry-after"]) >= 1
            assert await queued_pages(client) == 1
        finally:
            faulty.gate.set()
        r = await first
        assert r.status_code == 200 and all("text" in item for item in r.json())
        assert faulty.calls == [[34], [132]]  # the first batch's pages; none of the second's
        metrics = (await client.get("/metrics")).text
        assert 'ocrserve_rejections_total{reason="queue_full"} 1.0' in metrics


async def test_an_engine_failure_on_one_batch_file_fails_that_file_alone(engine: Engine) -> None:
    certificate = (FIXTURES / "zh_doc_certificate.jpeg").read_bytes()
    faulty = Faulty(engine, poison=next(_pages(certificate)).image.shape)
    # The lane waits for three pages, and the batch brings them in one admission: the three
    # files share the engine call that the certificate breaks.
    # PP-OCR alone (no second engine to fall back on): the batcher's own isolation.
    s = settings(
        lanes=1, max_batch_size=3, max_wait_ms=30_000, cache_max_entries=0, second_engine="off"
    )
    async for client in client_for(s, faulty):  # type: ignore[arg-type]
        files = [
            ("images", ("paragraph.jpg", PARAGRAPH, "image/jpeg")),
            ("images", ("certificate.jpeg", certificate, "image/jpeg")),
            ("images", ("line.jpg", LONG_LINE, "image/jpeg")),
        ]
        r = await client.post("/ocr/batch", files=files, timeout=120)
        assert r.status_code == 200, r.text
        items = r.json()
        assert [i["filename"] for i in items] == [f[1][0] for f in files]
        assert items[0]["text"].endswith("specified as follows.")
        assert items[1]["error"]["code"] == "engine_error" and "text" not in items[1]
        assert "poison" not in items[1]["error"]["message"]  # internals stay in the log
        assert items[2]["text"].startswith("采用高端宝石")
        assert faulty.calls == [[132, 368, 34], [132], [368], [34]]


async def test_with_the_second_engine_the_file_ppocr_fails_on_is_read_by_tesseract(
    engine: Engine,
) -> None:
    faulty = Faulty(engine, poison=next(_pages(PARAGRAPH)).image.shape)
    s = settings(lanes=1, max_batch_size=2, max_wait_ms=30_000, cache_max_entries=0)
    async for client in client_for(s, faulty):  # type: ignore[arg-type]
        files = [
            ("images", ("paragraph.jpg", PARAGRAPH, "image/jpeg")),
            ("images", ("phototest.tif", PHOTOTEST, "image/tiff")),
        ]
        r = await client.post("/ocr/batch", files=files, data={"lang": "en"}, timeout=120)
        assert r.status_code == 200, r.text
        read, photo = r.json()
        assert [p["engine"] for p in read["pages"]] == ["tesseract"]
        assert read["pages"][0]["model"].startswith("tesseract-")
        assert read["text"].endswith("specified as follows."), read["text"]
        assert [p["engine"] for p in photo["pages"]] == ["ppocr"]  # its sibling is not moved
        metrics = (await client.get("/metrics")).text
        assert 'ocrserve_fallback_pages_total{reason="engine_error"} 1.0' in metrics


async def test_past_the_deadline_a_batch_is_200_with_a_deadline_error_per_file(
    engine: Engine,
) -> None:
    faulty = Faulty(engine, gated=True)  # no engine call ends before the deadline
    s = settings(lanes=1, max_batch_size=1, request_timeout_s=0.05, cache_max_entries=0)
    async for client in client_for(s, faulty):  # type: ignore[arg-type]
        files = [
            ("images", ("broken.png", b"\x89PNG\r\n\x1a\nnot really", "image/png")),
            ("images", ("phototest.tif", PHOTOTEST, "image/tiff")),
            ("images", ("form.pdf", PDF, "application/pdf")),
        ]
        try:
            r = await client.post("/ocr/batch", files=files, data={"max_pages": "2"})
        finally:
            faulty.gate.set()
        assert r.status_code == 200, r.text
        codes = [i["error"]["code"] for i in r.json()]
        assert codes == ["corrupt_file", "deadline_exceeded", "deadline_exceeded"]
        metrics = (await client.get("/metrics")).text
        assert 'ocrserve_rejections_total{reason="deadline"} 2.0' in metrics


# --- concurrency, probes, metrics ------------------------------------------------------------


@pytest.mark.slow
async def test_twenty_concurrent_requests_each_get_their_own_result(
    engine: Engine,
) -> None:
    names = [
        "phototest.tif",
        "en_doc_paragraph.jpg",
        "en_line_long_text.jpg",
        "zh_doc_certificate.jpeg",
        "zh_scene_poster_ch_en_num.jpg",
    ]
    blobs = [(FIXTURES / n).read_bytes() for n in names]
    expected = {n: engine.run(list(_pages(b)))[0].text for n, b in zip(names, blobs, strict=True)}
    async for client in client_for(settings(cache_max_entries=0, max_wait_ms=50), engine):
        order = [names[i % len(names)] for i in range(20)]
        rs = await asyncio.gather(
            *(
                client.post("/ocr", files={"image": (n, blobs[names.index(n)])}, timeout=120)
                for n in order
            )
        )
        assert [r.json()["text"] for r in rs] == [expected[n] for n in order]
        metrics = (await client.get("/metrics")).text
        assert "ocrserve_pages_total 20.0" in metrics
        # some engine calls carried pages of several requests
        assert 'ocrserve_batch_pages_bucket{le="1.0"} 20.0' not in metrics


def _pages(data: bytes) -> Iterator[Any]:
    from ocrserve import decode_bytes

    yield from decode_bytes(data).pages


async def test_health_ready_and_metrics(client: httpx.AsyncClient) -> None:
    health = (await client.get("/health")).json()
    assert health["status"] == "ok" and "PP-OCRv6" in health["model"]
    assert health["providers"] == ["CPUExecutionProvider"]
    ready = await client.get("/v1/ready")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    await client.post("/ocr", files={"image": ("x.jpg", LONG_LINE)})
    metrics = await client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    for name in (
        "ocrserve_requests_total", "ocrserve_request_seconds_bucket", "ocrserve_pages_total",
        "ocrserve_batch_pages_bucket", "ocrserve_queue_pages", "ocrserve_inference_seconds",
        "ocrserve_cache_total",
    ):  # fmt: skip
        assert name in metrics.text
    assert 'ocrserve_requests_total{route="/ocr",status="200"}' in metrics.text


async def test_openapi_docs(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert {"/ocr", "/ocr/batch", "/health", "/ready", "/v1/ocr"} <= set(spec["paths"])
    assert (await client.get("/docs")).status_code == 200


# --- Redis cache -----------------------------------------------------------------------------

REDIS_URL = "redis://127.0.0.1:6379/15"


async def test_the_redis_cache_is_shared_by_server_processes(engine: Engine) -> None:
    redis.Redis.from_url(REDIS_URL).flushdb()
    s = settings(redis_url=REDIS_URL)
    async for first in client_for(s, engine):
        a = await first.post("/ocr", files={"image": ("x.jpg", LONG_LINE)})
        assert a.headers["x-cache"] == "miss"
        ready = (await first.get("/ready")).json()
        assert ready["checks"] == {"engine": True, "accepting": True}
        assert ready["optional"] == {"redis": True}
    async for second in client_for(s, engine):  # another app instance: a second process's view
        b = await second.post("/ocr", files={"image": ("y.jpg", LONG_LINE)})
        assert b.headers["x-cache"] == "hit" and b.json() == a.json()
    keys = redis.Redis.from_url(REDIS_URL).keys("ocrserve:result:*")
    assert len(keys) == 1 and redis.Redis.from_url(REDIS_URL).ttl(keys[0]) > 0


async def test_a_redis_outage_keeps_the_server_ready_and_serving(engine: Engine) -> None:
    """The cache is optional: with its Redis down, /ready stays 200 and says so, /ocr serves."""
    down = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there: a stopped Redis
    async for client in client_for(settings(redis_url=down), engine):
        ready = await client.get("/ready")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"engine": True, "accepting": True}
        assert ready.json()["optional"] == {"redis": False}
        r = await client.post("/ocr", files={"image": ("x.jpg", LONG_LINE)})
        assert r.status_code == 200 and r.headers["x-cache"] == "miss"
        assert "ocrserve_cache_up 0.0" in (await client.get("/metrics")).text
