"""A PDF page's own text layer: its lines and words with boxes, and whether to trust it.

A born-digital page carries its text: reading it is exact and costs milliseconds, where
recognising the rendered page costs seconds. But a text layer can lie. A font without a
Unicode map gives mojibake; a scanned page may carry text over only part of what it shows
(a header stamped on it, a partial OCR layer). :func:`read_text_layer` reads the layer
through PDFium's text page and measures both; :func:`judge` turns the measures into a
verdict with its reason, by :class:`LayerRule`'s thresholds.

>>> with _PDFIUM_LOCK:                                        # doctest: +SKIP
...     pdf = pdfium.PdfDocument(data)
...     layer = read_text_layer(pdf, 0, dpi=200)
...     pdf.close()
>>> layer.usable, layer.reason, layer.lines[2].words[1].text  # doctest: +SKIP
(True, 'text layer: 3332 chars, 0.4% unmapped', 'Nonresident')

Boxes are in pixels of the page as :mod:`ocrserve.decode` renders it at the same DPI (its
``/Rotate`` applied, y down): PDFium's own page-to-device transform maps them, with the
bitmap size ``render()`` uses, so they fall on the rendered glyphs.

The rule (``bench/pdftext.py`` measures it on the dev PDFs; thresholds in :class:`LayerRule`):

1. *No text*: no character other than whitespace.
2. *Mojibake*: over ``max_bad_share`` of the characters are unmapped (PDFium says the font
   has no Unicode for them), control characters, private-use or U+FFFD. The dev PDFs' worst
   page has 0.6% (a math font on the IOP paper's page 3); a font without a map gives ~100%.
3. *Partial layer over a scan*: where images cover at least ``scan_image_share`` of the page,
   the page is rendered small and under ``min_ink_covered`` of its ink lying inside text
   boxes means the layer does not say what the page shows.
"""

from __future__ import annotations

import ctypes
import logging
import math
import time
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

from ocrserve.layout import reading_order
from ocrserve.types import Box, Line, OCROptions, Page, PageResult, PageSource, Timings, Word

log = logging.getLogger(__name__)

__all__ = ["LayerRule", "TextLayer", "judge", "read_text_layer"]

_POINTS_PER_INCH: Final = 72
#: Ink is measured on the page rendered at this DPI: enough to see 8-pt text as dark pixels.
INK_DPI: Final = 50
#: A pixel this much darker than the page's median (its paper) is ink.
_INK_CONTRAST: Final = 40
#: Text boxes are grown by this share of their height before ink is counted in them:
#: strokes of the scan's own glyphs reach past the layer's boxes by a pixel or two.
_INK_PAD: Final = 0.3
#: Along a line, a gap wider than this many line heights ends the line: form fields and
#: table cells set on one baseline are separate lines, as a detector would find them.
_LINE_GAP: Final = 2.5
#: A gap wider than this many line heights ends a word even without a space.
_WORD_GAP: Final = 0.4
#: Characters whose centres differ across the line by more than this share of the taller
#: one's height are on different lines.
_SAME_LINE: Final = 0.5

_LINE_BREAKS: Final = frozenset("\r\n\x0b\x0c\x85\u2028\u2029")
_PAGEOBJ_IMAGE: Final = pdfium_c.FPDF_PAGEOBJ_IMAGE


@dataclass(frozen=True, slots=True, kw_only=True)
class LayerRule:
    """When a text layer is usable. A plain value object, thresholds measured on the dev PDFs.

    >>> LayerRule(max_bad_share=0.05)
    LayerRule(max_bad_share=0.05, scan_image_share=0.5, min_ink_covered=0.5)
    """

    #: Unmapped, control, private-use or U+FFFD characters over all non-space ones.
    max_bad_share: float = 0.10
    #: Images covering this share of the page's area make it a scan, whose ink is checked.
    scan_image_share: float = 0.5
    #: Share of a scan's ink that must lie inside the text layer's boxes.
    min_ink_covered: float = 0.5


@dataclass(frozen=True, slots=True, kw_only=True)
class TextLayer:
    """A page's text layer, its measures and the verdict on it.

    ``lines`` are in reading order (:func:`ocrserve.layout.reading_order`), each with its
    words; ``text`` joins them with newlines. Boxes are pixels of the page rendered at the
    DPI asked for, ``width`` x ``height`` (the bitmap ``decode`` renders). ``ink_covered`` is
    None where the page is not a scan (too little of it under images) and was not rendered.
    """

    lines: tuple[Line, ...]
    text: str
    width: int
    height: int
    chars: int
    bad_chars: int
    image_share: float
    ink_covered: float | None
    usable: bool
    reason: str
    #: What ``PageResult.source`` says of a page read from its layer.
    source: PageSource = "pdf"


@dataclass(slots=True)
class _Char:
    text: str
    # device box, in the text's own frame: along the line, and across it (down the page)
    a0: float
    a1: float
    c0: float
    c1: float
    rect: tuple[float, float, float, float]  # device x0, y0, x1, y1
    direction: int  # quarter turns clockwise of the text's baseline in the bitmap


@dataclass(slots=True)
class _Run:
    """Characters of one word or one line, as they are collected."""

    chars: list[_Char] = field(default_factory=list)
    words: list[list[_Char]] = field(default_factory=list)


def read_text_layer(
    pdf: pdfium.PdfDocument, index: int, dpi: int, rule: LayerRule = LayerRule()
) -> TextLayer:
    """Read page ``index`` (0-based) of ``pdf``'s text layer and judge it by ``rule``.

    The caller holds PDFium's lock (``decode._PDFIUM_LOCK``) for the whole call and keeps
    ``pdf`` open: PDFium is not thread-safe, and this opens, reads and closes the page, its
    text page and, on a scan, a small rendering of it.

    >>> with _PDFIUM_LOCK:                       # doctest: +SKIP
    ...     layer = read_text_layer(pdf, 0, dpi=200)
    >>> layer.usable, layer.lines[2].text        # doctest: +SKIP
    (True, 'U.S. Nonresident Alien Income Tax Return')
    """
    if dpi < 1:
        raise ValueError(f"read_text_layer: dpi must be at least 1, got {dpi!r}")
    page = pdf[index]
    try:
        scale = dpi / _POINTS_PER_INCH
        # The bitmap render() makes: its size rounded up, the page's /Rotate applied.
        width = math.ceil(page.get_width() * scale)
        height = math.ceil(page.get_height() * scale)
        to_device = _page_to_device(page, width, height)
        textpage = page.get_textpage()
        try:
            chars, counted, bad = _read_chars(textpage, to_device)
        finally:
            textpage.close()
        lines = _lines(chars)
        order = [
            i for block in reading_order([ln.box for ln in lines]) for row in block for i in row
        ]
        lines = [lines[i] for i in order]
        image_share = _image_share(page)
        ink_covered = None
        if counted and image_share >= rule.scan_image_share:
            ink_covered = _ink_covered(page, lines, width, height)
    finally:
        page.close()
    usable, reason = judge(
        chars=counted, bad_chars=bad, image_share=image_share, ink_covered=ink_covered, rule=rule
    )
    return TextLayer(
        lines=tuple(lines),
        text="\n".join(line.text for line in lines),
        width=width,
        height=height,
        chars=counted,
        bad_chars=bad,
        image_share=image_share,
        ink_covered=ink_covered,
        usable=usable,
        reason=reason,
    )


def judge(
    *,
    chars: int,
    bad_chars: int,
    image_share: float,
    ink_covered: float | None,
    rule: LayerRule = LayerRule(),
) -> tuple[bool, str]:
    """Whether a layer with these measures is usable, and why: the rule of this module.

    >>> judge(chars=900, bad_chars=850, image_share=0.0, ink_covered=None)
    (False, 'mojibake: 94.4% of chars unmapped/control/private-use/U+FFFD')
    >>> judge(chars=40, bad_chars=0, image_share=1.0, ink_covered=0.06)
    (False, "scan: text covers only 6.0% of the page's ink (images cover 100% of it)")
    """
    if chars == 0:
        return False, "no text"
    bad = bad_chars / chars
    if bad > rule.max_bad_share:
        return False, f"mojibake: {bad:.1%} of chars unmapped/control/private-use/U+FFFD"
    if ink_covered is not None and ink_covered < rule.min_ink_covered:
        return False, (
            f"scan: text covers only {ink_covered:.1%} of the page's ink "
            f"(images cover {image_share:.0%} of it)"
        )
    reason = f"text layer: {chars} chars, {bad:.1%} unmapped"
    if ink_covered is not None:
        reason += f"; over a scan, covering {ink_covered:.1%} of its ink"
    return True, reason


# --------------------------------------------------------------------------- coordinates


def _page_to_device(page: Any, width: int, height: int) -> npt.NDArray[np.float64]:
    """The affine map from PDF user space to the bitmap render() draws, as a 2x3 matrix.

    Asked of PDFium itself (FPDF_DeviceToPage, the inverse of the transform rendering uses,
    in doubles): CropBox offsets, /Rotate and the rounded-up bitmap size are all in it.
    """
    px, py = ctypes.c_double(), ctypes.c_double()
    pts = []
    for dx, dy in ((0, 0), (width, 0), (0, height)):
        pdfium_c.FPDF_DeviceToPage(page, 0, 0, width, height, 0, dx, dy, px, py)
        pts.append((px.value, py.value))
    (x0, y0), (x1, y1), (x2, y2) = pts
    # device -> page: p = origin + dx * u + dy * v, with u, v per device pixel
    m = np.array([[(x1 - x0) / width, (x2 - x0) / height], [(y1 - y0) / width, (y2 - y0) / height]])
    inv = np.linalg.inv(m)
    return np.hstack([inv, -inv @ np.array([[x0], [y0]])])


def _direction(m: npt.NDArray[np.float64], dx: float, dy: float) -> int:
    """Quarter turns (clockwise, y down) of a page-space baseline vector once on the bitmap."""
    vx = m[0, 0] * dx + m[0, 1] * dy
    vy = m[1, 0] * dx + m[1, 1] * dy
    if abs(vx) >= abs(vy):
        return 0 if vx >= 0 else 2
    return 1 if vy > 0 else 3


# --------------------------------------------------------------------------- characters


def _is_bad(code: int, unmapped: bool) -> bool:
    if unmapped or code in (0, 0xFFFD):
        return True
    if code < 0x20 or 0x7F <= code < 0xA0:
        return True
    return 0xE000 <= code <= 0xF8FF or code >= 0xF0000


def _read_chars(
    textpage: Any, to_device: npt.NDArray[np.float64]
) -> tuple[list[_Char | None], int, int]:
    """The page's characters in PDFium's order (None for a line break it made or found),
    and how many are not whitespace, and how many of those are garbage."""
    n = textpage.count_chars()
    out: list[_Char | None] = []
    counted = bad = 0
    rect = pdfium_c.FS_RECTF()
    matrix = pdfium_c.FS_MATRIX()
    # plain floats: numpy scalars would leak into the boxes and cost 10x per operation
    (ax, ay, ex), (bx, by, ey) = to_device.tolist()
    pending_high = 0
    for i in range(n):
        code = pdfium_c.FPDFText_GetUnicode(textpage, i)
        if 0xD800 <= code < 0xDC00:
            # A character outside the BMP comes as two when wchar_t is 16 bits wide.
            pending_high = code
            continue
        if 0xDC00 <= code < 0xE000 and pending_high:
            code = 0x10000 + ((pending_high - 0xD800) << 10) + (code - 0xDC00)
        pending_high = 0
        text = chr(code) if 0 < code < 0x110000 and not 0xD800 <= code < 0xE000 else "\ufffd"
        if text in _LINE_BREAKS:
            out.append(None)
            continue
        if text.isspace():
            out.append(_Char(" ", 0, 0, 0, 0, (0, 0, 0, 0), -1))
            continue
        counted += 1
        unmapped = pdfium_c.FPDFText_HasUnicodeMapError(textpage, i) == 1
        if _is_bad(code, unmapped):
            bad += 1
        if "\ufb00" <= text <= "\ufb06":
            # Typographic ligatures: a reader searches for "fi", not U+FB01.
            text = unicodedata.normalize("NFKC", text)
        if not pdfium_c.FPDFText_GetLooseCharBox(textpage, i, rect):
            out.append(_Char(text, 0, 0, 0, 0, (0, 0, 0, 0), -1))
            continue
        xs = (ax * rect.left + ay * rect.bottom + ex, ax * rect.right + ay * rect.top + ex)
        ys = (bx * rect.left + by * rect.bottom + ey, bx * rect.right + by * rect.top + ey)
        x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
        if x1 - x0 <= 0 and y1 - y0 <= 0:
            # No extent (an empty glyph, a broken font): text without a place.
            out.append(_Char(text, 0, 0, 0, 0, (0, 0, 0, 0), -1))
            continue
        direction = 0
        if pdfium_c.FPDFText_GetMatrix(textpage, i, matrix):
            direction = _direction(to_device, matrix.a, matrix.b)
        a0, a1, c0, c1 = _frame(direction, x0, y0, x1, y1)
        rect_px = (float(x0), float(y0), float(x1), float(y1))
        out.append(_Char(text, a0, a1, c0, c1, rect_px, direction))
    return out, counted, bad


def _frame(direction: int, x0: float, y0: float, x1: float, y1: float) -> tuple[float, ...]:
    """A device box as (along0, along1, across0, across1) in a text direction's own frame."""
    if direction == 0:
        return x0, x1, y0, y1
    if direction == 1:
        return y0, y1, -x1, -x0
    if direction == 2:
        return -x1, -x0, -y1, -y0
    return -y1, -y0, x0, x1


# --------------------------------------------------------------------------- words and lines


def _lines(chars: Sequence[_Char | None]) -> list[Line]:
    """Group characters, in PDFium's order, into lines of words.

    A line ends at a line break PDFium reports, where the text changes direction, leaves the
    line's band, goes back along it or jumps a wide gap; a word ends at a space or a gap.
    """
    lines: list[Line] = []
    words: list[list[_Char]] = []
    word: list[_Char] = []
    last: _Char | None = None  # the last placed character of the line

    def close_word() -> None:
        nonlocal word
        if word:
            words.append(word)
        word = []

    def close_line() -> None:
        nonlocal words, last
        close_word()
        line = _make_line(words)
        if line is not None:
            lines.append(line)
        words, last = [], None

    for ch in chars:
        if ch is None:
            close_line()
            continue
        if ch.text == " ":
            close_word()
            continue
        if ch.direction < 0:
            # Unplaced: it belongs to the word it is read in.
            word.append(ch)
            continue
        if last is not None:
            height = max(last.c1 - last.c0, ch.c1 - ch.c0, 1e-6)
            gap = ch.a0 - last.a1
            centre_shift = abs((ch.c0 + ch.c1) - (last.c0 + last.c1)) / 2
            if (
                ch.direction != last.direction
                or centre_shift > _SAME_LINE * height
                or ch.a1 < last.a0 - 0.5 * height
                or gap > _LINE_GAP * height
            ):
                close_line()
            elif gap > _WORD_GAP * height:
                close_word()
        word.append(ch)
        last = ch
    close_line()
    return lines


def _make_line(words: list[list[_Char]]) -> Line | None:
    made = [w for w in (_make_word(chars) for chars in words) if w is not None]
    if not made:
        return None
    placed = [ch for chars in words for ch in chars if ch.direction >= 0]
    return Line(" ".join(w.text for w in made), 1.0, _box(placed), words=tuple(made))


def _make_word(chars: list[_Char]) -> Word | None:
    placed = [ch for ch in chars if ch.direction >= 0]
    if not placed:
        # Characters with no box at all cannot be shown anywhere on the page.
        return None
    return Word("".join(ch.text for ch in chars), 1.0, _box(placed))


def _box(chars: Sequence[_Char]) -> Box:
    """The 4-point box around characters, top-left first in the text's own direction."""
    x0 = min(ch.rect[0] for ch in chars)
    y0 = min(ch.rect[1] for ch in chars)
    x1 = max(ch.rect[2] for ch in chars)
    y1 = max(ch.rect[3] for ch in chars)
    corners = ((x0, y0), (x1, y0), (x1, y1), (x0, y1))
    k = chars[0].direction
    tl, tr, br, bl = (corners[(k + j) % 4] for j in range(4))
    return (tl, tr, br, bl)


# --------------------------------------------------------------------------- scans


def _image_share(page: Any) -> float:
    """The share of the page's area under image objects (their union, on a coarse grid)."""
    left, bottom, right, top = page.get_bbox()
    w, h = right - left, top - bottom
    if w <= 0 or h <= 0:
        return 0.0
    grid = np.zeros((64, 64), dtype=bool)
    for obj in _images(page):
        ox0, oy0, ox1, oy1 = obj.get_bounds()
        i0 = int(np.clip(math.floor((ox0 - left) / w * 64), 0, 64))
        i1 = int(np.clip(math.ceil((ox1 - left) / w * 64), 0, 64))
        j0 = int(np.clip(math.floor((oy0 - bottom) / h * 64), 0, 64))
        j1 = int(np.clip(math.ceil((oy1 - bottom) / h * 64), 0, 64))
        grid[j0:j1, i0:i1] = True
    return float(grid.mean())


def _images(page: Any) -> Iterator[Any]:
    # Nested inside form XObjects too: scanners and PDF printers wrap the scan in one.
    objects: Iterator[Any] = page.get_objects(filter=(_PAGEOBJ_IMAGE,))
    return objects


def _ink_covered(page: Any, lines: Sequence[Line], width: int, height: int) -> float:
    """The share of the page's ink, rendered small, that lies inside the text's boxes."""
    bitmap = page.render(scale=INK_DPI / _POINTS_PER_INCH, grayscale=True)
    try:
        gray = np.asarray(bitmap.to_numpy(), dtype=np.uint8).reshape(bitmap.height, bitmap.width)
    finally:
        bitmap.close()
    paper = float(np.median(gray))
    ink = gray < paper - _INK_CONTRAST
    total = int(ink.sum())
    if total == 0:
        return 1.0
    sx, sy = gray.shape[1] / width, gray.shape[0] / height
    covered = np.zeros_like(ink)
    for line in lines:
        xs = [p[0] for p in line.box]
        ys = [p[1] for p in line.box]
        pad = _INK_PAD * min(max(xs) - min(xs), max(ys) - min(ys))
        x0 = max(0, math.floor((min(xs) - pad) * sx))
        x1 = math.ceil((max(xs) + pad) * sx)
        y0 = max(0, math.floor((min(ys) - pad) * sy))
        y1 = math.ceil((max(ys) + pad) * sy)
        covered[y0:y1, x0:x1] = True
    return int((ink & covered).sum()) / total


def page_from_text_layer(page: Page, opts: OCROptions) -> PageResult | None:
    """The page read from its PDF text layer, where the options and the layer allow; None
    where an engine is to recognise it (``pdf_text``: ``auto`` takes a usable layer, ``pdf``
    any layer, ``ocr`` none). Every engine reads a PDF page through this first."""
    if opts.pdf_text == "ocr" or not page.has_text_layer:
        return None
    t0 = time.perf_counter()
    layer = page.text_layer()
    if layer is None:
        return None
    if not layer.usable and opts.pdf_text == "auto":
        log.debug("page %d: text layer not used: %s", page.index, layer.reason)
        return None
    return PageResult(
        index=page.index,
        width=layer.width,
        height=layer.height,
        lines=layer.lines,
        text=layer.text,
        timings=Timings(total=time.perf_counter() - t0),
        source="pdf",
        engine="pdf",
    )
