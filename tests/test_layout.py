"""Reading order: synthetic layouts with one right answer, edge cases, and page CER on the
labelled dev sets beside the repository (read from ../shared at test time, never copied)."""

from __future__ import annotations

import doctest
import importlib.util
import json
import math
import random
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from ocrserve import layout
from ocrserve.layout import page_text, reading_order
from ocrserve.types import Box

#: The project's evaluation data, beside the repository (read at test time, never committed).
SHARED_EVAL = Path(__file__).resolve().parents[1].parent / "shared" / "eval"


def box(x: float, y: float, w: float, h: float) -> Box:
    return ((x, y), (x + w, y), (x + w, y + h), (x, y + h))


def rotate(boxes: Sequence[Box], degrees: float, centre: tuple[float, float]) -> list[Box]:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    cx, cy = centre

    def turn(p: tuple[float, float]) -> tuple[float, float]:
        x, y = p[0] - cx, p[1] - cy
        return (cx + c * x - s * y, cy + s * x + c * y)

    return [(turn(b[0]), turn(b[1]), turn(b[2]), turn(b[3])) for b in boxes]


def shuffled(texts: list[str], boxes: list[Box], seed: int = 0) -> tuple[list[str], list[Box]]:
    perm = list(range(len(texts)))
    random.Random(seed).shuffle(perm)
    return [texts[i] for i in perm], [boxes[i] for i in perm]


def rows_of(texts: Sequence[str], boxes: Sequence[Box]) -> list[list[str]]:
    """Rows in reading order, blocks flattened."""
    return [[texts[i] for i in row] for block in reading_order(boxes) for row in block]


def blocks_of(texts: Sequence[str], boxes: Sequence[Box]) -> list[list[str]]:
    """Blocks in reading order, each as its lines in reading order."""
    return [[texts[i] for row in block for i in row] for block in reading_order(boxes)]


# --- synthetic pages ------------------------------------------------------------------------

LINE_H = 20.0
PITCH = 30.0  # line pitch of running text: 10 px of leading under 20 px lines


def columns_page(
    n_columns: int = 2, n_rows: int = 12, *, aligned: bool = True
) -> tuple[list[str], list[Box], list[list[str]]]:
    """Columns of running text (long lines, some short paragraph ends) below y = 200.

    Returns texts, boxes and the expected columns (each a list of texts, top to bottom).
    """
    col_w, gutter = 460.0, 60.0
    texts: list[str] = []
    boxes: list[Box] = []
    columns: list[list[str]] = []
    for c in range(n_columns):
        x = 60 + c * (col_w + gutter)
        offset = 0.0 if aligned else 13.0 * c
        column = []
        for r in range(n_rows):
            width = col_w * (0.45 if (r + c) % 5 == 4 else 1.0)  # a paragraph's last line
            texts.append(f"c{c}r{r}")
            boxes.append(box(x, 200 + offset + r * PITCH, width, LINE_H))
            column.append(f"c{c}r{r}")
        columns.append(column)
    return texts, boxes, columns


def receipt() -> tuple[list[str], list[Box], list[list[str]]]:
    """A shop receipt: centred header, item rows with a quantity and a narrow price column."""
    rows: list[list[tuple[str, Box]]] = [
        [("SHOP NAME SDN BHD", box(160, 40, 200, 18))],
        [("12 JALAN MAIN STREET, KUALA LUMPUR", box(90, 66, 340, 18))],
        [("TAX INVOICE", box(200, 92, 120, 18))],
    ]
    items = [
        "MEAT + 3 VEGE",
        "IMPORTED VEGGIES",
        "FRIED CHICKEN WING SET",
        "ICED LEMON TEA",
        "STEAMED RICE",
        "CHOCOLATE CAKE SLICE",
    ]
    y = 130.0
    for k, name in enumerate(items):
        price = f"{7.1 + 1.35 * k:.2f}"
        rows.append(
            [
                (name, box(40, y, 11 * len(name), 18)),
                (str(1 + k % 3), box(380, y + 1, 10, 18)),
                (price, box(500 - 11 * len(price), y, 11 * len(price), 18)),
            ]
        )
        y += 26
    for label, amount in [("TOTAL AMOUNT:", "39.35"), ("CASH", "50.00"), ("CHANGE", "10.65")]:
        rows.append([(label, box(40, y, 11 * len(label), 18)), (amount, box(445, y, 55, 18))])
        y += 26
    texts = [t for row in rows for t, _ in row]
    boxes = [b for row in rows for _, b in row]
    return texts, boxes, [[t for t, _ in row] for row in rows]


def form() -> tuple[list[str], list[Box], list[list[str]]]:
    """A filled-in form: a column of labels, a column of values, one pair per row."""
    pairs = [
        ("Name:", "Jane Doe"),
        ("Date of birth:", "1983-06-08"),
        ("Nationality:", "Malaysian"),
        ("Address:", "12 Harbour Street, Springfield"),
        ("Phone:", "+60 12 918 7937"),
        ("Email:", "jane.doe@example.com"),
        ("Occupation:", "Engineer"),
        ("Signature:", "J. Doe"),
    ]
    texts: list[str] = []
    boxes: list[Box] = []
    for r, (label, value) in enumerate(pairs):
        y = 100 + r * 34
        texts += [label, value]
        boxes += [box(60, y, 10 * len(label), 20), box(330, y, 10 * len(value), 20)]
    return texts, boxes, [list(p) for p in pairs]


# --- synthetic layouts ----------------------------------------------------------------------


def test_no_boxes() -> None:
    assert reading_order([]) == []
    assert page_text([], []) == ""


def test_one_box() -> None:
    assert reading_order([box(10, 10, 100, 20)]) == [[[0]]]
    assert page_text(["  alone "], [box(10, 10, 100, 20)]) == "alone"


def test_a_single_row_reads_left_to_right() -> None:
    words = ["The", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog"]
    jitter = [0, 3, -2, 4, -3, 1, 2, -4, 0]  # detector boxes never line up exactly
    boxes = [box(20 + 90 * i, 100 + jitter[i], 80, 24) for i in range(len(words))]
    texts, boxes = shuffled(words, boxes)
    assert page_text(texts, boxes) == " ".join(words)


def test_two_columns_with_aligned_rows_read_column_by_column() -> None:
    texts, boxes, columns = columns_page(2)
    texts, boxes = shuffled(texts, boxes)
    assert blocks_of(texts, boxes) == columns
    assert page_text(texts, boxes) == "\n\n".join("\n".join(c) for c in columns)


def test_two_columns_with_staggered_rows_read_column_by_column() -> None:
    texts, boxes, columns = columns_page(2, aligned=False)
    texts, boxes = shuffled(texts, boxes, seed=1)
    assert blocks_of(texts, boxes) == columns


@pytest.mark.parametrize("n_columns", [3, 4, 5])
def test_newspaper_columns_read_column_by_column(n_columns: int) -> None:
    texts, boxes, columns = columns_page(n_columns, n_rows=15)
    texts, boxes = shuffled(texts, boxes, seed=2)
    assert blocks_of(texts, boxes) == columns


def test_a_title_spanning_the_columns_comes_first_and_a_footer_last() -> None:
    texts, boxes, columns = columns_page(2)
    texts += ["A Title Across Both Columns", "page 1"]
    boxes += [box(300, 120, 500, 36), box(520, 620, 60, 18)]
    texts, boxes = shuffled(texts, boxes, seed=3)
    assert blocks_of(texts, boxes) == [["A Title Across Both Columns"], *columns, ["page 1"]]


def test_a_receipt_with_a_price_column_reads_row_by_row() -> None:
    texts, boxes, rows = receipt()
    texts, boxes = shuffled(texts, boxes, seed=4)
    assert rows_of(texts, boxes) == rows


def test_a_form_with_label_and_value_columns_reads_row_by_row() -> None:
    texts, boxes, rows = form()
    texts, boxes = shuffled(texts, boxes, seed=5)
    assert rows_of(texts, boxes) == rows


def test_a_form_with_a_few_long_labels_and_values_reads_row_by_row() -> None:
    # Three long labels and three long values, but never three in a row: no paragraph on
    # either side, so no text columns.
    texts: list[str] = []
    boxes: list[Box] = []
    rows: list[list[str]] = []
    for r in range(12):
        y = 100 + r * 34
        label = "Identifying number (see page 8):" if r % 4 == 1 else f"Field {r}:"
        value = "12 Harbour Street, Springfield 40170" if r % 4 == 2 else f"value {r}"
        texts += [label, value]
        boxes += [box(60, y, 10 * len(label), 20), box(420, y, 10 * len(value), 20)]
        rows.append([label, value])
    texts, boxes = shuffled(texts, boxes, seed=13)
    assert rows_of(texts, boxes) == rows


def test_a_table_above_two_columns_reads_row_by_row_then_column_by_column() -> None:
    # The table's two columns line up with the text columns below, so the gutter runs from
    # the table's top to the page's bottom; the table must not be read as the columns' top.
    table = [[f"label {r}:", f"value {r}"] for r in range(4)]
    texts: list[str] = []
    boxes: list[Box] = []
    for r, (label, value) in enumerate(table):
        texts += [label, value]
        boxes += [box(60, 80 + r * PITCH, 90, LINE_H), box(580, 80 + r * PITCH, 80, LINE_H)]
    col_texts, col_boxes, columns = columns_page(2)
    texts, boxes = shuffled(texts + col_texts, boxes + col_boxes, seed=14)
    assert rows_of(texts, boxes) == [*table, *([t] for column in columns for t in column)]


def test_lines_merged_across_the_gutter_do_not_end_the_columns() -> None:
    # Between justified columns a few characters apart the detector sometimes returns one box
    # for a line of the left column and the line beside it. Three such boxes in a row must
    # not cut the columns into pieces: each is read where its left part belongs.
    texts, boxes, columns = columns_page(2, n_rows=16)
    merged = {6, 7, 8}
    keep = [k for k, t in enumerate(texts) if int(t[3:]) not in merged]
    texts, boxes = [texts[k] for k in keep], [boxes[k] for k in keep]
    for r in sorted(merged):
        right = columns_page(2, n_rows=16)[1][16 + r]
        texts.append(f"c0r{r} c1r{r}")
        boxes.append(box(60, 200 + r * PITCH, right[1][0] - 60, LINE_H))
    left_column = [f"c0r{r} c1r{r}" if r in merged else f"c0r{r}" for r in range(16)]
    right_column = [t for t in columns[1] if int(t[3:]) not in merged]
    texts, boxes = shuffled(texts, boxes, seed=15)
    assert blocks_of(texts, boxes) == [left_column, right_column]


def test_boxes_padded_into_a_narrow_gutter_still_leave_two_columns() -> None:
    # A 24 px gutter (1.2 line heights), and every third box of the left column runs 18 px
    # into it, as detector boxes around justified text do: 6 px of the gutter stay clear.
    texts: list[str] = []
    boxes: list[Box] = []
    columns: list[list[str]] = []
    for c, x in enumerate((60.0, 544.0)):
        column = []
        for r in range(12):
            width = 460.0 + (18.0 if c == 0 and r % 3 == 1 else 0.0)
            if r == 5:
                width *= 0.5  # a paragraph's last line
            texts.append(f"c{c}r{r}")
            boxes.append(box(x, 200 + r * PITCH, width, LINE_H))
            column.append(f"c{c}r{r}")
        columns.append(column)
    texts, boxes = shuffled(texts, boxes, seed=16)
    assert blocks_of(texts, boxes) == columns


def test_a_footer_row_across_the_gutter_is_read_as_one_row_after_the_columns() -> None:
    # A print footer below the columns: one item crosses the gutter, the others do not; the
    # row must neither be split between the columns nor read in the middle of them.
    texts, boxes, columns = columns_page(2)
    footer = ["VerDate Sep<11>2014", "PO 00000", "06AUP1"]
    texts += footer
    boxes += [box(60, 590, 180, 18), box(500, 590, 100, 18), box(900, 590, 70, 18)]
    texts, boxes = shuffled(texts, boxes, seed=17)
    assert blocks_of(texts, boxes) == [*columns, footer]
    assert rows_of(texts, boxes)[-1] == footer


@pytest.mark.parametrize("degrees", [-4.0, -1.5, 2.0, 4.0])
@pytest.mark.parametrize("page", [receipt, columns_page, form])
def test_a_skewed_page_reads_like_a_straight_one(
    page: Callable[[], tuple[list[str], list[Box], list[list[str]]]], degrees: float
) -> None:
    # A photographed page: every line turned by the same angle, so a wide row's ends are
    # up to 35 px apart in y while lines are 18-20 px tall.
    texts, boxes, _ = page()
    straight = page_text(texts, boxes)
    turned = rotate(boxes, degrees, centre=(500.0, 400.0))
    texts, turned = shuffled(texts, turned, seed=6)
    assert page_text(texts, turned) == straight


def test_a_row_whose_y_drifts_stays_one_row() -> None:
    # One line tilted by 2.5 degrees on an otherwise straight page (so no deskew): its price,
    # 860 px to the right of the line's start, sits 39 px lower, two line heights. Following
    # the long line's slope keeps the price in its row.
    texts: list[str] = []
    boxes: list[Box] = []
    rows: list[list[str]] = []
    for r in range(7):
        y = 100.0 + 70 * r
        line, price = box(40, y, 360, 18), box(900, y, 60, 18)
        if r == 3:
            line, price = rotate([line, price], 2.5, centre=(40.0, y + 9))
        texts += [f"description of item {r}", f"{r}.99"]
        boxes += [line, price]
        rows.append([f"description of item {r}", f"{r}.99"])
    texts, boxes = shuffled(texts, boxes, seed=7)
    assert rows_of(texts, boxes) == rows


def test_a_table_with_a_narrow_column_of_long_codes_reads_row_by_row() -> None:
    # Both sides hold long lines, but the right one spans under a quarter of the table: a
    # table column, not a column of text.
    texts: list[str] = []
    boxes: list[Box] = []
    rows: list[list[str]] = []
    for r in range(10):
        y = 100.0 + 30 * r
        description = f"item {r}: a long description of what was delivered and when"
        code = f"INV-2018-0310-{18240 + r}"
        texts += [description, code]
        boxes += [box(40, y, 11 * len(description), 20), box(760, y, 11 * len(code), 20)]
        rows.append([description, code])
    texts, boxes = shuffled(texts, boxes, seed=12)
    assert rows_of(texts, boxes) == rows


def test_small_lines_stacked_beside_a_tall_one_stay_apart() -> None:
    # Both small lines have their centre inside the tall total's height, but one sits on top
    # of the other: only the first can share the total's row.
    texts = ["TOTAL", "incl. 6% GST", "RM 213.00"]
    boxes = [box(40, 100, 60, 16), box(40, 120, 110, 16), box(300, 96, 140, 40)]
    assert rows_of(*shuffled(texts, boxes)) == [["TOTAL", "RM 213.00"], ["incl. 6% GST"]]


def test_vertical_text_is_kept_as_its_own_row() -> None:
    texts, boxes, rows = receipt()
    texts.append("VERTICAL SIDEBAR")
    boxes.append(box(5, 40, 18, 300))  # upright box, far taller than wide
    texts, boxes = shuffled(texts, boxes, seed=8)
    got = rows_of(texts, boxes)
    assert ["VERTICAL SIDEBAR"] in got
    assert [row for row in got if row != ["VERTICAL SIDEBAR"]] == rows


def test_degenerate_boxes_are_each_placed_once() -> None:
    boxes: list[Box] = [
        ((5.0, 5.0), (5.0, 5.0), (5.0, 5.0), (5.0, 5.0)),  # a point
        ((0.0, 50.0), (80.0, 50.0), (80.0, 50.0), (0.0, 50.0)),  # no height
        ((40.0, 0.0), (40.0, 0.0), (40.0, 30.0), (40.0, 30.0)),  # no width
        box(10, 100, 50, 20),
        box(10, 100, 50, 20),  # an exact duplicate
        box(-300, -200, 40, 20),  # off the page
        ((0.0, 0.0), (10.0, 10.0), (20.0, 20.0), (30.0, 30.0)),  # collinear corners
    ]
    order = reading_order(boxes)
    assert sorted(i for block in order for row in block for i in row) == list(range(len(boxes)))
    assert reading_order([boxes[0]] * 3) == [[[0, 1, 2]]]


def test_every_index_appears_once_on_a_large_page() -> None:
    rng = random.Random(9)
    _, boxes, _ = columns_page(3, n_rows=1000)
    boxes += [box(rng.uniform(0, 1600), rng.uniform(0, 30000), 60, 18) for _ in range(500)]
    order = reading_order(boxes)
    assert sorted(i for block in order for row in block for i in row) == list(range(len(boxes)))


def test_the_order_does_not_depend_on_the_input_order() -> None:
    texts, boxes, _ = columns_page(2, aligned=False)
    texts += ["A Title Across Both Columns"]
    boxes += [box(300, 120, 500, 36)]
    expected = page_text(texts, boxes)
    for seed in range(5):
        assert page_text(*shuffled(texts, boxes, seed=seed)) == expected
    assert reading_order(boxes) == reading_order(boxes)


def test_numpy_boxes_are_accepted() -> None:
    _, boxes, _ = receipt()
    as_array = np.asarray(boxes, dtype=np.float32)
    assert reading_order(as_array) == reading_order(boxes)  # type: ignore[arg-type]


def test_bad_input_is_refused_with_what_was_expected() -> None:
    with pytest.raises(ValueError, match="4 \\(x, y\\) points"):
        reading_order([((0, 0), (1, 0), (1, 1))])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="finite"):
        reading_order([((0, 0), (1, 0), (1, math.nan), (0, 1))])
    with pytest.raises(ValueError, match="2 texts and 1 boxes"):
        page_text(["a", "b"], [box(0, 0, 10, 10)])


def test_empty_texts_leave_no_gaps() -> None:
    boxes = [box(0, 0, 50, 20), box(60, 0, 50, 20), box(120, 0, 50, 20), box(0, 40, 50, 20)]
    assert page_text(["a", " ", "c", ""], boxes) == "a c"


def test_the_docstring_examples_hold() -> None:
    assert doctest.testmod(layout, raise_on_error=False).failed == 0


# --- real labelled pages ----------------------------------------------------------------------


def _levenshtein() -> Callable[[str, str], int]:
    spec = importlib.util.spec_from_file_location("_eval_score", SHARED_EVAL / "score.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    distance: Callable[[str, str], int] = module.levenshtein
    return distance


def _normalise(text: str, *, ignore_case: bool) -> str:
    """As the project's scorer does: NFKC, optional casefold, whitespace runs collapsed."""
    text = unicodedata.normalize("NFKC", text)
    if ignore_case:
        text = text.casefold()
    return " ".join(text.split())


def naive_order_text(texts: Sequence[str], boxes: Sequence[Box]) -> str:
    """The baseline: RapidOCR's ``sorted_boxes`` (sort by the first point's y, then x; swap
    neighbours whose first points are less than 10 px apart in y into x order)."""
    idx = sorted(range(len(boxes)), key=lambda i: (boxes[i][0][1], boxes[i][0][0]))
    for i in range(len(idx) - 1):
        for j in range(i, -1, -1):
            a, b = boxes[idx[j]][0], boxes[idx[j + 1]][0]
            if abs(b[1] - a[1]) < 10 and b[0] < a[0]:
                idx[j], idx[j + 1] = idx[j + 1], idx[j]
            else:
                break
    return "\n".join(texts[i] for i in idx)


def page_cer(
    labels: Path,
    order: Callable[[Sequence[str], Sequence[Box]], str],
    *,
    ignore_case: bool = False,
    page: int | None = None,
) -> float:
    """Micro-averaged page CER of ``order`` over a labels.jsonl, from shuffled lines."""
    distance = _levenshtein()
    edits = chars = 0
    for line in labels.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if page is not None and record.get("page") != page:
            continue
        kept = [x for x in record["lines"] if not x.get("ignore") and x["points"] is not None]
        texts = [x["text"] for x in kept]
        boxes: list[Box] = [tuple(tuple(p) for p in x["points"]) for x in kept]  # type: ignore[misc]
        texts, boxes = shuffled(texts, boxes, seed=11)
        ref = _normalise(record["page_text"], ignore_case=ignore_case)
        hyp = _normalise(order(texts, boxes), ignore_case=ignore_case)
        edits += distance(ref, hyp)
        chars += len(ref)
    return edits / max(chars, 1)


# Measured with this module (and the naive order) when the thresholds were chosen:
#   sroie_receipts_en 0.00% (0.32%), icdar2015_scene_en 8.82% (13.08%),
#   pdf_docs 26.14% (34.48%), pdf_docs page 5 (two columns) 25.7% (58.6%),
#   funsd_forms_train_en 12.59% (14.53%; its truth reads rows, as this module does).
# Bounds leave about 2 points of margin (1.4 on the forms, where the naive order is 2 points
# worse); the naive order must stay worse. The multi-column pages of pdf_docs_more are tested
# on fixtures below: their labelled order is not a reading order.
REAL_SETS = [
    pytest.param("sroie_receipts_en", True, None, 0.005, id="receipts"),
    pytest.param("icdar2015_scene_en", False, None, 0.11, id="scene"),
    pytest.param("funsd_forms_train_en", False, None, 0.14, id="forms"),
    pytest.param("pdf_docs", False, None, 0.29, id="pdf-form"),
    pytest.param("pdf_docs", False, 5, 0.28, id="pdf-two-columns"),
]


@pytest.mark.parametrize(("name", "ignore_case", "page", "bound"), REAL_SETS)
def test_page_cer_on_the_dev_labels(
    name: str, ignore_case: bool, page: int | None, bound: float
) -> None:
    labels = SHARED_EVAL / "dev" / name / "labels.jsonl"
    if not labels.is_file():
        pytest.skip(f"{labels} is not there (the shared evaluation data sits beside the repo)")
    ours = page_cer(labels, page_text, ignore_case=ignore_case, page=page)
    naive = page_cer(labels, naive_order_text, ignore_case=ignore_case, page=page)
    assert ours <= bound, f"{name}: page CER {ours:.4f} above {bound} (naive order {naive:.4f})"
    assert ours <= naive, f"{name}: page CER {ours:.4f} worse than the naive order {naive:.4f}"


# --- real pages committed as fixtures (engine lines and text-layer lines, with golden text) ---

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def fixture_page(name: str, part: str) -> tuple[list[str], list[Box], str]:
    """Texts, boxes and golden text of a page in tests/fixtures (see its README)."""
    page = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    lines = page[part]["lines"]
    texts = [x["text"] for x in lines]
    boxes: list[Box] = [tuple(tuple(p) for p in x["box"]) for x in lines]  # type: ignore[misc]
    return texts, boxes, page["golden_text"]


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance of two strings (Myers' bit-vector algorithm, Hyyrö's form)."""
    if len(a) < len(b):
        a, b = b, a
    m = len(b)
    if m == 0:
        return len(a)
    masks: dict[str, int] = {}
    for i, ch in enumerate(b):
        masks[ch] = masks.get(ch, 0) | (1 << i)
    full, last = (1 << m) - 1, 1 << (m - 1)
    vp, vn, dist = full, 0, m
    for ch in a:
        eq = masks.get(ch, 0)
        d0 = ((((eq & vp) + vp) ^ vp) | eq | vn) & full
        hp = (vn | ~(d0 | vp)) & full
        hn = vp & d0
        if hp & last:
            dist += 1
        elif hn & last:
            dist -= 1
        hp = ((hp << 1) | 1) & full
        hn = (hn << 1) & full
        vp = (hn | ~(d0 | hp)) & full
        vn = hp & d0
    return dist


def text_cer(golden: str, text: str) -> float:
    """Page CER as the project's scorer counts it (without needing it: fixtures stand alone)."""
    ref = _normalise(golden, ignore_case=False)
    return edit_distance(ref, _normalise(text, ignore_case=False)) / len(ref)


# Measured: engine lines 5.75% (before the gutter, bridge and footer fixes: 75.6%; naive
# order 79.5%), text-layer lines 3.82% (74.2%; naive 78.9%). What is left is the masthead
# (read at the top of the first and third columns, the golden text has it after the notice
# box) and, for the engine, recognition (2.9% with the lines in the golden order).
@pytest.mark.parametrize(("part", "bound"), [("engine", 0.065), ("text_layer", 0.045)])
def test_a_three_column_page_reads_column_by_column(part: str, bound: float) -> None:
    # Federal Register page 47698: three justified columns 16-18 px apart (0.6 line heights
    # of the detector's boxes), a masthead, a boxed notice, a print footer.
    texts, boxes, golden = fixture_page("federal_register_85fr47698_p1.json", part)
    texts, boxes = shuffled(texts, boxes, seed=18)
    blocks = blocks_of(texts, boxes)

    def block_of(line: str) -> int:
        [found] = [b for b, block in enumerate(blocks) if any(t.startswith(line) for t in block)]
        return found

    columns = [
        ("This section of the FEDERAL REGISTER", "methods:"),
        ("• Federal eRulemaking Portal: Go to", "reference a specific portion of the"),
        ("proposal, explain the reason for any", "accident after takeoff from Soekarno-"),
    ]
    at = [(block_of(top), block_of(bottom)) for top, bottom in columns]
    assert all(top == bottom for top, bottom in at), at  # each column is one block...
    assert [top for top, _ in at] == sorted({top for top, _ in at}), at  # ...left to right
    cer = text_cer(golden, page_text(texts, boxes))
    naive = text_cer(golden, naive_order_text(texts, boxes))
    assert cer <= bound, f"page CER {cer:.4f} above {bound} (naive order {naive:.4f})"


def test_a_form_page_is_not_cut_into_text_columns() -> None:
    # IRS Form 1040-NR page 1 as the engine reads it: long instruction lines cross the middle
    # of the form between label and field columns that hold a few long lines each. Reading
    # it row by row gives 22.9% against the golden text (which reads the form's columns one
    # after another, see the fixture); cutting it into two text columns gave 37-48%.
    texts, boxes, golden = fixture_page("irs_f1040nr_p1.json", "engine")
    texts, boxes = shuffled(texts, boxes, seed=19)
    cer = text_cer(golden, page_text(texts, boxes))
    assert cer <= 0.25, f"page CER {cer:.4f}"
    assert len(reading_order(boxes)) == 1  # one block, read row by row
