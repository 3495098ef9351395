"""Tenants and the admin role against a real ``ocrserve serve`` (issue 9, findings 1, 2, 3, 10).

Two client keys (alice, bob) and an admin key. A task, an idempotency key and a cached result
are their tenant's: the other tenant gets the 404 of a missing task, a new task, a cache miss.
``/admin/*`` takes only the admin key (401 for anything else, a client key included: the admin
realm has one credential) and is off, 404, without one. One server serves most tests; a second
one, with keys and the admin key off, and two in-process apps cover the other configurations.
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from ocrserve import Engine, Settings

from .conftest import FIXTURES, SECRET, Receiver, client_for, free_port, start_serve

ALICE, BOB, ADMIN = "alice-key-4f1c9e", "bob-key-7a20d3", "admin-key-e81b55"
LONG_LINE = (FIXTURES / "en_line_long_text.jpg").read_bytes()


def env_for(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCRSERVE_")}
    return env | {
        "OCRSERVE_DATA_DIR": str(data_dir),
        "OCRSERVE_ALLOW_PRIVATE_URLS": "1",  # the receiver and the gate are on loopback
        "OCRSERVE_WEBHOOK_SECRET": SECRET,
        "OCRSERVE_CALLBACK_RETRY_DELAYS": "[0.2, 0.4, 0.6]",
        "OCRSERVE_LANES": "1",
        **extra,
    }


class Gate:
    """A file server whose answers wait until it is opened: a task fetching from it holds the
    server's one task worker, so the tasks submitted after it stay queued."""

    def __init__(self) -> None:
        self.open, self.fetching = threading.Event(), threading.Event()
        gate = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                gate.fetching.set()
                gate.open.wait(60)
                self.send_response(200)
                self.send_header("content-type", "image/jpeg")
                self.send_header("content-length", str(len(LONG_LINE)))
                self.end_headers()
                self.wfile.write(LONG_LINE)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/slow.jpg"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.open.set()
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Served:
    base: str
    log: Path
    receiver: Receiver
    gate: Gate

    def client(self, key: str | None, *, bearer: bool = False) -> httpx.Client:
        headers = {}
        if key is not None:
            headers = {"Authorization": f"Bearer {key}"} if bearer else {"X-API-Key": key}
        return httpx.Client(base_url=self.base, headers=headers, timeout=60)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("tenants")
    receiver, gate = Receiver(), Gate()
    env = env_for(
        tmp,
        OCRSERVE_API_KEYS=json.dumps({"alice": ALICE, "bob": BOB}),
        OCRSERVE_ADMIN_KEY=ADMIN,
        OCRSERVE_TASK_WORKERS="1",  # one worker: the gate holds it (see Gate)
        OCRSERVE_LOG_JSON="true",  # the access log's extras, tenant included
    )
    port = free_port()
    proc = start_serve(env, port, tmp / "server.log")
    try:
        yield Served(f"http://127.0.0.1:{port}", tmp / "server.log", receiver, gate)
    finally:
        proc.terminate()
        proc.wait(60)
        gate.close()
        receiver.server.shutdown()
        receiver.server.server_close()


@pytest.fixture(scope="module")
def alice(served: Served) -> Iterator[httpx.Client]:
    with served.client(ALICE) as client:
        yield client


@pytest.fixture(scope="module")
def bob(served: Served) -> Iterator[httpx.Client]:
    with served.client(BOB, bearer=True) as client:
        yield client


@pytest.fixture(scope="module")
def admin(served: Served) -> Iterator[httpx.Client]:
    with served.client(ADMIN, bearer=True) as client:
        yield client


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def submit(client: httpx.Client, body: dict[str, Any], key: str | None = None) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key else {}
    return client.post("/ocr/async", json=body, headers=headers)


def task_id(r: httpx.Response) -> str:
    assert r.status_code == 202, r.text
    tid: str = r.json()["task_id"]
    return tid


def wait_until(client: httpx.Client, tid: str, done: Any, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        view: dict[str, Any] = client.get(f"/task/{tid}").json()
        if done(view):
            return view
        assert time.monotonic() < deadline, view
        time.sleep(0.05)


def finished(view: dict[str, Any]) -> bool:
    return view["status"] not in ("queued", "running")


def missing_body(client: httpx.Client, path: str, tid: str, method: str = "GET") -> Any:
    """The body of ``path`` for a task id that does not exist, with ``tid`` in its place."""
    fake = uuid.uuid4().hex
    r = client.request(method, path.format(fake))
    assert r.status_code == 404
    return json.loads(r.text.replace(fake, tid))


# --- finding 1: a task is its tenant's ---------------------------------------------------------


def test_another_tenants_task_reads_as_a_missing_one_and_its_owner_still_reads_it(
    alice: httpx.Client, bob: httpx.Client
) -> None:
    tid = task_id(submit(alice, {"image_base64": b64(LONG_LINE), "metadata": {"who": "alice"}}))
    for path in ("/task/{}", "/v1/tasks/{}", "/v1/task/{}", "/tasks/{}"):
        r = bob.get(path.format(tid))
        assert r.status_code == 404
        assert r.json() == missing_body(bob, path, tid), path  # the same body, byte for byte
        assert "alice" not in r.text
    view = wait_until(alice, tid, finished)
    assert view["status"] == "succeeded" and view["metadata"] == {"who": "alice"}


def test_another_tenant_cannot_cancel_a_queued_task_nor_purge_a_finished_one(
    served: Served, alice: httpx.Client, bob: httpx.Client
) -> None:
    # The gate holds the one task worker: `held` runs (fetching), `queued` waits behind it.
    held = task_id(submit(alice, {"image_url": served.gate.url}))
    try:
        assert served.gate.fetching.wait(60)
        queued = task_id(submit(alice, {"image_base64": b64(LONG_LINE)}))
        for tid in (held, queued):
            for path in ("/task/{}", "/v1/tasks/{}"):
                r = bob.delete(path.format(tid))
                assert r.status_code == 404
                assert r.json() == missing_body(bob, path, tid, "DELETE")
        assert alice.get(f"/task/{queued}").json()["status"] == "queued"
        r = alice.delete(f"/v1/tasks/{queued}")  # the owner still can
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
    finally:
        served.gate.open.set()
    assert wait_until(alice, held, finished)["status"] == "succeeded"

    r = bob.delete(f"/task/{held}")  # finished now: a DELETE would purge it
    assert r.status_code == 404 and r.json() == missing_body(bob, "/task/{}", held, "DELETE")
    assert alice.get(f"/task/{held}").status_code == 200  # still there
    assert alice.delete(f"/task/{held}").status_code == 204
    assert alice.get(f"/task/{held}").status_code == 404


# --- finding 2: idempotency keys are each tenant's ---------------------------------------------


def test_the_same_idempotency_key_from_another_tenant_is_another_task(
    alice: httpx.Client, bob: httpx.Client
) -> None:
    body = {"image_base64": b64(LONG_LINE), "metadata": {"invoice": 42}}
    first = submit(alice, body, "invoice-42")
    a = task_id(first)
    r = submit(bob, body, "invoice-42")  # A's key and A's very body
    b = task_id(r)
    assert b != a and "idempotent-replayed" not in r.headers
    assert bob.get(f"/task/{b}").status_code == 200
    again = submit(alice, body, "invoice-42")  # A's retry still finds A's task
    assert task_id(again) == a and again.headers["idempotent-replayed"] == "true"
    again = submit(bob, body, "invoice-42")
    assert task_id(again) == b and again.headers["idempotent-replayed"] == "true"
    for tid in (a, b):
        wait_until(alice if tid == a else bob, tid, finished)


def test_a_conflict_never_names_another_tenants_task(
    alice: httpx.Client, bob: httpx.Client
) -> None:
    a = task_id(submit(alice, {"image_base64": b64(LONG_LINE), "metadata": {"n": 1}}, "k-7"))
    r = submit(bob, {"image_base64": b64(LONG_LINE), "metadata": {"n": 2}}, "k-7")
    b = task_id(r)  # another body under A's key: bob's own new task, not A's 409
    assert a not in r.text
    r = submit(bob, {"image_base64": b64(LONG_LINE), "metadata": {"n": 3}}, "k-7")
    assert r.status_code == 409 and r.json()["error"]["code"] == "idempotency_conflict"
    assert b in r.text and a not in r.text  # bob's own task, never alice's
    for client, tid in ((alice, a), (bob, b)):
        wait_until(client, tid, finished)


# --- finding 3: the admin role -----------------------------------------------------------------


def test_dead_letters_are_the_admins_with_urls_redacted_and_only_the_admin_replays(
    served: Served, alice: httpx.Client, bob: httpx.Client, admin: httpx.Client
) -> None:
    receiver = served.receiver
    receiver.script = [(410, {}), (410, {})]  # both callbacks dead at once, then 200s
    planted = receiver.url.replace("http://", "http://user:pw@") + "?token=SECRET"
    mine = task_id(submit(alice, {"image_base64": b64(LONG_LINE), "callback_url": planted}))
    theirs = task_id(submit(bob, {"image_base64": b64(LONG_LINE), "callback_url": planted}))
    for client, tid in ((alice, mine), (bob, theirs)):
        view = wait_until(client, tid, lambda v: (v["callback"] or {}).get("state") == "dead")
        assert view["callback"]["url"] == planted  # its owner sees its own URL

    for path in ("/admin/dead-letters", "/v1/admin/dead-letters"):
        for who in (alice, bob):  # 401: a client key is no admin credential
            r = who.get(path)
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
            assert "SECRET" not in r.text
        with served.client(None) as anyone, served.client("wrong-key") as wrong:
            assert anyone.get(path).status_code == 401
            assert wrong.get(path).status_code == 401
        r = admin.get(path)
        assert r.status_code == 200
        assert "pw" not in r.text and "SECRET" not in r.text and "user" not in r.text
        dead = {d["task_id"]: d for d in r.json()}
        assert {dead[mine]["tenant"], dead[theirs]["tenant"]} == {"alice", "bob"}
        assert dead[mine]["callback_url"] == dead[theirs]["callback_url"] == receiver.url
    with served.client(ADMIN) as by_header:  # X-API-Key works as Bearer does
        assert mine in by_header.get("/admin/dead-letters").text

    for who in (alice, bob):  # a client key cannot replay, not even its own tenant's
        r = who.post(f"/admin/dead-letters/{mine}/replay")
        assert r.status_code == 401
    assert mine in admin.get("/admin/dead-letters").text  # still a dead letter
    assert admin.get(f"/task/{mine}").status_code == 401  # nor is the admin key a client key

    r = admin.post(f"/admin/dead-letters/{theirs}/replay")  # any tenant's
    assert r.status_code == 202
    wait_until(bob, theirs, lambda v: v["callback"]["state"] == "delivered")
    assert theirs not in admin.get("/admin/dead-letters").text
    assert admin.post(f"/admin/dead-letters/{uuid.uuid4().hex}/replay").status_code == 404


# --- finding 10: the result cache is each tenant's ---------------------------------------------


def cache_hits(client: httpx.Client) -> float:
    found = re.search(
        r'^ocrserve_cache_total\{result="hit"\} (\S+)$', client.get("/metrics").text, re.M
    )
    return float(found.group(1)) if found else 0.0


def test_another_tenants_bytes_are_a_cache_miss_and_ones_own_a_hit(
    alice: httpx.Client, bob: httpx.Client
) -> None:
    files = {"image": ("a.jpg", LONG_LINE)}
    a1 = alice.post("/ocr", files=files)
    assert a1.status_code == 200 and a1.headers["x-cache"] == "miss"
    b1 = bob.post("/ocr", files=files)
    assert b1.status_code == 200 and b1.headers["x-cache"] == "miss"
    a2, b2 = alice.post("/ocr", files=files), bob.post("/ocr", files=files)
    assert (a2.headers["x-cache"], b2.headers["x-cache"]) == ("hit", "hit")
    assert a2.json() == a1.json() and b2.json() == b1.json()


def test_another_tenants_bytes_are_a_cache_miss_in_a_batch(
    alice: httpx.Client, bob: httpx.Client
) -> None:
    files = [("images", ("b.jpg", LONG_LINE))]
    data = {"cls": "false"}  # options of its own: entries of no other test
    assert alice.post("/ocr/batch", files=files, data=data).status_code == 200
    hits = cache_hits(alice)
    assert bob.post("/ocr/batch", files=files, data=data).status_code == 200
    assert cache_hits(alice) == hits
    assert alice.post("/ocr/batch", files=files, data=data).status_code == 200
    assert cache_hits(alice) == hits + 1


# --- keys have names: the log says which client, never its key --------------------------------


def test_the_access_log_names_the_tenant_and_never_prints_a_key(
    served: Served, alice: httpx.Client, bob: httpx.Client
) -> None:
    alice.get(f"/task/{uuid.uuid4().hex}")
    bob.get(f"/task/{uuid.uuid4().hex}")
    time.sleep(0.2)  # the log line is written after the response
    text = served.log.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    tenants = {line.get("tenant") for line in lines if line.get("msg") == "request"}
    assert {"alice", "bob"} <= tenants
    ready = next(line for line in lines if line.get("msg") == "ready")
    assert ready["tenants"] == ["alice", "bob"] and ready["admin_routes"] == "on"
    assert ALICE not in text and BOB not in text and ADMIN not in text


# --- the other configurations -------------------------------------------------------------------


def test_with_keys_off_and_no_admin_key_admin_routes_do_not_exist(tmp_path: Path) -> None:
    port = free_port()
    proc = start_serve(env_for(tmp_path), port, tmp_path / "server.log")
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as anyone:
            unknown = anyone.get("/no-such-route")
            for method, path in (
                ("GET", "/admin/dead-letters"),
                ("GET", "/v1/admin/dead-letters"),
                ("POST", f"/admin/dead-letters/{uuid.uuid4().hex}/replay"),
            ):
                r = anyone.request(method, path, headers={"X-API-Key": "anything"})
                assert (r.status_code, r.json()) == (404, unknown.json()), path
    finally:
        proc.terminate()
        proc.wait(60)


@pytest.mark.anyio
async def test_with_keys_on_and_no_admin_key_admin_routes_are_off_for_every_key(
    engine: Engine, tmp_path: Path
) -> None:
    s = Settings(data_dir=tmp_path, webhook_secret=SECRET, api_keys={"alice": ALICE})
    async for client in client_for(s, engine):
        r = await client.get("/admin/dead-letters", headers={"X-API-Key": ALICE})
        assert r.status_code == 404


@pytest.mark.anyio
async def test_with_keys_off_an_admin_key_opens_the_admin_routes_to_it_only(
    engine: Engine, tmp_path: Path
) -> None:
    s = Settings(data_dir=tmp_path, webhook_secret=SECRET, admin_key=ADMIN)
    async for client in client_for(s, engine):
        assert (await client.get("/admin/dead-letters")).status_code == 401
        r = await client.get("/admin/dead-letters", headers={"Authorization": f"Bearer {ADMIN}"})
        assert (r.status_code, r.json()) == (200, [])
        # The one tenant without keys: anyone reads the tasks, as before.
        tid = (await client.post("/ocr/async", json={"image_base64": b64(LONG_LINE)})).json()
        assert (await client.get(f"/task/{tid['task_id']}")).status_code == 200


# --- settings ----------------------------------------------------------------------------------


def test_api_keys_take_a_list_or_an_object_of_names_and_never_print_a_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OCRSERVE_API_KEYS", json.dumps([ALICE, BOB]))
    assert Settings().api_keys == {"key-1": ALICE, "key-2": BOB}
    monkeypatch.setenv("OCRSERVE_API_KEYS", json.dumps({"alice": ALICE, "bob": BOB}))
    assert Settings().api_keys == {"alice": ALICE, "bob": BOB}
    bad = {
        f'{{"alice": "{ALICE}", "alice": "{BOB}"}}': "unique",
        f'{{"alice": "{ALICE}", "bob": "{ALICE}"}}': "the same key",
        '{"alice": ""}': "non-empty",
        f'{{"a b": "{ALICE}"}}': "key name",
        ALICE: "JSON",
    }
    for value, why in bad.items():
        monkeypatch.setenv("OCRSERVE_API_KEYS", value)
        with pytest.raises(ValueError, match=why) as info:
            Settings()
        assert ALICE not in str(info.value) and BOB not in str(info.value)
    monkeypatch.setenv("OCRSERVE_API_KEYS", json.dumps({"alice": ALICE}))
    monkeypatch.setenv("OCRSERVE_ADMIN_KEY", ALICE)
    with pytest.raises(ValueError, match="admin_key must not be one of api_keys") as info:
        Settings()
    assert ALICE not in str(info.value)
