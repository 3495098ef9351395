from __future__ import annotations

import asyncio
import base64
import http.server
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from ocrserve import Engine, Settings
from ocrserve.api import create_app
from ocrserve.webhooks import verify

FIXTURES = Path(__file__).parent / "fixtures"
#: The project's evaluation data, beside the repository (read at test time, never committed).
SHARED_EVAL = Path(__file__).resolve().parents[1].parent / "shared" / "eval"


def cer(reference: str, hypothesis: str) -> float:
    """Character error rate with whitespace runs collapsed (as the project's scorer does)."""
    ref, hyp = " ".join(reference.split()), " ".join(hypothesis.split())
    prev = list(range(len(hyp) + 1))
    for i, a in enumerate(ref, 1):
        cur = [i]
        for j, b in enumerate(hyp, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a != b)))
        prev = cur
    return prev[-1] / max(len(ref), 1)


@pytest.fixture(scope="session")
def engine() -> Engine:
    return Engine.from_settings(Settings(intra_op_threads=2))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_serve(
    env: dict[str, str], port: int, log: Path, *, wrapper: tuple[str, ...] = ()
) -> subprocess.Popen[bytes]:
    """Start a real `ocrserve serve` on loopback (under ``wrapper``, a command prefix); return
    once its /ready answers 200."""
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [*wrapper, sys.executable, "-m", "ocrserve", "serve", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"ocrserve serve did not become ready:\n{log.read_text()}")
        time.sleep(0.2)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def client_for(
    s: Settings, engine: Engine, *, tasks_up: bool = True
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app in-process, its lifespan run. The task backend starts after the app
    is ready; with ``tasks_up`` (the default) the client is handed over once ``/ready`` says it
    is up, so a test's first task write meets a running store."""
    app = create_app(s, engine=engine)
    async with LifespanManager(app, startup_timeout=120, shutdown_timeout=120) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ocr.test") as client:
            if tasks_up:
                await wait_ready_tasks(client, ("up", None))
            yield client


async def wait_ready_tasks(
    client: httpx.AsyncClient, states: tuple[str | None, ...], timeout: float = 60
) -> dict[str, Any]:
    """Poll ``/ready`` until its ``tasks`` (the task backend's state) is one of ``states``."""
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = (await client.get("/ready")).json()
        if body.get("tasks") in states:
            return body
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.02)


@pytest.fixture
def file_server() -> Iterator[str]:
    """A plain HTTP server on loopback serving the fixtures folder."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(FIXTURES), **kwargs)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


#: The webhook secret the test servers sign with and the test receivers verify.
SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


class Receiver:
    """A webhook receiver on loopback: checks every signature, answers from a script."""

    def __init__(self) -> None:
        self.script: list[tuple[int, dict[str, str]]] = []  # answers, then 200 forever
        self.calls: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                event = verify(body, dict(self.headers.items()), SECRET)  # raises if forged
                with receiver.lock:
                    status, headers = receiver.script.pop(0) if receiver.script else (200, {})
                    receiver.calls.append(
                        {"at": time.monotonic(), "event": event, "status": status,
                         "id": self.headers["webhook-id"]}
                    )  # fmt: skip
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def delivered(self) -> list[dict[str, Any]]:
        with self.lock:
            return [c for c in self.calls if 200 <= c["status"] < 300]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()
