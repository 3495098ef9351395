"""The detector sized to the print (issue 12, item 4): a cheap probe first on large pages."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from ocrserve import Engine, Page, decode_path
from ocrserve.config import Settings
from ocrserve.engine.det import TextDetector

from .conftest import FIXTURES, cer

GOLDEN = json.loads((FIXTURES / "golden.json").read_text(encoding="utf-8"))
IRS = json.loads((FIXTURES / "irs_f1040nr_p1.json").read_text(encoding="utf-8"))


def word_f1(reference: str, hypothesis: str) -> float:
    """Order-free bag-of-words F1, as the evaluation's scorer computes it."""
    ref, hyp = Counter(reference.split()), Counter(hypothesis.split())
    hits = sum((ref & hyp).values())
    if not hits:
        return 0.0
    precision, recall = hits / sum(hyp.values()), hits / sum(ref.values())
    return 2 * precision * recall / (precision + recall)


@pytest.fixture(scope="module")
def detector(engine: Engine) -> TextDetector:
    return engine.stages("fp32").det


def test_a_printed_page_is_read_from_the_probe(engine: Engine, detector: TextDetector) -> None:
    # The IRS form at 200 dpi (1700 x 2200): its smallest lines are 13 px high at the probe's
    # 1024 px, so the probe's boxes are the answer, at a fifth of the full pass's pixels.
    form = decode_path(FIXTURES / "irs_f1040nr.pdf").pages[0].image
    [found] = detector([form])
    assert found.scale == pytest.approx(1024 / 2200)
    truth = "\n".join(line["text"] for line in IRS["text_layer"]["lines"])
    probed = word_f1(truth, engine.run([Page(form)])[0].text)
    unprobed = Engine.from_settings(Settings(intra_op_threads=2, det_probe_side=0))
    full = word_f1(truth, unprobed.run([Page(form)])[0].text)
    # The words read from the probe's boxes are as right as from the full pass's.
    assert probed >= full - 0.005, (probed, full)


def test_small_print_on_a_large_page_is_read_at_full_scale(
    engine: Engine, detector: TextDetector
) -> None:
    # phototest.tif's 640 x 480 page of 12-point text in the corner of a 4800 x 3600 page: at
    # the probe's 1024 px (0.21) its lines are ~8 px high, at the edge of what the detector
    # sees, so the page is read at the full policy's 2400 px (0.5), where they are ~20 px.
    canvas = np.full((3600, 4800, 3), 255, dtype=np.uint8)
    canvas[:480, :640] = decode_path(FIXTURES / "phototest.tif").pages[0].image
    [found] = detector([canvas])
    assert found.scale == pytest.approx(0.5)
    text = engine.run([Page(canvas)])[0].text
    assert cer(GOLDEN["phototest.tif"], text) < 0.02


def test_a_page_under_the_probe_size_is_read_in_one_pass(detector: TextDetector) -> None:
    # 640 x 480: the policy scales its short side to 736 (960 px long), under 1.5 x 1024.
    [found] = detector([decode_path(FIXTURES / "phototest.tif").pages[0].image])
    assert found.scale == pytest.approx(736 / 480)
