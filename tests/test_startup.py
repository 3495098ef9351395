"""Start-up: what each path imports, and the task backend that starts after the server is ready.

The import checks run in fresh interpreters (``sys.modules`` of this test process holds
everything already). Timings are measured by ``bench/coldstart.py``, never asserted here.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from ocrserve import Engine, Settings
from ocrserve.errors import ConfigError
from ocrserve.jobs.lock import sqlite_path

from .conftest import FIXTURES, SECRET, client_for, wait_ready_tasks

pytestmark = pytest.mark.anyio

LONG_LINE = (FIXTURES / "en_line_long_text.jpg").read_bytes()
ENGINE_MODULES = ("onnxruntime", "cv2", "pypdfium2", "numpy", "PIL")
#: The task store, the queue and the cache clients: never on the synchronous path.
BACKEND_MODULES = ("sqlalchemy", "alembic", "celery", "kombu", "redis", "psycopg")


def run_python(code: str, *, timeout: float = 120) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter; it prints one JSON object as its last line."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


#: Installed in the child before anything else: any import of a package that a client-only
#: install (``pip install --no-deps ocrserve httpx tenacity``) would not have fails loudly.
BLOCKER = """
import importlib.abc, sys
ALLOWED = {"httpx", "httpcore", "h11", "h2", "hpack", "hyperframe", "anyio", "sniffio", "idna",
           "certifi", "tenacity", "ocrserve", "socksio", "brotli", "zstandard",
           "typing_extensions", "exceptiongroup"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in sys.stdlib_module_names or top in ALLOWED or top.startswith("_"):
            return None
        raise ImportError(f"a client-only install has no {name!r}")
sys.meta_path.insert(0, Block())
"""


def test_the_client_and_webhooks_need_only_httpx_and_tenacity() -> None:
    result = run_python(
        BLOCKER
        + """
import json, sys, time
t0 = time.perf_counter()
import httpx
from ocrserve.client import Client, OCRServerError
from ocrserve import webhooks

answer = {"text": "hello", "avg_confidence": 0.9, "pages": [], "page_count": 1,
          "pages_total": 1, "truncated": False, "model": "m", "timings": {}}
def handler(request):
    return httpx.Response(200, json=answer)
with Client("http://ocr.test", transport=httpx.MockTransport(handler)) as client:
    text = client.ocr(b"\\x89PNG fake", filename="a.png").text
secret = webhooks.generate_secret()
body = json.dumps({"task_id": "t1", "status": "succeeded"}).encode()
event = webhooks.verify(body, webhooks.headers_for("msg_t1", body, secret), secret)
print(json.dumps({"text": text, "event": event, "modules": sorted(sys.modules)}))
"""
    )
    assert result["text"] == "hello"
    assert result["event"]["task_id"] == "t1"
    loaded = set(result["modules"])
    assert not loaded & {*ENGINE_MODULES, *BACKEND_MODULES, "pydantic", "prometheus_client"}


def test_the_blocker_would_catch_an_engine_import() -> None:
    """The check above can fail: the same child refuses the engine."""
    done = subprocess.run(
        [sys.executable, "-c", BLOCKER + "import ocrserve.engine"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0 and "a client-only install has no" in done.stderr


def test_the_server_modules_import_no_task_store_queue_or_cache_client() -> None:
    result = run_python("""
import json, sys
import ocrserve.cli, ocrserve.api.app, ocrserve.api.server, ocrserve.serverless
print(json.dumps(sorted(sys.modules)))
""")
    loaded = set(result) if isinstance(result, list) else set()
    assert "ocrserve.api.app" in loaded
    assert not loaded & set(BACKEND_MODULES)


def test_a_serverless_app_answers_ocr_without_ever_importing_the_backends(tmp_path: Path) -> None:
    result = run_python(f"""
import asyncio, json, sys
import httpx
from asgi_lifespan import LifespanManager
from ocrserve import Settings
from ocrserve.api.app import create_app

async def main():
    app = create_app(Settings(profile="serverless", data_dir={str(tmp_path)!r}, lanes=1))
    async with LifespanManager(app, startup_timeout=120) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            ready = (await client.get("/ready")).json()
            image = open({str(FIXTURES / "en_line_long_text.jpg")!r}, "rb").read()
            r = await client.post("/ocr", files={{"file": ("a.jpg", image)}})
            return ready, r.status_code, r.json()["text"]

ready, status, text = asyncio.run(main())
print(json.dumps({{"ready": ready, "status": status, "text": text,
                  "modules": sorted(sys.modules)}}))
""")
    assert result["status"] == 200 and result["text"].strip()
    assert result["ready"]["ready"] is True and result["ready"]["tasks"] is None
    assert not set(result["modules"]) & set(BACKEND_MODULES)


def test_the_version_loads_no_engine() -> None:
    result = run_python("""
import contextlib, io, json, sys
from ocrserve.cli import main
sys.argv = ["ocrserve", "--version"]
out = io.StringIO()
with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
    main()
print(json.dumps({"out": out.getvalue(), "modules": sorted(sys.modules)}))
""")
    assert result["out"].strip()
    assert not set(result["modules"]) & {*ENGINE_MODULES, *BACKEND_MODULES}


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///tasks.db",
        "sqlite:////var/lib/ocrserve/tasks.db",
        "sqlite+pysqlite:////data/tasks.db?timeout=30",
        "sqlite:///rel/dir/tasks%20one.db",
        "sqlite://",
        "sqlite:///:memory:",
        "postgresql+psycopg://ocr:pw@db:5432/ocr",
        "mysql://db/ocr",
    ],
)
def test_the_lock_reads_a_database_url_as_sqlalchemy_does(url: str) -> None:
    parsed = make_url(url)
    expected = None
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        expected = Path(parsed.database)
    assert sqlite_path(url) == expected


def test_a_setting_whose_package_is_missing_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "celery" else real(name, *a)
    )
    with pytest.raises(ConfigError, match=r"pip install 'ocrserve\[distributed\]'") as e:
        Settings(broker_url="amqp://guest:guest@127.0.0.1:5672//").check_extras()
    assert e.value.setting == "broker_url"
    Settings().check_extras()  # nothing asked for: nothing needed


# --- the task backend, started after ready ----------------------------------------------------


async def test_a_task_store_that_cannot_open_is_retried_while_ocr_serves(
    tmp_path: Path, engine: Engine
) -> None:
    s = Settings(
        data_dir=tmp_path, lanes=1, log_json=False, webhook_secret=SECRET, cache_max_entries=0
    )
    database = tmp_path / "tasks.db"
    database.write_bytes(b"this is not a SQLite database" * 100)
    async for client in client_for(s, engine, tasks_up=False):
        down = await wait_ready_tasks(client, ("down",))
        assert down["ready"] is True  # /ocr does not need the task store
        ocr = await client.post("/ocr", files={"file": ("a.jpg", LONG_LINE)})
        assert ocr.status_code == 200 and ocr.json()["text"].strip()
        refused = await client.post("/ocr/async", files={"file": ("a.jpg", LONG_LINE)})
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "storage_unavailable"
        assert "the task store is not available" in refused.json()["error"]["message"]
        assert refused.headers["retry-after"]
        metrics = (await client.get("/metrics")).text
        assert 'ocrserve_loop_restarts_total{loop="task_backend_start"}' in metrics

        database.write_bytes(b"")  # repaired: SQLite takes an empty file as a new database
        await wait_ready_tasks(client, ("up",))
        submitted = await client.post("/ocr/async", files={"file": ("a.jpg", LONG_LINE)})
        assert submitted.status_code == 202, submitted.text
        task_id = submitted.json()["task_id"]
        deadline = time.monotonic() + 120
        while (view := (await client.get(f"/task/{task_id}")).json())["status"] in (
            "queued",
            "running",
        ):
            assert time.monotonic() < deadline, view
            await asyncio.sleep(0.05)
        assert view["status"] == "succeeded" and view["result"]["text"].strip()


async def test_a_submit_right_after_start_waits_for_the_task_backend(
    tmp_path: Path, engine: Engine
) -> None:
    s = Settings(data_dir=tmp_path, lanes=1, log_json=False, webhook_secret=SECRET)
    async for client in client_for(s, engine, tasks_up=False):
        # No wait for /ready's tasks: the first submit waits for the backend (up to 10 s).
        submitted = await client.post("/ocr/async", files={"file": ("a.jpg", LONG_LINE)})
        assert submitted.status_code == 202, submitted.text
        assert (await client.get("/ready")).json()["tasks"] == "up"
