#!/usr/bin/env python3
"""Reach: Tesseract on the languages PP-OCR lacks, the fallback's cost, other languages'
models kept warm, the compatibility routes, and the rollout's split.

    python bench/reach.py                          # all five parts
    python bench/reach.py --parts langs,split      # some of them
    python bench/reach.py --repeat 1               # a quick check that everything runs
    python bench/reach.py --write-results          # the reach section of bench/RESULTS.md
    python bench/reach.py --from-json bench/out/reach-X.json --note "..." --write-results

Every timing is the median of ``--repeat`` calls after one untimed call (its result is the one
scored); before each part the 1-minute load average must be below ``--max-load`` (polled every
30 s, up to ``--wait-max`` seconds; a part that still starts busier says so), and the report
gives that load and the CPU other processes took during the part. Nothing is asserted.

- **langs**: ~10 lines per language (an invoice: names, addresses, dates, amounts) rendered
  with Debian's Noto fonts at two sizes, one page each, black on white: rendered, not scanned.
  A line needing glyphs the script's font lacks (digits in Noto Sans Hebrew and Thai) is set
  in that font merged with Noto Sans's missing glyphs (fontTools), so raqm shapes and orders
  the whole line. Read through ``Engines.run`` with ``OCROptions(lang=...)`` (the service's
  path: Tesseract for ko, ru, ar, uk, el, he, hi, th); en and ch read by both PP-OCR (the
  router) and Tesseract (``Engines.second.run``). CER: NFKC, whitespace runs as one space
  (``../shared/eval/score.py``'s normalisation), and again with no spaces at all. Tesseract's
  pages are also read once with ``--psm 4`` (one column of lines), for its CER.
- **fallback**: real pages read by PP-OCR (normal), by the fallback after PP-OCR fails on the
  page (``main.run`` replaced on this bench's engine by one raising ``ModelError``, as
  tests/test_router.py does; breaker closed), with the breaker open (``fail_max`` failures
  first: PP-OCR is not called), and by Tesseract alone (no router).
- **warm**: a model folder with two extra recognisers (copies of the shipped one for the
  languages ``xx`` and ``yy``, as tests/test_router.py's last test), one fresh worker process
  per budget (``OCRSERVE_MODEL_MEMORY_MB`` 64: both fit; 21: one fits), one line read with
  ``orientation="off"``: the first call in a new language (loading its model) vs warm calls,
  the process RSS (psutil) after each, and the ``WarmModels`` loads and evictions.
- **compat**: one ``ocrserve serve`` (``OCRSERVE_CACHE_MAX_ENTRIES=0``: every call
  recognises), the same image through native ``POST /ocr`` (multipart ``image``), PaddleX's
  JSON (``{"file": base64, "fileType": 1}``) and RapidOCR's multipart ``image_file``, the
  three in turn each round.
- **split**: the share of 100,000 request keys (32-byte digests, as ``api/service.py`` makes
  them) ``Engines.choose`` gives the candidate at each share, against the binomial's standard
  deviation, and what one ``choose()`` costs.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import harness
import numpy as np
import tables

if TYPE_CHECKING:
    import httpx

    from ocrserve.engine import Engines
    from ocrserve.types import OCROptions, Page, PageResult

TAG = "reach"
PARTS = ("langs", "fallback", "warm", "compat", "split")
#: The order they run in: the server last (its code is the working tree's at that moment).
RUN_ORDER = ("langs", "fallback", "split", "warm", "compat")
FONTS = Path("/usr/share/fonts")
FIXTURES = harness.ROOT / "tests" / "fixtures"
#: Font sizes in pixels: about 9 pt and 14 pt at 200 dpi.
SIZES = (24, 40)
MAX_LOAD = 1.5
WAIT_MAX_S = 2400.0
POLL_S = 30.0
#: Breaker-open path: failures before the breaker opens (``breaker_failures``).
FAIL_MAX = 3
#: The SROIE receipt of the fallback part (read from ../shared/eval; never committed).
RECEIPT = ("sroie_receipts_en", "033.jpg")
SHARES = (0.01, 0.05, 0.2, 0.5)
KEYS = 100_000
#: The warm part's budgets, in MB as OCRSERVE_MODEL_MEMORY_MB takes them: the recogniser is
#: 20.25 MiB, so 21 holds one extra model and 64 both.
BUDGETS_MB = {"both fit": 64, "one fits": 21}
EXTRA_LANGS = ("xx", "yy")
#: One line (545x34), read with ``orientation="off"`` (a page of one line is otherwise read at
#: four turns): a call short enough that loading a model shows beside it.
WARM_PAGE = "en_line_long_text.jpg"
COMPAT_IMAGES = ("en_line_long_text.jpg", "en_doc_paragraph.jpg")
ROUTES = ("native", "paddlex", "rapidocr")
READY_TIMEOUT_S = 120.0
COMPAT_ROUNDS = 11

T = TypeVar("T")


# --------------------------------------------------------------------------- the pages


@dataclass(frozen=True, slots=True)
class Sample:
    """One language's page: its lines, and the Noto font (file, face index) they are set in."""

    lang: str
    name: str
    font: str
    lines: tuple[str, ...]
    index: int = 0
    rtl: bool = False


SAMPLES: tuple[Sample, ...] = (
    Sample("ko", "Korean", "NotoSansCJK-Regular.ttc", index=1, lines=(
        "세금계산서", "공급자: 주식회사 한빛상사", "주소: 서울특별시 강남구 테헤란로 152",
        "발행일: 2024년 3월 15일", "품목: 사무용 의자 4개", "단가: 125,000원",
        "공급가액: 500,000원", "부가세: 50,000원", "합계 금액: 550,000원",
        "결제 기한: 2024년 4월 15일",
    )),
    Sample("ru", "Russian", "NotoSans-Regular.ttf", lines=(
        "Счёт-фактура № 2024/0315", "Поставщик: ООО «Северный ветер»",
        "Адрес: г. Москва, ул. Тверская, д. 12, кв. 45", "Дата: 15 марта 2024 г.",
        "Наименование: бумага офисная А4, 10 пачек", "Цена за единицу: 350,00 руб.",
        "Сумма без НДС: 3 500,00 руб.", "НДС 20%: 700,00 руб.",
        "Итого к оплате: 4 200,00 руб.", "Оплатить до 15 апреля 2024 г.",
    )),
    Sample("uk", "Ukrainian", "NotoSans-Regular.ttf", lines=(
        "Рахунок-фактура № 118", "Постачальник: ТОВ «Зелена долина»",
        "Адреса: м. Київ, вул. Хрещатик, 22", "Дата виписки: 15 березня 2024 р.",
        "Товар: олія соняшникова, 20 пляшок", "Ціна: 64,50 грн",
        "Сума без ПДВ: 1 290,00 грн", "ПДВ 20%: 258,00 грн",
        "Всього до сплати: 1 548,00 грн", "Підпис отримувача: Іваненко О. П.",
    )),
    Sample("el", "Greek", "NotoSans-Regular.ttf", lines=(
        "Τιμολόγιο Πώλησης αρ. 2024-087", "Εκδότης: Αφοί Παπαδόπουλοι Ο.Ε.",
        "Διεύθυνση: Λεωφόρος Συγγρού 45, Αθήνα 11742", "Ημερομηνία: 15 Μαρτίου 2024",
        "Περιγραφή: χαρτί εκτύπωσης Α4, 10 πακέτα", "Τιμή μονάδας: 4,20 €",
        "Καθαρή αξία: 42,00 €", "ΦΠΑ 24%: 10,08 €", "Σύνολο πληρωμής: 52,08 €",
        "Τρόπος πληρωμής: τραπεζική κατάθεση",
    )),
    Sample("ar", "Arabic", "NotoNaskhArabic-Regular.ttf", rtl=True, lines=(
        "فاتورة ضريبية رقم 7821", "المورد: شركة النور للتجارة",
        "العنوان: شارع الملك فهد، الرياض", "التاريخ: 15 مارس 2024",
        "الصنف: ورق طباعة، 10 علب", "سعر الوحدة: 25.00 ريال",
        "المبلغ قبل الضريبة: 250.00 ريال", "ضريبة القيمة المضافة 15%: 37.50 ريال",
        "الإجمالي المستحق: 287.50 ريال", "تاريخ الاستحقاق: 15 أبريل 2024",
    )),
    Sample("he", "Hebrew", "NotoSansHebrew-Regular.ttf", rtl=True, lines=(
        "חשבונית מס מספר 4512", 'ספק: אורן שירותי משרד בע"מ', "כתובת: רחוב הרצל 25, תל אביב",
        "תאריך: 15 במרץ 2024", "פריט: נייר הדפסה, 10 חבילות", 'מחיר ליחידה: 18.50 ש"ח',
        'סכום לפני מע"מ: 185.00 ש"ח', 'מע"מ 17%: 31.45 ש"ח', 'סך הכל לתשלום: 216.45 ש"ח',
        "תנאי תשלום: שוטף + 30",
    )),
    Sample("hi", "Hindi", "NotoSansDevanagari-Regular.ttf", lines=(
        "कर बीजक संख्या 3045", "विक्रेता: शर्मा ट्रेडर्स प्राइवेट लिमिटेड",
        "पता: 12 गांधी मार्ग, नई दिल्ली 110001", "दिनांक: 15 मार्च 2024",
        "विवरण: कार्यालय कागज, 10 पैकेट", "दर: 250 रुपये प्रति पैकेट", "कुल राशि: 2500 रुपये",
        "जीएसटी 18%: 450 रुपये", "देय राशि: 2950 रुपये", "भुगतान की अंतिम तिथि: 15 अप्रैल 2024",
    )),
    Sample("th", "Thai", "NotoSansThai-Regular.ttf", lines=(
        "ใบกำกับภาษี เลขที่ 5521", "ผู้ขาย: บริษัท สยามพาณิชย์ จำกัด",
        "ที่อยู่: 99 ถนนสุขุมวิท กรุงเทพฯ 10110", "วันที่: 15 มีนาคม 2567",
        "รายการ: กระดาษถ่ายเอกสาร 10 รีม", "ราคาต่อหน่วย: 120.00 บาท", "รวมเป็นเงิน: 1,200.00 บาท",
        "ภาษีมูลค่าเพิ่ม 7%: 84.00 บาท", "ยอดชำระทั้งสิ้น: 1,284.00 บาท", "กำหนดชำระ: 15 เมษายน 2567",
    )),
    # PP-OCR's own languages, read by both engines.
    Sample("en", "English", "NotoSans-Regular.ttf", lines=(
        "INVOICE No. 2024-0315", "Northwind Office Supplies Ltd.",
        "221 Baker Street, London NW1 6XE", "Date: 15 March 2024",
        "Item: A4 copy paper, 10 reams", "Unit price: $4.20", "Subtotal: $42.00",
        "Sales tax 8%: $3.36", "Total due: $45.36", "Payment due by 15 April 2024",
    )),
    Sample("ch", "Chinese (simplified)", "NotoSansCJK-Regular.ttc", index=2, lines=(
        "增值税专用发票 No. 20240315", "销售方：北京华文办公用品有限公司",
        "地址：北京市海淀区中关村大街27号", "开票日期：2024年3月15日", "货物名称：A4复印纸 10包",
        "单价：25.00元", "金额：250.00元", "税率13%：32.50元", "价税合计：282.50元",
        "付款期限：2024年4月15日",
    )),
)  # fmt: skip
BOTH_ENGINES = ("en", "ch")


def font_file(name: str) -> Path:
    found = sorted(FONTS.rglob(name))
    if not found:
        raise FileNotFoundError(f"font {name} is not installed (make system-deps)")
    return found[0]


def page_font(sample: Sample, folder: Path) -> tuple[Path, int, list[str]]:
    """The font the sample is set in, and the characters taken from Noto Sans: its own font,
    or that font merged with Noto Sans's glyphs for the characters it lacks."""
    from fontTools import subset
    from fontTools.merge import Merger
    from fontTools.ttLib import TTFont

    path = font_file(sample.font)
    if path.suffix == ".ttc":  # the CJK collection covers Latin, digits and punctuation
        return path, sample.index, []
    cmap = TTFont(str(path)).getBestCmap()
    text = "".join(sample.lines)
    missing = sorted({c for c in text if not c.isspace() and ord(c) not in cmap})
    if not missing:
        return path, 0, []
    latin = TTFont(str(font_file("NotoSans-Regular.ttf")))
    options = subset.Options()
    options.layout_features = ["*"]
    cut = subset.Subsetter(options)
    cut.populate(text="".join(missing))
    cut.subset(latin)
    latin_path = folder / f"NotoSans-{sample.lang}.ttf"
    latin.save(str(latin_path))
    merged = folder / f"{path.stem}+NotoSans.ttf"
    Merger().merge([str(path), str(latin_path)]).save(str(merged))
    return merged, 0, missing


def render_page(sample: Sample, size: int, font: Path, index: int) -> np.ndarray:
    """The sample's lines, black on white, BGR as ``decode`` gives pages; right-to-left lines
    flush right, shaped and ordered by raqm."""
    from PIL import Image, ImageDraw, ImageFont

    face = ImageFont.truetype(str(font), size, index=index)
    direction = "rtl" if sample.rtl else None
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    boxes = [probe.textbbox((0, 0), t, font=face, direction=direction) for t in sample.lines]
    margin, pitch = 2 * size, int(size * 1.7)
    width = math.ceil(max(b[2] for b in boxes)) + 2 * margin
    img = Image.new("RGB", (width, 2 * margin + pitch * len(sample.lines)), "white")
    draw = ImageDraw.Draw(img)
    for n, (text, box) in enumerate(zip(sample.lines, boxes, strict=True)):
        x = width - margin - box[2] if sample.rtl else margin
        draw.text((x, margin + n * pitch), text, font=face, fill="black", direction=direction)
    rgb = np.asarray(img, dtype=np.uint8)
    return np.ascontiguousarray(rgb[:, :, ::-1])


# --------------------------------------------------------------------------- measuring


def normalise(text: str, nospace: bool = False) -> str:
    """score.py's normalisation: NFKC, whitespace runs one space (or none)."""
    words = unicodedata.normalize("NFKC", text).split()
    return "".join(words) if nospace else " ".join(words)


def cer(reference: str, hypothesis: str, nospace: bool = False) -> float:
    """Character error rate: edits over the reference's characters, after :func:`normalise`."""
    ref, hyp = normalise(reference, nospace), normalise(hypothesis, nospace)
    prev = list(range(len(hyp) + 1))
    for i, a in enumerate(ref, 1):
        cur = [i]
        for j, b in enumerate(hyp, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a != b)))
        prev = cur
    return prev[-1] / max(len(ref), 1)


def reader(
    run: Callable[[Sequence[Page], OCROptions], list[PageResult]], page: Page, options: OCROptions
) -> Callable[[], PageResult]:
    """A call reading ``page`` alone with ``run``, for :func:`timed`."""
    return lambda: run([page], options)[0]


def timed(call: Callable[[], T], repeat: int) -> tuple[T, list[float]]:
    """One untimed call (its result returned), then ``repeat`` timed ones."""
    first = call()
    seconds = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - t0)
    return first, seconds


def wait_quiet(max_load: float, wait_max_s: float, what: str) -> dict[str, Any]:
    """Wait until the 1-minute load average is below ``max_load`` (polled every 30 s, up to
    ``wait_max_s``); the load then, the seconds waited, and whether it got that quiet."""
    t0 = time.monotonic()
    while True:
        load = os.getloadavg()[0]
        waited = time.monotonic() - t0
        if load < max_load or waited >= wait_max_s:
            if load >= max_load:
                print(
                    f"[{TAG}] {what}: load {load:.2f} after {waited:.0f} s: starting anyway",
                    file=sys.stderr,
                )
            return {"load_1m": load, "waited_s": waited, "quiet": load < max_load}
        print(f"[{TAG}] {what}: load {load:.2f} >= {max_load}: waiting", file=sys.stderr)
        time.sleep(POLL_S)


def changed(paths: Sequence[str]) -> list[str]:
    """Tracked files under ``paths`` that differ from HEAD (others' work in progress)."""
    import subprocess

    done = subprocess.run(
        ["git", "-C", str(harness.ROOT), "status", "--porcelain", "--untracked-files=no", *paths],
        capture_output=True,
        text=True,
        check=False,
    )
    return [line[3:] for line in done.stdout.splitlines() if line.strip()]


def engines_for_bench() -> Engines:
    from ocrserve.config import Settings
    from ocrserve.engine import Engines

    settings = Settings()
    engines = Engines.from_settings(settings)
    if engines.second is None:
        raise SystemExit("tesseract is not installed (make system-deps)")
    engines.warmup()
    return engines


def load_page(path: Path) -> Page:
    from ocrserve.decode import decode_path

    return decode_path(path).pages[0]


# --------------------------------------------------------------------------- langs


def part_langs(engines: Engines, repeat: int, run: Path) -> dict[str, Any]:
    import cv2

    from ocrserve.engine.tesseract import TesseractEngine
    from ocrserve.types import OCROptions, Page

    tess = engines.second
    assert isinstance(tess, TesseractEngine)
    # The same binary with every pack read as one column of lines (what Korean, Japanese and
    # Chinese get): one untimed call per page, for its CER.
    one_column = TesseractEngine(psm=4)
    fonts = run / "fonts"
    fonts.mkdir(exist_ok=True)
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    for sample in SAMPLES:
        if tess.pack_for(sample.lang) is None:
            skipped.append(sample.lang)
            continue
        font, index, borrowed = page_font(sample, fonts)
        reference = "\n".join(sample.lines)
        for size in SIZES:
            image = render_page(sample, size, font, index)
            cv2.imwrite(str(run / f"{sample.lang}-{size}.png"), image)
            page = Page(image)
            options = OCROptions(lang=sample.lang)
            readers = {"router": reader(engines.run, page, options)}
            if sample.lang in BOTH_ENGINES:
                readers["tesseract"] = reader(tess.run, page, options)
            for via, read in readers.items():
                result, seconds = timed(read, repeat)
                row = {
                    "lang": sample.lang,
                    "name": sample.name,
                    "font": sample.font + (f"#{index}" if index else ""),
                    "borrowed": borrowed,
                    "size": size,
                    "width": image.shape[1],
                    "height": image.shape[0],
                    "chars": len(normalise(reference)),
                    "engine": result.engine,
                    "via": via,
                    "lines": len(result.lines),
                    "cer": cer(reference, result.text),
                    "cer_nospace": cer(reference, result.text, nospace=True),
                    "seconds": seconds,
                    "text": result.text,
                }
                if result.engine == "tesseract":
                    [col] = one_column.run([page], options)
                    row["psm"] = tess.psm_for(tess.pack_for(sample.lang) or "")
                    row["cer_psm4"] = cer(reference, col.text)
                    row["cer_psm4_nospace"] = cer(reference, col.text, nospace=True)
                    row["text_psm4"] = col.text
                rows.append(row)
                print(
                    f"[{TAG}] langs {sample.lang} {size}px {result.engine}: CER "
                    f"{row['cer']:.1%}, {statistics.median(seconds):.2f} s",
                    file=sys.stderr,
                )
    return {"rows": rows, "skipped": skipped, "packs": list(tess.installed)}


# --------------------------------------------------------------------------- fallback


class Failing:
    """PP-OCR's ``run`` failing as a model failing at run time does (tests/test_router.py)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, pages: Sequence[Page], options: object = None) -> list[PageResult]:
        from ocrserve.errors import ModelError

        self.calls += 1
        raise ModelError("inference failed in PP-OCRv6_rec_small.onnx (bench/reach.py)")


def fallback_pages(eval_dir: Path) -> list[tuple[str, Page, str | None, bool]]:
    """(name, page, reference text or None, compare case-insensitively)."""
    golden = json.loads((FIXTURES / "golden.json").read_text(encoding="utf-8"))
    pages = [
        ("phototest.tif", load_page(FIXTURES / "phototest.tif"), golden["phototest.tif"], False),
        ("en_doc_paragraph.jpg", load_page(FIXTURES / "en_doc_paragraph.jpg"), None, False),
    ]
    folder, image = RECEIPT
    labels = eval_dir / "dev" / folder / "labels.jsonl"
    if labels.is_file():
        for line in labels.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            if rec["image"] == image:
                page = load_page(labels.parent / image)
                pages.append((f"SROIE {image}", page, rec["page_text"], True))
    return pages


def part_fallback(engines: Engines, repeat: int, eval_dir: Path) -> dict[str, Any]:
    from ocrserve.engine import Engines
    from ocrserve.types import OCROptions

    main, tess = engines.main, engines.second
    assert tess is not None
    options = OCROptions(lang="en")
    rows = []
    for name, page, reference, fold in fallback_pages(eval_dir):
        # A breaker that never opens, and one that is open (FAIL_MAX failures first).
        falling = Engines(main, second=tess, breaker_failures=10**6, breaker_reset_s=3600)
        tripped = Engines(main, second=tess, breaker_failures=FAIL_MAX, breaker_reset_s=3600)
        row: dict[str, Any] = {"page": name, "modes": {}}

        # Case folded for SROIE (its labels are upper case).
        ref = None if reference is None else (reference.lower() if fold else reference)

        def measure(
            mode: str,
            read: Callable[[], PageResult],
            row: dict[str, Any] = row,
            ref: str | None = ref,
            fold: bool = fold,
        ) -> None:
            result, seconds = timed(read, repeat)
            text = result.text.lower() if fold else result.text
            row["modes"][mode] = {
                "engine": result.engine,
                "seconds": seconds,
                "cer": None if ref is None else cer(ref, text),
            }
            print(
                f"[{TAG}] fallback {row['page']} {mode} ({result.engine}): "
                f"{statistics.median(seconds):.3f} s",
                file=sys.stderr,
            )

        measure("ppocr", reader(engines.run, page, options))
        failing = Failing()
        main.run = failing  # type: ignore[method-assign]
        try:
            measure("fallback", reader(falling.run, page, options))
            for _ in range(FAIL_MAX):
                tripped.run([page], options)
            row["breaker_state"] = tripped.breaker_state
            calls = failing.calls
            measure("breaker open", reader(tripped.run, page, options))
            row["ppocr_calls_while_open"] = failing.calls - calls
        finally:
            del main.run  # PP-OCR's own run again
        measure("tesseract alone", reader(tess.run, page, options))
        row["breaker_state_fallback"] = falling.breaker_state
        rows.append(row)
    return {"rows": rows, "fail_max": FAIL_MAX}


# --------------------------------------------------------------------------- warm


def model_folder(folder: Path) -> int:
    """The shipped models, and the recogniser again for each of :data:`EXTRA_LANGS`; returns
    the recogniser's size in bytes."""
    from ocrserve.engine.models import BUILTIN_MODELS, default_model_dir

    manifest = []
    rec_bytes = 0
    for spec in BUILTIN_MODELS:
        shutil.copyfile(default_model_dir() / spec.file, folder / spec.file)
        manifest.append(
            {"task": spec.task, "file": spec.file, "sha256": spec.sha256, "langs": list(spec.langs)}
        )
        if spec.task == "rec":
            rec_bytes = (folder / spec.file).stat().st_size
            for code in EXTRA_LANGS:
                shutil.copyfile(default_model_dir() / spec.file, folder / f"{code}_{spec.file}")
                manifest.append(
                    {
                        "task": "rec",
                        "file": f"{code}_{spec.file}",
                        "sha256": spec.sha256,
                        "langs": [code],
                    }
                )
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return rec_bytes


def warm_worker(folder: Path, budget_mb: int, repeat: int, out: Path) -> None:
    """One fresh process: the default language's calls, then each extra language's first
    call and warm calls, then each again; RSS and the warm models' counters after each."""
    import psutil  # type: ignore[import-untyped]  # no stubs in the dev extras

    from ocrserve.config import Settings
    from ocrserve.engine import Engine
    from ocrserve.types import OCROptions

    me = psutil.Process()

    def rss() -> float:
        return float(me.memory_info().rss) / harness.MB

    t0 = time.perf_counter()
    engine = Engine.from_settings(Settings(model_dir=folder, model_memory_mb=budget_mb))
    engine.warmup()
    start = {"seconds": time.perf_counter() - t0, "rss_mb": rss()}
    page = load_page(FIXTURES / WARM_PAGE)
    steps: list[dict[str, Any]] = []

    def step(kind: str, lang: str) -> None:
        t = time.perf_counter()
        [result] = engine.run([page], OCROptions(lang=lang, orientation="off"))
        steps.append(
            {
                "kind": kind,
                "lang": lang,
                "seconds": time.perf_counter() - t,
                "rss_mb": rss(),
                "loads": engine.warm.loads,
                "evictions": engine.warm.evictions,
                "loaded": list(engine.warm.loaded),
                "text": result.text,
            }
        )

    for _ in range(repeat + 1):
        step("warm", "en")
    for lang in EXTRA_LANGS:
        step("first", lang)
        for _ in range(repeat):
            step("warm", lang)
    for lang in EXTRA_LANGS:
        step("again", lang)
    out.write_text(json.dumps({"start": start, "steps": steps, "budget_mb": budget_mb}))


def part_warm(repeat: int, run: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="ocrserve-reach-models-") as tmp:
        folder = Path(tmp)
        rec_bytes = model_folder(folder)
        for label, budget in BUDGETS_MB.items():
            out = run / f"warm-{budget}.json"
            cmd = [
                sys.executable,
                str(Path(__file__).resolve()),
                "--warm-worker",
                str(folder),
                "--budget-mb",
                str(budget),
                "--repeat",
                str(repeat),
                "--result",
                str(out),
            ]
            res, _ = harness.run_worker(cmd, run / f"warm-{budget}.log", out)
            results[label] = res
            print(f"[{TAG}] warm {label}: {'error' if 'error' in res else 'done'}", file=sys.stderr)
    return {"rec_bytes": rec_bytes, "budgets": results}


# --------------------------------------------------------------------------- compat


def lines_of(route: str, body: Any) -> int | None:
    """How many lines an answer holds, read in its dialect; None when it is not one."""
    try:
        if route == "native":
            return sum(len(p["lines"]) for p in body["pages"])
        if route == "paddlex":
            return sum(len(r["prunedResult"]["rec_texts"]) for r in body["result"]["ocrResults"])
        return len(body)
    except (KeyError, TypeError):
        return None


def request(
    client: httpx.Client, route: str, name: str, data: bytes
) -> Callable[[], httpx.Response]:
    """A call sending the image ``data`` to ``POST /ocr`` in ``route``'s dialect."""
    if route == "paddlex":
        body = {"file": base64.b64encode(data).decode(), "fileType": 1}  # the Base64 made once
        return lambda: client.post("/ocr", json=body)
    field = "image" if route == "native" else "image_file"
    return lambda: client.post("/ocr", files={field: (name, data, "image/jpeg")})


def part_compat(repeat: int, run: Path) -> dict[str, Any]:
    import httpx

    port = harness.free_port()
    base = f"http://{harness.HOST}:{port}"
    data_dir = Path(tempfile.mkdtemp(prefix="ocrserve-reach-data-"))
    env = os.environ | {
        "OCRSERVE_CACHE_MAX_ENTRIES": "0",
        "OCRSERVE_LOG_LEVEL": "warning",
        "OCRSERVE_DATA_DIR": str(data_dir),
    }
    cmd = harness.ocrserve_cmd("serve", "--host", harness.HOST, "--port", str(port))
    server = harness.Proc("server", cmd, env, run / "compat-server.log")
    out: dict[str, Any] = {"images": {}}
    try:
        with httpx.Client(base_url=base, trust_env=False, timeout=120.0) as client:
            harness.wait_ready(base, [server], timeout_s=READY_TIMEOUT_S, client=client)
            for name in COMPAT_IMAGES:
                data = (FIXTURES / name).read_bytes()
                send = {route: request(client, route, name, data) for route in ROUTES}
                seconds: dict[str, list[float]] = {r: [] for r in ROUTES}
                answers: dict[str, Any] = {}
                for route in ROUTES:  # one untimed call each: the answer checked
                    r = send[route]()
                    answers[route] = {
                        "status": r.status_code,
                        "bytes": len(r.content),
                        "lines": lines_of(route, r.json()) if r.is_success else None,
                        "error": None if r.is_success else r.text[:300],
                    }
                for _ in range(repeat):
                    for route in ROUTES:
                        t0 = time.perf_counter()
                        r = send[route]()
                        seconds[route].append(time.perf_counter() - t0)
                        if not r.is_success:
                            answers[route]["failed"] = answers[route].get("failed", 0) + 1
                out["images"][name] = {"seconds": seconds, "answers": answers}
                print(
                    f"[{TAG}] compat {name}: "
                    + ", ".join(f"{r} {statistics.median(s):.3f} s" for r, s in seconds.items()),
                    file=sys.stderr,
                )
    except Exception as e:  # the report says what broke; the other parts stand
        out["error"] = f"{type(e).__name__}: {e}"
    finally:
        out["stop"] = server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    return out


# --------------------------------------------------------------------------- split


def part_split(engines: Engines) -> dict[str, Any]:
    from ocrserve.engine import Engines

    keys = [hashlib.sha256(f"tenant:request-{n}".encode()).digest() for n in range(KEYS)]
    rows = []
    for share in SHARES:
        # The main engine stands in for a candidate: choose() only asks that there is one.
        router = Engines(engines.main, candidate=engines.main, share=share)
        t0 = time.perf_counter()
        picked = sum(router.choose(k) == "candidate" for k in keys)
        per_call = (time.perf_counter() - t0) / KEYS
        again = sum(router.choose(k) == "candidate" for k in keys)
        sd = math.sqrt(share * (1 - share) / KEYS)
        rows.append(
            {
                "share": share,
                "candidate": picked,
                "fraction": picked / KEYS,
                "sd": sd,
                "same_again": again == picked,
                "us_per_call": per_call * 1e6,
            }
        )
    # choose() without a candidate, and the request key itself (api/service.py hashes the
    # tenant and each document: here one 200 KB image).
    plain = Engines(engines.main)
    t0 = time.perf_counter()
    for k in keys:
        plain.choose(k)
    no_candidate_us = (time.perf_counter() - t0) / KEYS * 1e6
    doc = (FIXTURES / "zh_scene_poster_ch_en_num.jpg").read_bytes()
    t0 = time.perf_counter()
    for _ in range(1000):
        key = hashlib.sha256(b"tenant")
        key.update(hashlib.sha256(doc).digest())
        key.digest()
    key_us = (time.perf_counter() - t0) / 1000 * 1e6
    return {
        "rows": rows,
        "keys": KEYS,
        "no_candidate_us": no_candidate_us,
        "key_us": key_us,
        "doc_bytes": len(doc),
    }


# --------------------------------------------------------------------------- report


def med(values: Sequence[float]) -> float:
    return statistics.median(values)


LANG_HEAD = ("lang", "font", "size px", "page px", "chars", "lines", "psm", "CER",
             "CER no spaces", "s/page", "CER psm 4", "CER psm 4 no spaces")  # fmt: skip
PAIR_HEAD = ("lang", "size px", "engine", "CER", "CER no spaces", "s/page",
             "Tesseract s / PP-OCR s")  # fmt: skip
FALLBACK_MODES = ("ppocr", "fallback", "breaker open", "tesseract alone")
FALLBACK_HEAD = ("page", *(f"s {m}" for m in FALLBACK_MODES), "fallback / ppocr",
                 "fallback - alone ms", "open - alone ms", "alone max - min ms", "CER ppocr",
                 "CER fallback")  # fmt: skip
WARM_HEAD = ("budget", "lang", "first call s", "warm call s", "first - warm s", "RSS MB after",
             "RSS added MB", "loads", "evictions", "warm models")  # fmt: skip


def pct(value: float | None) -> str:
    return tables.fmt(None if value is None else value * 100, ".1f") + (
        "" if value is None else "%"
    )


def render_langs(res: dict[str, Any], repeat: int) -> list[str]:
    out = [
        "### Tesseract on the languages PP-OCR lacks",
        "",
        "Rendered, not scanned: ~10 invoice lines per language (names, addresses, dates, "
        "amounts) set with Debian's Noto fonts at 24 px and 40 px on a white page, one page "
        "per language and size, read through `Engines.run(pages, OCROptions(lang=...))` as "
        "the service reads them (Tesseract's page segmentation per pack: *psm*). CER after "
        "NFKC with whitespace runs as one space; *no spaces*: every space removed. s/page: "
        f"median of {repeat} calls after one untimed (a `tesseract` process per page). *CER "
        "psm 4*: the same page read once with `--psm 4` (one column of lines), what the "
        "Hangul, kana and Han packs get.",
        "",
        *tables.table_head(LANG_HEAD),
    ]
    for r in res["rows"]:
        if r["lang"] in BOTH_ENGINES:
            continue
        out.append(
            tables.table_row(
                [
                    f"{r['lang']} ({r['name']})",
                    r["font"] + (" + Noto Sans" if r["borrowed"] else ""),
                    str(r["size"]),
                    f"{r['width']}x{r['height']}",
                    str(r["chars"]),
                    str(r["lines"]),
                    str(r.get("psm", "-")),
                    pct(r["cer"]),
                    pct(r["cer_nospace"]),
                    f"{med(r['seconds']):.2f}",
                    pct(r.get("cer_psm4")),
                    pct(r.get("cer_psm4_nospace")),
                ]
            )
        )
    borrowed = sorted({(r["lang"], "".join(r["borrowed"])) for r in res["rows"] if r["borrowed"]})
    if borrowed:
        out += [
            "",
            "Characters the script's Noto font lacks, set in Noto Sans's glyphs merged into it: "
            + "; ".join(f"{lang} `{chars}`" for lang, chars in borrowed)
            + ".",
        ]
    if res["skipped"]:
        out += ["", f"No Tesseract pack for: {', '.join(res['skipped'])} (left out)."]
    out += [
        "",
        "PP-OCR's own languages, the same kind of page, each engine on it: ocrserve's default "
        "engine (PP-OCRv6 through the router, default options) against Tesseract "
        "(`Engines.second.run`, the fallback's reading).",
        "",
        *tables.table_head(PAIR_HEAD),
    ]
    for lang in BOTH_ENGINES:
        for size in SIZES:
            pair = [r for r in res["rows"] if r["lang"] == lang and r["size"] == size]
            by = {r["engine"]: r for r in pair}
            for r in pair:
                ratio = ""
                if r["engine"] == "tesseract" and "ppocr" in by:
                    ratio = f"{med(r['seconds']) / med(by['ppocr']['seconds']):.2f}x"
                out.append(
                    tables.table_row(
                        [
                            lang,
                            str(size),
                            r["engine"],
                            pct(r["cer"]),
                            pct(r["cer_nospace"]),
                            f"{med(r['seconds']):.2f}",
                            ratio,
                        ]
                    )
                )
    return out


def render_fallback(res: dict[str, Any], repeat: int) -> list[str]:
    modes = FALLBACK_MODES
    out = [
        "### Fallback cost",
        "",
        "Real pages, one per call, `lang=en`. *ppocr*: PP-OCR reads it (the router, breaker "
        "closed); *fallback*: PP-OCR's `run` on this bench's engine replaced by one raising "
        "`ModelError` at once, the page read again by Tesseract; *breaker open*: after "
        f"{res['fail_max']} failures (`breaker_failures`), PP-OCR not called; *tesseract "
        f"alone*: `TesseractEngine.run`, no router. s/page: median of {repeat}; *alone max - "
        "min*: Tesseract's own spread, against which the router's differences are read. A "
        "PP-OCR that fails after working a while adds that while to the fallback's time.",
        "",
        *tables.table_head(FALLBACK_HEAD),
    ]
    for r in res["rows"]:
        s = {m: med(r["modes"][m]["seconds"]) for m in modes}
        alone = r["modes"]["tesseract alone"]["seconds"]
        out.append(
            tables.table_row(
                [
                    r["page"],
                    *(f"{s[m]:.3f}" for m in modes),
                    f"{s['fallback'] / s['ppocr']:.2f}x",
                    f"{(s['fallback'] - s['tesseract alone']) * 1000:+.0f}",
                    f"{(s['breaker open'] - s['tesseract alone']) * 1000:+.0f}",
                    f"{(max(alone) - min(alone)) * 1000:.0f}",
                    pct(r["modes"]["ppocr"]["cer"]),
                    pct(r["modes"]["fallback"]["cer"]),
                ]
            )
        )
    engines = {m: {r["modes"][m]["engine"] for r in res["rows"]} for m in modes}
    states = {r.get("breaker_state") for r in res["rows"]}
    calls = sum(r.get("ppocr_calls_while_open", 0) for r in res["rows"])
    out += [
        "",
        "Read by: "
        + ", ".join(f"{m} {'/'.join(sorted(e))}" for m, e in engines.items())
        + f"; the breaker after the failures: {'/'.join(sorted(s for s in states if s))}, "
        f"PP-OCR calls while it was open: {calls}. CER against tests/fixtures/golden.json "
        "(phototest) and the SROIE label, case folded (its labels are upper case); the "
        "paragraph has no ground truth.",
    ]
    return out


def render_warm(res: dict[str, Any], repeat: int) -> list[str]:
    rec_mb = res["rec_bytes"] / harness.MB
    out = [
        "### Other languages' models kept warm (LRU)",
        "",
        f"A model folder with the shipped models and the recogniser ({rec_mb:.2f} MiB) copied "
        "under other names for the languages `xx` and `yy`; one fresh process per "
        f"`OCRSERVE_MODEL_MEMORY_MB` budget reads {WARM_PAGE} (one line, `orientation=off`) "
        f"in `en` (the default recogniser, loaded with the engine) {repeat + 1} times, then "
        "each extra language's "
        f"first call (its model loaded) and {repeat} warm calls (median), then each once more "
        "(*again*). RSS: the process's after the call (psutil); *added*: over the row before.",
        "",
        *tables.table_head(WARM_HEAD),
    ]
    for label, r in res["budgets"].items():
        if "error" in r:
            out.append(tables.table_row([label, "FAILED: " + r["error"], *[""] * 8]))
            continue
        steps = r["steps"]
        budget = f"{label} ({r['budget_mb']} MB)"

        def models(step: dict[str, Any]) -> str:
            return ", ".join(m.split("_PP")[0] for m in step["loaded"]) or "-"

        out.append(
            tables.table_row(
                [
                    budget,
                    "(start)",
                    f"{r['start']['seconds']:.3f}",
                    "-",
                    "-",
                    f"{r['start']['rss_mb']:.0f}",
                    "-",
                    "",
                    "",
                    "engine built + warm-up",
                ]
            )
        )
        en = [s for s in steps if s["lang"] == "en"]
        en_warm = med([s["seconds"] for s in en[1:]]) if len(en) > 1 else en[0]["seconds"]
        prev = en[-1]["rss_mb"]
        out.append(
            tables.table_row(
                [
                    budget,
                    "en",
                    "-",
                    f"{en_warm:.3f}",
                    "-",
                    f"{prev:.0f}",
                    "-",
                    str(en[-1]["loads"]),
                    str(en[-1]["evictions"]),
                    models(en[-1]),
                ]
            )
        )
        for lang in EXTRA_LANGS:
            first = next(s for s in steps if s["lang"] == lang and s["kind"] == "first")
            warm = [s for s in steps if s["lang"] == lang and s["kind"] == "warm"]
            last = warm[-1] if warm else first
            w = med([s["seconds"] for s in warm]) if warm else None
            out.append(
                tables.table_row(
                    [
                        budget,
                        lang,
                        f"{first['seconds']:.3f}",
                        tables.fmt(w, ".3f"),
                        tables.fmt(None if w is None else first["seconds"] - w, "+.3f"),
                        f"{last['rss_mb']:.0f}",
                        f"{last['rss_mb'] - prev:+.0f}",
                        str(last["loads"]),
                        str(last["evictions"]),
                        models(last),
                    ]
                )
            )
            prev = last["rss_mb"]
        for s in (s for s in steps if s["kind"] == "again"):
            out.append(
                tables.table_row(
                    [
                        budget,
                        f"{s['lang']} again",
                        f"{s['seconds']:.3f}",
                        "-",
                        "-",
                        f"{s['rss_mb']:.0f}",
                        f"{s['rss_mb'] - prev:+.0f}",
                        str(s["loads"]),
                        str(s["evictions"]),
                        models(s),
                    ]
                )
            )
            prev = s["rss_mb"]
    texts = {s["text"] for r in res["budgets"].values() for s in r.get("steps", [])}
    out += [
        "",
        f"Every call's text the same: {len(texts) == 1} (the same weights under other names). "
        "In the budget for one, each *again* is a load that lets the other model go.",
    ]
    return out


def render_compat(res: dict[str, Any], repeat: int) -> list[str]:
    out = [
        "### Compatibility routes overhead",
        "",
        "One `ocrserve serve` (defaults, `OCRSERVE_CACHE_MAX_ENTRIES=0`), one client on the "
        "same machine, the same image sent to `POST /ocr` as ocrserve's multipart `image`, "
        'PaddleX\'s JSON `{"file": base64, "fileType": 1}` and RapidOCR\'s multipart '
        f"`image_file`, the three in turn, {repeat} rounds after one untimed call each; "
        "seconds from send to the whole answer.",
        "",
    ]
    if "error" in res:
        out += [f"FAILED: {res['error']}", ""]
    if not res.get("images"):
        return out
    out += tables.table_head(
        [
            "image",
            *(f"s {r}" for r in ROUTES),
            "paddlex / native",
            "rapidocr / native",
            "paddlex - native ms",
            "rapidocr - native ms",
            "lines n/p/r",
        ]
    )
    for name, r in res["images"].items():
        s = {route: med(r["seconds"][route]) for route in ROUTES}
        lines = "/".join(str(r["answers"][route]["lines"]) for route in ROUTES)
        out.append(
            tables.table_row(
                [
                    name,
                    *(f"{s[route]:.3f}" for route in ROUTES),
                    f"{s['paddlex'] / s['native']:.3f}x",
                    f"{s['rapidocr'] / s['native']:.3f}x",
                    f"{(s['paddlex'] - s['native']) * 1000:+.1f}",
                    f"{(s['rapidocr'] - s['native']) * 1000:+.1f}",
                    lines,
                ]
            )
        )
    bad = [
        f"{name} {route}: {a['status']} {a.get('error') or ''} failed {a.get('failed', 0)}"
        for name, r in res["images"].items()
        for route, a in r["answers"].items()
        if a["status"] != 200 or a.get("failed")
    ]
    if bad:
        out += ["", "Failed answers: " + "; ".join(bad)]
    benign = ("API keys are off", "draining")
    notes = [n for n in res.get("stop", {}).get("log_notes", []) if not any(b in n for b in benign)]
    for note in notes[:4]:
        out += ["", f"Server log: {note}"]
    return out


def render_split(res: dict[str, Any]) -> list[str]:
    out = [
        "### Rollout split",
        "",
        f"{res['keys']:,} request keys (SHA-256 digests of distinct requests, as "
        "`api/service.py` makes them), each share on a router with a candidate; sd: the "
        "binomial's standard deviation at that share. Deterministic: the same keys give the "
        "same split in every process.",
        "",
        *tables.table_head(
            [
                "share",
                "to the candidate",
                "fraction",
                "off by",
                "off by / sd",
                "same again",
                "choose() µs",
            ]
        ),
    ]
    for r in res["rows"]:
        off = r["fraction"] - r["share"]
        out.append(
            tables.table_row(
                [
                    f"{r['share']:g}",
                    f"{r['candidate']:,}",
                    f"{r['fraction']:.4f}",
                    f"{off:+.4f}",
                    f"{off / r['sd']:+.2f}",
                    str(r["same_again"]),
                    f"{r['us_per_call']:.2f}",
                ]
            )
        )
    out += [
        "",
        f"choose() without a candidate: {res['no_candidate_us']:.2f} µs; the request "
        f"key for one {res['doc_bytes'] / 1024:.0f} KB image (api/service.py's two "
        f"SHA-256 passes): {res['key_us']:.0f} µs.",
    ]
    return out


RENDER = {
    "langs": render_langs,
    "fallback": render_fallback,
    "warm": render_warm,
    "compat": render_compat,
}


def report(raw: dict[str, Any]) -> str:
    head, dirty = raw["commit"]
    extra = f" · Pillow {raw['pillow']} · commit {head}{' (dirty)' if dirty else ''}"
    run = raw["run"]
    out = [
        "## Reach: Tesseract's languages, the fallback, warm models, compatibility routes, "
        "the rollout split",
        "",
        harness.machine_header(raw["machine"], ("tesseract",), extra),
        "",
        *(
            [f"Uncommitted changes in the code measured: {', '.join(raw['dirty'])}.", ""]
            if raw.get("dirty")
            else []
        ),
        f"`python bench/reach.py --write-results` (--repeat {raw['args']['repeat']}, --rounds "
        f"{raw['args'].get('rounds', '-')}); raw data "
        f"`{run}.json`, rendered pages and logs in `{run}/`. Each part waits for a 1-minute "
        f"load average under {raw['args']['max_load']} first: the load it started at and "
        "the CPU other processes took during it (cores, from the machine's counters less "
        "this run's):",
        "",
    ]
    out += tables.table_head(["part", "load at start", "waited s", "others' cores", "wall s"])
    for name, p in raw["parts"].items():
        gate = p["gate"]
        out.append(
            tables.table_row(
                [
                    name + ("" if gate["quiet"] else " (busy)"),
                    f"{gate['load_1m']:.2f}",
                    f"{gate['waited_s']:.0f}",
                    f"{p['others_cores']:.2f}",
                    f"{p['wall_s']:.0f}",
                ]
            )
        )
    if raw.get("notes"):
        out += ["", *raw["notes"]]
    repeat = raw["args"]["repeat"]
    for name, p in raw["parts"].items():
        out.append("")
        if "error" in p:
            out.append(f"### {name}: FAILED {p['error']}")
        elif name == "split":
            out += render_split(p["result"])
        else:
            out += RENDER[name](
                p["result"], raw["args"].get("rounds", repeat) if name == "compat" else repeat
            )
    return "\n".join(out).rstrip() + "\n"


# --------------------------------------------------------------------------- the command line


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--parts",
        type=lambda v: tables.comma_list(v, PARTS, "part"),
        default=list(PARTS),
        help=f"comma list, default {','.join(PARTS)}",
    )
    ap.add_argument("--repeat", type=tables.positive, default=5, help="timed calls (default 5)")
    ap.add_argument(
        "--rounds",
        type=tables.positive,
        default=COMPAT_ROUNDS,
        help=f"compat: rounds of the three routes per image (default {COMPAT_ROUNDS})",
    )
    ap.add_argument("--eval-dir", type=Path, default=harness.DEFAULT_EVAL_DIR)
    ap.add_argument("--max-load", type=float, default=MAX_LOAD)
    ap.add_argument("--wait-max", type=float, default=WAIT_MAX_S, help="seconds, per part")
    ap.add_argument(
        "--note",
        action="append",
        default=[],
        help="a paragraph for the report (the reading of the numbers, by a person)",
    )
    ap.add_argument("--from-json", type=Path, default=None, help="re-render an earlier run")
    ap.add_argument("--write-results", action="store_true", help="update bench/RESULTS.md")
    ap.add_argument("--warm-worker", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--budget-mb", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.warm_worker is not None:
        warm_worker(args.warm_worker, args.budget_mb, args.repeat, args.result)
        return 0
    if args.from_json is not None:
        raw = json.loads(args.from_json.read_text(encoding="utf-8"))
        raw["notes"] = raw.get("notes", []) + args.note
        publish_run = args.from_json.resolve().with_suffix("")
        tables.publish(TAG, publish_run, raw, report(raw), to_results=args.write_results)
        return 0
    machine = harness.machine_info()
    # The code measured is the one at the start: others may commit while the run goes on.
    at_start = harness.commit(["src", "bench/reach.py"])
    dirty = changed(["src"])
    run = harness.new_run(TAG)
    logging.basicConfig(filename=run / "reach.log", level=logging.WARNING)
    engines: Engines | None = None
    parts: dict[str, Any] = {}
    for name in (n for n in RUN_ORDER if n in args.parts):
        gate = wait_quiet(args.max_load, args.wait_max, name)
        busy0, own0 = harness.cpu_split()
        t0 = time.perf_counter()
        part: dict[str, Any] = {"gate": gate}
        try:
            if name == "warm":
                part["result"] = part_warm(args.repeat, run)
            elif name == "compat":
                part["result"] = part_compat(args.rounds, run)
            else:
                engines = engines or engines_for_bench()
                if name == "langs":
                    part["result"] = part_langs(engines, args.repeat, run)
                elif name == "fallback":
                    part["result"] = part_fallback(engines, args.repeat, args.eval_dir)
                else:
                    part["result"] = part_split(engines)
        except Exception as e:  # the other parts still run; the report says what broke
            part["error"] = f"{type(e).__name__}: {e}"
            logging.exception("part %s", name)
        wall = time.perf_counter() - t0
        busy1, own1 = harness.cpu_split()
        part["wall_s"] = wall
        part["others_cores"] = max(0.0, (busy1 - busy0) - (own1 - own0)) / max(wall, 1e-9)
        parts[name] = part
    machine["loadavg_end"] = os.getloadavg()[0]
    from PIL import __version__ as pillow

    parts = {name: parts[name] for name in PARTS if name in parts}
    raw = {
        "args": tables.raw_args(args),
        "machine": machine,
        "commit": at_start,
        "dirty": dirty,
        "pillow": pillow,
        "run": str(run.relative_to(harness.ROOT)),
        "parts": parts,
        "notes": list(args.note),
    }
    tables.publish(TAG, run, raw, report(raw), to_results=args.write_results)
    return 1 if any("error" in p for p in parts.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
