"""Reading order of recognised text lines, and the page text built from it.

The detector returns lines in no useful order. :func:`reading_order` groups them into blocks
(columns or regions, in reading order), each block into rows (top to bottom), each row into
line indices (left to right); :func:`page_text` joins the recognised texts that way.

>>> boxes = [((0, 0), (40, 0), (40, 10), (0, 10)), ((50, 1), (90, 1), (90, 11), (50, 11))]
>>> reading_order(boxes)
[[[0, 1]]]
>>> page_text(["Hello", "world"], boxes)
'Hello world'

How (pure geometry: the texts are never looked at):

1. *Deskew.* When the lines agree on an angle (a document photographed a few degrees off),
   every point is turned back by it. Scene words that tilt each their own way are left alone;
   long lines keep their own residual slope for the row step.
2. *Blocks: an XY-cut that only accepts real columns.* Lines are sorted top to bottom; for each
   candidate gutter (an x position), every maximal run of consecutive lines that leaves it
   free is a candidate multi-column section (less a two-column table at its top or bottom,
   :func:`_trim_tables`). It is cut into a left and a right part only when both parts look
   like columns of running text (:func:`_is_text_column`: wide, with a paragraph of long
   lines). What lies above the section (a title spanning the
   columns) comes first, what lies below comes last, and every part is cut again the same
   way, so three or more columns are nested binary cuts. Receipts (a narrow price column),
   forms and tables (short labels, values and cells) fail the test and are read row by row.
3. *Rows.* Within a block, a line joins the row whose horizontally nearest member has its
   centre within half the taller line's height of this line's centre (the same as "vertical
   overlap above 50% of the smaller height"), compared at the same x along the slope of long
   lines. Comparing with the nearest member, not the row's first, follows a drifting row.

Measured on ``/work/shared/eval/dev`` (page CER of ``page_text`` on shuffled labelled lines
against the labelled page text; the naive order sorts by the first point's y, swapping
neighbours less than 10 px apart by x, as RapidOCR's ``sorted_boxes`` does)::

    set                  naive    this module
    sroie_receipts_en    0.32%    0.00%
    icdar2015_scene_en   13.1%    8.8%
    pdf_docs (IRS form)  34.5%    26.1%   (p. 5, two columns: 58.6% -> 25.7%)

The same receipts turned by 1 to 5 degrees either way stay at 0.00% (naive: up to 19.5%).
The form's pages 2-4 stay near the naive order: their labelled order reads the form's
columns one after the other, this module reads the form row by row, as intended. 3000 lines
in three columns take 10-20 ms on a shared 2-core machine, a 200-line form page 3 ms.
``tests/test_layout.py`` checks the CER bounds on every run.

Limits: column detection needs line-level boxes (as PP-OCR's detector gives); word-level
boxes are too short to look like running text, so their columns are read row by row.
Vertical text is kept, each line as its own row, but not ordered as a vertical page.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ocrserve.types import Box

__all__ = ["join_text", "page_text", "reading_order"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]

#: Texts in one row are joined by this, rows by ROW_SEP, blocks (columns, regions) by BLOCK_SEP.
#: A blank line between blocks keeps two columns apart for a reader and for paragraph-aware
#: consumers; scorers that collapse whitespace are not affected.
WORD_SEP = " "
ROW_SEP = "\n"
BLOCK_SEP = "\n\n"

# --- thresholds ------------------------------------------------------------------------------
# Chosen on the dev sets in the module docstring, plus the two paper pages of
# /work/shared/eval/speed (boxes from PP-OCRv6 det): the values below score best or tie
# there; "costs" are page CER differences measured by changing one value at a time.

#: Two lines share a row when their centres, compared at the same x, are at most this many
#: half-heights (of the taller line) apart. 1.0 is "centre of the smaller inside the taller",
#: which equals "vertical overlap > 50% of the smaller height". Receipts read perfectly only
#: at 1.0 (0.9 and 1.1 each break a row); 0.8 or 1.2 cost the scene set 1-2 points.
ROW_TOLERANCE = 1.0
#: A line may not join a row in which its horizontal neighbour covers more than this share of
#: the narrower of the two: that is a stacked line, not a neighbour (a small line beside a tall
#: one). Without it the scene set loses 1.6 points.
ROW_MAX_X_OVERLAP = 0.5
#: Lines tilted more than this (radians) are not used for the page angle and their slope is
#: ignored; lines within this of 90 degrees are vertical text.
MAX_SKEW = math.radians(30.0)
#: The page is deskewed only when at least SKEW_MIN_LINES horizontal lines exist and
#: SKEW_MIN_SHARE of them lie within SKEW_AGREEMENT of their median angle. Deskewing every
#: page costs the scene set 12 points; never deskewing costs the receipts turned by 2 to 5
#: degrees 0.6 to 10.6 points.
SKEW_MIN_LINES = 5
SKEW_MIN_SHARE = 0.7
SKEW_AGREEMENT = math.radians(2.0)
#: A line's own slope is used only when it is at least this many heights long: using every
#: box's slope costs the scene set 4.8 points (4 heights: 1.4 points); 8 to 12 tie.
SLOPE_MIN_ASPECT = 8.0
#: A gutter must be at least this many median line heights wide. 1.0 misses the paper page
#: whose columns hold tables (its gutter is 1.3 heights, less after binning); 0.25 to 0.5
#: tie. Word gaps inside one line are narrower; the column test does the rest.
MIN_GUTTER = 0.5
#: Each side of a column cut holds at least this many long lines one after the other (a
#: paragraph, "several lines"). 2 cuts a photographed lab-report table into columns.
MIN_COLUMN_LINES = 3
#: Each side of a column cut spans at least this share of the section's width, so a table's
#: narrow column of long codes stays in its rows (tested); 0.15 to 0.35 tie on the dev sets.
MIN_COLUMN_WIDTH = 0.25
#: A line counts as running text when it is at least this many heights long, about 18
#: characters of Latin text; labels, prices, quantities and box numbers are shorter. 6 cuts
#: the lab-report table (and more of the tax form into columns); 8 to 15 tie.
MIN_TEXT_ASPECT = 10.0
#: Upper bound on the x resolution of the gutter search (bins across a region), for speed.
MAX_BINS = 1024
#: At most this many candidate sections are tested per region; keeps pathological inputs
#: (thousands of scattered words) fast.
MAX_CANDIDATES = 64


@dataclass(frozen=True, slots=True)
class _Geometry:
    """Per-line geometry in deskewed page coordinates."""

    x0: FloatArray  # left edge
    x1: FloatArray  # right edge
    cx: FloatArray  # centre x
    cy: FloatArray  # centre y
    h: FloatArray  # text height: a long line's own; otherwise its upright extent
    length: FloatArray  # text length along the line
    slope: FloatArray  # dy/dx of the line against the deskewed page
    vertical: npt.NDArray[np.bool_]  # vertical text: never shares a row


def reading_order(boxes: Sequence[Box]) -> list[list[list[int]]]:
    """Order text lines for reading: blocks -> rows -> line indices, left to right.

    Blocks are columns or regions in reading order (a title above two columns is a block of
    its own, then the left column, then the right one); within a block, rows top to bottom.
    Every index of ``boxes`` appears exactly once.

    >>> two_columns = [  # three lines in each column, rows at the same heights
    ...     ((0, 0), (400, 0), (400, 20), (0, 20)),
    ...     ((500, 0), (900, 0), (900, 20), (500, 20)),
    ...     ((0, 30), (400, 30), (400, 50), (0, 50)),
    ...     ((500, 30), (900, 30), (900, 50), (500, 50)),
    ...     ((0, 60), (400, 60), (400, 80), (0, 80)),
    ...     ((500, 60), (900, 60), (900, 80), (500, 80)),
    ... ]
    >>> reading_order(two_columns)
    [[[0], [2], [4]], [[1], [3], [5]]]
    >>> reading_order([])
    []
    """
    pts = _as_points(boxes)
    n = pts.shape[0]
    if n == 0:
        return []
    geo = _geometry(pts)
    order = np.lexsort((geo.x0, geo.cy))  # top to bottom, then left to right
    lines = _Lines.of(geo)
    return [_rows(block, geo, lines) for block in _blocks(order, geo)]


def page_text(texts: Sequence[str], boxes: Sequence[Box]) -> str:
    """Join recognised texts in reading order.

    Texts in one row are joined by a single space, rows by a newline, blocks (columns,
    regions) by a blank line. Texts are stripped; empty ones are left out.

    >>> boxes = [
    ...     ((0, 14), (60, 14), (60, 24), (0, 24)),
    ...     ((0, 0), (60, 0), (60, 10), (0, 10)),
    ...     ((200, 15), (240, 15), (240, 25), (200, 25)),
    ... ]
    >>> page_text(["TOTAL", "SHOP NAME", "8.20"], boxes)
    'SHOP NAME\\nTOTAL 8.20'
    """
    if len(texts) != len(boxes):
        raise ValueError(
            f"page_text: expected one box per text, got {len(texts)} texts and {len(boxes)} boxes"
        )
    return join_text(texts, reading_order(boxes))


def join_text(texts: Sequence[str], order: list[list[list[int]]]) -> str:
    """Join texts along an order from :func:`reading_order` (for callers that keep the order).

    >>> print(join_text(["b", "a", "c"], [[[1, 0]], [[2]]]))
    a b
    <BLANKLINE>
    c
    """
    out_blocks: list[str] = []
    for block in order:
        rows = [WORD_SEP.join(t for i in row if (t := texts[i].strip())) for row in block]
        text = ROW_SEP.join(r for r in rows if r)
        if text:
            out_blocks.append(text)
    return BLOCK_SEP.join(out_blocks)


# --- geometry -------------------------------------------------------------------------------


def _as_points(boxes: Sequence[Box]) -> FloatArray:
    if len(boxes) == 0:
        return np.zeros((0, 4, 2), dtype=np.float64)
    try:
        pts = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"reading_order: expected boxes of 4 (x, y) points, got {boxes[0]!r}"
        ) from e
    if pts.ndim != 3 or pts.shape[1:] != (4, 2):
        raise ValueError(
            f"reading_order: expected boxes of 4 (x, y) points, got an array of shape {pts.shape}"
        )
    if not np.isfinite(pts).all():
        raise ValueError("reading_order: box coordinates must be finite numbers")
    return pts


def _geometry(pts: FloatArray) -> _Geometry:
    tl, tr, br, bl = pts[:, 0], pts[:, 1], pts[:, 2], pts[:, 3]
    top, bottom = tr - tl, br - bl
    length = 0.5 * (np.hypot(top[:, 0], top[:, 1]) + np.hypot(bottom[:, 0], bottom[:, 1]))
    left, right = bl - tl, br - tr
    height = 0.5 * (np.hypot(left[:, 0], left[:, 1]) + np.hypot(right[:, 0], right[:, 1]))
    angle = np.arctan2(top[:, 1] + bottom[:, 1], top[:, 0] + bottom[:, 0])

    # The page angle comes from lines that are clearly horizontal text (longer than tall,
    # moderately tilted); single characters and vertical text say nothing about it.
    horizontal = (length >= 1.5 * height) & (np.abs(angle) <= MAX_SKEW)
    skew = _page_skew(angle[horizontal])
    if skew != 0.0:
        c, s = math.cos(skew), math.sin(skew)
        pts = pts @ np.array([[c, -s], [s, c]])  # (x, y) row vectors turned by -skew
    residual = (angle - skew + math.pi) % (2 * math.pi) - math.pi

    x0 = pts[:, :, 0].min(axis=1)
    x1 = pts[:, :, 0].max(axis=1)
    cy = pts[:, :, 1].mean(axis=1)
    upright = pts[:, :, 1].max(axis=1) - pts[:, :, 1].min(axis=1)
    med_h = float(np.median(height[height > 0])) if (height > 0).any() else 1.0

    # Vertical text (the sidebars of a tax form, a stamp) as the detector gives it: turned by
    # about 90 degrees, or an upright box much taller than both its width and the page's
    # line height (a single "1" is taller than wide too). It never shares a row, and neither
    # makes nor spoils a text column.
    vertical = (np.abs(np.abs(residual) - math.pi / 2) < MAX_SKEW) | (
        (height >= 2.0 * length) & (height >= 2.0 * med_h)
    )
    # The slope of a short box (a word, a price) is mostly perspective or detector noise, and
    # extending it sideways misplaces more than it fixes (measured on the scene set); such a
    # box is taken as level, with its upright extent as height, which covers its own tilt.
    # Long lines have a reliable slope, and need it: their far ends drift most.
    sloped = ~vertical & (np.abs(residual) <= MAX_SKEW) & (length >= SLOPE_MIN_ASPECT * height)
    slope = np.where(sloped, np.tan(residual), 0.0)
    h = np.where(sloped, height, np.maximum(upright, np.where(vertical, 0.0, height)))
    # A degenerate box (a point, a segment) keeps a tiny height, so divisions stay finite.
    h = np.maximum(h, max(1e-3 * med_h, 1e-9))
    return _Geometry(
        x0=x0,
        x1=x1,
        cx=0.5 * (x0 + x1),
        cy=cy,
        h=h,
        length=np.where(vertical, 0.0, length),
        slope=slope,
        vertical=vertical,
    )


def _page_skew(angles: FloatArray) -> float:
    """The page's angle, or 0.0 when the lines do not agree on one.

    A photographed document tilts as a whole: its lines share one angle. Words in a scene
    photo tilt each their own way (perspective, curved signs); rotating the whole picture by
    their median would reorder words that are far apart, so there each line's own slope is
    all that is used.
    """
    if len(angles) < max(SKEW_MIN_LINES, 1):
        return 0.0
    median = float(np.median(angles))
    agree = np.abs(angles - median) <= SKEW_AGREEMENT
    if not agree.any() or agree.mean() < SKEW_MIN_SHARE:
        return 0.0
    return float(np.median(angles[agree]))


# --- blocks: XY-cut with a column test --------------------------------------------------------


def _blocks(order: IntArray, geo: _Geometry) -> list[IntArray]:
    """Split lines (sorted top to bottom) into blocks in reading order."""
    out: list[IntArray] = []
    stack: list[IntArray] = [order]
    # An explicit stack (last in, first out) instead of recursion: no depth limit on odd input.
    while stack:
        region = stack.pop()
        parts = _find_columns(region, geo)
        if parts is None:
            out.append(region)
        else:
            stack.extend(reversed([p for p in parts if len(p)]))
    return out


def _find_columns(
    region: IntArray, geo: _Geometry
) -> tuple[IntArray, IntArray, IntArray, IntArray] | None:
    """Best column cut of a region: (above, left, right, below), or None to keep it whole."""
    m = len(region)
    long = geo.length[region] >= MIN_TEXT_ASPECT * geo.h[region]
    if int(long.sum()) < 2 * MIN_COLUMN_LINES:
        return None  # cannot hold two text columns; also skips the work for tables and words
    x0, x1, h = geo.x0[region], geo.x1[region], geo.h[region]
    lo, hi = float(x0.min()), float(x1.max())
    med_h = float(np.median(h))
    if hi - lo <= 0 or med_h <= 0:
        return None
    # Bins a quarter of a line height wide resolve any gutter worth having; capped for speed.
    nb = int(min(MAX_BINS, max(8, math.ceil((hi - lo) / (0.25 * med_h)))))
    bw = (hi - lo) / nb
    start = np.clip(np.floor((x0 - lo) / bw).astype(np.intp), 0, nb - 1)
    end = np.clip(np.ceil((x1 - lo) / bw).astype(np.intp), start + 1, nb)
    bins = np.arange(nb)[:, None]
    # free[b, 1 + k]: line k (top to bottom) leaves bin b free; padded with occupied ends, so
    # that every run of free lines has a start and an end edge. Bins by rows keeps the scans
    # below on contiguous memory (several times faster than the transposed layout).
    free = np.zeros((nb, m + 2), dtype=bool)
    free[:, 1:-1] = (bins < start) | (bins >= end)
    edges = np.flatnonzero(free[:, 1:] != free[:, :-1])
    run_start, run_end = edges[0::2], edges[1::2]  # edges alternate: start, end, start, ...
    # Runs never wrap from one bin to the next (the padding is occupied), so a run's length is
    # the difference of its flat positions; filtering first saves dividing the short ones.
    keep = run_end - run_start >= 2 * MIN_COLUMN_LINES
    if not keep.any():
        return None
    run_start, run_end = run_start[keep], run_end[keep]
    sb, si = np.divmod(run_start, m + 1)
    sj = si + (run_end - run_start)
    # Lines left of bin b among the first k lines (running sum along the sorted lines), only
    # for the bins that still have a candidate.
    cand_bins, sb_pos = np.unique(sb, return_inverse=True)
    left_of = np.zeros((len(cand_bins), m + 1), dtype=np.int32)
    np.cumsum(end <= cand_bins[:, None], axis=1, dtype=np.int32, out=left_of[:, 1:])
    n_left = left_of[sb_pos, sj] - left_of[sb_pos, si]
    n_right = (sj - si) - n_left
    keep = (n_left >= MIN_COLUMN_LINES) & (n_right >= MIN_COLUMN_LINES)
    if not keep.any():
        return None
    sb, si, sj, n_left = sb[keep], si[keep], sj[keep], n_left[keep]
    # Neighbouring bins with the same run and the same split are one gutter.
    keys = np.stack([si, sj, n_left], axis=1)
    uniq, first, width = np.unique(keys, axis=0, return_index=True, return_counts=True)
    wide = width * bw >= MIN_GUTTER * med_h
    uniq, first, width = uniq[wide], first[wide], width[wide]
    if len(uniq) == 0:
        return None
    # Longest sections first, then the widest gutters; ties by position, so it is deterministic.
    rank = np.lexsort((sb[first], uniq[:, 0], -width, -(uniq[:, 1] - uniq[:, 0])))
    for c in rank[:MAX_CANDIDATES]:
        gutter = int(sb[first[c]])
        i, j = _trim_tables(int(uniq[c, 0]), int(uniq[c, 1]), long, end <= gutter)
        section = region[i:j]
        is_left = end[i:j] <= gutter
        left, right = section[is_left], section[~is_left]
        width_all = float(geo.x1[section].max() - geo.x0[section].min())
        if _is_text_column(left, geo, width_all) and _is_text_column(right, geo, width_all):
            return region[:i], left, right, region[j:]
    return None


def _trim_tables(
    i: int, j: int, long: npt.NDArray[np.bool_], left: npt.NDArray[np.bool_]
) -> tuple[int, int]:
    """Drop a table from the top or bottom of a candidate section [i, j).

    A run of free lines can start with a two-column table or form whose gutter happens to
    line up with the text columns' (labels over the left column, values over the right).
    Lines before the first long line (after the last) are left out of the section, to be
    read row by row above (below) it, when they hold several lines on both sides; a short
    heading at the top of one column is kept.
    """
    runs = np.flatnonzero(long[i:j])
    if len(runs) == 0:
        return i, j
    head_end, tail_start = i + int(runs[0]), i + int(runs[-1]) + 1
    head, tail = left[i:head_end], left[tail_start:j]
    if min(int(head.sum()), int((~head).sum())) >= MIN_COLUMN_LINES:
        i = head_end
    if min(int(tail.sum()), int((~tail).sum())) >= MIN_COLUMN_LINES:
        j = tail_start
    return i, j


def _is_text_column(lines: IntArray, geo: _Geometry, section_width: float) -> bool:
    """Whether lines (top to bottom) look like a column of running text, not a column of a
    table or form: wide enough, with a paragraph (MIN_COLUMN_LINES long lines in a row).

    Short lines among them (paragraph ends, item letters, check-box labels, a small table)
    do not spoil a column; a column of prices, labels or codes fails, and so does one where
    a few long labels stand among short ones.
    """
    if len(lines) < MIN_COLUMN_LINES:
        return False
    width = float(geo.x1[lines].max() - geo.x0[lines].min())
    if width < MIN_COLUMN_WIDTH * section_width:
        return False
    return _longest_run(geo.length[lines] >= MIN_TEXT_ASPECT * geo.h[lines]) >= MIN_COLUMN_LINES


def _longest_run(flags: npt.NDArray[np.bool_]) -> int:
    """Length of the longest run of consecutive True values."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], flags.astype(np.int8), [0]))))
    return int((edges[1::2] - edges[0::2]).max()) if len(edges) else 0


# --- rows ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Lines:
    """The geometry as plain lists, for the scalar row loop (list indexing is several times
    faster than indexing numpy arrays one element at a time)."""

    cx: list[float]
    cy: list[float]
    h: list[float]
    x0: list[float]
    x1: list[float]
    length: list[float]
    slope: list[float]
    vertical: list[bool]

    @classmethod
    def of(cls, geo: _Geometry) -> _Lines:
        return cls(
            cx=geo.cx.tolist(),
            cy=geo.cy.tolist(),
            h=geo.h.tolist(),
            x0=geo.x0.tolist(),
            x1=geo.x1.tolist(),
            length=geo.length.tolist(),
            slope=geo.slope.tolist(),
            vertical=geo.vertical.tolist(),
        )


def _rows(block: IntArray, geo: _Geometry, lines: _Lines) -> list[list[int]]:
    """Group a block's lines (sorted top to bottom) into rows, each sorted left to right."""
    if len(block) == 0:
        return []
    cy = lines.cy
    # How far below a row a line may still join it: the row's tallest line, plus what the
    # steepest line can drift across the block.
    span = float(geo.x1[block].max() - geo.x0[block].min())
    drift = float(np.abs(geo.slope[block]).max()) * span

    rows: list[_Row] = []
    active: list[_Row] = []
    for k in block.tolist():
        if lines.vertical[k]:
            rows.append(_Row(k, lines))
            continue
        best: _Row | None = None
        best_d = math.inf
        still: list[_Row] = []
        for row in active:
            if cy[k] - row.bottom > row.tallest + drift:
                continue  # rows are visited top to bottom: this one is finished for good
            still.append(row)
            d = row.distance(k, lines)
            if d < best_d:
                best, best_d = row, d
        if best is not None and best_d <= ROW_TOLERANCE:
            best.add(k, lines)
        else:
            row = _Row(k, lines)
            rows.append(row)
            still.append(row)
        active = still

    # Rows top to bottom by their mean centre: robust to one tall or tilted member.
    rows.sort(key=lambda row: (row.sum_cy / len(row.ids), row.xs[0]))
    return [row.ids for row in rows]


class _Row:
    """A row being built: member ids sorted by centre x, so neighbours are found by bisection."""

    __slots__ = ("bottom", "ids", "sum_cy", "tallest", "xs")

    def __init__(self, k: int, lines: _Lines) -> None:
        self.ids = [k]
        self.xs = [lines.cx[k]]
        self.bottom = lines.cy[k]  # lowest member centre
        self.tallest = lines.h[k]
        self.sum_cy = lines.cy[k]

    def add(self, k: int, lines: _Lines) -> None:
        i = bisect.bisect_right(self.xs, lines.cx[k])
        self.xs.insert(i, lines.cx[k])
        self.ids.insert(i, k)
        self.bottom = max(self.bottom, lines.cy[k])
        self.tallest = max(self.tallest, lines.h[k])
        self.sum_cy += lines.cy[k]

    def distance(self, k: int, lines: _Lines) -> float:
        """Vertical distance of line k from this row, in half-heights; inf if it cannot join.

        Measured against the horizontally nearest member, so that a long row whose y drifts
        (a skewed or curved page) is followed step by step.
        """
        cx, x0, x1 = lines.cx, lines.x0, lines.x1
        i = bisect.bisect_right(self.xs, cx[k])
        ref, ref_dx = -1, math.inf
        for m in self.ids[max(0, i - 1) : i + 1]:
            overlap = min(x1[k], x1[m]) - max(x0[k], x0[m])
            if overlap > 0 and overlap > ROW_MAX_X_OVERLAP * min(x1[k] - x0[k], x1[m] - x0[m]):
                return math.inf  # stacked above or below a member: a different row
            dx = abs(cx[k] - cx[m])
            if dx < ref_dx:
                ref, ref_dx = m, dx
        # Compare both centre lines halfway between them, along their slopes averaged by
        # length: a long line's slope is the better estimate (a short one's is taken as level,
        # see _geometry), and on a curved page the average follows the bend.
        lk, lr = lines.length[k], lines.length[ref]
        s = (lk * lines.slope[k] + lr * lines.slope[ref]) / (lk + lr) if lk + lr > 0 else 0.0
        mid = 0.5 * (cx[k] + cx[ref])
        yk = lines.cy[k] + s * (mid - cx[k])
        yr = lines.cy[ref] + s * (mid - cx[ref])
        return abs(yk - yr) / (0.5 * max(lines.h[k], lines.h[ref]))
