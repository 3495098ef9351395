"""Callbacks: the webhook secret checked at start, verify() that raises only its own error, a
dispatcher that records every attempt, and one event schema, real server to real receiver."""

from __future__ import annotations

import asyncio
import base64
import doctest
import importlib.util
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import uvicorn
from pydantic import ValidationError
from sqlalchemy import update

from ocrserve import ConfigError, Settings, schemas, webhooks
from ocrserve.jobs import delivery
from ocrserve.jobs.delivery import CallbackPolicy, payload, run_due
from ocrserve.jobs.store import TaskRow, TaskStore
from ocrserve.jobs.task import DEAD, DELIVERED, PENDING, NewTask
from ocrserve.schemas import TaskEvent, TaskResult
from ocrserve.webhooks import WebhookVerificationError, generate_secret, headers_for, sign, verify

from .conftest import FIXTURES, SECRET, Receiver, free_port, start_serve

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
LONG_LINE_TEXT = "采用高端宝石制作镜片，更有效保护眼睛，避免辐射"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# --- the secret, checked at start --------------------------------------------------------------

BAD_SECRETS = {
    "prefix only": "whsec_",
    "not base64": "whsec_!!!",
    "16-byte key": "whsec_" + b64(b"0123456789abcdef"),
    "no prefix": b64(bytes(range(32))),
    "empty": "",
    "base64 with a newline": "whsec_" + b64(bytes(32)) + "\n",
}


@pytest.mark.parametrize("secret", BAD_SECRETS.values(), ids=BAD_SECRETS.keys())
def test_an_unusable_webhook_secret_setting_is_refused(secret: str) -> None:
    with pytest.raises(ValidationError) as e:
        Settings(webhook_secret=secret)
    message = str(e.value)
    assert "webhook_secret" in message
    assert "'whsec_' followed by the base64 of a random key of at least 24 bytes" in message
    assert "generate_secret()" in message  # how to make a good one
    if len(secret) > len("whsec_"):
        assert secret.strip() not in message  # a secret is never printed


def test_a_usable_webhook_secret_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(webhook_secret=SECRET).resolved_webhook_secret() == SECRET
    made = generate_secret()
    monkeypatch.setenv("OCRSERVE_WEBHOOK_SECRET", made)
    assert Settings().webhook_secret == made
    assert webhooks.parse_secret("whsec_" + b64(bytes(24))) == bytes(24)  # the minimum


def test_the_environment_secret_is_checked_when_settings_are_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OCRSERVE_WEBHOOK_SECRET", "whsec_")
    with pytest.raises(ValidationError, match="webhook secret has an empty key"):
        Settings()


@pytest.mark.parametrize("content", ["", "\n", "whsec_", "whsec_" + b64(bytes(16))])
def test_an_unusable_secret_file_in_the_data_folder_is_refused(
    tmp_path: Path, content: str
) -> None:
    path = tmp_path / "webhook_secret"
    path.write_text(content)
    with pytest.raises(ConfigError) as e:
        Settings(data_dir=tmp_path).resolved_webhook_secret()
    assert e.value.setting == "webhook_secret" and e.value.code == "config_error"
    assert str(path) in e.value.message and "at least 24 bytes" in e.value.message


def test_the_secret_file_is_made_once_and_kept(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    made = settings.resolved_webhook_secret()
    assert len(webhooks.parse_secret(made)) == 32
    assert Settings(data_dir=tmp_path / "data").resolved_webhook_secret() == made
    assert (tmp_path / "data" / "webhook_secret").stat().st_mode & 0o777 == 0o600
    assert os.listdir(tmp_path / "data") == ["webhook_secret"]  # no temporary file left


def test_serve_with_an_unusable_secret_exits_at_once_with_a_readable_message(
    tmp_path: Path,
) -> None:
    env = os.environ | {"OCRSERVE_DATA_DIR": str(tmp_path), "OCRSERVE_WEBHOOK_SECRET": "whsec_"}
    done = subprocess.run(
        [sys.executable, "-m", "ocrserve", "serve", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    said = " ".join(re.sub("[│╭╮╰╯─]", " ", done.stderr).split())  # unwrap the error box
    assert "the webhook secret has an empty key; it must be 'whsec_' followed by" in said
    assert "Traceback" not in said


# --- verify(): WebhookVerificationError and nothing else ---------------------------------------


def signed(body: bytes = b'{"task_id": "t1"}', msg_id: str = "msg_t1_succeeded") -> dict[str, str]:
    return headers_for(msg_id, body, SECRET)


def test_verify_accepts_a_signed_event_as_bytes_or_text() -> None:
    body = '{"task_id": "t1", "text": "发票"}'.encode()
    headers = signed(body)
    assert verify(body, headers, SECRET) == {"task_id": "t1", "text": "发票"}
    assert verify(body.decode(), headers, SECRET)["text"] == "发票"
    assert verify(bytearray(body), {k.upper(): v for k, v in headers.items()}, SECRET)


def _bad_requests() -> dict[str, tuple[Any, dict[str, Any]]]:
    body = b'{"task_id": "t1"}'
    good = signed(body)
    now = good[webhooks.TIMESTAMP_HEADER]
    listed = b"[1, 2]"
    return {
        "non-ASCII signature": (body, good | {"webhook-signature": "v1,ü" + "A" * 43}),
        "non-ASCII id": (body, good | {"webhook-id": "msg_ü"}),
        "non-ASCII id, signed": (body, signed(body, "msg_ü") | {"webhook-id": "msg_ü"}),
        "non-ASCII timestamp": (body, good | {"webhook-timestamp": "١٧٠٠٠٠٠٠٠٠"}),
        "signed timestamp": (body, good | {"webhook-timestamp": "+" + now}),
        "spaced timestamp": (body, good | {"webhook-timestamp": f" {now} "}),
        "underscored timestamp": (body, good | {"webhook-timestamp": "1_7" + now[2:]}),
        "huge timestamp": (body, good | {"webhook-timestamp": "9" * 400}),
        "longer than int() takes": (body, good | {"webhook-timestamp": "9" * 5000}),
        "float timestamp": (body, good | {"webhook-timestamp": now + ".5"}),
        "empty signature": (body, good | {"webhook-signature": ""}),
        "no id": (body, {k: v for k, v in good.items() if k != "webhook-id"}),
        "bytes header": (body, good | {"webhook-id": b"msg_t1_succeeded"}),
        "None body": (None, good),
        "int body": (42, good),
        "surrogate in a text body": ("\ud800", good),
        "other body": (b'{"task_id": "t2"}', good),
        "signed JSON list": (listed, signed(listed)),
        "signed non-UTF-8": (b"\xff\xfe", signed(b"\xff\xfe")),
        "signed non-JSON": (b"not json", signed(b"not json")),
        "old": (body, good | {"webhook-timestamp": str(int(now) - 3600)}),
        "no headers": (body, {}),
    }


BAD_REQUESTS = _bad_requests()


@pytest.mark.parametrize("case", BAD_REQUESTS.keys())
def test_verify_raises_only_its_own_error_for_any_bad_request(case: str) -> None:
    body, headers = BAD_REQUESTS[case]
    with pytest.raises(WebhookVerificationError):
        verify(body, headers, SECRET)


def test_verify_with_an_unusable_secret_is_the_receivers_configuration_error() -> None:
    with pytest.raises(ValueError, match="webhook secret") as e:
        verify(b"{}", signed(b"{}"), "whsec_")
    assert not isinstance(e.value, WebhookVerificationError)
    with pytest.raises(ValueError, match="webhook secret"):
        sign("msg_1", 0, b"{}", "whsec_" + b64(bytes(8)))


def test_the_docstring_examples_hold() -> None:
    for module in (webhooks, schemas):
        assert doctest.testmod(module, raise_on_error=False).failed == 0, module.__name__


# --- the dispatcher: every attempt recorded, one failure stops no other ------------------------

RESULT: dict[str, Any] = {
    "text": "hi",
    "avg_confidence": 0.9,
    "pages": [
        {"page": 1, "width": 10, "height": 10, "text": "hi", "avg_confidence": 0.9,
         "lines": [{"text": "hi", "confidence": 0.9, "box": [[0, 0], [9, 0], [9, 9], [0, 9]]}]}
    ],
    "page_count": 1,
    "pages_total": 1,
    "truncated": False,
    "model": "PP-OCR",
    "timings": {"total": 0.1},
}  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TaskStore]:
    s = TaskStore(f"sqlite:///{tmp_path / 'tasks.db'}")
    yield s
    s.close()


def finished_task(store: TaskStore, callback_url: str, n: int = 0) -> str:
    """A succeeded task whose callback is due, as a worker's finish leaves it."""
    row, _ = store.create(
        NewTask(options={}, input_bytes=b"x", metadata={"n": n}, callback_url=callback_url)
    )
    now = time.time()
    with store.session() as s:
        s.execute(
            update(TaskRow)
            .where(TaskRow.id == row.id)
            .values(status="succeeded", started_at=now, finished_at=now, result=RESULT,
                    input_bytes=None, callback_state=PENDING, callback_next_at=now)
        )  # fmt: skip
    return row.id


def dispatch(store: TaskStore, policy: CallbackPolicy) -> int:
    async def go() -> int:
        async with httpx.AsyncClient() as client:
            return await run_due(store, policy, client, run_sync=asyncio.to_thread)

    return asyncio.run(go())


def callback_of(store: TaskStore, task_id: str) -> TaskRow:
    row = store.get(task_id)
    assert row is not None
    return row


def test_a_secret_that_cannot_sign_dead_letters_every_callback_then_replay_sends_them(
    store: TaskStore, receiver: Receiver
) -> None:
    ids = [finished_task(store, receiver.url, n) for n in range(2)]
    bad = CallbackPolicy(secret="whsec_", retry_delays=(0.1,), allow_private=True)
    assert dispatch(store, bad) == 2
    for task_id in ids:
        row = callback_of(store, task_id)
        assert row.callback_state == DEAD and row.callback_attempts == 1
        [attempt] = row.callback_log or []
        assert attempt["status_code"] is None
        assert attempt["error"].startswith("config_error: the webhook secret has an empty key")
    assert {r.id for r in store.dead_letters()} == set(ids)
    assert receiver.calls == []

    for task_id in ids:  # the secret is fixed (a restart), then the dead letters are replayed
        assert store.replay(task_id)
    assert dispatch(store, CallbackPolicy(secret=SECRET, allow_private=True)) == 2
    assert {callback_of(store, t).callback_state for t in ids} == {DELIVERED}
    assert sorted(c["event"]["metadata"]["n"] for c in receiver.delivered()) == [0, 1]


def test_an_unexpected_error_in_one_callback_is_recorded_and_retried_and_the_others_go(
    store: TaskStore, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = finished_task(store, receiver.url, 0)
    good = finished_task(store, receiver.url, 1)
    event_of = delivery.task_event

    def task_event(row: TaskRow) -> TaskEvent:  # a bug that one task's event runs into
        if row.id == broken:
            raise ValueError("Invalid IPv6 URL")
        return event_of(row)

    monkeypatch.setattr(delivery, "task_event", task_event)
    policy = CallbackPolicy(secret=SECRET, retry_delays=(5.0,), allow_private=True)
    assert dispatch(store, policy) == 2
    row = callback_of(store, broken)
    assert row.callback_state == PENDING and row.callback_attempts == 1
    assert (row.callback_log or [])[0]["error"].startswith("ValueError: Invalid IPv6 URL")
    assert row.callback_next_at is not None and row.callback_next_at > time.time() + 4
    assert callback_of(store, good).callback_state == DELIVERED
    assert [c["event"]["task_id"] for c in receiver.delivered()] == [good]


def test_a_store_failure_on_one_callback_does_not_stop_the_round(
    store: TaskStore, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    unlucky = finished_task(store, receiver.url, 0)
    lucky = finished_task(store, receiver.url, 1)
    record = store.record_attempt

    def flaky(task_id: str, *args: Any, **kwargs: Any) -> None:
        if task_id == unlucky:
            raise OSError("disk I/O error")
        record(task_id, *args, **kwargs)

    monkeypatch.setattr(store, "record_attempt", flaky)
    assert dispatch(store, CallbackPolicy(secret=SECRET, allow_private=True)) == 1
    assert callback_of(store, lucky).callback_state == DELIVERED
    # Not recorded: still pending, held by its claim, so another round sends it again.
    assert callback_of(store, unlucky).callback_state == PENDING


def test_a_failed_tasks_event_has_every_field_empty_and_the_error() -> None:
    row = TaskRow(id="t1", status="failed", meta={"invoice": 42}, result=None,
                  error_code="corrupt_file", error_message="truncated JPEG",
                  created_at=1.0, finished_at=2.0, pages_total=None)  # fmt: skip
    event = payload(row)
    assert set(event) == set(TaskEvent.model_fields)
    assert event["error"] == {"code": "corrupt_file", "message": "truncated JPEG"}
    # The mission article's receiver reads these with defaults; they are there, empty.
    assert (event["text"], event["pages"], event["avg_confidence"]) == ("", [], 0.0)
    assert event["task_id"] == "t1" and event["metadata"] == {"invoice": 42}


# --- one event schema: a real server calls the example receiver --------------------------------


def load_example_receiver() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "webhook_receiver", EXAMPLES / "webhook_receiver.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `ocrserve serve` on loopback, signing with SECRET."""
    data = tmp_path_factory.mktemp("serve")
    env = os.environ | {
        "OCRSERVE_DATA_DIR": str(data),
        "OCRSERVE_ALLOW_PRIVATE_URLS": "1",
        "OCRSERVE_WEBHOOK_SECRET": SECRET,
        "OCRSERVE_LOG_JSON": "false",
    }
    port = free_port()
    proc = start_serve(env, port, data / "server.log")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=60)


@pytest.fixture
def example_receiver() -> Iterator[tuple[Any, str]]:
    """examples/webhook_receiver.py served by uvicorn on loopback: (its app, its URL)."""
    app = load_example_receiver().create_app(secret=SECRET)
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    wait_until(lambda: srv.started or not thread.is_alive(), 30, "the receiver to start")
    assert srv.started, "the example receiver did not start"
    try:
        yield app, f"http://127.0.0.1:{port}/ocr-webhook"
    finally:
        srv.should_exit = True
        thread.join(timeout=30)


def test_the_example_receiver_handles_a_real_callback_with_the_task_results_fields(
    server: str, example_receiver: tuple[Any, str], caplog: pytest.LogCaptureFixture
) -> None:
    app, hook = example_receiver
    caplog.set_level(logging.INFO, logger="webhook_receiver")
    image = (FIXTURES / "en_line_long_text.jpg").read_bytes()
    r = httpx.post(
        f"{server}/ocr/async",
        json={"image_base64": b64(image), "callback_url": hook, "metadata": {"invoice": 42}},
        timeout=30,
    )
    assert r.status_code == 202, r.text
    task_id = r.json()["task_id"]
    wait_until(lambda: app.state.processed, 180, "the callback")
    [event] = app.state.processed

    # The mission article's Flask receiver, unchanged:
    result = event
    assert result.get("task_id") == task_id
    pages = result.get("pages", [])
    confidence = result.get("avg_confidence", 0.0)
    assert len(pages) == 1 and pages[0]["text"] == LONG_LINE_TEXT and 0.5 < confidence <= 1

    # The example's handle() read the real text from the event the server sent.
    handled = [rec.getMessage() for rec in caplog.records if rec.name == "webhook_receiver"]
    assert any(LONG_LINE_TEXT in message for message in handled), handled

    task = httpx.get(f"{server}/task/{task_id}", timeout=10).json()
    assert task["status"] == event["status"] == "succeeded"
    assert set(task["result"]) == set(TaskResult.model_fields)
    assert {k: event[k] for k in task["result"]} == task["result"]  # one shape, one writer
    assert task["result"]["text"] == event["text"] == LONG_LINE_TEXT
    for key in ("metadata", "error", "created_at", "finished_at"):
        assert event[key] == task[key], key
    assert set(event) == set(TaskEvent.model_fields)
    assert TaskEvent.model_validate(event).model_dump(mode="json") == event


def test_the_openapi_document_lists_the_callback_as_a_webhook(server: str) -> None:
    doc = httpx.get(f"{server}/openapi.json", timeout=10).json()
    hook = doc["webhooks"]["ocr-task-finished"]["post"]
    ref = hook["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert ref == "#/components/schemas/TaskEvent"
    schema = doc["components"]["schemas"]["TaskEvent"]
    assert set(schema["properties"]) == set(TaskEvent.model_fields)
    assert {"task_id", "status", "text", "pages", "avg_confidence", "metadata"} <= set(
        schema["required"]
    )
    headers = {p["name"] for p in hook["parameters"] if p["in"] == "header"}
    assert headers == {"webhook-id", "webhook-timestamp", "webhook-signature"}
