"""The serverless profile and the AWS Lambda handler, invoked in-process with API Gateway HTTP
API (payload format 2.0) events as Lambda delivers them: no network, no AWS."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ocrserve import Engine, Settings
from ocrserve.api.errors import status_of
from ocrserve.errors import NotImplementedInProfileError
from ocrserve.serverless import LambdaHandler

FIXTURES = Path(__file__).parent / "fixtures"
LONG_LINE = (FIXTURES / "en_line_long_text.jpg").read_bytes()
MAX_REQUEST_BYTES = 1_000_000


def http_api_event(
    method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """An API Gateway HTTP API event, payload format 2.0, as AWS documents and sends it."""
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {
            "host": "abcdef123.execute-api.eu-west-1.amazonaws.com",
            "user-agent": "test",
            "x-forwarded-for": "198.51.100.7",
            "x-forwarded-port": "443",
            "x-forwarded-proto": "https",
            **({"content-length": str(len(body))} if body else {}),
            **(headers or {}),
        },
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abcdef123",
            "domainName": "abcdef123.execute-api.eu-west-1.amazonaws.com",
            "domainPrefix": "abcdef123",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "198.51.100.7",
                "userAgent": "test",
            },
            "requestId": "JKJaXmPLvHcESHA=",
            "routeKey": "$default",
            "stage": "$default",
            "time": "10/Mar/2026:13:40:52 +0000",
            "timeEpoch": 1773150052000,
        },
        "body": base64.b64encode(body).decode(),
        "isBase64Encoded": True,
    }


class _Context:
    """What Lambda passes as ``context`` (Mangum reads nothing from it but keeps it in scope)."""

    function_name = "ocrserve"
    aws_request_id = "c6af9ac6-7b61-11e6-9a41-93e812345678"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def invoke(handler: LambdaHandler, event: dict[str, Any]) -> tuple[int, Any]:
    response = handler(event, _Context())
    body = response["body"]
    if response.get("isBase64Encoded"):
        body = base64.b64decode(body).decode()
    return response["statusCode"], json.loads(body)


@pytest.fixture(scope="module")
def warmups(engine: Engine) -> Iterator[list[int]]:
    calls: list[int] = []
    original = Engine.warmup

    def counted(self: Engine) -> None:
        calls.append(1)
        original(self)

    Engine.warmup = counted  # type: ignore[method-assign]
    yield calls
    Engine.warmup = original  # type: ignore[method-assign]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serverless") / "data"


@pytest.fixture(scope="module")
def handler(engine: Engine, warmups: list[int], data_dir: Path) -> Iterator[LambdaHandler]:
    settings = Settings(
        profile="serverless",
        data_dir=data_dir,
        max_request_bytes=MAX_REQUEST_BYTES,
        log_json=False,
    )
    h = LambdaHandler(settings, engine=engine)
    yield h
    h.close()


def test_the_profile_sizes_a_request_to_a_30_s_function() -> None:
    s = Settings(profile="serverless")
    assert (s.data_dir, s.max_pages, s.request_timeout_s) == (Path("/tmp/ocrserve"), 5, 25.0)
    assert Settings(profile="serverless", max_pages=8).max_pages == 8  # still settable
    server = Settings()
    assert server.profile == "server" and server.max_pages == 100 and not server.serverless


def test_not_implemented_maps_to_501() -> None:
    assert status_of(NotImplementedInProfileError("x", profile="serverless")) == 501


def test_health_from_an_http_api_v2_event(handler: LambdaHandler) -> None:
    status, body = invoke(handler, http_api_event("GET", "/health"))
    assert status == 200, body
    status, body = invoke(handler, http_api_event("GET", "/ready"))
    assert status == 200, body


def test_ocr_with_a_base64_json_body(handler: LambdaHandler) -> None:
    payload = json.dumps({"image_base64": base64.b64encode(LONG_LINE).decode()}).encode()
    event = http_api_event("POST", "/ocr", payload, {"content-type": "application/json"})
    status, body = invoke(handler, event)
    assert status == 200, body
    assert "采用高端宝石制作镜片" in body["text"]


def test_ocr_with_a_multipart_body(handler: LambdaHandler) -> None:
    request = httpx.Request(
        "POST", "https://x/ocr", files={"image": ("line.jpg", LONG_LINE, "image/jpeg")}
    )
    body = request.read()
    event = http_api_event("POST", "/ocr", body, {"content-type": request.headers["content-type"]})
    status, answer = invoke(handler, event)
    assert status == 200, answer
    assert "采用高端宝石制作镜片" in answer["text"]


def test_an_oversize_body_is_413(handler: LambdaHandler) -> None:
    payload = json.dumps({"image_base64": "A" * (MAX_REQUEST_BYTES + 1)}).encode()
    event = http_api_event("POST", "/ocr", payload, {"content-type": "application/json"})
    status, body = invoke(handler, event)
    assert status == 413, body


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/ocr/async"),
        ("POST", "/v1/ocr/async"),
        ("GET", "/task/0123456789abcdef"),
        ("DELETE", "/task/0123456789abcdef"),
    ],
)
def test_async_routes_are_501_pointing_to_the_distributed_mode(
    handler: LambdaHandler, method: str, path: str
) -> None:
    payload = json.dumps({"image_base64": base64.b64encode(LONG_LINE).decode()}).encode()
    body_bytes = payload if method == "POST" else b""
    event = http_api_event(method, path, body_bytes, {"content-type": "application/json"})
    status, body = invoke(handler, event)
    assert status == 501, body
    assert body["error"]["code"] == "not_implemented"
    assert "distributed mode" in body["error"]["message"]


def test_the_lifespan_ran_once_for_every_event_and_wrote_nothing(
    handler: LambdaHandler, warmups: list[int], data_dir: Path
) -> None:
    for _ in range(3):
        assert invoke(handler, http_api_event("GET", "/health"))[0] == 200
    assert handler.starts == 1
    assert len(warmups) == 1  # the models were warmed up at the cold start only
    assert not data_dir.exists()  # no task database, no webhook secret: nothing written
