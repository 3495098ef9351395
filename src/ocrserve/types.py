"""Plain value objects shared by the layers: no I/O, no HTTP, no runtime.

``decode`` produces :class:`Page` objects, the engine consumes them with :class:`OCROptions`
and returns :class:`PageResult` objects made of :class:`Line` objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

Precision = Literal["fp32", "int8"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "int8")

#: A 4-point box: top-left, top-right, bottom-right, bottom-left, as (x, y) pixels.
Box = tuple[tuple[float, float], tuple[float, float], tuple[float, float], tuple[float, float]]


@dataclass(frozen=True, slots=True)
class Page:
    """One decoded page: an HxWx3 uint8 image in BGR order (the PP-OCR convention).

    ``index`` is 1-based within its document.
    """

    image: npt.NDArray[np.uint8]
    index: int = 1

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])


@dataclass(frozen=True, slots=True)
class Document:
    """The pages decoded from one file, and whether a page limit cut it short.

    >>> doc = decode_bytes(data)          # doctest: +SKIP
    >>> doc.truncated, doc.pages_total    # (True, 120) for a 120-page PDF over a 50-page limit
    """

    pages: tuple[Page, ...]
    format: str
    pages_total: int
    truncated: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class OCROptions:
    """Per-call options. Immutable, so one engine can serve many threads.

    >>> OCROptions(lang="en", use_cls=False)
    OCROptions(lang='en', use_cls=False, precision=None, min_confidence=0.5)
    """

    lang: str = "ch"
    use_cls: bool = True
    #: None: the engine's default precision.
    precision: Precision | None = None
    #: lines recognised below this confidence are dropped (the PP-OCR default).
    min_confidence: float = 0.5


@dataclass(frozen=True, slots=True)
class Line:
    text: str
    confidence: float
    box: Box


@dataclass(frozen=True, slots=True)
class Timings:
    """Seconds spent per stage for one page. Batched stages are shared out by work done."""

    decode: float = 0.0
    det: float = 0.0
    cls: float = 0.0
    rec: float = 0.0
    total: float = 0.0


@dataclass(frozen=True, slots=True)
class PageResult:
    """What the engine found on one page, boxes in the original page's pixel coordinates."""

    index: int
    width: int
    height: int
    lines: tuple[Line, ...]
    text: str
    timings: Timings = field(default_factory=Timings)

    @property
    def avg_confidence(self) -> float:
        if not self.lines:
            return 0.0
        return sum(line.confidence for line in self.lines) / len(self.lines)

    def to_dict(self) -> dict[str, object]:
        return {
            "page": self.index,
            "width": self.width,
            "height": self.height,
            "text": self.text,
            "avg_confidence": round(self.avg_confidence, 5),
            "lines": [
                {
                    "text": line.text,
                    "confidence": round(line.confidence, 5),
                    "box": [[round(x, 1), round(y, 1)] for x, y in line.box],
                }
                for line in self.lines
            ],
            "timings": {
                "det": round(self.timings.det, 4),
                "cls": round(self.timings.cls, 4),
                "rec": round(self.timings.rec, 4),
                "total": round(self.timings.total, 4),
            },
        }


def result_dict(
    pages: list[PageResult],
    *,
    pages_total: int,
    truncated: bool,
    model: str,
    timings: dict[str, float],
) -> dict[str, object]:
    """The ``/ocr`` result shape (also the body of async task results and callbacks)."""
    confidences = [line.confidence for p in pages for line in p.lines]
    out_pages = []
    for p in pages:
        d = p.to_dict()
        d.pop("timings", None)
        out_pages.append(d)
    return {
        "text": "\n\n".join(p.text for p in pages),
        "avg_confidence": round(sum(confidences) / len(confidences), 5) if confidences else 0.0,
        "pages": out_pages,
        "page_count": len(pages),
        "pages_total": pages_total,
        "truncated": truncated,
        "model": model,
        "timings": timings,
    }
