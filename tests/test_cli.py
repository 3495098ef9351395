"""`ocrserve ocr` as a user runs it: a real subprocess on real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import ocrserve

from .conftest import FIXTURES

OCRSERVE = [sys.executable, "-m", "ocrserve"]


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*OCRSERVE, *map(str, args)], capture_output=True, text=True, timeout=300, check=False
    )


def test_text_output_of_one_image() -> None:
    r = run("ocr", FIXTURES / "en_doc_paragraph.jpg")
    assert r.returncode == 0, r.stderr
    assert r.stdout.rstrip().endswith("of this dataset are specified as follows.")


def test_jsonl_gives_one_object_per_page_with_lines() -> None:
    r = run("ocr", "--format", "jsonl", "--max-pages", "2", FIXTURES / "irs_f1040nr.pdf")
    assert r.returncode == 0, r.stderr
    pages = [json.loads(line) for line in r.stdout.splitlines()]
    assert [p["page"] for p in pages] == [1, 2]
    first = pages[0]
    assert first["file"].endswith("irs_f1040nr.pdf")
    assert "Nonresident Alien Income Tax Return" in first["text"]
    assert (first["width"], first["height"]) == (1700, 2200)  # 8.5x11 in at 200 dpi
    line = first["lines"][0]
    assert set(line) == {"text", "confidence", "box", "words"} and len(line["box"]) == 4
    assert " ".join(w["text"] for w in line["words"]) == line["text"]
    # never a silent truncation
    assert "read 2 of 5 pages" in r.stderr


def test_json_reports_truncation_and_the_model() -> None:
    r = run("ocr", "-f", "json", "--max-pages", "1", "--no-cls", FIXTURES / "irs_f1040nr.pdf")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert (doc["page_count"], doc["pages_total"], doc["truncated"]) == (1, 5, True)
    assert "PP-OCRv6_rec_small" in doc["model"]


def test_a_bad_file_fails_alone_and_sets_the_exit_code(tmp_path: Path) -> None:
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    missing = tmp_path / "missing.jpg"
    r = run("ocr", bad, FIXTURES / "en_line_long_text.jpg", missing)
    assert r.returncode == 1
    assert "采用高端宝石制作镜片" in r.stdout
    assert f"{bad}: error: [corrupt_file]" in r.stderr
    assert f"{missing}: error:" in r.stderr


def test_an_uninstalled_language_lists_what_is_installed() -> None:
    r = run("ocr", "--lang", "klingon", FIXTURES / "en_line_long_text.jpg")
    assert r.returncode == 2
    assert "language_not_installed" in r.stderr and "klingon" in r.stderr
    assert "chinese_cht" in r.stderr


def test_a_progress_bar_on_stderr_for_many_pages() -> None:
    r = run("ocr", "--progress", "--max-pages", "2", FIXTURES / "irs_f1040nr.pdf")
    assert r.returncode == 0, r.stderr
    assert "2/2" in r.stderr and "page" in r.stderr
    assert "2/2" not in r.stdout


def test_version_option_and_command_print_the_version() -> None:
    for args in (["--version"], ["version"]):
        r = run(*args)
        assert r.returncode == 0, r.stderr
        assert r.stdout == f"{ocrserve.__version__}\n"
