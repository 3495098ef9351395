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
   free is a candidate multi-column section (rows at its ends kept whole, :func:`_whole_rows`;
   a page number or running head standing out into the gutter left out, :func:`_strays_out`;
   less a two-column table at its top or bottom, :func:`_trim_tables`). It is cut into a left
   and a right part only when both parts look like columns of running text
   (:func:`_is_text_column`: wide, with a paragraph of long lines). What lies above the
   section (a title spanning the columns) comes first, what lies below comes last, and every
   part is cut again the same way, so three or more columns are nested binary cuts.
   Receipts (a narrow price column), forms and tables (short labels, values and cells) fail
   the test and are read row by row. Two habits of the detector are allowed for: its boxes
   run on into a narrow gutter (the search takes GUTTER_TRIM off the ends of long lines, and
   a gutter needs only MIN_GUTTER of a line height), and it merges a line of one column with
   the line beside it in the next: such a *bridge* (:func:`_bridges`: the gutter goes on one
   line pitch above and below it) does not end the section, it is read with the column it
   starts in, and a cut that needs bridges must show longer paragraphs on both sides.
3. *Rows.* Within a block, a line joins the row whose horizontally nearest member has its
   centre within half the taller line's height of this line's centre (the same as "vertical
   overlap above 50% of the smaller height"), compared at the same x along the slope of long
   lines. Comparing with the nearest member, not the row's first, follows a drifting row.

Measured on ``/work/shared/eval/dev`` (page CER of ``page_text`` on shuffled labelled lines
against the labelled page text; the naive order sorts by the first point's y, swapping
neighbours less than 10 px apart by x, as RapidOCR's ``sorted_boxes`` does; "before" is this
module before the multi-column work of issue 12)::

    set                              naive    before   after
    sroie_receipts_en                0.32%    0.00%    0.00%
    icdar2015_scene_en               13.1%    8.8%     8.8%
    funsd_forms_train_en             14.5%    12.6%    12.6%
    pdf_docs (IRS form, 5 pages)     34.5%    26.1%    26.1%   (p. 5, two columns: 25.7%)
    pdf_docs_more: Federal Register  78.9%    74.2%    3.8%    (three columns; *)
    pdf_docs_more: mind map (zh)     84.8%    13.5%    13.5%
    pdf_docs_more: IOP paper, 6 pp.  9.8%     10.1%    10.1%   (one column, charts, tables)

And on what the engine itself finds and reads (PP-OCRv6 det + rec, pages rendered at 200 dpi,
lines of confidence >= 0.5, the same truth; faster-paddle 1.0.4 small on the same pages)::

    set                              naive    before   after    faster-paddle
    Federal Register page (*)        79.5%    75.6%    5.7%     5.6%
    two two-column papers, 14 pp.    70.2%    50.9%    9.5%     12.3%   (**)
    pdf_docs (IRS form)              35.5%    26.8%    26.8%    50.0%
    pdf_docs_more: IOP paper         11.4%    11.5%    11.5%    18.1%
    pdf_docs_more: mind map (zh)     94.0%    94.1%    32.8%
    funsd_forms_train_en (nospace)   17.3%    16.0%    16.0%
    sroie_receipts_en                3.24%    3.15%    3.15%
    tesseract_pages_en               0.29%    0.29%    0.29%    13.5%

(*) Against the text layer in content-stream order, which is this page's reading order: the
labels' ``page_text`` (an XY-cut) interleaves its second and third columns line by line, so
against it every column-wise reading scores about 76% and the naive order 37%. With the
engine's lines put in the stream order (each where the text-layer line it covers is) the
page scores 2.9%: the rest of the 5.7% is the masthead, read at the top of the first and
third columns (the only difference in order). (**) Two public papers from pdfminer.six's
samples (``samples/nonfree/naacl06-shinyama.pdf``, 8 pages, and
``samples/contrib/issue-1061-colour-space-stack.pdf``, an IEEE TIFS paper, pages 1-6; truth:
their text layers in stream order), measured but not committed: no licence to redistribute.
Most of what is left there is the detector's: it merges lines across their 25-px gutters (up
to 10 per page, each read whole in the left column); with those lines split at the gutter
(text cut at the space nearest its share of the box) the pages score 5.3%.

The same receipts turned by 1 to 5 degrees either way stay at 0.00% (naive: up to 19.5%).
The form's pages 2-4 stay near the naive order: their labelled order reads the form's
columns one after the other, this module reads the form row by row, as intended. 3000 lines
in three columns take 28 ms on a busy shared 2-core machine (19-25 ms before the gutter and
bridge work), a 200-line form page 6 ms (4 ms), 3000 scattered words 1 s (0.5 s).
``tests/test_layout.py`` checks the CER bounds on every run.

Limits: column detection needs line-level boxes (as PP-OCR's detector gives); word-level
boxes are too short to look like running text, so their columns are read row by row. A line
the detector merged across a gutter is read whole in the left column: its right part is out
of place (layout sees boxes, not where the text of each column ends). A masthead beside the
top of the columns is read with them. Figures with captions beside them are read row by
row. Vertical text is kept, each line as its own row, but not ordered as a vertical page.
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
# /work/shared/eval/speed (boxes from PP-OCRv6 det) and, for the gutter and bridge values, the
# two two-column papers the docstring names (the engine's lines): the values below score best
# or tie there; "costs" are page CER differences measured by changing one value at a time.

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
#: The detector pads boxes, and a justified column's long lines often run on into the gutter
#: (on a two-column paper, 25 px of gutter at 200 dpi were 0-8 px between boxes): the gutter
#: search takes this many line heights off both ends of a long line's box. 0 or 0.25 cost the
#: two papers 0.3 points (two pages 2-3 points each); 0.75 ties.
GUTTER_TRIM = 0.5
#: A gutter must be at least this many median line heights wide (between trimmed boxes): as
#: narrow as the detector leaves it. 0.5 costs the papers 0.8 points and the mind map 27
#: (32.8% -> 60.1%), 1.0 costs the papers 4.6; 0.1 ties. Word gaps inside one line are no
#: gutters; the column test does the rest.
MIN_GUTTER = 0.25
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
#: A bridge (see _bridges) needs the gutter, shown by anchors on both sides of it, within
#: this many of its heights above it and below it: one line pitch of running text is about
#: one detector box height. 2.0 costs the papers 1.0 point, 2.5 0.2; 3.5 ties, 4.0 0.1.
BRIDGE_REACH = 3.0
#: Anchors: lines at least this many heights long (a paragraph's short last line counts, a box
#: number does not). 0 costs the tax form 0.1 point, 7 and 10 cost the papers 0.2 and 1.0.
ANCHOR_ASPECT = 5.0
#: Passes that carry bridges along a run of merged lines (up to four in a row seen), one line
#: per pass each way. 0 costs the papers 4.2 points, 1 0.8; 2 and 8 tie.
BRIDGE_PASSES = 4
#: A cut that needs bridges must show this many long lines in a row on each side (a longer
#: paragraph than MIN_COLUMN_LINES): 3 cuts the tax form's first page into two columns of
#: labels and fields (that page 22.8% -> 37.5%); 5 and 6 tie.
MIN_BRIDGED_COLUMN_LINES = 4
#: A line at the top or bottom of a column section that reaches this many of its heights
#: past its column's inner edge, into the gutter, is left out of the section (see
#: _strays_out). 0.5 to 2, or no such rule, tie on the dev pages; a centred page number
#: under two columns (tested) needs it.
STRAY_REACH = 1.0
#: Upper bound on the x resolution of the gutter search (bins across a region), for speed.
MAX_BINS = 1024
#: At most this many candidate sections are tested per region; keeps pathological inputs
#: (thousands of scattered words) fast.
MAX_CANDIDATES = 64
#: Bridges are looked for only in regions of at most this many bins times lines (the largest
#: dev page has 206 lines x 369 bins): 3000 scattered words took 2 s instead of 1.
MAX_BRIDGE_CELLS = 1_000_000


@dataclass(frozen=True, slots=True)
class _Geometry:
    """Per-line geometry in deskewed page coordinates."""

    x0: FloatArray  # left edge
    x1: FloatArray  # right edge
    gx0: FloatArray  # left edge for the gutter search: less the detector's padding
    gx1: FloatArray  # right edge for the gutter search
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
    # The detector pads a line's box at both ends, and between justified columns a box often
    # runs on into the gutter; the gutter search looks at the boxes less that padding.
    trim = np.where(length >= MIN_TEXT_ASPECT * h, GUTTER_TRIM * h, 0.0)
    return _Geometry(
        x0=x0,
        x1=x1,
        gx0=x0 + trim,
        gx1=x1 - trim,
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
    x0, x1, h = geo.gx0[region], geo.gx1[region], geo.h[region]
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
    # Matrices are bins by lines (top to bottom): the scans run on contiguous memory (several
    # times faster than the transposed layout). left[b, k]: line k lies left of bin b.
    left, right = end <= bins, start > bins
    grid = _Grid(region, geo, long, left, right, bw, med_h)
    cut = _best_cut(grid, None)
    if cut is not None and len(cut[0]) == 0 and len(cut[3]) == 0:
        return cut  # the columns fill the region: merged lines can only lengthen shorter ones
    if nb * m > MAX_BRIDGE_CELLS:
        return cut  # thousands of lines: no detector output of one page, no bridges looked for
    # Bridges (see _bridges) only where a cut that needs them could pass the column test.
    need = MIN_BRIDGED_COLUMN_LINES
    rows = np.flatnonzero(
        ((left & long).sum(axis=1) >= need) & ((right & long).sum(axis=1) >= need)
    )
    if len(rows):
        bridge = np.zeros((nb, m), dtype=bool)
        bridge[rows] = _bridges(region, geo, long, left[rows], right[rows])
        if bridge.any():
            return _best_cut(grid, bridge) or cut
    return cut


@dataclass(frozen=True, slots=True)
class _Grid:
    """A region's lines (top to bottom) against x bins, for the column search."""

    region: IntArray
    geo: _Geometry
    long: npt.NDArray[np.bool_]  # running text (MIN_TEXT_ASPECT)
    left: npt.NDArray[np.bool_]  # [b, k]: line k lies left of bin b
    right: npt.NDArray[np.bool_]  # [b, k]: line k lies right of bin b
    bw: float  # bin width
    med_h: float  # median line height


def _best_cut(
    grid: _Grid, bridge: npt.NDArray[np.bool_] | None
) -> tuple[IntArray, IntArray, IntArray, IntArray] | None:
    """The best cut (above, left, right, below) of a grid's region, or None.

    ``bridge[b, k]``: line k crosses bin b but is read as part of the left column there.
    """
    region, geo, long, med_h = grid.region, grid.geo, grid.long, grid.med_h
    m = len(region)
    nb = grid.left.shape[0]
    left_of_bin = grid.left if bridge is None else grid.left | bridge
    # free[b, 1 + k]: line k leaves bin b free (or bridges it); padded with occupied ends, so
    # that every run of free lines has a start and an end edge.
    free = np.zeros((nb, m + 2), dtype=bool)
    free[:, 1:-1] = left_of_bin | grid.right
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
    np.cumsum(left_of_bin[cand_bins], axis=1, dtype=np.int32, out=left_of[:, 1:])
    n_left = left_of[sb_pos, sj] - left_of[sb_pos, si]
    n_right = (sj - si) - n_left
    keep = (n_left >= MIN_COLUMN_LINES) & (n_right >= MIN_COLUMN_LINES)
    if not keep.any():
        return None
    sb, si, sj, n_left = sb[keep], si[keep], sj[keep], n_left[keep]
    # Neighbouring bins with the same run and the same split are one gutter.
    keys = np.stack([si, sj, n_left], axis=1)
    uniq, first, width = np.unique(keys, axis=0, return_index=True, return_counts=True)
    # Bins at the gutter's edges are partly occupied, so the free bins undercount its width by
    # up to two; the exact gap is checked below, on the lines themselves.
    wide = (width + 2) * grid.bw >= MIN_GUTTER * med_h
    uniq, first, width = uniq[wide], first[wide], width[wide]
    if len(uniq) == 0:
        return None
    # Longest sections first, then the widest gutters; ties by position, so it is deterministic.
    rank = np.lexsort((sb[first], uniq[:, 0], -width, -(uniq[:, 1] - uniq[:, 0])))
    for c in rank[:MAX_CANDIDATES]:
        gutter = int(sb[first[c]])
        i, j = _whole_rows(int(uniq[c, 0]), int(uniq[c, 1]), geo.cy[region], geo.h[region])
        i, j = _trim_tables(i, j, long, left_of_bin[gutter])
        if j - i < 2 * MIN_COLUMN_LINES:
            continue
        solid_all = np.ones(m, dtype=bool) if bridge is None else ~bridge[gutter]
        i, j = _strays_out(i, j, region, geo, left_of_bin[gutter], long, solid_all)
        if j - i < 2 * MIN_COLUMN_LINES:
            continue
        section = region[i:j]
        is_left = left_of_bin[gutter, i:j]
        solid = solid_all[i:j]
        left, right = section[is_left & solid], section[~is_left]
        if len(left) == 0 or len(right) == 0:
            continue
        if float(geo.gx0[right].min() - geo.gx1[left].max()) < MIN_GUTTER * med_h:
            continue
        width_all = float(geo.x1[section].max() - geo.x0[section].min())
        # Bridges are a guess: a cut that needs them must show longer paragraphs on both sides.
        run = MIN_COLUMN_LINES if solid.all() else MIN_BRIDGED_COLUMN_LINES
        if _is_text_column(left, geo, width_all, run) and _is_text_column(
            right, geo, width_all, run
        ):
            return region[:i], section[is_left], right, region[j:]
    return None


def _bridges(
    region: IntArray,
    geo: _Geometry,
    long: npt.NDArray[np.bool_],
    left: npt.NDArray[np.bool_],
    right: npt.NDArray[np.bool_],
) -> npt.NDArray[np.bool_]:
    """bridge[b, k]: line k crosses bin b where the detector merged two columns' lines.

    Between justified columns a few character widths apart, with level baselines, the
    detector often finds one box for a line of the left column and the line beside it in
    the right one (on a two-column paper, up to ten per page). Such a line would end the
    column section at every merge. A long line crossing bin b is taken for a merge when the
    lines within BRIDGE_REACH of its height above it, and those below it, include anchors
    (lines of ANCHOR_ASPECT) left of b and right of b: the gutter goes on above and below
    it, one line pitch away; in a run of merged lines, a merged neighbour held that way
    stands in for them. A title or a caption across the columns has space around it, or no
    columns beside it; a form's long line has labels and box numbers around it, too short
    to be anchors, or too few long lines beside it for a cut (MIN_BRIDGED_COLUMN_LINES).

    ``left`` and ``right`` are bins by lines: the line lies left (right) of the bin.
    """
    m = len(region)
    cy, h = geo.cy[region], geo.h[region]
    reach = BRIDGE_REACH * h
    # Lines sorted top to bottom: the ones within reach above line k are [top[k], k), below
    # (k, bottom[k]).
    top = np.searchsorted(cy, cy - reach, side="left")
    bottom = np.searchsorted(cy, cy + reach, side="right")
    nxt = np.arange(1, m + 1)
    crossing = long & ~left & ~right
    anchor = geo.length[region] >= ANCHOR_ASPECT * h

    def window_counts(flags: npt.NDArray[np.bool_]) -> tuple[IntArray, IntArray]:
        """How many flagged lines lie within reach above, and below, each line (per bin)."""
        counts = np.zeros((flags.shape[0], m + 1), dtype=np.int32)
        np.cumsum(flags, axis=1, dtype=np.int32, out=counts[:, 1:])
        return counts[:, :-1] - counts[:, top], counts[:, bottom] - counts[:, nxt]

    l_above, l_below = window_counts(left & anchor)
    r_above, r_below = window_counts(right & anchor)
    # A run of merged lines (three or four in a row are common) sees the gutter only at its
    # ends: a line is held from above when the gutter is within reach above it, or a line
    # held from above is; the same from below; a bridge is held both ways.
    up = crossing & (l_above > 0) & (r_above > 0)
    down = crossing & (l_below > 0) & (r_below > 0)
    # Bins without lines held both ways can have no bridge: the passes skip them.
    rows = np.flatnonzero(up.any(axis=1) & down.any(axis=1))
    out = np.zeros(left.shape, dtype=bool)
    if len(rows) == 0:
        return out
    up, down, crossing = up[rows], down[rows], crossing[rows]
    for _ in range(BRIDGE_PASSES):
        up_next = up | (crossing & (window_counts(up)[0] > 0))
        down_next = down | (crossing & (window_counts(down)[1] > 0))
        if np.array_equal(up_next, up) and np.array_equal(down_next, down):
            break
        up, down = up_next, down_next
    out[rows] = up & down
    return out


def _whole_rows(i: int, j: int, cy: FloatArray, h: FloatArray) -> tuple[int, int]:
    """Keep rows whole at the ends of a candidate section [i, j) (lines top to bottom).

    The line that ends a section (it crosses the gutter) may share its row with lines that
    do not, such as the items of a page footer: those go with it, above (below) the
    section, so that the row is read as one.
    """
    if i > 0:
        y, top = float(cy[i - 1]), float(h[i - 1])
        while i < j and abs(float(cy[i]) - y) <= 0.5 * max(float(h[i]), top):
            i += 1
    if j < len(cy):
        y, bottom = float(cy[j]), float(h[j])
        while j > i and abs(float(cy[j - 1]) - y) <= 0.5 * max(float(h[j - 1]), bottom):
            j -= 1
    return i, j


def _strays_out(
    i: int,
    j: int,
    region: IntArray,
    geo: _Geometry,
    left: npt.NDArray[np.bool_],
    long: npt.NDArray[np.bool_],
    solid: npt.NDArray[np.bool_],
) -> tuple[int, int]:
    """Leave lines that stand out into the gutter at the top or bottom of a section [i, j)
    out of it: a page number or a running head centred on the page is no column's line.

    A column's lines start at its left edge (the right column's) or end at its right edge
    (the left column's), give or take an indent: a line that reaches more than STRAY_REACH
    of its height past that edge, towards the other column, stands out.
    """
    section = slice(i, j)
    lines, on_left, text = region[section], left[section], long[section] & solid[section]
    text_left, text_right = lines[on_left & text], lines[~on_left & text]
    if len(text_left) == 0 or len(text_right) == 0:
        return i, j
    # The columns' inner edges: where their widest lines end (begin); a table or a short
    # line in a column ends before that, an indented line begins after it.
    left_edge = float(geo.x1[text_left].max())
    right_edge = float(geo.x0[text_right].min())

    def stray(k: int) -> bool:
        line, reach = region[k], STRAY_REACH * geo.h[region[k]]
        if left[k]:
            return bool(geo.x1[line] > left_edge + reach)
        return bool(geo.x0[line] < right_edge - reach)

    while j > i and stray(j - 1):
        j -= 1
    while i < j and stray(i):
        i += 1
    return i, j


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


def _is_text_column(
    lines: IntArray, geo: _Geometry, section_width: float, run: int = MIN_COLUMN_LINES
) -> bool:
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
    return _longest_run(geo.length[lines] >= MIN_TEXT_ASPECT * geo.h[lines]) >= run


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
