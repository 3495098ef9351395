from __future__ import annotations

import json
import threading
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from ocrserve import Engine, OCROptions, OptionError, Page, decode_path
from ocrserve.engine.heap import HeapTrimmer, release_free_heap, resident_bytes
from ocrserve.engine.pipeline import PixelBudget
from ocrserve.engine.rec import RecOptions, TextRecognizer
from ocrserve.engine.session import OrtSession, RuntimeOptions
from ocrserve.errors import CorruptFileError, LanguageNotInstalledError, ModelError

from .conftest import FIXTURES, cer

GOLDEN = json.loads((FIXTURES / "golden.json").read_text(encoding="utf-8"))


def page(name: str) -> Page:
    return decode_path(FIXTURES / name).pages[0]


def test_reads_an_english_page_close_to_its_transcript(engine: Engine) -> None:
    result = engine.run([page("phototest.tif")])[0]
    assert (result.width, result.height) == (640, 480)
    assert cer(GOLDEN["phototest.tif"], result.text) < 0.02
    assert all(0.5 <= line.confidence <= 1.0 for line in result.lines)


def test_reads_accented_european_text(engine: Engine) -> None:
    result = engine.run([page("eurotext.tif")], OCROptions(lang="en"))[0]
    assert cer(GOLDEN["eurotext.tif"], result.text) < 0.05
    assert "über den faulen Hund" in result.text


def test_reads_chinese(engine: Engine) -> None:
    text = engine.run([page("zh_doc_certificate.jpeg")])[0].text
    for expected in ("使用性质", "2018-06-29", "解除抵押登记"):
        assert expected in text


def test_a_wide_paragraph_reads_line_by_line(engine: Engine) -> None:
    lines = engine.run([page("en_doc_paragraph.jpg")])[0].text.splitlines()
    assert lines[-1] == "of this dataset are specified as follows."
    assert "46K shots from 7858 movies" in lines[-2]


def test_a_single_long_line(engine: Engine) -> None:
    result = engine.run([page("en_line_long_text.jpg")])[0]
    assert result.text == "采用高端宝石制作镜片，更有效保护眼睛，避免辐射"


def test_boxes_are_in_the_original_pages_pixels(engine: Engine) -> None:
    small = page("phototest.tif")
    big = Page(cv2.resize(small.image, None, fx=2.0, fy=2.0, interpolation=cv2.INTER_CUBIC))
    a, b = engine.run([small, big])
    first_a = next(line for line in a.lines if line.text.startswith("This is a lot"))
    first_b = next(line for line in b.lines if line.text.startswith("This is a lot"))
    box_a, box_b = np.array(first_a.box), np.array(first_b.box)
    assert np.abs(box_a * 2 - box_b).max() < 8
    assert 20 < box_a[:, 0].min() < 45 and 75 < box_a[:, 1].min() < 95  # where a reader sees it
    for line in a.lines:
        xs, ys = np.array(line.box)[:, 0], np.array(line.box)[:, 1]
        assert xs.min() >= 0 and ys.min() >= 0 and xs.max() < 640 and ys.max() < 480


def test_a_page_reads_the_same_alone_and_in_a_batch(engine: Engine) -> None:
    names = ["phototest.tif", "zh_doc_certificate.jpeg", "en_doc_paragraph.jpg"]
    pages = [page(n) for n in names]
    alone = [engine.run([p])[0] for p in pages]
    together = engine.run([pages[1], pages[0], pages[2], pages[1]])
    assert [r.text for r in together] == [
        alone[1].text,
        alone[0].text,
        alone[2].text,
        alone[1].text,
    ]
    assert [line.box for line in together[1].lines] == [line.box for line in alone[0].lines]


def test_threads_sharing_one_engine_get_what_one_thread_gets(engine: Engine) -> None:
    names = [
        "phototest.tif",
        "zh_doc_certificate.jpeg",
        "en_doc_paragraph.jpg",
        "zh_scene_poster_ch_en_num.jpg",
    ]
    pages = [page(n) for n in names]
    expected = [engine.run([p])[0].text for p in pages]
    got: dict[int, list[str]] = {}

    def work(k: int) -> None:
        order = pages[k:] + pages[:k]
        got[k] = [engine.run([p])[0].text for p in order]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(4):
        assert got[k] == expected[k:] + expected[:k]


def test_the_classifier_turns_an_upside_down_page(engine: Engine) -> None:
    # Line by line: the page's own turn (orientation="auto") is tested in test_orientation.
    flipped = Page(cv2.rotate(page("phototest.tif").image, cv2.ROTATE_180))
    with_cls = engine.run([flipped], OCROptions(use_cls=True, orientation="off"))[0]
    without = engine.run([flipped], OCROptions(use_cls=False, orientation="off"))[0]
    truth = GOLDEN["phototest.tif"].split("\n")
    # The mobile classifier is sure (0.9) of half the lines of this 1-bit scan, and RapidOCR
    # with the same model turns those four; at 0.7, each turn checked by the recogniser
    # (ClsOptions), six come back.
    assert sum(line in with_cls.text.split("\n") for line in truth) >= 6
    assert sum(line in without.text.split("\n") for line in truth) == 0


def test_a_straight_line_the_classifier_calls_upside_down_keeps_its_reading(
    engine: Engine,
) -> None:
    # Rows 760-900 of the IRS form's first page (200 dpi): the classifier is 97% sure that the
    # "Caution" line under box 6 (1024 x 27 px, squeezed into its 192 x 48 input) is upside
    # down; turned, it read "Cau     nn ( n o und    o  o on unt." (issue 12). The engine now
    # reads a turned crop both ways and keeps the more confident reading.
    form = decode_path(FIXTURES / "irs_f1040nr.pdf").pages[0].image
    band = engine.run([Page(np.ascontiguousarray(form[760:900]))])[0]
    assert (
        "Caution: Do not check box 7a if your parent (or someone else) can claim you as a "
        "dependent." in [line.text for line in band.lines]
    )


def test_the_detector_reads_the_page_with_imagenet_statistics(engine: Engine) -> None:
    # The DB model was trained on (x / 255 - ImageNet mean) / std; fed (x / 255 - 0.5) / 0.5
    # (as before issue 12), the boxes it found here read "机动车记证书编号" and "预约出相转非".
    lines = [line.text for line in engine.run([page("zh_doc_certificate.jpeg")])[0].lines]
    assert any(line.startswith("机动车登记证书编号") for line in lines)
    assert "13. 使用性质：预约出租转非" in lines


def test_short_crops_are_read_with_blank_after_them(engine: Engine) -> None:
    # The certificate's item number "11." is a 17 x 14 px crop, 59 px wide at height 48:
    # padded only to its 64 px width bucket it read "H." ("H1." before the checked turn);
    # padded to RecOptions.min_width (96) it reads as printed.
    lines = [line.text for line in engine.run([page("zh_doc_certificate.jpeg")])[0].lines]
    assert "11." in lines


def test_two_columns_read_column_by_column(engine: Engine) -> None:
    left = page("phototest.tif").image  # 640x480
    right = cv2.resize(page("eurotext.tif").image, (614, 480), interpolation=cv2.INTER_AREA)
    two = Page(np.hstack([left, np.full((480, 60, 3), 255, np.uint8), right]))
    text = engine.run([two])[0].text
    assert text.index("of file format.") < text.index("brown dog jumped over the lazy fox.")
    assert text.index("brown dog jumped over the lazy fox.") < text.index("The (quick) [brown]")


def test_blank_and_empty_input(engine: Engine) -> None:
    assert engine.run([]) == []
    blank = engine.run([Page(np.full((300, 400, 3), 255, np.uint8))])[0]
    assert blank.lines == () and blank.text == ""


def test_grey_pages_are_accepted_and_bad_arrays_refused(engine: Engine) -> None:
    grey = cv2.cvtColor(page("en_doc_paragraph.jpg").image, cv2.COLOR_BGR2GRAY)
    assert "MovieShots" in engine.run([Page(grey)])[0].text  # type: ignore[arg-type]
    with pytest.raises(OptionError, match="uint8"):
        engine.run([Page(np.zeros((10, 10, 3), np.float32))])  # type: ignore[arg-type]
    with pytest.raises(OptionError, match="HxWx3"):
        engine.run([Page(np.zeros((10, 10, 2), np.uint8))])


def test_the_recogniser_returns_best_classes_not_the_whole_softmax(engine: Engine) -> None:
    # Issue 12 item 5: the recogniser's graph ends in ArgMax and ReduceMax, so a batch returns
    # (batch, steps) indices and probabilities instead of (batch, steps, 18,710) floats; they
    # are exactly what the full softmax's argmax and max are.
    [rec] = engine.stages("fp32").recs.values()
    assert rec.session.argmax and rec.session.classes == len(rec.charset) == 18710
    crops = _line_crops(engine, "zh_doc_certificate.jpeg")[:4]
    width = max(rec._padded(c) for c in crops)
    batch = np.zeros((len(crops), 3, 48, width), dtype=np.float32)
    for j, c in enumerate(crops):
        img = rec._resize(c)
        batch[j, :, :, : img.shape[1]] = img.transpose(2, 0, 1)
    best, top = rec.session.run_argmax(batch)
    assert best.shape == top.shape == (len(crops), width // 8)
    assert best.dtype == np.int64 and top.dtype == np.float32

    full = OrtSession(rec.session.path, RuntimeOptions(intra_op_threads=2))
    probs = full.run(batch)
    assert probs.shape == (len(crops), width // 8, 18710)
    np.testing.assert_array_equal(best, probs.argmax(axis=2))
    np.testing.assert_array_equal(top, probs.max(axis=2))
    with pytest.raises(ModelError, match="argmax=True"):
        TextRecognizer(full, RecOptions())


def test_sessions_run_on_an_arena_shrunk_after_every_run(engine: Engine) -> None:
    # Issue 12 item 5: without the arena a run at a new shape fragmented the heap (484 MB
    # for one wide recogniser batch); with it, unshrunk, the largest run stays for good.
    stages = engine.stages("fp32")
    for session in (
        stages.det.session,
        stages.cls.session,
        *(r.session for r in stages.recs.values()),
    ):
        assert session._session.get_session_options().enable_cpu_mem_arena
        assert session._run.get_run_config_entry("memory.enable_memory_arena_shrinkage") == "cpu:0"


def test_the_heap_is_trimmed_only_after_growing_by_its_slack() -> None:
    assert release_free_heap()  # glibc, as on every machine this service runs on
    rss = resident_bytes()
    assert rss is not None and rss > 0
    eager, lazy = HeapTrimmer(slack=0), HeapTrimmer(slack=1 << 50)
    assert eager.maybe_trim() and eager.maybe_trim() and eager.trims == 2
    assert not lazy.maybe_trim() and lazy.trims == 0


def test_the_engine_trims_the_heap_after_a_large_call(engine: Engine) -> None:
    before = engine.heap.trims
    engine.heap._floor = 0  # as if the last trim left the process at nothing
    engine.run([page("en_line_long_text.jpg")])
    assert engine.heap.trims == before + 1
    engine.run([page("en_line_long_text.jpg")])  # a small call after it: no trim
    assert engine.heap.trims == before + 1


def _line_crops(engine: Engine, name: str) -> list[npt.NDArray[np.uint8]]:
    from ocrserve.engine.pipeline import _crop

    img = page(name).image
    [found] = engine.stages("fp32").det([img])
    return [_crop(img, box) for box in found.boxes]


def test_pages_wait_for_room_in_the_pixel_budget() -> None:
    budget = PixelBudget(100)
    entered = threading.Event()

    def second_page() -> None:
        with budget.hold(60):
            entered.set()

    with budget.hold(60):
        other = threading.Thread(target=second_page)
        other.start()
        assert not entered.wait(0.2)  # 60 + 60 > 100: it waits for the first page
    assert entered.wait(30)
    other.join()
    with budget.hold(500):  # larger than the whole budget: let in alone, rather than never
        assert budget.held == 500
    assert budget.held == 0


def test_the_engine_reads_each_page_under_its_budget_and_lets_go(engine: Engine) -> None:
    def corrupt() -> npt.NDArray[np.uint8]:
        assert engine.pixels_in_flight.held == 60 * 40  # this page's pixels, while read
        raise CorruptFileError("page 2: cannot decode", reason="test")

    pages = [page("en_line_long_text.jpg"), Page.deferred(corrupt, width=60, height=40, index=2)]
    with pytest.raises(CorruptFileError):
        engine.run(pages)
    assert engine.pixels_in_flight.held == 0
    assert engine.pixels_in_flight.limit == 60_000_000


def test_languages(engine: Engine) -> None:
    assert {"ch", "en", "japan", "fr"} <= set(engine.langs)
    engine.run([page("en_line_long_text.jpg")], OCROptions(lang="zh"))  # an alias of ch
    with pytest.raises(LanguageNotInstalledError) as info:
        engine.run([page("en_line_long_text.jpg")], OCROptions(lang="klingon"))
    assert "klingon" in str(info.value) and "en" in info.value.installed


def test_unknown_precision_is_an_option_error(engine: Engine) -> None:
    with pytest.raises(OptionError, match="precision"):
        engine.run([page("en_line_long_text.jpg")], OCROptions(precision="fp8"))  # type: ignore[arg-type]


@pytest.mark.slow
def test_int8_reads_nearly_what_fp32_reads(engine: Engine, tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    for spec in (engine.models.det, engine.models.cls, *engine.models.recs):
        (models / spec.file).symlink_to(engine.models.path(spec))
    from ocrserve import ModelSet

    int8 = Engine(ModelSet.locate(models), precision="int8")
    assert sorted(p.name for p in models.glob("*.int8.onnx")) == ["PP-OCRv6_rec_small.int8.onnx"]
    pages = [page("phototest.tif"), page("zh_doc_certificate.jpeg")]
    for a, b in zip(engine.run(pages), int8.run(pages), strict=True):
        assert cer(a.text, b.text) < 0.03
    # a second engine reuses the cached files instead of quantising again
    stamp = (models / "PP-OCRv6_rec_small.int8.onnx").stat().st_mtime_ns
    Engine(ModelSet.locate(models), precision="int8")
    assert (models / "PP-OCRv6_rec_small.int8.onnx").stat().st_mtime_ns == stamp
