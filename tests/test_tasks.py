"""Async tasks in the embedded mode, in-process, with a real callback receiver on loopback."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from ocrserve import Engine, Settings

from .conftest import FIXTURES, SECRET, Receiver, client_for

pytestmark = pytest.mark.anyio

LONG_LINE = (FIXTURES / "en_line_long_text.jpg").read_bytes()
PDF = (FIXTURES / "irs_f1040nr.pdf").read_bytes()


def task_settings(tmp_path: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "data_dir": tmp_path,
        "lanes": 2,
        "log_json": False,
        "allow_private_urls": True,  # the receiver is on loopback
        "webhook_secret": SECRET,
        "callback_retry_delays": (0.2, 0.4, 0.6),  # 1 s, 5 s, 15 s in production
    }
    return Settings(**(base | overrides))


async def wait_for(client: httpx.AsyncClient, task_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body: dict[str, Any] = (await client.get(f"/task/{task_id}")).json()
        if body["status"] not in ("queued", "running"):
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"task {task_id} did not finish")


async def callback_settled(
    client: httpx.AsyncClient, task_id: str, state: str, timeout: float = 60
) -> dict[str, Any]:
    """Poll until the task's callback is in ``state``; its ``callback`` view."""
    deadline = time.monotonic() + timeout
    while True:
        callback: dict[str, Any] = (await client.get(f"/task/{task_id}")).json()["callback"]
        if callback["state"] == state:
            return callback
        assert time.monotonic() < deadline, callback
        await asyncio.sleep(0.05)


async def wait_until(predicate: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def test_submit_202_then_status_then_one_signed_callback(
    engine: Engine, tmp_path: Path, receiver: Receiver
) -> None:
    async for client in client_for(task_settings(tmp_path), engine):
        r = await client.post(
            "/ocr/async",
            json={"image_base64": b64(LONG_LINE), "callback_url": receiver.url,
                  "metadata": {"invoice": 42}},
        )  # fmt: skip
        assert r.status_code == 202, r.text
        body = r.json()
        assert body["status"] == "queued" and set(body) == {"task_id", "status", "status_url"}
        assert r.headers["location"] == body["status_url"]
        assert body["status_url"].endswith(f"/task/{body['task_id']}")
        done = await wait_for(client, body["task_id"])
        assert done["status"] == "succeeded"
        assert done["result"]["text"] == "采用高端宝石制作镜片，更有效保护眼睛，避免辐射"
        assert done["progress"] == {"pages_done": 1, "pages_total": 1}
        assert done["metadata"] == {"invoice": 42}
        assert done["created_at"] <= done["started_at"] <= done["finished_at"]
        await wait_until(lambda: receiver.delivered())
        event = receiver.delivered()[0]["event"]
        assert event["task_id"] == body["task_id"] and event["status"] == "succeeded"
        assert event["text"] == done["result"]["text"] and event["metadata"] == {"invoice": 42}
        assert {"pages", "avg_confidence"} <= set(event)
        # The receiver has the event before the sender records the answer: wait for that.
        callback = await callback_settled(client, body["task_id"], "delivered")
        assert [a["status_code"] for a in callback["attempts"]] == [200]
        status = (await client.get(f"/v1/tasks/{body['task_id']}")).json()
        assert status["callback"]["state"] == "delivered"
        assert len(receiver.calls) == 1


async def test_retries_on_the_schedule_then_dead_letter_then_replay(
    engine: Engine, tmp_path: Path, receiver: Receiver
) -> None:
    receiver.script = [(503, {})] * 4  # the first try and all three retries fail
    admin = {"X-API-Key": "admin-key"}  # /admin is off (404) without OCRSERVE_ADMIN_KEY
    async for client in client_for(task_settings(tmp_path, admin_key="admin-key"), engine):
        task_id = (
            await client.post(
                "/ocr/async", json={"image_base64": b64(LONG_LINE), "callback_url": receiver.url}
            )
        ).json()["task_id"]
        log = (await callback_settled(client, task_id, "dead"))["attempts"]
        assert len(receiver.calls) == 4
        assert [a["status_code"] for a in log] == [503] * 4
        gaps = [b["at"] - a["at"] for a, b in itertools.pairwise(log)]
        for gap, delay in zip(gaps, (0.2, 0.4, 0.6), strict=True):
            assert gap >= delay  # never sooner than the schedule
        assert all(a["duration_ms"] >= 0 and a["error"] == "HTTP 503" for a in log)
        assert len({c["id"] for c in receiver.calls}) == 1  # one event: one webhook-id

        dead = (await client.get("/admin/dead-letters", headers=admin)).json()
        assert [d["task_id"] for d in dead] == [task_id] and dead[0]["attempts"] == 4
        r = await client.post(f"/admin/dead-letters/{task_id}/replay", headers=admin)
        assert r.status_code == 202
        await callback_settled(client, task_id, "delivered")
        assert receiver.delivered()
        assert (await client.get("/admin/dead-letters", headers=admin)).json() == []
        assert receiver.calls[-1]["id"] == receiver.calls[0]["id"]  # the receiver can dedupe
        r = await client.post(f"/admin/dead-letters/{task_id}/replay", headers=admin)
        assert r.status_code == 404


async def test_a_client_error_goes_to_the_dead_letters_at_once_and_429_waits(
    engine: Engine, tmp_path: Path, receiver: Receiver
) -> None:
    receiver.script = [(410, {}), (429, {"Retry-After": "1"})]
    async for client in client_for(task_settings(tmp_path), engine):
        first = (
            await client.post(
                "/ocr/async", json={"image_base64": b64(LONG_LINE), "callback_url": receiver.url}
            )
        ).json()["task_id"]
        await wait_until(lambda: len(receiver.calls) == 1)
        second = (
            await client.post(
                "/ocr/async",
                json={"image_base64": b64(LONG_LINE), "lang": "en", "callback_url": receiver.url},
            )
        ).json()["task_id"]
        one = await callback_settled(client, first, "dead")
        assert len(one["attempts"]) == 1
        two = await callback_settled(client, second, "delivered")
        assert [a["status_code"] for a in two["attempts"]] == [429, 200]
        assert two["attempts"][1]["at"] - two["attempts"][0]["at"] >= 1.0  # Retry-After honoured


async def test_idempotency_key_replay_and_conflict(engine: Engine, tmp_path: Path) -> None:
    async for client in client_for(task_settings(tmp_path), engine):
        req = {"image_base64": b64(LONG_LINE), "metadata": {"n": 1}}
        a = await client.post("/ocr/async", json=req, headers={"Idempotency-Key": "k-1"})
        b = await client.post("/ocr/async", json=req, headers={"Idempotency-Key": "k-1"})
        assert a.status_code == b.status_code == 202
        assert a.json()["task_id"] == b.json()["task_id"]
        assert b.headers["idempotent-replayed"] == "true"
        c = await client.post(
            "/ocr/async", json={**req, "metadata": {"n": 2}}, headers={"Idempotency-Key": "k-1"}
        )
        assert c.status_code == 409 and c.json()["error"]["code"] == "idempotency_conflict"
        d = await client.post("/ocr/async", json=req, headers={"Idempotency-Key": "k-2"})
        assert d.json()["task_id"] != a.json()["task_id"]


async def test_ssrf_and_input_refusals(engine: Engine, tmp_path: Path) -> None:
    async for client in client_for(task_settings(tmp_path, allow_private_urls=False), engine):
        img = b64(LONG_LINE)
        cases = [
            ({"image_url": "http://127.0.0.1:9/x.png"}, "url_not_allowed"),
            ({"image_url": "http://169.254.169.254/latest"}, "url_not_allowed"),
            ({"image_url": "ftp://example.com/x.png"}, "url_not_allowed"),
            ({"image_base64": img, "callback_url": "http://example.com/hook"}, "url_not_allowed"),
            ({"image_base64": img, "callback_url": "https://10.1.2.3/hook"}, "url_not_allowed"),
            ({"image_base64": img, "callback_url": "https://[::1]/hook"}, "url_not_allowed"),
            ({"image_base64": img, "lang": "klingon"}, "language_not_installed"),
            ({"image_base64": "!!"}, "invalid_input"),
            ({}, "invalid_input"),
            ({"image_base64": img, "image_url": "https://example.com/a.png"}, "invalid_input"),
            ({"image_base64": img, "metadata": [1, 2]}, "invalid_input"),
        ]  # fmt: skip
        for body, code in cases:
            r = await client.post("/ocr/async", json=body)
            assert r.status_code == 422, (body, r.text)
            assert r.json()["error"]["code"] == code, (body, r.text)
        assert (await client.get("/task/nope")).status_code == 404


async def test_multipart_submit_progress_on_a_pdf_cancel_and_purge(
    engine: Engine, tmp_path: Path
) -> None:
    s = task_settings(tmp_path, task_workers=1, max_batch_size=1, lanes=1)
    async for client in client_for(s, engine):
        pdf = (await client.post(
            "/ocr/async", files={"image": ("f.pdf", PDF)},
            data={"max_pages": "3", "pdf_text": "ocr", "metadata": json.dumps({"kind": "form"})},
        )).json()["task_id"]  # fmt: skip
        queued = (await client.post("/ocr/async", json={"image_base64": b64(LONG_LINE)})).json()
        r = await client.delete(f"/task/{queued['task_id']}")  # still behind the PDF: cancellable
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
        seen: set[int] = set()
        while True:
            t = (await client.get(f"/task/{pdf}")).json()
            seen.add(t["progress"]["pages_done"])
            if t["status"] not in ("queued", "running"):
                break
            await asyncio.sleep(0.05)
        assert t["status"] == "succeeded" and t["metadata"] == {"kind": "form"}
        assert t["progress"] == {"pages_done": 3, "pages_total": 3}
        assert t["result"]["page_count"] == 3 and t["result"]["pages_total"] == 5
        assert t["result"]["truncated"] is True
        assert "Nonresident Alien" in t["result"]["pages"][0]["text"]
        assert len(seen) >= 2  # progress moved while it ran
        assert (await client.delete(f"/task/{pdf}")).status_code == 204
        assert (await client.get(f"/task/{pdf}")).status_code == 404


async def test_finished_tasks_are_purged_after_the_retention(
    engine: Engine, tmp_path: Path
) -> None:
    async for client in client_for(task_settings(tmp_path, task_retention_s=0.5), engine):
        task_id = (await client.post("/ocr/async", json={"image_base64": b64(LONG_LINE)})).json()[
            "task_id"
        ]
        assert (await wait_for(client, task_id))["status"] == "succeeded"
        deadline = time.monotonic() + 30
        while (await client.get(f"/task/{task_id}")).status_code != 404:
            assert time.monotonic() < deadline, "not purged"
            await asyncio.sleep(0.1)


async def test_a_failed_fetch_fails_the_task_with_a_clear_code(
    engine: Engine, tmp_path: Path, receiver: Receiver
) -> None:
    async for client in client_for(task_settings(tmp_path), engine):
        url = receiver.url.replace("/hook", "/missing.png")  # the receiver answers GET with 501
        task_id = (
            await client.post("/ocr/async", json={"image_url": url, "callback_url": receiver.url})
        ).json()["task_id"]
        done = await wait_for(client, task_id)
        assert done["status"] == "failed" and done["result"] is None
        assert done["error"]["code"] == "url_fetch_failed"
        await wait_until(lambda: receiver.delivered())
        event = receiver.delivered()[0]["event"]
        assert event["status"] == "failed" and event["error"]["code"] == "url_fetch_failed"


def test_a_task_table_of_another_version_is_refused_at_start(tmp_path: Path) -> None:
    import sqlite3

    from ocrserve import StoreError
    from ocrserve.jobs.store import TaskStore

    # Tables of earlier versions are migrated (tests/test_migrations.py); one that is no known
    # revision is refused, and left as it was.
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE ocr_tasks (id VARCHAR(32) PRIMARY KEY, status VARCHAR(16))")
    with pytest.raises(StoreError, match="another version of ocrserve") as info:
        TaskStore(f"sqlite:///{db}")
    assert "published_at" in str(info.value)
    with sqlite3.connect(db) as conn:
        tables = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        columns = [row[1] for row in conn.execute("PRAGMA table_info(ocr_tasks)")]
    assert (tables, columns) == ([("ocr_tasks",)], ["id", "status"])
