"""Issue 9, findings 7, 8, 11 (bodies) and 12: the client address and the rate limit, private
files, JSON bodies' depth and size, and API docs that render with no network."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ocrserve import Engine, Settings
from ocrserve.api.parsing import MAX_JSON_DEPTH, MAX_JSON_TOKENS, check_json_shape
from ocrserve.api.security import TokenBuckets, TrustedProxies, client_address
from ocrserve.errors import JSONTooComplexError, JSONTooDeepError, RateLimitedError

from .conftest import FIXTURES, SECRET, client_for, free_port, start_serve

LINE = base64.b64encode((FIXTURES / "en_line_long_text.jpg").read_bytes()).decode()
#: Rate limit of the real servers below: a burst of 2, then one request every 2 s.
LIMITED = {"OCRSERVE_RATE_LIMIT_RPS": "0.5", "OCRSERVE_RATE_LIMIT_BURST": "2"}


def serve(tmp: Path, **env: str) -> Iterator[str]:
    port = free_port()
    base = os.environ | {"OCRSERVE_DATA_DIR": str(tmp / "data"), "OCRSERVE_LANES": "1"}
    proc = start_serve(base | env, port, tmp / "server.log")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Keys off, no trusted proxies, rate limited: the default deployment on loopback."""
    yield from serve(tmp_path_factory.mktemp("open"), **LIMITED)


@pytest.fixture(scope="module")
def proxied_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Keys on, behind a trusted proxy on 127.0.0.1 (the test client plays the proxy)."""
    yield from serve(
        tmp_path_factory.mktemp("proxied"),
        OCRSERVE_API_KEYS='["alice-key-0123456789"]',
        OCRSERVE_TRUSTED_PROXIES="127.0.0.1",
        **LIMITED,
    )


def statuses(url: str, headers: list[dict[str, str]]) -> list[int]:
    with httpx.Client(timeout=30) as client:
        return [client.get(url, headers=h).status_code for h in headers]


# --- finding 7: the client address and the rate limit ----------------------------------------


def test_rotating_x_forwarded_for_from_an_untrusted_peer_is_one_bucket(open_server: str) -> None:
    # A GET of a missing task: guarded and rate limited like any route, and no OCR work.
    rotating = [{"X-Forwarded-For": f"203.0.113.{n}"} for n in range(1, 5)]
    assert statuses(f"{open_server}/task/nope", rotating)[:3] == [404, 404, 429]


def test_a_trusted_proxy_names_the_client_and_wrong_keys_are_rate_limited(
    proxied_server: str,
) -> None:
    url = f"{proxied_server}/task/nope"
    wrong = {"Authorization": "Bearer not-a-key"}
    one = {"X-Forwarded-For": "198.51.100.7, 203.0.113.1"}  # the client forged the first hop
    # Guessing keys from one client: 401 for the burst, then 429, whatever the key.
    assert statuses(url, [wrong | one, {"X-API-Key": "guess"} | one, one, wrong | one]) == [
        401,
        401,
        429,
        429,
    ]
    # Another client behind the same proxy: its own bucket (the header is honoured)...
    assert statuses(url, [wrong | {"X-Forwarded-For": "203.0.113.2"}]) == [401]
    # ...and a valid key has its key's bucket, not its address's.
    assert statuses(url, [{"X-API-Key": "alice-key-0123456789"} | one]) == [404]


def scope(peer: str, *headers: tuple[str, str], scheme: str = "http") -> dict[str, Any]:
    return {
        "type": "http",
        "client": (peer, 5555),
        "scheme": scheme,
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
    }


def test_client_address_walks_the_trusted_hops_from_the_right() -> None:
    proxies = TrustedProxies(["10.0.0.0/8", "::1"])
    chain = ("X-Forwarded-For", "6.6.6.6, 203.0.113.9, 10.0.0.7")
    assert client_address(scope("10.0.0.5", chain), proxies) == "203.0.113.9"
    assert client_address(scope("192.0.2.1", chain), proxies) == "192.0.2.1"  # untrusted peer
    assert client_address(scope("10.0.0.5"), proxies) == "10.0.0.5"  # no header: the proxy
    assert client_address(scope("::1", ("X-Forwarded-For", "unknown")), proxies) == "::1"
    forwarded = ("Forwarded", 'for=6.6.6.6, for="[2001:db8::17]:4711";proto=https')
    assert client_address(scope("10.0.0.5", forwarded), proxies) == "2001:db8::17"
    assert client_address(
        scope("10.0.0.5", ("X-Forwarded-For", "[::ffff:1.2.3.4]:80")), proxies
    ) == ("1.2.3.4")
    assert not TrustedProxies().trusts("127.0.0.1")  # none by default
    assert not TrustedProxies(["::/96"]).trusts("0.0.0.1")  # versions never mix


def test_idle_buckets_expire_and_the_table_is_bounded() -> None:
    buckets = TokenBuckets(rate=1.0, burst=2)
    buckets.take("a", now=0.0)
    buckets.take("a", now=0.0)
    with pytest.raises(RateLimitedError):
        buckets.take("a", now=0.5)
    buckets.take("b", now=1.0)
    assert len(buckets) == 2
    # "a" is full again after burst / rate = 2 s idle: dropped, it loses nothing.
    buckets.take("c", now=2.6)
    assert len(buckets) == 2  # "b" still refilling, "c"
    buckets.take("a", now=2.7)
    buckets.take("a", now=2.7)
    buckets.take("d", now=100.0)
    assert len(buckets) == 1
    bounded = TokenBuckets(rate=1.0, burst=2, max_buckets=3)
    for n in range(50):
        bounded.take(f"ip:{n}", now=0.0)
    assert len(bounded) == 3
    TokenBuckets(rate=0.0, burst=1).take("x")  # off: never raises, nothing kept


# --- finding 8: private files -----------------------------------------------------------------


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.anyio
@pytest.mark.usefixtures("umask_022")
async def test_the_data_folder_and_its_files_are_private(
    engine: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)  # as an earlier version left it
    os.chmod(data, 0o755)
    s = Settings(data_dir=data, lanes=1, log_json=False)  # its own webhook secret, made here
    with caplog.at_level(logging.WARNING, logger="ocrserve.config"):
        async for client in client_for(s, engine):
            r = await client.post("/ocr/async", json={"image_base64": LINE})
            assert r.status_code == 202, r.text
            deadline = time.monotonic() + 120
            while (await client.get(r.headers["location"])).json()["status"] in (
                "queued",
                "running",
            ):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in data.iterdir()}
            assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for name in ("tasks.db", "tasks.db-wal", "tasks.db-shm", "tasks.db.lock", "webhook_secret"):
        assert modes.get(name) == 0o600, (name, modes)
    assert any("open to others" in r.getMessage() for r in caplog.records)


# --- finding 11 (bodies): JSON depth and size --------------------------------------------------


def deep(levels: int) -> str:
    return '{"a":' * levels + "1" + "}" * levels


@pytest.mark.anyio
async def test_deep_or_large_json_is_a_4xx_with_a_code(engine: Engine, tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path, lanes=1, log_json=False, webhook_secret=SECRET)
    json_header = {"content-type": "application/json"}
    async for client in client_for(s, engine):
        body = f'{{"image_base64": "{LINE}", "metadata": {deep(2000)}}}'
        r = await client.post("/ocr/async", content=body, headers=json_header)
        assert (r.status_code, r.json()["error"]["code"]) == (422, "json_too_deep"), r.text
        r = await client.post("/ocr", content=deep(2000), headers=json_header)
        assert (r.status_code, r.json()["error"]["code"]) == (422, "json_too_deep"), r.text
        # The multipart form's metadata field goes through the same check.
        files = {"image": ("line.jpg", b"x")}
        r = await client.post("/ocr/async", files=files, data={"metadata": deep(2000)})
        assert (r.status_code, r.json()["error"]["code"]) == (422, "json_too_deep"), r.text

        big = {"image_base64": LINE, "metadata": {"note": "x" * (17 * 1024)}}
        r = await client.post("/ocr/async", json=big)
        assert (r.status_code, r.json()["error"]["code"]) == (413, "metadata_too_large"), r.text
        assert r.json()["error"]["limit"] == 16 * 1024
        r = await client.post(
            "/ocr/async", files=files, data={"metadata": json.dumps(big["metadata"])}
        )
        assert (r.status_code, r.json()["error"]["code"]) == (413, "metadata_too_large"), r.text

        # At the limit, and as deep as allowed: accepted.
        nested: Any = {"note": "x" * 1024}
        for _ in range(MAX_JSON_DEPTH - 2):
            nested = {"n": nested}
        r = await client.post("/ocr/async", json={"image_base64": LINE, "metadata": nested})
        assert r.status_code == 202, r.text

        r = await client.post(
            "/ocr", content="[" + "0," * MAX_JSON_TOKENS + "0]", headers=json_header
        )
        assert (r.status_code, r.json()["error"]["code"]) == (413, "json_too_complex"), r.text

    small = Settings(data_dir=tmp_path / "small", lanes=1, log_json=False, max_file_bytes=1000)
    async for client in client_for(small, engine):
        r = await client.post("/ocr", json={"image_base64": "A" * 100_000})
        assert (r.status_code, r.json()["error"]["code"]) == (413, "json_too_large"), r.text


def test_the_json_scan_skips_strings_and_counts_every_level() -> None:
    check_json_shape(deep(MAX_JSON_DEPTH))
    with pytest.raises(JSONTooDeepError):
        check_json_shape(deep(MAX_JSON_DEPTH + 1))
    with pytest.raises(JSONTooDeepError):
        check_json_shape("[" * 100_000)  # unclosed: still refused before a parser recurses
    # Brackets and escaped quotes inside strings are text, not structure.
    check_json_shape(json.dumps({"a": "[" * 1000 + '\\"{' * 100, "b": "\\" * 9}))
    check_json_shape(json.dumps({"image_base64": "A" * 10_000_000}))
    with pytest.raises(JSONTooDeepError):
        check_json_shape(json.dumps({"a": "\\"}) + "[" * 40)
    with pytest.raises(JSONTooComplexError):
        check_json_shape(json.dumps({"a": '"' * (MAX_JSON_TOKENS + 1)}))
    check_json_shape('{"unterminated": "[[[[')  # left to the parser, which says what


# --- finding 12: API docs with no network -----------------------------------------------------

CHROMIUM = shutil.which("chromium")
URL = re.compile(r"https?://[^\s\"'<>)]+")


def render(url: str, profile: Path) -> str:
    """The DOM of ``url`` after its scripts ran, in headless Chromium. Every host name but
    the loopback address resolves to nothing, so no CDN could be reached even on a machine
    with a network: the page must render from what the server serves."""
    result = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"), reason="needs chromium: make browser-deps"
)
@pytest.mark.parametrize(("path", "expected"), [("/docs", "opblock"), ("/redoc", "menu-content")])
def test_api_docs_render_with_no_network(
    open_server: str, tmp_path: Path, path: str, expected: str
) -> None:
    page = httpx.get(f"{open_server}{path}", timeout=30)
    assert page.status_code == 200
    assert URL.findall(page.text) == [], "the page loads something from outside the server"
    for asset in re.findall(r'(?:src|href)="([^"]+)"', page.text):
        assert httpx.get(f"{open_server}{asset}", timeout=30).status_code == 200, asset

    dom = render(f"{open_server}{path}", tmp_path / "chromium")
    assert expected in dom
    if path == "/docs":  # the operation list, each operation an opblock with its path
        assert re.search(r'class="opblock[^"]*"[^>]*>.*?/ocr/async', dom, re.S)
    else:  # ReDoc lists operations by their summaries
        assert "Submit a document; 202 with a task id" in dom
    loaded = re.findall(r'<(?:script|link|img)[^>]*(?:src|href)="([^"]+)"', dom)
    assert loaded and all(not u.startswith("http") or u.startswith(open_server) for u in loaded)


@pytest.mark.anyio
async def test_guessing_the_admin_key_is_rate_limited_too(engine: Engine, tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, lanes=1, log_json=False, admin_key="admin-key-0123456789",
        rate_limit_rps=0.5, rate_limit_burst=2,
    )  # fmt: skip
    async for client in client_for(settings, engine):
        guesses = [
            (await client.get("/admin/dead-letters", headers={"X-API-Key": f"guess-{n}"}))
            for n in range(3)
        ]
        assert [r.status_code for r in guesses] == [401, 401, 429]
