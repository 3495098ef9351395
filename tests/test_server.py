"""A real `ocrserve serve` process, called by the mission article's own client code."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest
import requests

from .conftest import FIXTURES, free_port, start_serve


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    env = os.environ | {
        "OCRSERVE_MAX_PAGES": "2",
        "OCRSERVE_DATA_DIR": str(tmp_path_factory.mktemp("server-data")),
    }
    proc = start_serve(env, port, log)
    try:
        yield f"http://localhost:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        output = log.read_text()
        # uvicorn shuts down gracefully, then re-raises the signal it caught
        assert proc.returncode in (0, -signal.SIGTERM), output
        assert "Application shutdown complete" in output
        assert '"msg": "ready"' in output  # JSON logs, one object per line


def test_the_articles_batch_client_works_unchanged(server: str) -> None:
    paths = [
        FIXTURES / "en_doc_paragraph.jpg",
        FIXTURES / "irs_f1040nr.pdf",
        FIXTURES / "zh_doc_certificate.jpeg",
    ]
    # From the mission article, with only the port changed:
    images = [open(p, "rb") for p in paths]  # noqa: SIM115 - the article's own code
    files = [("images", img) for img in images]
    response = requests.post(f"{server}/ocr/batch", files=files, timeout=60)
    for img in images:
        img.close()
    assert response.status_code == 200
    results = response.json()
    texts = [res["text"] for res in results]
    assert texts[0].endswith("of this dataset are specified as follows.")
    assert "Nonresident Alien Income Tax Return" in texts[1]
    assert results[1]["pages_total"] == 5 and results[1]["page_count"] == 2
    assert "使用性质" in texts[2]


def test_the_articles_single_file_client_works_unchanged(server: str) -> None:
    with open(FIXTURES / "en_line_long_text.jpg", "rb") as f:
        files = {"image": f}
        r = requests.post(f"{server}/ocr", files=files, timeout=30)
    r.raise_for_status()
    assert r.json()["text"] == "采用高端宝石制作镜片，更有效保护眼睛，避免辐射"
    assert r.headers["x-request-id"]
