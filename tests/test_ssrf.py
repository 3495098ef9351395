"""Requests to clients' URLs (issue 9, findings 4, 5, 6 and 11): one address policy, connections
pinned to the checked address, no proxy from the environment, no secrets in logs, bad URLs 4xx.

Nothing here leaves loopback: names resolve through stubs, and every test runs under
``loopback_only``, which fails a lookup of any other name and a connect to any other address
(and the test with them). The one real server that is sent internal addresses runs in its own
network namespace (``unshare -n``: only ``lo``).
"""

from __future__ import annotations

import asyncio
import base64
import errno
import http.server
import io
import ipaddress
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpcore
import httpx
import pytest

from ocrserve import Engine, Settings
from ocrserve.errors import URLFetchError, URLNotAllowedError
from ocrserve.fetch import fetch_url, is_public_address, server_client
from ocrserve.jobs import celery_app
from ocrserve.jobs.delivery import CallbackPolicy, deliver
from ocrserve.jobs.store import TaskRow
from ocrserve.jobs.task import DEAD, DELIVERED
from ocrserve.logs import JSONFormatter, configure

from .conftest import FIXTURES, SECRET, Receiver, client_for, free_port, start_serve

pytestmark = pytest.mark.anyio

IMAGE = (FIXTURES / "en_line_long_text.jpg").read_bytes()
IMAGE_TEXT = "采用高端宝石"
PUBLIC, PUBLIC_2 = "93.184.216.34", "93.184.216.35"


# --- the guard: loopback only ------------------------------------------------------------------


def _is_loopback(host: object) -> bool:
    if host is None:  # getaddrinfo(None, port): a local wildcard, for binding
        return True
    name = host.decode() if isinstance(host, bytes) else str(host)
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Any lookup of a name but localhost, and any connect to a non-loopback address, fails
    (so a bug is a failed request, never a packet out), is recorded, and fails the test."""
    leaks: list[object] = []
    real_getaddrinfo = socket.getaddrinfo
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def getaddrinfo(host: object, *args: Any, **kwargs: Any) -> Any:
        if not _is_loopback(host):
            leaks.append(("lookup", host))
            raise socket.gaierror(socket.EAI_NONAME, "no DNS in these tests")
        return real_getaddrinfo(host, *args, **kwargs)  # type: ignore[arg-type]

    def outside(sock: Any, address: Any) -> bool:
        inet = sock.family in (socket.AF_INET, socket.AF_INET6)
        return inet and not _is_loopback(address[0])

    def connect(sock: Any, address: Any) -> None:
        if outside(sock, address):
            leaks.append(("connect", address))
            raise OSError(errno.ENETUNREACH, "only loopback in these tests")
        real_connect(sock, address)

    def connect_ex(sock: Any, address: Any) -> int:
        if outside(sock, address):
            leaks.append(("connect", address))
            return errno.ENETUNREACH
        return real_connect_ex(sock, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    yield leaks
    assert not leaks, f"tried to reach past loopback: {leaks}"


# --- stubs: DNS, and a network that takes every address to a loopback server ------------------


class StubDNS:
    """Answers by name, in turn (``{"a.test": [[first answer], [second], ...]}``); the last
    answer repeats."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        n = sum(h == host for h in self.asked)
        self.asked.append(host)
        turns = self.answers[host]
        return turns[min(n, len(turns) - 1)]


class PlainTLS(httpcore.AsyncNetworkStream):
    """A stream whose TLS is pretended: the server name asked for is recorded, the bytes stay
    plain (the loopback test servers speak HTTP)."""

    def __init__(self, stream: httpcore.AsyncNetworkStream, names: list[str]) -> None:
        self.stream, self.names = stream, names

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self.stream.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self.stream.write(buffer, timeout)

    async def aclose(self) -> None:
        await self.stream.aclose()

    async def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        self.names.append(server_hostname or "")
        return self

    def get_extra_info(self, info: str) -> Any:
        return self.stream.get_extra_info(info)


class Network(httpcore.AsyncNetworkBackend):
    """Records each (host, port) it is asked to connect to, then connects to the loopback
    server ``ports`` gives for that host (``default`` otherwise): no packet leaves."""

    def __init__(self, default: int, ports: dict[str, int] | None = None) -> None:
        self.default, self.ports = default, ports or {}
        self.asked: list[tuple[str, int]] = []
        self.tls_names: list[str] = []
        self.real = httpcore.AnyIOBackend()
        self.real_connect = httpcore.AnyIOBackend.connect_tcp  # a test may patch the class

    async def connect_tcp(
        self, host: str, port: int, timeout: float | None = None, **_: Any
    ) -> httpcore.AsyncNetworkStream:
        self.asked.append((host, port))
        port_here = self.ports.get(host, self.default)
        stream = await self.real_connect(self.real, "127.0.0.1", port_here, timeout=timeout)
        return PlainTLS(stream, self.tls_names)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class Origin:
    """A plain-HTTP server on loopback standing for named hosts: answers by Host header
    (``routes[host] = (status, headers, body)``) and records (method, Host, path)."""

    def __init__(self, routes: dict[str, tuple[int, dict[str, str], bytes]]) -> None:
        self.routes = routes
        self.seen: list[tuple[str, str, str]] = []
        origin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def answer(self) -> None:
                host = self.headers.get("host", "").rsplit(":", 1)[0]
                origin.seen.append((self.command, host, self.path))
                status, headers, body = origin.routes.get(host, (404, {}, b""))
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def origin() -> Iterator[Origin]:
    o = Origin({})
    yield o
    o.close()


def callback_row(url: str) -> TaskRow:
    now = time.time()
    return TaskRow(id="t" * 32, status="succeeded", created_at=now, finished_at=now,
                   callback_url=url, callback_attempts=0)  # fmt: skip


# --- 5: one address policy ---------------------------------------------------------------------

REFUSED = {
    # IPv4: private, loopback, link-local (cloud metadata), shared, reserved, multicast
    "10.0.0.1": "private", "172.16.0.1": "private", "192.168.1.1": "private",
    "127.0.0.1": "loopback", "169.254.169.254": "metadata", "100.64.0.1": "CGNAT",
    "0.0.0.0": "this host", "192.0.2.1": "documentation", "198.18.0.1": "benchmarking",
    "224.0.0.1": "multicast", "240.0.0.1": "reserved", "255.255.255.255": "broadcast",
    # IPv6 of its own
    "::1": "loopback", "::": "unspecified", "fe80::1": "link-local",
    "fe80::1%eth0": "link-local with a zone", "fd12:3456::1": "unique local",
    "fec0::1": "site-local", "ff02::1": "multicast", "ff0e::1": "global multicast",
    "2001:db8::1": "documentation", "100::1": "discard",
    # IPv6 carrying an IPv4: judged by the IPv4
    "::ffff:127.0.0.1": "mapped loopback", "::ffff:10.0.0.1": "mapped private",
    "::127.0.0.1": "compatible loopback", "::a00:1": "compatible private",
    "::ffff:0:10.0.0.1": "SIIT private", "::ffff:0:169.254.169.254": "SIIT metadata",
    "64:ff9b::10.0.0.1": "NAT64 private", "64:ff9b::127.0.0.1": "NAT64 loopback",
    "64:ff9b::169.254.169.254": "NAT64 metadata",
    "64:ff9b:1::a00:1": "local-use NAT64", "64:ff9b:1::5db8:d822": "local-use NAT64, public v4",
    "2002:a00:1::1": "6to4 private", "2002:7f00:1::": "6to4 loopback",
    "2002:a9fe:a9fe::": "6to4 metadata",
    "2001:0:4136:e378:8000:63bf:f5ff:fffe": "Teredo, private client",
    "2001:0:a00:1:8000:63bf:a247:27dd": "Teredo, private server",
}  # fmt: skip
ALLOWED = {
    PUBLIC: "public IPv4", "8.8.8.8": "public IPv4", "2606:4700:4700::1111": "public IPv6",
    "::ffff:93.184.216.34": "mapped public", "64:ff9b::93.184.216.34": "NAT64 public",
    "2002:5db8:d822::1": "6to4 public", "2001:0:4136:e378:8000:63bf:a247:27dd": "Teredo public",
}  # fmt: skip


@pytest.mark.parametrize("address", REFUSED, ids=[f"{a} {w}" for a, w in REFUSED.items()])
def test_the_address_policy_refuses(address: str) -> None:
    assert not is_public_address(address)


@pytest.mark.parametrize("address", ALLOWED, ids=[f"{a} {w}" for a, w in ALLOWED.items()])
def test_the_address_policy_allows_public_unicast(address: str) -> None:
    assert is_public_address(address)


# --- 4: resolved once, checked, connected to what was checked ----------------------------------


async def test_a_rebinding_name_is_connected_to_at_the_address_that_was_checked(
    origin: Origin,
) -> None:
    origin.routes["rebind.test"] = (200, {}, b"the document")
    dns = StubDNS({"rebind.test": [[PUBLIC], ["127.0.0.1"]]})
    network = Network(origin.port)
    async with server_client(allow_private=False, resolver=dns, network_backend=network) as http:
        data = await fetch_url("http://rebind.test/doc.png", max_bytes=1000, timeout=10,
                               allow_private=False, client=http)  # fmt: skip
    assert data == b"the document"
    assert dns.asked == ["rebind.test"]  # once: nothing resolves it again to connect
    assert network.asked == [(PUBLIC, 80)]
    assert origin.seen == [("GET", "rebind.test", "/doc.png")]  # Host keeps the name


@pytest.mark.parametrize(
    "answer", [["127.0.0.1"], [PUBLIC, "10.0.0.1"], ["::ffff:169.254.169.254"], ["fec0::1"]]
)
async def test_a_name_with_any_internal_address_is_refused_before_connecting(
    origin: Origin, answer: list[str]
) -> None:
    dns = StubDNS({"inside.test": [answer, [PUBLIC]]})
    network = Network(origin.port)
    async with server_client(allow_private=False, resolver=dns, network_backend=network) as http:
        with pytest.raises(URLNotAllowedError, match="not a public address"):
            await fetch_url("https://inside.test/x", max_bytes=1000, timeout=10,
                            allow_private=False, client=http)  # fmt: skip
    assert network.asked == [] and origin.seen == []


async def test_every_redirect_hop_is_resolved_once_checked_and_pinned(origin: Origin) -> None:
    origin.routes["start.test"] = (302, {"location": "http://rebind.test/doc"}, b"")
    origin.routes["rebind.test"] = (200, {}, b"landed")
    origin.routes["to-inside.test"] = (302, {"location": "http://inside.test/"}, b"")
    origin.routes["to-metadata.test"] = (301, {"location": "http://169.254.169.254/x"}, b"")
    origin.routes["to-bad.test"] = (307, {"location": "http://[::1/"}, b"")
    dns = StubDNS({
        "start.test": [[PUBLIC]], "rebind.test": [[PUBLIC_2], ["127.0.0.1"]],
        "to-inside.test": [[PUBLIC]], "inside.test": [["10.1.2.3"]],
        "to-metadata.test": [[PUBLIC]], "to-bad.test": [[PUBLIC]],
    })  # fmt: skip
    network = Network(origin.port)

    async def fetch(url: str) -> bytes:
        async with server_client(allow_private=False, resolver=dns, network_backend=network) as h:
            return await fetch_url(url, max_bytes=1000, timeout=10, allow_private=False, client=h)

    assert await fetch("http://start.test/") == b"landed"
    assert network.asked == [(PUBLIC, 80), (PUBLIC_2, 80)]
    assert dns.asked == ["start.test", "rebind.test"]
    network.asked.clear()
    with pytest.raises(URLNotAllowedError, match=r"10\.1\.2\.3"):
        await fetch("http://to-inside.test/")
    with pytest.raises(URLNotAllowedError, match=r"169\.254\.169\.254"):
        await fetch("http://to-metadata.test/")
    with pytest.raises(URLFetchError, match="Invalid URL in location"):
        await fetch("http://to-bad.test/")
    assert network.asked == [(PUBLIC, 80)] * 3  # the hops themselves never connected


async def test_a_callback_connects_to_the_checked_address_and_a_rebound_name_is_refused(
    receiver: Receiver,
) -> None:
    port = int(receiver.url.rsplit(":", 1)[1].split("/")[0])
    dns = StubDNS({"hooks.test": [[PUBLIC], ["127.0.0.1"]]})
    network = Network(port)
    policy = CallbackPolicy(secret=SECRET, allow_private=False)
    row = callback_row("https://hooks.test/hook?token=abc")
    async with server_client(allow_private=False, resolver=dns, network_backend=network) as http:
        record, state, _ = await deliver(row, policy, http)
    assert state == DELIVERED and record["status_code"] == 200, record
    assert network.asked == [(PUBLIC, 443)]
    assert network.tls_names == ["hooks.test"]  # SNI and the certificate check keep the name
    assert len(receiver.delivered()) == 1
    # A new connection resolves again, and checks again: now it answers loopback.
    async with server_client(allow_private=False, resolver=dns, network_backend=network) as http:
        record, state, _ = await deliver(row, policy, http)
    assert state == DEAD and record["error"].startswith("url_not_allowed"), record
    # A URL that cannot be used is final too, never an unexpected error retried.
    async with server_client(allow_private=False, resolver=dns, network_backend=network) as http:
        record, state, _ = await deliver(callback_row("https://[::1/hook"), policy, http)
    assert state == DEAD and record["error"].startswith("invalid_url"), record
    assert network.asked == [(PUBLIC, 443)] and len(receiver.calls) == 1


def task_settings(tmp_path: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "data_dir": tmp_path, "lanes": 1, "log_json": False, "allow_private_urls": False,
        "webhook_secret": SECRET, "callback_retry_delays": (0.2, 0.4),
    }  # fmt: skip
    return Settings(**(base | overrides))


async def finished(client: httpx.AsyncClient, task_id: str, callback: bool) -> dict[str, Any]:
    """The task once it has ended, and its callback (if any) has settled."""
    deadline = time.monotonic() + 120
    while True:
        task: dict[str, Any] = (await client.get(f"/task/{task_id}")).json()
        callback_done = not callback or task["callback"]["state"] in ("delivered", "dead")
        if task["status"] not in ("queued", "running") and callback_done:
            return task
        assert time.monotonic() < deadline, task
        await asyncio.sleep(0.05)


async def test_the_servers_own_clients_connect_to_the_checked_address(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    file_server: str, receiver: Receiver,
) -> None:  # fmt: skip
    """The clients the service builds (API, embedded workers, Celery worker) are pinned: the
    system resolver is asked once per connection, and the socket layer is handed the address,
    never the name (which it would resolve again)."""
    lookups: list[str] = []
    real_getaddrinfo = socket.getaddrinfo
    names = {"img.test": PUBLIC, "hooks.test": PUBLIC_2}

    def stub_getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in names:
            lookups.append(host)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (names[host], int(port)))]
        return real_getaddrinfo(host, port, *args, **kwargs)  # loopback_only's check

    ports = {PUBLIC: int(file_server.rsplit(":", 1)[1]),
             PUBLIC_2: int(receiver.url.rsplit(":", 1)[1].split("/")[0])}  # fmt: skip
    network = Network(default=0, ports=ports)
    monkeypatch.setattr(socket, "getaddrinfo", stub_getaddrinfo)

    # Where any httpx client of this process connects: handed to the loopback servers.
    async def connect(_: object, host: str, port: int, **kw: Any) -> httpcore.AsyncNetworkStream:
        return await network.connect_tcp(host, port, **kw)

    monkeypatch.setattr(httpcore.AnyIOBackend, "connect_tcp", connect)
    async for client in client_for(task_settings(tmp_path), engine):
        r = await client.post("/ocr", json={"image_url": "http://img.test/en_line_long_text.jpg"})
        assert r.status_code == 200 and r.json()["text"].startswith(IMAGE_TEXT), r.text
        r = await client.post("/ocr/async", json={
            "image_url": "http://img.test/en_line_long_text.jpg",
            "callback_url": "https://hooks.test/hook?token=abc",
        })  # fmt: skip
        assert r.status_code == 202, r.text
        task = await finished(client, r.json()["task_id"], callback=True)
        assert task["status"] == "succeeded" and task["callback"]["state"] == "delivered", task
    async with celery_app._http_client(task_settings(tmp_path)) as http:
        data = await fetch_url("http://img.test/en_line_long_text.jpg", max_bytes=10**6,
                               timeout=10, allow_private=False, client=http)  # fmt: skip
    assert data == IMAGE
    # /ocr, the task's fetch, its callback, the Celery worker's fetch: each to an address.
    assert network.asked == [(PUBLIC, 80), (PUBLIC, 80), (PUBLIC_2, 443), (PUBLIC, 80)]
    assert network.tls_names == ["hooks.test"]
    # Each connection's own lookup, plus the early check of the task's two URLs at submission.
    assert sorted(lookups) == ["hooks.test"] * 2 + ["img.test"] * 4


# --- 4: no proxy from the environment ----------------------------------------------------------


class ProxyStub:
    """An HTTP proxy on loopback that records what it is asked and answers 502."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def answer(self) -> None:
                stub.seen.append(self.requestline)
                self.send_response(502)
                self.send_header("content-length", "0")
                self.end_headers()

            do_GET = do_POST = do_CONNECT = answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def proxy_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[ProxyStub]:
    stub = ProxyStub()
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, stub.url)
        monkeypatch.setenv(name.lower(), stub.url)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    yield stub
    stub.server.shutdown()
    stub.server.server_close()


async def test_proxy_variables_in_the_environment_are_not_used(
    engine: Engine, tmp_path: Path, file_server: str, receiver: Receiver, proxy_env: ProxyStub
) -> None:
    image_url = f"{file_server}/en_line_long_text.jpg"
    async for client in client_for(task_settings(tmp_path, allow_private_urls=True), engine):
        r = await client.post("/ocr", json={"image_url": image_url})
        assert r.status_code == 200, r.text
        body = {"image_url": image_url, "callback_url": receiver.url}
        r = await client.post("/ocr/async", json=body)
        task = await finished(client, r.json()["task_id"], callback=True)
        assert task["status"] == "succeeded" and task["callback"]["state"] == "delivered", task
    async with celery_app._http_client(task_settings(tmp_path, allow_private_urls=True)) as http:
        assert await fetch_url(image_url, max_bytes=10**6, timeout=10, allow_private=True,
                               client=http) == IMAGE  # fmt: skip
    # Our clients would have asked it for the loopback servers. (onnxruntime's own telemetry
    # uploader honours the variables: it is no server-side client of ours, and not counted.)
    assert [line for line in proxy_env.seen if "127.0.0.1" in line] == [], proxy_env.seen


# --- 6: secrets out of logs and messages -------------------------------------------------------


@pytest.fixture
def server_logs() -> Iterator[io.StringIO]:
    """The logging set-up of `ocrserve serve` (at debug, the most it prints), captured."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {n: logging.getLogger(n).level for n in ("httpx", "httpcore")}
    configure("debug")
    out = io.StringIO()
    mine = logging.StreamHandler(out)
    mine.setFormatter(JSONFormatter())
    root.handlers[:] = [*handlers, mine]  # configure's stderr handler swapped for ours
    try:
        yield out
    finally:
        root.removeHandler(mine)
        root.setLevel(level)
        for name, was in levels.items():
            logging.getLogger(name).setLevel(was)


async def test_secrets_in_urls_stay_out_of_logs_and_error_messages(
    engine: Engine, tmp_path: Path, file_server: str, receiver: Receiver,
    server_logs: io.StringIO,
) -> None:  # fmt: skip
    def secret(url: str, n: int) -> str:
        return url.replace("http://", f"http://user:pw-SECRET{n}@") + f"?X-Amz-Signature=SECRET{n}"

    image = secret(f"{file_server}/en_line_long_text.jpg", 1)
    missing = secret(f"{file_server}/missing.png", 2)
    hook = secret(receiver.url, 3)
    async for client in client_for(task_settings(tmp_path, allow_private_urls=True), engine):
        ok = await client.post("/ocr", json={"image_url": image})
        assert ok.status_code == 200, ok.text
        failed = await client.post("/ocr", json={"image_url": missing})
        assert failed.json()["error"]["code"] == "url_fetch_failed"
        good = await client.post("/ocr/async", json={"image_url": image, "callback_url": hook})
        bad = await client.post("/ocr/async", json={"image_url": missing, "callback_url": hook})
        tasks = [await finished(client, r.json()["task_id"], callback=True) for r in (good, bad)]
        assert [t["status"] for t in tasks] == ["succeeded", "failed"]
        assert [t["callback"]["state"] for t in tasks] == ["delivered", "delivered"]
    shown = f"{file_server}/missing.png"  # userinfo and query redacted, the rest kept
    assert shown in failed.json()["error"]["message"]
    assert shown in tasks[1]["error"]["message"]
    event = receiver.delivered()[-1]["event"]
    logs = server_logs.getvalue()
    assert receiver.url in logs  # the callback attempts are logged, by the receiver's URL
    for text in (logs, failed.text, json.dumps(tasks[1]["error"]), json.dumps(event)):
        assert "SECRET" not in text and "pw-" not in text, text


# --- 11: a bad URL is a 4xx with a code --------------------------------------------------------

BAD_URLS = {
    "http://127.0.0.1:99999/": "invalid_url",  # port out of range
    "http://example.com:0/": "invalid_url",
    "http://example.com:port/": "invalid_url",
    "http://[::1/": "invalid_url",  # unbalanced bracket
    "http://[1.2.3.4]/": "invalid_url",
    "http://a..b/": "invalid_url",  # empty label
    "http://.a.example/": "invalid_url",
    f"http://{'a' * 64}.example/": "invalid_url",  # label over 63
    "http://" + "abcdefghi." * 26 + "example/": "invalid_url",  # name over 253
    "http://xn--/": "invalid_url",  # IDNA refuses
    "http://😀.example/": "invalid_url",
    "http://-lead.example/": "invalid_url",
    "http://exa%41mple.com/": "invalid_url",
    "http://exa mple.com/": "invalid_url",
    "http://example.com/\r\nX-Injected: 1": "invalid_url",
    "http://127.1/": "invalid_url",  # IPv4 forms only inet_aton reads
    "http://2130706433/": "invalid_url",
    "http://0x7f.0.0.1/": "invalid_url",
    "http://[fe80::1%25eth0]/": "invalid_url",
    "http:///no-host": "invalid_url",
    "http://" + "a" * 9000: "invalid_url",
    "ftp://example.com/x": "url_not_allowed",
    "file:///etc/passwd": "url_not_allowed",
    "http://10.0.0.1/x": "url_not_allowed",
    "http://169.254.169.254/latest/meta-data": "url_not_allowed",
    "http://[::ffff:127.0.0.1]/": "url_not_allowed",
    "http://[::a00:1]/": "url_not_allowed",
    "http://[::ffff:0:a00:1]/": "url_not_allowed",
    "http://[64:ff9b::a00:1]/": "url_not_allowed",
    "http://[64:ff9b:1::a00:1]/": "url_not_allowed",
    "http://[2002:a00:1::]/": "url_not_allowed",
    "http://[2001:0:4136:e378:8000:63bf:f5ff:fffe]/": "url_not_allowed",
    "http://[fec0::1]/": "url_not_allowed",
}


def https(url: str) -> str:
    return "https://" + url.removeprefix("http://") if url.startswith("http://") else url


async def test_a_bad_or_internal_url_is_a_4xx_with_a_code(engine: Engine, tmp_path: Path) -> None:
    img = base64.b64encode(IMAGE).decode()
    async for client in client_for(task_settings(tmp_path), engine):
        for url, code in BAD_URLS.items():
            for route, body in (
                ("/ocr", {"image_url": url}),
                ("/ocr/async", {"image_url": url}),
                ("/ocr/async", {"image_base64": img, "callback_url": https(url)}),
            ):
                r = await client.post(route, json=body)
                assert r.status_code == 422, (route, body, r.text)
                assert r.json()["error"]["code"] == code, (route, body, r.text)


# --- a real server, in a network namespace of its own ------------------------------------------

NETNS_CASES = {  # each URL on /ocr, /ocr/async image_url and callback_url (made https)
    "http://10.0.0.1/x.png": "url_not_allowed",
    "http://[64:ff9b::a9fe:a9fe]/latest": "url_not_allowed",
    "http://[::ffff:0:a00:1]/x": "url_not_allowed",
    "http://[::a00:1]/x": "url_not_allowed",
    "http://[2002:a00:1::1]/x": "url_not_allowed",
    "http://[fec0::1]/x": "url_not_allowed",
    "http://127.0.0.1:99999/": "invalid_url",
    "http://[::1/": "invalid_url",
    "http://a..b/": "invalid_url",
    f"http://{'a' * 64}.example/": "invalid_url",
}


def netns_probe(workdir: str) -> None:
    """Run inside ``unshare -n``: a real `ocrserve serve` on loopback, sent NETNS_CASES; prints
    one JSON line per request: [route, field, url, status, code]."""
    work = Path(workdir)
    port = free_port()
    env = os.environ | {"OCRSERVE_DATA_DIR": str(work / "data"), "OCRSERVE_LANES": "1"}
    env.pop("OCRSERVE_ALLOW_PRIVATE_URLS", None)
    proc = start_serve(env, port, work / "server.log")
    img = base64.b64encode(IMAGE).decode()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=60) as c:
            for url in NETNS_CASES:
                for route, field, body in (
                    ("/ocr", "image_url", {"image_url": url}),
                    ("/ocr/async", "image_url", {"image_url": url}),
                    (
                        "/ocr/async",
                        "callback_url",
                        {"image_base64": img, "callback_url": https(url)},
                    ),
                ):
                    r = c.post(route, json=body)
                    code = r.json().get("error", {}).get("code") if r.content else None
                    print(json.dumps([route, field, url, r.status_code, code]), flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=60)


@pytest.mark.skipif(
    shutil.which("unshare") is None or subprocess.run(["unshare", "-n", "true"]).returncode != 0,
    reason="needs unshare -n (a network namespace with only loopback)",
)
def test_a_real_server_refuses_internal_and_bad_urls(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[1]
    probe = f"import tests.test_ssrf as t; t.netns_probe({str(tmp_path)!r})"
    done = subprocess.run(
        ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" -c "$1"',
         sys.executable, probe],
        cwd=repo, capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    log = (tmp_path / "server.log").read_text() if (tmp_path / "server.log").exists() else ""
    assert done.returncode == 0, done.stdout + done.stderr + log
    answers = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("[")]
    assert len(answers) == 3 * len(NETNS_CASES), done.stdout
    for route, field, url, status, code in answers:
        assert (status, code) == (422, NETNS_CASES[url]), (route, field, url, status, code)
    assert "Traceback" not in log
