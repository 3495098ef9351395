"""Dense printed forms: the IRS Form 1040-NR (tests/fixtures, 200 dpi) line by line (issue 14).

Before the recogniser checked every turn (ClsOptions.verify, issue 12), page 1's "Caution: Do
not check box 7a ..." line read "Cau  s   n ( n        o on unt" (0.733) and line 14's
"Capital gain or (loss) ..." read "ap  b  l  e (t o    (sol  i dre" (0.581), and both were
kept. Their boxes were right (one line each, 32-33 px high) and so was each crop: read as cut,
alone or in its batch, they read as printed (0.996, 0.992); turned 180 degrees, alone or in
the batch, they read the garbage above. The classifier had turned them: it squeezed each
1000 px line into its 192 x 48 input, illegible, and was 99.8-100% sure they were upside
down. It now reads a long crop as windows at their own scale (ClsOptions.windows).
"""

from __future__ import annotations

from functools import cache

import numpy as np
import numpy.typing as npt
import pytest

from ocrserve import Engine, Page, decode_path
from ocrserve.engine.cls import AngleClassifier, ClsOptions
from ocrserve.engine.pipeline import _crop
from ocrserve.engine.session import RuntimeOptions

from .conftest import FIXTURES

U8 = npt.NDArray[np.uint8]


@cache
def form_page(index: int) -> U8:
    image: U8 = decode_path(FIXTURES / "irs_f1040nr.pdf").pages[index].image
    return image


def cut(index: int, x0: int, y0: int, x1: int, y1: int) -> U8:
    box = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float32)
    return _crop(form_page(index), box)


#: Printed lines, upright, that the squeezed classifier called upside down (its probability
#: in the comment), in boxes the detector found for them (issue 12's detector or today's).
STRAIGHT = {
    "p1 Caution: Do not check box 7a ... (issue 12 box)": ((0, 149, 814, 1182, 848), 0.996),
    "p1 Caution: Do not check box 7a ... (today's box)": ((0, 149, 810, 1184, 848), 1.0),
    "p1 14 Capital gain or (loss) ... (issue 12 box)": ((0, 232, 1384, 1195, 1417), 1.0),
    "p1 refund check mailed. If same as above ...": ((0, 147, 460, 701, 494), 0.76),
    "p2 72a Amount of line 71 you want refunded ...": ((1, 247, 1511, 1228, 1548), 0.99),
    "p2 Amount you owe. Subtract line 70 ...": ((1, 306, 1684, 1228, 1719), 0.91),
    "p2 Federal income tax withheld ...": ((1, 210, 947, 897, 982), 0.93),
    "p5 for any part of the tax year ...": ((4, 130, 1304, 803, 1338), 0.99),
    "p5 Other Information (If an item ...": ((4, 372, 149, 1301, 186), 0.97),
}

#: Page 1's side notes, printed bottom to top: cut as vertical lines and laid flat, they are
#: upside down, and the classifier must still turn them.
SIDE_NOTES = {
    "Adjusted Gross Income": (0, 138, 1775, 174, 2043),
    "Enclose, but do not attach, any payment.": (0, 94, 1330, 131, 1783),
    "Income Effectively Connected With U.S. Trade/Business": (0, 138, 1134, 174, 1680),
}


def classifier(engine: Engine) -> AngleClassifier:
    return engine.stages(engine.precision).cls


@pytest.mark.parametrize("name", list(STRAIGHT))
def test_a_long_printed_line_is_not_turned(engine: Engine, name: str) -> None:
    (index, *box), _squeezed = STRAIGHT[name]
    cls = classifier(engine)
    assert cls([cut(index, *box)]).flipped == (False,)


def test_side_notes_are_still_turned(engine: Engine) -> None:
    cls = classifier(engine)
    assert cls([cut(*box) for box in SIDE_NOTES.values()]).flipped == (True, True, True)


def test_the_squeeze_was_what_turned_them(engine: Engine) -> None:
    # One window is the old squeeze: the same classifier turns the two lines.
    squeezed = AngleClassifier(classifier(engine).session, ClsOptions(windows=1))
    caution, capital = (
        STRAIGHT["p1 Caution: Do not check box 7a ... (issue 12 box)"][0],
        STRAIGHT["p1 14 Capital gain or (loss) ... (issue 12 box)"][0],
    )
    assert squeezed([cut(*caution), cut(*capital)]).flipped == (True, True)


def test_the_lines_read_as_printed_without_the_recogniser_check(engine: Engine) -> None:
    # Engine-level, with the safety net of issue 12 off (a turn kept without a second read):
    # the two bands of page 1 around the lines, detected, cut, classified and read.
    bare = Engine(
        engine.models,
        runtime=RuntimeOptions(intra_op_threads=2),
        cls=ClsOptions(verify=False),
    )
    page = form_page(0)
    bands = [Page(np.ascontiguousarray(page[y0:y1])) for y0, y1 in ((760, 900), (1360, 1440))]
    texts = [line.text for result in bare.run(bands) for line in result.lines]
    assert (
        "Caution: Do not check box 7a if your parent (or someone else) can claim you as a "
        "dependent." in texts
    )
    # The band's detection may keep the line number: "14 Capital gain ..." or "Capital ...".
    assert any(
        "Capital gain or (loss). Attach Schedule D (Form 1040) if required." in t for t in texts
    )
