"""The task database as a resource: its files shrink after a purge, and a full disk is a 503
with Retry-After on submit, then the service recovers by itself."""

from __future__ import annotations

import asyncio
import base64
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ocrserve import Engine, Settings
from ocrserve.jobs.store import TaskStore
from ocrserve.jobs.task import NewTask, encode_options
from ocrserve.types import OCROptions, result_dict

from .conftest import FIXTURES, SECRET, client_for

pytestmark = pytest.mark.anyio

LONG_LINE = (FIXTURES / "en_line_long_text.jpg").read_bytes()


def files_size(db: Path) -> int:
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*") if p.is_file())


def test_the_database_files_shrink_after_a_purge(tmp_path: Path) -> None:
    db = tmp_path / "tasks.db"
    store = TaskStore(f"sqlite:///{db}")
    try:
        empty = result_dict([], pages_total=1, truncated=False, model="t", timings={})
        for _ in range(3):  # three 15 MB uploads, as a base64 task would leave them
            row, _ = store.create(
                NewTask(options=encode_options(OCROptions(), 1), input_bytes=bytes(15 << 20))
            )
            assert store.claim(row.id, "w", lease=30, max_runs=3) is not None
            assert store.finish(row.id, "w", "succeeded", result=empty)
        assert files_size(db) > 45 << 20
        assert store.purge(time.time() + 1) == 3
        assert files_size(db) > 45 << 20  # deleting rows alone gives nothing back
        store.compact()
        assert files_size(db) < 2 << 20
    finally:
        store.close()


def test_a_database_of_an_earlier_version_is_made_shrinkable(tmp_path: Path) -> None:
    db = tmp_path / "tasks.db"
    TaskStore(f"sqlite:///{db}").close()
    with sqlite3.connect(db) as conn:  # as an earlier version left it: no auto-vacuum
        conn.execute("PRAGMA auto_vacuum=NONE")
        conn.execute("VACUUM")
        assert conn.execute("PRAGMA auto_vacuum").fetchone() == (0,)
    TaskStore(f"sqlite:///{db}").close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA auto_vacuum").fetchone() == (2,)  # incremental


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs: a data folder whose disk can be filled up for real."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.fail(f"this test mounts a tmpfs (needs root, as CI has): {done.stderr}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    with filler.open("wb") as f:
        try:
            while True:
                f.write(bytes(64 << 10))
                f.flush()
        except OSError:
            pass
    return filler


async def test_a_full_disk_is_a_503_with_retry_after_then_the_service_recovers(
    engine: Engine, small_disk: Path
) -> None:
    settings = Settings(data_dir=small_disk, lanes=1, log_json=False, webhook_secret=SECRET)
    body = {"image_base64": base64.b64encode(LONG_LINE).decode()}
    async for client in client_for(settings, engine):
        filler = fill(small_disk)
        r = await client.post("/ocr/async", json=body)
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "storage_unavailable"
        assert int(r.headers["retry-after"]) >= 1
        filler.unlink()  # space again
        r = await client.post("/ocr/async", json=body)
        assert r.status_code == 202, r.text
        task_id = r.json()["task_id"]
        deadline = time.monotonic() + 120
        while (t := (await client.get(f"/task/{task_id}")).json())["status"] in (
            "queued", "running",
        ):  # fmt: skip
            assert time.monotonic() < deadline, t
            await asyncio.sleep(0.05)
        assert t["status"] == "succeeded"
        assert t["result"]["text"] == "采用高端宝石制作镜片，更有效保护眼睛，避免辐射"
