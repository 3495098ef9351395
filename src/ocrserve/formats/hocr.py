"""hOCR 1.2: the result as XHTML, one ``ocr_page`` per page, ``ocr_line`` and ``ocrx_word``
inside it, each with its ``bbox`` (page pixels) and each word with its ``x_wconf`` (0-100).

Built with the standard library's ElementTree: it escapes text and attribute values itself,
and the format needs nothing that lxml adds, so the service needs no XML dependency.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import Final

from ocrserve._version import __version__
from ocrserve.formats.boxes import Rect, bounding_rect, lines_with_words, union, xml_text
from ocrserve.types import PageResult

MEDIA_TYPE: Final = "text/vnd.hocr+html"
XHTML_NS: Final = "http://www.w3.org/1999/xhtml"
#: Classes and properties this writer emits, as the spec asks a document to declare them.
CAPABILITIES: Final = "ocr_page ocr_line ocrx_word ocrp_wconf"
DEFAULT_SYSTEM: Final = f"ocrserve {__version__}"

_HEAD: Final = '<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE html>\n'


def write_hocr(
    pages: Sequence[PageResult], *, filename: str = "", system: str = DEFAULT_SYSTEM
) -> str:
    """The pages as one hOCR 1.2 document (XHTML, UTF-8).

    >>> doc = write_hocr(engine.run(decode_path("scan.png").pages), filename="scan.png")
    ... # doctest: +SKIP
    >>> '<span class="ocrx_word"' in doc  # doctest: +SKIP
    True

    ``system`` names the engine (``ocr-system``). A line read without word boxes is written
    as one word spanning the line.
    """
    html = ET.Element("html", {"xmlns": XHTML_NS})
    head = ET.SubElement(html, "head")
    head.text = head.tail = "\n"
    title = ET.SubElement(head, "title")
    title.text = xml_text(filename)
    for name, content in (
        ("ocr-system", xml_text(system)),
        ("ocr-capabilities", CAPABILITIES),
        ("ocr-number-of-pages", str(len(pages))),
    ):
        ET.SubElement(head, "meta", {"name": name, "content": content})
    ET.SubElement(
        head, "meta", {"http-equiv": "Content-Type", "content": "text/html; charset=utf-8"}
    )
    for element in head:
        element.tail = "\n"
    body = ET.SubElement(html, "body")
    body.text = "\n"
    for page in pages:
        _page(body, page, filename).tail = "\n"
    return _HEAD + ET.tostring(html, encoding="unicode") + "\n"


def _page(body: ET.Element, page: PageResult, filename: str) -> ET.Element:
    # ppageno counts from 0 in the file: page 3 of a PDF is ppageno 2 even when read alone.
    props = [f"bbox 0 0 {page.width} {page.height}", f"ppageno {page.index - 1}"]
    if filename:
        props.insert(0, f"image {_quoted(xml_text(filename))}")
    div = ET.SubElement(
        body, "div", {"class": "ocr_page", "id": f"page_{page.index}", "title": "; ".join(props)}
    )
    div.text = "\n"
    for n, (line, words) in enumerate(lines_with_words(page), start=1):
        line_id = f"line_{page.index}_{n}"
        rects = [bounding_rect(word.box, page) for word in words]
        line_rect = bounding_rect(line.box, page)
        span = ET.SubElement(
            div,
            "span",
            # (around its words too: a word box may reach past the line's own)
            {"class": "ocr_line", "id": line_id, "title": _bbox(union([line_rect, *rects]))},
        )
        span.tail = "\n"
        for m, (word, rect) in enumerate(zip(words, rects, strict=True), start=1):
            conf = round(min(max(word.confidence, 0.0), 1.0) * 100)
            child = ET.SubElement(
                span,
                "span",
                {
                    "class": "ocrx_word",
                    "id": f"word_{page.index}_{n}_{m}",
                    "title": f"{_bbox(rect)}; x_wconf {conf}",
                },
            )
            child.text = xml_text(word.text)
            # A space between words: a browser, or anything reading the text, sees them apart.
            child.tail = " " if m < len(words) else None
    return div


def _bbox(rect: Rect) -> str:
    return f"bbox {rect.x0} {rect.y0} {rect.x1} {rect.y1}"


def _quoted(value: str) -> str:
    # hOCR property strings are double-quoted with backslash escapes.
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
