"""One request parser: the same malformed request gets the same answer on /ocr, /ocr/batch and
/ocr/async (in-process app, real engine)."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ocrserve import Engine, Settings

from .conftest import FIXTURES, SECRET, client_for

pytestmark = pytest.mark.anyio

LONG_LINE = (FIXTURES / "en_line_long_text.jpg").read_bytes()
B64 = base64.b64encode(LONG_LINE).decode()
RANDOM = os.urandom(100_000)  # no format we read: 415 at once, on every route


@pytest.fixture
async def client(engine: Engine, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        data_dir=tmp_path, lanes=1, log_json=False, webhook_secret=SECRET, max_batch_files=4
    )
    async for c in client_for(settings, engine):
        yield c


def error_of(r: httpx.Response) -> tuple[int, str]:
    assert r.headers["content-type"] == "application/json", r.text
    return r.status_code, r.json()["error"]["code"]


SINGLE = ("/ocr", "/ocr/async")
ALL = ("/ocr", "/ocr/async", "/ocr/batch")


async def post(client: httpx.AsyncClient, route: str, **kwargs: Any) -> httpx.Response:
    """Send ``files=[(field, data)]`` under the field each route reads its document from."""
    if "files" in kwargs and route == "/ocr/batch":
        kwargs["files"] = [("images" if f == "image" else f, v) for f, v in kwargs["files"]]
    return await client.post(route, **kwargs)


@pytest.mark.parametrize("route", ALL)
async def test_query_options_are_read_and_checked_on_every_route(
    client: httpx.AsyncClient, route: str
) -> None:
    r = await post(client, route, files=[("image", ("l.jpg", LONG_LINE))], params={"max_pages": -5})
    assert error_of(r) == (422, "invalid_option")
    r = await post(client, route, files=[("image", ("l.jpg", LONG_LINE))], params={"cls": "maybe"})
    assert error_of(r) == (422, "invalid_option")


@pytest.mark.parametrize("route", SINGLE)
@pytest.mark.parametrize(
    "body",
    [
        {"image_base64": B64, "image_url": "https://example.com/a.png"},  # two documents
        {"image_base64": B64, "max_pages": True},  # a boolean is no page count
        {"image_base64": B64, "cls": "yes please"},
        {"image_base64": B64, "max_page": 2},  # a typo is refused, not ignored
        {"image_base64": "!!"},
        {},
    ],
)
async def test_the_same_bad_json_is_the_same_422(
    client: httpx.AsyncClient, route: str, body: dict[str, Any]
) -> None:
    assert error_of(await client.post(route, json=body))[0] == 422


@pytest.mark.parametrize("route", SINGLE)
async def test_a_second_document_part_is_refused_not_ignored(
    client: httpx.AsyncClient, route: str
) -> None:
    files = [("image", ("a.jpg", LONG_LINE)), ("image", ("b.jpg", LONG_LINE))]
    r = await client.post(route, files=files)
    assert error_of(r) == (422, "invalid_input") and "exactly one" in r.json()["error"]["message"]


@pytest.mark.parametrize("route", SINGLE)
async def test_bytes_of_no_known_format_are_415_at_once_even_for_a_task(
    client: httpx.AsyncClient, route: str
) -> None:
    r = await client.post(route, files={"image": ("x.bin", RANDOM)})
    assert error_of(r) == (415, "unsupported_format")
    r = await client.post(route, json={"image_base64": base64.b64encode(RANDOM).decode()})
    assert error_of(r) == (415, "unsupported_format")


async def test_a_batch_over_the_file_limit_is_413_whatever_the_count(
    client: httpx.AsyncClient,
) -> None:
    for n in (5, 60):  # the limit is 4 here; Starlette's own limit used to answer a bare 400
        r = await client.post("/ocr/batch", files=[("images", ("l.jpg", LONG_LINE))] * n)
        assert error_of(r) == (413, "too_many_files")
        assert r.json()["error"]["limit"] == 4


@pytest.mark.parametrize("route", ALL)
async def test_a_body_of_another_type_is_415(client: httpx.AsyncClient, route: str) -> None:
    r = await client.post(route, content=LONG_LINE, headers={"content-type": "image/jpeg"})
    assert error_of(r) == (415, "unsupported_media_type")


@pytest.mark.parametrize("route", ("/ocr", "/ocr/batch"))
async def test_task_fields_belong_to_the_async_route(client: httpx.AsyncClient, route: str) -> None:
    r = await post(
        client, route, files=[("image", ("l.jpg", LONG_LINE))], data={"metadata": '{"a": 1}'}
    )
    assert error_of(r) == (422, "invalid_input") and "/ocr/async" in r.json()["error"]["message"]
    if route == "/ocr":
        r = await client.post(route, json={"image_base64": B64, "callback_url": "https://x/y"})
        assert error_of(r) == (422, "invalid_input")


async def test_json_options_and_query_options_read_alike(client: httpx.AsyncClient) -> None:
    a = await client.post("/ocr", json={"image_base64": B64, "lang": "en", "cls": False})
    b = await client.post("/ocr", json={"image_base64": B64}, params={"lang": "en", "cls": "0"})
    assert a.status_code == b.status_code == 200
    assert a.json()["text"] == b.json()["text"]
