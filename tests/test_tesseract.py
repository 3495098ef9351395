"""The second engine: real Tesseract 5 (Debian's binary and packs, ``make system-deps``), no mocks.

The Korean, Russian and Arabic pages are rendered here with Debian's Noto fonts
(``fonts-noto-cjk``, ``fonts-noto-core``): no permissively licensed scan in those scripts was
at hand to commit. English is read from a committed scan (``tests/fixtures``) through the
fallback mapping of PP-OCR's ``en``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image, ImageDraw, ImageFont, features

from ocrserve.decode import decode_path
from ocrserve.engine.tesseract import LANG_PACKS, TesseractEngine
from ocrserve.errors import ConfigError, EngineError, LanguageNotInstalledError, OptionError
from ocrserve.types import Box, Line, OCROptions, Page, PageResult

from .conftest import FIXTURES, cer

FONTS = Path("/usr/share/fonts")
NEEDS = "make system-deps installs Tesseract, its packs and the Noto fonts"

U8 = npt.NDArray[np.uint8]
Rect = tuple[int, int, int, int]


@pytest.fixture(scope="module")
def tess() -> TesseractEngine:
    engine = TesseractEngine.detect()
    if engine is None:
        pytest.skip(f"tesseract is not installed ({NEEDS})")
    return engine


def font(name: str) -> Path:
    found = sorted(FONTS.rglob(name))
    if not found:
        pytest.skip(f"font {name} is not installed ({NEEDS})")
    return found[0]


def render(
    lines: Sequence[str], font_file: Path, size: int, *, rtl: bool = False
) -> tuple[U8, list[Rect]]:
    """Black lines on a white page, BGR as decode gives them, and each line's ink box
    (left, top, right, bottom). Right-to-left lines are set flush right, shaped by raqm."""
    face = ImageFont.truetype(str(font_file), size)
    pitch = int(size * 1.8)
    img = Image.new("RGB", (1200, 60 + pitch * len(lines)), "white")
    draw = ImageDraw.Draw(img)
    direction = {"direction": "rtl"} if rtl else {}
    rects = []
    for n, text in enumerate(lines):
        left, top, right, bottom = draw.textbbox((0, 0), text, font=face, **direction)
        x = 1160 - right if rtl else 40
        y = 30 + n * pitch
        draw.text((x, y), text, font=face, fill="black", **direction)
        rects.append((x + left, y + top, x + right, y + bottom))
    rgb = np.asarray(img, dtype=np.uint8)
    return np.ascontiguousarray(rgb[:, :, ::-1]), rects


def edges(box: Box) -> Rect:
    xs, ys = [p[0] for p in box], [p[1] for p in box]
    return int(min(xs)), int(min(ys)), int(max(xs)), int(max(ys))


def check_boxes(image: U8, lines: Sequence[Line], rects: Sequence[Rect]) -> None:
    """Each line lies over the line rendered there, and its words over its ink: every word
    box holds ink, its centre inside the rendered line, its sides within 4 px of the line's
    left and right and clear of the lines above and below, and the words together cover
    the line's ink.

    (Not "inside the line's ink box": Tesseract's boxes of some Korean syllables reach
    16 px below the ink of a 40 px line, into the space between lines.)"""
    ink = image.min(axis=2) < 128
    assert len(lines) == len(rects)
    for n, (line, (l0, t0, r0, b0)) in enumerate(zip(lines, rects, strict=True)):
        above = rects[n - 1][3] if n else 0
        below = rects[n + 1][1] if n + 1 < len(rects) else image.shape[0]
        assert line.words
        covered = np.zeros_like(ink)
        for word in line.words:
            x0, y0, x1, y1 = edges(word.box)
            assert word.box == ((x0, y0), (x1, y0), (x1, y1), (x0, y1))  # a 4-point quad
            assert l0 - 4 <= x0 < x1 <= r0 + 4 and above < y0 < y1 < below, (word, rects[n])
            assert t0 <= (y0 + y1) / 2 <= b0, (word, rects[n])
            assert ink[y0:y1, x0:x1].mean() > 0.05, word
            covered[y0:y1, x0:x1] = True
        line_ink = ink[t0:b0, l0:r0]
        assert (line_ink & covered[t0:b0, l0:r0]).sum() >= 0.97 * line_ink.sum()
        assert edges(line.box) == (
            min(edges(w.box)[0] for w in line.words),
            min(edges(w.box)[1] for w in line.words),
            max(edges(w.box)[2] for w in line.words),
            max(edges(w.box)[3] for w in line.words),
        )


def check_result(result: PageResult, tess: TesseractEngine, image: U8) -> None:
    assert result.engine == "tesseract"
    assert result.model == tess.model_version and result.model.startswith("tesseract-5.")
    assert (result.width, result.height) == (image.shape[1], image.shape[0])
    assert result.source == "ocr" and result.angle == 0
    assert result.timings.total > 0
    tops = [edges(line.box)[1] for line in result.lines]
    assert tops == sorted(tops)  # one column: reading order is top to bottom
    for line in result.lines:
        assert 0.5 <= line.confidence <= 1.0  # clean renders: Tesseract is sure of them
        assert line.text == " ".join(w.text for w in line.words)
        assert line.confidence == pytest.approx(
            sum(w.confidence for w in line.words) / len(line.words)
        )


def test_detect_reads_the_version_and_the_packs(tess: TesseractEngine) -> None:
    assert tess.name == "tesseract"
    assert tess.model_version.startswith("tesseract-5.")
    assert {"eng", "kor", "rus", "ara"} <= set(tess.installed)
    assert "osd" not in tess.installed and "equ" not in tess.installed
    # Ours (ISO 639-1, PaddleOCR's script models, PP-OCR's codes) and Tesseract's own.
    assert {"ko", "ru", "ar", "korean", "cyrillic", "arabic", "en", "kor"} <= set(tess.langs)
    assert list(tess.langs) == sorted(tess.langs)
    assert all(tess.serves(lang) for lang in tess.langs)
    packs = {"ko": "kor", "KO": "kor", "korean": "kor", "kor": "kor", "ar": "ara", "ru": "rus",
             "cyrillic": "rus", "en": "eng", "eng": "eng", "ch": "chi_sim", "zh": "chi_sim",
             "chinese_cht": "chi_tra", "japan": "jpn", "ja": "jpn"}  # fmt: skip
    assert {code: tess.pack_for(code) for code in packs} == packs
    missing = next(code for code, pack in LANG_PACKS.items() if pack not in tess.installed)
    assert tess.pack_for(missing) is None and not tess.serves(missing)
    assert tess.pack_for("xx") is None and tess.pack_for("osd") is None
    assert os.environ["OMP_THREAD_LIMIT"]  # set for the tesseract processes (if not already)


def test_detect_without_the_binary_is_none(tess: TesseractEngine) -> None:
    assert TesseractEngine.detect(binary="/nonexistent/tesseract") is None
    assert TesseractEngine.detect(binary="ocrserve-no-such-tesseract") is None
    # pytesseract keeps one binary per process: a second one is refused, the first kept.
    with pytest.raises(ConfigError) as info:
        TesseractEngine(binary="/bin/true")
    assert info.value.setting == "binary"
    image, _ = render(["Привет"], font("NotoSans-Regular.ttf"), 40)
    assert tess.run([Page(image)], OCROptions(lang="ru"))[0].text == "Привет"


def test_korean(tess: TesseractEngine) -> None:
    text = ["안녕하세요 세계", "오늘 날씨가 좋습니다", "서울특별시 중구 세종대로 110"]
    image, rects = render(text, font("NotoSansCJK-Regular.ttc"), 40)
    [result] = tess.run([Page(image)], OCROptions(lang="ko"))
    check_result(result, tess, image)
    assert result.text == "\n".join(text)
    check_boxes(image, result.lines, rects)
    # Tesseract's TSV has "날", "씨", "가": one word, as its text output spaces them.
    assert [w.text for w in result.lines[1].words] == ["오늘", "날씨가", "좋습니다"]


def test_russian_invoice(tess: TesseractEngine) -> None:
    text = ["Счёт № 123 от 01.02.2024", "Итого к оплате: 4 500 руб."]
    image, rects = render(text, font("NotoSans-Regular.ttf"), 40)
    [result] = tess.run([Page(image)], OCROptions(lang="ru"))
    check_result(result, tess, image)
    assert cer("\n".join(text), result.text) <= 0.02
    assert result.lines[0].text == text[0]
    check_boxes(image, result.lines, rects)
    assert [w.text for w in result.lines[0].words] == text[0].split()


def test_arabic_reads_in_logical_order(tess: TesseractEngine) -> None:
    if not features.check("raqm"):
        pytest.skip("Pillow has no raqm: it cannot shape Arabic")
    text = ["مرحبا بالعالم", "السلام عليكم ورحمة الله"]
    image, rects = render(text, font("NotoNaskhArabic-Regular.ttf"), 44, rtl=True)
    [result] = tess.run([Page(image)], OCROptions(lang="ar"))
    check_result(result, tess, image)
    # The text as it is stored and typed (logical order), not as it lies left to right.
    assert result.text == "\n".join(text)
    check_boxes(image, result.lines, rects)
    for line in result.lines:
        # Words in reading order: the first is the rightmost.
        lefts = [edges(w.box)[0] for w in line.words]
        assert lefts == sorted(lefts, reverse=True)
        assert edges(line.words[0].box)[2] >= 1160 - 4  # set flush right


def test_english_scan_through_ppocr_code(tess: TesseractEngine) -> None:
    """PP-OCR's ``en`` read by Tesseract's ``eng``: the fallback's mapping, on a real scan."""
    [page] = decode_path(FIXTURES / "en_doc_paragraph.jpg").pages
    [result] = tess.run([page], OCROptions(lang="en"))
    truth = (
        "3 MovieShots Dataset\n\n"
        "To facilitate the shot type analysis in videos, we collect MovieShots, a large-scale\n"
        "shot type annotation set that contains 46K shots from 7858 movies. The details\n"
        "of this dataset are specified as follows."
    )
    assert cer(truth, result.text) <= 0.02
    # The title is a block of its own: a blank line parts blocks, as in PP-OCR's pages.
    assert result.text.startswith("3 MovieShots Dataset\n\n")
    assert (result.width, result.height) == (709, 132)
    assert all(0.0 <= w.confidence <= 1.0 for line in result.lines for w in line.words)


def test_a_language_without_a_pack_lists_the_installed(tess: TesseractEngine) -> None:
    missing = next(code for code, pack in LANG_PACKS.items() if pack not in tess.installed)
    for lang in (missing, "xx"):
        with pytest.raises(LanguageNotInstalledError) as info:
            tess.run([], OCROptions(lang=lang))
        assert {"ko", "kor", "ru", "ar", "en"} <= set(info.value.installed)
        assert "ko" in info.value.message


def test_min_confidence_is_scaled_to_tesseract_confidences(tess: TesseractEngine) -> None:
    image, _ = render(["Счёт № 123 от 01.02.2024"], font("NotoSans-Regular.ttf"), 40)
    page = Page(image)
    [kept] = tess.run([page], OCROptions(lang="ru", min_confidence=1.0))  # drops below 0.4
    assert kept.text == "Счёт № 123 от 01.02.2024"
    strict = TesseractEngine(min_confidence_scale=1.0)
    [dropped] = strict.run([page], OCROptions(lang="ru", min_confidence=1.0))
    assert dropped.lines == () and dropped.text == ""
    assert strict.run([page], OCROptions(lang="ru", min_confidence=0.0))[0].lines


def test_pages_in_order_grey_bgra_and_deferred(tess: TesseractEngine) -> None:
    image, _ = render(["Привет", "мир"], font("NotoSans-Regular.ttf"), 40)
    grey = np.ascontiguousarray(image[:, :, 0])
    bgra = np.dstack([image, np.full(image.shape[:2], 255, np.uint8)])
    deferred = Page.deferred(lambda: image, width=image.shape[1], height=image.shape[0], index=4)
    pages = [Page(grey, index=1), Page(bgra, index=2), deferred]
    results = tess.run(pages, OCROptions(lang="ru"))
    assert [r.index for r in results] == [1, 2, 4]
    assert [" ".join(r.text.split()) for r in results] == ["Привет мир"] * 3
    assert tess.run([], OCROptions(lang="ru")) == []


def test_bad_input_is_refused_at_the_boundary(tess: TesseractEngine) -> None:
    with pytest.raises(OptionError, match="uint8"):
        tess.run([Page(np.zeros((8, 8, 3), np.float32))], OCROptions(lang="en"))  # type: ignore[arg-type]
    with pytest.raises(OptionError, match="HxWx3"):
        tess.run([Page(np.zeros((8, 8, 2), np.uint8))], OCROptions(lang="en"))
    with pytest.raises(ConfigError):
        TesseractEngine(psm=0)
    with pytest.raises(ConfigError):
        TesseractEngine(timeout_s=0)


def test_a_page_past_its_timeout_is_an_engine_error(tess: TesseractEngine) -> None:
    engine = TesseractEngine(timeout_s=0.001)  # no process starts, loads a pack and reads in 1 ms
    image, _ = render(["Счёт № 123"], font("NotoSans-Regular.ttf"), 40)
    with pytest.raises(EngineError, match=r"more than 0\.001 s on page 7"):
        engine.run([Page(image, index=7)], OCROptions(lang="ru"))


def test_warmup_runs_once(tess: TesseractEngine) -> None:
    engine = TesseractEngine()
    assert engine.warmup() > 0
    assert engine.warmed and engine.warmup() == 0.0
