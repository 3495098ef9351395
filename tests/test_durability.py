"""Nothing accepted is lost: SIGKILL of the embedded server, and of a Celery worker mid-task.

Real processes, real services: `ocrserve serve` on SQLite; `ocrserve worker` on RabbitMQ with
PostgreSQL (postgresql://postgres@127.0.0.1:5432/test), as the issue asks.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy

from .conftest import SECRET, Receiver, free_port, start_serve

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    return os.environ | {
        "OCRSERVE_DATA_DIR": str(tmp_path),
        "OCRSERVE_ALLOW_PRIVATE_URLS": "1",
        "OCRSERVE_WEBHOOK_SECRET": SECRET,
        "OCRSERVE_CALLBACK_RETRY_DELAYS": "[0.2, 0.4, 0.6]",
        "OCRSERVE_TASK_LEASE_S": "3",
        "OCRSERVE_LOG_JSON": "false",
        **extra,
    }


def submit_pdfs(base: str, n: int, file_server: str, receiver: Receiver) -> list[str]:
    """Submit ``n`` two-page PDF tasks with callbacks; their ids in order."""
    ids = []
    for k in range(n):
        r = requests.post(
            f"{base}/ocr/async",
            json={"image_url": f"{file_server}/irs_f1040nr.pdf", "callback_url": receiver.url,
                  "max_pages": 2, "metadata": {"n": k}},
            timeout=10,
        )  # fmt: skip
        assert r.status_code == 202
        ids.append(r.json()["task_id"])
    return ids


def wait_all(base: str, ids: list[str], timeout: float = 240) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        tasks = {i: requests.get(f"{base}/task/{i}", timeout=10).json() for i in ids}
        if all(t["status"] not in ("queued", "running") for t in tasks.values()):
            return tasks
        assert time.monotonic() < deadline, {i: t["status"] for i, t in tasks.items()}
        time.sleep(0.3)


def test_the_articles_async_client_works_unchanged(
    tmp_path: Path, receiver: Receiver, file_server: str
) -> None:
    port = free_port()
    proc = start_serve(env_for(tmp_path), port, tmp_path / "server.log")
    try:
        URL, HOOK = f"{file_server}/en_doc_paragraph.jpg", receiver.url
        # From the mission article, with only the host and port changed:
        r = requests.post(
            f"http://localhost:{port}/ocr/async",
            json={"image_url": URL, "callback_url": HOOK},
            timeout=10,
        )
        assert r.status_code == 202
        task_id, status_url = r.json()["task_id"], r.json()["status_url"]
        deadline = time.monotonic() + 60
        while not receiver.delivered():
            assert time.monotonic() < deadline
            time.sleep(0.1)
        event = receiver.delivered()[0]["event"]
        assert event["task_id"] == task_id and event["status"] == "succeeded"
        assert event["text"].endswith("specified as follows.")
        assert requests.get(status_url, timeout=10).json()["status"] == "succeeded"
    finally:
        proc.terminate()
        proc.wait(60)


def test_sigkill_of_the_embedded_server_loses_nothing(
    tmp_path: Path, receiver: Receiver, file_server: str
) -> None:
    env = env_for(tmp_path, OCRSERVE_TASK_WORKERS="1", OCRSERVE_MAX_BATCH_SIZE="1")
    log = tmp_path / "server.log"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_serve(env, port, log)
    ids = submit_pdfs(base, 4, file_server, receiver)
    deadline = time.monotonic() + 60
    while requests.get(f"{base}/task/{ids[0]}", timeout=10).json()["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # mid-task, three more queued
    proc.wait(30)

    proc = start_serve(env, port, log)
    try:
        tasks = wait_all(base, ids)
        assert {t["status"] for t in tasks.values()} == {"succeeded"}
        assert all("Nonresident Alien" in t["result"]["text"] for t in tasks.values())
        deadline = time.monotonic() + 60
        while {c["event"]["task_id"] for c in receiver.delivered()} != set(ids):
            assert time.monotonic() < deadline, receiver.calls
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(60)


@pytest.fixture
def celery_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    # A schema of its own: no rows of another run (or of a benchmark) on the same database.
    schema = f"ocrserve_test_{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://"))
    with admin.begin() as conn:
        conn.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))
    yield env_for(
        tmp_path,
        OCRSERVE_DATABASE_URL=f"{PG_URL}?options=-csearch_path%3D{schema}",
        OCRSERVE_BROKER_URL=AMQP_URL,
        OCRSERVE_TASK_QUEUE=f"ocrserve-test-{uuid.uuid4().hex[:8]}",  # no leftovers of other runs
        OCRSERVE_LANES="1",
    )
    with admin.begin() as conn:
        conn.execute(sqlalchemy.text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "ocrserve", "worker"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )


def test_a_celery_worker_killed_mid_task_another_finishes_it_once(
    tmp_path: Path, celery_env: dict[str, str], receiver: Receiver, file_server: str
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    api = start_serve(celery_env, port, tmp_path / "api.log")
    first = start_worker(celery_env, tmp_path / "worker1.log")
    second = None
    try:
        ids = submit_pdfs(base, 3, file_server, receiver)
        deadline = time.monotonic() + 300  # the worker loads its models first
        while requests.get(f"{base}/task/{ids[0]}", timeout=10).json()["status"] != "running":
            assert time.monotonic() < deadline, (tmp_path / "worker1.log").read_text()
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait(30)
        second = start_worker(celery_env, tmp_path / "worker2.log")
        tasks = wait_all(base, ids)
        assert {t["status"] for t in tasks.values()} == {"succeeded"}, (
            tmp_path / "worker2.log"
        ).read_text()
        deadline = time.monotonic() + 60
        while {c["event"]["task_id"] for c in receiver.delivered()} != set(ids):
            assert time.monotonic() < deadline, receiver.calls
            time.sleep(0.1)
        url = celery_env["OCRSERVE_DATABASE_URL"]
        engine = sqlalchemy.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        with engine.begin() as conn:
            runs = dict(conn.execute(sqlalchemy.text("SELECT id, runs FROM ocr_tasks")).all())
        engine.dispose()
        assert runs[ids[0]] == 2  # the killed run, then exactly one more
        assert all(runs[i] == 1 for i in ids[1:])
        # one delivery per task: a redelivered message for a finished task was skipped
        assert sorted(c["event"]["task_id"] for c in receiver.delivered()) == sorted(ids)
    finally:
        for p in (first, second, api):
            if p is not None and p.poll() is None:
                p.terminate()
                p.wait(60)
