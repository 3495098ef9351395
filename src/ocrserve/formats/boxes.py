"""What every writer needs from a page: its words, their rectangles, and text XML can hold."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from ocrserve.types import Box, Line, PageResult, Word


@dataclass(frozen=True, slots=True)
class Rect:
    """An axis-aligned rectangle in whole pixels, ``x1`` and ``y1`` exclusive."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0


def bounding_rect(box: Box, page: PageResult) -> Rect:
    """The smallest whole-pixel rectangle around ``box``, kept on the page."""
    xs = [x for x, _ in box]
    ys = [y for _, y in box]
    x0 = min(max(math.floor(min(xs)), 0), page.width)
    y0 = min(max(math.floor(min(ys)), 0), page.height)
    x1 = min(max(math.ceil(max(xs)), x0), page.width)
    y1 = min(max(math.ceil(max(ys)), y0), page.height)
    return Rect(x0, y0, x1, y1)


def union(rects: list[Rect]) -> Rect:
    return Rect(
        min(r.x0 for r in rects),
        min(r.y0 for r in rects),
        max(r.x1 for r in rects),
        max(r.y1 for r in rects),
    )


def lines_with_words(page: PageResult) -> Iterator[tuple[Line, tuple[Word, ...]]]:
    """Each line that has text, with its words; a line read without word boxes is one word.

    Words without text are left out: no format has a use for an empty word, and ALTO and the
    PDF text layer would carry a box with nothing to select in it.
    """
    for line in page.lines:
        words = tuple(w for w in line.words if xml_text(w.text).strip())
        if not words and xml_text(line.text).strip():
            words = (Word(line.text, line.confidence, line.box),)
        if words:
            yield line, words


# XML 1.0 allows tab, newline and carriage return below U+0020, no surrogates and neither
# U+FFFE nor U+FFFF; a serialiser writes them anyway and the file no longer parses.
_NOT_XML: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_text(text: str) -> str:
    """``text`` without the characters an XML 1.0 document cannot contain."""
    return _NOT_XML.sub("", text)
