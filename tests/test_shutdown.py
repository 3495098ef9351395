"""Graceful shutdown: SIGTERM drains a real server within its budget; nothing is lost."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import requests
import sqlalchemy
from asgi_lifespan import LifespanManager

from ocrserve import Engine, Settings
from ocrserve.api import create_app
from ocrserve.api.drain import Drain

from .conftest import FIXTURES, SECRET, Receiver, free_port, start_serve

PDF = (FIXTURES / "irs_f1040nr.pdf").read_bytes()
PID_1 = ("unshare", "--pid", "--fork", "--kill-child")


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    import os

    return os.environ | {
        "OCRSERVE_DATA_DIR": str(tmp_path),
        "OCRSERVE_ALLOW_PRIVATE_URLS": "1",
        "OCRSERVE_WEBHOOK_SECRET": SECRET,
        "OCRSERVE_LOG_JSON": "false",
        "OCRSERVE_LANES": "1",
        "OCRSERVE_TASK_WORKERS": "1",
        "OCRSERVE_MAX_BATCH_SIZE": "1",
        **extra,
    }


def task_row(db: Path, task_id: str) -> dict[str, Any]:
    engine = sqlalchemy.create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        row = (
            conn.execute(
                sqlalchemy.text(
                    "SELECT status, lease_until, worker, runs FROM ocr_tasks WHERE id=:i"
                ),
                {"i": task_id},
            )
            .mappings()
            .one()
        )
    engine.dispose()
    return dict(row)


def test_sigterm_answers_running_requests_in_json_and_releases_running_tasks(
    tmp_path: Path, receiver: Receiver, file_server: str
) -> None:
    budget = 8.0  # requests get 3 s, the whole process 8 s
    env = env_for(tmp_path, OCRSERVE_SHUTDOWN_TIMEOUT_S=str(budget))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # As in a container: the server is PID 1 of its own PID namespace, where a signal it does
    # not handle is ignored, so the exit code is its own, not a re-raised SIGTERM's.
    proc = start_serve(env, port, tmp_path / "server.log", wrapper=PID_1)
    server = psutil.Process(proc.pid).children()[0]
    try:
        r = requests.post(
            f"{base}/ocr/async",
            # pdf_text=ocr: pages recognised, seconds each (their text layer takes ms)
            json={"image_url": f"{file_server}/irs_f1040nr.pdf", "max_pages": 2,
                  "pdf_text": "ocr", "callback_url": receiver.url},
            timeout=10,
        )  # fmt: skip
        task_id = r.json()["task_id"]
        deadline = time.monotonic() + 60
        while requests.get(f"{base}/task/{task_id}", timeout=10).json()["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        answer: dict[str, Any] = {}

        def sync_request() -> None:  # five PDF pages behind the task's: far past the grace
            resp = httpx.post(
                f"{base}/ocr", files={"image": ("f.pdf", PDF)},
                data={"max_pages": "5", "pdf_text": "ocr"},
                timeout=120,
            )  # fmt: skip
            answer.update(status=resp.status_code, headers=resp.headers, body=resp.text)

        client = threading.Thread(target=sync_request)
        client.start()
        deadline = time.monotonic() + 60
        while requests.get(f"{base}/ready", timeout=10).json()["queued_pages"] < 5:
            assert time.monotonic() < deadline  # the request's pages are queued
            time.sleep(0.05)
        server.send_signal(signal.SIGTERM)
        # within its budget (plus this machine's slack), and cleanly: a lane still inside the
        # engine at exit must not crash the interpreter's teardown (exit 139)
        assert proc.wait(budget + 10) == 0, (tmp_path / "server.log").read_text()[-3000:]
        client.join(30)
        assert answer["status"] == 503, answer
        assert answer["headers"]["content-type"] == "application/json"
        assert '"code":"shutting_down"' in answer["body"].replace(" ", "")
        assert int(answer["headers"]["retry-after"]) >= 1
        row = task_row(tmp_path / "tasks.db", task_id)
        # released for the next process: queued, no lease, the interrupted run not counted
        assert row == {"status": "queued", "lease_until": None, "worker": None, "runs": 0}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    proc = start_serve(env, port, tmp_path / "server.log")
    try:
        deadline = time.monotonic() + 120
        while (t := requests.get(f"{base}/task/{task_id}", timeout=10).json())["status"] in (
            "queued", "running",
        ):  # fmt: skip
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert t["status"] == "succeeded"
        assert task_row(tmp_path / "tasks.db", task_id)["runs"] == 1
    finally:
        proc.terminate()
        proc.wait(60)


@pytest.mark.anyio
async def test_while_draining_new_requests_get_a_json_503_and_probes_answer(
    engine: Engine, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path, lanes=1, log_json=False, webhook_secret=SECRET)
    drain = Drain(settings.shutdown_timeout_s)
    app = create_app(settings, engine=engine, drain=drain)
    async with LifespanManager(app, startup_timeout=120) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        client = httpx.AsyncClient(transport=transport, base_url="http://ocr.test")
        drain.begin()  # what SIGTERM does in `ocrserve serve`
        r = await client.post("/ocr", files={"image": ("x.jpg", b"...")})
        assert r.status_code == 503 and r.json()["error"]["code"] == "shutting_down"
        assert r.headers["retry-after"] == "5"
        ready = await client.get("/ready")
        assert ready.status_code == 503 and ready.json()["checks"]["accepting"] is False
        assert (await client.get("/health")).status_code == 200
        await client.aclose()
