"""PaddleX's and RapidOCR's clients against ocrserve, unchanged but for the host (api/compat.py).

The requests are those the projects' own clients send: each body is made by ``requests``
itself, from the calls in PaddleX's serving guide and in RapidOCR API's ``demo.py``, and sent
in-process. The only network is the loopback file server of the URL tests.
"""

from __future__ import annotations

import base64
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests

from ocrserve import Engine, Settings

from .conftest import FIXTURES, client_for

pytestmark = pytest.mark.anyio

PARAGRAPH = FIXTURES / "en_doc_paragraph.jpg"  # 709x132
POSTER = FIXTURES / "zh_scene_poster_ch_en_num.jpg"  # 323x430: RapidOCR's own demo image
PDF = FIXTURES / "irs_f1040nr.pdf"  # 5 pages, the 4th landscape

PADDLEX = "/compat/paddlex/ocr"
RAPIDOCR = "/compat/rapidocr/ocr"

DATA_DIR = Path(tempfile.mkdtemp(prefix="ocrserve-test-compat-"))


def settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {"lanes": 2, "log_json": False, "data_dir": DATA_DIR}
    return Settings(**(base | overrides))


@pytest.fixture
async def client(engine: Engine) -> AsyncIterator[httpx.AsyncClient]:
    async for c in client_for(settings(), engine):
        yield c


def sent_by_requests(**kwargs: Any) -> dict[str, Any]:
    """What ``requests.post(url, **kwargs)`` puts on the wire, its body and Content-Type, as
    arguments of an httpx call that sends the same bytes."""
    prepared = requests.Request("POST", "http://ocr.test/ocr", **kwargs).prepare()
    body = prepared.body.encode() if isinstance(prepared.body, str) else prepared.body
    return {"content": body, "headers": {"Content-Type": prepared.headers["Content-Type"]}}


def paddlex_payload(path: Path, file_type: int | None) -> dict[str, Any]:
    """PaddleX's Python client: the file as ASCII Base64, and its type."""
    with open(path, "rb") as file:
        file_bytes = file.read()
        file_data = base64.b64encode(file_bytes).decode("ascii")
    return {"file": file_data, "fileType": file_type}


def assert_paddlex_success(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert set(body) == {"logId", "errorCode", "errorMsg", "result"}
    assert (body["errorCode"], body["errorMsg"]) == (0, "Success")
    uuid.UUID(body["logId"])
    result: dict[str, Any] = body["result"]
    assert set(result) == {"ocrResults", "dataInfo"}
    for page in result["ocrResults"]:
        assert set(page) == {"prunedResult", "ocrImage", "docPreprocessingImage", "inputImage"}
        assert page["ocrImage"] is page["docPreprocessingImage"] is page["inputImage"] is None
    return result


def assert_paddlex_error(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"logId", "errorCode", "errorMsg"}, body
    assert body["errorCode"] == status
    uuid.UUID(body["logId"])
    assert isinstance(body["errorMsg"], str) and body["errorMsg"]
    return str(body["errorMsg"])


def assert_ocrserve_error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error"} and r.json()["error"]["code"] == code, r.json()


def assert_pruned_page(pruned: dict[str, Any], width: int, height: int) -> None:
    """The keys and types of a page as PaddleX's OCR pipeline writes them; every box inside
    the page, and each rec_box the bounds of its polygon."""
    assert {
        "model_settings", "text_det_params", "text_type", "text_rec_score_thresh",
        "rec_texts", "rec_scores", "rec_polys", "rec_boxes",
    } <= set(pruned)  # fmt: skip
    assert pruned["text_type"] == "general"
    assert set(pruned["model_settings"]) == {"use_doc_preprocessor", "use_textline_orientation"}
    assert set(pruned["text_det_params"]) == {
        "limit_side_len", "limit_type", "thresh", "max_side_limit", "box_thresh", "unclip_ratio",
    }  # fmt: skip
    n = len(pruned["rec_texts"])
    assert len(pruned["rec_scores"]) == len(pruned["rec_polys"]) == len(pruned["rec_boxes"]) == n
    assert all(isinstance(t, str) and t for t in pruned["rec_texts"])
    assert all(pruned["text_rec_score_thresh"] <= s <= 1 for s in pruned["rec_scores"])
    for poly, box in zip(pruned["rec_polys"], pruned["rec_boxes"], strict=True):
        assert len(poly) == 4
        assert all(isinstance(v, int) for point in poly for v in point)
        assert all(0 <= x <= width and 0 <= y <= height for x, y in poly)
        xs, ys = [x for x, _ in poly], [y for _, y in poly]
        assert box == [min(xs), min(ys), max(xs), max(ys)]


# --- PaddleX -----------------------------------------------------------------------------------


async def test_paddlex_client_image_base64(client: httpx.AsyncClient) -> None:
    """PaddleX's serving guide's client, ``requests.post(API_URL, json=payload)``, at /ocr
    and at its own path: the same answer, in PaddleX's envelope."""
    sent = sent_by_requests(json=paddlex_payload(PARAGRAPH, 1))
    answers = [assert_paddlex_success(await client.post(p, **sent)) for p in ("/ocr", PADDLEX)]
    for result in answers:
        assert result["dataInfo"] == {"width": 709, "height": 132, "type": "image"}
        [page] = result["ocrResults"]
        pruned = page["prunedResult"]
        assert_pruned_page(pruned, 709, 132)
        assert pruned["rec_texts"][-1] == "of this dataset are specified as follows."
        assert pruned["rec_texts"][0].endswith("MovieShots Dataset")
        # The service's defaults: orientation looked for, upside-down lines turned.
        assert pruned["model_settings"] == {
            "use_doc_preprocessor": True, "use_textline_orientation": True,
        }  # fmt: skip
        assert pruned["doc_preprocessor_res"] == {
            "model_settings": {"use_doc_orientation_classify": True, "use_doc_unwarping": False},
            "angle": 0,
        }
    assert answers[0]["ocrResults"] == answers[1]["ocrResults"]


async def test_paddlex_pdf_is_read_page_by_page(client: httpx.AsyncClient) -> None:
    result = assert_paddlex_success(await client.post(PADDLEX, json=paddlex_payload(PDF, 0)))
    info = result["dataInfo"]
    assert info["type"] == "pdf" and info["numPages"] == 5
    assert [(p["width"], p["height"]) for p in info["pages"]][3:] == [(2200, 1700), (1700, 2200)]
    assert len(result["ocrResults"]) == 5
    for page, size in zip(result["ocrResults"], info["pages"], strict=True):
        assert_pruned_page(page["prunedResult"], size["width"], size["height"])
    assert "1040NR" in result["ocrResults"][0]["prunedResult"]["rec_texts"]
    # fileType null: told from the bytes (PaddleX itself tells it only from a URL's name).
    untyped = await client.post("/ocr", json=paddlex_payload(PDF, None))
    assert assert_paddlex_success(untyped)["dataInfo"] == info


async def test_paddlex_options_map_and_unknown_ones_are_ignored(
    client: httpx.AsyncClient,
) -> None:
    payload = paddlex_payload(POSTER, 1) | {
        "useDocOrientationClassify": False,
        "useTextlineOrientation": False,
        "textRecScoreThresh": 0.99,
        # Taken and ignored: no unwarping, no drawing, the detector's settings are the server's.
        "useDocUnwarping": True, "visualize": True, "textDetThresh": 0.1,
        "textDetLimitSideLen": 64, "someFieldOfALaterPaddleX": [1, 2],
    }  # fmt: skip
    strict = assert_paddlex_success(await client.post("/ocr", json=payload))["ocrResults"][0]
    pruned = strict["prunedResult"]
    assert pruned["model_settings"] == {
        "use_doc_preprocessor": False, "use_textline_orientation": False,
    }  # fmt: skip
    assert "doc_preprocessor_res" not in pruned  # as PaddleX leaves it out
    assert pruned["text_rec_score_thresh"] == 0.99
    assert pruned["text_det_params"]["limit_side_len"] == 736  # the server's, not 64
    assert all(score >= 0.99 for score in pruned["rec_scores"])
    assert_pruned_page(pruned, 323, 430)
    default = await client.post("/ocr", json=paddlex_payload(POSTER, 1))
    kept = assert_paddlex_success(default)["ocrResults"][0]["prunedResult"]
    assert kept["text_rec_score_thresh"] == 0.5
    assert len(kept["rec_texts"]) > len(pruned["rec_texts"]) > 0
    assert "大桶装更划算" in kept["rec_texts"]


async def test_paddlex_file_as_a_url(engine: Engine, file_server: str) -> None:
    """A URL is fetched as ``image_url`` is: refused when private unless allowed."""
    url = f"{file_server}/en_doc_paragraph.jpg"
    async for client in client_for(settings(), engine):
        message = assert_paddlex_error(await client.post("/ocr", json={"file": url}), 422)
        assert "not a public address" in message
        metadata = {"file": "http://169.254.169.254/latest/meta-data", "fileType": 1}
        assert_paddlex_error(await client.post(PADDLEX, json=metadata), 422)
        scheme = {"file": "file:///etc/passwd", "fileType": 1}
        assert "scheme" in assert_paddlex_error(await client.post(PADDLEX, json=scheme), 422)
    async for client in client_for(settings(allow_private_urls=True), engine):
        result = assert_paddlex_success(await client.post("/ocr", json={"file": url}))
        assert result["dataInfo"] == {"width": 709, "height": 132, "type": "image"}
        pruned = result["ocrResults"][0]["prunedResult"]
        assert pruned["rec_texts"][-1] == "of this dataset are specified as follows."
        missing = {"file": f"{file_server}/missing.jpg", "fileType": 1}
        assert "404" in assert_paddlex_error(await client.post(PADDLEX, json=missing), 422)


async def test_paddlex_errors_are_paddlex_shaped_4xx(client: httpx.AsyncClient) -> None:
    image = paddlex_payload(PARAGRAPH, 1)
    bad = [
        ({"file": "this is not base64!", "fileType": 1}, 422, "Base64"),
        (image | {"fileType": 2}, 422, "fileType"),
        (image | {"fileType": "1"}, 422, "fileType"),
        (image | {"fileType": 0}, 422, "PDF"),
        (paddlex_payload(PDF, 1), 422, "PDF"),
        (image | {"textRecScoreThresh": 1.5}, 422, "textRecScoreThresh"),
        ({"file": None, "fileType": 1}, 422, "file"),
        ({"file": "", "fileType": 1}, 422, "empty"),
        ({"file": base64.b64encode(b"hello, world").decode(), "fileType": 1}, 415, "format"),
    ]
    for path in ("/ocr", PADDLEX):
        for payload, status, says in bad:
            message = assert_paddlex_error(await client.post(path, json=payload), status)
            assert says in message, (payload, message)
    # No "file": not PaddleX's at /ocr, so ocrserve's answer; at PaddleX's own path, PaddleX's.
    assert "file" in assert_paddlex_error(await client.post(PADDLEX, json={"fileType": 1}), 422)
    assert_ocrserve_error(await client.post("/ocr", json={"fileType": 1}), 422, "invalid_input")
    for body in (b"{not json", b"[1, 2]"):
        headers = {"Content-Type": "application/json"}
        assert_paddlex_error(await client.post(PADDLEX, content=body, headers=headers), 422)


async def test_paddlex_limits_keys_and_rate_limits(engine: Engine) -> None:
    s = settings(api_keys=("k1",), max_file_bytes=20_000, rate_limit_rps=0.01, rate_limit_burst=2)
    async for client in client_for(s, engine):
        payload = paddlex_payload(FIXTURES / "en_line_long_text.jpg", 1)
        r = await client.post(PADDLEX, json=payload)
        assert_paddlex_error(r, 401)
        assert r.headers["www-authenticate"] == "Bearer"
        # At /ocr the key is checked before the body is read: ocrserve's shape.
        assert_ocrserve_error(await client.post("/ocr", json=payload), 401, "unauthorized")
        key = {"X-API-Key": "k1"}
        assert_paddlex_success(await client.post(PADDLEX, json=payload, headers=key))
        big = paddlex_payload(PARAGRAPH, 1)  # 41 kB, over the 20 kB limit
        message = assert_paddlex_error(await client.post("/ocr", json=big, headers=key), 413)
        assert "20,000" in message
        r = await client.post(PADDLEX, json=payload, headers=key)
        assert_paddlex_error(r, 429)
        assert int(r.headers["retry-after"]) >= 1


# --- RapidOCR ----------------------------------------------------------------------------------


def assert_rapidocr_lines(r: httpx.Response, width: int, height: int) -> list[str]:
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert list(body) == [str(n) for n in range(len(body))]
    for line in body.values():
        assert set(line) == {"rec_txt", "dt_boxes", "score"}
        assert isinstance(line["rec_txt"], str) and line["rec_txt"]
        assert 0.5 <= line["score"] <= 1
        assert len(line["dt_boxes"]) == 4
        assert all(0 <= x <= width and 0 <= y <= height for x, y in line["dt_boxes"])
    return [line["rec_txt"] for line in body.values()]


async def test_rapidocr_clients(client: httpx.AsyncClient) -> None:
    """RapidOCR API's demo.py: the image as a file part, and as Base64 in a URL-encoded form;
    at /ocr and at its own path, the same lines."""
    img_path = str(POSTER)
    with open(img_path, "rb") as f:
        file_dict = {"image_file": (img_path, f, "image/png")}
        upload = sent_by_requests(files=file_dict)
    with open(img_path, "rb") as fa:
        img_str = base64.b64encode(fa.read())
    payload = {"image_data": img_str}
    encoded = sent_by_requests(data=payload)
    assert encoded["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    readings = [
        assert_rapidocr_lines(await client.post(path, **sent), 323, 430)
        for path in ("/ocr", RAPIDOCR)
        for sent in (upload, encoded)
    ]
    assert all(lines == readings[0] for lines in readings)
    assert {"正品促销", "大桶装更划算", "强力去污符合国标"} <= set(readings[0])
    # curl -d "image_data=$(base64 -w0 f.jpg)": the '+' of Base64 arrive as spaces.
    raw = b"image_data=" + base64.b64encode(POSTER.read_bytes())
    assert b"+" in raw
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    r = await client.post("/ocr", content=raw, headers=headers)
    assert assert_rapidocr_lines(r, 323, 430) == readings[0]


async def test_rapidocr_switches(client: httpx.AsyncClient) -> None:
    """demo.py's third call turns the detector off: refused, as ocrserve always detects."""
    img_path = str(POSTER)
    for path in ("/ocr", RAPIDOCR):
        with open(img_path, "rb") as f:
            file_dict = {"image_file": (img_path, f, "image/png")}
            data = {"use_det": False, "use_cls": True, "use_rec": True}
            r = await client.post(path, **sent_by_requests(files=file_dict, data=data))
        assert_ocrserve_error(r, 422, "invalid_option")
        assert "use_det" in r.json()["error"]["message"]
        with open(img_path, "rb") as f:
            file_dict = {"image_file": (img_path, f, "image/png")}
            data = {"use_det": True, "use_cls": False, "use_rec": True}
            r = await client.post(path, **sent_by_requests(files=file_dict, data=data))
        assert "大桶装更划算" in assert_rapidocr_lines(r, 323, 430)
        r = await client.post(path, data={"use_rec": "false", "image_data": "AAAA"})
        assert_ocrserve_error(r, 422, "invalid_option")
        r = await client.post(path, data={"use_cls": "maybe", "image_data": "AAAA"})
        assert_ocrserve_error(r, 422, "invalid_option")


async def test_rapidocr_errors(client: httpx.AsyncClient) -> None:
    for path in ("/ocr", RAPIDOCR):
        pdf = {"image_file": ("f.pdf", PDF.read_bytes(), "application/pdf")}
        assert_ocrserve_error(await client.post(path, files=pdf), 415, "unsupported_format")
        r = await client.post(path, data={"image_data": "not base64!"})
        assert_ocrserve_error(r, 422, "invalid_input")
        text = {"image_file": (None, "not a file")}
        assert_ocrserve_error(await client.post(path, files=text), 422, "invalid_input")
    r = await client.post(RAPIDOCR, data={"use_cls": "true"})
    assert_ocrserve_error(r, 422, "invalid_input")
    r = await client.post(RAPIDOCR, json={"image_data": "AAAA"})
    assert_ocrserve_error(r, 415, "unsupported_media_type")


# --- ocrserve's own requests, and the document ---------------------------------------------------


async def test_ocrserve_requests_are_unaffected(client: httpx.AsyncClient) -> None:
    image = PARAGRAPH.read_bytes()
    answers = [
        await client.post("/ocr", files={"image": ("p.jpg", image)}),
        await client.post("/ocr", files={"file": ("p.jpg", image)}),
        await client.post("/ocr", json={"image_base64": base64.b64encode(image).decode()}),
    ]
    for r in answers:
        assert r.status_code == 200, r.text
        assert {"text", "pages", "page_count", "model"} <= set(r.json())
        assert r.json()["text"].endswith("of this dataset are specified as follows.")
    r = await client.post("/ocr", json={"image_base64": "AAAA", "files": 1})
    assert_ocrserve_error(r, 422, "invalid_input")
    r = await client.post("/ocr", data={"image": "x"})  # URL-encoded, no image_data
    assert_ocrserve_error(r, 415, "unsupported_media_type")
    r = await client.post("/ocr", files={"image": ("p.jpg", image)}, data={"image_url": "x"})
    assert_ocrserve_error(r, 422, "invalid_input")


async def test_the_routes_are_in_the_openapi_document(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    paddlex = doc["paths"][PADDLEX]["post"]
    schema = paddlex["requestBody"]["content"]["application/json"]["schema"]
    assert {"file", "fileType", "textRecScoreThresh"} <= set(schema["properties"])
    assert schema["required"] == ["file"]
    ok = paddlex["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok["$ref"].endswith("/PaddleXResponse")
    assert paddlex["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/PaddleXError"
    )
    rapidocr = doc["paths"][RAPIDOCR]["post"]
    content = rapidocr["requestBody"]["content"]
    assert "image_file" in content["multipart/form-data"]["schema"]["properties"]
    assert "image_data" in content["application/x-www-form-urlencoded"]["schema"]["properties"]
    ok = rapidocr["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok["$ref"].endswith("/RapidOCRResponse")
