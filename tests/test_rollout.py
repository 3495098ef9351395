"""Model rollout and the second engine as a user meets them: through HTTP (the forcing header,
the share, the cache, a task, the metrics by model version) and the command line
(`ocrserve models`, `ocrserve compare`, `ocrserve ocr --lang ru`).

The candidate model set is the shipped models under other file names (another version
string, the same weights), so the two sets must read the same text.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image, ImageDraw, ImageFont
from prometheus_client.parser import text_string_to_metric_families

from ocrserve import Engine, Settings
from ocrserve.engine.models import BUILTIN_MODELS, default_model_dir

from .conftest import FIXTURES, cer, client_for
from .test_tasks import wait_for

PARAGRAPH = (FIXTURES / "en_doc_paragraph.jpg").read_bytes()
LINE = (FIXTURES / "en_line_long_text.jpg").read_bytes()
HEADER = "X-OCRServe-Model"
NOTO = Path("/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf")

pytestmark = pytest.mark.anyio


def copy_of_the_models(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    manifest = []
    for spec in BUILTIN_MODELS:
        name = f"candidate_{spec.file}"
        shutil.copyfile(default_model_dir() / spec.file, folder / name)
        manifest.append({"task": spec.task, "file": name, "sha256": spec.sha256,
                         "langs": list(spec.langs)})  # fmt: skip
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.fixture(scope="module")
def candidate_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_of_the_models(tmp_path_factory.mktemp("candidate"))


def settings(tmp_path: Path, candidate_dir: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "data_dir": tmp_path, "lanes": 1, "log_json": False, "candidate_model_dir": candidate_dir,
        "candidate_share": 0.0, "cache_max_entries": 64, "intra_op_threads": 2,
    }  # fmt: skip
    return Settings(**(base | overrides))


@pytest.fixture
async def client(
    engine: Engine, tmp_path: Path, candidate_dir: Path
) -> AsyncIterator[httpx.AsyncClient]:
    async for c in client_for(settings(tmp_path, candidate_dir), engine):
        yield c


def candidate_version(candidate_dir: Path) -> str:
    return "+".join(
        f"candidate_{s.file.removesuffix('.onnx')}@{s.sha256[:12]}" for s in BUILTIN_MODELS
    )


async def test_the_header_forces_the_candidate_and_every_result_names_it(
    client: httpx.AsyncClient, engine: Engine, candidate_dir: Path
) -> None:
    files = {"image": ("p.jpg", PARAGRAPH)}
    stable = await client.post("/ocr", files=files)
    tried = await client.post("/ocr", files=files, headers={HEADER: "candidate"})
    assert stable.status_code == tried.status_code == 200, tried.text
    version = candidate_version(candidate_dir)
    assert stable.json()["model"] == engine.model_version
    assert tried.json()["model"] == version
    assert {p["model"] for p in tried.json()["pages"]} == {version}
    assert tried.json()["text"] == stable.json()["text"]
    # The cache key holds the model version: the candidate's answer is its own, not a hit.
    assert tried.headers["x-cache"] == "miss"
    again = await client.post("/ocr", files=files, headers={HEADER: "candidate"})
    assert again.headers["x-cache"] == "hit" and again.json()["model"] == version
    metrics = (await client.get("/metrics")).text
    for model in (engine.model_version, version):
        assert f'ocrserve_pages_read_total{{engine="ppocr",model="{model}",result="text"}} 1.0' in (
            metrics
        )
        assert f'ocrserve_page_seconds_count{{engine="ppocr",model="{model}"}} 1.0' in metrics
        assert f'ocrserve_line_confidence_bucket{{engine="ppocr",le="1.0",model="{model}"}}' in (
            metrics
        )


async def test_a_wrong_header_is_a_422(client: httpx.AsyncClient) -> None:
    r = await client.post("/ocr", files={"image": ("l.jpg", LINE)}, headers={HEADER: "newest"})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "invalid_option"


async def test_without_a_candidate_forcing_it_is_a_422(engine: Engine, tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path, lanes=1, log_json=False)
    async for client in client_for(s, engine):
        r = await client.post(
            "/ocr", files={"image": ("l.jpg", LINE)}, headers={HEADER: "candidate"}
        )
        assert r.status_code == 422 and "no candidate" in r.json()["error"]["message"]


async def test_the_whole_share_reads_the_candidate(
    engine: Engine, tmp_path: Path, candidate_dir: Path
) -> None:
    s = settings(tmp_path, candidate_dir, candidate_share=1.0)
    async for client in client_for(s, engine):
        r = await client.post("/ocr", files={"image": ("l.jpg", LINE)})
        assert r.json()["model"] == candidate_version(candidate_dir)
        batch = await client.post(
            "/ocr/batch", files=[("images", ("l.jpg", LINE)), ("images", ("p.jpg", PARAGRAPH))]
        )
        assert {item["model"] for item in batch.json()} == {candidate_version(candidate_dir)}
        # A PaddleX client's request (its answer has no model field): the metrics say which.
        version = candidate_version(candidate_dir)
        before = await pages_read(client, version)
        paddlex = await client.post(
            "/ocr", json={"file": base64.b64encode(PARAGRAPH).decode(), "fileType": 1}
        )
        assert paddlex.status_code == 200 and paddlex.json()["errorCode"] == 0, paddlex.text
        assert await pages_read(client, version) == before + 1


async def pages_read(client: httpx.AsyncClient, model: str) -> float:
    """``ocrserve_pages_read_total`` of ``model``'s pages with text, from ``/metrics``."""
    families = text_string_to_metric_families((await client.get("/metrics")).text)
    return sum(
        sample.value
        for family in families
        for sample in family.samples
        if sample.name == "ocrserve_pages_read_total"
        and sample.labels.get("model") == model
        and sample.labels.get("result") == "text"
    )


async def test_a_task_keeps_the_set_it_was_given(
    client: httpx.AsyncClient, candidate_dir: Path
) -> None:
    r = await client.post(
        "/ocr/async", files={"image": ("l.jpg", LINE)}, headers={HEADER: "candidate"}
    )
    assert r.status_code == 202, r.text
    done = await wait_for(client, r.json()["task_id"])
    assert done["status"] == "succeeded", done
    assert done["result"]["model"] == candidate_version(candidate_dir)
    assert {p["model"] for p in done["result"]["pages"]} == {candidate_version(candidate_dir)}


async def test_russian_through_http_is_read_by_tesseract(client: httpx.AsyncClient) -> None:
    r = await client.post("/ocr", files={"image": ("ru.png", russian_png())}, data={"lang": "ru"})
    assert r.status_code == 200, r.text
    [page] = r.json()["pages"]
    assert page["engine"] == "tesseract" and page["model"].startswith("tesseract-")
    assert cer(RUSSIAN, r.json()["text"]) < 0.05, r.json()["text"]
    missing = await client.post("/ocr", files={"image": ("l.jpg", LINE)}, data={"lang": "tlh"})
    assert missing.status_code == 422
    error = missing.json()["error"]
    assert error["code"] == "language_not_installed"
    assert {"en", "ch", "ko", "ru", "ar"} <= set(error["allowed"]), error


# --- the command line ------------------------------------------------------------------------

RUSSIAN = "Счёт № 123 от 01.02.2024"


def russian_png() -> bytes:
    font = ImageFont.truetype(str(NOTO), 40)
    left, top, right, bottom = font.getbbox(RUSSIAN)
    img = Image.new("RGB", (right - left + 60, bottom - top + 60), "white")
    ImageDraw.Draw(img).text((30 - left, 30 - top), RUSSIAN, font=font, fill="black")
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def cli(*args: str | Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ocrserve", *map(str, args)],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "COLUMNS": "300", **env},
    )  # fmt: skip


def test_models_lists_languages_by_engine(candidate_dir: Path) -> None:
    r = cli("models", OCRSERVE_CANDIDATE_MODEL_DIR=str(candidate_dir))
    assert r.returncode == 0, r.stderr
    blocks = r.stdout.split("\n")
    ppocr = next(line for line in blocks if line.startswith("  languages:"))
    assert " en," in ppocr and "ko" not in ppocr.split()
    assert any(line.startswith("candidate: ") for line in blocks)
    tesseract = r.stdout[r.stdout.index("tesseract: tesseract-") :]
    langs = tesseract.splitlines()[1]
    assert {"ko,", "ru,", "ar,"} <= set(langs.split()), langs


def test_ocr_with_a_language_only_tesseract_reads(tmp_path: Path) -> None:
    image = tmp_path / "invoice-line.png"
    image.write_bytes(russian_png())
    r = cli("ocr", "--lang", "ru", "-f", "json", image)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["pages"][0]["engine"] == "tesseract"
    assert cer(RUSSIAN, doc["text"]) < 0.05, doc["text"]


def test_compare_prints_each_file_and_a_summary(tmp_path: Path, candidate_dir: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    shutil.copyfile(FIXTURES / "en_line_long_text.jpg", folder / "line.jpg")
    shutil.copyfile(FIXTURES / "phototest.tif", folder / "phototest.tif")
    (folder / "notes.txt").write_text("not a document: skipped")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"x" * 40)
    r = cli("compare", folder, "--candidate", candidate_dir)
    assert r.returncode == 1, r.stdout + r.stderr  # broken.png failed, the others did not
    out = r.stdout
    assert "== line.jpg: stable " in out and "== phototest.tif: stable " in out
    assert out.count("x); same text") == 2  # the same weights under other names
    assert "== broken.png: error: [corrupt_file]" in out
    assert "notes.txt" not in out
    assert "-- 2 files read by both (1 failed): 2 the same text" in out
    assert f"candidate: {candidate_version(candidate_dir)}" in out


def test_compare_without_a_candidate_says_how_to_give_one(tmp_path: Path) -> None:
    r = cli("compare", tmp_path)
    assert r.returncode == 2
    assert "--candidate" in r.stderr
