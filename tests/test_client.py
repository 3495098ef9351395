"""The client SDK: against a real `ocrserve serve` behind a fault-injecting transport, and the
async-task calls against httpx.MockTransport. Sleeps, clocks and randomness are injected:
no test waits on the wall clock."""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import json
import logging
import os
import random
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

import ocrserve.client
from ocrserve.client import (
    AsyncClient,
    BreakerPolicy,
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    Client,
    ClientError,
    FileError,
    OCRClientError,
    OCRConnectionError,
    OCRResult,
    OCRServerError,
    OCRTimeoutError,
    RateLimit,
    RetryPolicy,
    TaskFailedError,
    TokenBucket,
    WaitTimeoutError,
)
from ocrserve.client import cli as client_cli
from ocrserve.client.cli import client_app
from ocrserve.errors import OCRServeError, UnreadableFileError
from ocrserve.webhooks import generate_secret, headers_for, sign

from .conftest import FIXTURES, free_port, start_serve

LINE = FIXTURES / "en_line_long_text.jpg"
LINE_TEXT = "采用高端宝石制作镜片，更有效保护眼睛，避免辐射"
NOT_AN_IMAGE = b"plain text, not an image\n"
#: Retries as the defaults, delays a thousand times shorter.
TINY = RetryPolicy(retries=3, base=0.001, cap=0.008)
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


# --- test doubles ------------------------------------------------------------------------------


def fault(status: int, *, code: str = "queue_full", retry_after: float | None = None) -> Any:
    """A scripted answer; a factory, since a response can be sent only once."""
    headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
    body = {"error": {"code": code, "message": "injected"}}
    return lambda: httpx.Response(status, headers=headers, json=body)


class Faults(httpx.BaseTransport):
    """In front of the real transport: plays its script first, then passes requests through.
    Counts every call that reaches it."""

    def __init__(self, inner: httpx.BaseTransport, *script: Any) -> None:
        self.inner = inner
        self.script = list(script)
        self.calls = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.script:
            step = self.script.pop(0)
            if isinstance(step, Exception):
                raise step
            response: httpx.Response = step()
            return response
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


class AsyncFaults(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport, *script: Any) -> None:
        self.inner = inner
        self.script = list(script)
        self.calls = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.script:
            response: httpx.Response = self.script.pop(0)()
            return response
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Sleeps(list[float]):
    """An injected sleep: records each delay and, given a clock, moves it on instead of waiting."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        super().__init__()
        self.clock = clock

    def __call__(self, seconds: float) -> None:
        self.append(seconds)
        if self.clock is not None:
            self.clock.advance(seconds)

    async def asleep(self, seconds: float) -> None:
        self(seconds)


# --- a real server -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    env = os.environ | {
        "OCRSERVE_MAX_PAGES": "1",
        "OCRSERVE_LANES": "1",
        "OCRSERVE_INTRA_OP_THREADS": "2",
        "OCRSERVE_DATA_DIR": str(tmp_path_factory.mktemp("client-data")),
    }
    proc = start_serve(env, port, tmp_path_factory.mktemp("client") / "server.log")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_ocr_of_a_path_returns_a_typed_result(server: str) -> None:
    with Client(server) as client:
        result = client.ocr(LINE)
        assert client.stats.attempts == 1 and client.stats.retries == 0
    assert result.text == LINE_TEXT
    assert (result.page_count, result.pages_total, result.truncated) == (1, 1, False)
    line = result.pages[0].lines[0]
    assert line.text == LINE_TEXT and 0 < line.confidence <= 1 and len(line.box) == 4
    assert "PP-OCRv6" in result.model and "total" in result.timings


def test_503_twice_then_200_succeeds_after_exactly_three_calls(
    server: str, caplog: pytest.LogCaptureFixture
) -> None:
    faults = Faults(httpx.HTTPTransport(), fault(503), fault(503))
    sleeps = Sleeps()
    registry = CollectorRegistry()
    caplog.set_level(logging.INFO, logger="ocrserve.client")
    with Client(server, transport=faults, retry=TINY, sleep=sleeps, registry=registry) as client:
        with LINE.open("rb") as f:
            result = client.ocr(f)
        stats = client.stats
    assert result.text == LINE_TEXT
    assert faults.calls == 3
    assert len(sleeps) == 2 and 0 <= sleeps[0] <= 0.001 and 0 <= sleeps[1] <= 0.002
    assert (stats.attempts, stats.retries) == (3, 2)
    retries = [r for r in caplog.records if r.getMessage().startswith("retrying POST")]
    assert len(retries) == 2 and all(r.levelno == logging.INFO for r in retries)
    assert "after 503 [queue_full]" in retries[0].getMessage()
    assert "retry 1 of 3" in retries[0].getMessage()
    labels = {"server": server}
    assert registry.get_sample_value("ocrserve_client_attempts_total", labels) == 3
    retried = registry.get_sample_value("ocrserve_client_retries_total", labels | {"reason": "503"})
    assert retried == 2


def test_a_bad_request_is_sent_once_and_raises_the_servers_code(server: str) -> None:
    faults = Faults(httpx.HTTPTransport())
    sleeps = Sleeps()
    client = Client(server, transport=faults, retry=TINY, sleep=sleeps)
    with client, pytest.raises(OCRClientError) as info:
        client.ocr(NOT_AN_IMAGE, filename="notes.txt")
    err = info.value
    assert faults.calls == 1 and sleeps == []
    assert (err.status, err.code, err.attempts) == (415, "unsupported_format", 1)
    assert err.message and err.request_id
    assert isinstance(err, ClientError) and isinstance(err, OCRServeError)


def test_429_with_retry_after_waits_at_least_that(server: str) -> None:
    faults = Faults(httpx.HTTPTransport(), fault(429, code="rate_limited", retry_after=2))
    sleeps = Sleeps()
    with Client(server, transport=faults, retry=TINY, sleep=sleeps) as client:
        assert client.ocr(LINE).text == LINE_TEXT
    assert faults.calls == 2
    assert sleeps == [2.0]  # the jitter (at most 1 ms here) is below the server's floor


def test_connection_refused_is_retried_then_raised_clearly() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    faults = Faults(httpx.HTTPTransport())
    sleeps = Sleeps()
    policy = RetryPolicy(retries=2, base=0.001, cap=0.001)
    client = Client(url, transport=faults, retry=policy, sleep=sleeps)
    with client, pytest.raises(OCRConnectionError) as info:
        client.ocr(b"\x89PNG")
    assert faults.calls == 3 and len(sleeps) == 2
    assert info.value.attempts == 3 and info.value.url == f"{url}/ocr"
    assert "after 3 attempts" in info.value.message and "ConnectError" in info.value.message


def test_breaker_opens_fails_fast_half_opens_and_closes(server: str) -> None:
    clock = FakeClock()
    faults = Faults(httpx.HTTPTransport(), fault(503), fault(503), fault(503))
    policy = BreakerPolicy(failures=3, cooldown=30.0)
    with Client(
        server, transport=faults, retry=RetryPolicy(retries=0), breaker=policy, clock=clock
    ) as client:
        for _ in range(3):
            with pytest.raises(OCRServerError):
                client.ocr(LINE)
        assert client.stats.breaker_state == CircuitState.open

        with pytest.raises(CircuitOpenError) as info:
            client.ocr(LINE)
        assert faults.calls == 3  # failed fast: nothing reached the transport
        assert info.value.server == server and info.value.retry_in == pytest.approx(30.0)

        clock.advance(29.5)
        with pytest.raises(CircuitOpenError):
            client.ocr(LINE)
        clock.advance(1.0)
        assert client.ocr(LINE).text == LINE_TEXT  # the half-open probe, to the real server
        assert faults.calls == 4
        stats = client.stats
    assert stats.breaker_state == CircuitState.closed
    assert (stats.breaker_opened, stats.breaker_half_opened, stats.breaker_closed) == (1, 1, 1)
    assert stats.rejected == 2


def test_submit_and_wait_against_the_real_server(server: str) -> None:
    with Client(server) as client:
        task = client.submit(file=FIXTURES / "en_line_long_text.jpg", metadata={"n": 1})
        done = client.wait(task.task_id, timeout=120, poll_interval=0.1)
    assert done.status == "succeeded"
    assert done.result is not None
    assert done.result.text == "采用高端宝石制作镜片，更有效保护眼睛，避免辐射"


def test_batch_gives_a_result_or_an_error_per_file(server: str) -> None:
    with Client(server) as client:
        items = client.batch([LINE, NOT_AN_IMAGE])
    assert isinstance(items[0], OCRResult) and items[0].text == LINE_TEXT
    assert items[0].filename == LINE.name
    assert isinstance(items[1], FileError) and items[1].code == "unsupported_format"


@pytest.mark.anyio
async def test_async_client_retries_a_503_against_the_real_server(server: str) -> None:
    faults = AsyncFaults(httpx.AsyncHTTPTransport(), fault(503))
    sleeps = Sleeps()
    async with AsyncClient(server, transport=faults, retry=TINY, sleep=sleeps.asleep) as client:
        result = await client.ocr(LINE)
        with pytest.raises(OCRClientError) as info:
            await client.ocr(NOT_AN_IMAGE)
    assert result.text == LINE_TEXT
    assert faults.calls == 3 and len(sleeps) == 1
    assert info.value.code == "unsupported_format"


def test_cli_ocr_prints_text_and_reports_a_refused_file(server: str, tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_bytes(NOT_AN_IMAGE)
    runner = CliRunner()
    ok = runner.invoke(client_app, ["ocr", str(LINE), "--server", server])
    assert ok.exit_code == 0, ok.output
    assert ok.stdout.strip() == LINE_TEXT

    mixed = runner.invoke(
        client_app, ["ocr", str(bad), str(LINE), "-f", "json", "--server", server]
    )
    assert mixed.exit_code == 1
    assert json.loads(mixed.stdout)["text"] == LINE_TEXT
    assert f"{bad}: error: [unsupported_format]" in mixed.stderr


# --- retry policy and jitter -------------------------------------------------------------------


def test_defaults_are_three_retries_from_one_second_capped_at_eight() -> None:
    policy = RetryPolicy()
    assert (policy.retries, policy.base, policy.cap) == (3, 1.0, 8.0)
    assert [policy.bound(n) for n in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    with pytest.raises(ValueError):
        RetryPolicy(retries=-1)


def test_jitter_is_spread_uniformly_below_the_bound() -> None:
    policy = RetryPolicy()
    rng = random.Random(20240611)
    samples = 4000
    for n in range(6):
        bound = min(policy.cap, policy.base * 2**n)
        delays = [policy.backoff(n, rng) for _ in range(samples)]
        assert all(0.0 <= d <= bound for d in delays)
        # Uniform on [0, bound]: mean bound/2 (its standard error here is ~0.5% of the bound).
        assert abs(sum(delays) / samples - bound / 2) < 0.03 * bound
        low = sum(d < bound / 2 for d in delays) / samples
        assert 0.45 < low < 0.55
        assert min(delays) < 0.05 * bound and max(delays) > 0.95 * bound


def _mock(handler: Callable[[httpx.Request], httpx.Response], **kwargs: Any) -> Client:
    kwargs.setdefault("retry", TINY)
    kwargs.setdefault("sleep", Sleeps())
    return Client("http://ocr.test", transport=httpx.MockTransport(handler), **kwargs)


def test_a_retry_after_beyond_the_limit_is_not_waited_for() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        response: httpx.Response = fault(503, retry_after=3600)()
        return response

    with _mock(handler) as client, pytest.raises(OCRServerError) as info:
        client.get_task("t1")
    assert len(calls) == 1 and info.value.retry_after == 3600


def test_timeouts_are_retried_then_raised() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ReadTimeout("read timed out", request=request)

    with _mock(handler) as client, pytest.raises(OCRTimeoutError) as info:
        client.get_task("t1")
    assert len(calls) == 4 and info.value.attempts == 4


# --- circuit breaker and token bucket ----------------------------------------------------------


def test_half_open_lets_exactly_one_probe_through_and_reopens_on_its_failure() -> None:
    clock = FakeClock()
    changes: list[str] = []
    breaker = CircuitBreaker(
        "http://ocr.test",
        BreakerPolicy(failures=2, cooldown=5.0),
        clock=clock,
        on_change=lambda _, state: changes.append(state),
    )
    for _ in range(2):
        breaker.failure(probe=breaker.acquire())
    assert breaker.state == CircuitState.open
    clock.advance(5.0)
    assert breaker.acquire() is True  # the probe
    with pytest.raises(CircuitOpenError):
        breaker.acquire()  # everyone else waits for its answer
    breaker.failure(probe=True)
    assert breaker.state == CircuitState.open
    with pytest.raises(CircuitOpenError):
        breaker.acquire()
    clock.advance(5.0)
    probe = breaker.acquire()
    breaker.release(probe=probe)  # a cancelled probe gives its turn to the next caller
    probe = breaker.acquire()
    breaker.success(probe=probe)
    assert breaker.state == CircuitState.closed and breaker.acquire() is False
    assert changes == ["open", "half_open", "open", "half_open", "closed"]


def test_half_open_admits_one_probe_among_many_threads() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(
        "http://ocr.test", BreakerPolicy(failures=1, cooldown=1.0), clock=clock
    )
    breaker.failure(probe=breaker.acquire())
    clock.advance(1.0)
    barrier = threading.Barrier(16)
    admitted: list[bool] = []

    def race() -> None:
        barrier.wait()
        with contextlib.suppress(CircuitOpenError):
            admitted.append(breaker.acquire())

    threads = [threading.Thread(target=race) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert admitted == [True]


def test_a_failure_ratio_over_the_window_opens_the_circuit() -> None:
    breaker = CircuitBreaker(
        "http://ocr.test", BreakerPolicy(failures=100, failure_ratio=0.5, window=10, min_calls=10)
    )
    for i in range(10):
        assert breaker.state == CircuitState.closed
        probe = breaker.acquire()
        breaker.failure(probe=probe) if i % 2 else breaker.success(probe=probe)
    assert breaker.state == CircuitState.open


def test_4xx_and_429_do_not_count_as_failures_for_the_breaker() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        response: httpx.Response = fault(404, code="not_found")()
        return response

    with _mock(handler, breaker=BreakerPolicy(failures=1)) as client:
        for _ in range(3):
            with pytest.raises(OCRClientError):
                client.get_task("t1")
        assert client.stats.breaker_state == CircuitState.closed


def test_token_bucket_paces_requests() -> None:
    clock = FakeClock()
    bucket = TokenBucket(RateLimit(rate=2, burst=2), clock=clock)
    assert [bucket.reserve() for _ in range(4)] == [0.0, 0.0, 0.5, 1.0]
    clock.advance(1.0)  # two tokens' worth: the debt of two is paid, the next one waits
    assert bucket.reserve() == pytest.approx(0.5)

    sleeps = Sleeps()
    task = {"task_id": "t1", "status": "queued"}
    with _mock(
        lambda _: httpx.Response(200, json=task),
        rate_limit=RateLimit(rate=1, burst=1),
        clock=FakeClock(),
        sleep=sleeps,
    ) as client:
        for _ in range(3):
            client.get_task("t1")
    assert sleeps == [1.0, 2.0]


# --- the async-task API (httpx.MockTransport) --------------------------------------------------


def test_a_retried_submit_sends_the_same_idempotency_key() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) == 1:
            response: httpx.Response = fault(503)()
            return response
        return httpx.Response(
            202,
            json={"task_id": "t1", "status": "queued", "status_url": "/task/t1"},
            headers={"Location": "/task/t1"},
        )

    with _mock(handler) as client:
        task = client.submit(
            image_url="https://example.com/scan.png",
            callback_url="https://hooks.example.com/ocr",
            metadata={"invoice": 42},
            lang="en",
        )
        client.submit(image_url="https://example.com/scan.png")
    assert (task.task_id, task.status, task.status_url) == ("t1", "queued", "/task/t1")
    keys = [r.headers["Idempotency-Key"] for r in seen]
    assert len(keys) == 3 and keys[0] == keys[1] != keys[2]
    assert [r.url.path for r in seen] == ["/ocr/async"] * 3
    assert json.loads(seen[1].content) == {
        "image_url": "https://example.com/scan.png",
        "callback_url": "https://hooks.example.com/ocr",
        "metadata": {"invoice": 42},
        "lang": "en",
    }


def test_submit_sends_a_file_as_base64_and_needs_exactly_one_input() -> None:
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(202, json={"task_id": "t2", "status": "queued"})

    with _mock(handler) as client:
        client.submit(file=LINE)
        with pytest.raises(ValueError):
            client.submit()
        with pytest.raises(ValueError):
            client.submit(image_url="https://example.com/a.png", file=LINE)
        with pytest.raises(UnreadableFileError):
            client.submit(file=LINE.with_name("missing.jpg"))
    assert len(bodies) == 1
    assert base64.b64decode(bodies[0]["image_base64"]) == LINE.read_bytes()


def _task(status: str, **extra: Any) -> dict[str, Any]:
    return {
        "task_id": "t1",
        "status": status,
        "created_at": "2026-01-02T03:04:05Z",
        "started_at": None,
        "finished_at": None,
        "progress": {"pages_done": 0, "pages_total": 1},
        "result": None,
        "error": None,
        "metadata": {"invoice": 42},
        "callback": None,
    } | extra


RESULT = {
    "text": "hello",
    "avg_confidence": 0.9,
    "pages": [
        {
            "page": 1,
            "width": 10,
            "height": 5,
            "text": "hello",
            "avg_confidence": 0.9,
            "lines": [
                {"text": "hello", "confidence": 0.9, "box": [[0, 0], [9, 0], [9, 4], [0, 4]]}
            ],
        }
    ],
    "page_count": 1,
    "pages_total": 1,
    "truncated": False,
    "model": "test",
    "timings": {"total": 0.1},
}


def _polls(*answers: httpx.Response) -> Callable[[httpx.Request], httpx.Response]:
    queue = list(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.method == "GET" and request.url.path == "/task/t1"
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return handler


def test_wait_polls_until_succeeded_honouring_retry_after() -> None:
    clock = FakeClock()
    sleeps = Sleeps(clock)
    handler = _polls(
        httpx.Response(200, json=_task("queued"), headers={"Retry-After": "3"}),
        httpx.Response(200, json=_task("running")),
        httpx.Response(200, json=_task("succeeded", result=RESULT, finished_at=1767323050.5)),
    )
    with _mock(handler, clock=clock, sleep=sleeps) as client:
        task = client.wait("t1", timeout=60, poll_interval=0.5)
    assert sleeps == [3.0, 0.5]
    assert task.status == "succeeded" and task.finished
    assert task.result is not None and task.result.text == "hello"
    assert task.result.pages[0].lines[0].box[2] == (9.0, 4.0)
    assert task.created_at is not None and task.created_at.year == 2026
    assert task.finished_at is not None and task.metadata == {"invoice": 42}


def test_wait_raises_when_the_task_fails() -> None:
    failed = _task("failed", error={"code": "corrupt_file", "message": "cannot decode"})
    client = _mock(_polls(httpx.Response(200, json=failed)))
    with client, pytest.raises(TaskFailedError) as info:
        client.wait("t1")
    assert info.value.code == "corrupt_file" and info.value.task.status == "failed"


def test_wait_gives_up_at_its_timeout() -> None:
    clock = FakeClock()
    sleeps = Sleeps(clock)
    running = httpx.Response(200, json=_task("running"), headers={"Retry-After": "10"})
    client = _mock(_polls(running), clock=clock, sleep=sleeps)
    with client, pytest.raises(WaitTimeoutError) as info:
        client.wait("t1", timeout=25)
    assert sleeps == [10.0, 10.0, 5.0]  # never sleeps past the deadline; one last look at it
    assert (info.value.task_id, info.value.status) == ("t1", "running")


def test_an_unknown_task_is_a_client_error_sent_once() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        response: httpx.Response = fault(404, code="not_found")()
        return response

    with _mock(handler) as client, pytest.raises(OCRClientError) as info:
        client.get_task("nope")
    assert len(calls) == 1 and (info.value.status, info.value.code) == (404, "not_found")


@pytest.mark.anyio
async def test_async_submit_and_wait() -> None:
    keys: list[str] = []
    polls = _polls(
        httpx.Response(200, json=_task("running"), headers={"Retry-After": "2"}),
        httpx.Response(200, json=_task("succeeded", result=RESULT)),
    )

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            keys.append(request.headers["Idempotency-Key"])
            if len(keys) == 1:
                response: httpx.Response = fault(502, code="bad_gateway")()
                return response
            return httpx.Response(202, json={"task_id": "t1", "status": "queued"})
        return polls(request)

    clock = FakeClock()
    sleeps = Sleeps(clock)
    async with AsyncClient(
        "http://ocr.test",
        transport=httpx.MockTransport(handler),
        retry=TINY,
        sleep=sleeps.asleep,
        clock=clock,
    ) as client:
        task = await client.submit(image_url="https://example.com/a.png")
        done = await client.wait(task.task_id)
    assert len(keys) == 2 and keys[0] == keys[1]
    assert done.result is not None and done.result.text == "hello"
    assert sleeps[-1] == 2.0


# --- command line ------------------------------------------------------------------------------


def test_cli_submit_and_wait_print_the_task(monkeypatch: pytest.MonkeyPatch) -> None:
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            bodies.append(json.loads(request.content))
            return httpx.Response(202, json={"task_id": "t1", "status": "queued"})
        if request.url.path == "/task/t1":
            return httpx.Response(200, json=_task("succeeded", result=RESULT))
        response: httpx.Response = fault(404, code="not_found")()
        return response

    monkeypatch.setattr(client_cli, "_client", lambda server, api_key: _mock(handler))
    runner = CliRunner()
    submitted = runner.invoke(
        client_app,
        ["submit", "--url", "https://example.com/a.png", "--metadata", '{"invoice": 42}'],
    )
    assert submitted.exit_code == 0, submitted.output
    assert json.loads(submitted.stdout)["task_id"] == "t1"
    assert bodies == [{"image_url": "https://example.com/a.png", "metadata": {"invoice": 42}}]

    waited = runner.invoke(client_app, ["wait", "t1", "--timeout", "5"])
    assert waited.exit_code == 0, waited.output
    assert json.loads(waited.stdout)["result"]["text"] == "hello"

    missing = runner.invoke(client_app, ["wait", "t9"])
    assert missing.exit_code == 1
    assert missing.stderr.startswith("error: [not_found] injected")

    neither = runner.invoke(client_app, ["submit"])
    assert neither.exit_code == 2


# --- the webhook receiver example --------------------------------------------------------------


def _receiver() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "webhook_receiver", EXAMPLES / "webhook_receiver.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.anyio
async def test_the_example_receiver_verifies_and_deduplicates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = generate_secret()
    monkeypatch.setenv("OCRSERVE_WEBHOOK_SECRET", secret)
    app = _receiver().create_app()
    body = json.dumps({"task_id": "t1", "status": "succeeded", "result": {"text": "hi"}}).encode()
    signed = headers_for("msg_t1_succeeded", body, secret)
    forged = signed | {"webhook-signature": sign("msg_t1_succeeded", 0, body, generate_secret())}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://hook.test") as http:
        first = await http.post("/ocr-webhook", content=body, headers=signed)
        again = await http.post("/ocr-webhook", content=body, headers=signed)
        bad = await http.post("/ocr-webhook", content=body, headers=forged)
    assert first.status_code == 200 and first.json() == {"duplicate": False}
    assert again.status_code == 200 and again.json() == {"duplicate": True}
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_signature"
    assert [e["task_id"] for e in app.state.processed] == ["t1"]


# --- public surface ----------------------------------------------------------------------------


def test_all_lists_exactly_the_public_names() -> None:
    public = {
        name
        for name in dir(ocrserve.client)
        if not name.startswith("_") and not isinstance(getattr(ocrserve.client, name), ModuleType)
    }
    assert set(ocrserve.client.__all__) == public
