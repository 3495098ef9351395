"""Plain value objects shared by the layers: no I/O, no HTTP, no runtime.

``decode`` produces :class:`Page` objects, the engine consumes them with :class:`OCROptions`
and returns :class:`PageResult` objects made of :class:`Line` objects.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from ocrserve.pdftext import TextLayer


Precision = Literal["fp32", "int8"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "int8")

#: Where a PDF page's text comes from: ``auto`` reads a usable text layer and OCRs the rest,
#: ``ocr`` always recognises the rendered page, ``pdf`` never does (a page without a usable
#: layer comes back empty).
PdfText = Literal["auto", "ocr", "pdf"]
PDF_TEXT_MODES: tuple[PdfText, ...] = ("auto", "ocr", "pdf")

#: ``auto`` finds a page turned by 90, 180 or 270 degrees and reads it upright.
Orientation = Literal["auto", "off"]
ORIENTATIONS: tuple[Orientation, ...] = ("auto", "off")

#: How a page's text was obtained.
PageSource = Literal["ocr", "pdf"]

#: The quarter turns a page can be found in, in degrees clockwise.
ANGLES: tuple[int, ...] = (0, 90, 180, 270)

#: A 4-point box: top-left, top-right, bottom-right, bottom-left, as (x, y) pixels.
Box = tuple[tuple[float, float], tuple[float, float], tuple[float, float], tuple[float, float]]


class Page:
    """One page: an HxWx3 uint8 image in BGR order (the PP-OCR convention), or how to make one.

    A page made from an array holds it. A page of a decoded document holds only its size, read
    from the file's header, and decodes its pixels each time :attr:`image` is read, keeping
    nothing: read it once, use it and let it go, and a document of any length costs one page
    of memory at a time. ``index`` is 1-based within its document.

    >>> Page(np.zeros((480, 640, 3), np.uint8)).width
    640
    >>> page = decode_bytes(pdf_bytes).pages[0]   # doctest: +SKIP
    >>> page.pixels, page.image.shape             # doctest: +SKIP
    (3740000, (2200, 1700, 3))
    """

    __slots__ = ("_height", "_image", "_load", "_text", "_width", "index")
    _image: npt.NDArray[np.uint8] | None
    _load: Callable[[], npt.NDArray[np.uint8]] | None
    _text: Callable[[], TextLayer] | None
    _width: int
    _height: int
    index: int

    def __init__(self, image: npt.NDArray[np.uint8], index: int = 1) -> None:
        self._fill(image, None, 0, 0, index)

    @classmethod
    def deferred(
        cls,
        load: Callable[[], npt.NDArray[np.uint8]],
        *,
        width: int,
        height: int,
        index: int,
        text: Callable[[], TextLayer] | None = None,
    ) -> Page:
        """A page whose pixels ``load()`` decodes when :attr:`image` is read; a PDF page also
        says how to read its own text layer (``text``, see :meth:`text_layer`)."""
        page = cls.__new__(cls)
        page._fill(None, load, width, height, index, text)
        return page

    def _fill(
        self,
        image: npt.NDArray[np.uint8] | None,
        load: Callable[[], npt.NDArray[np.uint8]] | None,
        width: int,
        height: int,
        index: int,
        text: Callable[[], TextLayer] | None = None,
    ) -> None:
        # Immutable, as every value shared by the layers: one page may be read by many threads.
        for name, value in (
            ("_image", image), ("_load", load), ("_width", width), ("_height", height),
            ("index", index), ("_text", text),
        ):  # fmt: skip
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Page is immutable: cannot set {name!r}")

    def __getstate__(self) -> tuple[object, ...]:
        return (self._image, self._load, self._width, self._height, self.index, self._text)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self._fill(*state)

    @property
    def image(self) -> npt.NDArray[np.uint8]:
        if self._image is not None:
            return self._image
        assert self._load is not None
        return self._load()

    @property
    def has_text_layer(self) -> bool:
        """Whether the page comes from a PDF, whose own text layer can be read."""
        return self._text is not None

    def text_layer(self) -> TextLayer | None:
        """The page's PDF text layer, read now (tenths of a second), judged usable or not;
        None for a page that is not a PDF's."""
        return self._text() if self._text is not None else None

    @property
    def width(self) -> int:
        return int(self._image.shape[1]) if self._image is not None else self._width

    @property
    def height(self) -> int:
        return int(self._image.shape[0]) if self._image is not None else self._height

    @property
    def pixels(self) -> int:
        """Width x height, known without decoding: what the page costs once read."""
        if self._image is not None:
            # (getattr: the engine, not this, tells a caller who passed no array what it expects)
            return math.prod(getattr(self._image, "shape", (0, 0))[:2])
        return self._width * self._height

    def __repr__(self) -> str:
        held = "held" if self._image is not None else "deferred"
        return f"Page(index={self.index}, {self.width}x{self.height}, {held})"


@dataclass(frozen=True, slots=True)
class Document:
    """The pages of one file, and whether a page limit cut it short.

    The pages of a decoded file are deferred (:class:`Page`): their sizes are known and
    checked, their pixels decoded one page at a time as each is read.

    >>> doc = decode_bytes(data)          # doctest: +SKIP
    >>> doc.truncated, doc.pages_total    # (True, 120) for a 120-page PDF over a 50-page limit
    """

    pages: tuple[Page, ...]
    format: str
    pages_total: int
    truncated: bool = False

    @property
    def pixels(self) -> int:
        """Pixels of every kept page: what reading the document decodes in all."""
        return sum(page.pixels for page in self.pages)


#: Which model set reads a call under a rollout: the stable one, or the candidate.
ModelChoice = Literal["stable", "candidate"]
MODEL_CHOICES: tuple[ModelChoice, ...] = ("stable", "candidate")


@dataclass(frozen=True, slots=True, kw_only=True)
class OCROptions:
    """Per-call options. Immutable, so one engine can serve many threads.

    >>> OCROptions(lang="en", use_cls=False)  # doctest: +NORMALIZE_WHITESPACE
    OCROptions(lang='en', use_cls=False, precision=None, min_confidence=0.5, pdf_text='auto',
               orientation='auto', models='stable')
    """

    lang: str = "ch"
    use_cls: bool = True
    #: None: the engine's default precision.
    precision: Precision | None = None
    #: lines recognised below this confidence are dropped (the PP-OCR default).
    min_confidence: float = 0.5
    #: PDF pages: read the file's own text layer where it is usable (see ``PdfText``).
    pdf_text: PdfText = "auto"
    #: Find pages turned by a quarter or a half turn and read them upright.
    orientation: Orientation = "auto"
    #: The model set under a rollout (see ``engine.router.Engines.choose``).
    models: ModelChoice = "stable"


@dataclass(frozen=True, slots=True)
class Word:
    """One word of a line: a run of characters between spaces, with its own box.

    A line in a script written without spaces (Chinese, Japanese) is one word.
    """

    text: str
    confidence: float
    box: Box


@dataclass(frozen=True, slots=True)
class Line:
    """One line of text, its box and its words (in reading order, left to right)."""

    text: str
    confidence: float
    box: Box
    words: tuple[Word, ...] = ()


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
    """What the engine found on one page, boxes in the original page's pixel coordinates.

    ``angle`` is how far the page's content was found turned, in degrees clockwise (0, 90,
    180 or 270): it was read turned back by as much, and its boxes are still in the pixels of
    the page as it came. ``source`` says whether the text was recognised or read from a PDF's
    text layer (confidence 1.0 then). ``engine`` names the engine that read it (``ppocr``,
    ``tesseract``; ``pdf`` for a text layer) and ``model`` that engine's model version, so a
    page read by a fallback engine or a candidate model set says so.
    """

    index: int
    width: int
    height: int
    lines: tuple[Line, ...]
    text: str
    timings: Timings = field(default_factory=Timings)
    angle: int = 0
    source: PageSource = "ocr"
    engine: str = "ppocr"
    model: str = ""

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
            "angle": self.angle,
            "source": self.source,
            "engine": self.engine,
            "model": self.model,
            "lines": [
                {
                    "text": line.text,
                    "confidence": round(line.confidence, 5),
                    "box": _box_list(line.box),
                    "words": [
                        {
                            "text": word.text,
                            "confidence": round(word.confidence, 5),
                            "box": _box_list(word.box),
                        }
                        for word in line.words
                    ],
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


def _box_list(box: Box) -> list[list[float]]:
    return [[round(x, 1), round(y, 1)] for x, y in box]


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
