"""Nothing accepted is lost: SIGKILL of the embedded server, and of a Celery worker mid-task.

Real processes, real services: `ocrserve serve` on SQLite; `ocrserve worker` on RabbitMQ with
PostgreSQL (postgresql://postgres@127.0.0.1:5432/test), as the issue asks.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kombu
import pytest
import requests
import sqlalchemy
from PIL import Image

from .conftest import FIXTURES, SECRET, Receiver, free_port, start_serve

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
    """Submit ``n`` two-page PDF tasks with callbacks, recognised (seconds a page, not the
    text layer's milliseconds): their ids in order."""
    ids = []
    for k in range(n):
        r = requests.post(
            f"{base}/ocr/async",
            json={"image_url": f"{file_server}/irs_f1040nr.pdf", "callback_url": receiver.url,
                  "max_pages": 2, "pdf_text": "ocr", "metadata": {"n": k}},
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


@pytest.mark.slow
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


def worker_pid(env: dict[str, str], task_id: str) -> int:
    """The pid of the worker process holding a task (worker names end in -<pid>-<thread>)."""
    url = env["OCRSERVE_DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://")
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:
        name = conn.execute(
            sqlalchemy.text("SELECT worker FROM ocr_tasks WHERE id = :id"), {"id": task_id}
        ).scalar_one()
    engine.dispose()
    return int(name.rsplit("-", 2)[-2])


def task_rows(env: dict[str, str]) -> dict[str, dict[str, Any]]:
    url = env["OCRSERVE_DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://")
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:
        rows = conn.execute(sqlalchemy.text("SELECT * FROM ocr_tasks")).mappings().all()
    engine.dispose()
    return {r["id"]: dict(r) for r in rows}


def ready_messages(queue: str) -> int:
    with kombu.Connection(AMQP_URL) as conn:
        _, count, _ = conn.default_channel.queue_declare(queue, passive=True)
        return int(count)


@pytest.mark.slow
def test_a_celery_worker_killed_mid_task_runs_again_once_without_flooding_the_queue(
    tmp_path: Path, celery_env: dict[str, str], receiver: Receiver, file_server: str
) -> None:
    """Two API nodes, three workers; one worker is SIGKILLed mid-task."""
    env = celery_env | {"OCRSERVE_TASK_LEASE_S": "5"}
    ports = [free_port(), free_port()]
    apis = [start_serve(env, p, tmp_path / f"api{n}.log") for n, p in enumerate(ports)]
    logs = [tmp_path / f"worker{n}.log" for n in range(3)]
    workers = [start_worker(env, log) for log in logs]
    try:
        ids = [
            submit_pdfs(f"http://127.0.0.1:{port}", 1, file_server, receiver)[0] for port in ports
        ]
        base = f"http://127.0.0.1:{ports[0]}"
        deadline = time.monotonic() + 300  # the workers load their models first
        while requests.get(f"{base}/task/{ids[0]}", timeout=10).json()["status"] != "running":
            assert time.monotonic() < deadline, logs[0].read_text()
            time.sleep(0.05)
        victim = next(w for w in workers if w.pid == worker_pid(env, ids[0]))
        victim.send_signal(signal.SIGKILL)
        killed_at = time.time()
        victim.wait(30)
        tasks = wait_all(base, ids)
        assert {t["status"] for t in tasks.values()} == {"succeeded"}
        deadline = time.monotonic() + 60
        while {c["event"]["task_id"] for c in receiver.delivered()} != set(ids):
            assert time.monotonic() < deadline, receiver.calls
            time.sleep(0.1)
        rows = task_rows(env)
        assert rows[ids[0]]["runs"] == 2  # the killed run, then exactly one more
        assert rows[ids[1]]["runs"] == 1
        # it ran again within two leases of the kill, not after a flood of retries
        assert rows[ids[0]]["started_at"] - killed_at <= 2 * 5.0
        for w in workers:
            if w.poll() is None:
                w.terminate()
                w.wait(60)
        text = "".join(log.read_text() for log in logs)
        deliveries = text.count(f"task message {ids[0]}:")
        assert 2 <= deliveries <= 3, text  # sent, redelivered after the kill, swept once
        assert ready_messages(env["OCRSERVE_TASK_QUEUE"]) == 0
        # one callback per task: a redelivered message for a finished task was skipped
        assert sorted(c["event"]["task_id"] for c in receiver.delivered()) == sorted(ids)
    finally:
        for p in [*workers, *apis]:
            if p.poll() is None:
                p.terminate()
                p.wait(60)


def test_a_poison_task_fails_after_the_budget_in_celery_mode(
    tmp_path: Path, celery_env: dict[str, str], receiver: Receiver
) -> None:
    # PP-OCR alone: with the second engine on, Tesseract would read the page PP-OCR fails on
    # (tests/test_router.py); here the task's own retry budget is under test.
    env = celery_env | {"OCRSERVE_TASK_RETRY_DELAYS": "[0.1]", "OCRSERVE_SECOND_ENGINE": "off"}
    port = free_port()
    api = start_serve(env, port, tmp_path / "api.log")
    try:
        image = io.BytesIO()
        Image.new("RGB", (123, 45), "white").save(image, format="PNG")
        r = requests.post(
            f"http://127.0.0.1:{port}/ocr/async",
            files={"image": ("poison.png", image.getvalue())},
            data={"callback_url": receiver.url},
            timeout=10,
        )
        assert r.status_code == 202, r.text
        task_id = r.json()["task_id"]
        log = tmp_path / "burst.log"
        with log.open("ab") as out:
            burst = subprocess.run(
                [sys.executable, str(Path(__file__).parent / "poison_worker.py"), "--burst"],
                stdout=out, stderr=subprocess.STDOUT, env=env, timeout=300,
            )  # fmt: skip
        assert burst.returncode == 0, log.read_text()
        task = requests.get(f"http://127.0.0.1:{port}/task/{task_id}", timeout=10).json()
        assert task["status"] == "failed", task
        assert task["error"]["code"] == "internal_error"
        assert "poison page" in task["error"]["message"]
        assert task_rows(env)[task_id]["runs"] == 3
        assert [c["event"]["task_id"] for c in receiver.calls] == [task_id]  # one callback
        assert receiver.calls[0]["event"]["status"] == "failed"
        assert ready_messages(env["OCRSERVE_TASK_QUEUE"]) == 0
    finally:
        api.terminate()
        api.wait(60)


def test_celery_mode_purges_finished_tasks_after_the_retention(
    tmp_path: Path, celery_env: dict[str, str]
) -> None:
    env = celery_env | {"OCRSERVE_TASK_RETENTION_S": "1"}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    api = start_serve(env, port, tmp_path / "api.log")
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        data = (FIXTURES / "en_line_long_text.jpg").read_bytes()
        r = requests.post(f"{base}/ocr/async", files={"image": ("l.jpg", data)}, timeout=10)
        task_id = r.json()["task_id"]
        assert wait_all(base, [task_id])[task_id]["status"] == "succeeded"
        deadline = time.monotonic() + 60
        while requests.get(f"{base}/task/{task_id}", timeout=10).status_code != 404:
            assert time.monotonic() < deadline, "never purged"
            time.sleep(0.2)
    finally:
        for p in (worker, api):
            p.terminate()
            p.wait(60)


def test_a_second_server_on_the_same_data_folder_refuses_and_takes_nothing(
    tmp_path: Path, receiver: Receiver, file_server: str
) -> None:
    env = env_for(tmp_path, OCRSERVE_TASK_WORKERS="1", OCRSERVE_MAX_BATCH_SIZE="1")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    first = start_serve(env, port, tmp_path / "first.log")
    try:
        (task_id,) = submit_pdfs(base, 1, file_server, receiver)
        deadline = time.monotonic() + 60
        while requests.get(f"{base}/task/{task_id}", timeout=10).json()["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        second = subprocess.run(
            [sys.executable, "-m", "ocrserve", "serve", "--port", str(port)],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert second.returncode != 0
        assert "another ocrserve process" in second.stdout + second.stderr
        task = wait_all(base, [task_id])[task_id]
        assert task["status"] == "succeeded"
        engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'tasks.db'}")
        with engine.begin() as conn:
            runs = conn.execute(
                sqlalchemy.text("SELECT runs FROM ocr_tasks WHERE id = :id"), {"id": task_id}
            ).scalar_one()
        engine.dispose()
        assert runs == 1  # the second process did not take the running task back
    finally:
        first.terminate()
        first.wait(60)
