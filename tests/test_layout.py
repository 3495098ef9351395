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
#   pdf_docs 26.14% (34.48%), pdf_docs page 5 (two columns) 25.7% (58.6%).
# Bounds leave about 2 points of margin; the naive order must stay worse.
REAL_SETS = [
    pytest.param("sroie_receipts_en", True, None, 0.005, id="receipts"),
    pytest.param("icdar2015_scene_en", False, None, 0.11, id="scene"),
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
